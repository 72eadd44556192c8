"""Neighbour text for WHP's retain guard (llm_unlearn.neighbours, rules N1-N3; issue #16)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO
from test_pipeline import tiny_recipe

import llm_unlearn.neighbours as neighbours
from llm_unlearn.errors import RecipeError
from llm_unlearn.neighbours import OPENINGS, banned_pattern, guard_rows, neighbour_texts, openings_for
from llm_unlearn.pipeline import Pipeline
from llm_unlearn.recipe import Recipe


def test_openings_follow_the_anchor_kinds_and_never_an_evaluation_item():
    """N1: per-kind openings; kinds without their own (common nouns, user keys) share the 'other' set; no opening
    is (the start of) a prompt of a shipped suite, so the suites stay a measurement."""
    person = openings_for(["person"])
    assert person == list(OPENINGS["person"])
    assert set(openings_for(["person", "place", "noun", "user"])) == \
        set(OPENINGS["person"]) | set(OPENINGS["place"]) | set(OPENINGS["other"])
    assert openings_for([]) == list(OPENINGS["other"])
    prompts = []
    for path in (REPO / "eval").glob("*/*.jsonl"):
        prompts += [json.loads(line).get("prompt", "") for line in path.read_text().splitlines() if line.strip()]
    assert len(prompts) > 200
    every = {o for kind in OPENINGS.values() for o in kind}
    assert not [o for o in every if any(p and (p.startswith(o) or o.startswith(p)) for p in prompts)]


def test_banned_terms_match_whole_words_case_insensitively():
    """N3: the filter that keeps the target out of the guard."""
    pat = banned_pattern(["Holmes", "Baker Street", "Dr. Watson", " "])
    assert pat.search("the great detective holmes said")
    assert pat.search("Went to baker street.") and pat.search("(Dr. Watson)")
    assert not pat.search("a Holmesian deduction") and not pat.search("Bakers Streets")
    assert banned_pattern(["", "  "]) is None


def test_neighbour_texts_drop_the_target_and_take_openings_in_turn(monkeypatch):
    """N2/N3 on controlled samples: a completion naming the target is dropped, too-short ones too, and every
    opening contributes before any contributes twice."""
    def fake_generate(model, tokenizer, prompts, samples, **kwargs):
        return [[f" sample {k} of this opening is long enough" if not (p.startswith("A famous city") and k == 0)
                 else " London, where Holmes lived in a flat" for k in range(samples)] for p in prompts]

    monkeypatch.setattr(neighbours, "generate", fake_generate)
    texts = neighbour_texts(None, None, ["place"], ["Holmes"], count=len(OPENINGS["place"]) + 1)
    assert not any("Holmes" in t for t in texts)
    assert [t.split(" sample ")[0] for t in texts[:3]] == list(OPENINGS["place"][1:4])  # first opening dropped
    assert len(texts) == len(OPENINGS["place"]) + 1
    assert neighbour_texts(None, None, ["place"], [], count=0) == []


def test_neighbour_texts_on_a_real_tiny_model_are_deterministic(tiny_llama):
    """N2: seeded sampling, so a resumed or repeated run guards on the same texts."""
    model, tok = tiny_llama
    a = neighbour_texts(model, tok, ["person"], [], count=5, max_new_tokens=8, seed=3, progress=False)
    b = neighbour_texts(model, tok, ["person"], [], count=5, max_new_tokens=8, seed=3, progress=False)
    assert a == b and 0 < len(a) <= 5 and all(t.startswith(tuple(OPENINGS["person"])) for t in a)


def test_guard_rows_alternate_neighbour_and_generic(smol_tokenizer):
    generic = [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}, {"input_ids": [6]}]
    rows = guard_rows(generic, ["Alpha beta.", "Gamma delta."], smol_tokenizer, max_tokens=2)
    assert [len(r["input_ids"]) for r in rows] == [2, 3, 2, 2, 1]
    assert rows[1] == generic[0] and rows[3] == generic[1] and rows[4] == generic[2]


def test_neighbour_texts_need_the_guard(tiny_model_dir, small_corpus):
    data = tiny_recipe(tiny_model_dir, small_corpus)
    data["finetune"]["neighbour_texts"] = 8
    with pytest.raises(RecipeError, match="finetune.retain_weight > 0"):
        Recipe.from_dict(data).validate()
    data["finetune"]["neighbour_texts"] = -1
    with pytest.raises(RecipeError, match="neighbour_texts"):
        Recipe.from_dict(data)


def test_guarded_finetune_writes_and_uses_neighbour_texts(tmp_path, tiny_model_dir, small_corpus):
    """End to end on the tiny model: the fine-tune stage writes finetune/neighbours.jsonl, none naming an anchor."""
    from llm_unlearn.anchors import AnchorDictionary

    retain = tmp_path / "generic.txt"
    retain.write_text("The river flows to the sea past the old mill. " * 40, encoding="utf-8")
    data = tiny_recipe(tiny_model_dir, small_corpus)
    data["finetune"].update({"retain_weight": 1.0, "retain_corpus": str(retain), "neighbour_texts": 6,
                             "max_steps": 2})
    run = tmp_path / "run"
    manifest = Pipeline(Recipe.from_dict(data), run, progress=False).run_stages(until="finetune")
    assert manifest["stages"]["finetune"]["status"] == "done"
    texts = [json.loads(line)["text"] for line in (run / "finetune" / "neighbours.jsonl").read_text().splitlines()]
    assert 0 < len(texts) <= 6
    pattern = banned_pattern(AnchorDictionary.load(run / "anchors" / "anchors.yaml").keys())
    assert not any(pattern.search(t) for t in texts)
