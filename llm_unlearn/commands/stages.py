"""`llm-unlearn run RECIPE --out RUN_DIR` and one command per stage (`reinforce`, `labels`, `finetune`,
`export`): each reads and writes the run directory, running the missing upstream stages first."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import RecipeError

STAGE_HELP = {
    "reinforce": "stage 1: fine-tune a reinforced (LoRA) model on the target blocks",
    "labels": "stage 3: translate anchors and build generic-prediction labels",
    "finetune": "stage 4: unlearning fine-tune on the generic labels",
    "export": "stage 5: merge the adapter and save a Hugging Face model (optionally push to the Hub)",
}


def _common(p) -> None:
    p.add_argument("recipe", nargs="?", help="recipe YAML (default: RUN_DIR/recipe.yaml of an existing run)")
    p.add_argument("--out", "-o", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe field (repeatable), e.g. --set labels.alpha=5")
    p.add_argument("--overwrite", action="store_true", help="allow redoing finished stages whose config changed "
                   "(the new output replaces the old one only when its stage succeeds)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the Python code of the model folder / Hub repo (never taken from a recipe file)")
    p.add_argument("--judge-url", metavar="URL", help="OpenAI-compatible endpoint for eval.judge: openai (default "
                   "$LLM_UNLEARN_JUDGE_URL); your OPENAI_API_KEY goes only to endpoints you name here or there")
    p.add_argument("--chat-url", metavar="URL", help="OpenAI-compatible endpoint for anchors.substitute_chat: openai "
                   "(default $LLM_UNLEARN_CHAT_URL)")


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="run every stage of a recipe (resumable; skips finished stages)")
    _common(p)
    p.add_argument("--until", default="eval", help="last stage to run (whp: corpus, anchors, reinforce, labels, "
                                                   "finetune, export, eval; other methods: corpus, unlearn, "
                                                   "export, eval)")
    p.add_argument("--dry-run", action="store_true", help="print what would run, then stop")
    p.set_defaults(func=run)
    for stage, text in STAGE_HELP.items():
        sp = subparsers.add_parser(stage, help=text)
        _common(sp)
        if stage == "export":
            sp.add_argument("--push-to-hub", metavar="REPO_ID", help="push the exported model (token from HF_TOKEN)")
            sp.add_argument("--public", action="store_true", help="make the Hub repo public (default private)")
        sp.set_defaults(func=run, until=stage, dry_run=False)


def load_recipe(args):
    from ..config import Recipe
    from ..openai_chat import allow_endpoint

    overrides = list(args.overrides)
    if getattr(args, "public", False) and not args.push_to_hub:
        raise RecipeError("--public applies to a push: add --push-to-hub REPO_ID (or leave --public out)")
    if getattr(args, "push_to_hub", None):
        overrides.append(f"export.push_to_hub={args.push_to_hub}")
        if args.public:
            overrides.append("export.private=false")
    if getattr(args, "trust_remote_code", False):
        overrides.append("model.trust_remote_code=true")
    for use, url in (("judge", getattr(args, "judge_url", None)), ("chat", getattr(args, "chat_url", None))):
        if url is not None:
            allow_endpoint(use, url, RecipeError)
    if args.recipe:
        return Recipe.from_yaml(args.recipe, overrides)
    saved = Path(args.out) / "recipe.yaml"
    if not saved.exists():
        raise RecipeError(f"no recipe given and {saved} does not exist: pass a recipe YAML")
    return Recipe.from_yaml(saved, overrides)


def run(args) -> int:
    from ..pipeline import Pipeline

    recipe = load_recipe(args)
    pipe = Pipeline(recipe, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    if args.dry_run:
        for name, action in pipe.plan(args.until):
            print(f"{name:<10} {action}")
        return 0
    manifest = pipe.run_stages(until=args.until)
    if pipe.state.is_main_process:
        print_summary(manifest, args.out, pipe.order)
        eval_json = pipe.run.eval_dir / "eval.json"
        if manifest["stages"].get("eval", {}).get("status") == "done" and eval_json.exists():
            print_before_after(json.loads(eval_json.read_text()))
            print_rounding_warning(recipe.model.spec, pipe.run.export_model)
    return 0


def print_rounding_warning(base_spec: str, model_path) -> str | None:
    """Rule GG5 (llm_unlearn.gguf_formats): under the before/after table, say when the unlearned model's
    weight changes are mostly smaller than half a quantization step of the base's own GGUF format."""
    import logging

    from ..gguf_formats import rounding_message, run_rounding_check

    try:
        message = rounding_message(run_rounding_check(base_spec, model_path))
    except Exception as exc:  # noqa: BLE001 - a check that cannot run must not fail a finished run
        logging.getLogger(__name__).warning("could not compare the weight changes with the base's GGUF format: %s", exc)
        return None
    if message:
        print(message)
    return message


def before_after_rows(doc: dict) -> list[tuple[str, float, float, str]]:
    """(measure, base, unlearned, change) for the headline numbers of an eval.json with a baseline. With a generic
    floor (``eval.generic_floor``), a suite where at least a quarter of the prompts name an anchored term also gets
    its numbers on those prompts, with the floor beside them (a suite with a few such prompts, e.g. a control suite,
    would show noise)."""
    from ..evaluation.report import changes_vs_base, flat_summary

    flat = flat_summary(doc)
    base_label = doc.get("baseline")
    others = [label for label in flat if label != base_label]
    if not base_label or not others:
        return []
    base, new = flat[base_label], flat[others[0]]
    change = changes_vs_base(base, new)
    suites = [s["name"] for s in doc.get("suites", [])]
    rows: list[tuple[str, float, float, str]] = []

    def add(name, key):
        if key in base and key in new:
            if f"{key} %base" in change:
                text = f"{change[key + ' %base']:.0f}% of base"
            elif f"{key} %change" in change:
                text = f"{change[key + ' %change']:+.1f}%"
            else:  # accuracies, and shares whose base is 0
                text = f"{100 * (new[key] - base[key]):+.1f} points"
            rows.append((name, base[key], new[key], text))

    for suite in suites:
        add(f"completion familiarity, {suite}", f"familiarity/{suite}")
        add(f"probability familiarity, {suite}", f"prob/{suite}")
        rows += _floor_rows(doc.get("generic_floor", {}).get(suite), suite, base_label, others[0])
        rows += _lost_rows(doc, suite, base_label, others[0])
    for key in sorted(k for k in base if k.startswith("acc/") and k in new):
        add(f"accuracy, {key.split('/', 1)[1]}", key)
    if "acc_mean" in change:
        rows.append((f"mean accuracy ({change['acc_mean n_tasks']} benchmarks)", change["acc_mean base"],
                     change["acc_mean"], f"{change['acc_mean points']:+.1f} points"))
    for name in ("wikitext", "target_heldout"):
        add(f"perplexity, {name}", f"ppl/{name}")
    return rows


def _floor_rows(floor: dict | None, suite: str, base: str, new: str) -> list[tuple[str, float, float, str]]:
    from ..whp.floor import informative, section_scores

    rows = []
    for section, value, what in (("completion", "familiarity", "completion familiarity"),
                                 ("probability", "mean_prob", "probability familiarity")):
        sec = (floor or {}).get(section) or {}
        scores = section_scores(sec)
        b, n, f = ((scores.get(k) or {}).get(value) for k in (base, new, "floor"))
        if None in (b, n, f) or not b or not informative(sec):
            continue
        rows.append((f"{what}, {suite}, the {sec['translated']} prompts naming the target", b, n,
                     f"{100 * n / b:.0f}% of base (generic floor {100 * f / b:.0f}%)"))
    return rows


def _lost_rows(doc: dict, suite: str, base: str, new: str) -> list[tuple[str, float, float, str]]:
    """The baseline's explicit answers (grade 3) the new model still gives, with the lost ones split into firm items
    and near ties (only when the evaluation recorded the baseline's margins)."""
    from ..evaluation.familiarity import lost_items, lost_totals
    from ..evaluation.report import lost_of

    b, n = ((doc["models"][m].get("suites", {}).get(suite) or {}).get("completion") for m in (base, new))
    if not b or not n:
        return []
    groups = lost_items(b, n)
    if not groups or "unknown" in groups:
        return []
    known, lost = lost_totals(groups)
    return [(f"explicit answers kept, {suite}", known, known - lost,
             f"lost {lost_of(groups, 'firm')} firm, {lost_of(groups, 'near_tie')} near ties")]


def print_before_after(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = before_after_rows(doc)
    if not rows:
        return
    labels = [label for label in doc["models"] if label != doc["baseline"]]
    table = Table(title=f"before / after ({doc['baseline']} vs {labels[0]}; report: eval/report.md)")
    for col in ("measure", doc["baseline"], labels[0], "change"):
        table.add_column(col, justify="left" if col in ("measure", "change") else "right")
    for name, b, n, change in rows:
        table.add_row(name, f"{b:.4g}", f"{n:.4g}", change)
    Console().print(table)


def _fmt(value, spec: str) -> str:
    """A metric for the summary; none recorded (null in the manifest: e.g. no validation blocks) shows as n/a."""
    return "n/a" if not isinstance(value, (int, float)) else format(value, spec)


def print_summary(manifest: dict, out: str, stages: list[str]) -> None:
    """The run's stages (``stages``: the recipe method's, in order) with their key results. A run folder that
    another method's run was copied into keeps that method's stages in its manifest; they are not this run's."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {out}")
    for col in ("stage", "status", "seconds", "key result"):
        table.add_column(col)
    for name in stages:
        if name not in manifest["stages"]:
            continue
        e = manifest["stages"][name]
        m = e.get("metrics") or {}
        key = ""
        if name == "corpus":
            key = f"{m.get('blocks')} blocks, {m.get('tokens')} tokens"
        elif name == "anchors":
            key = f"{m.get('anchors')} anchored terms"
        elif name == "reinforce":
            key = f"target ppl {_fmt(m.get('base_perplexity'), '.2f')} -> {_fmt(m.get('reinforced_perplexity'), '.2f')}"
        elif name == "labels":
            key = f"{_fmt(m.get('changed_fraction'), '.1%')} labels changed"
        elif name == "unlearn":
            last = (m.get("history") or [{}])[-1]
            key = f"{m.get('method')}: {m.get('total_steps')} steps, final val loss {_fmt(last.get('val_loss'), '.3f')}"
        elif name == "finetune":
            best = m.get("best") or {}
            key = f"best val loss {_fmt(best.get('val_loss'), '.3f')} at step {best.get('step')}"
        elif name == "export":
            key = str(m.get("model", ""))
        elif name == "eval":
            key = str(m.get("eval_json", m.get("skipped", "")))
        table.add_row(name, e["status"], str(e.get("seconds", "")), key)
    Console().print(table)
