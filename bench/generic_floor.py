#!/usr/bin/env python
"""The generic floor of the target's familiarity suite (issue #16): the base model's answers to the suite's prompts
with the target's anchored terms replaced by the run's generic translations (rules F1-F4 of
llm_unlearn/evaluation/floor.py), beside the base and unlearned models of finished runs on the same prompts.

    python bench/generic_floor.py --run runs/sherlock_smollm2 "target tokens=runs/spec_a20_noletters" \\
        --out bench/results/generic_floor_sherlock    # about 1 minute on 2 cores: writes .json and .md

``--run``: the run whose anchor dictionary (``anchors/anchors.yaml``), base model and target suite (the first of
``eval.suites``, or ``--suite``) are used; its base and unlearned models are compared. Each further ``label=run_dir``
adds that run's unlearned model (same suite in its ``eval/eval.json``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import labelled_runs, run_eval_doc  # noqa: E402
from llm_unlearn.anchors import AnchorDictionary  # noqa: E402
from llm_unlearn.errors import UnlearnError  # noqa: E402
from llm_unlearn.evaluation.floor import generic_floor, section_scores  # noqa: E402
from llm_unlearn.evaluation.suites import load_suite  # noqa: E402
from llm_unlearn.models import load_model  # noqa: E402
from llm_unlearn.recipe import Recipe  # noqa: E402
from llm_unlearn.rundir import RunPaths  # noqa: E402
from llm_unlearn.runio import atomic_write_json, atomic_write_text  # noqa: E402
from llm_unlearn.translation import Translator  # noqa: E402


def suite_results(run_dir: Path, suite_name: str) -> dict:
    """model name -> that model's result for the suite in the run's evaluation."""
    path, doc = run_eval_doc(run_dir)
    models = doc["models"]
    out = {name: m["suites"][suite_name] for name, m in models.items() if suite_name in m.get("suites", {})}
    if not out:
        raise SystemExit(f"error: {path} has no results for the suite {suite_name!r}")
    return out


def pct(value, base) -> str:
    return f"{value:.3f} ({100 * value / base:.0f}%)" if value is not None and base else "-"


def markdown(doc: dict) -> str:
    comp, prob = doc["completion"], doc["probability"]
    c_scores, p_scores = section_scores(comp), section_scores(prob)
    names = [k for k in c_scores if k != "floor"]
    base_f = c_scores.get("base", {}).get("familiarity")
    base_p = p_scores.get("base", {}).get("mean_prob")
    lines = [f"Suite `{doc['suite']}`, dictionary of `{doc['run']}`: {comp['translated']} of {comp['prompts']} "
             f"completion prompts and {prob['translated']} of {prob['prompts']} probability prompts name an anchored "
             "term (only those are scored; % of the base model on the same prompts).", "",
             "| model | completion familiarity | grade >= 2 | grade-3 items | P(target) |", "|---|---|---|---|---|"]
    rows = [("generic floor (base model, translated prompts)", c_scores["floor"], p_scores.get("floor", {}))]
    rows += [(name, c_scores[name], p_scores.get(name, {})) for name in names]
    for name, c, p in rows:
        g3 = round(c.get("frac_3", 0) * c.get("n", 0))
        lines.append(f"| {name} | {pct(c.get('familiarity'), base_f)} | {c.get('frac_ge2', 0):.2f} | {g3} | "
                     f"{pct(p.get('mean_prob'), base_p)} |")
    kept = [it for it in comp["items"] if it["floor"] >= 3]
    if kept:
        lines += ["", f"Prompts the base model still answers with the reference once the names are generic ({len(kept)}):",
                  ""]
        lines += [f"- `{it['translated']}` -> `{it['completion'].strip()[:60]}`" for it in kept]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="run directory (anchors, recipe, eval/eval.json)")
    parser.add_argument("others", nargs="*", metavar="LABEL=RUN_DIR", help="more runs' unlearned models to compare")
    parser.add_argument("--suite", help="suite folder (default: the run's first eval suite)")
    parser.add_argument("--label", default="unlearned", help="name of the run's own unlearned model in the table")
    parser.add_argument("--seed", type=int, default=0, help="seed of the translations' draws")
    parser.add_argument("--out", type=Path, required=True, help="output path prefix (.json and .md are written)")
    args = parser.parse_args(argv)
    run = RunPaths(args.run)
    if not run.anchors.is_file() or not run.recipe.is_file():
        raise SystemExit(f"error: {args.run} has no anchors/anchors.yaml and recipe.yaml: give a run whose anchors "
                         "stage has finished")
    try:
        recipe = Recipe.from_yaml(run.recipe)
        suite = load_suite(args.suite or recipe.eval.suites[0])
    except (UnlearnError, IndexError) as exc:
        raise SystemExit(f"error: {exc or 'the run evaluates no suite: pass --suite'}") from exc
    others = {(args.label if name == "unlearned" else name): doc
              for name, doc in suite_results(args.run, suite.name).items()}
    for label, path in labelled_runs(args.others).items():
        others[label] = suite_results(path, suite.name)["unlearned"]
    model, tokenizer = load_model(recipe.model.spec, dtype=recipe.eval.dtype, device=recipe.eval.device)  # as the eval
    translator = Translator(AnchorDictionary.load(run.anchors), tokenizer)
    doc = {"run": str(args.run), **generic_floor(model, tokenizer, suite, translator, seed=args.seed, others=others)}
    atomic_write_json(args.out.with_suffix(".json"), doc)
    atomic_write_text(args.out.with_suffix(".md"), markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
