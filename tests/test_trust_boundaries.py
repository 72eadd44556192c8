"""Trust boundaries: what a recipe or a run directory (files people share) may cause, and that no input loses a
finished run. Each test pins one rule (T1-T14 of README, "What a run directory guarantees"); tiny models, seconds."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml
from test_reliability import assert_exit_2, run_cli, tiny_recipe

from llm_unlearn.errors import AnchorError, EvalError, RecipeError
from llm_unlearn.pipeline import Pipeline
from llm_unlearn.recipe import Recipe

KEY = "sk-test-secret-0123456789"


# ---- T1: a key goes only to an endpoint the person running allowed -------------------------------------------------
class _Server:
    """A local OpenAI-compatible endpoint that records every request (path and Authorization header)."""

    def __init__(self, answer: str = "2", redirect_to: str | None = None):
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.requests.append((self.path, self.headers.get("Authorization")))
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps({"choices": [{"message": {"content": answer}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = _handle

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture()
def keyed(monkeypatch):
    """OPENAI_API_KEY set, no endpoint allowed yet."""
    import llm_unlearn.openai_chat as oc

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    for env in oc.ENDPOINT_ENV.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(oc, "_GIVEN", {})


def test_t1_recipe_judge_endpoint_gets_no_request_and_no_key(server, keyed):
    """Item 1: `eval.judge: openai:URL` in a recipe sent the key and every completion to that URL."""
    from llm_unlearn.evaluation.judge import make_judge

    with pytest.raises(EvalError, match="LLM_UNLEARN_JUDGE_URL"):
        make_judge(f"openai:{server.url}", "gpt-x")
    assert server.requests == []


def test_t1_recipe_chat_endpoint_gets_no_request_and_no_key(server, keyed):
    """Item 1: `anchors.substitute_chat: openai:URL` goes through the same code."""
    from llm_unlearn.anchors.chat import make_writer

    with pytest.raises(AnchorError, match="LLM_UNLEARN_CHAT_URL"):
        make_writer(f"openai:{server.url}", "gpt-x")
    assert server.requests == []


def test_t1_the_persons_endpoint_gets_the_key(server, keyed, monkeypatch):
    from llm_unlearn.anchors.chat import make_writer
    from llm_unlearn.evaluation.judge import make_judge

    monkeypatch.setenv("LLM_UNLEARN_JUDGE_URL", server.url)
    judge = make_judge("openai", "gpt-x")  # the recipe names the model only
    assert judge.grade_many(["p"], ["c"], [["r"]], concept="x") == [2]
    assert judge.url == server.url + "/chat/completions"
    assert make_judge(f"openai:{server.url}/", "gpt-x").url == judge.url  # the same endpoint, named in the recipe
    assert server.requests == [("/v1/chat/completions", f"Bearer {KEY}")]
    with pytest.raises(AnchorError, match="LLM_UNLEARN_CHAT_URL"):  # allowing the judge's does not allow the chat's
        make_writer("openai", "gpt-x")


def test_t1_key_is_never_sent_to_an_endpoint_not_allowed(server, keyed):
    """Item 1, the lowest level: ask_chat attaches the key only for an allowed endpoint."""
    from llm_unlearn.openai_chat import ask_chat

    assert ask_chat(server.url + "/chat/completions", "m", "t", 4, 10, EvalError, "x", "y") == "2"
    assert server.requests == [("/v1/chat/completions", None)]


def test_t1_a_redirect_does_not_carry_the_key_elsewhere(keyed, monkeypatch):
    """Item 1: urllib followed redirects with the Authorization header (a 302 from an allowed host)."""
    from llm_unlearn.openai_chat import ask_chat

    elsewhere = _Server()
    allowed = _Server(redirect_to=elsewhere.url + "/chat/completions")
    try:
        monkeypatch.setenv("LLM_UNLEARN_JUDGE_URL", allowed.url)
        with pytest.raises(EvalError, match="302"):
            ask_chat(allowed.url + "/chat/completions", "m", "t", 4, 10, EvalError, "judge endpoint", "")
        assert allowed.requests == [("/v1/chat/completions", f"Bearer {KEY}")]
        assert elsewhere.requests == []
    finally:
        allowed.close()
        elsewhere.close()


def test_t1_cli_refuses_a_recipe_endpoint_before_any_stage(tmp_path, tiny_model_dir, server, keyed):
    """Item 1 through the CLI: `run --dry-run` refuses at once; with --judge-url naming it, it is accepted."""
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"enabled": True, "judge": f"openai:{server.url}",
                                                          "judge_model": "gpt-x"})
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run")
    assert_exit_2(proc, "eval.judge", "LLM_UNLEARN_JUDGE_URL")
    proc = run_cli("run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run", "--judge-url", server.url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert server.requests == []


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
