"""bench/compare_methods.py: the learning-rate selection rule, and the whole comparison end to end on a tiny model
(every method's variants trained on the same split, evaluated on the same items, one chosen per method)."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from conftest import REPO
from test_pipeline import tiny_recipe

sys.path.insert(0, str(REPO))
from bench import compare_methods  # noqa: E402

T = "suite"


def row(fam, prob, ppl):
    return {f"familiarity/{T} %base": fam, f"prob/{T} %base": prob, "ppl/wikitext %change": ppl}


def test_selection_takes_the_most_forgetting_lr_within_the_perplexity_bound():
    rows = {"a": row(80, 70, 2.0), "b": row(40, 30, 8.0), "c": row(5, 5, 60.0)}
    assert compare_methods.forgetting_score(rows["b"], T) == 35
    # c forgets most but breaks the model (ppl +60%): b is chosen
    assert compare_methods.select(rows, T, max_ppl_change=10) == ("b", True)
    assert compare_methods.select(rows, T, max_ppl_change=100) == ("c", True)
    # nothing within the bound: the least damaging one, flagged
    assert compare_methods.select(rows, T, max_ppl_change=1) == ("a", False)


def test_the_edge_mark_says_where_the_grid_should_be_widened():
    grid = [1e-4, 1e-3, 1e-2]
    # CMP1: the top rate within the bound might be beaten by a higher one; the bottom rate within the bound is not
    assert compare_methods.edge_mark(1e-2, grid, True) == " (at the grid's top)"
    assert compare_methods.edge_mark(1e-4, grid, True) == ""
    assert compare_methods.edge_mark(1e-4, grid, False) == " (at the grid's bottom)"
    assert compare_methods.edge_mark(1e-3, grid, False) == ""
    assert compare_methods._fmt({"ppl/wikitext": 3.2e8, "ppl/wikitext %change": 1.6e9}, "ppl/wikitext", "%change") \
        == "3.2e+08 (collapsed)"


def test_bad_learning_rate_spec_is_refused():
    with pytest.raises(SystemExit, match="METHOD=lr1"):
        compare_methods.parse_lrs(["nosuch=1e-4"])
    assert compare_methods.parse_lrs(["npo=1e-5,2e-5"])["npo"] == (1e-5, 2e-5)
    # CMP1: one grid for every method by default
    assert len(set(compare_methods.LEARNING_RATES.values())) == 1


def test_compare_methods_on_a_tiny_model(tmp_path, tiny_model_dir, small_corpus, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = tiny_recipe(tiny_model_dir, small_corpus)
    data["finetune"]["retain_corpus"] = [str(small_corpus)]  # the tiny model's retain text (no WikiText needed)
    data["eval"] = {"enabled": True, "suites": [str(REPO / "eval" / "sherlock_holmes")], "max_new_tokens": 4,
                    "wikitext": str(small_corpus), "perplexity_max_tokens": 256, "plots": False, "bootstrap": 50,
                    "generic_floor": True}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))
    # a finished WHP run of the recipe gives the shared stages (its fine-tune/export must not leak into the
    # baselines' run directories, whose stage tables have no fine-tune)
    from llm_unlearn.config import Recipe
    from llm_unlearn.pipeline import Pipeline

    run = tmp_path / "run"
    Pipeline(Recipe.from_yaml(recipe), run, progress=False).run_stages(until="export")
    out = tmp_path / "cmp"
    args = [str(recipe), "--out", str(out), "--from-run", str(run), "--methods", "whp,npo",
            "--lrs", "whp=1e-3,1e-2", "--lrs", "npo=1e-4,1e-3", "--max-ppl-change", "1000"]
    assert compare_methods.main(args) == 0
    result = json.loads((out / "compare.json").read_text())
    assert set(result["variants"]) == {"whp lr 0.001", "whp lr 0.01", "npo lr 0.0001", "npo lr 0.001"}
    assert set(result["chosen"]) == {"whp", "npo"}
    for method, label in result["chosen"].items():
        assert result["variants"][label]["method"] == method
    # every method trained on the same corpus split (hard links to the shared corpus stage)
    shared_split = (run / "corpus" / "split.json").stat().st_ino
    for v in result["variants"].values():
        assert (tmp_path / v["run_dir"] / "corpus" / "split.json").stat().st_ino == shared_split
    npo_manifest = json.loads((out / "runs" / "npo_lr0.001" / "manifest.json").read_text())
    assert npo_manifest["stages"]["unlearn"]["status"] == "done"
    assert set(npo_manifest["stages"]) == {"corpus", "unlearn", "export"}
    assert not (out / "runs" / "npo_lr0.001" / "labels").exists()
    for label in ("base", *result["variants"]):
        assert "ppl/wikitext" in result["summary"][label]
        assert "ppl/target_heldout" in result["summary"][label]
    md = (out / "compare.md").read_text()
    assert "(chosen)" in md and (out / "compare.png").exists()
    # CMP2: the rate is chosen on a third of the prompts; the reported numbers come from the other, disjoint part
    sel = (out / "suites" / "select" / "sherlock_holmes" / "completion.jsonl").read_text().splitlines()
    rep = (out / "suites" / "report" / "sherlock_holmes" / "completion.jsonl").read_text().splitlines()
    full = (REPO / "eval" / "sherlock_holmes" / "completion.jsonl").read_text().splitlines()
    assert sel and rep and not set(sel) & set(rep) and sorted(sel + rep) == sorted(x for x in full if x.strip())
    sweep_doc = json.loads((out / "sweep" / "eval.json").read_text())
    final_doc = json.loads((out / "final" / "eval.json").read_text())
    assert sweep_doc["suites"][0]["n_completion"] == len(sel) and final_doc["suites"][0]["n_completion"] == len(rep)
    assert set(result["reported"]) == {"base", *result["chosen"].values()}
    # the generic floor (from the shared run's anchor dictionary) places the reported numbers, not the choice
    assert "generic_floor" not in sweep_doc and "sherlock_holmes" in final_doc["generic_floor"]
    floor = result["floor"]["completion"]
    assert floor["prompts"] > 0 and set(floor["scores"]) == {"floor", "base", *result["chosen"].values()}
    assert "| generic floor |" in (out / "compare.md").read_text()
    # CMP3: steps over every training stage (WHP: reinforce + fine-tune) and the checkpoint kept
    whp = result["variants"]["whp lr 0.001"]
    assert whp["steps"] == 4 + 6 and whp["kept"] == "best validation"
    assert result["variants"]["npo lr 0.001"]["kept"] == "best validation"  # one checkpoint rule for all
    assert "steps (all stages)" in md and "the grids differ" in md
    (out / "compare.png").unlink()
    assert compare_methods.main([str(recipe), "--out", str(out), "--replot"]) == 0
    assert (out / "compare.png").exists()
    assert json.loads((out / "compare.json").read_text())["summary"] == result["summary"]
    # a rerun trains nothing again (finished variants resume)
    before = (out / "runs" / "npo_lr0.001" / "unlearn" / "adapter").stat().st_mtime
    assert compare_methods.main(args) == 0
    assert (out / "runs" / "npo_lr0.001" / "unlearn" / "adapter").stat().st_mtime == before
