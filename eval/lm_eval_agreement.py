#!/usr/bin/env python
"""Check the built-in benchmark scorer against lm-evaluation-harness on the same items, offline.

For each task, the first N items of the bundled benchmark file (``llm_unlearn/data/benchmarks``) are evaluated twice:

1. by lm-eval itself (``simple_evaluate`` with its ``hf`` model loading the model folder on its own), through
   local-file tasks that ``include`` lm-eval's own task YAMLs and only swap the dataset for the local items
   (converted back to the original Hub schema; see ``llm_unlearn.evaluation.lm_eval_bridge``);
2. by llm-unlearn's built-in scorer (``llm_unlearn.evaluation.benchmarks``).

It prints a table of acc / acc_norm side by side with the difference in points, item-level agreement of the
predictions, whether the (context, continuation) requests are identical, and the largest log-likelihood
difference, and writes the numbers to JSON (and optionally a markdown record). Exit status 1 when a task
differs by more than ``--tolerance`` points.

    python eval/lm_eval_agreement.py                        # SmolLM2-135M, 200 items per task
    python eval/lm_eval_agreement.py --limit 50 --tasks arc_easy,piqa
    python eval/lm_eval_agreement.py --md docs/lm_eval_agreement.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# Offline by construction: lm-eval must read only the local files written below.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llm_unlearn.config.datadir import default_benchmark_dir  # noqa: E402
from llm_unlearn.evaluation.benchmarks import BENCHMARK_FILES, LM_EVAL_METRICS, load_benchmark, score_benchmark  # noqa: E402
from llm_unlearn.evaluation.lm_eval_bridge import LOCAL_PREFIX, write_local_tasks  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="llm-unlearn model spec (default smollm2-135m)")
    p.add_argument("--tasks", default=",".join(BENCHMARK_FILES), help="comma list (default: all six)")
    p.add_argument("--limit", type=int, default=200, help="first N items of each task (default 200)")
    p.add_argument("--limits", default="", help="per-task overrides, e.g. boolq=100,hellaswag=100")
    p.add_argument("--benchmark-dir", help="default: the bundled benchmarks (llm_unlearn/data/benchmarks)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 helps on a busy machine)")
    p.add_argument("--tolerance", type=float, default=0.5, help="allowed |difference| in accuracy points")
    p.add_argument("--out", default=str(REPO / "eval_out" / "lm_eval_agreement.json"), help="JSON results")
    p.add_argument("--md", help="also write a markdown record here (e.g. docs/lm_eval_agreement.md)")
    return p.parse_args(argv)


def run_lm_eval(folder: str, tasks: list[str], data_dir: Path, limits: dict, batch_size: int, work: Path) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    names = write_local_tasks(tasks, data_dir, work, limits)
    tm = TaskManager(include_path=str(work), include_defaults=False)
    res = simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32", tasks=names, task_manager=tm,
                          batch_size=batch_size, device="cpu", log_samples=True, num_fewshot=0)
    out = {}
    for task, name in zip(tasks, names, strict=True):
        metrics = {k.split(",")[0]: v for k, v in res["results"][name].items() if isinstance(v, (int, float))}
        samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
        items = []
        for smp in samples:
            # resps: one [(loglikelihood, is_greedy)] per request (choice)
            lls = [float(r[0][0]) for r in smp["resps"]]
            items.append({"args": _args_list(smp["arguments"]), "lls": lls, "acc": float(smp["acc"]),
                          "acc_norm": float(smp["acc_norm"]) if "acc_norm" in smp else None})
        out[task] = {"metrics": metrics, "items": items}
    return out


def _args_list(arguments) -> list[list[str]]:
    """lm-eval logs request arguments as a list of tuples, or a dict gen_args_i -> {arg_0, arg_1}."""
    if isinstance(arguments, dict):
        rows = []
        for v in arguments.values():
            rows.append([v["arg_0"], v["arg_1"]] if isinstance(v, dict) else list(v))
        return rows
    return [list(a) for a in arguments]


def main(argv=None) -> int:
    args = parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    limits = {t: args.limit for t in tasks}
    for part in filter(None, args.limits.split(",")):
        k, v = part.split("=")
        limits[k.strip()] = int(v)
    data_dir = Path(args.benchmark_dir) if args.benchmark_dir else default_benchmark_dir()
    if not data_dir.is_dir():
        print(f"benchmark folder not found: {data_dir} (pass --benchmark-dir)", file=sys.stderr)
        return 2

    import lm_eval
    import torch
    import transformers

    from llm_unlearn.models import load_model, materialize

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = materialize(args.model)[1]
    print(f"model {args.model} -> {folder}; tasks {tasks}; items {limits}", flush=True)

    with tempfile.TemporaryDirectory(prefix="llmu-lm-eval-") as tmp:
        t0 = time.perf_counter()
        theirs = run_lm_eval(folder, tasks, data_dir, limits, args.batch_size, Path(tmp))
        t_lm_eval = time.perf_counter() - t0

    model, tok = load_model(args.model, dtype="float32", device="cpu")
    ours, t_ours = {}, 0.0
    for task in tasks:
        items = load_benchmark(task, data_dir, limits[task])
        t0 = time.perf_counter()
        res = score_benchmark(model, tok, task, items, batch_size=args.batch_size, return_logprobs=True)
        t_ours += time.perf_counter() - t0
        ours[task] = (items, res)

    rows, report, worst = [], {}, 0.0
    for task in tasks:
        items, res = ours[task]
        th = theirs[task]["items"]
        n = len(items)
        same_requests = all([list(p) for p in it.pairs()] == t["args"] for it, t in zip(items, th, strict=True))
        # per-choice log-likelihoods, to report how close the two computations are
        max_ll_diff = max(abs(mine - ll) for lps, t in zip(res["logprobs"], th, strict=True)
                          for mine, ll in zip(lps, t["lls"], strict=True))
        entry = {"n": n, "requests_identical": same_requests, "max_abs_loglik_diff": max_ll_diff}
        for metric in LM_EVAL_METRICS[task]:
            mine = res["correct"] if metric == "acc" else res["correct_norm"]
            agree = sum(int(a == int(t[metric])) for a, t in zip(mine, th, strict=True)) / n
            a_ours, a_theirs = res[metric], theirs[task]["metrics"][metric]
            diff = 100 * (a_ours - a_theirs)
            worst = max(worst, abs(diff))
            entry[metric] = {"ours": a_ours, "lm_eval": a_theirs, "diff_points": diff,
                             "ours_stderr": res.get(f"{metric}_stderr"),
                             "lm_eval_stderr": theirs[task]["metrics"].get(f"{metric}_stderr"), "items_agreeing": agree}
            rows.append([task, metric, n, f"{100 * a_theirs:.2f}", f"{100 * a_ours:.2f}", f"{diff:+.2f}",
                         f"{100 * agree:.1f}%", "yes" if same_requests else "NO", f"{max_ll_diff:.1e}"])
        report[task] = entry

    header = ["task", "metric", "items", "lm-eval", "llm-unlearn", "diff (points)", "same item outcome",
              "same requests", "max abs Δ loglik"]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
                      ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])
    ok = worst <= args.tolerance
    env = {"model": args.model, "model_folder": folder, "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "?",
           "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads", "limits": limits,
           "seconds_lm_eval": round(t_lm_eval, 1), "seconds_llm_unlearn": round(t_ours, 1)}
    try:
        import importlib.metadata

        env["lm_eval"] = importlib.metadata.version("lm_eval")
    except Exception:  # pragma: no cover
        pass
    print()
    print(table)
    print(f"\nworst difference {worst:.2f} points (tolerance {args.tolerance}): {'OK' if ok else 'FAIL'}")
    print(f"lm-eval {t_lm_eval:.0f} s (incl. its model load), llm-unlearn scorer {t_ours:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ok": ok, "worst_diff_points": worst, "tolerance": args.tolerance, "env": env,
                               "tasks": report}, indent=2) + "\n")
    print(f"wrote {out}")
    if args.md:
        cmd = "python eval/lm_eval_agreement.py " + " ".join(argv if argv is not None else sys.argv[1:])
        md = Path(args.md)
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(MD.format(cmd=cmd.strip(), table=table, worst=worst, tol=args.tolerance,
                                verdict="within" if ok else "NOT within", env=json.dumps(env, indent=2),
                                prefix=LOCAL_PREFIX))
        print(f"wrote {md}")
    return 0 if ok else 1


MD = """# Built-in benchmark scorer vs lm-evaluation-harness

The built-in scorer (`llm_unlearn/evaluation/benchmarks.py`, used by `llm-unlearn eval --benchmarks ...`) must
give the accuracies lm-evaluation-harness gives on the same items. This page records the check, made with

    {cmd}

## How

- Items: the first N items of each bundled file in `llm_unlearn/data/benchmarks` (same items for both).
- lm-eval side: `lm_eval.simple_evaluate(model="hf", model_args="pretrained=<folder>,dtype=float32", ...)`, zero-shot,
  with local-file tasks (`{prefix}<task>`) whose YAML `include`s lm-eval's own task file (`arc/arc_easy.yaml`,
  `piqa/piqa.yaml`, `super_glue/boolq/default.yaml`, `winogrande/default.yaml`, `hellaswag/hellaswag.yaml`) and only
  replaces the dataset by a local JSON file: each shared item converted back to the original Hub schema. So lm-eval
  uses its own prompt templates, choices, target delimiter and metrics. Offline: `HF_HUB_OFFLINE=1`,
  `HF_DATASETS_OFFLINE=1`. lm-eval loads the model folder itself.
- llm-unlearn side: `load_benchmark` + `score_benchmark` on the same files (shared-prefix KV-cache scoring).
- "same requests": every (context, continuation) pair lm-eval built equals ours, character for character.
- "same item outcome": share of items where both are right or both are wrong.
- "max abs Δ loglik": the largest difference of a choice's log-likelihood (float32 arithmetic, different batching).

## Result

{table}

Worst difference: {worst:.2f} points, {verdict} the {tol} point tolerance.

Known data difference (not a scorer difference): the shared HellaSwag file has the context as one line, so the
`ctx_b.capitalize()` of lm-eval's `process_docs` cannot be applied to the real Hub data's second context part;
both sides here read the same line, so they agree, but HellaSwag numbers on these files can differ slightly from
lm-eval's on the Hub dataset.

## Environment

Seconds are wall-clock on this machine; lm-eval's include loading the model and preparing its datasets.

```json
{env}
```
"""

if __name__ == "__main__":
    sys.exit(main())
