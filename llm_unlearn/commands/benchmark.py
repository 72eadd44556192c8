"""`llm-unlearn benchmark tofu`: the TOFU benchmark (forget quality vs a retain model, model utility, efficiency).

    llm-unlearn benchmark tofu --recipe recipes/tofu_smollm2_cpu.yaml --out runs/tofu
    llm-unlearn benchmark tofu --model smollm2-135m --split forget10 --methods whp,npo --out runs/tofu
"""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("benchmark", help="run a standard unlearning benchmark (tofu)")
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    t = sub.add_parser("tofu", help="TOFU: target/retain models, forget quality, model utility, efficiency")
    t.add_argument("--recipe", metavar="FILE", help="TOFU recipe YAML (recipes/tofu_smollm2_cpu.yaml, "
                                                    "recipes/tofu_full_gpu.yaml); default: TOFU's own settings "
                                                    "(all 200 authors: a GPU job)")
    t.add_argument("--model", help="base model spec (overrides the recipe)")
    t.add_argument("--split", help="forget01, forget05 or forget10 (overrides the recipe)")
    t.add_argument("--methods", help="comma-separated unlearning methods, e.g. whp,npo (overrides the recipe)")
    t.add_argument("--out", default="runs/tofu", help="output folder (default runs/tofu)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set data.authors=8 --set train.epochs=3")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=run_tofu)


def run_tofu(args) -> int:
    from ..tofu.bench import TofuBenchConfig, apply_overrides, run_tofu_benchmark

    overrides = list(args.set)
    for key in ("model", "split", "methods"):
        if getattr(args, key):
            overrides.append(f"{key}={getattr(args, key)}")
    if args.recipe:
        cfg = TofuBenchConfig.from_yaml(args.recipe, overrides)
    else:
        cfg = TofuBenchConfig.from_dict(apply_overrides({}, overrides), source="command line")
    if isinstance(cfg.methods, str):
        cfg.methods = [m for m in cfg.methods.split(",") if m]
    results = run_tofu_benchmark(cfg, args.out, progress=not args.no_progress)
    failed = [c for c in results.get("sanity", []) if not c["ok"]]
    if failed:
        print(f"warning: {len(failed)} sanity check(s) failed: the models may be under-trained (see results.md)")
    return 0
