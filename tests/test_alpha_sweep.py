"""bench/alpha_sweep.py end to end on a tiny model: shared stages once, one fine-tune per alpha, one evaluation of
all models (the base once), and the sweep table, JSON and plot; rerun with --from-run reuses a finished run."""

from __future__ import annotations

import json
import sys

import yaml
from conftest import REPO
from test_pipeline import tiny_recipe

sys.path.insert(0, str(REPO))
from bench import alpha_sweep  # noqa: E402


def test_alpha_sweep_on_a_tiny_model(tmp_path, tiny_model_dir, small_corpus, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = tiny_recipe(tiny_model_dir, small_corpus)
    data["eval"] = {"enabled": True, "suites": [str(REPO / "eval" / "sherlock_holmes")], "max_new_tokens": 4,
                    "plots": False, "bootstrap": 50}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))
    out = tmp_path / "sweep"
    assert alpha_sweep.main([str(recipe), "--out", str(out), "--alphas", "2", "8"]) == 0
    result = json.loads((out / "sweep.json").read_text())
    assert result["alphas"] == [2.0, 8.0]
    assert set(result["summary"]) == {"base", "alpha 2", "alpha 8"}
    for label in ("alpha 2", "alpha 8"):
        row = result["summary"][label]
        assert "familiarity/sherlock_holmes" in row and "prob/sherlock_holmes %base" in row
        manifest = json.loads((out / label.replace(" ", "_") / "manifest.json").read_text())
        assert manifest["stages"]["export"]["status"] == "done"
    # the two variants share the upstream stages (hard links), and differ in the labels they trained on
    a2, a8 = out / "alpha_2", out / "alpha_8"
    assert (a2 / "labels" / "stats.json").stat().st_ino == (out / "shared" / "labels" / "stats.json").stat().st_ino
    assert json.loads((a2 / "manifest.json").read_text())["stages"]["finetune"]["metrics"]["label_alpha"] == 2.0
    assert json.loads((a8 / "manifest.json").read_text())["stages"]["finetune"]["metrics"]["label_alpha"] == 8.0
    assert (out / "sweep.png").exists() and "| alpha 8 |" in (out / "sweep.md").read_text()
    (out / "sweep.png").unlink()
    assert alpha_sweep.main([str(recipe), "--out", str(out), "--replot"]) == 0 and (out / "sweep.png").exists()

    # --from-run: a finished run of the recipe gives the stages up to the labels, its own model and its
    # evaluation (same config), so only the other alpha is trained and evaluated
    from llm_unlearn.config import Recipe
    from llm_unlearn.pipeline import Pipeline

    run = tmp_path / "run"
    Pipeline(Recipe.from_yaml(recipe), run, progress=False).run_stages()  # alpha 5 (labels for 2.5, 5, 10)
    out2 = tmp_path / "sweep2"
    assert alpha_sweep.main([str(recipe), "--out", str(out2), "--from-run", str(run)]) == 0
    doc = json.loads((out2 / "eval" / "eval.json").read_text())
    assert doc["models"]["base"].get("reused") and doc["models"]["alpha 5"].get("reused")
    assert not doc["models"]["alpha 10"].get("reused")
    assert not (out2 / "shared").exists()
