"""The generic floor of a familiarity suite (rules F1-F4 of llm_unlearn/evaluation/floor.py)."""

from __future__ import annotations

import math

import pytest

from llm_unlearn.evaluation import familiarity
from llm_unlearn.evaluation.grading import Grader
from llm_unlearn.evaluation.suites import CompletionPrompt, ProbabilityPrompt, Suite
from llm_unlearn.whp.floor import generic_floor, translate_suite
from llm_unlearn.whp.translation import Translator
from tests.conftest import REPO

DICTIONARY = {"Holmes": ["Hart", "Reed"], "Sherlock": ["Owen"], "Baker Street": ["Oak Street"]}
SUITE_ANCHORS = ["Sherlock", "Holmes", "Watson", "Moriarty", "Baker Street"]
GENRE = ["detective", "clue"]


def _suite() -> Suite:
    completion = [CompletionPrompt("c1", "Sherlock Holmes lived in rooms on", ["Baker Street"]),
                  CompletionPrompt("c2", "Holmes's friend was Dr.", ["Watson"]),
                  CompletionPrompt("c3", "The planet closest to the Sun is", ["Mercury"])]
    probability = [ProbabilityPrompt("p1", "Holmes lived at 221B Baker", " Street"),
                   ProbabilityPrompt("p2", "The capital of France is", " Paris")]
    return Suite("sh", "/tmp/sh", "Sherlock Holmes", SUITE_ANCHORS, GENRE, completion, probability)


@pytest.mark.parametrize("tokenizer", ["smol_tokenizer", "gemma_tokenizer"])
def test_translate_suite_keeps_only_prompts_that_name_an_anchor(tokenizer, request):
    """F1-F2: anchored terms replaced by the dictionary's translations, one draw per prompt (seeded, so the same
    seed gives the same prompts); prompts without an anchor are left out, and the originals are kept by id. The text
    does not depend on the tokenizer (byte-level BPE or SentencePiece)."""
    translator = Translator(DICTIONARY, request.getfixturevalue(tokenizer))
    translated, originals = translate_suite(_suite(), translator, seed=3)
    assert [p.id for p in translated.completion] == ["c1", "c2"] and [p.id for p in translated.probability] == ["p1"]
    texts = [p.prompt for p in translated.completion + translated.probability]
    assert not any("Holmes" in t or "Sherlock" in t for t in texts)
    assert translated.completion[0].prompt.startswith("Owen ")  # "Sherlock" -> its only translation
    assert translated.completion[1].prompt.endswith("'s friend was Dr.")  # the possessive is kept (rule M1)
    assert originals["c2"] == "Holmes's friend was Dr."
    assert translated.completion[0].references == ["Baker Street"]  # references are the suite's, untouched
    again, _ = translate_suite(_suite(), translator, seed=3)
    assert [p.prompt for p in again.completion] == [p.prompt for p in translated.completion]
    draws = {translate_suite(_suite(), translator, seed=s)[0].completion[1].prompt.split("'")[0] for s in range(20)}
    assert draws == {"Hart", "Reed"}  # both translations of "Holmes" are drawn across seeds


def test_generic_floor_scores_translated_prompts_against_the_same_items(monkeypatch, tiny_llama):
    """F3: the base model completes the TRANSLATED prompts (graded by the suite's grader against the original
    references: naming the reference is grade 3, naming another of the suite's anchors grade 2), and P(target) is
    scored on the translated probability prompts. F4: other models' per-item results on the same prompts sit beside
    the floor, and their summaries cover only the translated prompts."""
    model, tok = tiny_llama
    seen: list[str] = []
    answers = {"Owen": [" Oak Street, near Watson."], "friend": [" Moriarty's rival."]}

    def fake_generate(model, tokenizer, prompts, **kw):
        seen.extend(prompts)
        return [answers["Owen" if p.startswith("Owen") else "friend"] for p in prompts]

    monkeypatch.setattr(familiarity, "generate", fake_generate)
    others = {"base": {"completion": {"items": [{"id": "c1", "grade": 3.0}, {"id": "c2", "grade": 3.0},
                                                {"id": "c3", "grade": 3.0}]},
                       "probability": {"items": [{"id": "p1", "prob": 0.5}, {"id": "p2", "prob": 0.9}]}},
              "unlearned": {"completion": {"items": [{"id": "c1", "grade": 0.0}, {"id": "c2", "grade": 1.0},
                                                     {"id": "c3", "grade": 3.0}]},
                            "probability": {"items": [{"id": "p1", "prob": 0.1}, {"id": "p2", "prob": 0.9}]}}}
    doc = generic_floor(model, tok, _suite(), Translator(DICTIONARY, tok), others=others,
                        grader=Grader(SUITE_ANCHORS, GENRE), progress=False)
    assert len(seen) == 2 and not any("Holmes" in p or "Sherlock" in p for p in seen)
    comp, prob = doc["completion"], doc["probability"]
    assert (comp["prompts"], comp["translated"], prob["prompts"], prob["translated"]) == (3, 2, 2, 1)
    # the translated prompt says "Oak Street", not "Baker Street": the reference is not matched; "Watson" is another
    # anchor of the suite -> 2; " Moriarty's rival." names another anchor -> 2
    assert [row["floor"] for row in comp["items"]] == [2.0, 2.0]
    assert comp["scores"]["floor"]["familiarity"] == pytest.approx(4 / 6)
    assert comp["scores"]["base"]["n"] == 2 and comp["scores"]["base"]["familiarity"] == pytest.approx(1.0)  # c3 is not counted
    assert comp["scores"]["unlearned"]["familiarity"] == pytest.approx(1 / 6)
    row = comp["items"][0]
    assert row["prompt"] == "Sherlock Holmes lived in rooms on" and row["translated"].startswith("Owen ")
    assert row["base"] == 3.0 and row["unlearned"] == 0.0 and row["completion"].startswith(" Oak Street")
    (p_row,) = prob["items"]
    assert p_row["id"] == "p1" and "Holmes" not in p_row["translated"] and 0.0 < p_row["floor"] < 1.0
    assert prob["scores"]["base"] == {"n": 1, "mean_prob": 0.5} and prob["scores"]["unlearned"]["mean_prob"] == pytest.approx(0.1)
    direct = familiarity.probability_familiarity(model, tok, Suite("t", "/t", probability=[
        ProbabilityPrompt("p1", p_row["translated"], " Street")]), progress=False)
    assert math.isclose(p_row["floor"], direct["items"][0]["prob"], rel_tol=1e-5)


def test_section_scores_reads_both_layouts_and_informative_needs_a_quarter():
    """The summaries live under ``scores`` so that a model may be called anything (even "items"); an eval.json
    written before that key kept them beside ``prompts`` and is still read. F5: a floor is informative only when at
    least a quarter of the prompts (and at least one) were translated."""
    from llm_unlearn.whp.floor import informative, section_scores

    new = {"prompts": 8, "translated": 2, "scores": {"floor": {"n": 2}, "items": {"n": 2}}, "items": []}
    old = {"prompts": 8, "translated": 2, "floor": {"n": 2}, "base": {"n": 2}, "items": []}
    assert section_scores(new) == {"floor": {"n": 2}, "items": {"n": 2}}
    assert section_scores(old) == {"floor": {"n": 2}, "base": {"n": 2}}
    assert section_scores(None) == {}
    assert informative(new) and not informative({**new, "prompts": 9}) and not informative({"prompts": 0})


def test_report_names_suites_with_too_few_translated_prompts_instead_of_scoring_them():
    """F5 in the report: a control suite with 1 of 80 prompts translated would show a floor like 133% of base; it is
    named below the table instead of getting rows."""
    from llm_unlearn.evaluation.report import _floor_section

    def section(prompts, translated, floor, base):
        return {"prompts": prompts, "translated": translated,
                "scores": {"floor": {"familiarity": floor}, "base": {"familiarity": base}}, "items": []}

    floors = {"sh": {"completion": section(8, 4, 0.1, 0.4), "probability": section(4, 0, None, None)},
              "ctl": {"completion": section(80, 1, 0.4, 0.3), "probability": section(20, 0, None, None)}}
    text = "\n".join(_floor_section(floors, "base"))
    assert "| sh | generic floor | 4 / 8 | 0.100 | 25% |" in text
    assert "| ctl |" not in text and "ctl (1 of 80 completion, 0 of 20 probability prompts)" in text
    assert _floor_section({}, "base") == []


def test_cues_left_in_translated_prompts(monkeypatch, tiny_llama):
    """F6: a translated prompt that still names a term of the suite's anchor list (here "Moriarty", which the run's
    dictionary lacks) is marked with it, in any case and as a whole word only; a term inside a longer named one is
    not counted twice. The section counts such prompts and terms, and the report names them."""
    from llm_unlearn.evaluation.report import _floor_section
    from llm_unlearn.whp.floor import cues_left

    assert cues_left("Hart fought MORIARTY at the falls", SUITE_ANCHORS) == ["Moriarty"]
    assert cues_left("Hart walked down Baker Street", ["Baker Street", "Baker", "Street"]) == ["Baker Street"]
    assert cues_left("The Watsonian view", SUITE_ANCHORS) == [] and cues_left("anything", []) == []
    model, tok = tiny_llama
    monkeypatch.setattr(familiarity, "generate", lambda model, tokenizer, prompts, **kw: [[" the falls."]] * len(prompts))
    suite = Suite("sh", "/tmp/sh", "Sherlock Holmes", SUITE_ANCHORS, GENRE,
                  [CompletionPrompt("c1", "Holmes fought Moriarty at the", ["Reichenbach"]),
                   CompletionPrompt("c2", "Sherlock Holmes lived in rooms on", ["Baker Street"])], [])
    doc = generic_floor(model, tok, suite, Translator(DICTIONARY, tok), grader=Grader(SUITE_ANCHORS, GENRE),
                        progress=False)
    comp = doc["completion"]
    assert [row["cues_left"] for row in comp["items"]] == [["Moriarty"], []]
    assert comp["with_cues_left"] == 1 and comp["cue_terms"] == {"Moriarty": 1}
    text = "\n".join(_floor_section({"sh": doc}, None))
    assert "- sh: 1 of 2 completion prompts; terms left: Moriarty (1)" in text


def test_the_readme_baseline_command_accepts_the_demo_recipe(tmp_path, capsys):
    """F7: `llm-unlearn run recipes/sherlock_smollm2.yaml --set method=grad_ascent --dry-run` (the README's baseline
    command on a recipe with eval.generic_floor) plans the run instead of exiting 2."""
    from llm_unlearn.cli import main

    assert main(["run", str(REPO / "recipes" / "sherlock_smollm2.yaml"), "--out", str(tmp_path / "r"),
                 "--set", "method=grad_ascent", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "unlearn" in out and "eval" in out


def test_a_baseline_is_scored_beside_the_generic_floor(tmp_path, tiny_model_dir, small_corpus):
    """F7: a baseline run with eval.generic_floor builds the anchor dictionary in its eval stage and reports the
    floor on the same translated prompts as a WHP run would."""
    import json

    from llm_unlearn.config import Recipe
    from llm_unlearn.pipeline import Pipeline
    from tests.test_pipeline import tiny_recipe

    data = tiny_recipe(tiny_model_dir, small_corpus,
                       finetune={"max_steps": 1, "retain_weight": 0.0},
                       eval={"enabled": True, "generic_floor": True, "suites": [str(REPO / "eval" / "sherlock_holmes")],
                             "benchmarks": [], "wikitext": None, "max_new_tokens": 2, "batch_size": 32})
    data["method"] = "grad_ascent"
    run = tmp_path / "run"
    manifest = Pipeline(Recipe.from_dict(data), run, progress=False).run_stages()
    assert manifest["stages"]["eval"]["status"] == "done"
    assert (run / "anchors" / "anchors.yaml").is_file()
    doc = json.loads((run / "eval" / "eval.json").read_text())
    floor = doc["generic_floor"]["sherlock_holmes"]
    assert floor["completion"]["translated"] > 0
