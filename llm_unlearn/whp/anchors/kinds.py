"""Kinds of anchored terms from the book's own evidence, and their gender.

spaCy's small NER model labels one mention at a time and often gets fiction wrong (main characters as places,
a dog as an organisation). Here every occurrence of a selected term votes with cues that hold in fiction; the
votes, not one label, decide the kind of substitute the term gets. Rules (cited by the tests):

Cues, counted at each occurrence of the term (up to ``max_mentions`` per term, spread over the corpus):

K1. Speech or action verb with the term as subject: the next word is a speech/action verb ("Alice said",
    "the Lion roared"), or a speech verb comes right before the term ("said the Scarecrow"). Animate.
K2. An honorific or title right before the term ("Mr.", "Madam", "Uncle", "Professor"). A person; a female or
    male title is also a gender vote (rule G1); "Mr./Mrs./Dr./Professor..." mark a surname (rule K7).
K3. The first third-person subject or possessive pronoun after the mention, within the next 12 words and before
    any other name (a term, a known name, or a capitalised word inside a sentence): he/his (animate, male),
    she/herself (animate, female), it/its (a thing, a place or an animal), they/their (a group). "him", "her" and
    "them" are left out: as objects they often point at someone else.
K4. A preposition of place right before the term, or before "the" + term ("in Kansas", "at the Palace"):
    in, at, into, through, near... count 1; "to" and "from", which also come before people, count 1/2.
K5. The determiner "the" right before the term ("the Scarecrow", "the Golden Cap"): objects, groups, creatures
    and role names take it; a person's name does not.
K6. The plural: the term itself ends in s and its singular also occurs, or the term + s occurs.
K7. Co-occurrence with names: followed by a capitalised known surname or another term ("Mina Harker": a given
    name), or preceded by a known given name ("Jonathan Harker": a surname).
K8. The head word of a multi-word term decides its kind when it is a word of one kind: "Emerald City" (place),
    "Golden Cap" (object), "Seward's Diary" (title), "Winged Monkeys" (creature), "Wicked Witch" (person);
    so does a first word such as "Castle" or "Mount" (place).
K9. Animals: the term is an animal noun ("the Lion", "Dormouse"): a creature. A named animal (a pet) is the
    subject of an animal verb ("Toto barked"), or a lower-case animal noun stands right before it or is said of
    it ("the dog Toto", "Dinah's our cat"); a pet needs 2 such votes, more than its honorific votes, and must not
    be a common English word (wordfreq Zipf >= 3.5 and in Webster's Second: "Soup").
K15. A named thing: a lower-case class noun of things stands right after or before the term ("his Kukri knife",
    "the ship Demeter"); 2 votes and 20% of the mentions make it an object.
K10-K13. Fiction kinds by the words within three words of the mention: game (play, match, team), spell (cast,
    charm, curse), subject (lessons, class, study), event (during, festival, battle), each needing at least 2
    occurrences, 15% of the mentions, more than the place votes (K4) and more than half the animate ones.

The singular of a group term ("Munchkin" of "Munchkins") is one of its members; but a titled person's plural
("the Rucastles" of "Mr. Rucastle") is a family, a person (rule K6).

Decision (rule K14), first that applies: a K8 head; a K9 animal noun; a pet; a named thing (K15); a fiction kind
(K10-K13); a place word ("the Palace"); a plural term (K6) with a place vote, no K1 vote and no more they- than it-
pronouns is a place ("the Dardanelles"); a group (a plural term with they-pronouns or an animate or nationality
use); a role word; a capitalised single word with "the" in half its mentions and at most one animate vote that is a
common English word: an object ("the Wafer"); one that is not an English word, with "the" in half its mentions and
K1 + K2 votes at most a quarter of those: a place when it is plural with a place vote and no more they- than it-
pronouns, a group when it is plural, spaCy calls it a nationality or "they" follows it at least twice and more often
than "it" ("the Huns", "the Szgany"), else a place ("the Danube": persons' names do not take "the"); a person
(animate votes K1 + K2 + K3 he/she at least 2 and more than the place and it votes; a role name when the term is an
ordinary English noun that takes "the" in half its mentions); a place (K4 votes at least 1 with no K1/K2 vote, at
most one he/she and "the" in under half the mentions; or K4 votes at least 2 and at least the animate ones); an
object (it-pronouns at least the animate votes, and "the" in a third of the mentions); otherwise the kind spaCy's
labels gave (module ``llm_unlearn.whp.anchors``). Lower-case terms keep the type ``noun`` unless they are a creature, a
person, a group or a fiction kind; an object noun is marked concrete (substitutes from the object list, rule S1).

Gender of a person (rules G1-G4): G1 honorifics (3 votes each) and G2 pronouns after mentions; a side wins with
at least twice the other's votes and at least 2. G3: with no such evidence, Faker's given-name lists when the
first word is only female or only male there; otherwise neutral (a name given to either sex). A gendered
person's given-name substitutes are names Faker lists for that sex only. G4: a full name
still neutral takes the gender of its parts that are persons with a gender ("Abraham Van Helsing" from "Van
Helsing"), when they agree.

Substitutes (rule S1, :mod:`.kind_substitutes`): each fiction kind draws from its own list in :mod:`.lexicon`
(creature -> another animal, pet -> a common pet name, object -> an ordinary object, game -> a game, spell -> a
plain verb, subject -> a school subject, event -> an ordinary event, group -> an ordinary people noun or a
nationality, role -> a role noun that is also a surname, title -> another periodical or document word for the head),
keeping the term's number, case and ordinary modifier words (wordfreq Zipf >= 3.5 or a common word of Webster's
Second); a target-specific modifier becomes an ordinary adjective.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from . import lexicon as lx
from .kind_substitutes import KindSubstitutes, neutral_names  # noqa: F401 (rules S1, G3; re-exported)

_WORD = re.compile(r"[A-Za-z][A-Za-z'’\-]*\.?|[.!?;:,\"“”‘’()—]")
_SINGLE_NEWLINE = re.compile(r"(?<!\n)\n(?!\n)")
_END = {".", "!", "?"}
FICTION_KINDS = ("creature", "pet", "object", "game", "spell", "subject", "event")
_SURNAME_TITLES = {"mr", "mrs", "ms", "dr", "doctor", "professor", "prof", "inspector", "captain", "colonel",
                   "mister", "sergeant", "constable", "herr", "monsieur"}
_ANIMAL_NOUNS = lx.ANIMALS | {"beast", "beasts", "creature", "creatures", "animal", "animals", "pet", "monster",
                              "monsters"}


@dataclass
class Evidence:
    """What the occurrences of one term say about it."""

    mentions: int = 0
    votes: Counter = field(default_factory=Counter)  # cue id -> count
    kind: str = ""
    rule: str = ""  # the rule that decided the kind, with its evidence
    gender: str | None = None  # "f", "m", "n" (neutral) for persons
    gender_rule: str = ""
    shape: str | None = None  # persons: "first", "last" or "role"
    concrete: bool = False  # a lower-case noun used as an object

    def summary(self) -> str:
        """One line for ``llm-unlearn anchors --show``: the deciding rule, then the gender's."""
        out = self.rule
        if self.gender_rule:
            out += f"; {self.gender_rule}"
        return out


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text)


def mention_spans(texts: Sequence[str], keys: Iterable[str], keep=None
                  ) -> tuple[list[str], dict[str, list[tuple[int, int, int]]]]:
    """(the texts with hard line wraps joined, {key: [(text index, start, end)]}) of every mention of each key that
    is not in capitals and that ``keep(text, start)`` accepts (all when None)."""
    from ..matching import AnchorMatcher

    keys = list(keys)
    matcher = AnchorMatcher({k: ["-"] for k in keys})
    found: dict[str, list[tuple[int, int, int]]] = {k: [] for k in keys}
    joined = [_SINGLE_NEWLINE.sub(" ", t) for t in texts]
    for d, text in enumerate(joined):
        for s, e, key, case in matcher.find(text):
            if case != "upper" and (keep is None or keep(text, s)):
                found[key].append((d, s, e))
    return joined, found


def spread_evenly(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spaced from the first to the last."""
    if len(items) <= n:
        return items
    picks = sorted({round(i * (len(items) - 1) / max(n - 1, 1)) for i in range(n)})
    return [items[i] for i in picks]


def occurrences(texts: Sequence[str], keys: Iterable[str], max_mentions: int = 400
                ) -> dict[str, list[tuple[list[str], list[str]]]]:
    """(words before, words after) at up to ``max_mentions`` occurrences of each key, spread evenly over the
    corpus; the words stop at a paragraph break. Hard line wraps are joined first."""
    joined, found = mention_spans(texts, keys)
    out = {}
    for key, where in found.items():
        where = spread_evenly(where, max_mentions)
        items = []
        for d, s, e in where:
            left = joined[d][max(0, s - 120):s]
            left = left[left.rfind("\n\n") + 2:] if "\n\n" in left else left
            right = joined[d][e:e + 220].split("\n\n")[0]
            items.append((_tokens(left)[-6:], _tokens(right)[:16]))
        out[key] = items
    return out


def _is_name(word: str) -> bool:
    return word[:1].isupper() and word.lower().rstrip(".") not in ("i", "the", "a", "an")


def collect_votes(key: str, contexts: list[tuple[list[str], list[str]]], names: Mapping[str, frozenset],
                  keys: set[str], titles: Mapping[str, set[str]]) -> Counter:
    """Rules K1-K7 and K9-K13 at each occurrence of ``key``. ``titles``: {"f": ..., "m": ..., "n": ...}."""
    votes: Counter = Counter()
    key_words = {w.lower() for w in key.split(" ")}
    first_names = names["female"] | names["male"]
    for left, right in contexts:
        if len(right) > 1 and right[0] in ("'", "’") and right[1] == "s":  # a possessive or "is": "Dinah's our cat"
            right = ["'s"] + right[2:]
        low_left = [w.lower().rstrip(".") for w in left]
        low_right = [w.lower() if w == "'s" else w.lower().rstrip(".") for w in right]
        prev = low_left[-1] if low_left else ""
        prev2 = low_left[-2] if len(low_left) > 1 else ""
        nxt = right[0] if right else ""
        possessive = nxt == "'s"
        # K1
        after = low_right[1] if nxt in (",",) and len(low_right) > 1 else (low_right[0] if low_right else "")
        if after in lx.SPEECH_VERBS or after in lx.ACTION_VERBS:
            votes["K1"] += 1
        elif prev in lx.SPEECH_VERBS or (prev == "the" and prev2 in lx.SPEECH_VERBS):
            votes["K1"] += 1
        # K2
        for g, ts in titles.items():
            if prev in ts:
                votes["K2" + g] += 1
                if prev in _SURNAME_TITLES:
                    votes["K2s"] += 1
        # K3: first pronoun, stopping at another name
        for j, w in enumerate(right[:12]):
            lw = low_right[j]
            if lw in lx.PRONOUNS:
                votes["K3" + lx.PRONOUNS[lw]] += 1
                break
            starts = j == 0 or right[j - 1] in _END | {'"', "“", "‘"} or right[j - 1][-1:] == "."
            if j > 0 and _is_name(w) and lw not in key_words and (
                    w.rstrip(".") in keys or lw in first_names or lw in names["last"] or not starts):
                break
        # K4
        p = prev2 if prev == "the" else prev
        if p in lx.PLACE_PREPS and not possessive:
            votes["K4"] += 1
        elif p in lx.WEAK_PLACE_PREPS and not possessive:
            votes["K4w"] += 1
        # K5
        if prev == "the":
            votes["K5"] += 1
        # K7
        nxt_w = nxt.rstrip(".")
        if nxt_w[:1].isupper() and (nxt_w.lower() in names["last"] or nxt_w in keys) and \
                nxt_w.lower() not in key_words:
            votes["K7f"] += 1
        if left and left[-1][:1].isupper() and (left[-1].lower() in first_names or left[-1] in keys) \
                and left[-1].lower() not in key_words and prev not in set().union(*titles.values()):
            votes["K7l"] += 1
        # K9
        if after in lx.ANIMAL_VERBS:
            votes["K9v"] += 1
        near_left = [w if w.islower() or not w[:1].isalpha() else "" for w in left[-3:]]  # common nouns only
        if near_left and (near_left[-1] in _ANIMAL_NOUNS or (near_left[-1] == "," and len(near_left) > 1
                                                              and near_left[-2] in _ANIMAL_NOUNS)):
            votes["K9a"] += 1
        elif low_right[:1] in (["is"], ["was"], ["'s"]) and any(
                w in _ANIMAL_NOUNS for w in low_right[1:4]):
            votes["K9a"] += 1
        # K15
        if (low_right[:1] and right[0][:1].islower() and low_right[0] in lx.THING_CLASS_NOUNS) or (
                left and left[-1].islower() and low_left[-1] in lx.THING_CLASS_NOUNS):
            votes["K15"] += 1
        # K10-K13
        near = set(low_left[-3:]) | set(low_right[:3])
        for cue, words in (("K10", lx.GAME_CUES), ("K11", lx.SPELL_CUES), ("K12", lx.SUBJECT_CUES),
                           ("K13", lx.EVENT_CUES)):
            if near & words:
                votes[cue] += 1
    return votes


def _head_kind(key: str) -> tuple[str, str] | None:
    """Rule K8: (kind, head word) of a multi-word term from its head (or first) word."""
    words = key.replace("’", "'").split(" ")
    if len(words) < 2:
        return None
    first = words[0].lower()
    head = words[-1].lower()
    head1 = lx.singular(head)
    if first in lx.PLACE_FIRST:
        return "place", words[0]
    if words[-2].endswith("'s") and head in lx.TITLE_HEADS | {"diary", "journal"}:
        return "title", words[-1]
    for kind, heads in (("place", lx.PLACE_HEADS), ("org", lx.ORG_HEADS), ("title", lx.TITLE_HEADS),
                        ("object", lx.OBJECT_HEADS), ("event", lx.EVENT_HEADS), ("game", lx.GAME_HEADS),
                        ("spell", lx.SPELL_HEADS), ("subject", lx.SUBJECT_HEADS)):
        if head in heads or head1 in heads:
            return kind, words[-1]
    if head in lx.ANIMALS or head1 in lx.ANIMALS:
        return "creature", words[-1]
    if head in lx.ROLE_WORDS or head1 in lx.ROLE_WORDS:
        return "person", words[-1]
    if len(words) > 2 and "of" in [w.lower() for w in words[1:-1]]:  # "Wicked Witch of the West", "Land of Oz"
        return _of_kind(words)
    return None


def _of_kind(words: list[str]) -> tuple[str, str] | None:
    i = [w.lower() for w in words].index("of")
    before = words[:i]
    if len(before) == 1:
        w = before[0].lower()
        if w in lx.PLACE_HEADS or w in ("land", "city", "country"):
            return "place", before[0]
        if w in lx.ROLE_WORDS:
            return "person", before[0]
        if w in lx.ORG_HEADS:
            return "org", before[0]
        return None
    return _head_kind(" ".join(before))


def _fmt(votes: Counter, ids: Iterable[str]) -> str:
    names = {"K1": "K1 subject of said/verbs", "K2f": "K2 female title", "K2m": "K2 male title",
             "K2n": "K2 title", "K3m": "K3 he", "K3f": "K3 she", "K3n": "K3 it", "K3p": "K3 they",
             "K4": "K4 in/at", "K4w": "K4 to/from", "K5": "K5 'the'", "K6": "K6 plural", "K7f": "K7 before a surname",
             "K7l": "K7 after a given name", "K9v": "K9 animal verb", "K9a": "K9 animal noun beside",
             "K10": "K10 game words", "K11": "K11 spell words", "K12": "K12 subject words", "K13": "K13 event words",
             "K15": "K15 thing noun beside", "K2s": "K2 surname title"}
    return ", ".join(f"{names.get(i, i)} {votes[i]:g}" for i in ids if votes.get(i))


def decide(key: str, votes: Counter, mentions: int, old_kind: str, names: Mapping[str, frozenset],
           plural_seen: bool = False, norp: bool = False) -> tuple[str, str, str | None]:
    """Rule K14: (kind, rule with its evidence, person shape) of a term from its votes."""
    from wordfreq import zipf_frequency

    from .period import ordinary_capitalised_word

    m = max(mentions, 1)
    of = f" of {mentions} mentions"
    lower = key[:1].islower()
    single = key.lower().replace("’", "'")
    sing = lx.singular(single)
    animate = votes["K1"] + votes["K2f"] + votes["K2m"] + votes["K2n"] + votes["K3m"] + votes["K3f"]
    place = votes["K4"] + 0.5 * votes["K4w"]
    head = _head_kind(key)
    if head is not None:
        kind, word = head
        return kind, f"K8 head word '{word}'", "role" if kind == "person" else None
    if single in lx.ANIMALS or sing in lx.ANIMALS:
        return "creature", f"K9 animal noun '{key}'" + (f" ({_fmt(votes, ['K1'])}{of})" if votes["K1"] else ""), \
            None
    pet = votes["K9v"] + votes["K9a"]
    if pet >= 2 and pet >= 0.02 * m and pet > votes["K2f"] + votes["K2m"] + votes["K2n"] and not lower \
            and not (ordinary_capitalised_word(key) and zipf_frequency(single, "en") >= 3.5):
        return "pet", f"K9 named animal ({_fmt(votes, ['K9v', 'K9a', 'K1'])}{of})", None
    if votes["K15"] >= 2 and votes["K15"] >= 0.2 * m:
        return "object", f"K15 a named thing ({_fmt(votes, ['K15', 'K5'])}{of})", None
    fiction = max(("K10", "K11", "K12", "K13"), key=lambda c: votes[c])
    if votes[fiction] >= 2 and votes[fiction] >= 0.15 * m and votes[fiction] > max(animate / 2, place):
        kind = {"K10": "game", "K11": "spell", "K12": "subject", "K13": "event"}[fiction]
        return kind, f"{fiction} ({_fmt(votes, [fiction])}{of})", None
    if single in lx.PLACE_HEADS and (place + 1 >= animate or votes["K5"] >= 0.5 * m):  # "the Palace", "the Gates"
        return "place", f"K8 place word '{key}' ({_fmt(votes, ['K4', 'K4w', 'K1'])}{of})", None
    is_plural = key.endswith("s") and not key.endswith("ss") and (
        plural_seen or (votes["K5"] >= 0.5 * m and votes["K3p"] >= votes["K3n"]))
    plural_place = place >= 1 and votes["K1"] == 0 and votes["K3p"] <= votes["K3n"]  # "through the Dardanelles"
    if is_plural and plural_place:
        return "place", f"K6 plural, K4 place ({_fmt(votes, ['K4', 'K4w', 'K3n', 'K3p', 'K5'])}{of})", None
    if is_plural and (votes["K3p"] >= 1 or votes["K1"] >= 1 or norp) and pet < 2:
        if sing in lx.ROLE_WORDS or single in lx.ROLE_WORDS:
            return "person", f"K6 plural of a role word ({_fmt(votes, ['K3p', 'K1'])}{of})", "role"
        if votes["K9a"] >= 1:
            return "creature", f"K6 plural, K9 animal noun beside ({_fmt(votes, ['K9a', 'K3p'])}{of})", None
        return "group", f"K6 plural ({_fmt(votes, ['K3p', 'K1', 'K5'])}{of})" + (", NER NORP" if norp else ""), None
    if single in lx.ROLE_WORDS or sing in lx.ROLE_WORDS:
        return "person", f"role word ({_fmt(votes, ['K1', 'K5', 'K3m', 'K3f'])}{of})", "role"
    inanimate = votes["K3n"]
    if " " not in key and not lower and votes["K5"] >= 0.5 * m and votes["K1"] + votes["K2f"] + votes["K2m"] + \
            votes["K2n"] <= votes["K5"] / 4 and not ordinary_capitalised_word(key):
        plural = key.endswith("s") and not key.endswith("ss")
        if plural and place >= 1 and votes["K3p"] <= votes["K3n"]:
            return "place", f"K5 a plural name with 'the', K4 place ({_fmt(votes, ['K5', 'K4', 'K4w'])}{of})", None
        if norp or plural or (votes["K3p"] >= 2 and votes["K3p"] > votes["K3n"]):  # "the Huns", "the Szgany ... they"
            return "group", f"K5 a group's name with 'the' ({_fmt(votes, ['K5', 'K3p', 'K1'])}{of})" + \
                (", NER NORP" if norp else ""), None
        # "the Danube", "the Esk": a proper name that takes "the" is a place, not a person
        return "place", f"K5 a name with 'the' ({_fmt(votes, ['K5', 'K4', 'K4w', 'K1', 'K3m', 'K3f'])}{of})", None
    if animate >= 2 and animate > place + inanimate:
        shape = None
        if zipf_frequency(sing, "en") >= 3.0 and sing not in names["female"] | names["male"] | names["last"] \
                and votes["K5"] >= 0.5 * m:
            shape = "role"
        return "person", f"K14 animate ({_fmt(votes, ['K1', 'K2f', 'K2m', 'K2n', 'K3m', 'K3f', 'K4', 'K3n'])}{of})", \
            shape
    if place >= 1 and votes["K1"] + votes["K2f"] + votes["K2m"] + votes["K2n"] == 0 and animate <= 1 \
            and votes["K5"] < 0.5 * m:
        return "place", f"K4 place, no person cue ({_fmt(votes, ['K4', 'K4w', 'K3m', 'K3f', 'K3n'])}{of})", None
    if place >= 2 and place >= animate:
        return "place", f"K4 place ({_fmt(votes, ['K4', 'K4w', 'K1', 'K3m', 'K3f'])}{of})", None
    if " " not in key and not lower and votes["K5"] >= 0.5 * m and animate <= 1 and \
            ordinary_capitalised_word(key):
        return "object", f"K5 an English noun with 'the' ({_fmt(votes, ['K5', 'K3n', 'K1'])}{of})", None
    if inanimate >= max(animate, 1) and votes["K5"] >= m / 3:
        return "object", f"K14 a thing ({_fmt(votes, ['K3n', 'K5', 'K1'])}{of})", None
    return old_kind, f"spaCy labels ({old_kind}; {_fmt(votes, ['K1', 'K3m', 'K3f', 'K3n', 'K4', 'K5']) or 'no cue'}{of})", \
        None


def decide_gender(key: str, votes: Counter, names: Mapping[str, frozenset]) -> tuple[str, str]:
    """Rules G1-G3: ("f" | "m" | "n", rule with its evidence); G4 is applied by :func:`assign_kinds`."""
    f = 3 * votes["K2f"] + votes["K3f"]
    m = 3 * votes["K2m"] + votes["K3m"]
    if f >= 2 and f >= 2 * m:
        return "f", f"G1/G2 female ({_fmt(votes, ['K2f', 'K3f', 'K3m'])})"
    if m >= 2 and m >= 2 * f:
        return "m", f"G1/G2 male ({_fmt(votes, ['K2m', 'K3m', 'K3f'])})"
    w = key.split(" ")[0].lower()
    if w in names["female"] and w not in names["male"]:
        return "f", "G3 female given name (Faker)"
    if w in names["male"] and w not in names["female"]:
        return "m", "G3 male given name (Faker)"
    return "n", "G3 no evidence: neutral"


def assign_kinds(selected: list, texts: Sequence[str], st, names: Mapping[str, frozenset],
                 titles: Mapping[str, set[str]], max_mentions: int = 400) -> dict[str, Evidence]:
    """Rule K14 and G1-G3 for the selected candidates: sets each candidate's ``type`` and its ``info`` entries
    ``evidence`` (one line), ``gender`` (votes for the substitute generator), ``shape`` and ``concrete``.
    Returns the evidence per term."""
    from .dictionary import _canon
    from .period import ordinary_capitalised_word

    all_names = names["female"] | names["male"] | names["last"]
    keys = [c.text for c in selected]
    contexts = occurrences(texts, keys, max_mentions)
    key_set = set(keys)
    joined = " ".join(texts)
    out: dict[str, Evidence] = {}
    for cand in selected:
        ctx = contexts.get(cand.text, [])
        votes = collect_votes(cand.text, ctx, names, key_set, titles)
        plural_seen = False
        if " " not in cand.text:
            if cand.text.endswith("s"):
                plural_seen = re.search(rf"\b{re.escape(cand.text[:-1])}\b", joined) is not None
            else:
                n_pl = len(re.findall(rf"\b{re.escape(cand.text)}e?s\b", joined))
                if n_pl:
                    votes["K6"] += n_pl
        labels = st.labels.get(_canon(cand.text), Counter()) if st is not None else Counter()
        norp = bool(labels) and labels.most_common(1)[0][0] == "NORP"
        kind, rule, shape = decide(cand.text, votes, len(ctx), cand.type, names, plural_seen, norp)
        ev = Evidence(len(ctx), votes, kind, rule, shape=shape)
        cues = sum(v for k, v in votes.items() if k[:2] in ("K1", "K2", "K3", "K4", "K5"))
        if rule.startswith("spaCy") and cues == 0 and ordinary_capitalised_word(cand.text, all_names):
            cand.info = dict(cand.info or {})
            cand.info["drop"] = "D4 a capitalised ordinary word with no cue of a name"
        if cand.type == "noun" and cand.text[:1].islower() and kind not in ("creature", "person", "group",
                                                                                 "game", "spell", "subject",
                                                                                 "event"):
            ev.concrete = kind == "object" or votes["K5"] >= 0.3 * max(len(ctx), 1)
            kind = "noun"
            ev.kind = kind
        if kind == "person":
            ev.gender, ev.gender_rule = decide_gender(cand.text, votes, names)
            if shape is None and " " not in cand.text:
                low = cand.text.lower()
                first = votes["K7f"] + (1 if low in names["female"] | names["male"] and low not in names["last"] else 0)
                last = votes["K7l"] + votes["K2s"]
                if first > last:
                    ev.shape = "first"
                elif last > first:
                    ev.shape = "last"
        cand.type = kind
        cand.info = dict(cand.info or {})
        cand.info["evidence"] = ev.summary()
        if ev.gender:
            cand.info["gender"] = {ev.gender: 1}
        if ev.shape:
            cand.info["shape"] = ev.shape
        if ev.concrete:
            cand.info["concrete"] = True
        if kind == "group" and norp:
            cand.info["nationality"] = True
        out[cand.text] = ev
    by_text = {c.text: c for c in selected}
    for cand in selected:  # rule G4: a full name with no gender evidence takes its parts'
        ev = out[cand.text]
        if ev.kind != "person" or ev.gender != "n" or " " not in cand.text:
            continue
        words = cand.text.split(" ")
        parts = [" ".join(words[:k]) for k in range(1, len(words))] + [" ".join(words[k:]) for k in range(1, len(words))]
        found = {out[p].gender for p in parts if p in out and out[p].kind == "person" and out[p].gender in ("f", "m")}
        if len(found) == 1:
            ev.gender = found.pop()
            part = next(p for p in parts if p in out and out[p].gender == ev.gender)
            ev.gender_rule = f"G4 gender of its part '{part}'"
            cand.info["gender"] = {ev.gender: 1}
            cand.info["evidence"] = ev.summary()
    for cand in selected:  # rule K6: the singular of a group ("Munchkin" of "Munchkins") is one of its members
        plural = out.get(cand.text + "s") or out.get(cand.text + "es")
        plural_cand = by_text.get(cand.text + "s") or by_text.get(cand.text + "es")
        mine = out[cand.text]
        if plural is not None and plural.kind == "group" and cand.type == "person" and \
                mine.votes["K2f"] + mine.votes["K2m"] + mine.votes["K2n"] >= 1:  # a family: "the Rucastles"
            plural_cand.type = plural.kind = "person"
            plural_cand.info["evidence"] = plural.rule = f"K6 a family: plural of a titled person ({mine.rule})"
            continue
        if plural is not None and plural.kind in ("group", "creature") and cand.type in ("person", "proper", "org"):
            cand.type = out[cand.text].kind = plural.kind
            cand.info["evidence"] = out[cand.text].rule = f"K6 singular of a {plural.kind} ({plural.rule})"
            cand.info.pop("shape", None)
            cand.info.pop("gender", None)
    return out
