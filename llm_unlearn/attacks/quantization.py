"""Quantization: round the weights to int8 / 4-bit and score again (Zhang et al. 2025 restored forgotten knowledge
this way).

* ATK-Q1: weight-only, symmetric, per output channel in groups of ``group_size`` input columns (the last group
  of a row may be shorter), round-to-nearest: ``scale = max|w| / qmax`` per group, ``q = clamp(round(w / scale),
  -qmax, qmax)``, ``qmax = 2**(bits-1) - 1``, and the weight becomes ``q * scale`` (fake quantization in plain
  torch, so it runs on CPU). A weight already of that form (integers times the group's scale, with the group's
  maximum magnitude reached) comes back exactly.
* ATK-Q2: every ``nn.Linear`` of the transformer blocks is quantized; the embeddings and the LM head stay in
  full precision (as usual for weight-only schemes; the head is tied to the embeddings in small models).
* ATK-Q3: the base model is quantized the same way (control).
* ATK-Q4: how far the unlearning delta survives rounding. With ``dW = W_unlearned - W_base`` on the quantized
  layers and ``dQ = Q(W_base + dW) - Q(W_base)`` (sums over all layers): ``projection = <dQ, dW> / ||dW||^2``
  (the part of the delta kept in its own direction: 1 = all of it), ``cosine(dQ, dW)`` (how much of what
  rounding leaves is the delta rather than noise), ``norm_ratio = ||dQ|| / ||dW||``, the share of integer
  codes that change at all, and the mean ``|dW|`` in quantization steps. A delta much smaller than a step is
  not rounded to zero on average: a few weights near a rounding boundary jump a whole step, so ``norm_ratio``
  can exceed 1 while ``cosine`` is small; the delta becomes sparse, large noise in its direction.
* ATK-Q5: deployment formats: the model rounded to GGUF block formats (``attack.quant_formats``: Q8_0, Q5_1,
  Q5_0, Q4_1, Q4_0, Q4_K) as llama.cpp would ship it, always with the base's own format first when the base came
  from a GGUF file (rules GG1-GG4 in :mod:`.gguf_formats`); the base model rounded the same way is the control.
"""

from __future__ import annotations

import copy

import torch

from ..gguf_formats import quantized_linears  # ATK-Q2 (one definition for both roundings)
from .base import AttackContext, Row

NAME = "quantization"


def quantize_codes(weight: torch.Tensor, bits: int, group_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """ATK-Q1: (integer codes, per-weight scale), both float32 and shaped like the 2-D weight."""
    if weight.dim() != 2:
        raise ValueError("quantization expects a 2-D weight (out_features, in_features)")
    if bits < 2 or group_size < 1:
        raise ValueError("bits must be >= 2 and group_size >= 1")
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    out, cols = w.shape
    pad = (-cols) % group_size
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))  # zero padding never raises a group's max
    groups = w.view(out, -1, group_size)
    scale = groups.abs().amax(-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group stays zero
    q = torch.clamp(torch.round(groups / scale), -qmax, qmax)
    return q.view(out, -1)[:, :cols], scale.expand(-1, -1, group_size).reshape(out, -1)[:, :cols]


def quantize_tensor(weight: torch.Tensor, bits: int, group_size: int = 128) -> torch.Tensor:
    """ATK-Q1: the fake-quantized copy of a 2-D weight (out_features x in_features), same dtype."""
    q, scale = quantize_codes(weight, bits, group_size)
    return (q * scale).to(weight.dtype)


@torch.no_grad()
def quantize_model_(model, bits: int, group_size: int = 128) -> int:
    """Fake-quantize the model's linear layers in place; returns how many were quantized."""
    layers = quantized_linears(model)
    for mod in layers.values():
        mod.weight.copy_(quantize_tensor(mod.weight, bits, group_size))
    return len(layers)


def quantized_copy(model, bits: int, group_size: int = 128):
    q = copy.deepcopy(model)
    quantize_model_(q, bits, group_size)
    return q


@torch.no_grad()
def delta_survival(base_model, unlearned_model, bits: int, group_size: int = 128) -> dict | None:
    """ATK-Q4 over the layers both models share; None when they do not share any (different architectures)."""
    b_layers, u_layers = quantized_linears(base_model), quantized_linears(unlearned_model)
    names = [n for n in b_layers if n in u_layers and b_layers[n].weight.shape == u_layers[n].weight.shape]
    if not names:
        return None
    d2 = qd2 = dot = 0.0
    changed = total = nonzero = 0
    step_ratio_sum = 0.0
    for n in names:
        wb, wu = b_layers[n].weight.detach().float().cpu(), u_layers[n].weight.detach().float().cpu()
        dw = wu - wb
        qb, step = quantize_codes(wb, bits, group_size)
        qu, step_u = quantize_codes(wu, bits, group_size)
        qdw = qu * step_u - qb * step
        d2 += float((dw * dw).sum())
        qd2 += float((qdw * qdw).sum())
        dot += float((dw * qdw).sum())
        changed += int((qu != qb).sum())
        nonzero += int((dw != 0).sum())
        total += dw.numel()
        step_ratio_sum += float((dw.abs() / step).sum())
    dn, qn = d2 ** 0.5, qd2 ** 0.5
    return {"bits": bits, "group_size": group_size, "layers": len(names), "delta_norm": dn, "quantized_delta_norm": qn,
            "projection": dot / d2 if d2 > 0 else None, "norm_ratio": qn / dn if dn > 0 else None,
            "cosine": dot / (dn * qn) if dn > 0 and qn > 0 else None,
            "share_delta_nonzero": nonzero / total, "share_codes_changed": changed / total,
            "mean_abs_delta_in_steps": step_ratio_sum / total}


def run(ctx: AttackContext) -> list[Row]:
    rows = []
    gs = ctx.config.quant_group_size
    for bits in ctx.config.quant_bits:
        variant = f"int{bits}"
        survival = delta_survival(ctx.base[0], ctx.unlearned[0], bits, gs)
        for label, model, tok in ctx.models():
            q = quantized_copy(model, bits, gs)
            try:
                for suite in ctx.suites:
                    m = ctx.scorer.suite(q, tok, suite, label=f"{variant} {label}")
                    rows.append(Row(NAME, variant, suite.name, label, m,
                                    info={"delta_survival": survival} if label == "unlearned" else {}))
            finally:
                del q
    for plan in gguf_plans(ctx):
        rows += _gguf_rows(ctx, plan)
    return rows


def gguf_plans(ctx: AttackContext) -> list:
    """ATK-Q5: the base's own GGUF format first (when the base came from a GGUF file), then each format of
    ``attack.quant_formats`` (GG3); a format equal to the base file's type is measured once, as the file's."""
    from ..gguf_formats import base_plan, linear_plan

    plans = []
    base = base_plan(ctx.base[0], ctx.base_spec) if ctx.base_spec else None
    if base is not None:
        plans.append(base)
    for fmt in ctx.config.quant_formats:
        if base is not None and base.label.split(" ")[0] == fmt:
            continue
        plans.append(linear_plan(ctx.unlearned[0], fmt))
    return plans


def _gguf_rows(ctx: AttackContext, plan) -> list[Row]:
    """ATK-Q5: base and unlearned model rounded by one GGUF plan (the base is the control, ATK-Q3)."""
    from ..gguf_formats import delta_vs_steps, rounded_copy

    rows = []
    variant = f"gguf {plan.label}"
    survival = delta_vs_steps(ctx.base[0], ctx.unlearned[0], plan)
    for label, model, tok in ctx.models():
        q, applied = rounded_copy(model, plan)
        try:
            for suite in ctx.suites:
                m = ctx.scorer.suite(q, tok, suite, label=f"{variant} {label}")
                info = {"gguf": {**applied, "notes": plan.notes, "from_file": plan.from_file}}
                if label == "unlearned":
                    info["gguf_delta"] = survival
                rows.append(Row(NAME, variant, suite.name, label, m, info=info))
        finally:
            del q
    return rows
