"""`llm-unlearn eval`: familiarity, retained ability and perplexity of one or more models, with a report.

Examples::

    llm-unlearn eval --model smollm2-135m --suite eval/sherlock_holmes --benchmarks arc_easy,piqa --limit 200
    llm-unlearn eval --base smollm2-135m --model runs/sherlock/model --suite eval/sherlock_holmes \\
        --suite eval/control --benchmarks all --wikitext --out runs/sherlock/eval
    llm-unlearn eval --draft-suite eval/my_concept --corpus book.txt --anchors anchors.yaml
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import EvalError

_LABEL = re.compile(r"^([A-Za-z][\w.-]{0,40})=(.+)$")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate familiarity, benchmarks and perplexity of models (before/after), offline",
        description="Evaluate one or more models on the same items and write eval.json, report.md and plots. "
                    "With --base, every --model is compared with it (paired differences with 95% intervals).")
    p.add_argument("--model", action="append", default=[], metavar="[LABEL=]SPEC",
                   help="model to evaluate (repeatable): alias, folder, .gguf or Hub id, optionally labelled")
    p.add_argument("--base", metavar="SPEC", help="baseline model (label 'base'); the others are compared with it")
    p.add_argument("--recipe", metavar="YAML", help="take the eval settings from a recipe's eval section first")
    p.add_argument("--suite", action="append", default=[], metavar="DIR", help="prompt suite folder (repeatable)")
    p.add_argument("--benchmarks", metavar="LIST", help="comma list of arc_easy, arc_challenge, boolq, piqa, "
                   "winogrande, hellaswag, or 'all'")
    p.add_argument("--benchmark-dir", metavar="DIR", help="folder with the benchmark files (default: the bundled benchmarks)")
    p.add_argument("--limit", type=int, help="first N items of each benchmark")
    p.add_argument("--wikitext", nargs="?", const="auto", metavar="PATH",
                   help="WikiText-2 perplexity; PATH of test.txt, or alone for the bundled WikiText-2 test.txt")
    p.add_argument("--heldout", metavar="FILE", help="held-out target text for perplexity (a slice of the target "
                   "corpus the model was not unlearned on)")
    p.add_argument("--samples", type=int, help="completions per prompt (default 1 = greedy)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--judge", metavar="hf:SPEC|openai[:URL]", help="optional LLM judge of completions (off by "
                   "default); openai uses --judge-url / $LLM_UNLEARN_JUDGE_URL")
    p.add_argument("--judge-url", metavar="URL", help="OpenAI-compatible endpoint of the judge; your OPENAI_API_KEY "
                   "goes only to an endpoint you name here, in --judge or in $LLM_UNLEARN_JUDGE_URL, never to one a "
                   "recipe names")
    p.add_argument("--judge-model", help="model name for an OpenAI-compatible judge endpoint")
    p.add_argument("--lm-eval-tasks", metavar="LIST", help="also run these named lm-eval tasks (needs the network)")
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", help="auto, float32, bfloat16, float16")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--generic-floor", metavar="ANCHORS_YAML",
                   help="also score --base on the suites' prompts with these anchors replaced by their translations "
                        "(a WHP run's anchors/anchors.yaml): where a model that never knew the target would stand")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--out", metavar="DIR", help="output folder (default eval_out/<model>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("suite drafting")
    g.add_argument("--draft-suite", metavar="DIR", help="draft a prompt suite into DIR from --corpus and --anchors, then stop")
    g.add_argument("--corpus", metavar="PATH", help="target corpus for --draft-suite")
    g.add_argument("--anchors", metavar="YAML", help="anchor terms (list, or anchor dictionary) for --draft-suite")
    g.add_argument("--n-completion", type=int, default=200)
    g.add_argument("--n-probability", type=int, default=60)
    p.set_defaults(func=run)


def _models(args) -> tuple[dict[str, str], str | None]:
    models: dict[str, str] = {}
    baseline = None
    if args.base:
        models["base"] = args.base
        baseline = "base"
    unlabeled = []
    for item in args.model:
        m = _LABEL.match(item)
        if m and not Path(item).exists():
            label, spec = m.group(1), m.group(2)
        else:
            label, spec = None, item
            unlabeled.append(spec)
        if label is None:
            if baseline and len(args.model) == 1:
                label = "unlearned"
            elif len(args.model) == 1:
                label = "model"
            else:
                label = Path(spec.rstrip("/")).name or spec
        base_label, k = label, 2
        while label in models:
            label, k = f"{base_label}-{k}", k + 1
        models[label] = spec
    if not models:
        raise EvalError("give a model to evaluate: --model SPEC (and --base SPEC for a before/after comparison)")
    return models, baseline


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", Path(name.rstrip("/")).name or name).strip("_") or "model"


def _config(args):
    from ..config import EvalConfig, Recipe
    from ..openai_chat import allow_endpoint

    if args.judge_url is not None:
        allow_endpoint("judge", args.judge_url, EvalError)
    if args.judge and args.judge.startswith("openai:"):  # an endpoint typed by the person running (rule T1a)
        allow_endpoint("judge", args.judge.partition(":")[2], EvalError)
    cfg = Recipe.from_yaml(args.recipe).eval if args.recipe else EvalConfig()
    if args.suite:
        cfg.suites = list(args.suite)
    if args.benchmarks is not None:
        from ..evaluation.benchmarks import parse_benchmark_list

        cfg.benchmarks = parse_benchmark_list(args.benchmarks)
    for attr in ("benchmark_dir", "limit", "samples", "temperature", "max_new_tokens", "batch_size", "judge",
                 "judge_model", "seed", "dtype", "device"):
        value = getattr(args, attr)
        if value is not None:
            setattr(cfg, attr, value)
    if args.lm_eval_tasks:
        cfg.lm_eval_tasks = [t.strip() for t in args.lm_eval_tasks.split(",") if t.strip()]
    if args.wikitext == "auto":
        from ..config.datadir import default_wikitext

        cfg.wikitext = str(default_wikitext())
    elif args.wikitext:
        cfg.wikitext = args.wikitext
    if args.no_plots:
        cfg.plots = False
    if args.generic_floor:
        cfg.generic_floor = True
    if args.limit is not None and args.limit < 1:
        raise EvalError("--limit must be >= 1")
    from ..errors import RecipeError
    from ..preflight import check_device

    try:
        cfg.validate()  # the recipe's rules, on the flags too (--temperature -1, --seed -1, --device x ...)
    except RecipeError as exc:
        raise EvalError(f"{exc} (eval.KEY is the flag --KEY)") from exc
    check_device(cfg.device, "--device", EvalError)
    return cfg


def _draft(args) -> int:
    from ..evaluation.suites import draft_suite

    if not args.corpus or not args.anchors:
        raise EvalError("--draft-suite needs --corpus PATH and --anchors YAML")
    suite = draft_suite(args.corpus, args.anchors, args.draft_suite, n_completion=args.n_completion,
                        n_probability=args.n_probability, seed=args.seed or 0, overwrite=args.overwrite)
    print(f"drafted suite '{suite.name}' in {args.draft_suite}: {len(suite.completion)} completion prompts, "
          f"{len(suite.probability)} probability prompts. Review it (see its README.md) before use.")
    return 0


def run(args) -> int:
    if args.draft_suite:
        return _draft(args)
    from ..evaluation.core import evaluate
    from ..evaluation.report import flat_summary

    models, baseline = _models(args)
    cfg = _config(args)
    heldout = None
    if args.heldout:
        path = Path(args.heldout).expanduser()
        if not path.is_file():
            raise EvalError(f"held-out text not found: {path}")
        heldout = [path.read_text(encoding="utf-8")]
    target = [lab for lab in models if lab != baseline] or list(models)
    out = Path(args.out) if args.out else Path("eval_out") / _safe(models[target[0]])
    if out.exists() and not out.is_dir():
        raise EvalError(f"--out {out} is a file: --out names a folder for eval.json, report.md and plots")
    from ..models import resolve_spec

    for spec in models.values():
        resolve_spec(spec)  # a missing or malformed model fails here, before --out is made
    existing = [n for n in ("eval.json", "report.md") if (out / n).exists()]
    if existing and not args.overwrite:
        raise EvalError(f"{out} already holds a report ({', '.join(existing)}); pass --overwrite or another --out")
    doc = evaluate(models, cfg, out, target_heldout=heldout, baseline=baseline, progress=not args.quiet,
                   floor_dictionary=args.generic_floor)
    summary = flat_summary(doc)
    labels = list(summary)
    keys = list(dict.fromkeys(k for row in summary.values() for k in row))
    width = max([len(k) for k in keys] + [8])
    print(f"{'measure':<{width}}  " + "  ".join(f"{lab:>12}" for lab in labels))
    for k in keys:
        cells = []
        for lab in labels:
            v = summary[lab].get(k)
            cells.append(f"{v:>12.4f}" if isinstance(v, float) else f"{'-':>12}")
        print(f"{k:<{width}}  " + "  ".join(cells))
    print(f"\nwrote {out / 'eval.json'}, {out / 'report.md'}" +
          "".join(f", {out / p}" for p in doc.get("plots", [])))
    return 0
