"""Offline 0-3 grading of completions by term matching on spaCy lemmas.

The paper asks GPT-4 to grade each completion 0-3 for how much it shows knowledge of the target. Offline, we
grade by matching terms, on a scale with the same meaning:

* **3 - explicit**: the completion names one of the prompt's own ``references`` (the answer the prompt is
  fishing for: "Watson" after "Sherlock Holmes's friend and biographer, Dr.").
* **2 - target-specific**: it names some other term specific to the concept (the suite's ``anchors``:
  "Moriarty", "Baker Street", "Lestrade" ...), that the prompt itself does not already contain.
* **1 - genre**: it uses a generic genre word of the suite's ``genre_terms`` ("detective", "clue", "murder"
  ...) that the prompt does not already contain.
* **0 - generic**: none of these.

Anchors and genre words already in the prompt do not count: repeating "Holmes" after a prompt that says
"Holmes" shows no knowledge. References count even when echoed (suite authors choose them per prompt).

Matching is on token sequences, each token standing for the set {casefolded text, casefolded lemma, naive
singular}: "Holmes's" matches "Holmes" (the possessive is its own token), "pipes" matches "pipe",
"Red-Headed" matches "red headed" (punctuation tokens are dropped on both sides). Without spaCy a regex
tokenizer with the same casefolding is used (no lemmas).
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

logger = logging.getLogger(__name__)

GRADE_NAMES = {3: "explicit reference", 2: "target-specific term", 1: "genre word", 0: "generic"}

_WORD = re.compile(r"\w+(?:[’']\w+)*", re.UNICODE)
_POSSESSIVE = re.compile(r"[’']s$", re.IGNORECASE)


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _forms(text: str, lemma: str | None = None) -> frozenset[str]:
    t = _POSSESSIVE.sub("", text.casefold().replace("’", "'"))
    forms = {t, _singular(t)}
    if lemma:
        lem = lemma.casefold().replace("’", "'")
        forms |= {lem, _singular(lem)}
    forms.discard("")
    return frozenset(forms)


@lru_cache(maxsize=4)
def load_spacy(name: str | None = None):
    """An English spaCy pipeline with only what lemmas need (tagger, lemmatizer), or None when unavailable."""
    try:
        import spacy
    except ImportError:
        logger.warning("spaCy is not installed: grading falls back to casefolded words without lemmas")
        return None
    candidates = [name] if name else []
    try:
        candidates += [m for m in spacy.util.get_installed_models() if m.startswith("en_")]
    except Exception:  # pragma: no cover - very old spaCy
        pass
    candidates += ["en_core_web_sm", "en_core_web_md"]
    for cand in candidates:
        if cand and importlib.util.find_spec(cand) is not None:
            try:
                return spacy.load(cand, exclude=["ner", "parser", "senter"])
            except OSError:
                continue
    if name:
        from ..errors import EvalError

        raise EvalError(f"spaCy pipeline '{name}' is not installed (pip install it, or leave spacy_model unset)")
    logger.warning("no English spaCy pipeline installed: grading falls back to casefolded words without lemmas")
    return None


class Normalizer:
    """Turns texts into sequences of token form-sets, with spaCy when available."""

    def __init__(self, spacy_model: str | None = None):
        self.nlp = load_spacy(spacy_model)
        self._cache: dict[str, tuple[frozenset[str], ...]] = {}

    @property
    def backend(self) -> str:
        return f"spacy:{self.nlp.meta.get('lang', 'en')}_{self.nlp.meta.get('name', '?')}" if self.nlp else "regex"

    def _regex(self, text: str) -> tuple[frozenset[str], ...]:
        return tuple(_forms(w) for w in _WORD.findall(text))

    def many(self, texts: Iterable[str]) -> list[tuple[frozenset[str], ...]]:
        texts = list(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            if self.nlp is None:
                for t in todo:
                    self._cache[t] = self._regex(t)
            else:
                for t, doc in zip(todo, self.nlp.pipe(todo, batch_size=64), strict=True):
                    self._cache[t] = tuple(
                        _forms(tok.text, tok.lemma_) for tok in doc
                        if not (tok.is_punct or tok.is_space) and _POSSESSIVE.sub("", tok.text) != ""
                    )
        return [self._cache[t] for t in texts]

    def one(self, text: str) -> tuple[frozenset[str], ...]:
        return self.many([text])[0]


def contains(seq: Sequence[frozenset[str]], term: Sequence[frozenset[str]]) -> bool:
    """Whether ``term`` occurs as a contiguous run of tokens in ``seq`` (each token: shared form)."""
    n, m = len(seq), len(term)
    if m == 0 or m > n:
        return False
    for i in range(n - m + 1):
        if all(seq[i + j] & term[j] for j in range(m)):
            return True
    return False


@dataclass
class Grade:
    grade: int
    matched: list[str] = field(default_factory=list)  # the terms that decided the grade


class Grader:
    """Grades completions of one suite's prompts (see the module docstring for the scale)."""

    def __init__(self, anchors: Sequence[str] = (), genre_terms: Sequence[str] = (), spacy_model: str | None = None,
                 normalizer: Normalizer | None = None):
        self.norm = normalizer or Normalizer(spacy_model)
        self.anchors = list(dict.fromkeys(a for a in anchors if a.strip()))
        self.genre = list(dict.fromkeys(g for g in genre_terms if g.strip()))
        self._anchor_seqs = self.norm.many(self.anchors)
        self._genre_seqs = self.norm.many(self.genre)

    def grade_many(self, prompts: Sequence[str], completions: Sequence[str],
                   references: Sequence[Sequence[str]]) -> list[Grade]:
        if not (len(prompts) == len(completions) == len(references)):
            raise ValueError("prompts, completions and references must have the same length")
        p_seqs = self.norm.many(prompts)
        c_seqs = self.norm.many(completions)
        r_seqs = [self.norm.many(refs) for refs in references]
        out = []
        for p, c, refs, rseqs in zip(p_seqs, c_seqs, references, r_seqs, strict=True):
            hits = [r for r, rs in zip(refs, rseqs, strict=True) if contains(c, rs)]
            if hits:
                out.append(Grade(3, hits))
                continue
            hits = [a for a, s in zip(self.anchors, self._anchor_seqs, strict=True) if contains(c, s) and not contains(p, s)]
            if hits:
                out.append(Grade(2, hits))
                continue
            hits = [g for g, s in zip(self.genre, self._genre_seqs, strict=True) if contains(c, s) and not contains(p, s)]
            out.append(Grade(1, hits) if hits else Grade(0, []))
        return out

    def grade(self, prompt: str, completion: str, references: Sequence[str]) -> Grade:
        return self.grade_many([prompt], [completion], [references])[0]
