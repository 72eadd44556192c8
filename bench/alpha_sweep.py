#!/usr/bin/env python
"""Sweep over the label alpha (and any other fine-tune setting): forgetting vs retained ability.

    python bench/alpha_sweep.py recipes/sherlock_smollm2.yaml --out runs/sweep --alphas 2.5 5 10
    python bench/alpha_sweep.py recipes/sherlock_smollm2.yaml --out runs/sweep --from-run runs/sherlock_smollm2
    python bench/alpha_sweep.py recipes/sherlock_smollm2.yaml --out runs/sweep --alphas 5 \\
        --variant guard=finetune.retain_weight=1.0 --set eval.limit=500

The stages up to the labels run once (labels for every alpha come from the same forward passes; by default the
recipe's alpha/2, alpha, 2*alpha), or are taken from a finished run of the same recipe (``--from-run``); each variant
(one per alpha, times each ``--variant``) gets its own run directory whose upstream stages are hard links to the
shared ones, then its own fine-tune and export. All models, and the base model once, are evaluated on the same
items by ``llm_unlearn.evaluation.evaluate`` (paired differences vs the base). Writes, in ``--out``:

- ``eval/``: eval.json, report.md and plots of every model;
- ``sweep.json`` and ``sweep.md``: one row per variant: forgetting (familiarity and P(target) as % of base) and
  retained ability (control suite, mean benchmark accuracy difference, WikiText-2 perplexity ratio);
- ``sweep.png``: forgetting vs retained ability across alpha.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_unlearn.config import Recipe  # noqa: E402
from llm_unlearn.pipeline import Pipeline  # noqa: E402
from llm_unlearn.runio import atomic_write_json, atomic_write_text, save_figure  # noqa: E402

UPSTREAM = ("corpus", "anchors", "reinforce", "labels")


def link_upstream(shared: Path, dest: Path, recipe: Recipe, upstream: tuple[str, ...] = UPSTREAM) -> None:
    """A variant's run directory: the ``upstream`` stages hard-linked from the shared run, manifest copied. The
    shared run's fine-tune and export are linked too when they are exactly the variant's (same fingerprints; a
    method without a fine-tune stage never takes them)."""
    dest.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((shared / "manifest.json").read_text())
    fps = Pipeline(recipe, dest, progress=False).fingerprints()
    stages = list(upstream) + [s for s in ("finetune", "export")
                               if s in fps and manifest["stages"].get(s, {}).get("status") == "done"
                               and manifest["stages"][s]["fingerprint"] == fps[s]]
    for stage in stages:
        if not (dest / stage).exists():
            shutil.copytree(shared / stage, dest / stage, copy_function=os.link)
    shared_stages = {s: manifest["stages"][s] for s in stages}
    if (dest / "manifest.json").exists():  # keep the variant's own finished stages (resume a sweep)
        own = json.loads((dest / "manifest.json").read_text())
        manifest["stages"] = {**own["stages"], **shared_stages}
    else:
        manifest["stages"] = shared_stages
    atomic_write_json(dest / "manifest.json", manifest)


def summarize(doc: dict, target_suite: str, control_suite: str | None) -> dict[str, dict]:
    """Per model: forgetting and retention numbers relative to the baseline."""
    from llm_unlearn.evaluation.report import changes_vs_base, flat_summary

    flat = flat_summary(doc)
    base = flat[doc["baseline"]]
    keys = [f"familiarity/{target_suite}", f"prob/{target_suite}", "ppl/wikitext"]
    keys += [f"familiarity/{control_suite}"] if control_suite else []
    out = {}
    for label, row in flat.items():
        change = changes_vs_base(base, row)
        r = {}
        for key in keys:
            if key in row:
                r[key] = row[key]
                for suffix in (" %base", " %change"):
                    if key + suffix in change:
                        r[key + suffix] = change[key + suffix]
        if "acc_mean" in change:
            r["benchmark_mean"] = change["acc_mean"]
            r["benchmark_diff_points"] = change["acc_mean points"]
        out[label] = r
    return out


def markdown(summary: dict, variants: dict, target: str, control: str | None) -> str:
    head = ["model", "alpha", "settings", "familiarity (% of base)", "P(target) (% of base)",
            "control familiarity (% of base)", "benchmarks mean acc (diff, points)", "WikiText-2 ppl (change)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in summary.items():
        v = variants.get(label, {})

        def pct(key, r=r):
            if key not in r:
                return "-"
            return f"{r[key]:.3f} ({r[key + ' %base']:.0f}%)" if key + " %base" in r else f"{r[key]:.3f}"
        bench = f"{r['benchmark_mean']:.3f} ({r['benchmark_diff_points']:+.1f})" if "benchmark_mean" in r else "-"
        ppl = f"{r['ppl/wikitext']:.2f} ({r['ppl/wikitext %change']:+.1f}%)" if "ppl/wikitext" in r else "-"
        lines.append("| " + " | ".join([label, str(v.get("alpha", "-")), " ".join(v.get("overrides", [])) or "-",
                                        pct(f"familiarity/{target}"), pct(f"prob/{target}"),
                                        pct(f"familiarity/{control}") if control else "-", bench, ppl]) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, variants: dict, target: str, control: str | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    groups: dict[str, list] = {}
    for label, v in variants.items():
        groups.setdefault(" ".join(v["overrides"]) or "recipe", []).append((v["alpha"], summary[label]))
    for name, pts in groups.items():
        pts.sort(key=lambda t: t[0])
        xs = [a for a, _ in pts]
        for key, style in ((f"familiarity/{target} %base", "o-"), (f"prob/{target} %base", "s--")):
            if all(key in r for _, r in pts):
                ax1.plot(xs, [r[key] for _, r in pts], style, label=f"{key.split('/')[0]} ({name})")
        for key, style in ((f"familiarity/{control} %base" if control else "", "o-"), ("ppl/wikitext %change", "^:"),
                           ("benchmark_diff_points", "s--")):
            if key and all(key in r for _, r in pts):
                ax2.plot(xs, [r[key] for _, r in pts], style, label=f"{key.split(' ')[0]} ({name})")
    ax1.axhline(25, color="grey", lw=0.8, ls=":")
    ax1.set(xscale="log", xlabel="label alpha", ylabel="% of base model (lower = more forgotten)",
            title=f"Forgetting: {target}")
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set(xscale="log", xlabel="label alpha", ylabel="% of base / % change / points",
            title="Retained ability")
    ticks = sorted({v["alpha"] for v in variants.values()})
    for ax in (ax1, ax2):
        ax.set_xticks(ticks, labels=[f"{a:g}" for a in ticks])
        ax.minorticks_off()
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--alphas", nargs="+", type=float, default=None,
                    help="label alphas (default: the recipe's labels.alphas, i.e. alpha/2, alpha, 2*alpha)")
    ap.add_argument("--from-run", type=Path, default=None,
                    help="a run of the same recipe whose stages up to the labels are finished: reuse them")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                    help="extra fine-tune settings, crossed with every alpha (default: the recipe alone)")
    ap.add_argument("--no-base-variant", action="store_true", help="with --variant: skip the plain recipe rows")
    ap.add_argument("--target-suite", default=None, help="suite of the target (default: the first eval suite)")
    ap.add_argument("--control-suite", default=None, help="suite of protected knowledge (default: the second)")
    ap.add_argument("--replot", action="store_true", help="only redraw sweep.png and sweep.md from sweep.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.replot:
        saved = json.loads((args.out / "sweep.json").read_text())
        target, control = saved.get("target_suite"), saved.get("control_suite")
        atomic_write_text(args.out / "sweep.md", markdown(saved["summary"], saved["variants"], target, control))
        plot(saved["summary"], saved["variants"], target, control, args.out / "sweep.png")
        return 0

    overrides = list(args.set)
    if args.alphas:
        alphas = sorted(args.alphas)
        overrides += [f"labels.alphas={alphas}", f"labels.alpha={alphas[len(alphas) // 2]}"]
    recipe = Recipe.from_yaml(args.recipe, overrides)
    alphas = recipe.label_alphas()
    shared = args.from_run or args.out / "shared"
    t0 = time.perf_counter()
    # never redoes a finished --from-run: a changed config is an error there (RunDirError), not an overwrite
    Pipeline(recipe, shared).run_stages(until="labels")
    timings = {"shared_stages_s": round(time.perf_counter() - t0, 1)}

    variant_sets = [] if args.no_base_variant and args.variant else [("", [])]
    for spec in args.variant:
        name, _, kvs = spec.partition("=")
        variant_sets.append((name, [kv for kv in kvs.split(",") if kv]))
    variants, models = {}, {"base": recipe.model.spec}
    for name, extra in variant_sets:
        for alpha in alphas:
            label = f"alpha {alpha:g}" + (f" {name}" if name else "")
            run_dir = args.out / label.replace(" ", "_")
            pick = [] if alpha == (recipe.finetune.label_alpha or recipe.labels.alpha) else [f"finetune.label_alpha={alpha}"]
            r = Recipe.from_yaml(args.recipe, overrides + pick + extra)
            link_upstream(shared, run_dir, r)
            t1 = time.perf_counter()
            manifest = Pipeline(r, run_dir).run_stages(until="export")
            timings[label] = round(time.perf_counter() - t1, 1)
            variants[label] = {"alpha": alpha, "overrides": extra, "run_dir": str(run_dir),
                               "finetune": manifest["stages"]["finetune"]["metrics"].get("best")}
            models[label] = str(run_dir / "export" / "model")

    from llm_unlearn.evaluation import evaluate

    suites = [Path(s).name for s in recipe.eval.suites]
    target = args.target_suite or (suites[0] if suites else "")
    control = args.control_suite or (suites[1] if len(suites) > 1 else None)
    from llm_unlearn.corpus import read_blocks

    blocks = read_blocks(shared / "corpus" / "blocks.jsonl")
    heldout = [blocks[i].text for i in json.loads((shared / "corpus" / "split.json").read_text())["validation"]]
    reuse = {}
    if args.from_run and (args.from_run / "eval" / "eval.json").exists():
        from llm_unlearn.evaluation.core import same_config

        earlier = json.loads((args.from_run / "eval" / "eval.json").read_text())
        if same_config(earlier, recipe.eval):  # the run's base, and its own model where a variant is that model
            reuse["base"] = earlier["models"]["base"]
            for label, v in variants.items():
                if (Path(v["run_dir"]) / "export").exists() and \
                        os.path.samefile(Path(v["run_dir"]) / "export" / "model" / "model.safetensors",
                                         args.from_run / "export" / "model" / "model.safetensors"):
                    reuse[label] = earlier["models"]["unlearned"]
    t1 = time.perf_counter()
    doc = evaluate(models, recipe.eval, args.out / "eval", target_heldout=heldout, baseline="base", reuse=reuse)
    timings["eval_s"] = round(time.perf_counter() - t1, 1)
    # suite names come from suite.yaml; map folder names to them
    names = [s["name"] for s in doc["suites"]]
    target = names[suites.index(target)] if target in suites else target
    control = names[suites.index(control)] if control in suites else control
    summary = summarize(doc, target, control)
    result = {"recipe": args.recipe, "overrides": overrides, "alphas": alphas, "variants": variants,
              "summary": summary, "timings": timings, "target_suite": target, "control_suite": control}
    atomic_write_json(args.out / "sweep.json", result)
    table = markdown(summary, variants, target, control)
    atomic_write_text(args.out / "sweep.md", table)
    plot(summary, variants, target, control, args.out / "sweep.png")
    print(table)
    print(f"wrote {args.out / 'sweep.json'}, sweep.md, sweep.png and eval/ ({timings})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
