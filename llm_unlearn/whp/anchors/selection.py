"""Scoring and selecting candidates: keyness against general English, name parts, type quotas (steps 3-4 of
:mod:`llm_unlearn.whp.anchors`)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from ...config import DEFAULT_TYPE_QUOTAS, AnchorsConfig
from .dictionary import _canon, _redundant
from .extraction import ENTITY_TYPES, _Stats
from .period import ordinary_capitalised, ordinary_word

_SMOOTHING = 1.0  # per million words (simple-maths keyness)
_COMMON_NOUN_ZIPF = 2.5  # a key word this common in English and not a name is an ordinary noun ("Hatter", "Hare")


# ---- scoring and selection --------------------------------------------------------------------------------
@dataclass
class Candidate:
    text: str
    type: str
    count: int
    score: float
    ratio: float
    info: dict = field(default_factory=dict)


@lru_cache(maxsize=4)
def faker_lists(locale: str = "en_US") -> dict[str, frozenset[str]]:
    """Word lists kept by Faker (lower case): first names by gender, place head words ("Street", "Lodge"), and
    place names (countries, US states, British counties). Used to type names the small NER models mislabel."""
    from faker import Faker

    out: dict[str, set[str]] = {"female": set(), "male": set(), "last": set(), "place_heads": set(), "places": set()}
    for loc in dict.fromkeys([locale, "en_US", "en_GB"]):
        try:
            fake = Faker(loc)
        except AttributeError:
            continue
        person = fake.provider("faker.providers.person")
        address = fake.provider("faker.providers.address")
        out["female"] |= {n.lower() for n in getattr(person, "first_names_female", ())}
        out["male"] |= {n.lower() for n in getattr(person, "first_names_male", ())}
        out["last"] |= {n.lower() for n in getattr(person, "last_names", ())}
        out["place_heads"] |= {n.lower() for n in getattr(address, "street_suffixes", ())}
        for attr in ("countries", "states", "counties"):
            out["places"] |= {n.lower() for n in (getattr(address, attr, None) or ())}
    return {k: frozenset(v) for k, v in out.items()}


def _kind(c: str, text: str, st: _Stats, lists: dict[str, frozenset[str]]) -> str:
    """The kind of translation a candidate gets: the majority NER label, corrected by evidence the small models
    miss (a word used as part of full names or after honorifics is a person; a known place name, or a name ending
    in a street/place word that does not start with a first name, is a place)."""
    words = text.split(" ")
    labels = Counter({k: v for k, v in st.labels[c].items() if k})
    if text.lower() in lists["places"]:
        return "place"
    if (len(words) > 1 and words[-1].lower() in lists["place_heads"]
            and words[0].lower() not in lists["female"] | lists["male"]):
        return "place"
    person_votes = labels.get("PERSON", 0) + st.role_first[c] + st.role_last[c] + st.after_title[c]
    other = max((v for k, v in labels.items() if k != "PERSON"), default=0)
    if person_votes and person_votes >= other:
        return "person"
    if labels:
        return ENTITY_TYPES[labels.most_common(1)[0][0]]
    return "proper"


def keyness_ratio(n: int, total: int, text: str) -> float:
    """How many times more often ``text`` occurs in the target (``n`` of ``total`` words) than in general English
    (wordfreq), both per million words, smoothed."""
    from wordfreq import word_frequency

    f_t = n / max(total, 1) * 1e6
    f_g = word_frequency(text, "en") * 1e6
    return (f_t + _SMOOTHING) / (f_g + _SMOOTHING)


def _keyness(n: int, total: int, text: str) -> tuple[float, float]:
    ratio = keyness_ratio(n, total, text)
    return n * math.log2(ratio), ratio


def _part_words(words: list[str]) -> list[int]:
    """Indices of the words of a multi-word name that may be names on their own: not an initial or abbreviation
    ("H.", "St."), not the word an abbreviation binds ("Clair" of "St. Clair", one surname), and not punctuation
    or a number (rule N1)."""
    return [k for k, w in enumerate(words)
            if not w.endswith(".") and not (k > 0 and words[k - 1].endswith(".") and len(words[k - 1]) > 2)
            and has_letters(w)]


def has_letters(text: str) -> bool:
    """Rule N1: every word of a term holds a letter (a dash, a bracket or a number is never an anchor)."""
    words = text.split()
    return bool(words) and all(any(ch.isalpha() for ch in w) for w in words)


def name_parts(st: _Stats, lists: dict[str, frozenset[str]]) -> dict[str, Counter]:
    """Words of multi-word person names (module docstring, point 3): canonical word -> its spellings, counted once
    per mention of each full name it is part of ("Sherlock" x 95 from "Sherlock Holmes")."""
    parts: dict[str, Counter] = defaultdict(Counter)
    for c, n in st.mentions.items():
        words = c.split(" ")
        if len(words) < 2:
            continue
        text = st.surface[c].most_common(1)[0][0]
        if _kind(c, text, st, lists) != "person":
            continue
        surface = text.split(" ")
        for k in _part_words(words):
            if len(surface) == len(words):
                parts[words[k]][surface[k]] += n
    return parts


def score_candidates(st: _Stats, config: AnchorsConfig, stop_words: Iterable[str] = ()) -> list[Candidate]:
    """Keyness-scored candidates, best first (see the module docstring)."""
    from wordfreq import zipf_frequency

    lists = faker_lists(config.faker_locale)
    counts = Counter(st.mentions)
    part_surface: dict[str, Counter] = {}
    if config.split_names:
        part_surface = name_parts(st, lists)
        for c, spellings in part_surface.items():
            counts[c] += sum(spellings.values())
    out: list[Candidate] = []
    for c, n in counts.items():
        if n < config.min_count or not has_letters(c):  # rule N1
            continue
        words = c.split(" ")
        if len(words) == 1 and (st.cap_mid[c] < st.lower[c.lower()] or (st.cap_mid[c] == 0 and st.lower[c.lower()])):
            continue  # mostly an ordinary word, capitalised at sentence starts
        if len(words) == 1 and ordinary_capitalised(c, config.ordinary_capitalised_zipf, lists):
            continue  # rule O2
        text = (st.surface.get(c) or part_surface[c]).most_common(1)[0][0]
        kind = _kind(c, text, st, lists)
        score, ratio = _keyness(n, st.total_words, text)
        if ratio < config.min_keyness_ratio:
            continue
        out.append(Candidate(text, kind, n, score, ratio, {"gender": dict(st.gender.get(c, {}))}))
    if config.include_rare_words:
        stop = set(stop_words)
        for word, tags in st.noun_tags.items():
            n = sum(tags.values())
            if (n < config.min_count or len(word) < 3 or word in stop or word in st.name_words
                    or n < 0.8 * st.lower[word] or not has_letters(word)
                    or zipf_frequency(word, "en") >= config.rare_word_zipf
                    or ordinary_word(word, config.ordinary_word_zipf)):  # rule O1
                continue
            score, ratio = _keyness(n, st.total_words, word)
            if ratio < config.min_keyness_ratio:
                continue
            tag = "NNS" if tags["NNS"] > tags["NN"] else "NN"
            out.append(Candidate(word, "noun", n, score, ratio, {"tag": tag}))
    out.sort(key=lambda cand: (-cand.score, cand.text))
    return out


def _quotas(config: AnchorsConfig) -> dict[str, int]:
    """The most of ``top_k`` each type may take (``type_quotas`` over the defaults; checked by the config)."""
    shares = {**DEFAULT_TYPE_QUOTAS, **{k: float(v) for k, v in (config.type_quotas or {}).items()}}
    return {k: math.ceil(v * config.top_k) for k, v in shares.items()}


def select_candidates(ranked: list[Candidate], config: AnchorsConfig) -> list[Candidate]:
    """Top ``top_k`` with per-type caps (first pass) then by score alone (second pass), applying the hygiene
    rules as keys come in."""
    caps = _quotas(config)
    selected: dict[str, Candidate] = {}

    def add(cand: Candidate) -> None:
        keys = {_canon(t) for t in selected}
        if _canon(cand.text) in keys or _redundant(cand.text, keys):
            return
        selected[cand.text] = cand
        keys.add(_canon(cand.text))
        for t in [t for t in selected if t != cand.text and _redundant(t, keys)]:
            del selected[t]  # e.g. "Irene Adler" once both "Irene" and "Adler" are keys
            keys.discard(_canon(t))

    for cand in ranked:
        if len(selected) >= config.top_k:
            break
        if sum(1 for s in selected.values() if s.type == cand.type) < caps.get(cand.type, config.top_k):
            add(cand)
    for cand in ranked:
        if len(selected) >= config.top_k:
            break
        add(cand)
    return sorted(selected.values(), key=lambda cand: (-cand.score, cand.text))


