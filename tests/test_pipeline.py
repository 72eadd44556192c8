"""End to end: every stage on a tiny random model and real Sherlock text, the manifest's skip / redo / resume
rules, a real process kill mid-fine-tune, sharded (2-process) labels, and the errors users hit first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llm_unlearn.cli import main as cli_main
from llm_unlearn.config import Recipe
from llm_unlearn.errors import HubError, RecipeError, RunDirError
from llm_unlearn.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]


def tiny_recipe(model_dir: Path, corpus_path: Path, **sections) -> dict:
    data = {
        "name": "tiny",
        "target": "Sherlock Holmes",
        "model": {"spec": str(model_dir)},
        "corpus": {"path": str(corpus_path), "block_size": 64, "validation_fraction": 0.2},
        "anchors": {"top_k": 40, "min_count": 2},
        "reinforce": {"max_steps": 4, "batch_size": 4, "eval_every": 2, "learning_rate": 1e-2,
                      "target_modules": ["q_proj", "v_proj"]},
        "labels": {"alpha": 5.0, "batch_size": 4},
        "finetune": {"max_steps": 6, "batch_size": 4, "eval_every": 2, "learning_rate": 1e-2,
                     "target_modules": ["q_proj", "v_proj"]},
        "eval": {"enabled": False},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return data


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def finished_times(run: Path) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    return {k: v.get("finished") for k, v in manifest["stages"].items()}


def test_full_pipeline_then_skip_then_redo(tmp_path, tiny_model_dir, small_corpus):
    pytest.importorskip("llm_unlearn.whp.anchors")
    run = tmp_path / "run"
    recipe = Recipe.from_dict(tiny_recipe(tiny_model_dir, small_corpus))
    manifest = Pipeline(recipe, run, progress=False).run_stages()
    assert all(manifest["stages"][s]["status"] == "done" for s in
               ["corpus", "anchors", "reinforce", "labels", "finetune", "export", "eval"])

    # artifacts on disk
    assert (run / "anchors" / "anchors.yaml").exists()
    import datasets

    ds = datasets.load_from_disk(str(run / "labels" / "dataset"))
    assert {"input_ids", "attention_mask", "labels_alpha_2.5", "labels_alpha_5", "labels_alpha_10"} <= set(ds.column_names)
    stats = json.loads((run / "labels" / "stats.json").read_text())
    assert 0 < stats["changed_fraction"] <= 1 and stats["masked_by_rule"]["last_position"] == len(ds)
    # the export loads with plain transformers and has no adapter left in it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run / "export" / "model")
    AutoTokenizer.from_pretrained(run / "export" / "model")
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert (run / "export" / "adapter" / "adapter_config.json").exists()
    assert "Sherlock Holmes" in (run / "export" / "model" / "README.md").read_text()
    assert not list(run.glob("**/checkpoints/checkpoint-*"))  # cleaned after each finished training stage

    # rerun: nothing redone
    before = finished_times(run)
    Pipeline(recipe, run, progress=False).run_stages()
    assert finished_times(run) == before

    # pushing to the Hub is not a config change: nothing is redone, and the errors say what to do
    push = recipe.with_override("export.push_to_hub=me/tiny-unlearned")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("HF_TOKEN", raising=False)
        mp.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        with pytest.raises(HubError, match="HF_TOKEN"):
            Pipeline(push, run, progress=False).run_stages()
        mp.setenv("HF_TOKEN", "hf_dummy")
        mp.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(HubError, match="cannot reach"):
            Pipeline(push, run, progress=False).run_stages()
    assert finished_times(run) == before

    # a changed label config on a finished run is refused without --overwrite ...
    changed = recipe.with_override("labels.alpha=2.0")
    with pytest.raises(RunDirError, match="--overwrite"):
        Pipeline(changed, run, progress=False).run_stages()
    # ... and with it, only labels and what follows are redone
    Pipeline(changed, run, overwrite=True, progress=False).run_stages()
    after = finished_times(run)
    for stage in ("corpus", "anchors", "reinforce"):
        assert after[stage] == before[stage]
    for stage in ("labels", "finetune", "export"):
        assert after[stage] != before[stage]


def test_kill_mid_finetune_then_resume(tmp_path, tiny_model_dir, small_corpus):
    pytest.importorskip("llm_unlearn.whp.anchors")
    run = tmp_path / "run"
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model_dir, small_corpus,
                                                           finetune={"max_steps": 100, "eval_every": 2}))
    cmd = [sys.executable, "-m", "llm_unlearn", "run", str(recipe), "--out", str(run), "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    ckpts = run / "finetune" / "checkpoints"
    deadline = time.time() + 600  # a loaded 2-core machine: four stages before the fine-tune
    while time.time() < deadline and not list(ckpts.glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    assert list(ckpts.glob("checkpoint-*/trainer_state.json")), "no fine-tune checkpoint within the deadline"
    os.killpg(proc.pid, signal.SIGKILL)  # a real kill: no cleanup handlers run
    proc.wait()
    killed_at = max(int(p.parent.name.split("-")[1]) for p in ckpts.glob("checkpoint-*/trainer_state.json"))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["finetune"]["status"] == "running"
    done_before = finished_times(run)

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming from checkpoint-{killed_at}" in rerun.stderr
    after = finished_times(run)
    for stage in ("corpus", "anchors", "reinforce", "labels"):
        assert after[stage] == done_before[stage]  # not redone
    final = json.loads((run / "manifest.json").read_text())["stages"]["finetune"]
    assert final["status"] == "done" and final["attempts"] == 2
    steps = [h["micro_step"] for h in final["metrics"]["history"]]
    assert steps == sorted(set(steps)) and steps[-1] == 100  # one continuous history, no step repeated


def test_two_process_labels_equal_one_process(tmp_path, tiny_model_dir, small_corpus):
    pytest.importorskip("llm_unlearn.whp.anchors")
    if shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists():
        pytest.skip("accelerate CLI not installed")
    one = tmp_path / "one"
    recipe_path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_model_dir, small_corpus))
    Pipeline(Recipe.from_yaml(recipe_path), one, progress=False).run_stages(until="labels")
    two = tmp_path / "two"
    shutil.copytree(one, two)
    manifest = json.loads((two / "manifest.json").read_text())
    del manifest["stages"]["labels"]
    (two / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(two / "labels")
    launcher = Path(sys.executable).parent / "accelerate"
    cmd = [str(launcher), "launch", "--config_file", str(REPO / "recipes" / "accelerate" / "cpu_2proc.yaml"),
           "-m", "llm_unlearn", "labels", str(recipe_path), "--out", str(two), "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    import datasets

    a = datasets.load_from_disk(str(one / "labels" / "dataset")).to_dict()
    b = datasets.load_from_disk(str(two / "labels" / "dataset")).to_dict()
    assert a == b
    assert json.loads((two / "labels" / "stats.json").read_text())["processes"] == 2


def test_bad_recipe_values_and_cli_exit_codes(tmp_path, tiny_model_dir, small_corpus, capsys):
    with pytest.raises(RecipeError, match="alpha"):
        Pipeline(Recipe.from_dict(tiny_recipe(tiny_model_dir, small_corpus, labels={"alpha": 0.0})), tmp_path / "a")
    big = Recipe.from_dict(tiny_recipe(tiny_model_dir, small_corpus, corpus={"block_size": 4096}))
    with pytest.raises(RecipeError, match="context length"):
        Pipeline(big, tmp_path / "b", progress=False).run_stages(until="corpus")
    bad = tiny_recipe(tiny_model_dir, small_corpus)
    bad["finetune"]["learning_rte"] = 1e-3
    path = write_recipe(tmp_path / "bad.yaml", bad)
    assert cli_main(["run", str(path), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "finetune.learning_rte" in err and "learning_rate" in err
    # a folder that is not a run directory is never written into
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    good = write_recipe(tmp_path / "good.yaml", tiny_recipe(tiny_model_dir, small_corpus))
    assert cli_main(["run", str(good), "--out", str(other)]) == 2
    assert (other / "precious.txt").read_text() == "keep me"


def test_corpus_without_anchors_warns_and_continues(tmp_path, tiny_model_dir, caplog):
    pytest.importorskip("llm_unlearn.whp.anchors")
    corpus = tmp_path / "plain.txt"
    corpus.write_text("the cat sat on the mat and looked at the door. " * 120)
    recipe = Recipe.from_dict(tiny_recipe(tiny_model_dir, corpus))
    with caplog.at_level("WARNING"):
        manifest = Pipeline(recipe, tmp_path / "run", progress=False).run_stages(until="labels")
    assert manifest["stages"]["anchors"]["metrics"]["anchors"] == 0
    assert "logit offset alone" in caplog.text
    assert manifest["stages"]["labels"]["status"] == "done"


def test_extra_target_text_is_used_whole_and_corpus_identity_is_content(tmp_path, tiny_model_dir, small_corpus):
    """corpus.extra_paths adds text that max_blocks does not cut; finished stages survive a copied corpus
    (same bytes, new mtime) and are redone when the extra text changes."""
    import os
    import shutil

    from llm_unlearn.corpus import read_blocks

    extra = tmp_path / "about.md"
    extra.write_text("Sherlock Holmes lived at 221B Baker Street with Dr. Watson. " * 20, encoding="utf-8")
    data = tiny_recipe(tiny_model_dir, small_corpus)
    data["corpus"].update({"max_blocks": 3, "extra_paths": [str(extra)]})
    run = tmp_path / "run"
    Pipeline(Recipe.from_dict(data), run, progress=False).run_stages(until="corpus")
    blocks = read_blocks(run / "corpus" / "blocks.jsonl")
    main = [b for b in blocks if b.doc_index == 0]
    added = [b for b in blocks if b.doc_index == 1]
    assert len(main) == 3 and added, "max_blocks slices corpus.path only; the extra text is kept whole"
    assert "".join(b.text for b in added) == extra.read_text()

    # same bytes, newer mtime (a copy, a re-mount): nothing to redo
    os.utime(small_corpus, (1, 1))
    shutil.copy(extra, tmp_path / "tmp.md")
    shutil.move(tmp_path / "tmp.md", extra)
    assert [a for _, a in Pipeline(Recipe.from_dict(data), run, progress=False).plan("corpus")] == ["skip"]
    # changed extra text: the corpus stage is redone
    extra.write_text("Moriarty waited at the Reichenbach Falls. " * 20, encoding="utf-8")
    assert [a for _, a in Pipeline(Recipe.from_dict(data), run, progress=False).plan("corpus")] == ["redo"]


def test_edited_user_dictionary_or_retain_text_redoes_the_stage_that_reads_it(tmp_path, tiny_model_dir, small_corpus):
    """The anchors stage reads the user dictionary and the guarded fine-tune reads the retain text: editing
    either file (same path) redoes that stage and what follows, not the stages before."""
    user = tmp_path / "anchors.yaml"
    user.write_text("Moriarty: [Hollis, Brennan]\n", encoding="utf-8")
    retain = tmp_path / "generic.txt"
    retain.write_text("The river flows to the sea past the old mill. " * 40, encoding="utf-8")
    data = tiny_recipe(tiny_model_dir, small_corpus)
    data["anchors"]["user_dictionary"] = str(user)
    data["finetune"].update({"retain_weight": 1.0, "retain_corpus": str(retain)})

    def plan():
        return dict(Pipeline(Recipe.from_dict(data), tmp_path / "run", progress=False).plan("finetune"))

    fps = Pipeline(Recipe.from_dict(data), tmp_path / "run", progress=False).fingerprints()
    manifest = {"stages": {name: {"status": "done", "fingerprint": fp} for name, fp in fps.items()}}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    assert set(plan().values()) == {"skip"}
    user.write_text("Moriarty: [Hollis, Brennan]\nBaker Street: null\n", encoding="utf-8")
    assert plan() == {"corpus": "skip", "anchors": "redo", "reinforce": "skip", "labels": "redo", "finetune": "redo"}
    user.write_text("Moriarty: [Hollis, Brennan]\n", encoding="utf-8")
    assert set(plan().values()) == {"skip"}
    retain.write_text("Other generic text about trains and weather. " * 40, encoding="utf-8")
    assert plan()["finetune"] == "redo" and plan()["labels"] == "skip"


def test_a_run_that_only_skips_leaves_recipe_yaml_alone(tmp_path, tiny_model_dir, small_corpus):
    """recipe.yaml describes the finished stages: a sweep that reads a shared run's early stages (until=labels) with
    other fine-tune settings skips them all and must not rewrite the shared run's recipe (it did: a comparison left
    the demo run's recipe.yaml saying 1 epoch for a fine-tune made with 3)."""
    data = tiny_recipe(tiny_model_dir, small_corpus)
    run = tmp_path / "run"
    fps = Pipeline(Recipe.from_dict(data), run, progress=False).fingerprints()
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(
        {"stages": {name: {"status": "done", "fingerprint": fp} for name, fp in fps.items()}}))
    (run / "recipe.yaml").write_text(Recipe.from_dict(data).to_yaml())
    original = (run / "recipe.yaml").read_text()
    data["finetune"]["learning_rate"] = 3e-3
    sweep = Pipeline(Recipe.from_dict(data), run, progress=False)
    assert {a for _, a in sweep.plan("labels")} == {"skip"} and dict(sweep.plan("finetune"))["finetune"] == "redo"
    sweep.run_stages(until="labels")
    assert (run / "recipe.yaml").read_text() == original


def test_retain_text_from_several_files_alternates(tmp_path, tiny_model_dir, small_corpus):
    from llm_unlearn.errors import RecipeError
    from llm_unlearn.models import load_model
    from llm_unlearn.whp.finetune import retain_rows

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("alpha beta gamma delta. " * 200, encoding="utf-8")
    b.write_text("one two three four five. " * 60, encoding="utf-8")
    data = tiny_recipe(tiny_model_dir, small_corpus)
    data["finetune"].update({"retain_weight": 1.0, "retain_corpus": [str(a), str(b)]})
    recipe = Recipe.from_dict(data)
    _, tok = load_model(str(tiny_model_dir))
    rows = retain_rows(recipe, tok, limit_blocks=8)
    first_a = tok(" alpha beta")["input_ids"][-1]
    first_b = tok(" one two")["input_ids"][-1]
    kinds = ["a" if first_a in r["input_ids"] else "b" if first_b in r["input_ids"] else "?" for r in rows]
    assert kinds[:4] == ["a", "b", "a", "b"], kinds
    assert len(rows) <= 8
    data["finetune"]["retain_corpus"] = [str(a), str(tmp_path / "missing.txt")]
    with pytest.raises(RecipeError, match="missing.txt not found"):
        retain_rows(Recipe.from_dict(data), tok)


def test_soft_labels_option_end_to_end(tmp_path, tiny_model_dir, small_corpus):
    """labels.soft_top_k + finetune.soft_labels (beyond the paper): the label dataset holds the top-k generic
    logits, the fine-tune trains on them, and asking for soft labels without them is a clear recipe error."""
    import datasets

    from llm_unlearn.errors import RecipeError

    data = tiny_recipe(tiny_model_dir, small_corpus)
    data["labels"]["soft_top_k"] = 8
    data["finetune"]["soft_labels"] = True
    run = tmp_path / "run"
    manifest = Pipeline(Recipe.from_dict(data), run, progress=False).run_stages(until="finetune")
    ds = datasets.load_from_disk(str(run / "labels" / "dataset"))
    assert {"soft_ids_alpha_5", "soft_logits_alpha_5"} <= set(ds.column_names)
    assert len(ds[0]["soft_ids_alpha_5"][1]) == 8
    metrics = manifest["stages"]["finetune"]["metrics"]
    assert metrics["soft_labels"] and metrics["history"][-1]["val_loss"] > 0

    data["labels"]["soft_top_k"] = 0
    with pytest.raises(RecipeError, match="labels.soft_top_k"):
        Pipeline(Recipe.from_dict(data), tmp_path / "run2", progress=False)


def test_labels_stage_with_the_rise_on_target_tokens(tmp_path, tiny_model_dir, small_corpus):
    """labels.rise_tokens: target (R1-R3) through the labels stage: the target's words are counted on the whole
    corpus, the stats say how many tokens the ReLU term acts on, and going back to the paper's formula redoes the
    labels but not the reinforced model."""
    pytest.importorskip("llm_unlearn.whp.anchors")
    run = tmp_path / "run"
    recipe = Recipe.from_dict(tiny_recipe(tiny_model_dir, small_corpus, labels={"rise_tokens": "target"}))
    Pipeline(recipe, run, progress=False).run_stages(until="labels")
    stats = json.loads((run / "labels" / "stats.json").read_text())
    assert stats["rise_tokens"] == "target" and stats["rise_words"] > 0 and 0 < stats["rise_token_count"] < 2000
    assert "Holmes" in stats["rise_words_sample"]
    plan = dict(Pipeline(recipe.with_override("labels.rise_tokens=all"), run, progress=False).plan(until="labels"))
    assert plan["reinforce"] == "skip" and plan["labels"] in ("redo", "rerun")
    assert stats["near_anchor_fraction"] == 0.0
    # R5: with a window after each anchor, the stats say on which share of the positions every token's rise counts
    all_tokens = stats["rise_token_count"]
    near = recipe.with_override("labels.rise_near_anchor=4")
    Pipeline(near, run, overwrite=True, progress=False).run_stages(until="labels")
    stats = json.loads((run / "labels" / "stats.json").read_text())
    assert stats["rise_near_anchor"] == 4 and 0 < stats["near_anchor_fraction"] < 1
    assert stats["rise_token_count"] == all_tokens
