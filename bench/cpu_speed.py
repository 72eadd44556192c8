#!/usr/bin/env python
"""CPU speed: bf16 vs float32 compute, and a training step on a machine shared with another busy process.

    python bench/cpu_speed.py                         # both sections, ~10 minutes on 2 idle cores
    python bench/cpu_speed.py --only dtype --repeats 5
    python bench/cpu_speed.py --only contention --markdown
    python bench/cpu_speed.py --only robust --out bench/results/robust_step_cost.json

dtype       SmolLM2-135M, blocks of the Sherlock corpus (256 tokens), float32 vs bf16, measured side by side,
            interleaved after a warm-up round (bench.common.interleaved), ratio of medians:
            forward        batch of 2, no grad: float32 weights vs bf16 weights (what ``dtype: auto`` loads for the
                           labels and evaluation stages on a CPU with native bf16) and vs float32 weights + autocast
            fwd+bwd        LoRA model, batch of 2: float32 vs bf16 autocast on float32 weights (mixed precision)
            labels batch   ``label_batch`` (both forward passes, masks, formula in float32, 3 alphas, top-32 soft
                           logits), batch of 4, float32 weights vs bf16 weights
            training step  LoRA step as the trainer makes it (forward under autocast when mixed precision is on,
                           float32 loss, backward, clip, AdamW on float32 state), batch of 4        goal >= 1.8x
            Also: how many hard labels bf16 changes (share of supervised positions identical to float32) and the
            mean KL between the float32 and bf16 soft labels (top-32 softmax).
robust      one training step of the unlearning fine-tune's kinds, batch 4 x 256, bf16 autocast, side by side
            (interleaved), each as a ratio to the demo's LoRA step: LoRA with sharpness-aware unlearning
            (``finetune.sam_rho``: two forward/backward passes), with meta-unlearning (``finetune.meta_relearn_step``:
            two forward/backward passes, two copies of the trained weights), full fine-tuning, full fine-tuning on the base
            file's Q4_1 grid (``finetune.quantization_aware: base``), and the same on the MLP only; a LoRA step
            with a retain term on one block, without and with the disruption mask (``finetune.disruption_mask``), and
            with collapse of irrelevant representations (``finetune.cir_components: 24``; its bases, taken once per
            stage, are not in the step).
contention  one training step (bf16, batch 4 x 256) alone vs with one competing CPU-bound process (a Python busy
            loop, one core), each configuration in a fresh process (OpenMP reads its wait policy at start-up):
            the package default (passive waiting, threads = physical cores) vs OpenMP's active spinning.
                                                                                      goal: with / alone <= 1.3

Results: a table on stdout, JSON in bench/results/ (``--out``); ``--markdown`` prints the table for
docs/performance.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    ALPHAS,
    LORA_TARGETS,
    RESULTS_DIR,
    interleaved,
    load_base,
    machine_info,
    make_reinforced,
    median,
    sherlock_blocks,
)

SECTIONS = ["dtype", "robust", "contention"]
SOFT_TOP_K = 32


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _batch(blocks, n: int):
    import torch

    return torch.tensor([b.input_ids for b in blocks[:n]], dtype=torch.long)


def _lora(model):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS)
    return get_peft_model(model, cfg)


def _train_step_fn(model, ids, bf16: bool):
    """One optimizer step the way the trainer makes it (accelerate wraps forward in autocast for bf16)."""
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.98))
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                                                 ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss)

    return step


def _fwd_bwd_fn(model, ids, bf16: bool):
    import torch

    model.train()

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                                                 ids[:, 1:].reshape(-1))
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss)

    return run


def _lm_loss(model, ids):
    """Next-token cross-entropy of ``ids`` under bf16 autocast (the robust section's main and retain terms)."""
    import torch

    from llm_unlearn.losses import token_nll

    with torch.autocast("cpu", dtype=torch.bfloat16):
        return token_nll(model(input_ids=ids).logits, ids)


def _sam_step_fn(model, ids, rho: float = 0.25):
    """A LoRA step with sharpness-aware unlearning as ``UnlearnTrainer`` makes it (SAM1-SAM3)."""
    import torch

    from llm_unlearn.robust import perturb_along_gradient, undo_perturbation

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98))
    model.train()

    def loss_of():
        return _lm_loss(model, ids)

    def step():
        loss_of().backward()
        shifts = perturb_along_gradient(params, rho)
        opt.zero_grad()
        loss = loss_of()
        loss.backward()
        undo_perturbation(params, shifts)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss.detach())

    return step


def _retain_step_fn(model, ids, retain_ids, masked: bool):
    """A LoRA step with a retain term on its own backward, as ``UnlearnTrainer`` runs it; ``masked``: with the
    disruption mask (DM1-DM2) between the two gradients and the optimizer."""
    import torch

    from llm_unlearn.robust import DisruptionMask

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98))
    mask = DisruptionMask()
    model.train()

    def loss_of(x):
        return _lm_loss(model, x)

    def step():
        loss = loss_of(ids)
        loss.backward()
        main = [p.grad for p in params]
        if masked:
            for p in params:
                p.grad = None
        loss_of(retain_ids).backward()
        if masked:
            for p, g in zip(params, mask.combine(main, [p.grad for p in params]), strict=True):
                p.grad = g
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss.detach())

    return step


def _cir_step_fn(model, ids, retain_ids, components: int = 24):
    """The retain-term LoRA step with collapse of irrelevant representations (CIR2-CIR3): the main gradient rebuilt
    from collapsed activations and output gradients; the bases (CIR1, once per stage) taken before, not timed."""
    import torch

    from llm_unlearn.robust import CollapseIrrelevant

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98))
    cir = CollapseIrrelevant(model, components)
    model.train()

    def loss_of(x):
        return _lm_loss(model, x)

    cir.collect(model, [{"input_ids": ids}], lambda b: loss_of(b["input_ids"]))
    log(f"robust: CIR bases over one batch in {cir.collect_seconds:.1f} s")

    def step():
        cir.capturing = True
        loss = loss_of(ids)
        loss.backward()
        cir.capturing = False
        cir.rebuild()
        main = [p.grad for p in params]
        for p in params:
            p.grad = None
        loss_of(retain_ids).backward()
        for p, g in zip(params, main, strict=True):
            p.grad = g if p.grad is None else p.grad + g
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss.detach())

    return step


def _meta_step_fn(model, ids, step_length: float = 1.0):
    """A LoRA step with meta-unlearning as ``UnlearnTrainer`` makes it (MU1-MU3): the relearner's own-text gradient,
    the main gradient at its weights, the trained weights back."""
    import torch

    from llm_unlearn.robust import MetaRelearner, own_text_loss

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98))
    meta = MetaRelearner(params, step_length)
    model.train()

    def step():
        trained = meta.enter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            own_text_loss(model, {"input_ids": ids}).backward()
        relearn = [p.grad for p in params]
        for p in params:
            p.grad = None
        loss = _lm_loss(model, ids)
        loss.backward()
        meta.relearn(relearn)
        meta.leave(trained)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss.detach())

    return step


def bench_robust(args) -> dict:
    from llm_unlearn.quant_aware import grid_training

    base, tok = load_base(dtype="float32")
    ids4 = _batch(sherlock_blocks(tok, max_blocks=4), 4)
    lora, lora_sam = _lora(copy.deepcopy(base)), _lora(copy.deepcopy(base))
    lora_retain, lora_masked = _lora(copy.deepcopy(base)), _lora(copy.deepcopy(base))
    lora_cir, lora_meta = _lora(copy.deepcopy(base)), _lora(copy.deepcopy(base))
    retain1 = ids4[:1].flip(-1).contiguous()  # one block of other text, as the demo's retain_batch_size 1
    full = copy.deepcopy(base)
    full_qa, mlp_qa = copy.deepcopy(base), copy.deepcopy(base)
    grid_training(full_qa, "base", "smollm2-135m", True)
    grid_training(mlp_qa, "base", "smollm2-135m", True, ["gate_proj", "up_proj", "down_proj"])
    fns = {"lora": _train_step_fn(lora, ids4, True), "lora_sam": _sam_step_fn(lora_sam, ids4),
           "lora_meta": _meta_step_fn(lora_meta, ids4),
           "full": _train_step_fn(full, ids4, True), "full_quantization_aware": _train_step_fn(full_qa, ids4, True),
           "mlp_quantization_aware": _train_step_fn(mlp_qa, ids4, True),
           "lora_retain": _retain_step_fn(lora_retain, ids4, retain1, False),
           "lora_retain_disruption_mask": _retain_step_fn(lora_masked, ids4, retain1, True),
           "lora_retain_cir": _cir_step_fn(lora_cir, ids4, retain1)}
    log("robust: training steps, batch 4 x 256, bf16 autocast")
    t, _ = interleaved(fns, args.repeats, log=log)
    ref = median(t["lora"])
    return {"seconds": t, "ratio_to_lora": {k: median(v) / ref for k, v in t.items()}}


# ---- dtype ------------------------------------------------------------------------------------------------------
def bench_dtype(args) -> dict:
    import torch

    from llm_unlearn.config import AnchorsConfig
    from llm_unlearn.whp.anchors import build_anchor_dictionary
    from llm_unlearn.whp.labels import LogitSource, label_blocks
    from llm_unlearn.whp.translation import Translator

    base32, tok = load_base(dtype="float32")
    base16 = copy.deepcopy(base32).to(torch.bfloat16)
    blocks = sherlock_blocks(tok, max_blocks=max(args.label_blocks, 4))
    ids2, ids4 = _batch(blocks, 2), _batch(blocks, 4)
    out: dict = {"threads": torch.get_num_threads(), "repeats": args.repeats}

    def forward(model, autocast=False):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return model(input_ids=ids2).logits.float().sum().item()
        return run

    log("dtype: forward, batch 2 x 256")
    t, _ = interleaved({"fp32": forward(base32), "bf16_weights": forward(base16),
                        "fp32_autocast": forward(base32, autocast=True)}, args.repeats, log=log)
    out["forward"] = {"seconds": t, "ratio_bf16_weights": median(t["fp32"]) / median(t["bf16_weights"]),
                      "ratio_autocast": median(t["fp32"]) / median(t["fp32_autocast"])}

    log("dtype: forward + backward, LoRA, batch 2 x 256")
    lora32 = _lora(copy.deepcopy(base32))
    lora_amp = _lora(copy.deepcopy(base32))
    t, _ = interleaved({"fp32": _fwd_bwd_fn(lora32, ids2, False), "bf16_autocast": _fwd_bwd_fn(lora_amp, ids2, True)},
                       args.repeats, log=log)
    out["forward_backward"] = {"seconds": t, "ratio": median(t["fp32"]) / median(t["bf16_autocast"])}

    log("dtype: training step, LoRA, batch 4 x 256")
    t, _ = interleaved({"fp32": _train_step_fn(lora32, ids4, False), "bf16_autocast": _train_step_fn(lora_amp, ids4, True)},
                       args.repeats, log=log)
    out["training_step"] = {"seconds": t, "ratio": median(t["fp32"]) / median(t["bf16_autocast"])}
    del lora32, lora_amp

    log(f"dtype: label generation, {args.label_blocks} blocks, batch 4, 3 alphas, top-{SOFT_TOP_K} soft logits")
    label_blocks_ = blocks[: args.label_blocks]
    idx = list(range(len(label_blocks_)))
    dictionary = build_anchor_dictionary([b.text for b in sherlock_blocks(tok, max_blocks=64)],
                                         AnchorsConfig(top_k=150, min_count=3, translations_per_key=3), progress=False)
    translator = Translator(dictionary, tok)
    reinforced32 = make_reinforced(base32)
    reinforced16 = copy.deepcopy(reinforced32).to(torch.bfloat16)  # same adapter weights, bf16 like `auto` loads
    src32, src16 = LogitSource(reinforced32), LogitSource(reinforced16)

    def labels(src):
        return lambda: label_blocks(src, label_blocks_, idx, translator, ALPHAS, 4, 0, tok.pad_token_id,
                                    progress=False, soft_top_k=SOFT_TOP_K)

    t, last = interleaved({"fp32": labels(src32), "bf16_weights": labels(src16)}, args.repeats, log=log)
    out["labels_batch"] = {"blocks": len(idx), "seconds": t, "ratio": median(t["fp32"]) / median(t["bf16_weights"])}
    out["labels_agreement"] = label_agreement(last["fp32"][0], last["bf16_weights"][0])
    return out


def label_agreement(rows32: list[dict], rows16: list[dict]) -> dict:
    """Per alpha: share of supervised positions whose hard label is the same in bf16 as in float32, and the mean
    KL(p32 || p16) of the soft labels (softmax over each side's stored top-k logits, on the union of their ids)."""
    import numpy as np

    from llm_unlearn.whp.labels import alpha_key, soft_keys

    out = {}
    for alpha in ALPHAS:
        key, (ids_key, val_key) = alpha_key(alpha), soft_keys(alpha)
        same = total = 0
        kls = []
        for r32, r16 in zip(rows32, rows16, strict=True):
            a, b = np.asarray(r32[key]), np.asarray(r16[key])
            sup = (a != -100) & (b != -100)
            same += int((a[sup] == b[sup]).sum())
            total += int(sup.sum())
            for pos in np.flatnonzero(sup):
                p = _topk_dist(r32[ids_key][pos], r32[val_key][pos])
                q = _topk_dist(r16[ids_key][pos], r16[val_key][pos])
                support = set(p) | set(q)
                eps = 1e-8
                kls.append(sum(p.get(i, eps) * (np.log(p.get(i, eps)) - np.log(q.get(i, eps))) for i in support))
        out[f"alpha_{alpha:g}"] = {"supervised": total, "identical_share": same / max(total, 1),
                                   "soft_kl_mean": float(np.mean(kls)) if kls else None,
                                   "soft_kl_p99": float(np.percentile(kls, 99)) if kls else None}
    return out


def _topk_dist(ids, logits) -> dict:
    import numpy as np

    v = np.asarray(logits, dtype=np.float64)
    p = np.exp(v - v.max())
    p /= p.sum()
    return {int(i): float(x) for i, x in zip(ids, p, strict=True)}


# ---- contention ---------------------------------------------------------------------------------------------------
def worker_step(args) -> None:
    """Child process: time ``--steps`` bf16 LoRA training steps (after one warm-up) and print JSON."""
    import torch

    base, tok = load_base(dtype="float32")
    model = _lora(base)
    ids = _batch(sherlock_blocks(tok, max_blocks=4), 4)
    step = _train_step_fn(model, ids, bf16=not args.fp32)
    step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"median": statistics.median(times), "times": times, "threads": torch.get_num_threads(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}), flush=True)


def _competitor() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True:\n    pass"], stdout=subprocess.DEVNULL)


def _run_worker(env_extra: dict, steps: int, competing: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(env_extra)
    comp = _competitor() if competing else None
    try:
        res = subprocess.run([sys.executable, __file__, "--worker-step", "--steps", str(steps)], env=env,
                             capture_output=True, text=True, timeout=1800)
    finally:
        if comp is not None:
            comp.send_signal(signal.SIGKILL)
            comp.wait()
    if res.returncode != 0:
        raise SystemExit(f"worker failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_contention(args) -> dict:
    configs = {"default (passive waiting)": {},  # llm_unlearn sets OMP_WAIT_POLICY=PASSIVE on import
               "active spinning": {"OMP_WAIT_POLICY": "ACTIVE"}}
    out = {"steps": args.steps, "competitor": "one Python busy loop (one core)", "configs": {}}
    for rnd in range(args.contention_rounds):
        for name, env in configs.items():
            for competing in (False, True):
                log(f"contention round {rnd + 1}: {name}, {'with' if competing else 'without'} a competing process")
                r = _run_worker(env, args.steps, competing)
                log(f"  median step {r['median']:.2f}s ({r['threads']} threads, OMP_WAIT_POLICY={r['omp_wait_policy']})")
                entry = out["configs"].setdefault(name, {"alone": [], "competing": []})
                entry["competing" if competing else "alone"].append(r["median"])
    for entry in out["configs"].values():
        entry["ratio"] = median(entry["competing"]) / median(entry["alone"])
    return out


# ---- report -----------------------------------------------------------------------------------------------------
def table(results: dict) -> list[tuple[str, str, str]]:
    rows = []
    d = results.get("dtype")
    if d:
        def secs(part, key):
            return f"{median(part['seconds'][key]):.2f} s"

        f = d["forward"]
        rows.append(("forward, 2 x 256 (bf16 weights)", f"{secs(f, 'fp32')} -> {secs(f, 'bf16_weights')}",
                     f"{f['ratio_bf16_weights']:.2f}x"))
        rows.append(("forward, 2 x 256 (fp32 weights, autocast)", f"{secs(f, 'fp32')} -> {secs(f, 'fp32_autocast')}",
                     f"{f['ratio_autocast']:.2f}x"))
        fb = d["forward_backward"]
        rows.append(("forward + backward, LoRA, 2 x 256", f"{secs(fb, 'fp32')} -> {secs(fb, 'bf16_autocast')}",
                     f"{fb['ratio']:.2f}x"))
        lb = d["labels_batch"]
        rows.append((f"labels, {lb['blocks']} blocks, batch 4", f"{secs(lb, 'fp32')} -> {secs(lb, 'bf16_weights')}",
                     f"{lb['ratio']:.2f}x"))
        ts = d["training_step"]
        rows.append(("training step, LoRA, 4 x 256 (goal >= 1.8x)", f"{secs(ts, 'fp32')} -> {secs(ts, 'bf16_autocast')}",
                     f"{ts['ratio']:.2f}x"))
        for alpha, a in d["labels_agreement"].items():
            rows.append((f"labels identical to fp32, {alpha}", f"{a['supervised']} positions",
                         f"{100 * a['identical_share']:.2f}% (soft KL {a['soft_kl_mean']:.4f})"))
    r = results.get("robust")
    if r:
        for name in ("lora_sam", "full", "full_quantization_aware", "mlp_quantization_aware", "lora_retain",
                     "lora_retain_disruption_mask", "lora_retain_cir"):
            if name not in r["seconds"]:
                continue
            rows.append((f"training step, {name.replace('_', ' ')} vs LoRA",
                         f"{median(r['seconds']['lora']):.2f} s -> {median(r['seconds'][name]):.2f} s",
                         f"{r['ratio_to_lora'][name]:.2f}x"))
    c = results.get("contention")
    if c:
        for name, e in c["configs"].items():
            rows.append((f"step with a competing process, {name} (goal <= 1.3)",
                         f"{median(e['alone']):.2f} s -> {median(e['competing']):.2f} s", f"{e['ratio']:.2f}x"))
    return rows


def print_table(rows, markdown: bool) -> str:
    if markdown:
        lines = ["| measure | float32 -> bf16 (or alone -> competing) | ratio |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    else:
        w = max(len(r[0]) for r in rows)
        lines = [f"{a:<{w}}  {b:<28} {c}" for a, b, c in rows]
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="llm-unlearn CPU speed benchmarks (bf16 vs float32, thread contention)",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections ({', '.join(SECTIONS)})")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per side (after one warm-up round)")
    ap.add_argument("--label-blocks", type=int, default=8, help="Sherlock blocks for the labels comparison")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per contention configuration")
    ap.add_argument("--contention-rounds", type=int, default=1, help="repeat the contention grid (median of rounds)")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default bench/results/cpu_speed.json)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--worker-step", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fp32", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker_step:
        worker_step(args)
        return 0
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    results: dict = {"machine": machine_info(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for name in sections:
        t0 = time.perf_counter()
        results[name] = {"dtype": bench_dtype, "robust": bench_robust, "contention": bench_contention}[name](args)
        results[name]["section_seconds"] = time.perf_counter() - t0
    rows = table(results)
    results["table_markdown"] = print_table(rows, args.markdown)
    out = args.out or RESULTS_DIR / "cpu_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
