"""`llm-unlearn benchmark tofu`: the TOFU benchmark (forget quality vs a retain model, model utility, efficiency).

    llm-unlearn benchmark tofu --recipe recipes/tofu_smollm2_cpu.yaml --out runs/tofu
    llm-unlearn benchmark tofu --model smollm2-135m --split forget10 --methods whp,npo --out runs/tofu
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import RecipeError, RunDirError


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


def _non_finite(value, key: str = "") -> str | None:
    """The key of the first NaN / infinite number in a (nested) TOFU recipe, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return key or "value"
    if isinstance(value, dict):
        return next((k for name, v in value.items() if (k := _non_finite(v, f"{key}.{name}" if key else str(name)))),
                    None)
    if isinstance(value, (list, tuple)):
        return next((k for v in value if (k := _non_finite(v, key))), None)
    return None


def check_before_training(cfg, out: Path) -> None:
    """What would fail after hours of fine-tuning the target model, checked first: --out, non-finite numbers, and
    each method's recipe with its overrides (``unlearn.METHOD``)."""
    import dataclasses

    from ..api import Unlearner
    from ..methods import METHODS

    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a folder: choose another --out")
    bad = _non_finite(dataclasses.asdict(cfg))
    if bad:
        raise RecipeError(f"{bad} must be a finite number (got NaN or infinity)")
    for method in cfg.methods:
        if method in METHODS:
            try:
                Unlearner(overrides=cfg.unlearn.get(method, {}), method=method).recipe.validate()
            except RecipeError as exc:
                raise RecipeError(f"unlearn.{method} (the {method} run's recipe overrides): {exc}") from exc


def run_tofu(args) -> int:
    from ..tofu.bench import TofuBenchConfig, apply_overrides, run_tofu_benchmark

    overrides = list(args.set)
    if args.methods is not None and not [m for m in args.methods.split(",") if m.strip()]:
        raise RecipeError("--methods names no method: give a comma list, e.g. --methods whp,npo (or leave it out "
                          "for the recipe's)")
    for key in ("model", "split", "methods"):
        if getattr(args, key) is not None:
            overrides.append(f"{key}={getattr(args, key)}")
    if args.recipe:
        cfg = TofuBenchConfig.from_yaml(args.recipe, overrides)
    else:
        cfg = TofuBenchConfig.from_dict(apply_overrides({}, overrides), source="command line")
    if isinstance(cfg.methods, str):
        cfg.methods = [m.strip() for m in cfg.methods.split(",") if m.strip()]
    check_before_training(cfg, Path(args.out))
    results = run_tofu_benchmark(cfg, args.out, progress=not args.no_progress)
    failed = [c for c in results.get("sanity", []) if not c["ok"]]
    if failed:
        print(f"warning: {len(failed)} sanity check(s) failed: the models may be under-trained (see results.md)")
    return 0
