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

from .dictionary import FORMAT, TYPES, AnchorDictionary, AnchorEntry
from .extraction import ENTITY_TYPES, FEMALE_TITLES, MALE_TITLES, NEUTRAL_TITLES, TITLES, collect_stats, load_spacy
from .period import ordinary_capitalised, ordinary_word, word_stems
from .selection import (
           Candidate,
           faker_lists,
           has_letters,
           keyness_ratio,
           name_parts,
           score_candidates,
           select_candidates,
)
from .stage import build_anchor_dictionary, measure_dictionary, run_anchor_stage, run_anchors
from .substitutes import make_translations

__all__ = ["FORMAT", "TYPES", "AnchorDictionary", "AnchorEntry", "ENTITY_TYPES", "FEMALE_TITLES", "MALE_TITLES",
           "NEUTRAL_TITLES", "TITLES", "collect_stats", "load_spacy", "Candidate", "faker_lists", "has_letters",
           "keyness_ratio", "name_parts", "score_candidates", "select_candidates", "build_anchor_dictionary",
           "measure_dictionary", "run_anchor_stage", "run_anchors", "make_translations", "ordinary_capitalised",
           "ordinary_word", "word_stems"]
