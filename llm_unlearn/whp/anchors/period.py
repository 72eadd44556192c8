"""Ordinary words of another time or accent are not anchors.

A 19th-century novel uses many words that are rare in modern English (wordfreq) but are ordinary English:
period vocabulary ("gladness", "acquiescence", "whereon") and dialect spellings of common words in dialogue
("bloomin", "ead", "animiles"). Translating them to unrelated nouns teaches noise. Rules (cited by the tests):

D1. Period vocabulary: a lower-case candidate that is a word of an older dictionary of English (Webster's
    Second, 1934, and the GNU Collaborative International Dictionary of English, from Webster's 1913; the
    ``english-words`` package), itself or through the word it inflects, is not an anchor, unless the book uses
    it at least 5 times and in one place: in fewer than half as many of 20 equal parts of the corpus as it has
    occurrences (up to 20). Such a word ("carbuncle" in one story, "coronet" in another) is that part's content
    and stays.
D2. Dialect spellings: a single word written inside double quotation marks in at least 75% of its occurrences, which
    an English word becomes by restoring a dropped "h" ("ead" -> "head"), a dropped "g" ("bloomin" -> "blooming") or
    both ("ittin" -> "hitting") (wordfreq Zipf >= 3.0), or, for a lower-case word, a common word (Zipf >= 3.5) with
    the same first letter by at most two letter edits for words of 5 letters or more and one for shorter ones
    ("animiles" -> "animals", "masel" -> "myself"), unless it inflects a common word itself. Capitalised words get
    only the h/g test, and never when they are known names: in a story told in dialogue most names are in quotes,
    and many are a letter or two from a common word ("Toller", "Horner").
D4. Capitalised ordinary words: a capitalised single word that is a common word of Webster's Second (listed
    there in lower case, itself, without its hyphen, by its last hyphenated part, or through the word it
    inflects: "Memorandum", "Hark", "Mem"), not a known name, and for which no mention gives a cue of a name
    (rules K1-K5 of :mod:`.kinds` all silent) is not an anchor. It is applied after the kinds are read
    (``llm_unlearn.whp.anchors.kinds.assign_kinds``). The same test tells a common English word from a name in
    rules K9 and K14.
D3. The target's own words stay: a dictionary word that the target uses at least 200 times per million words
    and at least 20 times (an ordinary word the target made its own, like "muggles") is kept.
The rules are on by default (``anchors.period_words``); the user dictionary can still add any word.

The tests of ordinary modern English words that apply always (rules O1, O2 of ``llm_unlearn.whp.anchors``:
:func:`ordinary_word`, :func:`ordinary_capitalised`) live here too.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Sequence
from functools import lru_cache

logger = logging.getLogger(__name__)

_PARTS = 20
_LOCAL_MIN_COUNT = 5
_QUOTED_SHARE = 0.75
_COMMON_ZIPF = 3.5
_RESTORED_ZIPF = 3.0  # a restored h or g needs a word this common
_OWN_PER_MILLION = 200.0
_OWN_MIN_COUNT = 20
_QUOTE = re.compile(r"[\"“”]|\n\s*\n")


# ---- rules O1, O2 (llm_unlearn.whp.anchors): ordinary words of modern English --------------------------------------
# Endings of English inflections: (ending, what replaces it) -> the word a form may inflect (rule O1).
_INFLECTIONS = (("ies", "y"), ("ves", "f"), ("men", "man"), ("es", ""), ("s", ""), ("ing", ""), ("ing", "e"),
                ("ed", ""), ("ed", "e"), ("er", ""), ("est", ""))


def word_stems(word: str) -> list[str]:
    """``word`` and the words it may be an inflection of ("dears" -> "dear", "pattering" -> "patter",
    "stopping" -> "stop"); no dictionary is consulted, so some stems are not words (their frequency is 0)."""
    w = word.lower()
    out = [w]
    for ending, repl in _INFLECTIONS:
        if w.endswith(ending) and len(w) - len(ending) >= 3:
            stem = w[: -len(ending)] + repl
            out.append(stem)
            if not repl and len(stem) >= 4 and stem[-1] == stem[-2]:  # doubled consonant: "stopping"
                out.append(stem[:-1])
    return list(dict.fromkeys(out))


def ordinary_word(word: str, zipf_floor: float) -> bool:
    """Rule O1: a word of general English, as common as ``zipf_floor`` (wordfreq Zipf) itself or through the word
    it inflects. ``zipf_floor <= 0`` turns the rule off."""
    if zipf_floor <= 0 or " " in word.strip():
        return False
    from wordfreq import zipf_frequency

    return max(zipf_frequency(s, "en") for s in word_stems(word)) >= zipf_floor


def ordinary_capitalised(word: str, zipf_floor: float, lists) -> bool:
    """Rule O2: a capitalised single word that is very common in English ("Ministry", "Queen") and not a known
    given name, surname or place (so "Alice" or "Watson" stay candidates). ``zipf_floor <= 0`` turns it off."""
    if zipf_floor <= 0 or " " in word.strip():
        return False
    from wordfreq import zipf_frequency

    w = word.lower()
    if w in lists["female"] or w in lists["male"] or w in lists["last"] or w in lists["places"]:
        return False
    return zipf_frequency(w, "en") >= zipf_floor


# ---- rules D1-D4 ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def dictionary_words() -> frozenset[str]:
    """Lower-case words of Webster's Second (1934) and GCIDE (Webster's 1913), from ``english-words``."""
    from english_words import get_english_words_set

    return frozenset(get_english_words_set(["web2", "gcide"], lower=True, alpha=True))


@lru_cache(maxsize=1)
def common_dictionary_words() -> frozenset[str]:
    """Words Webster's Second lists in lower case (common words, not proper names)."""
    from english_words import get_english_words_set

    return frozenset(w for w in get_english_words_set(["web2"], alpha=True) if w.islower())


def ordinary_capitalised_word(word: str, names: frozenset[str] = frozenset()) -> bool:
    """Rule D4's word test (the evidence test is the caller's)."""
    if " " in word or not word[:1].isupper() or word.lower() in names:
        return False
    words = common_dictionary_words()
    low = word.lower().replace("’", "").replace("'", "")
    return any(s in words for w in dict.fromkeys([low, low.replace("-", ""), low.split("-")[-1]])
               for s in word_stems(w))


def in_dictionary(word: str) -> bool:
    """Rule D1's test: ``word`` or a word it inflects is in the older dictionary."""
    words = dictionary_words()
    return any(s in words for s in word_stems(word.lower().replace("’", "").replace("'", "")))


@lru_cache(maxsize=1)
def _common_words() -> dict[int, tuple[str, ...]]:
    from wordfreq import top_n_list, zipf_frequency

    by_len: dict[int, list[str]] = {}
    for w in top_n_list("en", 40000):
        if w.isalpha() and w.isascii() and zipf_frequency(w, "en") >= _COMMON_ZIPF:
            by_len.setdefault(len(w), []).append(w)
    return {k: tuple(v) for k, v in by_len.items()}


def _distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, stopping early above ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        if min(cur) > limit:
            return limit + 1
        prev = cur
    return prev[-1]


def dialect_source(word: str, edits: bool = True) -> str | None:
    """Rule D2's spelling test: the common English word ``word`` spells in dialect, or None. ``edits=False``:
    only the dropped "h" and "g"."""
    from wordfreq import zipf_frequency

    w = word.lower().strip("'’")
    if len(w) < 2 or not w.isalpha():
        return None
    tries = ["h" + w]
    if w.endswith("in"):
        tries += [w + "g", "h" + w + "g"]
    for t in tries:
        if zipf_frequency(t, "en") >= _RESTORED_ZIPF:
            return t
    limit = 2 if len(w) >= 5 else 1
    if len(w) < 3 or not edits or any(zipf_frequency(s, "en") >= _COMMON_ZIPF for s in word_stems(w)):
        return None
    common = _common_words()
    best = None
    for n in range(len(w) - limit, len(w) + limit + 1):
        for c in common.get(n, ()):
            if c[0] != w[0]:
                continue
            if c == w:
                return None  # a common word itself is not a dialect spelling
            d = _distance(w, c, limit)
            if d <= limit and (best is None or d < best[0] or (d == best[0] and zipf_frequency(c, "en") > best[2])):
                best = (d, c, zipf_frequency(c, "en"))
    return best[1] if best else None


def _quote_spans(text: str) -> list[tuple[int, int]]:
    """Spans inside double quotation marks; an unclosed quote ends at the paragraph's end."""
    spans, start = [], None
    for m in _QUOTE.finditer(text):
        ch = m.group(0)
        if ch.strip() == "":  # paragraph break
            if start is not None:
                spans.append((start, m.start()))
            start = None
        elif ch == "“" or (ch == '"' and start is None):
            start = m.end()
        elif start is not None:
            spans.append((start, m.start()))
            start = None
    if start is not None:
        spans.append((start, len(text)))
    return spans


class Usage:
    """Where a word occurs in the corpus: how often inside quotes, and in how many of 20 equal parts."""

    def __init__(self, texts: Sequence[str]):
        self.text = "\n\n".join(texts)
        spans = _quote_spans(self.text)
        self.starts = [s for s, _e in spans]
        self.ends = [e for _s, e in spans]
        self._cache: dict[str, list[int]] = {}

    def _positions(self, word: str) -> list[int]:
        if word not in self._cache:
            flags = re.IGNORECASE if word[:1].islower() else 0
            self._cache[word] = [m.start() for m in re.finditer(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])",
                                                                 self.text, flags)]
        return self._cache[word]

    def quoted_share(self, word: str) -> float:
        pos = self._positions(word)
        if not pos:
            return 0.0
        inside = 0
        for p in pos:
            i = bisect.bisect_right(self.starts, p) - 1
            inside += i >= 0 and p < self.ends[i]
        return inside / len(pos)

    def spread(self, word: str) -> float:
        """Parts of the corpus holding the word / min(occurrences, 20) (1 = as spread as it can be)."""
        pos = self._positions(word)
        if not pos:
            return 0.0
        size = max(len(self.text) / _PARTS, 1)
        parts = {min(int(p / size), _PARTS - 1) for p in pos}
        return len(parts) / min(len(pos), _PARTS)


def period_reason(text: str, count: int, total_words: int, usage: Usage, names: frozenset[str] = frozenset()
                  ) -> str | None:
    """Rules D1-D3 for one candidate: why it is an ordinary word of another time or accent, or None."""
    if " " in text:
        return None
    lower = text[:1].islower()
    if not lower and text.lower() in names:
        return None
    if usage.quoted_share(text) >= _QUOTED_SHARE:
        source = dialect_source(text, edits=lower)
        if source is not None:
            return f"D2 dialect spelling of '{source}' (in quotes {100 * usage.quoted_share(text):.0f}%)"
    if not lower:
        return None
    if in_dictionary(text):
        own = count >= _OWN_MIN_COUNT and count / max(total_words, 1) * 1e6 >= _OWN_PER_MILLION
        if own:
            return None  # rule D3
        spread = usage.spread(text)
        if count < _LOCAL_MIN_COUNT or spread >= 0.5:
            return f"D1 dictionary word ({count} times, spread {spread:.2f})"
    return None


def drop_period_words(ranked: list, texts: Sequence[str], total_words: int, lists=None,
                      limit: int | None = None) -> list:
    """Remove the candidates rules D1-D2 call ordinary words of another time or accent (logged). Only the best
    ``limit`` candidates are examined (the rest cannot be selected anyway). ``lists``: Faker's name lists."""
    kept, dropped = period_words(ranked, texts, total_words, lists, limit)
    if dropped:
        logger.info("anchors: %d ordinary words of another time or accent left out (rules D1-D2): %s", len(dropped),
                    ", ".join(f"{k} ({v})" for k, v in dropped.items()))
    return kept


def period_words(ranked: list, texts: Sequence[str], total_words: int, lists=None, limit: int | None = None
                 ) -> tuple[list, dict[str, str]]:
    """(kept candidates, {dropped term: rule and reason}) under rules D1-D3."""
    names = frozenset().union(*(lists[k] for k in ("female", "male", "last"))) if lists else frozenset()
    usage = Usage(texts)
    kept, dropped = [], {}
    for i, cand in enumerate(ranked):
        reason = period_reason(cand.text, cand.count, total_words, usage, names) if limit is None or i < limit \
            else None
        if reason:
            dropped[cand.text] = reason
        else:
            kept.append(cand)
    return kept, dropped
