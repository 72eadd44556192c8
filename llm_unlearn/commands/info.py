"""`llm-unlearn info MODEL`: what a model spec loads to."""

from __future__ import annotations

import time


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="load a model spec and print its architecture, size and origin")
    p.add_argument("model", help="alias (smollm2-135m, gemma3-270m), .gguf file, local folder or Hub id")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the Hub")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..hardware import describe_compute
    from ..models import default_device, describe, load_model

    t0 = time.perf_counter()
    model, tokenizer = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    facts = describe(model, tokenizer)
    facts["load_seconds"] = round(time.perf_counter() - t0, 2)
    # What a run would compute in on this machine (llm_unlearn.hardware): inference stages use `dtype` above.
    compute = describe_compute(default_device(), args.dtype)
    facts["compute_dtype"] = compute["compute_dtype"]
    facts["training"] = compute["training"]
    facts["cpu_bf16_native"] = compute["cpu_bf16_native"]
    facts["threads"] = compute["threads"]
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if key == "parameters":
            value = f"{value:,} ({value / 1e6:.1f}M)"
        print(f"{key:<{width}}  {value}")
    return 0
