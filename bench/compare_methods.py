#!/usr/bin/env python
"""Every unlearning method on the same data, steps and LoRA rank, each at its best rate on one learning-rate grid.

    python bench/compare_methods.py recipes/sherlock_smollm2.yaml --out runs/compare \\
        --from-run runs/sherlock_smollm2 --set finetune.epochs=1

Protocol (docs/results.md, "Method comparison"):

- Forget data: the recipe's target corpus blocks (one train / validation split, shared by all methods); retain
  data: the recipe's ``finetune.retain_corpus`` (WikiText-2 by default). Every method trains with the ``finetune``
  section's settings (LoRA rank, batch, epochs = the same number of optimizer steps); only the learning rate varies.
- Learning rates (rule CMP1): one grid for every method (``GRID``: 1e-4, 3e-4, 1e-3, 3e-3, 1e-2); a method is
  marked where the grid should be widened for it: chosen at the top rate within the perplexity bound ("at the grid's
  top": a higher rate might forget more within it), or at the bottom rate with no rate within the bound ("at the
  grid's bottom"). ``--lrs
  METHOD=a,b,c`` replaces a method's grid (the table then says the grids differ).
- Selection prompts (rule CMP2): every suite is split once, by item order, into a selection third (items 0, 3, 6,
  ...) and a report part (the rest); the learning rate is chosen on the selection prompts, and the reported numbers
  of the chosen models come from the report prompts only, which no choice saw.
- Selection rule (per method): among its learning rates whose WikiText-2 perplexity is at most
  ``--max-ppl-change`` percent above the base model's, the one that forgets most on the selection prompts (lowest
  mean of completion familiarity and P(target), as % of base); when none qualifies, the one with the smallest
  perplexity change (marked in the table).
- Steps (rule CMP3): the table gives each model's optimizer steps over all its training stages (WHP: reinforce plus
  fine-tune; a baseline: its unlearn stage). Checkpoints: one rule for every method, the lowest validation loss of
  its own loss on the held-out target blocks (``llm_unlearn.methods.unlearn``, ``llm_unlearn.whp.finetune``); the
  column "kept" says so.
- Evaluation: every model on the selection prompts, WikiText-2 and held-out target perplexity (``sweep/``), then
  the base and each method's chosen model on the report prompts and the benchmarks (``final/``), with the generic
  floor on the report prompts when the recipe asks for it (``eval.generic_floor``: the base model on the prompts
  with the target's names made generic by the shared anchor dictionary, the same floor for every method);
  ``--with-model LABEL=PATH`` adds other models (e.g. the demo's full-length WHP model) to both.

WHP's stages up to the labels come from ``--from-run`` (a finished run of the same recipe) or run once in
``OUT/shared``; every variant's run directory hard-links them (``bench.alpha_sweep.link_upstream``). Writes
``compare.json``, ``compare.md`` (tables) and ``compare.png`` (forgetting vs retained ability, one point per method)
in ``--out``. Re-running resumes: finished variants are not trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.alpha_sweep import UPSTREAM, link_upstream  # noqa: E402
from bench.alpha_sweep import summarize as sweep_summary  # noqa: E402
from llm_unlearn.config import Recipe  # noqa: E402
from llm_unlearn.evaluation.report import changes_vs_base, flat_summary  # noqa: E402
from llm_unlearn.methods import get_method, method_names  # noqa: E402
from llm_unlearn.pipeline import Pipeline  # noqa: E402
from llm_unlearn.rundir import RunPaths  # noqa: E402
from llm_unlearn.runio import atomic_write_json, atomic_write_text, save_figure  # noqa: E402

# CMP1: one LoRA learning-rate grid for every method (100x wide, around the rates where the methods move the
# target text in a few dozen LoRA steps; measured on the demo: one that stops at 3e-3 leaves WHP's, SimNPO's and
# RMU's choices at its top)
GRID = (1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2)
LEARNING_RATES = {m: GRID for m in ("whp", "grad_ascent", "grad_diff", "npo", "simnpo", "rmu")}
SELECT_EVERY = 3  # CMP2: items 0, 3, 6, ... of each suite choose the rate; the rest are reported


def split_suite(suite_dir: str | Path, out_root: Path) -> tuple[Path, Path]:
    """CMP2: (selection suite, report suite) folders under ``out_root`` with the suite's suite.yaml and its
    completion / probability items split by position; the two share no item."""
    import shutil

    src = Path(suite_dir)
    parts = {}
    for part in ("select", "report"):
        dst = out_root / part / src.name
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "suite.yaml", dst / "suite.yaml")
        parts[part] = dst
    for name in ("completion.jsonl", "probability.jsonl"):
        if not (src / name).is_file():
            continue
        lines = [ln for ln in (src / name).read_text(encoding="utf-8").splitlines() if ln.strip()]
        chosen = [ln for i, ln in enumerate(lines) if i % SELECT_EVERY == 0]
        rest = [ln for i, ln in enumerate(lines) if i % SELECT_EVERY != 0]
        atomic_write_text(parts["select"] / name, "".join(ln + "\n" for ln in chosen))
        atomic_write_text(parts["report"] / name, "".join(ln + "\n" for ln in rest))
    return parts["select"], parts["report"]


def training_steps(run_dir: Path) -> tuple[int | None, str]:
    """CMP3: (optimizer steps over every training stage of a run, which checkpoint it kept)."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return None, "-"
    stages = json.loads(path.read_text()).get("stages", {})
    total, seen = 0, False
    for name in ("reinforce", "finetune", "unlearn"):
        hist = ((stages.get(name) or {}).get("metrics") or {}).get("history") or []
        steps = [h.get("step") for h in hist if isinstance(h.get("step"), int)]
        if steps:
            total += max(steps)
            seen = True
    kept = "best validation"  # one checkpoint rule for every method (llm_unlearn.methods.unlearn)
    return (total if seen else None), kept


def forgetting_score(row: dict, target: str) -> float | None:
    """Mean of completion familiarity and P(target) as % of base (lower = more forgotten)."""
    keys = [f"familiarity/{target} %base", f"prob/{target} %base"]
    vals = [row[k] for k in keys if k in row]
    return sum(vals) / len(vals) if vals else None


def select(rows: dict[str, dict], target: str, max_ppl_change: float) -> tuple[str, bool]:
    """The label of the chosen learning rate among ``rows`` (label -> summary row) and whether it met the
    perplexity bound (rule in the module docstring)."""
    ok = {k: r for k, r in rows.items() if r.get("ppl/wikitext %change", float("inf")) <= max_ppl_change}
    if ok:
        return min(ok, key=lambda k: forgetting_score(ok[k], target)), True
    return min(rows, key=lambda k: rows[k].get("ppl/wikitext %change", float("inf"))), False


def summarize(doc: dict, suites: tuple[str, str | None]) -> dict[str, dict]:
    """Per model: the numbers relative to the baseline (alpha_sweep's summary plus held-out target perplexity)."""
    out = sweep_summary(doc, *suites)
    flat = flat_summary(doc)
    base = flat[doc["baseline"]]
    control = suites[1]
    for label, row in flat.items():
        change = changes_vs_base(base, row)
        extra = [k for k in row if k.startswith("ppl/") and k != "ppl/wikitext"]
        extra += [f"prob/{control}"] if control and f"prob/{control}" in row else []
        for key in extra:
            out[label][key] = row[key]
            for suffix in (" %change", " %base"):
                if key + suffix in change:
                    out[label][key + suffix] = change[key + suffix]
    return out


def add_benchmarks(summary: dict[str, dict], bench_doc: dict) -> None:
    """Merge the benchmark numbers of ``bench_doc`` (the chosen models' evaluation) into ``summary``."""
    for label, r in summarize(bench_doc, ("", None)).items():
        for key in ("benchmark_mean", "benchmark_diff_points"):
            if key in r:
                summary.setdefault(label, {})[key] = r[key]


def full_summary(out_dir: Path, target: str, control: str | None) -> dict[str, dict]:
    """The summary of every model from the saved evaluations: ``sweep/`` (suites, perplexities) and, when present,
    ``final/`` (benchmarks of the chosen models)."""
    summary = summarize(json.loads((out_dir / "sweep" / "eval.json").read_text()), (target, control))
    final = out_dir / "final" / "eval.json"
    if final.is_file():
        add_benchmarks(summary, json.loads(final.read_text()))
    return summary


def floor_rows(final_doc: dict, target: str) -> dict | None:
    """The generic floor of the target suite's report prompts (``final/eval.json``) beside every final model:
    per section (completion familiarity, P(target)), the translated prompts' count and floor / model -> score."""
    from llm_unlearn.whp.floor import section_scores

    suite = (final_doc.get("generic_floor") or {}).get(target)
    if not suite:
        return None
    out = {}
    for section, key in (("completion", "familiarity"), ("probability", "mean_prob")):
        sec = suite.get(section) or {}
        scores = {name: s.get(key) for name, s in section_scores(sec).items()}
        out[section] = {"prompts": sec.get("translated", 0), "scores": scores}
    return out


def edge_mark(lr: float, grid: list[float], within_bound: bool) -> str:
    """CMP1: where the grid should be widened for a method's chosen rate (module docstring), else ''."""
    if grid and lr == max(grid) and within_bound:
        return " (at the grid's top)"
    if grid and lr == min(grid) and not within_bound:
        return " (at the grid's bottom)"
    return ""


def _fmt(r: dict, key: str, unit: str = "%base") -> str:
    if key not in r:
        return "-"
    if unit == "%base":
        return f"{r[key]:.3f} ({r[key + ' %base']:.0f}%)" if key + " %base" in r else f"{r[key]:.3f}"
    if r[key] >= 1e5:  # a collapsed model: its perplexity's magnitude is what it says
        return f"{r[key]:.1e} (collapsed)"
    return f"{r[key]:.2f} ({r[key + ' %change']:+.1f}%)" if key + " %change" in r else f"{r[key]:.2f}"


def markdown(result: dict) -> str:
    target, control = result["target_suite"], result["control_suite"]
    summary, variants = result["summary"], result["variants"]
    head = ["method", "lr", "familiarity (% of base)", "P(target) (% of base)", "control familiarity (% of base)",
            "control P (% of base)", "WikiText-2 ppl", "held-out target ppl", "benchmarks mean (diff, points)",
            "train s", "steps (all stages)", "kept"]

    def line(method: str, lr: str, r: dict, v: dict | None) -> str:
        v = v or {}
        bench = f"{r['benchmark_mean']:.3f} ({r['benchmark_diff_points']:+.1f})" if "benchmark_mean" in r else "-"
        seconds = v.get("train_seconds")
        return "| " + " | ".join([method, lr, _fmt(r, f"familiarity/{target}"), _fmt(r, f"prob/{target}"),
                                  _fmt(r, f"familiarity/{control}"), _fmt(r, f"prob/{control}"),
                                  _fmt(r, "ppl/wikitext", "%change"), _fmt(r, "ppl/target_heldout", "%change"),
                                  bench, f"{seconds:.0f}" if seconds is not None else "-",
                                  str(v.get("steps", "-")), v.get("kept", "-")]) + " |"

    reported = result.get("reported") or summary
    grids = {tuple(v) for v in result.get("learning_rates", {}).values()}
    out = ["Chosen learning rate per method, scored on the report prompts (which no choice saw; benchmarks for "
           "these only):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out.append(line("base model", "-", reported.get("base", {}), None))
    for method, label in result["chosen"].items():
        v = variants[label]
        mark = "" if result["chosen_within_bound"][method] else " (no lr within the ppl bound)"
        mark += edge_mark(v["lr"], result.get("learning_rates", {}).get(method) or [],
                          result["chosen_within_bound"][method])
        out.append(line(method + mark, f"{v['lr']:g}", reported.get(label, {}), v))
    for label in result.get("extra_models", {}):
        out.append(line(label, "-", reported.get(label, {}), None))
    floor = result.get("floor")
    if floor:
        comp, prob = floor["completion"], floor["probability"]
        out += ["", f"On the report prompts that name the target ({comp['prompts']} completion, {prob['prompts']} "
                "probability): the generic floor is the base model on them with the target's names made generic, "
                "where a model that never knew the target would stand:", "",
                "| model | completion familiarity (% of base) | P(target) (% of base) |", "|---|---|---|"]
        for name in comp["scores"]:
            cells = []
            for sec in (comp, prob):
                value, base = sec["scores"].get(name), sec["scores"].get("base")
                cells.append("-" if value is None else
                             f"{value:.3f} ({100 * value / base:.0f}%)" if base else f"{value:.3f}")
            out.append("| " + " | ".join(["generic floor" if name == "floor" else name, *cells]) + " |")
    grid_note = "one grid for every method" if len(grids) <= 1 else "the grids differ between methods (--lrs)"
    out += ["", f"Every learning rate tried, on the selection prompts ({grid_note}):", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, v in variants.items():
        chosen = " **(chosen)**" if result["chosen"].get(v["method"]) == label else ""
        out.append(line(v["method"] + chosen, f"{v['lr']:g}", summary[label], v))
    return "\n".join(out) + "\n"


def plot(result: dict, path: Path) -> None:
    """Forgetting (x: 100 - forgetting score) vs retained ability (y: control familiarity % of base; right panel:
    WikiText-2 perplexity change); every learning rate faint, each method's chosen one bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target, control = result["target_suite"], result["control_suite"]
    summary, variants = result["summary"], result["variants"]
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.6))
    colors = {m: f"C{i}" for i, m in enumerate(method_names())}
    panels = ((f"familiarity/{control} %base", "control suite familiarity (% of base; higher = kept)"),
              ("ppl/wikitext %change", "WikiText-2 perplexity change (%; lower = kept)"))
    for ax, (ykey, ylabel) in zip(axes, panels, strict=True):
        for label, v in variants.items():
            r = summary[label]
            score = forgetting_score(r, target)
            if score is None or ykey not in r:
                continue
            chosen = result["chosen"].get(v["method"]) == label
            ax.scatter(100 - score, r[ykey], color=colors.get(v["method"], "k"), s=70 if chosen else 22,
                       alpha=1.0 if chosen else 0.35, edgecolor="k" if chosen else "none",
                       label=v["method"] if chosen else None, zorder=3 if chosen else 2)
            ax.annotate(f"{v['lr']:g}", (100 - score, r[ykey]), fontsize=6, alpha=0.7, xytext=(3, 3),
                        textcoords="offset points")
        for label in result.get("extra_models", {}):
            r = summary[label]
            score = forgetting_score(r, target)
            if score is not None and ykey in r:
                ax.scatter(100 - score, r[ykey], marker="*", s=140, color="k", label=label, zorder=4)
        ax.axhline(100 if "%base" in ykey else 0, color="grey", lw=0.8, ls=":")
        if "%change" in ykey:  # a collapsed model (perplexity x1000) must not flatten the others
            ax.set_yscale("symlog", linthresh=20)
            ax.set_ylim(bottom=-20)
        ax.set(xlabel="forgetting: 100 - mean(familiarity, P(target)) as % of base", ylabel=ylabel)
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, loc="lower left")
    axes[0].set_title(f"{target}: forgetting vs control suite", fontsize=9)
    axes[1].set_title("forgetting vs WikiText-2 perplexity", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def parse_lrs(specs: list[str]) -> dict[str, tuple[float, ...]]:
    lrs = dict(LEARNING_RATES)
    for spec in specs:
        method, _, values = spec.partition("=")
        if method not in lrs or not values:
            raise SystemExit(f"--lrs {spec!r}: expected METHOD=lr1,lr2,... with METHOD one of {', '.join(lrs)}")
        lrs[method] = tuple(float(x) for x in values.split(","))
    return lrs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--methods", default=",".join(LEARNING_RATES), help="comma-separated (default: all)")
    ap.add_argument("--lrs", action="append", default=[], metavar="METHOD=LR,LR,LR")
    ap.add_argument("--from-run", type=Path, default=None,
                    help="a run of the same recipe whose stages up to the labels are finished: reuse them")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every method")
    ap.add_argument("--with-model", action="append", default=[], metavar="LABEL=PATH",
                    help="another model to evaluate beside the methods (e.g. the demo's WHP model)")
    ap.add_argument("--max-ppl-change", type=float, default=10.0,
                    help="selection bound on the WikiText-2 perplexity increase, in percent (default 10)")
    ap.add_argument("--replot", action="store_true", help="only redraw compare.png and compare.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.replot:
        result = json.loads((args.out / "compare.json").read_text())
        result["summary"] = full_summary(args.out, result["target_suite"], result["control_suite"])
        final = args.out / "final" / "eval.json"
        if final.is_file():
            final_doc = json.loads(final.read_text())
            result["reported"] = summarize(final_doc, (result["target_suite"], result["control_suite"]))
            result["floor"] = floor_rows(final_doc, result["target_suite"])
        atomic_write_json(args.out / "compare.json", result)
        atomic_write_text(args.out / "compare.md", markdown(result))
        plot(result, args.out / "compare.png")
        return 0
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in LEARNING_RATES]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; valid: {', '.join(LEARNING_RATES)}")
    lrs = parse_lrs(args.lrs)
    extra = dict(spec.split("=", 1) for spec in args.with_model)

    recipe = Recipe.from_yaml(args.recipe, list(args.set))
    shared = args.from_run or args.out / "shared"
    t0 = time.perf_counter()
    shared_paths = RunPaths(shared)
    floor_dictionary = shared_paths.anchors if recipe.eval.generic_floor else None
    upstream_until = "labels" if "whp" in methods else "anchors" if floor_dictionary else "corpus"
    Pipeline(recipe, shared).run_stages(until=upstream_until)
    timings = {"shared_stages_s": round(time.perf_counter() - t0, 1)}

    variants, models = {}, {"base": recipe.model.spec}
    for method in methods:
        for lr in lrs[method]:
            label = f"{method} lr {lr:g}"
            run_dir = args.out / "runs" / f"{method}_lr{lr:g}"
            r = Recipe.from_yaml(args.recipe, list(args.set) + [f"method={method}", f"finetune.learning_rate={lr}"])
            link_upstream(shared, run_dir, r, UPSTREAM if method == "whp" else ("corpus",))
            t1 = time.perf_counter()
            manifest = Pipeline(r, run_dir).run_stages(until="export")
            stage = manifest["stages"][get_method(method).weights_stage]
            steps, kept = training_steps(run_dir)
            variants[label] = {"method": method, "lr": lr, "run_dir": str(run_dir),
                               "train_seconds": stage.get("seconds"), "wall_s": round(time.perf_counter() - t1, 1),
                               "steps": steps, "kept": kept}
            models[label] = str(run_dir / "export" / "model")
    models.update(extra)

    from llm_unlearn.corpus import read_blocks
    from llm_unlearn.evaluation import evaluate

    blocks = read_blocks(shared_paths.blocks)
    heldout = [blocks[i].text for i in json.loads(shared_paths.split.read_text())["validation"]]
    t1 = time.perf_counter()
    splits = [split_suite(p, args.out / "suites") for p in recipe.eval.suites]  # CMP2
    # the floor only places the reported numbers: the sweep (which chooses the rates) does without it
    sweep_cfg = dataclasses.replace(recipe.eval, benchmarks=[], generic_floor=False, suites=[str(a) for a, _ in splits])
    doc = evaluate(models, sweep_cfg, args.out / "sweep", target_heldout=heldout, baseline="base")
    timings["eval_sweep_s"] = round(time.perf_counter() - t1, 1)
    names = [s["name"] for s in doc["suites"]]
    target, control = names[0], (names[1] if len(names) > 1 else None)
    summary = summarize(doc, (target, control))

    chosen, within = {}, {}
    for method in methods:
        rows = {label: summary[label] for label, v in variants.items() if v["method"] == method}
        chosen[method], within[method] = select(rows, target, args.max_ppl_change)

    t1 = time.perf_counter()
    final_models = {"base": models["base"], **{label: models[label] for label in chosen.values()}, **extra}
    final_cfg = dataclasses.replace(recipe.eval, suites=[str(b) for _, b in splits], wikitext=None)
    final_doc = evaluate(final_models, final_cfg, args.out / "final", baseline="base",
                         floor_dictionary=floor_dictionary)
    timings["eval_final_s"] = round(time.perf_counter() - t1, 1)
    reported = summarize(final_doc, (target, control))
    for label, row in reported.items():  # perplexities come from the sweep (same models, same text)
        for key, value in summary.get(label, {}).items():
            if key.startswith("ppl/"):
                row.setdefault(key, value)
    add_benchmarks(summary, final_doc)

    result = {"recipe": args.recipe, "overrides": list(args.set), "methods": methods,
              "learning_rates": {m: list(lrs[m]) for m in methods}, "max_ppl_change": args.max_ppl_change,
              "variants": variants, "extra_models": extra, "chosen": chosen, "chosen_within_bound": within,
              "summary": summary, "reported": reported, "timings": timings, "target_suite": target,
              "control_suite": control, "floor": floor_rows(final_doc, target),
              "selection": f"suite items i % {SELECT_EVERY} == 0 choose; the rest report"}
    atomic_write_json(args.out / "compare.json", result)
    table = markdown(result)
    atomic_write_text(args.out / "compare.md", table)
    plot(result, args.out / "compare.png")
    print(table)
    print(f"wrote {args.out / 'compare.json'}, compare.md, compare.png ({timings})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
