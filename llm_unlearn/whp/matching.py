"""Rules M1-M5 of :mod:`llm_unlearn.whp.translation`: which text of a block is an anchored term. One compiled
pattern (a trie of every key's spellings) finds them all, longest first."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import AnchorError

if TYPE_CHECKING:  # pragma: no cover
    pass

# A letter or digit: the characters that may not touch a match (rule M1).
_WORD_CHAR = r"[^\W_]"
_BEFORE = rf"(?<!{_WORD_CHAR})"
_AFTER = rf"(?!{_WORD_CHAR})"
# Between the words of a multi-word key: spaces/tabs with at most one line break (rule M4).
_GAP = r"(?:[^\S\n]*\n[^\S\n]*|[^\S\n]+)"
_WS = re.compile(r"\s+")
_WORD_START = re.compile(_BEFORE + _WORD_CHAR)
_WORD_END = re.compile(_WORD_CHAR + _AFTER)
_APOSTROPHES = ("'", "’")


def _normalize_key(key: str) -> str:
    return _WS.sub(" ", key.strip())


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _apply_case(translation: str, case: str) -> str:
    if case == "upper":
        return translation.upper()
    if case == "cap":
        return _cap(translation)
    return translation


def _trie_pattern(strings: list[str]) -> str:
    """A regex alternation of ``strings`` as a character trie. Optional tails are greedy, so at one position the
    longest string that also satisfies the trailing word boundary wins (rule M2). A space matches ``_GAP``.

    Built bottom-up with an explicit stack, not by recursion: a key of a few hundred characters (a corpus without
    spaces yields such "words") must not hit Python's recursion limit."""
    trie: dict = {}
    for s in strings:
        node = trie
        for ch in s:
            node = node.setdefault(ch, {})
        node[""] = {}

    built: dict[int, str] = {}  # id(node) -> its pattern
    stack: list[tuple[dict, bool]] = [(trie, False)]
    while stack:
        node, children_done = stack.pop()
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for ch, child in node.items() if ch)
            continue
        alts = [(_GAP if ch == " " else re.escape(ch)) + built[id(child)] for ch, child in sorted(node.items()) if ch]
        if not alts:
            built[id(node)] = ""
            continue
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:  # a key ends here and longer ones continue: the continuation is optional
            body = ("(?:" + body + ")?") if len(alts) == 1 else body + "?"
        built[id(node)] = body
    return built[id(trie)]


def _compile_matcher(variants: list[str]) -> re.Pattern:
    """The matcher regex: the trie, or (when keys nest so deeply that the regex compiler itself recurses too deep)
    a plain alternation, longest first, which gives the same longest-match-at-a-boundary result (rule M2)."""
    try:
        return re.compile(_BEFORE + "(?:" + _trie_pattern(variants) + ")" + _AFTER)
    except RecursionError:
        flat = "|".join(_GAP.join(re.escape(part) for part in v.split(" "))
                        for v in sorted(variants, key=len, reverse=True))
        return re.compile(_BEFORE + "(?:" + flat + ")" + _AFTER)


def _as_mapping(dictionary) -> dict[str, list[str]]:
    if hasattr(dictionary, "to_mapping"):
        mapping = dictionary.to_mapping()
    elif isinstance(dictionary, Mapping):
        mapping = dict(dictionary)
    else:
        raise AnchorError(f"Translator needs an AnchorDictionary or a mapping key -> [translations], "
                          f"got {type(dictionary).__name__}")
    out: dict[str, list[str]] = {}
    for key, translations in mapping.items():
        if not isinstance(key, str) or not _normalize_key(key):
            raise AnchorError(f"anchor key {key!r} must be a non-empty string")
        if isinstance(translations, str):
            translations = [translations]
        if not translations or not all(isinstance(t, str) and t.strip() for t in translations):
            raise AnchorError(f"anchor '{key}': translations must be a non-empty list of non-empty strings, "
                              f"got {translations!r}")
        out[_normalize_key(key)] = [_normalize_key(t) for t in translations]
    return out


class AnchorMatcher:
    """Finds anchored terms in text (rules M1-M5); shared by the translator and the dictionary's counts."""

    def __init__(self, table: Mapping[str, list[str]]):
        self.keys = list(table)
        self._variants: dict[str, tuple[str, str]] = {}  # normalized variant text -> (key, case)
        # Exact keys first so that they win over derived variants of other keys.
        for key in self.keys:
            self._add_variants(key, [("asis", key)])
        for key in self.keys:
            derived = [("upper", key.upper())]
            if key[:1].islower():
                derived.insert(0, ("cap", _cap(key)))
            self._add_variants(key, derived)
        self._regex = None
        if self._variants:
            self._regex = _compile_matcher(sorted(self._variants))
        self.max_len = max((len(v) for v in self._variants), default=0)

    def _add_variants(self, key: str, forms: list[tuple[str, str]]) -> None:
        for case, form in forms:
            spellings = {form}
            for a, b in (_APOSTROPHES, _APOSTROPHES[::-1]):
                if a in form:
                    spellings.add(form.replace(a, b))  # rule M5
            for spelling in spellings:
                self._variants.setdefault(spelling, (key, case))

    def variants(self) -> dict[str, tuple[str, str]]:
        return dict(self._variants)

    def find(self, text: str) -> list[tuple[int, int, str, str]]:
        """All anchor matches in ``text``: (start, end, key, case) in order."""
        if self._regex is None:
            return []
        out = []
        for m in self._regex.finditer(text):
            key, case = self._variants[_WS.sub(" ", m.group(0))]
            out.append((m.start(), m.end(), key, case))
        return out

    def count(self, texts) -> dict[str, int]:
        """How often each key would be translated in ``texts``."""
        counts = dict.fromkeys(self.keys, 0)
        for text in texts:
            for _s, _e, key, _c in self.find(text):
                counts[key] += 1
        return counts
