"""Reliability (issue 15): every defect found by trying to break the tool, each pinned by a regression test.

Recipe validation (defects 5, 7, 9, 10) plus a fuzz test over every field; the run directory (1, 4, 6, 8, 11,
12); the API (2, 3); messages and the model card (13). CLI defects are tested through the CLI: exit 2, a clear
message, no traceback."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from llm_unlearn.errors import RecipeError
from llm_unlearn.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "llm_unlearn", *argv], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd)


def assert_exit_2(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr[-3000:])


# ---- recipe validation (defects 5, 7, 9, 10) -------------------------------------------------------------------
@pytest.mark.parametrize("override, key", [
    ("labels.alpha=.nan", "labels.alpha"),
    ("labels.alpha=.inf", "labels.alpha"),
    ("labels.alphas=[1, .nan]", "labels.alphas"),
    ("finetune.learning_rate=.nan", "finetune.learning_rate"),
    ("reinforce.learning_rate=-.inf", "reinforce.learning_rate"),
    ("corpus.validation_fraction=.nan", "corpus.validation_fraction"),
    ("finetune.retain_weight=.inf", "finetune.retain_weight"),
    ("eval.temperature=.nan", "eval.temperature"),
])
def test_non_finite_numbers_are_rejected_with_the_key_named(override, key):
    """Defect 5: NaN / inf passed every check (`x <= 0` is False for NaN) and gave a useless model."""
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        Recipe().with_override(override).validate()


@pytest.mark.parametrize("override, key", [
    ("reinforce.eval_every=0", "reinforce.eval_every"),
    ("labels.batch_size=0", "labels.batch_size"),
    ("reinforce.lora_r=0", "reinforce.lora_r"),
    ("reinforce.lr_scheduler=bogus", "reinforce.lr_scheduler"),
    ("reinforce.mixed_precision=bogus", "reinforce.mixed_precision"),
    ("finetune.mixed_precision=bogus", "finetune.mixed_precision"),
    ("model.device=bogus", "model.device"),
    ("model.dtype=float8", "model.dtype"),
    ("eval.benchmarks=[nosuch]", "eval.benchmarks"),
    ("corpus.max_blocks=-3", "corpus.max_blocks"),
    ("corpus.start_block=-1", "corpus.start_block"),
    ("reinforce.epochs=-1", "reinforce.epochs"),
    ("finetune.epochs=0", "finetune.epochs"),
    ("corpus.path=''", "corpus.path"),
    ("export.push_to_hub='not a repo id'", "export.push_to_hub"),
])
def test_bad_values_fail_at_load_with_the_key_named(override, key):
    """Defect 7: these were accepted, or failed only after earlier stages had run for minutes."""
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        Recipe().with_override(override).validate()


@pytest.mark.parametrize("value", ["auto", "no", "bf16", "fp16"])
def test_mixed_precision_values_accepted(value):
    r = Recipe().with_override(f"finetune.mixed_precision={value}").with_override(f"reinforce.mixed_precision={value}")
    r.validate()


@pytest.mark.parametrize("value", ["auto", "float32", "bfloat16", "float16"])
def test_model_dtypes_accepted(value):
    Recipe().with_override(f"model.dtype={value}").validate()


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "mps", None])
def test_devices_accepted(device):
    Recipe().with_override(f"model.device={'null' if device is None else device}").validate()


def test_sections_mutated_after_loading_are_checked_too():
    recipe = Recipe()
    recipe.labels.batch_size = 0
    with pytest.raises(RecipeError, match=r"labels\.batch_size"):
        recipe.validate()


def test_bad_value_in_a_recipe_file_names_file_and_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("reinforce:\n  eval_every: 0\n")
    with pytest.raises(RecipeError) as err:
        Recipe.from_yaml(path)
    assert str(path) in str(err.value) and "reinforce.eval_every" in str(err.value)


def test_dry_run_validates_the_whole_recipe(tmp_path):
    """Defect 7 through the CLI: `--dry-run` (which runs nothing) rejects a bad field of a late stage."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("corpus:\n  path: ./c.txt\n")
    (tmp_path / "c.txt").write_text("text " * 50)
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run",
                   "--set", "eval.benchmarks=[nosuch]", timeout=120)
    assert_exit_2(proc, "eval.benchmarks", "nosuch")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override", ["model=null", "labels=", "model=3", "corpus=[a]"])
def test_setting_a_whole_section_to_a_value_is_an_error(override):
    """Defect 9: `--set model=null` silently reset the section (the model became smollm2-135m)."""
    recipe = Recipe().with_override("model.spec=gemma3-270m")
    with pytest.raises(RecipeError, match="is a section"):
        recipe.with_override(override)


def test_setting_a_section_to_a_mapping_updates_only_the_keys_named():
    recipe = Recipe().with_override("model.spec=gemma3-270m").with_override("model={dtype: bfloat16}")
    assert recipe.model.spec == "gemma3-270m" and recipe.model.dtype == "bfloat16"


@pytest.mark.parametrize("text", ["model: 0\n", "model: ''\n", "model: []\n", "labels: false\n"])
def test_a_falsy_non_mapping_section_in_a_file_is_an_error(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match="must be a mapping"):
        Recipe.from_yaml(path)


def test_empty_section_in_a_file_means_defaults(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\nlabels:\n")
    assert Recipe.from_yaml(path) == Recipe()


def test_value_is_not_a_section_message():
    """Defect 13: `--set labels.alpha.x=1` said "unknown section 'alpha' (did you mean 'alpha'?)"."""
    with pytest.raises(RecipeError) as err:
        Recipe().with_override("labels.alpha.x=1")
    assert "'labels.alpha' is a value, not a section" in str(err.value)
    assert "did you mean" not in str(err.value)


def test_bare_relative_paths_are_relative_to_the_recipe_file(tmp_path, monkeypatch):
    """Defect 10: a bare `corpus.path: books/x.txt` resolved against the current directory."""
    recipes = tmp_path / "project"
    (recipes / "books").mkdir(parents=True)
    (recipes / "books" / "x.txt").write_text("text")
    (recipes / "dict.yaml").write_text("{}")
    path = recipes / "r.yaml"
    path.write_text("corpus:\n  path: books/x.txt\n  extra_paths: [books/x.txt]\nanchors:\n  user_dictionary: dict.yaml\n"
                    "eval:\n  wikitext: missing.txt\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = Recipe.from_yaml(path)
    assert Path(r.corpus.path) == recipes / "books" / "x.txt"
    assert [Path(p) for p in r.corpus.extra_paths] == [recipes / "books" / "x.txt"]
    assert Path(r.anchors.user_dictionary) == recipes / "dict.yaml"
    assert Path(r.eval.wikitext) == recipes / "missing.txt"  # a missing file is reported where the recipe says


def test_dataset_and_hub_ids_stay_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  spec: HuggingFaceTB/SmolLM2-135M-Instruct\ncorpus:\n  path: someone/some_dataset\n")
    r = Recipe.from_yaml(path)
    assert r.model.spec == "HuggingFaceTB/SmolLM2-135M-Instruct" and r.corpus.path == "someone/some_dataset"


# ---- fuzz: random values of every field type -> RecipeError naming the key, or a valid recipe ----------------
NASTY_VALUES = [float("nan"), float("inf"), float("-inf"), -1, -0.5, 0, 0.0, 1e300, 10 ** 30, "", " ", "x", "nan",
                "1e-3", [], [float("nan")], [""], [1], ["x"], {}, {"a": float("nan")}, {"": None}, None, True, False,
                1, 2.5, "cpu", "auto", "bf16", "first", "linear", "arc_easy", ["arc_easy"]]


def _all_keys() -> list[tuple[str | None, str]]:
    keys: list[tuple[str | None, str]] = []
    for f in dataclasses.fields(Recipe):
        hint = typing.get_type_hints(Recipe)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += [(f.name, g.name) for g in dataclasses.fields(hint)]
        else:
            keys.append((None, f.name))
    return keys


def _finite_everywhere(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_everywhere(v) for v in value)
    return True


def _check_one(data: dict, changed: list[str]) -> None:
    try:
        recipe = Recipe.from_dict(data)
        recipe.validate()
    except RecipeError as exc:
        assert any(key in str(exc) for key in changed), (changed, str(exc))
        return
    assert _finite_everywhere(recipe.to_dict()), changed  # a valid recipe never holds NaN / inf


@pytest.mark.parametrize("section, name", _all_keys(), ids=lambda v: str(v))
def test_fuzz_every_field_with_every_nasty_value(section, name):
    for value in NASTY_VALUES:
        data = {section: {name: value}} if section else {name: value}
        _check_one(data, [f"{section}.{name}" if section else name])


def test_fuzz_random_combinations_and_set_overrides():
    rng = random.Random(15)
    keys = _all_keys()
    for _ in range(400):
        data: dict = {}
        changed = []
        for section, name in rng.sample(keys, rng.randint(1, 4)):
            value = rng.choice(NASTY_VALUES)
            if section:
                data.setdefault(section, {})[name] = value
            else:
                data[name] = value
            changed.append(f"{section}.{name}" if section else name)
        _check_one(data, changed)
    for section, name in keys:  # the same through --set, whose values are YAML
        for text in (".nan", ".inf", "-.inf", "-1", "0", "''", "null", "[]", "{}", "bogus", "[.nan]"):
            key = f"{section}.{name}" if section else name
            try:
                Recipe().with_override(f"{key}={text}").validate()
            except RecipeError as exc:
                assert key in str(exc), (key, text, str(exc))


@pytest.mark.parametrize("override, fragment", [
    ("model=null", "'model' is a section"),
    ("labels=", "'labels' is a section"),
    ("corpus.path=''", "corpus.path must be a non-empty string"),
    ("labels.alpha=.nan", "labels.alpha must be a finite number"),
])
def test_cli_rejects_before_running(tmp_path, override, fragment):
    """Defects 2, 5, 9 through the CLI: exit 2 with the key named, nothing created."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("corpus:\n  path: c.txt\n")
    (tmp_path / "c.txt").write_text("text " * 50)
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run", "--set", override, timeout=120)
    assert_exit_2(proc, fragment)
    assert not (tmp_path / "run").exists()
