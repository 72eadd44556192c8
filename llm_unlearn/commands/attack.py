"""`llm-unlearn attack`: does the forgetting hold? Attack an unlearned model and compare with its base.

Examples::

    llm-unlearn attack --model runs/sherlock/export/model --base smollm2-135m --suite eval/sherlock_holmes \\
        --run runs/sherlock --out runs/sherlock/attack
    llm-unlearn attack --model M --base B --suite eval/sherlock_holmes --attacks quantization,in_context --out out/
    llm-unlearn attack --model M --base B --suite S --attacks relearn --relearn-text wiki=holmes_wiki.txt --out out/
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EvalError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "attack", help="attack an unlearned model (relearning, in-context, languages, chat, quantization, "
                       "jailbreak prompts) and report how much it recovers",
        description="Score the base model, the unlearned model, and the unlearned model under each attack with the "
                    "eval scorer; write attack.json, report.md and attack.png. Recovery = (attacked - unlearned) / "
                    "(base - unlearned).")
    p.add_argument("--model", required=True, metavar="SPEC", help="the unlearned model (folder, alias, .gguf, Hub id)")
    p.add_argument("--base", required=True, metavar="SPEC", help="the model before unlearning")
    p.add_argument("--suite", action="append", default=[], metavar="DIR", help="prompt suite folder (repeatable)")
    p.add_argument("--attacks", metavar="LIST", help="comma list of in_context, jailbreak, languages, chat, "
                   "quantization, relearn (default: every attack whose inputs are present)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--recipe", metavar="YAML", help="take the eval and attack settings (and finetune lr) from a recipe")
    p.add_argument("--run", metavar="RUN_DIR", help="held-out target text from a run (its relearn, else validation, "
                   "blocks)")
    p.add_argument("--heldout", action="append", default=[], metavar="FILE",
                   help="held-out target text (not unlearned on) for relearn and the passage attack (repeatable)")
    p.add_argument("--relearn-text", action="append", default=[], metavar="[NAME=]FILE",
                   help="other text to relearn from, e.g. related material (repeatable)")
    p.add_argument("--relearn-steps", metavar="LIST", help="optimizer steps, comma list (default 20,100)")
    p.add_argument("--relearn-lr", type=float, help="relearn learning rate (default: the recipe's finetune lr)")
    p.add_argument("--in-context-k", metavar="LIST", help="solved examples per prompt, comma list (default 3,10)")
    p.add_argument("--quant-bits", metavar="LIST", help="round-to-nearest integer quantization (groups of 128), bits "
                   "as a comma list (default 8,4; 'none' for no such rows)")
    p.add_argument("--quant-formats", metavar="LIST",
                   help="GGUF formats, rounded as llama.cpp ships a model (gguf's own quantizers): comma list of "
                        "Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, Q4_K (Q4_K where the row width is a multiple of 256, else "
                        "llama.cpp's Q5_0 fallback); default Q8_0,Q4_1,Q4_0,Q5_0,Q4_K; 'none' for none. The base's "
                        "own format is always added when the base came from a GGUF file (smollm2-135m: Q4_1, "
                        "gemma3-270m: Q4_K_M)")
    p.add_argument("--languages", metavar="LIST", help="languages of the suite to use (default: all it holds)")
    p.add_argument("--no-control", action="store_true", help="do not relearn the base model as control")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", help="auto, float32, bfloat16, float16")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _ints(value: str, flag: str) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError as exc:
        raise EvalError(f"{flag} must be a comma list of integers, got {value!r}") from exc
    if not out or any(x < 1 for x in out):
        raise EvalError(f"{flag} must list positive integers, got {value!r}")
    return out


def _settings(args):
    from ..attacks.registry import parse_attacks
    from ..config import AttackConfig, EvalConfig, FinetuneConfig, Recipe
    from ..errors import RecipeError

    if args.recipe:
        recipe = Recipe.from_yaml(args.recipe)
        cfg, ecfg, lr = recipe.attack, recipe.eval, recipe.finetune.learning_rate
    else:
        cfg, ecfg, lr = AttackConfig(), EvalConfig(), FinetuneConfig().learning_rate
    if args.attacks is not None:
        cfg.attacks = parse_attacks(args.attacks)
    else:
        parse_attacks(cfg.attacks)
    try:
        if args.relearn_steps:
            cfg.relearn_steps = _ints(args.relearn_steps, "--relearn-steps")
        if args.in_context_k:
            cfg.in_context_k = _ints(args.in_context_k, "--in-context-k")
        if args.quant_bits:
            cfg.quant_bits = [] if args.quant_bits.strip() == "none" else _ints(args.quant_bits, "--quant-bits")
        if args.quant_formats:
            cfg.quant_formats = [] if args.quant_formats.strip() == "none" else [
                x.strip().upper() for x in args.quant_formats.split(",") if x.strip()]
        cfg.validate()  # the checks again, on the values given here
    except RecipeError as exc:
        raise EvalError(str(exc)) from exc
    if args.languages:
        cfg.languages = [x.strip() for x in args.languages.split(",") if x.strip()]
    if args.no_control:
        cfg.relearn_control = False
    if args.seed is not None:
        cfg.seed = ecfg.seed = args.seed
    for attr in ("max_new_tokens", "batch_size", "dtype", "device"):
        if getattr(args, attr) is not None:
            setattr(ecfg, attr, getattr(args, attr))
    try:  # the flags set after the checks above: --seed, --max-new-tokens, --batch-size, --dtype, --device
        cfg.validate()
        ecfg.validate()
    except RecipeError as exc:
        raise EvalError(f"{exc} (set by the flag of the same name)") from exc
    if args.relearn_lr is not None:
        if not 0 < args.relearn_lr < float("inf"):  # NaN fails this too
            raise EvalError(f"--relearn-lr must be a finite number > 0 (got {args.relearn_lr})")
        lr = args.relearn_lr
    elif cfg.relearn_lr is not None:
        lr = cfg.relearn_lr
    suites = list(args.suite) or list(cfg.suites) or list(ecfg.suites)
    return cfg, ecfg, lr, suites


def run(args) -> int:
    from ..attacks import _named_texts, attack, heldout_from_run
    from ..models import resolve_spec

    cfg, ecfg, lr, suites = _settings(args)
    if not suites:
        raise EvalError("give a prompt suite: --suite DIR (e.g. eval/sherlock_holmes)")
    for spec in (args.model, args.base):
        resolve_spec(spec)  # a missing or malformed model fails here, before anything is loaded
    heldout = heldout_from_run(args.run) if args.run else []
    for f in args.heldout:
        path = Path(f).expanduser()
        if not path.is_file():
            raise EvalError(f"held-out text not found: {path}")
        heldout.append(path.read_text(encoding="utf-8"))
    named = _named_texts(args.relearn_text) if args.relearn_text else _named_texts(cfg.relearn_texts)
    doc = attack(args.model, args.base, suites, args.out, config=cfg, eval_config=ecfg, heldout_texts=heldout,
                 relearn_texts=named, relearn_lr=lr, overwrite=args.overwrite, progress=not args.quiet)
    for r in doc["results"]:
        rec = r["recovery"].get(r["headline"], {}).get("recovery")
        vc = r["recovery"].get(r["headline"], {}).get("recovery_vs_control")
        u = r["scores"].get("unlearned", {})
        print(f"{r['attack']:<13} {r['variant']:<14} {r['suite']:<20} familiarity {_f(u.get('familiarity'))}  "
              f"P {_f(u.get('prob'))}  acc {_f(u.get('accuracy'))}  recovery {_f(rec)}  vs control {_f(vc)}")
    print(f"\nwrote {Path(args.out) / 'attack.json'}, {Path(args.out) / 'report.md'}"
          + "".join(f", {Path(args.out) / p}" for p in doc.get("plots", [])))
    return 0


def _f(v) -> str:
    return "   –  " if v is None else f"{v:6.3f}"
