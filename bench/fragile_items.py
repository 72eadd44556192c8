#!/usr/bin/env python
"""Which completion items a run lost, against how firmly the base model knew them (issue #16).

    python bench/fragile_items.py paper=runs/sherlock_smollm2 "target tokens=runs/spec_a20_noletters" \\
        --suite eval/control --out bench/results/control_fragile        # about 1 minute: .json and .md

For each completion prompt of the suite, the base model's *margin*: the log-probability of the first token of the
prompt's best reference (" Poirot") minus that of the most likely other token, after the prompt. A margin near or
below 0 is a near tie: the base model's greedy answer names the reference by a hair, and any fine-tune, on any text,
can tip it. For every run (``label=run_dir``, a finished run whose ``eval/eval.json`` has the suite for its base and
unlearned models), the items the base model answers at grade 3 and the unlearned model no longer does, split into
firm (margin >= ``--firm``) and near-tie items.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import labelled_runs, run_eval_doc  # noqa: E402
from llm_unlearn.evaluation.familiarity import FIRM_MARGIN, reference_margins  # noqa: E402
from llm_unlearn.evaluation.suites import load_suite  # noqa: E402
from llm_unlearn.models import load_model  # noqa: E402
from llm_unlearn.runio import atomic_write_json, atomic_write_text  # noqa: E402


def margins(model, tokenizer, suite) -> dict[str, float | None]:
    """Prompt id -> the base model's margin (nats) for the first token of its best reference after the prompt (the
    evaluation's own :func:`~llm_unlearn.evaluation.familiarity.reference_margins`, for runs evaluated before it
    recorded them)."""
    values = reference_margins(model, tokenizer, [p.prompt for p in suite.completion],
                               [p.references for p in suite.completion])
    return dict(zip((p.id for p in suite.completion), values, strict=True))


def lost_items(run_dir: Path, suite_name: str) -> tuple[list[str], list[str]]:
    """(ids the base answers at grade 3, ids among them the unlearned model no longer answers at grade 3)."""
    path, doc = run_eval_doc(run_dir)
    models = doc["models"]
    try:
        base, unl = (models[m]["suites"][suite_name]["completion"]["items"] for m in ("base", "unlearned"))
    except KeyError as exc:
        raise SystemExit(f"error: {path} lacks the suite {suite_name!r} for its base and unlearned models") from exc
    known = [b["id"] for b in base if b["grade"] >= 3]
    grade = {u["id"]: u["grade"] for u in unl}
    return known, [i for i in known if grade.get(i, 0) < 3]


def summarise(margin: dict[str, float], runs: dict[str, tuple[list[str], list[str]]], firm: float) -> dict:
    out = {"firm_margin": firm, "runs": {}}
    for label, (known, lost) in runs.items():
        firm_ids = [i for i in known if margin[i] >= firm]
        tie_ids = [i for i in known if margin[i] < firm]
        out["runs"][label] = {"known": len(known), "lost": len(lost),
                              "firm": len(firm_ids), "firm_lost": sum(i in lost for i in firm_ids),
                              "near_tie": len(tie_ids), "near_tie_lost": sum(i in lost for i in tie_ids),
                              "lost_items": {i: margin[i] for i in lost}}
    return out


def markdown(doc: dict, prompts: dict[str, str]) -> str:
    firm = doc["firm_margin"]
    lines = [f"Suite `{doc['suite']}`: items the base model answers with the reference (grade 3), split by its margin "
             f"for the reference's first token (firm: >= {firm:g} nats).", "",
             "| run | grade-3 items lost | firm items lost | near-tie items lost |", "|---|---|---|---|"]
    for label, r in doc["runs"].items():
        lines.append(f"| {label} | {r['lost']} of {r['known']} | {r['firm_lost']} of {r['firm']} | "
                     f"{r['near_tie_lost']} of {r['near_tie']} |")
    counts: dict[str, int] = {}
    for r in doc["runs"].values():
        for i in r["lost_items"]:
            counts[i] = counts.get(i, 0) + 1
    if counts:
        lines += ["", "Lost items (runs that lost it, base margin):", ""]
        lines += [f"- {i} ({n} of {len(doc['runs'])}, margin {doc['margins'][i]:+.2f}): `{prompts[i]}`"
                  for i, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--suite", type=Path, default=Path("eval/control"), help="suite folder (default: eval/control)")
    parser.add_argument("--model", default="smollm2-135m", help="the runs' base model spec")
    parser.add_argument("--firm", type=float, default=FIRM_MARGIN, help="margin (nats) from which an item counts as firm")
    parser.add_argument("--out", type=Path, required=True, help="output path prefix (.json and .md are written)")
    args = parser.parse_args(argv)
    runs = labelled_runs(args.runs)
    suite = load_suite(args.suite)
    found = {label: lost_items(path, suite.name) for label, path in runs.items()}
    model, tokenizer = load_model(args.model, dtype="float32")  # margins of near ties: no bf16 rounding
    margin = margins(model.eval(), tokenizer, suite)
    doc = {"suite": suite.name, "model": args.model, **summarise(margin, found, args.firm), "margins": margin}
    prompts = {p.id: p.prompt for p in suite.completion}
    atomic_write_json(args.out.with_suffix(".json"), doc)
    atomic_write_text(args.out.with_suffix(".md"), markdown(doc, prompts))
    print(markdown(doc, prompts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
