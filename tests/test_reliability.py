"""Reliability (issue 15): every defect found by trying to break the tool, each pinned by a regression test.

Recipe validation (defects 5, 7, 9, 10) plus a fuzz test over every field; the run directory (1, 4, 6, 8, 11,
12); the API (2, 3); messages and the model card (13). CLI defects are tested through the CLI: exit 2, a clear
message, no traceback."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import stat
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import yaml

from llm_unlearn.config import Recipe
from llm_unlearn.errors import AnchorError, CorpusError, HubError, RecipeError, RunDirError
from llm_unlearn.pipeline import Pipeline
from llm_unlearn.runio import RunLock, atomic_dir
from llm_unlearn.whp.anchors.stage import warn_unmatched_vetoes

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



# ---- the run directory (defects 1, 4, 6, 8, 11, 12) ------------------------------------------------------------
STORY = ("Zorblax the Wanderer sailed from Quillmoor to the harbour of Venn. The captain of the Quillmoor fleet "
         "watched the sea while Zorblax counted the stars and told old stories about the Venn lighthouse. ")


def tiny_recipe(tmp_path: Path, model_dir: Path, corpus_text: str = STORY * 12, **sections) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    data = {
        "name": "tiny", "target": "Zorblax",
        "model": {"spec": str(model_dir)},
        "corpus": {"path": str(corpus), "block_size": 32, "validation_fraction": 0.2},
        "reinforce": {"max_steps": 2, "batch_size": 2, "eval_every": 1, "target_modules": ["q_proj", "v_proj"]},
        "finetune": {"max_steps": 2, "batch_size": 2, "eval_every": 1, "target_modules": ["q_proj", "v_proj"]},
        "eval": {"enabled": False},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class _Payload:
    """Unpickling this runs a command: what a planted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_checkpoint_is_not_executed(tmp_path, tiny_model_dir):
    """Defect 1: a state.pt with a pickle payload in a 'running' stage's checkpoint ran arbitrary code."""
    import torch

    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    proc = run_cli("run", str(recipe), "--out", str(run), "--until", "corpus", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    fingerprint = Pipeline(Recipe.from_yaml(recipe), run, progress=False).fingerprints()["reinforce"]
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"]["reinforce"] = {"status": "running", "fingerprint": fingerprint, "attempts": 1}
    (run / "manifest.json").write_text(json.dumps(manifest))
    # a checkpoint as the engine (transformers.Trainer) writes one, with a pickle payload as its optimizer state
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainerState

    ckpt = run / "reinforce" / "checkpoints" / "checkpoint-1"
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(ckpt)
    marker = tmp_path / "pwned"
    torch.save({"state": _Payload(marker)}, ckpt / "optimizer.pt")
    torch.save({}, ckpt / "scheduler.pt")  # the Trainer loads the optimizer only when both are there
    TrainerState(global_step=1, max_steps=2, train_batch_size=2).save_to_json(str(ckpt / "trainer_state.json"))

    proc = run_cli("run", str(recipe), "--out", str(run), "--until", "reinforce", "--no-progress")
    assert not marker.exists(), "the pickle payload in optimizer.pt was executed"
    assert_exit_2(proc, "checkpoint", "reinforce")


def test_second_run_into_a_locked_run_dir_exits_2_at_once_naming_the_holder(tmp_path, tiny_model_dir):
    """Defect 4: two runs into one --out raced (one crashed, the other silently replaced results)."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):  # this test process plays the run in progress
        t0 = time.time()
        proc = run_cli("run", str(recipe), "--out", str(run), "--until", "corpus", "--no-progress")
        assert time.time() - t0 < 120
        assert_exit_2(proc, "in use by another llm-unlearn run", f"pid {os.getpid()}", "started")
        assert not (run / "manifest.json").exists()
    proc = run_cli("run", str(recipe), "--out", str(run), "--until", "corpus", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (run / ".lock.holder").exists()


def test_stale_lock_of_a_killed_run_does_not_block(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[2]); from llm_unlearn.runio import RunLock; "
        "lock = RunLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); time.sleep(600)"), str(run), str(REPO)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"pid {holder.pid}"):
            RunLock(run).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a real kill: the holder file stays behind
        holder.wait()
    assert (run / ".lock.holder").exists()
    lock = RunLock(run)
    lock.acquire()  # the OS released the dead process's lock
    lock.release()


def test_deleted_outputs_are_made_again(tmp_path, tiny_model_dir):
    """Defect 6: `rm -rf` of a stage's outputs was not noticed; every stage was skipped."""
    recipe = Recipe.from_yaml(tiny_recipe(tmp_path, tiny_model_dir))
    run = tmp_path / "run"
    Pipeline(recipe, run, progress=False).run_stages(until="reinforce")
    adapter = run / "reinforce" / "adapter"
    assert adapter.is_dir()
    before = json.loads((run / "manifest.json").read_text())["stages"]
    def plan():
        return dict(Pipeline(recipe, run, progress=False).plan("reinforce"))

    assert plan() == {"corpus": "skip", "anchors": "skip", "reinforce": "skip"}

    import shutil

    shutil.rmtree(adapter)
    assert plan() == {"corpus": "skip", "anchors": "skip", "reinforce": "rerun"}
    (run / "corpus" / "split.json").unlink()  # an earlier stage's output: it and every stage after it rerun
    assert plan() == {"corpus": "rerun", "anchors": "rerun", "reinforce": "rerun"}
    manifest = Pipeline(recipe, run, progress=False).run_stages(until="reinforce")  # no --overwrite needed
    assert adapter.is_dir() and (run / "corpus" / "split.json").exists()
    assert manifest["stages"]["reinforce"]["attempts"] == before["reinforce"]["attempts"] + 1
    assert plan() == {"corpus": "skip", "anchors": "skip", "reinforce": "skip"}


def test_cli_dry_run_shows_rerun_for_deleted_outputs(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(run), "--until", "corpus").returncode == 0
    (run / "corpus" / "blocks.jsonl").unlink()
    proc = run_cli("run", str(recipe), "--out", str(run), "--until", "corpus", "--dry-run")
    assert proc.returncode == 0 and "corpus     rerun" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def _corrupt_copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    (dst / "model.safetensors").write_bytes(b"\x00not safetensors" * 64)
    return dst


def test_corrupt_safetensors_exit_2(tmp_path, tiny_model_dir):
    """Defect 8: a damaged .safetensors gave a SafetensorError traceback in `info` and `run`."""
    bad = _corrupt_copy(tiny_model_dir, tmp_path / "bad-model")
    assert_exit_2(run_cli("info", str(bad)), "damaged", "safetensors")
    recipe = tiny_recipe(tmp_path, bad)
    assert_exit_2(run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--until", "reinforce",
                          "--no-progress"), "damaged")


def test_latin1_anchor_dictionary_exit_2(tmp_path):
    """Defect 8: a latin-1 anchors file gave a UnicodeDecodeError traceback."""
    bad = tmp_path / "dict.yaml"
    bad.write_bytes("Holmes: [Ren\xe9]\n".encode("latin-1"))
    (tmp_path / "c.txt").write_text(STORY * 3)
    from llm_unlearn.whp.anchors import AnchorDictionary

    with pytest.raises(AnchorError, match="not UTF-8"):
        AnchorDictionary.load(bad)
    proc = run_cli("anchors", "--corpus", str(tmp_path / "c.txt"), "--user-dictionary", str(bad),
                   "--out", str(tmp_path / "a.yaml"))
    assert_exit_2(proc, "not UTF-8")


def test_very_long_anchor_keys_do_not_hit_the_recursion_limit():
    """Defect 8: a key of ~500+ characters (a corpus without spaces gives such words) raised RecursionError."""
    from llm_unlearn.whp.translation import AnchorMatcher

    long_key = "x" * 3000
    matcher = AnchorMatcher({long_key: ["y"], "Holmes": ["Bob"]})
    assert [(s, e, k) for s, e, k, _ in matcher.find(f"a {long_key} b Holmes")] == [
        (2, 3002, long_key), (3005, 3011, "Holmes")]
    nested = {"a" * n: ["y"] for n in range(1, 1200)}  # keys that are prefixes of each other: deep regex nesting
    matches = AnchorMatcher(nested).find("b " + "a" * 700 + " c")
    assert [(s, e) for s, e, _, _ in matches] == [(2, 702)]  # the longest key wins (rule M2)


def test_translating_a_block_without_spaces(smol_tokenizer):
    from llm_unlearn.corpus import Document, make_blocks
    from llm_unlearn.whp.translation import Translator

    word = "Zorblax" * 200
    block = make_blocks([Document("d", f"{word} met Holmes")], smol_tokenizer, 4096)[0]
    translated = Translator({word: ["Bob"], "Holmes": ["Hart"]}, smol_tokenizer).translate(block, random.Random(0))
    assert translated.translated_text == "Bob met Hart"


@pytest.mark.parametrize("kind", ["file", "readonly"])
def test_out_that_is_a_file_or_read_only_exit_2(tmp_path, tiny_model_dir, kind):
    """Defect 8: `--out` that is a file or read-only gave an OSError traceback."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    if kind == "file":
        out = tmp_path / "a-file"
        out.write_text("x")
        fragment = "is a file"
    else:
        if os.geteuid() == 0:
            pytest.skip("root ignores directory permissions")
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
        out = parent / "run"
        fragment = "read-only"
    assert_exit_2(run_cli("run", str(recipe), "--out", str(out), "--until", "corpus"), fragment)


def test_read_only_run_dir_gives_run_dir_error(tmp_path, tiny_model_dir, monkeypatch):
    """The read-only case where the tests run as root (which ignores permissions): the OSError is the same."""
    recipe = Recipe.from_yaml(tiny_recipe(tmp_path, tiny_model_dir))
    real_mkdir = Path.mkdir

    def read_only_mkdir(self, *args, **kwargs):
        if self == tmp_path / "ro" / "run":
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    with pytest.raises(RunDirError, match="read-only"):
        Pipeline(recipe, tmp_path / "ro" / "run", progress=False).run_stages(until="corpus")


def test_anchors_out_existing_directory_exit_2(tmp_path):
    """Defect 8: `anchors --out EXISTING_DIR --overwrite` gave IsADirectoryError."""
    (tmp_path / "c.txt").write_text(STORY * 3)
    (tmp_path / "somedir").mkdir()
    proc = run_cli("anchors", "--corpus", str(tmp_path / "c.txt"), "--out", str(tmp_path / "somedir"), "--overwrite")
    assert_exit_2(proc, "is a directory")


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"stages": {"corpus": 3}}', "\xff\xfe"])
def test_corrupt_manifest_exit_2_with_recovery_advice(tmp_path, tiny_model_dir, damage):
    """Defect 8: a corrupt manifest.json gave a JSONDecodeError traceback."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_bytes(damage.encode("latin-1"))
    for extra in ([], ["--dry-run"]):
        proc = run_cli("run", str(recipe), "--out", str(run), "--until", "corpus", *extra)
        assert_exit_2(proc, "manifest.json is damaged", "new --out")


def test_outputs_follow_the_umask(tmp_path):
    """Defect 11: export/model, labels/dataset and the conversion cache were 0700 (mkdtemp), files 0600."""
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        import torch

        with atomic_dir(tmp_path / "model") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
            (tmp / "sub").mkdir(mode=0o700)
            (tmp / "sub" / "x.json").write_text("{}")
            os.chmod(tmp / "sub" / "x.json", 0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "model" / "sub").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "model" / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model" / "sub" / "x.json").stat().st_mode) == 0o644


def test_gguf_conversion_cache_follows_the_umask(tmp_path, monkeypatch, smol_tokenizer):
    """The conversion cache folder is made with mkdtemp too: it must be shared like any output. (The GGUF reading
    itself is replaced by a tiny model: what is tested is how the cache folder is written.)"""
    import transformers

    from llm_unlearn import models

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import build_tiny_llama

    tiny = build_tiny_llama(smol_tokenizer)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: smol_tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: tiny)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config",
                        lambda *a, **k: build_tiny_llama(smol_tokenizer, seed=1))
    target = tmp_path / "cache" / "converted" / "tiny"
    old = os.umask(0o022)
    try:
        models._convert_gguf(tmp_path / "tiny.gguf", target)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    files = [p for p in target.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files)


def _no_constants(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_corpus_shorter_than_one_block_warns_and_manifest_is_strict_json(tmp_path, tiny_model_dir):
    """Defect 12: no validation data and no warning; manifest.json then held NaN / Infinity."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir, corpus_text="Zorblax sailed to Venn.",
                         corpus={"block_size": 64})
    run = tmp_path / "run"
    proc = run_cli("run", str(recipe), "--out", str(run), "--until", "reinforce", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "too few for validation blocks" in proc.stderr
    manifest = _no_constants((run / "manifest.json").read_text())
    assert manifest["stages"]["corpus"]["metrics"]["validation_blocks"] == 0


# ---- the API (defects 2, 3) -------------------------------------------------------------------------------------
def test_api_empty_corpus_path_is_an_error(tmp_path, tiny_model_dir, monkeypatch):
    """Defect 2: `corpus=""` read every .txt/.md under the working directory."""
    from llm_unlearn import unlearn

    monkeypatch.chdir(tmp_path)
    (tmp_path / "unrelated.txt").write_text(STORY * 5)
    with pytest.raises(CorpusError, match="empty"):
        unlearn(str(tiny_model_dir), "", tmp_path / "run", until="corpus", progress=False)
    with pytest.raises(RecipeError, match=r"corpus\.path"):
        unlearn(str(tiny_model_dir), None, tmp_path / "run2", overrides={"corpus.path": ""}, until="corpus")
    assert not (tmp_path / "run" / "corpus").exists()


def test_cli_empty_corpus_path_exit_2(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--until", "corpus", "--set", 'corpus.path=""',
                   cwd=tmp_path)
    assert_exit_2(proc, "corpus.path must be a non-empty string")


def test_api_string_translation_is_one_translation(tmp_path, tiny_model_dir):
    """Defect 3: `anchors={"Holmes": "Bob"}` saved the translations B, o, b."""
    from llm_unlearn import unlearn

    result = unlearn(str(tiny_model_dir), [STORY * 6], tmp_path / "run", anchors={"Holmes": "Bob", "Venn": None,
                     "Quillmoor": ("Eastport", "Northby")}, until="corpus", progress=False)
    saved = Recipe.from_yaml(result.run_dir / "recipe.yaml").anchors.extra
    assert saved == {"Holmes": ["Bob"], "Venn": None, "Quillmoor": ["Eastport", "Northby"]}


@pytest.mark.parametrize("anchors", [{"Holmes": 5}, {"Holmes": [""]}, {"Holmes": []}, {3: ["x"]}, {"Holmes": [1]}])
def test_api_bad_translations_are_a_typed_error(tmp_path, anchors):
    """Defect 3: `{"Holmes": 5}` raised a bare TypeError."""
    from llm_unlearn import unlearn

    with pytest.raises(RecipeError, match="anchors"):
        unlearn("smollm2-135m", [STORY], tmp_path / "run", anchors=anchors, until="corpus", progress=False)


# ---- small ones (defect 13) ---------------------------------------------------------------------------------------
def test_missing_corpus_hint_names_an_option_run_has(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\n")
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run")
    assert_exit_2(proc, "--set corpus.path=")
    assert "--corpus" not in proc.stderr


def test_push_hint_names_the_out_option(tmp_path, monkeypatch):
    from llm_unlearn.export import push_to_hub

    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "run" / "export" / "model"
    with pytest.raises(HubError) as err:
        push_to_hub(folder, "me/model")
    assert f"llm-unlearn export --out {tmp_path / 'run'} --push-to-hub me/model" in str(err.value)


def test_unmatched_vetoes_warn(caplog):
    texts = ["Sherlock Holmes met Dr. Watson in Baker Street."]
    warnings = warn_unmatched_vetoes(["holmes", "Moriarty", "Baker Street", "Watson"], texts)
    assert len(warnings) == 2
    assert "'holmes'" in warnings[0] and "the corpus has 'Holmes'" in warnings[0]
    assert "'Moriarty' matches nothing" in warnings[1]
    assert "matches nothing" in caplog.text


@pytest.mark.parametrize("spec, hub_id", [("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct"),
                                          ("gemma3-270m", "google/gemma-3-270m"),
                                          ("someone/their-model", "someone/their-model")])
def test_model_card_base_model_is_a_hub_id(tmp_path, spec, hub_id):
    from llm_unlearn.export import model_card
    from llm_unlearn.rundir import RunPaths

    recipe = Recipe().with_override(f"model.spec={spec}").with_override("corpus.path=/home/me/books/x.txt")
    card = model_card(recipe, RunPaths(tmp_path / "run"))
    front = card.split("---")[1]
    assert f"base_model: {hub_id}" in front
    assert "/home/me" not in card and "`x.txt`" in card


def test_model_card_of_a_local_model_holds_no_local_paths(tmp_path, tiny_model_dir):
    from llm_unlearn.export import model_card
    from llm_unlearn.rundir import RunPaths

    extra = tmp_path / "more" / "wiki.md"
    recipe = (Recipe().with_override(f"model.spec={tiny_model_dir}").with_override(f"corpus.path={tmp_path / 'b.txt'}")
              .with_override(f"corpus.extra_paths=[{extra}]"))
    card = model_card(recipe, RunPaths(tmp_path / "run"))
    assert "base_model" not in card.split("---")[1]  # a local folder is no Hub id
    assert str(tmp_path) not in card
    assert tiny_model_dir.name in card and "`b.txt`" in card and "`wiki.md`" in card


def test_save_figure_is_atomic_and_keeps_the_earlier_plot_on_failure(tmp_path):
    """One writer for every plot (reports, attacks, TOFU, bench scripts): the figure appears whole under its name,
    readable like other outputs, in the format of its suffix; a failing save leaves the earlier file as it was and
    no temporary file behind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llm_unlearn.runio import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = tmp_path / "plots" / "curve.png"
    save_figure(fig, path)
    first = path.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert first.startswith(b"\x89PNG") and stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as any output
    save_figure(fig, tmp_path / "plots" / "curve.svg")
    assert b"<svg" in (tmp_path / "plots" / "curve.svg").read_bytes()[:400]
    with pytest.raises(TypeError):
        save_figure(fig, path, not_a_savefig_option=True)
    assert path.read_bytes() == first
    assert sorted(p.name for p in path.parent.iterdir()) == ["curve.png", "curve.svg"]
    plt.close(fig)
