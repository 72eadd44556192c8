"""Links between anchored terms: a multi-word key whose leading or trailing words are a key themselves.

"Sherlock Holmes" is linked to "Holmes" (a word-suffix key) and, when "Sherlock" is a key too, to "Sherlock" (a
word-prefix key). The dictionary builder (:mod:`llm_unlearn.whp.anchors`) makes such keys' translations from their
linked keys' translations, and the translator (:mod:`llm_unlearn.whp.translation`, rule C2) relies on it to choose
consistent translations within a block. Both use this one helper; it imports nothing from the package, so neither
module imports the other to use it.
"""

from __future__ import annotations

from collections.abc import Container


def key_links(key: str, keys: Container[str]) -> tuple[str | None, str | None]:
    """Longest proper word-prefix and longest proper word-suffix of ``key`` that are in ``keys`` (None if none).

    ``key`` has its words separated by single spaces (keys are normalised that way)."""
    words = key.split(" ")
    prefix = next((" ".join(words[:n]) for n in range(len(words) - 1, 0, -1) if " ".join(words[:n]) in keys), None)
    suffix = next((" ".join(words[n:]) for n in range(1, len(words)) if " ".join(words[n:]) in keys), None)
    return prefix, suffix
