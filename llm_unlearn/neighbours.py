"""Neighbour text for WHP's retain guard (beyond the paper; issue #16, ``finetune.neighbour_texts``).

The generic labels teach "after a first name comes an ordinary surname" wherever the target's names stand, and the
model carries that over to other famous names (other fiction, historical figures) that the target never mentions.
The guard keeps the model at the base model's predictions (KL) on generic text; WikiText-2 holds few such names.
This module writes text ABOUT OTHER ENTITIES OF THE ANCHORS' KINDS, by letting the base model itself complete short
generic openings (per kind: "A famous character in a novel is"), so that the guard sees names of the same kind in
context:

N1. The openings depend only on the kinds present in the anchor dictionary (:data:`OPENINGS`): never on an
    evaluation suite's items (those stay a measurement).
N2. Completions are sampled from the base model (seeded, so a rerun writes the same texts).
N3. A completion that names the target (any anchor key, any vetoed key, any word of the target's name) is dropped:
    the guard must not protect what unlearning removes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .evaluation.familiarity import generate
from .retain import interleave

# N1: generic openings per anchor kind (the kinds of llm_unlearn.anchors); kinds without their own get "other".
OPENINGS: dict[str, tuple[str, ...]] = {
    "person": ("One of the most famous characters in a novel is", "A well-known writer of the nineteenth century was",
               "The hero of a popular story is", "A famous scientist named", "Everyone remembers the character",
               "A famous historical figure is"),
    "place": ("A famous city in Europe is", "One of the best-known streets in the world is",
              "A popular place to visit is", "The story takes place in the town of"),
    "org": ("A famous organisation is", "A well-known company called", "The police force of a large city is"),
    "group": ("A famous family in literature is", "A well-known band called"),
    "title": ("A famous novel called", "One of the best-loved books of all time is"),
    "other": ("A famous story tells how", "A well-known fact about a famous book is"),
}


def openings_for(kinds: Iterable[str]) -> list[str]:
    """N1: the openings for these anchor kinds (unknown kinds and common nouns share the ``other`` set)."""
    out: list[str] = []
    for kind in sorted(set(kinds)):
        out += OPENINGS.get(kind, OPENINGS["other"])
    return list(dict.fromkeys(out or OPENINGS["other"]))


def banned_pattern(terms: Iterable[str]) -> re.Pattern | None:
    """N3: one regex matching any of ``terms`` as whole words (case-insensitive)."""
    words = sorted({t.strip() for t in terms if t and t.strip()}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)


def neighbour_texts(model, tokenizer, kinds: Iterable[str], banned: Iterable[str], count: int,
                    max_new_tokens: int = 64, seed: int = 0, progress: bool = True) -> list[str]:
    """Up to ``count`` texts (opening + sampled completion, N2) about entities of ``kinds``, none naming a
    ``banned`` term (N3). Samples round-robin over the openings; asks for twice the count to leave room for drops."""
    if count <= 0:
        return []
    openings = openings_for(kinds)
    per_opening = max(2, -(-2 * count // len(openings)))
    samples = generate(model, tokenizer, openings, max_new_tokens=max_new_tokens, samples=per_opening,
                       temperature=0.7, top_p=0.95, seed=seed, progress=progress, desc="neighbour texts")
    pattern = banned_pattern(banned)
    kept: list[str] = []
    for k in range(per_opening):  # round-robin: every opening contributes before any contributes twice
        for opening, outs in zip(openings, samples, strict=True):
            text = (opening + outs[k]).strip()
            if len(outs[k].split()) >= 4 and not (pattern and pattern.search(text)):
                kept.append(text)
    return kept[:count]


def guard_rows(generic_rows: list[dict], texts: Sequence[str], tokenizer, max_tokens: int = 256) -> list[dict]:
    """The guard's rows: generic blocks and neighbour texts alternating (each step of a one-block guard sees one
    kind), then whichever list is longer."""
    neighbour = [{"input_ids": tokenizer(t, add_special_tokens=True)["input_ids"][:max_tokens]} for t in texts]
    return interleave([neighbour, generic_rows])
