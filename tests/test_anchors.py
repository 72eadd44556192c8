"""Anchored terms (whp-method.md stage 2): the dictionary file and user merges, hygiene, selection, generic
translations, extraction with the real spaCy pipeline, the `anchors` command, and the Sherlock Holmes corpus."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest

from llm_unlearn.config import AnchorsConfig
from llm_unlearn.errors import AnchorError, RecipeError
from llm_unlearn.whp.anchors import (
    AnchorDictionary,
    AnchorEntry,
    Candidate,
    build_anchor_dictionary,
    load_spacy,
    select_candidates,
)
from llm_unlearn.whp.anchors.extraction import _chunks, _Stats
from llm_unlearn.whp.anchors.selection import _keyness
from llm_unlearn.whp.anchors.substitutes import _Substitutes
from llm_unlearn.whp.translation import AnchorMatcher


def small_dictionary() -> AnchorDictionary:
    return AnchorDictionary([
        AnchorEntry("Holmes", ["Hart", "Moss"], "person", 40, 300.5),
        AnchorEntry("Baker Street", ["Hart Street"], "place", 9, 50.0),
        AnchorEntry("carbuncle", ["lantern"], "noun", 5, 12.25),
    ])


# ---- the dictionary file ---------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_roundtrip(tmp_path, suffix):
    d = small_dictionary()
    d.vetoed.append("London")
    path = tmp_path / f"anchors{suffix}"
    d.save(path)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file
    if suffix == ".json":
        assert json.loads(path.read_text())["format"] == "llm-unlearn-anchors/1"
    back = AnchorDictionary.load(path)
    assert back.keys() == ["Holmes", "Baker Street", "carbuncle"]
    assert back.to_mapping() == d.to_mapping()
    assert back.entry("Holmes").type == "person" and back.entry("Holmes").count == 40
    assert back.entry("carbuncle").score == 12.25
    assert back.vetoed == ["London"]
    assert len(back) == 3 and "Holmes" in back and back.translations("Holmes") == ["Hart", "Moss"]


def test_load_plain_user_mapping(tmp_path):
    path = tmp_path / "user.yaml"
    path.write_text("Moriarty: [Blake, Morton]\nAdler: Cole\nLondon: null\n", encoding="utf-8")
    d = AnchorDictionary.load(path)
    assert d.to_mapping() == {"Moriarty": ["Blake", "Morton"], "Adler": ["Cole"]}
    assert d.entry("Moriarty").type == "user" and d.vetoed == ["London"]


def test_merge_adds_replaces_and_vetoes(tmp_path):
    d = small_dictionary()
    d.merge({"Moriarty": ["Blake"], "Holmes": "Reed", "carbuncle": None, "Nonexistent": None})
    assert d.keys() == ["Holmes", "Baker Street", "Moriarty"]
    assert d.translations("Holmes") == ["Reed"]
    assert d.entry("Holmes").type == "person" and d.entry("Holmes").score == 300.5  # metadata kept
    assert d.entry("Moriarty").type == "user"
    assert d.vetoed == ["carbuncle", "Nonexistent"]
    # from a JSON file, with curly/straight apostrophes treated as one spelling
    d2 = AnchorDictionary([AnchorEntry("O’Brien", ["Dunn"], "person")])
    path = tmp_path / "user.json"
    path.write_text(json.dumps({"O'Brien": ["Kerr"], "Baskerville": ["Hale", "Hale"]}), encoding="utf-8")
    d2.merge(path)
    assert d2.to_mapping() == {"O'Brien": ["Kerr"], "Baskerville": ["Hale"]}
    # re-adding a vetoed key un-vetoes it
    d.merge({"carbuncle": ["gem"]})
    assert "carbuncle" in d and "carbuncle" not in d.vetoed


BAD_FILES = [
    ("missing", None, "not found"),
    ("bad.yaml", "Holmes: [Hart\nWatson: Baker\n", "not valid YAML (line"),
    ("bad.json", '{"Holmes": ["Hart",]}', "not valid JSON (line 1"),
    ("list.yaml", "- Holmes\n- Watson\n", "must be a mapping"),
    ("intkey.yaml", "1984: [Nineteen]\n", "anchor key 1984 must be a non-empty string"),
    ("number.yaml", "Holmes: 3\n", "anchor 'Holmes': translations must be a list"),
    ("empty.yaml", "Holmes: []\n", "anchor 'Holmes': the list of translations is empty"),
    ("same.yaml", "Holmes: [Hart, holmes]\n", "anchor 'Holmes': a translation must differ from its key"),
    ("nonstr.yaml", "Holmes: [Hart, 3]\n", "anchor 'Holmes': translation 3 must be a non-empty string"),
    ("field.yaml", "anchors:\n  Holmes: {translations: [Hart], colour: red}\n", "unknown field(s) ['colour']"),
    ("type.yaml", "Holmes: {translations: [Hart], type: wizard}\n", "unknown type 'wizard'"),
    ("format.yaml", "format: other/9\nanchors: {Holmes: [Hart]}\n", "unknown dictionary format 'other/9'"),
    ("cross.yaml", "Holmes: [Watson]\nWatson: [Baker]\n", "translation 'Watson' is itself an anchored term"),
    # a shared dictionary file is untrusted input: bad rows are typed errors, never a traceback or invalid JSON later
    ("count.yaml", "Holmes: {translations: [Hart], count: abc}\n", "count must be a whole number >= 0"),
    ("countinf.yaml", "Holmes: {translations: [Hart], count: .inf}\n", "count must be a whole number >= 0"),
    ("score.yaml", "Holmes: {translations: [Hart], score: [1]}\n", "score must be a finite number"),
    ("scorenan.yaml", "Holmes: {translations: [Hart], score: .nan}\n", "score must be a finite number"),
    ("scorenan.json", '{"Holmes": {"translations": ["Hart"], "score": NaN}}', "not valid JSON"),
    ("dupkey.yaml", "Holmes: [Hart]\nWatson: [Baker]\nHolmes: [Moss]\n", "appears twice"),
    ("alias.yaml", "a: &x [Hart, Moss]\nHolmes: *x\n", "alias"),
]


@pytest.mark.parametrize("name,content,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_dictionary_files_give_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(AnchorError) as info:
        AnchorDictionary.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_merge_rejects_other_types():
    with pytest.raises(AnchorError, match="cannot merge a int"):
        small_dictionary().merge(3)


def test_hygiene_rules():
    d = AnchorDictionary([AnchorEntry(k, [f"T{i}"]) for i, k in enumerate(
        ["Harry", "Potter", "Harry Potter", "Holmes", "Holmes's", "Holmes’", "Sherlock Holmes", "Hermione’s"])])
    dropped = dict(d.apply_hygiene())
    assert set(dropped) == {"Harry Potter", "Holmes's", "Holmes’"}
    assert "Sherlock Holmes" in d and "Hermione’s" in d  # "Sherlock" and "Hermione" are not keys


# ---- selection, scoring, chunks -----------------------------------------------------------------------------
def cand(text, kind, score):
    return Candidate(text, kind, 10, score, 50.0)


def test_selection_caps_types_then_fills_and_applies_hygiene():
    ranked = [cand(f"Person{i}", "person", 100 - i) for i in range(8)] + [cand("Placeone", "place", 10),
                                                                          cand("rareword", "noun", 5)]
    config = AnchorsConfig(top_k=4, type_quotas={"person": 0.5})
    names = [c.text for c in select_candidates(ranked, config)]
    assert names == ["Person0", "Person1", "Placeone", "rareword"]  # person capped at 2 while others exist
    config = AnchorsConfig(top_k=6, type_quotas={"person": 0.5})
    assert len(select_candidates(ranked, config)) == 6  # second pass fills by score
    ranked = [cand("Irene Adler", "person", 50), cand("Irene", "person", 40), cand("Adler", "person", 30),
              cand("Adler's", "person", 20), cand("Windibank", "person", 10)]
    names = [c.text for c in select_candidates(ranked, AnchorsConfig(top_k=4))]
    assert names == ["Irene", "Adler", "Windibank"]  # "Irene Adler" dropped once both words are keys
    with pytest.raises(RecipeError, match="anchors.type_quotas must be a mapping of types"):
        AnchorsConfig(type_quotas={"wizards": 0.1}).validate()


def test_keyness_prefers_target_specific_terms():
    score_name, ratio_name = _keyness(20, 100_000, "Windibank")  # unknown to general English
    score_city, ratio_city = _keyness(40, 100_000, "London")  # frequent everywhere
    score_common, ratio_common = _keyness(20, 100_000, "house")
    assert ratio_name > 100 and ratio_city < 5 and ratio_common < 5
    assert score_name > score_city and score_name > score_common


def test_chunks_keep_length_and_cut_at_paragraphs():
    text = ("Irene\nAdler _wrote_ this.\n\n" * 400)
    chunks = _chunks(text, size=1000)
    assert "".join(chunks) == text.replace("\n\n", "\0").replace("\n", " ").replace("\0", "\n\n").replace("_", " ")
    assert all(c.endswith("\n\n") for c in chunks[:-1]) and max(len(c) for c in chunks) <= 1000 + 30
    assert "Irene Adler" in chunks[0]


def test_sentence_starts_without_a_parser():
    import spacy

    from llm_unlearn.whp.anchors.extraction import _sentence_starts

    doc = spacy.blank("en")("Come here. “Street lamps,” he said. “Go!” Mr. Holmes went.\n\nBaker came.")
    starts = {tok.text for tok, s in zip(doc, _sentence_starts(doc), strict=True) if s}
    assert starts == {"Come", "Street", "Go", "Mr.", "Baker"}


# ---- generic translations on hand-made statistics -----------------------------------------------------------
def make_stats() -> _Stats:
    st = _Stats(total_words=10_000)
    st.name_words = {"watson", "hudson", "irene"}
    st.role_last.update({"Varrowby": 5})
    st.role_first.update({"Edda": 4})
    st.noun_tags.update({"window": Counter({"NN": 9}), "door": Counter({"NN": 12}), "chair": Counter({"NN": 4}),
                         "table": Counter({"NN": 6}), "candle": Counter({"NN": 3}), "boots": Counter({"NNS": 5}),
                         "gloves": Counter({"NNS": 4}), "letters": Counter({"NNS": 8})})
    st.lower.update({"window": 9, "door": 12, "chair": 4, "table": 6, "candle": 3, "boots": 5, "gloves": 4,
                     "letters": 8})
    return st


def test_substitutes_kind_shape_and_rules():
    from llm_unlearn.whp.anchors import make_translations

    keys = [Candidate("Varrowby", "person", 10, 100, 90, {}),
            Candidate("Edda", "person", 8, 80, 90, {"gender": {"f": 3}}),
            Candidate("Edda Varrowby", "person", 6, 70, 90, {"gender": {"f": 3}}),
            Candidate("Pellmoor Street", "place", 6, 60, 90, {}),
            Candidate("Thessalmoor", "place", 5, 50, 90, {}),
            Candidate("glimmerstone", "noun", 5, 40, 90, {"tag": "NN"}),
            Candidate("Varrowbys", "person", 3, 10, 90, {})]
    st = make_stats()
    config = AnchorsConfig(translations_per_key=3, seed=7)
    entries = {e.key: e for e in make_translations(keys, st, config)}
    lists = {k: e.translations for k, e in entries.items()}
    assert all(len(v) == 3 and len(set(v)) == 3 for k, v in lists.items() if k != "Edda Varrowby")
    from llm_unlearn.whp.anchors import faker_lists

    female = faker_lists()["female"]
    assert all(" " not in t for t in lists["Varrowby"]) and all(" " not in t for t in lists["Edda"])
    assert all(t.lower() in female for t in lists["Edda"])  # a female given name for a female given name
    # linked at both ends: every pair of Edda's and Varrowby's translations, whatever the translator picks for each
    assert lists["Edda Varrowby"] == [f"{a} {b}" for a in lists["Edda"] for b in lists["Varrowby"]]
    assert all(t.endswith(" Street") for t in lists["Pellmoor Street"])
    assert all(t[0].isupper() and " " not in t for t in lists["Thessalmoor"])
    assert all(t in {"window", "door", "chair", "table", "candle"} for t in lists["glimmerstone"])
    assert lists["Varrowbys"] == [t + ("es" if t.endswith(("s", "x", "z", "ch", "sh")) else "s")
                                  for t in lists["Varrowby"]]
    keys_lower = {k.lower() for k in lists}
    for key, translations in lists.items():
        for t in translations:
            assert t.lower() != key.lower() and t.lower() not in keys_lower
            assert not {w.lower() for w in re.split(r"[\s-]+", t)} & st.name_words
    # seeded: same seed, same translations; another seed, others
    again = {e.key: e.translations for e in make_translations(keys, make_stats(), config)}
    assert again == lists
    other = {e.key: e.translations for e in make_translations(keys, make_stats(), AnchorsConfig(seed=8))}
    assert other != lists


def name_stats() -> _Stats:
    """A 100,000-word corpus: "Zebulon" only ever in "Zebulon Quarrington", "John" (common in English) in "John
    Quarrington", "St. Clair" one surname, "H." an initial."""
    st = _Stats(total_words=100_000)
    mentions = {"Zebulon Quarrington": 20, "John Quarrington": 5, "Quarrington": 30, "Neville St. Clair": 6,
                "St. Clair": 5, "H. Quarrington": 3}
    for text, n in mentions.items():
        st.mentions[text] += n
        st.surface[text][text] += n
        st.labels[text]["PERSON"] += n
        words = text.split(" ")
        for k in range(1, len(words)):
            st.role_first[" ".join(words[:k])] += n
            st.role_last[" ".join(words[k:])] += n
        st.name_words |= {w.lower() for w in words}
    st.gender["Zebulon"]["m"] += 4
    return st


def test_name_parts_are_candidates_by_the_same_tests():
    from llm_unlearn.whp.anchors import score_candidates

    st = name_stats()
    ranked = {c.text: c for c in score_candidates(st, AnchorsConfig(include_rare_words=False))}
    # "Zebulon": 20 mentions, all inside a full name; "Quarrington": 30 alone + 20 + 5 + 3 inside full names
    assert ranked["Zebulon"].count == 20 and ranked["Zebulon"].type == "person"
    assert ranked["Quarrington"].count == 58
    assert ranked["Neville"].count == 6
    assert ranked["Zebulon"].ratio >= 5 and ranked["Neville"].ratio >= 5
    # "John": 5 mentions per 100,000 words is not more than general English; initials and "St. Clair" stay whole
    for absent in ("John", "H.", "H", "St.", "Clair"):
        assert absent not in ranked
    assert _keyness(5, 100_000, "John")[1] < 5
    # the same tests: a higher bar keeps "Zebulon" out, a lower count too
    assert "Zebulon" not in {c.text for c in score_candidates(st, AnchorsConfig(min_count=21))}
    assert "Zebulon" not in {c.text for c in score_candidates(st, AnchorsConfig(min_keyness_ratio=1e6))}
    # switched off: full names and names used alone only, counted alone
    off = {c.text: c for c in score_candidates(st, AnchorsConfig(include_rare_words=False, split_names=False))}
    assert "Zebulon" not in off and "Neville" not in off and off["Quarrington"].count == 30
    assert set(off) < set(ranked)


def test_name_parts_replace_full_names_and_keep_translations_consistent():
    from llm_unlearn.whp.anchors import faker_lists, make_translations, score_candidates

    st = name_stats()
    config = AnchorsConfig(include_rare_words=False, seed=3)
    selected = select_candidates(score_candidates(st, config), config)
    keys = [c.text for c in selected]
    assert "Zebulon" in keys and "Quarrington" in keys
    assert "Zebulon Quarrington" not in keys  # each of its words is a key (hygiene)
    assert "John Quarrington" in keys and "Neville St. Clair" in keys and "St. Clair" in keys
    tr = {e.key: e.translations for e in make_translations(selected, st, config)}
    male = faker_lists()["male"]
    # a first name for the first-name part (male, from "Mr."), a surname for the surname
    assert all(" " not in t and t.lower() in male for t in tr["Zebulon"])
    assert all(" " not in t for t in tr["Quarrington"])
    # a kept full name ends with its surname's translations, index by index
    assert [t.split(" ")[-1] for t in tr["John Quarrington"]] == tr["Quarrington"]
    # linked at both ends: every pair, so the translator's choices for the parts always fit
    assert sorted(tr["Neville St. Clair"]) == sorted(f"{a} {b}" for a in tr["Neville"] for b in tr["St. Clair"])


def test_translator_keeps_a_full_name_consistent_with_both_parts(smol_tokenizer):
    import random

    from llm_unlearn.corpus import Document, make_blocks
    from llm_unlearn.whp.translation import Translator

    first, last = ["Owen", "Paul", "Ross"], ["Hart", "Moss", "Reed"]
    table = {"Neville": first, "St. Clair": last, "Neville St. Clair": [f"{a} {b}" for a in first for b in last]}
    text = "Neville St. Clair came home. Later Neville spoke to Mrs. St. Clair."
    block = make_blocks([Document("t", text)], smol_tokenizer, block_size=10_000)[0]
    translator = Translator(table, smol_tokenizer)
    for seed in range(12):
        chosen = translator.translate(block, random.Random(seed)).chosen
        assert chosen["Neville St. Clair"] == f"{chosen['Neville']} {chosen['St. Clair']}"


def test_unused_extracted_keys_are_dropped(monkeypatch):
    """A name part that never occurs outside a kept full name is never replaced: dropped after the recount,
    unless the user gave it."""
    import llm_unlearn.whp.anchors.stage as anchors

    st = _Stats(total_words=100_000)
    for text, n in {"Zebulon Johnson": 6, "Quarrington": 8}.items():
        st.mentions[text] += n
        st.surface[text][text] += n
        st.labels[text]["PERSON"] += n
    st.role_first["Zebulon"] += 6
    st.role_last["Johnson"] += 6
    monkeypatch.setattr(anchors, "collect_stats", lambda texts, nlp, progress=False: st)
    corpus = ["Zebulon Johnson met Quarrington. " * 6]
    d = build_anchor_dictionary(corpus, AnchorsConfig(include_rare_words=False), progress=False)
    assert "Zebulon" not in d and "Zebulon Johnson" in d and "Quarrington" in d
    assert d.entry("Zebulon Johnson").count == 6
    d = build_anchor_dictionary(corpus, AnchorsConfig(include_rare_words=False, extra={"Zebulon": ["Abel"]}),
                                progress=False)
    assert d.translations("Zebulon") == ["Abel"] and d.entry("Zebulon").count == 0


def test_substitutes_refuse_names_of_the_corpus():
    st = make_stats()
    st.name_words |= {"smith", "johnson", "miller"}
    gen = _Substitutes(st, ["Varrowby"], AnchorsConfig(seed=0))
    for _ in range(50):
        name = gen.last_name()
        assert name.lower() not in st.name_words
        town = gen.town(1)
        assert not any(town.lower().startswith(w) for w in ("smith", "johnson", "miller", "watson", "hudson"))


def test_config_errors():
    """The stage checks its section by the section's own checks (one validation path), then the Faker locale."""
    with pytest.raises(RecipeError, match="anchors.top_k"):
        build_anchor_dictionary(["x"], AnchorsConfig(top_k=0))
    with pytest.raises(RecipeError, match="anchors.min_keyness_ratio"):
        build_anchor_dictionary(["x"], AnchorsConfig(min_keyness_ratio=0.5))
    with pytest.raises(RecipeError, match="anchors.type_quotas"):
        build_anchor_dictionary(["x"], AnchorsConfig(type_quotas={"person": 2}))
    with pytest.raises(AnchorError, match="faker_locale"):
        build_anchor_dictionary(["x"], AnchorsConfig(faker_locale="xx_YY"))
    with pytest.raises(AnchorError, match="no usable spaCy English pipeline"):
        load_spacy("xx_no_such_pipeline")


# ---- extraction with the real spaCy pipeline ----------------------------------------------------------------
STORY = """Mr. Quentin Varrowby came to Thessalmoor in the spring. Varrowby’s sister, Mrs. Edda Klovenhurst, kept
a house on Pellmoor Street, and every morning Varrowby walked from Pellmoor Street to the old mill.

"Good morning, Mr. Varrowby," said Edda Klovenhurst. "Have you seen the glimmerstone?"

Varrowby's answer was short. The glimmerstone had gone. Quentin Varrowby searched the house, and
Klovenhurst searched the garden, but the glimmerstone was not found in Thessalmoor that day.

At the Bramblewick Society the members talked of nothing else. Klovenhurst wrote to the Bramblewick Society
and to the mayor of Thessalmoor. Varrowby went back to Pellmoor Street. The man at the door had
waited a long time.
"""


@pytest.fixture(scope="module")
def story_dictionary():
    return build_anchor_dictionary([STORY] * 3, AnchorsConfig(min_count=2, seed=1), progress=False)


def test_extraction_on_a_small_story(story_dictionary):
    d = story_dictionary
    keys = d.keys()
    assert keys[0] == "Varrowby"  # "Mr. Varrowby", "Varrowby’s", "Varrowby's" fold into it
    for key in ("Thessalmoor", "Pellmoor Street", "Klovenhurst", "glimmerstone"):
        assert key in keys
    for ordinary in ("man", "door", "time", "Street", "Mr. Varrowby", "Varrowby's", "Varrowby’s", "The"):
        assert ordinary not in keys
    assert d.entry("Varrowby").type == "person" and d.entry("Thessalmoor").type == "place"
    assert d.entry("glimmerstone").type == "noun"
    assert all(t.islower() for t in d.translations("glimmerstone"))
    assert all(t.endswith(" Street") for t in d.translations("Pellmoor Street"))
    if "Quentin Varrowby" in d:  # linked to "Varrowby" index by index
        for full, last in zip(d.translations("Quentin Varrowby"), d.translations("Varrowby"), strict=True):
            assert full.endswith(" " + last)
    counts = AnchorMatcher(d.to_mapping()).count([STORY] * 3)
    assert all(d.entry(k).count == counts[k] for k in keys)
    assert d.entry("Varrowby").count == 3 * len(re.findall(r"Varrowby(?![^\W_])", STORY)) - \
        3 * STORY.count("Quentin Varrowby") * ("Quentin Varrowby" in d)


def test_user_dictionary_adds_changes_and_vetoes(tmp_path, story_dictionary):
    user = tmp_path / "user.yaml"
    user.write_text("Glimmerstone Society: [Harbour Club]\nThessalmoor: [Eastwick]\nKlovenhurst: null\n",
                    encoding="utf-8")
    config = AnchorsConfig(min_count=2, seed=1, user_dictionary=str(user),
                           extra={"Bramblewick Society": ["Rowan Club"], "Pellmoor Street": None})
    d = build_anchor_dictionary([STORY] * 3, config, progress=False)
    assert d.translations("Glimmerstone Society") == ["Harbour Club"] and d.entry("Glimmerstone Society").type == "user"
    assert d.translations("Thessalmoor") == ["Eastwick"] and d.entry("Thessalmoor").type == "place"
    assert "Klovenhurst" not in d and "Pellmoor Street" not in d
    assert set(d.vetoed) == {"Klovenhurst", "Pellmoor Street"}
    assert d.translations("Bramblewick Society") == ["Rowan Club"]
    # the rest is the same extraction as without a user dictionary
    assert d.translations("Varrowby") == story_dictionary.translations("Varrowby")
    # a bad user dictionary names the file
    user.write_text("Thessalmoor: []\n", encoding="utf-8")
    with pytest.raises(AnchorError, match=re.escape(str(user))):
        build_anchor_dictionary([STORY], config, progress=False)


def test_nothing_found_gives_an_empty_dictionary():
    assert len(build_anchor_dictionary([], AnchorsConfig(), progress=False)) == 0
    plain = "The man went to the door. It was time to go home, and the door was open. " * 20
    d = build_anchor_dictionary([plain], AnchorsConfig(min_count=2), progress=False)
    assert len(d) == 0
    d = build_anchor_dictionary([plain], AnchorsConfig(extra={"door": ["gate"]}), progress=False)
    assert d.to_mapping() == {"door": ["gate"]} and d.entry("door").count == 40


# ---- the command ---------------------------------------------------------------------------------------------
def test_cli_writes_refuses_overwrite_and_shows(tmp_path, capsys):
    from llm_unlearn.cli import main

    corpus = tmp_path / "story.txt"
    corpus.write_text(STORY * 3, encoding="utf-8")
    out = tmp_path / "anchors.yaml"
    assert main(["anchors", "--corpus", str(corpus), "--out", str(out), "--min-count", "2"]) == 0
    d = AnchorDictionary.load(out)
    assert "Varrowby" in d
    assert main(["anchors", "--corpus", str(corpus), "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert AnchorDictionary.load(out).to_mapping() == d.to_mapping()
    assert main(["anchors", "--corpus", str(corpus), "--show", "3", "--model", "none", "--min-count", "2"]) == 0
    shown = capsys.readouterr().out
    assert "anchored term" in shown and "Varrowby" in shown and "wrote" not in shown
    assert "why: " in shown and ("K14" in shown or "K8" in shown)  # each term's kind and the evidence for it
    assert main(["anchors", "--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x.yaml")]) == 2
    assert "corpus not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("Varrowby: 7\n", encoding="utf-8")
    assert main(["anchors", "--corpus", str(corpus), "--user-dictionary", str(bad), "--show", "1",
                 "--model", "none"]) == 2
    assert "anchor 'Varrowby'" in capsys.readouterr().err


def test_cli_show_sample_block(tmp_path, capsys, smol_tokenizer):
    from llm_unlearn.cli import main

    corpus = tmp_path / "story.txt"
    corpus.write_text(STORY * 3, encoding="utf-8")
    assert main(["anchors", "--corpus", str(corpus), "--show", "5", "--min-count", "2", "--block-size", "128",
                 "--out", str(tmp_path / "a.json")]) == 0
    shown = capsys.readouterr().out
    assert "--- before" in shown and "--- after" in shown and "chosen: " in shown
    after = shown.split("--- after")[1]
    assert "Varrowby" not in after.split("chosen:")[0]
    assert json.loads((tmp_path / "a.json").read_text())["anchors"]


# ---- the Sherlock Holmes corpus -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sherlock_dictionary(sherlock_text):
    t0 = time.perf_counter()
    d = build_anchor_dictionary([sherlock_text], AnchorsConfig(), progress=False)
    return d, time.perf_counter() - t0


@pytest.mark.integration
def test_sherlock_top_anchors(sherlock_dictionary):
    d, seconds = sherlock_dictionary
    assert seconds < 60, f"extraction took {seconds:.1f} s"
    top = d.keys()[:100]
    for name in ("Holmes", "Watson", "Baker Street", "Lestrade", "Irene Adler", "McCarthy", "Windibank",
                 "Hosmer Angel"):
        # a full name dropped by hygiene (split_names made each of its words a key) is still fully covered
        assert name in top or all(w in top for w in name.split(" ")), f"{name} missing from the top 100"
    lowered = {k.lower() for k in top}
    for ordinary in ("london", "street", "man", "time", "door", "mr", "mr.", "sir", "the"):
        assert ordinary not in lowered
    assert 100 <= len(d) <= 200


@pytest.mark.integration
def test_sherlock_translations_follow_the_rules(sherlock_dictionary, sherlock_text):
    d, _ = sherlock_dictionary
    keys = {k.lower() for k in d.keys()}
    # words the corpus capitalises away from sentence starts: its names
    names = set(re.findall(r"(?<=[a-z,;] )([A-Z][a-z]+)", sherlock_text.replace("\n", " ")))
    assert {"Holmes", "Watson", "Turner", "Baker"} <= names
    for e in d.entries():
        assert e.translations and len(e.translations) == len(set(e.translations))
        key_words = set(e.key.lower().split())
        for t in e.translations:
            assert t.lower() != e.key.lower() and t.lower() not in keys
            new_words = [w for w in re.split(r"[\s-]+", t) if w.lower() not in key_words]
            assert new_words, f"{e.key} -> {t} changes nothing"
            for w in new_words:
                assert w not in names, f"{e.key} -> {t}: '{w}' is a name in the corpus"
        assert e.count > 0
    # hygiene holds
    for k in d.keys():
        assert not (k.endswith(("'s", "’s")) and k[:-2] in d)
        assert not (" " in k and all(w in d for w in k.split()))
    # linked full names share the surname translation index by index
    full = d.translations("Sherlock Holmes") if "Sherlock Holmes" in d else []
    for a, b in zip(full, d.translations("Holmes"), strict=False):
        assert a.endswith(" " + b)


@pytest.mark.integration
def test_sherlock_name_parts(sherlock_dictionary, smol_tokenizer):
    import random

    from llm_unlearn.corpus import Document, make_blocks
    from llm_unlearn.whp.anchors import faker_lists
    from llm_unlearn.whp.translation import Translator

    d, _ = sherlock_dictionary
    # "Sherlock" is a key of its own (a male first name), so "Sherlock Holmes" is two anchors and the position of
    # "Sherlock" keeps its loss; the full names whose words are all keys are gone
    assert "Sherlock" in d.keys()[:10] and "Sherlock Holmes" not in d
    assert all(t.lower() in faker_lists()["male"] for t in d.translations("Sherlock"))
    assert [k for _, _, k, _ in AnchorMatcher(d.to_mapping()).find("Mr. Sherlock Holmes")] == ["Sherlock", "Holmes"]
    for full in ("Irene Adler", "Hosmer Angel"):
        assert full not in d and all(w in d for w in full.split(" "))
    # ordinary first names fail keyness, by the numbers
    for ordinary in ("John", "Mary", "James", "George", "William", "Henry", "St.", "Clair"):
        assert ordinary not in d
    # kept full names stay consistent with their keyed parts
    for key in d.keys():
        words = key.split(" ")
        if d.entry(key).type != "person" or len(words) < 2:
            continue
        if words[0] in d:
            assert {t.split(" ")[0] for t in d.translations(key)} == set(d.translations(words[0])), key
        if words[-1] in d and " ".join(words[:-1]) not in d:
            assert {t.split(" ")[-1] for t in d.translations(key)} <= set(d.translations(words[-1])), key
    # the translator's choice for a kept full name always fits its parts' choices
    text = "Mr. Neville St. Clair and Mrs. St. Clair; Neville went out. James Windibank wrote to Windibank."
    block = make_blocks([Document("t", text)], smol_tokenizer, block_size=10_000)[0]
    translator = Translator(d, smol_tokenizer)
    for seed in range(8):
        chosen = translator.translate(block, random.Random(seed)).chosen
        for full in ("Neville St. Clair", "James Windibank"):
            first, rest = full.split(" ", 1)
            assert full in chosen and rest in chosen
            assert chosen[full].endswith(" " + chosen[rest]), chosen
            assert first not in chosen or chosen[full] == f"{chosen[first]} {chosen[rest]}", chosen
