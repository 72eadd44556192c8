"""Trust boundaries: what a recipe or a run directory (files people share) may cause, and that no input loses a
finished run. Each test pins one rule (T1-T14 of README, "What a run directory guarantees"); tiny models, seconds."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from conftest import ChatServer
from test_reliability import assert_exit_2, run_cli, tiny_recipe

from llm_unlearn.config import Recipe
from llm_unlearn.errors import AnchorError, CorpusError, EvalError, RecipeError, RunDirError
from llm_unlearn.pipeline import Pipeline

KEY = "sk-test-secret-0123456789"


# ---- T1: a key goes only to an endpoint the person running allowed -------------------------------------------------
@pytest.fixture()
def keyed(monkeypatch):
    """OPENAI_API_KEY set, no endpoint allowed yet."""
    import llm_unlearn.openai_chat as oc

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    for env in oc.ENDPOINT_ENV.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(oc, "_GIVEN", {})


def test_t1_recipe_judge_endpoint_gets_no_request_and_no_key(chat_server, keyed):
    """Item 1: `eval.judge: openai:URL` in a recipe sent the key and every completion to that URL."""
    from llm_unlearn.evaluation.judge import make_judge

    with pytest.raises(EvalError, match="LLM_UNLEARN_JUDGE_URL"):
        make_judge(f"openai:{chat_server.url}", "gpt-x")
    assert chat_server.requests == []


def test_t1_recipe_chat_endpoint_gets_no_request_and_no_key(chat_server, keyed):
    """Item 1: `anchors.substitute_chat: openai:URL` goes through the same code."""
    from llm_unlearn.whp.anchors.chat import make_writer

    with pytest.raises(AnchorError, match="LLM_UNLEARN_CHAT_URL"):
        make_writer(f"openai:{chat_server.url}", "gpt-x")
    assert chat_server.requests == []


def test_t1_the_persons_endpoint_gets_the_key(chat_server, keyed, monkeypatch):
    from llm_unlearn.evaluation.judge import make_judge
    from llm_unlearn.whp.anchors.chat import make_writer

    monkeypatch.setenv("LLM_UNLEARN_JUDGE_URL", chat_server.url)
    judge = make_judge("openai", "gpt-x")  # the recipe names the model only
    assert judge.grade_many(["p"], ["c"], [["r"]], concept="x") == [2]
    assert judge.url == chat_server.url + "/chat/completions"
    assert make_judge(f"openai:{chat_server.url}/", "gpt-x").url == judge.url  # the same endpoint, named in the recipe
    assert chat_server.requests == [("/v1/chat/completions", f"Bearer {KEY}")]
    with pytest.raises(AnchorError, match="LLM_UNLEARN_CHAT_URL"):  # allowing the judge's does not allow the chat's
        make_writer("openai", "gpt-x")


def test_t1_key_is_never_sent_to_an_endpoint_not_allowed(chat_server, keyed):
    """Item 1, the lowest level: ask_chat attaches the key only for an allowed endpoint."""
    from llm_unlearn.openai_chat import ask_chat

    assert ask_chat(chat_server.url + "/chat/completions", "m", "t", 4, 10, EvalError, "x", "y") == "2"
    assert chat_server.requests == [("/v1/chat/completions", None)]


def test_t1_a_redirect_does_not_carry_the_key_elsewhere(keyed, monkeypatch):
    """Item 1: urllib followed redirects with the Authorization header (a 302 from an allowed host)."""
    from llm_unlearn.openai_chat import ask_chat

    elsewhere = ChatServer()
    allowed = ChatServer(redirect_to=elsewhere.url + "/chat/completions")
    try:
        monkeypatch.setenv("LLM_UNLEARN_JUDGE_URL", allowed.url)
        with pytest.raises(EvalError, match="302"):
            ask_chat(allowed.url + "/chat/completions", "m", "t", 4, 10, EvalError, "judge endpoint", "")
        assert allowed.requests == [("/v1/chat/completions", f"Bearer {KEY}")]
        assert elsewhere.requests == []
    finally:
        allowed.close()
        elsewhere.close()


def test_t1_cli_refuses_a_recipe_endpoint_before_any_stage(tmp_path, tiny_model_dir, chat_server, keyed):
    """Item 1 through the CLI: `run --dry-run` refuses at once; with --judge-url naming it, it is accepted."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"enabled": True, "judge": f"openai:{chat_server.url}",
                                                          "judge_model": "gpt-x"})
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run")
    assert_exit_2(proc, "eval.judge", "LLM_UNLEARN_JUDGE_URL")
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run", "--judge-url", chat_server.url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert chat_server.requests == []


# ---- T2: a run directory cannot run code --------------------------------------------------------------------------
EVIL = """import pathlib
pathlib.Path({marker!r}).write_text("executed")
from transformers import LlamaConfig


class EvilConfig(LlamaConfig):
    model_type = "llama"
"""


def test_t2_run_dir_recipe_cannot_turn_on_remote_code(tmp_path, tiny_model_dir):
    """Item 2: RUN/recipe.yaml edited to `trust_remote_code: true` with an auto_map model inside the run dir ran
    its evil.py on `run --out RUN --overwrite`."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(run), "--until", "corpus").returncode == 0
    evil = run / "evilmodel"
    shutil.copytree(tiny_model_dir, evil)
    marker = tmp_path / "pwned"
    (evil / "evil.py").write_text(EVIL.format(marker=str(marker)))
    config = json.loads((evil / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    (evil / "config.json").write_text(json.dumps(config))
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    saved["model"] = {"spec": "evilmodel", "trust_remote_code": True}
    (run / "recipe.yaml").write_text(yaml.safe_dump(saved))
    proc = run_cli("run", "--out", str(run), "--overwrite", "--until", "corpus")
    assert not marker.exists(), "evil.py from the run directory was executed"
    # the folder is a Llama: without its code it loads as one (an architecture that needs the code: exit 2)
    assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "trust_remote_code is ignored" in proc.stderr


def test_t2_only_the_person_running_turns_on_remote_code(tmp_path, tiny_model_dir):
    path = tiny_recipe(tmp_path, tiny_model_dir, model={"trust_remote_code": True})
    assert Recipe.from_yaml(path).model.trust_remote_code is False
    allowed = Recipe.from_yaml(path, ["model.trust_remote_code=true"])
    assert allowed.model.trust_remote_code is True
    # not part of what a stage computes: a run started with the flag resumes without it
    a, b = (Pipeline(r, tmp_path / "run", progress=False).fingerprints() for r in (Recipe.from_yaml(path), allowed))
    assert a == b


# ---- T3: nothing is deleted or written through a link ---------------------------------------------------------------
def test_t3_symlinked_stage_folder_is_not_written_through(tmp_path, tiny_model_dir):
    """Item 3: `ln -s /elsewhere RUN/export` with the stage left 'running': the next run deleted files there."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(run), "--until", "corpus").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("blocks.jsonl", "split.json", "precious.txt"):
        (elsewhere / name).write_text(f"precious {name}")
    shutil.rmtree(run / "corpus")
    (run / "corpus").symlink_to(elsewhere, target_is_directory=True)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"]["corpus"]["status"] = "running"  # what kill -9 leaves
    (run / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("run", str(recipe), "--out", str(run), "--until", "corpus", "--overwrite")
    assert_exit_2(proc, "symbolic link")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["blocks.jsonl", "precious.txt", "split.json"]
    assert all((elsewhere / n).read_text() == f"precious {n}" for n in ("blocks.jsonl", "split.json", "precious.txt"))


def test_t3_umask_permissions_never_follow_a_link(tmp_path):
    from llm_unlearn.runio import share_like_umask

    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    os.chmod(outside, 0o600)
    folder = tmp_path / "stage"
    folder.mkdir()
    (folder / "link").symlink_to(outside)
    share_like_umask(folder)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600


# ---- T4: YAML aliases and duplicate keys ----------------------------------------------------------------------------
def _alias_bomb(levels: int = 6) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines)


def test_t4_alias_bomb_in_a_recipe_is_refused_before_validation(tmp_path):
    """Item 4: a 9-level bomb in eval.suites: the validation error printed the expanded list (MemoryError)."""
    def level(i: int) -> str:  # a list of 10 x level i-1, every copy but the first an alias
        if i == 0:
            return "&a0 [" + ", ".join(["lol"] * 10) + "]"
        return f"&a{i} [{level(i - 1)}, " + ", ".join([f"*a{i - 1}"] * 9) + "]"

    path = tmp_path / "recipe.yaml"
    path.write_text(f"eval:\n  suites: {level(5)}\n")  # a million strings once expanded
    with pytest.raises(RecipeError) as err:
        Recipe.from_yaml(path)
    assert "alias" in str(err.value) and len(str(err.value)) < 2000


def test_t4_alias_bomb_in_every_yaml_reader(tmp_path):
    """Item 4: the TOFU recipe, a suite's suite.yaml, an anchors file read by the eval command, --set values."""
    from llm_unlearn.evaluation.suites import load_suite, read_anchor_terms
    from llm_unlearn.tofu.bench import TofuBenchConfig

    bomb = _alias_bomb() + "\nvalue: *a5\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    with pytest.raises(RecipeError, match="alias"):
        TofuBenchConfig.from_yaml(path)
    with pytest.raises(EvalError, match="alias"):
        read_anchor_terms(path)
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "suite.yaml").write_text(bomb)
    (suite / "completion.jsonl").write_text('{"prompt": "a", "answers": ["b"]}\n')
    with pytest.raises(EvalError, match="alias"):
        load_suite(suite)
    with pytest.raises(RecipeError, match="alias"):
        Recipe().with_override("eval.suites=[&x a, *x]")


def test_t4_user_dictionary_with_aliases_is_refused_before_any_stage(tmp_path, tiny_model_dir):
    """Item 4 for anchor dictionaries named by a recipe (checked before the anchors stage, --dry-run included)."""
    dictionary = tmp_path / "anchors.yaml"
    dictionary.write_text(_alias_bomb() + "\nZorblax: *a5\n")
    recipe = tiny_recipe(tmp_path, tiny_model_dir, anchors={"user_dictionary": str(dictionary)})
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run")
    assert_exit_2(proc, "alias")
    assert len(proc.stderr) < 3000


@pytest.mark.parametrize("text, key", [("name: a\nname: b\n", "name"),
                                       ("corpus:\n  block_size: 32\n  block_size: 64\n", "block_size")])
def test_t12_duplicate_keys_in_a_recipe_are_an_error(tmp_path, text, key):
    """Item 12: duplicate YAML keys: the last one won silently."""
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=f"'{key}' appears twice"):
        Recipe.from_yaml(path)


# ---- T5: replace, never destroy first ------------------------------------------------------------------------------
def _finished_corpus(tmp_path, tiny_model_dir, **sections):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, **sections)
    run = tmp_path / "run"
    proc = run_cli("run", str(recipe), "--out", str(run), "--until", "corpus")
    assert proc.returncode == 0, proc.stderr[-2000:]
    snapshot = {p.name: p.read_bytes() for p in [run / "recipe.yaml", run / "corpus" / "blocks.jsonl",
                                                  run / "corpus" / "split.json"]}
    snapshot["stages"] = json.loads((run / "manifest.json").read_text())["stages"]
    return recipe, run, snapshot


def _unchanged(run, snapshot) -> None:
    for p in [run / "recipe.yaml", run / "corpus" / "blocks.jsonl", run / "corpus" / "split.json"]:
        assert p.read_bytes() == snapshot[p.name], p
    assert json.loads((run / "manifest.json").read_text())["stages"] == snapshot["stages"]


@pytest.mark.parametrize("override, fragment", [
    ("corpus.block_size=4096", "context length (1024)"),
    ("corpus.path=/nonexistent/corpus.txt", "does not exist"),
])
def test_t5_checks_that_need_no_stage_run_before_overwrite_deletes_anything(tmp_path, tiny_model_dir, override,
                                                                            fragment):
    """Item 5: `--set corpus.block_size=4096 --overwrite` passed --dry-run, deleted corpus/, then failed; the run
    dir's recipe.yaml said 4096 and the plain rerun failed too. A missing corpus path did the same."""
    recipe, run, snapshot = _finished_corpus(tmp_path, tiny_model_dir)
    assert_exit_2(run_cli("run", str(recipe), "--out", str(run), "--until", "corpus", "--set", override,
                          "--dry-run"), fragment)
    assert_exit_2(run_cli("run", str(recipe), "--out", str(run), "--until", "corpus", "--set", override,
                          "--overwrite"), fragment)
    _unchanged(run, snapshot)
    proc = run_cli("run", "--out", str(run), "--until", "corpus", "--dry-run")  # the plain rerun: nothing to do
    assert proc.returncode == 0 and "corpus     skip" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_t5_a_failed_redo_puts_the_old_stage_back(tmp_path, tiny_model_dir):
    """Item 5, a failure only the stage can find (a .jsonl corpus without the field named): the old output, its
    manifest entry and the old recipe.yaml are put back."""
    corpus = tmp_path / "texts.jsonl"
    corpus.write_text("".join(json.dumps({"text": "Zorblax sailed from Quillmoor to Venn. " * 30}) + "\n"
                              for _ in range(3)))
    recipe, run, snapshot = _finished_corpus(tmp_path, tiny_model_dir, corpus={"path": str(corpus)})
    proc = run_cli("run", str(recipe), "--out", str(run), "--until", "corpus", "--overwrite",
                   "--set", "corpus.text_field=body")
    assert_exit_2(proc, "body")
    _unchanged(run, snapshot)
    assert not any(p.name.endswith(".aside") for p in run.iterdir())
    proc = run_cli("run", str(recipe), "--out", str(run), "--until", "corpus", "--dry-run")
    assert proc.returncode == 0 and "corpus     skip" in proc.stdout, proc.stdout + proc.stderr[-2000:]


@pytest.mark.parametrize("recipe_text, fragment", [
    ("model: {spec: ../../etc}\n", "config.json"),
    ("corpus: {block_size: 100000}\n", "context length"),
    ("corpus: {block_size: 100000000000000000000}\n", "corpus.block_size must be an integer in"),
])
def test_t13_dry_run_reports_what_the_run_would_fail_on(tmp_path, tiny_model_dir, recipe_text, fragment):
    """Item 13: `--dry-run` said "run" for model.spec=../../etc and a block size beyond the context."""
    path = tiny_recipe(tmp_path, tiny_model_dir)
    data = yaml.safe_load(path.read_text())
    for section, values in yaml.safe_load(recipe_text).items():
        data[section].update(values)
    path.write_text(yaml.safe_dump(data))
    assert_exit_2(run_cli("run", str(path), "--out", str(tmp_path / "run"), "--dry-run"), fragment)
    assert not (tmp_path / "run").exists()


def test_t13_dry_run_reports_an_out_under_a_file(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    (tmp_path / "afile").write_text("x")
    assert_exit_2(run_cli("run", str(recipe), "--out", str(tmp_path / "afile" / "run"), "--dry-run"), "is a file")
    assert_exit_2(run_cli("run", str(recipe), "--out", str(tmp_path / "afile"), "--dry-run"), "is a file")


# ---- T6: --set paths are resolved once, at the command -------------------------------------------------------------
def test_t6_relative_set_path_resumes_from_another_folder(tmp_path, tiny_model_dir):
    """Item 6: a relative `--set corpus.path` resolved against the current folder at one time and the run dir at
    another: resuming from elsewhere asked for --overwrite, which deleted corpus/ and then failed."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    work, other = tmp_path / "work", tmp_path / "other"
    work.mkdir()
    other.mkdir()
    (work / "mine.txt").write_text((tmp_path / "corpus.txt").read_text())
    run = tmp_path / "run"
    proc = run_cli("run", str(recipe), "--out", str(run), "--until", "corpus", "--set", "corpus.path=mine.txt",
                   cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert yaml.safe_load((run / "recipe.yaml").read_text())["corpus"]["path"] == str(work / "mine.txt")
    proc = run_cli("run", "--out", str(run), "--until", "corpus", "--dry-run", cwd=other)
    assert proc.returncode == 0 and "corpus     skip" in proc.stdout, proc.stdout + proc.stderr[-2000:]


# ---- T7: compare --out refuses to overwrite -------------------------------------------------------------------------
def _eval_json(folder: Path) -> Path:
    folder.mkdir(parents=True)
    doc = {"models": {"base": {"suites": {}}, "unlearned": {"suites": {}}}, "baseline": "base", "suites": []}
    (folder / "eval.json").write_text(json.dumps(doc))
    return folder


def test_t7_compare_out_refuses_to_overwrite(tmp_path):
    """Item 7: `compare --out FILE` overwrote an existing file (eval and anchors refuse without --overwrite)."""
    a, b = _eval_json(tmp_path / "a"), _eval_json(tmp_path / "b")
    out = tmp_path / "notes.md"
    out.write_text("my notes")
    assert_exit_2(run_cli("compare", str(a), str(b), "--out", str(out)), "--overwrite")
    assert out.read_text() == "my notes"
    proc = run_cli("compare", str(a), str(b), "--out", str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_text().startswith("# Comparison")


@pytest.mark.parametrize("content, out", [('{"models": 5}', None), (None, "small.txt/x.md"), (None, "DIR")])
def test_t14_compare_bad_input_exit_2(tmp_path, content, out):
    """Item 14: compare on `{"models": 5}` and `--out small.txt/x.md` gave tracebacks."""
    a, b = _eval_json(tmp_path / "a"), _eval_json(tmp_path / "b")
    if content:
        (a / "eval.json").write_text(content)
    args = ["compare", str(a), str(b)]
    if out:
        (tmp_path / "small.txt").write_text("x")
        (tmp_path / "DIR").mkdir()
        args += ["--out", str(tmp_path / out)]
    assert_exit_2(run_cli(*args))


# ---- T8: the API takes the lock before writing anything -------------------------------------------------------------
def test_t8_api_writes_nothing_into_a_locked_run_dir(tmp_path, tiny_model_dir):
    """Item 8: two unlearn() calls into one out: the first trained on the second's text."""
    from llm_unlearn import unlearn
    from llm_unlearn.runio import RunLock

    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):  # another call in progress
        with pytest.raises(RunDirError, match="in use"):
            unlearn(model=str(tiny_model_dir), corpus=["Zorblax sailed from Quillmoor. " * 40], out=run,
                    until="corpus", progress=False)
    assert not (run / "inputs").exists()


def test_t8_refused_api_call_keeps_the_finished_runs_input(tmp_path, tiny_model_dir):
    """Item 8: a refused call still replaced RUN/inputs/corpus.jsonl."""
    from llm_unlearn import unlearn

    run = tmp_path / "run"
    first = ["Zorblax sailed from Quillmoor to Venn. " * 40]
    unlearn(model=str(tiny_model_dir), corpus=first, out=run, until="corpus", progress=False,
            overrides={"corpus.block_size": 32})
    stored = (run / "inputs" / "corpus.jsonl").read_bytes()
    with pytest.raises(RunDirError, match="overwrite"):
        unlearn(model=str(tiny_model_dir), corpus=["Another text entirely, about Venn. " * 40], out=run,
                until="corpus", progress=False, overrides={"corpus.block_size": 32})
    assert (run / "inputs" / "corpus.jsonl").read_bytes() == stored
    assert [p.name for p in (run / "inputs").iterdir()] == ["corpus.jsonl"]
    plan = dict(Pipeline(Recipe.from_yaml(run / "recipe.yaml"), run, progress=False).plan("corpus"))
    assert plan == {"corpus": "skip"}


# ---- T9: outputs are whole or noticed; T10: temporaries and permissions ---------------------------------------------
def test_t9_a_changed_or_deleted_output_file_is_redone(tmp_path, tiny_model_dir, monkeypatch):
    """Item 9: `rm RUN/export/model/model.safetensors`: every stage was skipped, rc 0, a model without weights.
    Item 10: adapter weights were written 0600 under umask 022."""
    old = os.umask(0o022)
    try:
        recipe = Recipe.from_yaml(tiny_recipe(tmp_path, tiny_model_dir))
        run = tmp_path / "run"
        Pipeline(recipe, run, progress=False).run_stages(until="reinforce")
    finally:
        os.umask(old)

    def plan():
        return dict(Pipeline(recipe, run, progress=False).plan("reinforce"))

    weights = run / "reinforce" / "adapter" / "adapter_model.safetensors"
    assert weights.is_file() and stat.S_IMODE(weights.stat().st_mode) == 0o644  # the umask's, not mkstemp's 0600
    files = json.loads((run / "manifest.json").read_text())["stages"]["reinforce"]["files"]
    assert files["adapter/adapter_model.safetensors"][0] == weights.stat().st_size
    assert plan() == {"corpus": "skip", "anchors": "skip", "reinforce": "skip"}
    weights.unlink()  # a file deleted deep inside a folder that is still there
    assert plan() == {"corpus": "skip", "anchors": "skip", "reinforce": "rerun"}
    blocks = run / "corpus" / "blocks.jsonl"
    data = blocks.read_bytes()
    blocks.write_bytes(data[:-2] + (b"x" if data[-2:-1] != b"x" else b"y") + data[-1:])  # same size, other bytes
    assert plan() == {"corpus": "rerun", "anchors": "rerun", "reinforce": "rerun"}
    Pipeline(recipe, run, progress=False).run_stages(until="reinforce")
    assert plan() == {"corpus": "skip", "anchors": "skip", "reinforce": "skip"}
    assert weights.is_file() and blocks.read_bytes() == data


def test_t10_temporaries_of_a_killed_run_are_removed_on_the_next(tmp_path, tiny_model_dir):
    """Item 10: kill -9 during export leaked export/.model.*.tmp (a whole model) that no rerun removed."""
    recipe = Recipe.from_yaml(tiny_recipe(tmp_path, tiny_model_dir))
    run = tmp_path / "run"
    Pipeline(recipe, run, progress=False).run_stages(until="corpus")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    left = [run / "export" / ".model.k2j4_x.tmp", run / "corpus" / ".blocks.jsonl.a8f3k2.tmp", run / ".corpus.aside",
            run / "export" / ".model.old"]
    for path in left:
        path.mkdir(parents=True) if path.suffix != ".tmp" or "model" in path.name else path.write_text("partial")
        if path.is_dir():
            (path / "model.safetensors").write_bytes(b"\0" * 1000)
    (run / "corpus" / ".link.tmp").symlink_to(outside, target_is_directory=True)
    Pipeline(recipe, run, progress=False).run_stages(until="corpus")  # every stage skipped; the leftovers go
    assert not any(p.exists() for p in left) and not (run / "corpus" / ".link.tmp").is_symlink()
    assert (outside / "keep.txt").read_text() == "keep"
    assert (run / "corpus" / "blocks.jsonl").is_file()


# ---- T12, T14: bad input gets exit 2 and a message, never a hang or a traceback ------------------------------------
@pytest.mark.parametrize("kind", ["dev_zero", "fifo"])
def test_t12_a_device_or_fifo_as_corpus_is_refused_at_once(tmp_path, tiny_model_dir, kind):
    """Item 12: /dev/zero or a FIFO as corpus.path hung or ate memory (15 GB in 40 s) without a message."""
    if kind == "fifo":
        source = tmp_path / "pipe"
        os.mkfifo(source)
    else:
        source = Path("/dev/zero")
    recipe = tiny_recipe(tmp_path, tiny_model_dir, corpus={"path": str(source)})
    for extra in (["--dry-run"], []):
        proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--until", "corpus", *extra, timeout=120)
        assert_exit_2(proc, "not a regular file")
    with pytest.raises(CorpusError, match="not a regular file"):
        Pipeline(Recipe.from_yaml(recipe), tmp_path / "run2", progress=False).plan("corpus")


@pytest.mark.parametrize("damage", [{"outputs": 5}, {"files": [1]}, {"attempts": "x"}])
def test_t14_damaged_manifest_entry_exit_2(tmp_path, tiny_model_dir, damage):
    """Item 14: manifest `"outputs": 5` gave a traceback."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    assert run_cli("run", str(recipe), "--out", str(run), "--until", "corpus").returncode == 0
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"]["corpus"].update(damage)
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert_exit_2(run_cli("run", str(recipe), "--out", str(run), "--until", "corpus"), "damaged")


# ---- T11: the API validates like the CLI --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"corpus": {"text": "Zorblax sailed."}}, CorpusError, "mapping would give its keys"),
    ({"model": None}, RecipeError, "model must name a model spec"),
    ({"overwrite": "no"}, RecipeError, "overwrite must be True or False"),
    ({"overrides": ["corpus.block_size=64"]}, RecipeError, "overrides must be a mapping"),
    ({"overrides": {"corpus.block_size": object()}}, RecipeError, "overrides['corpus.block_size']"),
    ({"out": None}, RecipeError, "out must be a non-empty string"),
    ({"out": 5}, RecipeError, "out must be a non-empty string"),
    ({"recipe": 123}, RecipeError, "recipe must be a Recipe"),
    ({"target": 5}, RecipeError, "target must be a string"),
    ({"progress": "yes"}, RecipeError, "progress must be True or False"),
])
def test_t11_api_type_slips_are_errors_before_anything_is_written(tmp_path, tiny_model_dir, monkeypatch, kwargs,
                                                                  error, fragment):
    """Item 11: corpus={"text": ...} trained on the dict's keys; model=None meant SmolLM2; overwrite="no" counted
    as true; overrides as a list or with odd values gave tracebacks. Item 13: target=5 was reported as an error in
    `--set corpus.block_size=64`. Item 14: out=None|5, recipe=123 gave tracebacks."""
    from llm_unlearn import unlearn

    monkeypatch.chdir(tmp_path)
    args = {"model": str(tiny_model_dir), "corpus": ["Zorblax sailed from Quillmoor. " * 40], "out": tmp_path / "run",
            "until": "corpus", "progress": False, "overrides": {"corpus.block_size": 64}, **kwargs}
    with pytest.raises(error) as err:
        unlearn(**args)
    assert fragment in str(err.value) and "--set" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-llama"]  # nothing written


def test_t11_api_path_values_and_relative_paths(tmp_path, tiny_model_dir, monkeypatch):
    """Item 11: an overrides value that is a Path gave a traceback; relative paths are stored absolute (T6)."""
    from llm_unlearn import unlearn

    (tmp_path / "texts.txt").write_text("Zorblax sailed from Quillmoor to Venn. " * 40)
    monkeypatch.chdir(tmp_path)
    result = unlearn(model=str(tiny_model_dir), corpus=None, out="run", until="corpus", progress=False,
                     overrides={"corpus.path": Path("texts.txt"), "corpus.block_size": 32})
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["corpus"]["path"] == str(tmp_path / "texts.txt")
    assert result.manifest["stages"]["corpus"]["status"] == "done"


# ---- T12 - T14: flags and files that were accepted, late, misleading or a traceback ---------------------------------
def test_t12_counts_beyond_int32_are_refused():
    """Item 12: `max_steps: 99999999999999999999999` was accepted."""
    with pytest.raises(RecipeError, match="finetune.max_steps must be an integer in"):
        Recipe().with_override("finetune.max_steps=99999999999999999999999")
    with pytest.raises(RecipeError, match="corpus.seed"):
        Recipe().with_override("corpus.seed=4294967296")


def test_t12_public_without_push_is_an_error(tmp_path, tiny_model_dir):
    """Item 12: `export --public` without `--push-to-hub` was ignored silently."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    assert_exit_2(run_cli("export", str(recipe), "--out", str(tmp_path / "run"), "--public"), "--push-to-hub")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, fragment", [
    (["--methods", ""], "--methods names no method"),
    (["--set", "unlearn.whp.labels.alpha=-1"], "labels.alpha"),
    (["--set", "train.learning_rate=.nan"], "train.learning_rate"),
    (["--out", "FILE"], "is a file"),
])
def test_t13_benchmark_tofu_checks_before_training(tmp_path, extra, fragment):
    """Items 12-14: `benchmark tofu --methods ""` ran the recipe's methods; a bad alpha and --out FILE were found
    only after the target model's fine-tune; a NaN learning rate gave a traceback."""
    from conftest import REPO

    (tmp_path / "FILE").write_text("x")
    extra = [str(tmp_path / "FILE") if e == "FILE" else e for e in extra]
    args = ["benchmark", "tofu", "--recipe", str(REPO / "recipes" / "tofu_smollm2_cpu.yaml"),
            "--out", str(tmp_path / "tofu"), *extra]
    assert_exit_2(run_cli(*args, timeout=120), fragment)
    assert not (tmp_path / "tofu").exists()


def test_t13_a_folder_as_recipe_is_named_a_folder(tmp_path):
    """Item 13: a directory as recipe got "recipe file not found"."""
    assert_exit_2(run_cli("run", str(tmp_path), "--out", str(tmp_path / "run"), "--dry-run"), "is a folder")


def test_t13_a_bad_config_json_is_named(tmp_path, tiny_model_dir):
    """Item 13: a bad config.json got "convert .bin checkpoints"."""
    bad = tmp_path / "bad-model"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "config.json").write_text('{"model_type": "llama",')
    recipe = tiny_recipe(tmp_path, bad)
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run")
    assert_exit_2(proc, "config.json is not valid JSON")
    assert ".bin" not in proc.stderr
    for args in (["info", str(bad)], ["eval", "--model", str(bad), "--suite", "eval/control", "--limit", "1",
                                      "--out", str(tmp_path / "eval")]):
        proc = run_cli(*args)
        assert_exit_2(proc, "config.json is not valid JSON")
        assert ".bin" not in proc.stderr


def test_t14_non_utf8_recipe_exit_2(tmp_path):
    """Item 14: a non-UTF-8 recipe gave a traceback."""
    path = tmp_path / "recipe.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    assert_exit_2(run_cli("run", str(path), "--out", str(tmp_path / "run"), "--dry-run"), "not UTF-8")


@pytest.mark.parametrize("flags, fragment", [
    (["--temperature", "-1"], "temperature"),
    (["--temperature", "nan"], "temperature"),
    (["--seed", "-1"], "seed"),
    (["--out", "FILE"], "is a file"),
    (["--device", "cuda"], "no such device"),
])
def test_t14_eval_flags_are_checked_before_the_evaluation(tmp_path, tiny_model_dir, flags, fragment):
    """Item 14: `eval --temperature -1|nan`, `--seed -1` (after the whole evaluation, writing nothing), `--out FILE`
    and `--device cuda` on a CPU build gave tracebacks."""
    import torch

    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "FILE").write_text("x")
    flags = [str(tmp_path / "FILE") if f == "FILE" else f for f in flags]
    assert_exit_2(run_cli("eval", "--model", str(tiny_model_dir), "--benchmarks", "arc_easy", "--limit", "2",
                          *flags, timeout=120), fragment)


def test_t14_model_device_cuda_on_a_cpu_build_fails_before_any_stage(tmp_path, tiny_model_dir):
    """Item 14: `model.device: cuda` crashed at reinforce."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    recipe = tiny_recipe(tmp_path, tiny_model_dir, model={"device": "cuda"})
    assert_exit_2(run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run"), "model.device=cuda")


def test_t14_attack_relearn_lr_nan_exit_2(tmp_path, tiny_model_dir):
    """Item 14: `attack --relearn-lr nan` gave a traceback (after scoring every model)."""
    from conftest import REPO

    proc = run_cli("attack", "--model", str(tiny_model_dir), "--base", str(tiny_model_dir), "--out",
                   str(tmp_path / "attack"), "--suite", str(REPO / "eval" / "sherlock_holmes"), "--relearn-lr", "nan",
                   timeout=120)
    assert_exit_2(proc, "--relearn-lr")
    assert not (tmp_path / "attack").exists()


def test_t13_pickle_refusal_names_the_file_to_delete(tmp_path, tiny_model_dir):
    """Item 13: a pickle adapter was refused with advice to delete a folder that does not exist."""
    recipe = Recipe.from_yaml(tiny_recipe(tmp_path, tiny_model_dir))
    run = tmp_path / "run"
    planted = run / "reinforce" / "adapter" / "adapter_model.bin"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"not tensors")
    hint = Pipeline(recipe, run, progress=False)._pickle_hint("labels")
    assert str(planted) in hint and "checkpoints" not in hint


NASTY = [None, 5, -1, 1e308, float("nan"), "", "x" * 300, [], [5], {}, {"a": 5}, True, "../../etc/passwd",
         ["../../outside"], {"../../x": [1, "h"]}]


def test_t14_fuzz_manifest_entries_plan_or_typed_error(tmp_path, tiny_model_dir):
    """Item 14, the fuzz test extended to manifests: every field of a stage entry set to every nasty value gives a
    plan or a RunDirError, never another exception; nothing outside the run directory is touched."""
    recipe = Recipe.from_yaml(tiny_recipe(tmp_path, tiny_model_dir))
    run = tmp_path / "run"
    Pipeline(recipe, run, progress=False).run_stages(until="corpus")
    good = (run / "manifest.json").read_text()
    for field in ("status", "fingerprint", "outputs", "files", "attempts", "metrics", "seconds"):
        for value in NASTY:
            manifest = json.loads(good)
            manifest["stages"]["corpus"][field] = value
            (run / "manifest.json").write_text(json.dumps(manifest))
            try:
                plan = dict(Pipeline(recipe, run, progress=False).plan("corpus"))
            except RunDirError:
                continue
            assert plan["corpus"] in ("skip", "run", "redo", "rerun", "resume"), (field, value)
    (run / "manifest.json").write_text(good)
    assert dict(Pipeline(recipe, run, progress=False).plan("corpus")) == {"corpus": "skip"}


def test_t11_fuzz_api_arguments_typed_errors_only(tmp_path, tiny_model_dir, monkeypatch):
    """Item 11, the fuzz test extended to API arguments: every argument set to every nasty value gives a result or
    a typed error (UnlearnError), never a traceback of another kind; a refused call writes nothing."""
    from llm_unlearn import unlearn
    from llm_unlearn.errors import UnlearnError

    monkeypatch.chdir(tmp_path)
    base = {"model": str(tiny_model_dir), "corpus": ["Zorblax sailed from Quillmoor. " * 40], "out": tmp_path / "run",
            "until": "nope", "progress": False, "overrides": {"corpus.block_size": 64}}
    for name in ("model", "corpus", "out", "until", "progress", "overrides", "overwrite", "target", "method",
                 "recipe", "anchors"):
        for value in NASTY + [object(), b"bytes", Path("x.yaml")]:
            try:
                unlearn(**{**base, name: value})  # until="nope": a call that passes every check stops at the plan
            except UnlearnError:
                pass
            assert not (tmp_path / "run" / "inputs").exists() and not (tmp_path / "run" / "corpus").exists(), \
                (name, value)


@pytest.mark.parametrize("command, flags", [
    ("eval", ["--temperature", "--seed", "--samples", "--max-new-tokens", "--batch-size", "--limit", "--device",
              "--dtype", "--judge", "--judge-url"]),
    ("attack", ["--relearn-lr", "--relearn-steps", "--in-context-k", "--quant-bits", "--seed", "--max-new-tokens",
                "--batch-size", "--dtype"]),
])
def test_t14_fuzz_cli_flags_exit_2_never_a_traceback(tmp_path, capsys, command, flags):
    """Item 14, the fuzz test extended to CLI flags of eval and attack: every flag with every nasty value exits 2
    (a flag error, or, for a value that passes, the missing model that follows), never another exception."""
    from conftest import REPO

    from llm_unlearn.cli import main

    missing = str(tmp_path / "no-such-model")
    base = {"eval": ["eval", "--model", missing, "--benchmarks", "arc_easy", "--out", str(tmp_path / "e")],
            "attack": ["attack", "--model", missing, "--base", missing, "--out", str(tmp_path / "a"), "--suite",
                       str(REPO / "eval" / "sherlock_holmes")]}[command]
    for flag in flags:
        for value in ["-1", "0", "nan", "inf", "-inf", "1e400", "99999999999999999999", "", "abc", "cuda:7",
                      "openai:file:///etc/passwd", "1,-2"]:
            try:
                code = main([*base, flag, value])
            except SystemExit as exc:  # argparse: not a number
                code = exc.code
            assert code == 2, (flag, value, capsys.readouterr().err[-500:])
    assert not (tmp_path / "e").exists() and not (tmp_path / "a").exists()
