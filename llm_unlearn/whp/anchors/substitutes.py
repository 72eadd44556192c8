"""Generic translations of the selected keys from Faker and ordinary nouns (step 5 of :mod:`llm_unlearn.whp.anchors`;
the base model's and a chat model's proposals are :mod:`.proposals` and :mod:`.chat`)."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache

from ...config import AnchorsConfig
from ...errors import AnchorError
from ...keylinks import key_links
from .dictionary import AnchorEntry, _canon, _norm
from .extraction import _Stats
from .selection import Candidate, faker_lists

logger = logging.getLogger(__name__)


_COMMON_ZIPF = 4.0  # a head word this common in English ("Street", "Valley", "League") is kept in translations
_POOL_KINDS = ("creature", "pet", "object", "game", "spell", "subject", "event")  # substitutes: .kinds (S1)


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


