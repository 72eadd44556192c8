"""Kinds of anchored terms from the book's own evidence (rules K1-K14, G1-G4, S1 of llm_unlearn/anchors/kinds.py),
ordinary words of another time or accent (D1-D4 of llm_unlearn/anchors/period.py) and the gender measure (Q3 of
llm_unlearn/anchors/quality.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import write_yaml

from llm_unlearn.config import AnchorsConfig
from llm_unlearn.whp.anchors import (
    FEMALE_TITLES,
    MALE_TITLES,
    NEUTRAL_TITLES,
    AnchorDictionary,
    build_anchor_dictionary,
    faker_lists,
)
from llm_unlearn.whp.anchors import lexicon as lx
from llm_unlearn.whp.anchors.kinds import (
    KindSubstitutes,
    collect_votes,
    decide,
    decide_gender,
    neutral_names,
    occurrences,
)
from llm_unlearn.whp.anchors.period import (
    Usage,
    dialect_source,
    in_dictionary,
    ordinary_capitalised_word,
    period_reason,
)
from llm_unlearn.whp.anchors.quality import gender_agreement, given_name_gender, kind_agreement, substitute_kinds

TITLES = {"f": FEMALE_TITLES, "m": MALE_TITLES, "n": NEUTRAL_TITLES}
NAMES = faker_lists()


def votes_for(key: str, text: str, keys=()) -> Counter:
    ctx = occurrences([text], [key, *keys], 400)[key]
    return collect_votes(key, ctx, NAMES, {key, *keys}, TITLES)


# ---- cues (K1-K13) ---------------------------------------------------------------------------------------------
def test_k1_speech_and_action_verbs_with_the_term_as_subject():
    v = votes_for("Zorblax", "Zorblax said nothing. \"No,\" said Zorblax. Then Zorblax nodded. The Zorblax glowed.")
    assert v["K1"] == 3  # "Zorblax said", "said Zorblax", "Zorblax nodded"; "glowed" is no cue


def test_k2_honorifics_give_person_gender_and_surname_votes():
    v = votes_for("Quimby", "Mr. Quimby came. Mrs. Quimby sat. Professor Quimby spoke. Madam Quimby smiled.")
    assert v["K2m"] == 1 and v["K2f"] == 2 and v["K2n"] == 1
    assert v["K2s"] == 3  # Mr., Mrs., Professor mark a surname; Madam does not


def test_k3_first_pronoun_after_the_mention_and_not_past_another_name():
    v = votes_for("Edda", "Edda came home and she slept. Edda left; it was late. Edda met Dorothy and he laughed. "
                          "Edda waved, and they went. Edda saw her.")
    assert v["K3f"] == 1 and v["K3n"] == 1 and v["K3p"] == 1
    assert v["K3m"] == 0  # "he" comes after another name (Dorothy)
    assert sum(v[k] for k in ("K3f", "K3m", "K3n", "K3p")) == 3  # "her" (an object form) is no vote


def test_k4_prepositions_of_place():
    v = votes_for("Thessalmoor", "He lived in Thessalmoor. We rode through Thessalmoor and went to Thessalmoor. "
                                 "At the Thessalmoor we ate. Thessalmoor's roofs shone.")
    assert v["K4"] == 3 and v["K4w"] == 1


def test_k5_the_determiner():
    assert votes_for("Glimmerbox", "The Glimmerbox was old. He took the Glimmerbox. Glimmerbox fell.")["K5"] == 2


def test_k6_plural_forms_are_counted():
    from llm_unlearn.whp.anchors import Candidate
    from llm_unlearn.whp.anchors.kinds import assign_kinds

    cands = [Candidate("Wuzzlet", "proper", 4, 10, 10)]
    text = "A Wuzzlet sang. Two Wuzzlets ran. The Wuzzlets hid. The Wuzzlet slept."
    ev = assign_kinds(cands, [text], None, NAMES, TITLES)
    assert ev["Wuzzlet"].votes["K6"] == 2


def test_k7_cooccurrence_with_known_names():
    v = votes_for("Harker", "Jonathan Harker wrote. Jonathan Harker slept. Mr. Harker woke.")
    assert v["K7l"] == 2  # after a known given name; not after a title
    v = votes_for("Quincey", "Quincey Morris came. Quincey Morris rode. Quincey laughed.")
    assert v["K7f"] == 2  # before a known surname


def test_k9_animal_verbs_and_animal_nouns_beside_a_name():
    v = votes_for("Toto", "Toto barked. The little dog Toto ran. Toto was a black dog. Toto slept.")
    assert v["K9v"] == 1 and v["K9a"] == 2
    # a capitalised word before a name is no animal noun beside it ("the Lobster Quadrille")
    assert votes_for("Quadrille", "the Lobster Quadrille began. The Lobster Quadrille ended.")["K9a"] == 0


def test_k15_named_things():
    v = votes_for("Kukri", "He drew his Kukri knife. The Kukri knife shone. The ship Kukri sailed. Kukri fell.")
    assert v["K15"] == 3
    assert decide("Kukri", Counter({"K15": 3, "K3m": 2}), 5, "person", NAMES)[0] == "object"


@pytest.mark.parametrize("cue, text", [
    ("K10", "They played Blitzball all day. A Blitzball match began. The Blitzball team won."),
    ("K11", "She cast Glorbify at him. The Glorbify charm failed. He cast Glorbify again."),
    ("K12", "Our Runology lessons began. The Runology class was long. A Runology exam came."),
    ("K13", "During Harrowfest we danced. The Harrowfest festival ended. After the feast of Harrowfest we slept."),
])
def test_k10_k13_fiction_kind_cues(cue, text):
    key = text.split()[2] if cue != "K13" else "Harrowfest"
    key = {"K10": "Blitzball", "K11": "Glorbify", "K12": "Runology", "K13": "Harrowfest"}[cue]
    v = votes_for(key, text)
    assert v[cue] >= 2


# ---- the decision (K8, K9, K14) ------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, kind", [
    ("Emerald City", "place"), ("Golden Cap", "object"), ("Seward’s Diary", "title"), ("Winged Monkeys", "creature"),
    ("Wicked Witch", "person"), ("Castle Dracula", "place"), ("Quidditch Cup", "object"), ("Cruciatus Curse", "spell"),
    ("Yule Ball", "event"), ("Land of Oz", "place"), ("Wicked Witch of the West", "person"),
])
def test_k8_head_words(key, kind):
    assert decide(key, Counter(), 10, "org", NAMES)[0] == kind


def test_k9_animal_nouns_and_named_animals():
    assert decide("Lion", Counter({"K1": 30, "K3m": 10}), 50, "org", NAMES)[0] == "creature"
    assert decide("Dormouse", Counter(), 5, "person", NAMES)[0] == "creature"
    assert decide("Toto", Counter({"K9v": 1, "K9a": 2, "K1": 10, "K3m": 5}), 90, "org", NAMES)[0] == "pet"
    # an ordinary English word next to an animal noun is no pet ("Mock Turtle Soup")
    assert decide("Soup", Counter({"K9a": 3}), 10, "person", NAMES)[0] != "pet"


def test_k10_k13_decide_fiction_kinds():
    for cue, kind in (("K10", "game"), ("K11", "spell"), ("K12", "subject"), ("K13", "event")):
        assert decide("Blorp", Counter({cue: 5, "K5": 3}), 10, "person", NAMES)[0] == kind
    assert decide("Blorp", Counter({"K10": 1}), 10, "person", NAMES)[0] != "game"  # one cue is not enough


def test_k14_person_place_group_object_and_fallback():
    person = decide("Varrowby", Counter({"K1": 5, "K3m": 3, "K4": 1}), 20, "place", NAMES)
    assert person[0] == "person" and person[1].startswith("K14") and person[2] is None
    role = decide("Scarecrow", Counter({"K1": 10, "K5": 20, "K3m": 4}), 22, "title", NAMES)
    assert role[0] == "person" and role[2] == "role"
    assert decide("Kansas", Counter({"K4": 6, "K4w": 30, "K3f": 3}), 50, "person", NAMES)[0] == "place"
    assert decide("Munchkins", Counter({"K3p": 3, "K5": 18, "K1": 1}), 21, "title", NAMES, plural_seen=True)[0] \
        == "group"
    assert decide("Danube", Counter({"K5": 9}), 10, "person", NAMES)[0] == "place"
    assert decide("Wafer", Counter({"K5": 3, "K3n": 1}), 4, "person", NAMES)[0] == "object"
    assert decide("Huns", Counter({"K5": 3}), 3, "org", NAMES)[0] == "group"
    assert decide("Szgany", Counter({"K3p": 6, "K5": 8, "K1": 1, "K3n": 1}), 13, "place", NAMES)[0] == "group"
    assert decide("Dardanelles", Counter({"K4": 1, "K5": 3, "K4w": 3}), 5, "place", NAMES)[0] == "place"
    assert decide("Carpathians", Counter({"K5": 9, "K3n": 2, "K4w": 1, "K4": 1, "K3p": 1}), 9, "group", NAMES,
                  plural_seen=False, norp=True)[0] == "place"
    assert decide("Slovaks", Counter({"K3p": 4, "K5": 11, "K3m": 1, "K4w": 1}), 14, "place", NAMES,
                  plural_seen=True)[0] == "group"
    # a place name with one "in"/"at" and no person cue; a role word with "the" is no place
    assert decide("Hampstead", Counter({"K4": 1, "K3n": 1}), 3, "person", NAMES)[0] == "place"
    assert decide("Vice-Consul", Counter({"K4w": 2, "K5": 4, "K2m": 1, "K3m": 2}), 5, "person", NAMES)[0] == "person"
    fallback = decide("Zorb", Counter(), 3, "org", NAMES)
    assert fallback[0] == "org" and fallback[1].startswith("spaCy labels")


# ---- gender (G1-G4) ----------------------------------------------------------------------------------------------
def test_gender_from_honorifics_and_pronouns_then_faker_then_neutral():
    assert decide_gender("Mina", Counter({"K2f": 5, "K3m": 6, "K3f": 2}), NAMES)[0] == "f"  # G1 weighs 3
    assert decide_gender("Quincey", Counter({"K3m": 15, "K3f": 1}), NAMES)[0] == "m"  # G2
    assert decide_gender("Quincey", Counter({"K3m": 2, "K3f": 2}), NAMES)[0] == "n"  # no side wins, unknown name
    assert decide_gender("Mary Ann", Counter(), NAMES) == ("f", "G3 female given name (Faker)")  # G3 fallback
    assert decide_gender("Glinda", Counter({"K3f": 1}), NAMES)[0] == "n"  # one vote is not evidence
    for name in neutral_names(NAMES):
        assert given_name_gender(name) == "n"


def test_g4_full_name_takes_its_parts_gender():
    from llm_unlearn.whp.anchors import Candidate
    from llm_unlearn.whp.anchors.kinds import assign_kinds

    text = ("Van Helsing came in. Van Helsing said he would go. Then Van Helsing nodded and he left. "
            "Abraham Van Helsing, M.D., wrote. ") * 3
    cands = [Candidate("Van Helsing", "person", 9, 50, 50), Candidate("Abraham Van Helsing", "person", 3, 20, 50)]
    ev = assign_kinds(cands, [text], None, NAMES, TITLES)
    assert ev["Van Helsing"].gender == "m"
    assert ev["Abraham Van Helsing"].gender == "m" and ev["Abraham Van Helsing"].gender_rule.startswith("G4")


# ---- substitutes (S1) --------------------------------------------------------------------------------------------
def test_s1_substitutes_of_each_kind_keep_number_case_and_modifiers():
    gen = KindSubstitutes(0, lambda w: True, set(), {"monkeys"})
    creature = {w.lower() for w in lx.CREATURES}
    assert gen.substitute("Lion", "creature").lower() in creature
    winged = gen.substitute("Winged Monkeys", "creature")
    assert winged.startswith("Winged ") and lx.singular(winged.split()[1]).lower() in creature
    assert winged.split()[1].lower() != lx.singular(winged.split()[1]).lower()  # plural kept
    assert gen.substitute("Toto", "pet") in lx.PET_NAMES
    assert gen.substitute("Quidditch", "game") in lx.GAMES
    assert gen.substitute("Expelliarmus", "spell") in lx.SPELLS
    assert gen.substitute("Transfiguration", "subject") in lx.SUBJECTS
    assert gen.substitute("Harrowfest", "event") in lx.EVENTS
    assert gen.substitute("Golden Cap", "object").split()[-1].lower() in {w.lower() for w in lx.OBJECTS}
    assert gen.substitute("Golden Cap", "object").startswith("Golden ")  # an ordinary modifier stays
    assert gen.substitute("Quelzy Cap", "object").split()[0] in lx.ADJECTIVES  # a target-specific one does not
    assert gen.substitute("Munchkins", "group").endswith("s")
    assert gen.substitute("Slovak", "group", nationality=True) in lx.NATIONALITIES
    assert gen.substitute("Hatter", "person") in lx.ROLES
    assert gen.substitute("glimmerstone", "object").islower()
    title = gen.substitute("Seward’s Diary", "title")
    assert title.split()[-1] in lx.TITLES and "Seward" not in title


STORY = """Quimby Fenn walked to Thessalmoor with his dog Rufflebark. Rufflebark barked at the gate. "Come,
Rufflebark," said Quimby Fenn, and he laughed. Rufflebark wagged his tail.

At Thessalmoor the children played Blitzball every day. A Blitzball match began at noon, and the Blitzball team
cheered. Quimby Fenn said he liked Blitzball more than Runology. Runology lessons were dull; the Runology teacher
slept in class. Edda Klovenhurst cast Glorbify on the ball, and she smiled. The Glorbify charm made it fly. She
cast Glorbify again after the Runology class.

During Harrowfest the Zorblax sang in Thessalmoor. The Harrowfest feast lasted a week, and after Harrowfest the
people rested in Thessalmoor. The Zorblax roared, and it slept.
"""


def test_fiction_kinds_end_to_end_on_a_small_story():
    d = build_anchor_dictionary([STORY * 3], AnchorsConfig(min_count=2, seed=0), progress=False)
    kinds = {k: d.entry(k).type for k in d.keys()}
    assert kinds.get("Blitzball") == "game" and set(d.translations("Blitzball")) <= set(lx.GAMES)
    assert kinds.get("Runology") == "subject" and set(d.translations("Runology")) <= set(lx.SUBJECTS)
    assert kinds.get("Glorbify") == "spell" and set(d.translations("Glorbify")) <= set(lx.SPELLS)
    assert kinds.get("Harrowfest") == "event" and set(d.translations("Harrowfest")) <= set(lx.EVENTS)
    assert kinds.get("Rufflebark") == "pet" and set(d.translations("Rufflebark")) <= set(lx.PET_NAMES)
    assert kinds.get("Thessalmoor") == "place"
    assert all(d.entry(k).evidence for k in d.keys())  # every extracted term says what decided its kind
    # the old behaviour stays available
    old = build_anchor_dictionary([STORY * 3], AnchorsConfig(min_count=2, seed=0, kinds="ner"), progress=False)
    assert all(not old.entry(k).evidence for k in old.keys())
    assert not {old.entry(k).type for k in old.keys()} & {"game", "subject", "spell", "event", "pet"}


# ---- ordinary words of another time or accent (D1-D4) ---------------------------------------------------------------
def test_d1_dictionary_words_are_period_vocabulary_unless_local():
    for w in ("gladness", "cheerfulness", "whereon", "aught", "acquiescence", "paroxysm", "uneasiness", "lobsters"):
        assert in_dictionary(w), w
    for w in ("horcrux", "quaffle", "glimmerstone", "wuzzlet", "kalidahs", "szgany"):
        assert not in_dictionary(w), w
    spread = ("Filler text here. " * 50 + "Such gladness. ") * 20
    usage = Usage([spread])
    assert period_reason("gladness", 20, 160_000, usage).startswith("D1")
    local = "Filler text here. " * 2000 + "The carbuncle shone. " * 8 + "Filler text here. " * 2000
    assert period_reason("carbuncle", 8, 20_000, Usage([local])) is None  # used in one place: content
    assert period_reason("glimmerstone", 8, 20_000, Usage(["The glimmerstone. " * 8])) is None  # not English


def test_d2_dialect_spellings_inside_quotes():
    assert dialect_source("ead") == "head" and dialect_source("ouse") == "house"
    assert dialect_source("bloomin") == "blooming" and dialect_source("ittin") == "hitting"
    assert dialect_source("animiles") == "animals"
    assert dialect_source("running") is None  # a common word itself
    assert dialect_source("Toller", edits=False) is None  # a name is only tested for h/g
    quoted = Usage(['"I hit his ’ead, I did," he said. ' * 5 + "Then he left."])
    assert period_reason("ead", 5, 10_000, quoted).startswith("D2")
    narrated = Usage(["He hit the ead of the nail. " * 5])
    assert period_reason("ead", 5, 10_000, narrated) is None or period_reason("ead", 5, 10_000, narrated)[:2] != "D2"


def test_d3_the_targets_own_dictionary_words_stay():
    text = ("The muggles walked. " * 30 + "Filler words go here now. " * 10) * 5
    usage = Usage([text])
    assert in_dictionary("muggles")
    assert period_reason("muggles", 150, 20_000, usage) is None  # 7,500 per million, 150 times
    assert period_reason("muggles", 15, 200_000, usage).startswith("D1")


def test_d4_capitalised_ordinary_words():
    assert ordinary_capitalised_word("Memorandum") and ordinary_capitalised_word("Hark")
    assert not ordinary_capitalised_word("Danube") and not ordinary_capitalised_word("Dracula")
    assert not ordinary_capitalised_word("Hunter", NAMES["last"])  # a known name is never one


# ---- the measures (Q2 judge, Q3) ---------------------------------------------------------------------------------------
def test_judge_knows_the_fiction_lists():
    assert "animal" in substitute_kinds("Badger") and "pet" in substitute_kinds("Rover")
    assert "game" in substitute_kinds("Cricket") and "subject" in substitute_kinds("Botany")
    assert "group" in substitute_kinds("Villagers") and "person" in substitute_kinds("Weaver of Hearts")
    assert "place" in substitute_kinds("Lake Kenneth") and "person" in substitute_kinds("Montgomerys")


def test_gender_agreement(tmp_path):
    import yaml

    d = AnchorDictionary.load(write_yaml(tmp_path, {"Mina": ["Rachel", "Karen", "Kevin"], "Harker": ["Browning"],
                                                "Lucy": ["Jamie"]}))
    labels = {"kinds": {"Mina": "person", "Harker": "person", "Lucy": "person"},
              "genders": {"Mina": "f", "Harker": "m", "Lucy": "f"}, "not_anchors": []}
    r = gender_agreement(d, labels)
    assert r["given_names"] == 4  # "Browning" is no given name
    assert r["agreement"] == pytest.approx(2 / 4)  # Kevin is male, Jamie neutral
    assert kind_agreement(d, labels)["coverage"] == 1.0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"kinds": {"Oz": "place"}, "genders": {"Oz": "m"}}))
    from llm_unlearn.errors import AnchorError
    from llm_unlearn.whp.anchors.quality import load_kind_labels

    with pytest.raises(AnchorError, match="not labelled person"):
        load_kind_labels(path)



def test_settings_are_checked():
    from llm_unlearn.errors import RecipeError

    with pytest.raises(RecipeError, match="anchors.kinds must be 'evidence' or 'ner'"):
        AnchorsConfig(kinds="bogus").validate()
    with pytest.raises(RecipeError, match="period_words"):
        AnchorsConfig(period_words="yes").validate()
