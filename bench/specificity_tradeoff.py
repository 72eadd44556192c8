#!/usr/bin/env python
"""Forgetting against collateral damage across finished runs (issue #16): one point per run.

    python bench/specificity_tradeoff.py paper=runs/sherlock_smollm2 "target tokens=runs/spec_rise_a20" \\
        --out docs/img/specificity_tradeoff.png

Each RUN is ``label=run_dir`` (a finished run with ``eval/eval.json``, its base and unlearned models evaluated on the
same items). For every run: the target suite's completion familiarity, its grade >= 2 share and P(target), and the
control suite's completion familiarity and probability, each as % of the same run's base model; plus WikiText-2
perplexity change. Writes the plot (x: control completion familiarity kept; y: target completion familiarity left,
and in a second panel the share of answers that name something of the target; the issue's goal region shaded), and beside it ``<out>.json`` and ``<out>.md`` with the numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import run_eval_doc  # noqa: E402
from llm_unlearn.evaluation.report import changes_vs_base, flat_summary  # noqa: E402
from llm_unlearn.runio import atomic_write_json, atomic_write_text, save_figure  # noqa: E402

COLUMNS = [("target familiarity", "familiarity/{t} %base"), ("target grade >= 2", "frac_ge2/{t} %base"),
           ("target P", "prob/{t} %base"), ("control familiarity", "familiarity/{c} %base"),
           ("control P", "prob/{c} %base"), ("WikiText-2 ppl", "ppl/wikitext %change")]


def run_point(run_dir: Path, target: str, control: str) -> dict[str, float]:
    """The run's unlearned model against its base, in % of base (perplexity: % change)."""
    path, doc = run_eval_doc(run_dir)
    flat = flat_summary(doc)
    if "base" not in flat or "unlearned" not in flat:
        raise SystemExit(f"error: {path} has no 'base' and 'unlearned' models (has: {', '.join(flat)})")
    change = changes_vs_base(flat["base"], flat["unlearned"])
    out = {}
    for name, key in COLUMNS:
        key = key.format(t=target, c=control)
        if key not in change:
            raise SystemExit(f"error: {path} lacks {key.split(' ')[0]}: evaluate the suites {target} and {control}")
        out[name] = round(change[key], 1)
    return out


def plot(points: dict[str, dict[str, float]], goal: tuple[float, float], out: Path) -> None:
    """Two panels, x = control completion familiarity kept: y = the target's completion familiarity (genre words
    count as grade 1), and y = its share of answers naming something of the target (grade >= 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    max_y, min_x = goal
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    xs = [p["control familiarity"] for p in points.values()]
    ys = [p[key] for p in points.values() for key in ("target familiarity", "target grade >= 2")]
    markers = "osD^vP*Xhp<>"
    for ax, key, title in ((axes[0], "target familiarity", "target completion familiarity (genre words = grade 1)"),
                           (axes[1], "target grade >= 2", "target answers naming the target (grade >= 2)")):
        ax.fill_between([min_x, 105], 0, max_y, color="tab:green", alpha=0.12, label="issue #16 goal")
        for i, (label, p) in enumerate(points.items()):
            ax.scatter(p["control familiarity"], p[key], s=55, marker=markers[i % len(markers)], label=label)
        ax.set_xlim(min(min(xs), min_x) - 3, 102)
        ax.set_ylim(min(min(ys), max_y) - 5, max(ys) + 5)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("% of base (lower = forgotten)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)  # beside: covers no point
    fig.supxlabel("control suite completion familiarity, % of base (higher = neighbours kept)")
    fig.suptitle("Forgetting vs collateral damage (one point per run)")
    save_figure(fig, out, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    ap.add_argument("--target", default="sherlock_holmes", help="the target's familiarity suite (name in eval.json)")
    ap.add_argument("--control", default="control", help="the neighbours' suite")
    ap.add_argument("--goal", nargs=2, type=float, default=(45.0, 90.0), metavar=("MAX_TARGET", "MIN_CONTROL"),
                    help="the goal region: target familiarity <= MAX_TARGET %% and control >= MIN_CONTROL %% of base")
    ap.add_argument("--out", type=Path, required=True, help="the plot (.png); .json and .md are written beside it")
    args = ap.parse_args(argv)
    points, dirs = {}, {}
    for item in args.runs:
        label, sep, run_dir = item.partition("=")
        if not sep or not label or not run_dir:
            ap.error(f"each run is LABEL=RUN_DIR, got {item!r}")
        points[label], dirs[label] = run_point(Path(run_dir), args.target, args.control), run_dir
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(points, tuple(args.goal), args.out)
    header = "| run | " + " | ".join(name for name, _ in COLUMNS) + " |"
    rows = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    rows += [f"| {label} | " + " | ".join(f"{p[name]:g}" for name, _ in COLUMNS) + " |" for label, p in points.items()]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(rows) + "\n")
    atomic_write_json(args.out.with_suffix(".json"),
                      {"runs": {label: {"dir": dirs[label], **p} for label, p in points.items()},
                       "goal": {"max_target": args.goal[0], "min_control": args.goal[1]}})
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
