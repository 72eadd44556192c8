"""Built-in benchmark scorer: every shared format parsed and scored, prompts identical to lm-eval's, metrics
as lm-eval computes them, and clear errors for missing or malformed files."""

from __future__ import annotations

import bz2
import importlib.util
import json
import math

import pytest

from llm_unlearn.errors import EvalError
from llm_unlearn.evaluation import benchmarks as B
from llm_unlearn.evaluation.scoring import Choice
from tests.conftest import DATA, data_path

TASKS = list(B.BENCHMARK_FILES)
BENCH_DIR = DATA / "benchmarks"


@pytest.fixture()
def synthetic_dir(tmp_path):
    """One tiny file per format, written in the shared data's formats."""
    arc = [{"query": "Question: What is 2+2?", "choices": ["3", "4", "5", "22"], "gold": 1},
           {"query": "Question: Which is a planet?", "choices": ["Mars", "Moon", "Sun"], "gold": 0}]
    for name in ("arc_easy", "arc_challenge"):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(x) for x in arc) + "\n")
    (tmp_path / "piqa.jsonl").write_text(json.dumps(
        {"query": "Question: How do I boil water?\n", "choices": ["Heat it.", "Freeze it."], "gold": 0}) + "\n")
    (tmp_path / "boolq.jsonl").write_text(json.dumps(
        {"query": "Passage: The sky is blue.\nQuestion: is the sky blue?", "choices": ["no", "yes"], "gold": 1}) + "\n")
    (tmp_path / "winogrande.jsonl").write_text(json.dumps(
        {"context_options": ["The cup fell off the table because the cup", "The cup fell off the table because the table"],
         "continuation": "was tilted.", "gold": 1}) + "\n")
    hs = "Baking: A man puts a cake [title] in the oven. he\n2\nsings.\ndances.\nwaits for it to bake.\nflies.\n"
    with bz2.open(tmp_path / "hellaswag_val.txt.bz2", "wt", encoding="utf-8") as fh:
        fh.write(hs)
    return tmp_path


def test_synthetic_formats_become_lm_eval_prompts(synthetic_dir):
    arc = B.load_benchmark("arc_easy", synthetic_dir)
    assert arc[0].contexts == ["Question: What is 2+2?\nAnswer:"] * 4
    assert arc[0].continuations == [" 3", " 4", " 5", " 22"] and arc[0].gold == 1
    assert arc[0].norm_lengths == [1.0, 1.0, 1.0, 2.0]  # characters of the choice, without the delimiter
    assert len(arc[1].continuations) == 3  # any number of choices
    piqa = B.load_benchmark("piqa", synthetic_dir)[0]
    assert piqa.contexts[0] == "Question: How do I boil water?\nAnswer:"
    boolq = B.load_benchmark("boolq", synthetic_dir)[0]
    assert boolq.contexts[0] == "The sky is blue.\nQuestion: is the sky blue?\nAnswer:"  # no "Passage: "
    assert boolq.continuations == [" no", " yes"]
    wino = B.load_benchmark("winogrande", synthetic_dir)[0]
    assert wino.contexts[1].endswith("because the table") and wino.continuations == [" was tilted."] * 2
    hs = B.load_benchmark("hellaswag", synthetic_dir)[0]
    assert hs.contexts[0] == "Baking: A man puts a cake. in the oven. he"  # lm-eval's [title] cleanup
    assert hs.gold == 2 and hs.continuations[2] == " waits for it to bake."


def test_limit_and_task_names(synthetic_dir):
    assert len(B.load_benchmark("arc_easy", synthetic_dir, limit=1)) == 1
    assert B.parse_benchmark_list("arc_easy, PIQA,arc-challenge") == ["arc_easy", "piqa", "arc_challenge"]
    assert B.parse_benchmark_list("all") == TASKS
    with pytest.raises(EvalError, match="unknown benchmark"):
        B.parse_benchmark_list("arc_easy,mmlu")
    with pytest.raises(EvalError, match="limit must be >= 1"):
        B.load_benchmark("arc_easy", synthetic_dir, limit=0)


def test_missing_files_give_clear_errors(tmp_path, synthetic_dir):
    with pytest.raises(EvalError, match=r"benchmark 'piqa' needs .*piqa\.jsonl \(the folder .* does not exist\)"):
        B.load_benchmark("piqa", tmp_path / "nowhere")
    (synthetic_dir / "piqa.jsonl").unlink()
    with pytest.raises(EvalError, match=r"needs .*piqa\.jsonl\. Point --benchmark-dir"):
        B.load_benchmark("piqa", synthetic_dir)


@pytest.mark.parametrize("name, line, message", [
    ("arc_easy", "{oops", "not valid JSON"),
    ("arc_easy", json.dumps({"query": "Q", "choices": ["a", "b"], "gold": 5}), "'gold' must be an index"),
    ("arc_easy", json.dumps({"query": "Q", "choices": "ab", "gold": 0}), "'choices' must be a list"),
    ("boolq", json.dumps({"choices": ["no", "yes"], "gold": 0}), "'query' must be a non-empty string"),
    ("winogrande", json.dumps({"context_options": ["a"], "continuation": "x", "gold": 0}), "context_options"),
])
def test_malformed_lines(tmp_path, name, line, message):
    (tmp_path / B.BENCHMARK_FILES[name]).write_text(line + "\n")
    with pytest.raises(EvalError, match=message):
        B.load_benchmark(name, tmp_path)


def test_malformed_hellaswag(tmp_path):
    with bz2.open(tmp_path / "hellaswag_val.txt.bz2", "wt") as fh:
        fh.write("ctx\n7\na\nb\nc\nd\n")
    with pytest.raises(EvalError, match="gold index 0-3"):
        B.load_benchmark("hellaswag", tmp_path)
    with bz2.open(tmp_path / "hellaswag_val.txt.bz2", "wt") as fh:
        fh.write("ctx\n1\na\nb\n")
    with pytest.raises(EvalError, match="not a multiple of 6"):
        B.load_benchmark("hellaswag", tmp_path)
    (tmp_path / "hellaswag_val.txt.bz2").write_bytes(b"not bzip2")
    with pytest.raises(EvalError, match="cannot read as bzip2"):
        B.load_benchmark("hellaswag", tmp_path)


def test_acc_and_acc_norm_rules(monkeypatch):
    """acc = argmax of summed log-likelihood; acc_norm = argmax of log-likelihood / characters (lm-eval)."""
    items = [B.MCItem(["q"] * 2, [" a", " bbbbbbbbbb"], 1, [1.0, 10.0]),  # acc picks 0, acc_norm picks 1
             B.MCItem(["q"] * 2, [" a", " b"], 0, [1.0, 1.0])]
    lls = [[-2.0, -5.0], [-1.0, -3.0]]
    monkeypatch.setattr(B, "score_items", lambda m, t, pairs, **kw: [[Choice(x, False, 1, 1, [x]) for x in row] for row in lls])
    res = B.score_benchmark(None, None, "arc_easy", items)
    assert res["correct"] == [0, 1] and res["correct_norm"] == [1, 1]
    assert res["acc"] == 0.5 and res["acc_norm"] == 1.0
    assert res["acc_stderr"] == pytest.approx(math.sqrt(0.5 * 0.5 * 2 / 1 / 2))  # sample std (ddof=1) / sqrt(n)
    # lm-eval reports only acc for BoolQ / WinoGrande
    assert "acc_norm" not in B.score_benchmark(None, None, "boolq", items)


@pytest.mark.parametrize("task", TASKS)
def test_real_items_parsed_and_scored(task, tiny_llama):
    data_path("benchmarks", B.BENCHMARK_FILES[task])
    model, tok = tiny_llama
    items = B.load_benchmark(task, BENCH_DIR, limit=4)
    assert len(items) == 4
    for it in items:
        assert len(it.contexts) == len(it.continuations) >= 2 and 0 <= it.gold < len(it.continuations)
        assert all(c.startswith(" ") for c in it.continuations)
    res = B.score_benchmark(model, tok, task, items, batch_size=4, progress=False)
    assert res["n"] == 4 and len(res["correct"]) == 4 and 0 <= res["acc"] <= 1
    assert set(res["metrics"]) == set(B.LM_EVAL_METRICS[task])


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed")
def test_requests_identical_to_lm_eval(tmp_path):
    """lm-eval itself, reading the same items through its own task YAMLs, builds exactly our requests."""
    data_path("benchmarks")
    from llm_unlearn.evaluation.lm_eval_bridge import lm_eval_requests

    n = 40
    theirs = lm_eval_requests(TASKS, BENCH_DIR, n, tmp_path / "tasks")
    for task in TASKS:
        ours = B.load_benchmark(task, BENCH_DIR, limit=n)
        assert len(theirs[task]) == len(ours) == n
        for i, (o, t) in enumerate(zip(ours, theirs[task], strict=True)):
            assert o.pairs() == t["pairs"], f"{task} item {i}"
            assert o.gold == t["gold"], f"{task} item {i}"


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed")
def test_agreement_script_on_a_tiny_model(tmp_path, tiny_model_dir):
    """eval/lm_eval_agreement.py end to end (lm-eval loads the model folder itself): a random model's
    accuracies must agree exactly with lm-eval's on the same items."""
    data_path("benchmarks")
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "eval" / "lm_eval_agreement.py"
    spec = importlib.util.spec_from_file_location("lm_eval_agreement", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "agree.json"
    rc = mod.main(["--model", str(tiny_model_dir), "--tasks", "arc_easy,winogrande", "--limit", "6",
                   "--batch-size", "4", "--out", str(out), "--md", str(tmp_path / "agree.md")])
    res = json.loads(out.read_text())
    assert rc == 0 and res["ok"]
    for task in ("arc_easy", "winogrande"):
        assert res["tasks"][task]["requests_identical"]
        assert res["tasks"][task]["acc"]["diff_points"] == 0
        assert res["tasks"][task]["max_abs_loglik_diff"] < 1e-3
    assert "| arc_easy | acc | 6 |" in (tmp_path / "agree.md").read_text()
