"""Substitutes of the kinds fiction needs (rule S1 of :mod:`.kinds`) and the neutral given names (rule G3)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from . import lexicon as lx


def neutral_names(names: Mapping[str, frozenset]) -> list[str]:
    """Rule G3's neutral given names: of :data:`.lexicon.UNISEX_NAMES`, those Faker lists for both sexes or for
    neither, and not as a surname (so that the gender measure, rule Q3, sees them as neutral)."""
    out = [n for n in lx.UNISEX_NAMES if (n.lower() in names["female"]) == (n.lower() in names["male"])
           and n.lower() not in names["last"]]
    return out or list(lx.UNISEX_NAMES)


def _ordinary(word: str) -> bool:
    """A modifier word of ordinary English, kept in a substitute ("Winged", "Golden"; not "Cheshire")."""
    from wordfreq import zipf_frequency

    from .period import ordinary_capitalised_word

    return zipf_frequency(word, "en") >= 3.5 or ordinary_capitalised_word(word[:1].upper() + word[1:])


def _case(word: str, like: str) -> str:
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word.lower()


class KindSubstitutes:
    """Draws substitutes of the fiction kinds, groups and role names from :mod:`.lexicon` with its own seeded
    generator (so that Faker's draws for names and places do not depend on these)."""

    def __init__(self, seed: int, ok_word, used: set[str], keys: set[str]):
        self.rng = random.Random(f"kinds:{seed}")
        self.ok_word = ok_word
        self.used = used
        self.keys = keys  # lower-case keys: never kept as a modifier

    def draw(self, pool: Sequence[str], like: str, plural: bool) -> str:
        words = [w for w in pool if self.ok_word(w.lower()) and self.ok_word(lx.plural(w).lower())]
        if not words:
            words = list(pool)
        fresh = [w for w in words if (lx.plural(w) if plural else w).lower() not in self.used]
        word = self.rng.choice(fresh or words)
        return _case(lx.plural(word) if plural else word, like)

    def substitute(self, key: str, kind: str, nationality: bool = False) -> str:
        """One substitute of ``kind`` for ``key`` (rule S1): the head word replaced by a word of the kind's list,
        ordinary modifier words kept, target-specific ones replaced by ordinary adjectives."""
        pool_name = {"group": "nationality" if nationality else "people", "person": "role"}.get(kind, kind)
        pool = lx.POOLS[pool_name]
        words = key.split(" ")
        head = words[-1]
        if "of" in [w.lower() for w in words[1:]]:  # "Wicked Witch of the West": the part before "of"
            i = [w.lower() for w in words].index("of")
            head_i = i - 1
        else:
            head_i = len(words) - 1
        head = words[head_i]
        is_plural = (head.lower().endswith("s") and not head.lower().endswith("ss")
                     and lx.singular(head).lower() != head.lower()) or head.lower().endswith("men")
        if pool_name in ("pet", "game", "spell", "subject", "event", "title"):
            is_plural = False
        out = list(words)
        out[head_i] = self.draw(pool, head if pool_name not in ("pet", "game", "spell", "subject", "event",
                                                                "nationality", "role", "title") else "X", is_plural)
        for k in range(head_i):
            w = words[k]
            if w.lower() in ("the", "of", "and", "a") or (_ordinary(w) and w.lower() not in self.keys):
                continue
            out[k] = self.draw(lx.ADJECTIVES, w, False)
        return " ".join(out)

    def linked(self, key: str, kind: str, prefix: list[str] | None, suffix: list[str] | None, n_prefix_words: int,
               n_suffix_words: int, i: int, nationality: bool = False) -> str:
        """A substitute for ``key`` reusing the translations of linked keys for the words they cover ("Winged
        Monkeys" -> "Winged " + the translation of "Monkeys"), the rest as :meth:`substitute`."""
        if not prefix and not suffix:
            return self.substitute(key, kind, nationality)
        words = key.split(" ")
        middle = words[n_prefix_words: len(words) - n_suffix_words]
        parts = [prefix[i % len(prefix)]] if prefix else []
        for w in middle:
            keep = w.lower() in ("the", "of", "and", "a") or (_ordinary(w) and w.lower() not in self.keys)
            parts.append(w if keep else self.draw(lx.ADJECTIVES, w, False))
        if suffix:
            parts.append(suffix[i % len(suffix)])
        return " ".join(parts)
