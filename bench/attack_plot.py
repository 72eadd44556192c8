#!/usr/bin/env python
"""Every attack's recovery for several unlearned models side by side, read from finished attacks (no model runs).

    python bench/attack_plot.py --suite sherlock_holmes --out docs/img/sherlock_attacks.png \\
        --setting "demo (LoRA)=runs/attack_demo,runs/attack_icl_demo" \\
        --setting "QA MLP + collapse, lr 2e-3=runs/attack_qamlp_cir_2e-3,runs/attack_icl_qamlp_cir_2e-3"

A setting is ``LABEL=DIR[,DIR...]``: the ``llm-unlearn attack --out`` folders of one model (their ``attack.json``);
an attack found in two folders of one setting is an error (which one to plot is not guessed). Bars: the recovery of
completion familiarity and of P(target) on the suite's scored items with their 95% bootstrap intervals, one group per
attack row (``relearn heldout-20``, ``in_context k=3``, ...), absent where that model was not attacked so. Dashed
lines: the goals of the robustness protocol (at most 0.5 under relearning and in-context examples, 0.1 under the
base file's own quantization). The axis runs from -1 to 2: wider intervals run off it. ``--json FILE`` writes the
plotted numbers, interval ends included.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MEASURES = (("familiarity", "completion familiarity"), ("prob", "P(target)"))
GOALS = {"relearn": 0.5, "in_context": 0.5, "quantization": 0.1}


class PlotInputError(ValueError):
    """A setting or an attack folder the plot cannot read; the message says what to fix."""


def parse_setting(text: str) -> tuple[str, list[Path]]:
    label, sep, dirs = text.partition("=")
    if not sep or not label.strip() or not dirs.strip():
        raise PlotInputError(f"--setting {text!r}: write LABEL=DIR[,DIR...] (the attack folders of one model)")
    return label.strip(), [Path(d.strip()) for d in dirs.split(",") if d.strip()]


def collect(settings: list[tuple[str, list[Path]]], suite: str) -> dict:
    """{label: {"attack variant": {measure: {recovery, ci_low, ci_high, n}}}} for the suite's rows."""
    out: dict[str, dict] = {}
    for label, dirs in settings:
        rows: dict[str, dict] = {}
        for folder in dirs:
            path = folder / "attack.json"
            if not path.is_file():
                raise PlotInputError(f"{path}: not found; give the --out folder of a finished `llm-unlearn attack`")
            doc = json.loads(path.read_text())
            if not str(doc.get("schema", "")).startswith("llm-unlearn-attack/"):
                raise PlotInputError(f"{path}: not an llm-unlearn attack result (schema {doc.get('schema')!r})")
            for result in doc.get("results", []):
                if result.get("suite") != suite or not result.get("recovery"):
                    continue
                name = f"{result['attack']} {result['variant']}"
                if name in rows:
                    raise PlotInputError(f"setting {label!r}: '{name}' is in two of its folders ({folder} and an "
                                         f"earlier one); give each attack once")
                rows[name] = {key: {k: result["recovery"][key].get(k) for k in ("recovery", "ci_low", "ci_high", "n")}
                              for key, _ in MEASURES if result["recovery"].get(key)}
        if not rows:
            raise PlotInputError(f"setting {label!r}: no attack rows for suite {suite!r} in {', '.join(map(str, dirs))}")
        out[label] = rows
    return out


def plot(data: dict, suite: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = sorted({a for rows in data.values() for a in rows}, key=lambda a: (list(GOALS).index(a.split()[0])
                                                                              if a.split()[0] in GOALS else 9, a))
    labels = list(data)
    width = 0.8 / len(labels)
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(6 + 1.6 * len(attacks), 4.5), sharey=True)
    for ax, (key, title) in zip(axes, MEASURES, strict=True):
        for i, label in enumerate(labels):
            xs, ys, lo, hi = [], [], [], []
            for j, attack in enumerate(attacks):
                cell = data[label].get(attack, {}).get(key)
                if not cell or cell.get("recovery") is None:
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(cell["recovery"])
                lo.append(cell["recovery"] - (cell["ci_low"] if cell["ci_low"] is not None else cell["recovery"]))
                hi.append((cell["ci_high"] if cell["ci_high"] is not None else cell["recovery"]) - cell["recovery"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=label)
            for x, y in zip(xs, ys, strict=True):  # the value itself: a recovery of 0.00 has no visible bar
                ax.annotate(f"{y:+.2f}", (x, 0), xytext=(0, -3 if y >= 0 else 3), textcoords="offset points",
                            ha="center", va="top" if y >= 0 else "bottom", rotation=90, fontsize=6)
        for j, attack in enumerate(attacks):
            goal = GOALS.get(attack.split()[0])
            if goal is not None:
                ax.hlines(goal, j - 0.45, j + 0.45, colors="k", linestyles="dashed", linewidth=1)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.axhline(1, color="grey", linewidth=0.8, linestyle="dotted")
        ax.set_xticks(range(len(attacks)), [a.replace(" (base file)", "") for a in attacks], rotation=15)
        ax.set_title(f"{suite}: recovery of {title}")
        ax.set_ylim(-1.0, 2.0)  # wider intervals run off the axis (their ends are in --json)
    axes[0].set_ylabel("recovery (0 = as unlearned, 1 = back to base)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=min(len(labels), 3), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 * ((len(labels) + 2) // 3), 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", action="append", required=True, help="LABEL=DIR[,DIR...] (repeat per model)")
    ap.add_argument("--suite", default="sherlock_holmes", help="the suite whose rows are plotted")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--json", help="also write the plotted numbers here")
    args = ap.parse_args(argv)
    try:
        data = collect([parse_setting(s) for s in args.setting], args.suite)
    except (PlotInputError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plot(data, args.suite, Path(args.out))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
