"""GGUF rounding: the model as llama.cpp would run it after ``llama-quantize``, back in full precision.

* GG1: a weight goes through the GGUF block format and back: ``gguf.quants.quantize`` then
  ``gguf.quants.dequantize`` (gguf-py, the reference encoders of ggml-quants.c) for Q8_0, Q5_1, Q5_0, Q4_1 and
  Q4_0 (blocks of 32 along a row). gguf-py has no encoder for the k-quants, so Q4_K and Q6_K are written here in
  the GGUF byte layout and decoded by ``gguf.quants.dequantize``: Q4_K (super-blocks of 256: 8 sub-blocks of 32,
  each with a 6-bit scale and a 6-bit min relative to two fp16 numbers) fits each sub-block by its min and max
  (ggml's ``quantize_row_q4_K_ref`` refines this fit with ``make_qkx2_quants``, so its error is at most ours);
  Q6_K (16 sub-blocks of 16 with int8 scales) by each sub-block's largest magnitude.
* GG2: a k-quant needs rows whose width is a multiple of 256; other rows take llama.cpp's fallback
  (``llama_tensor_get_type``: Q4_K -> Q5_0, Q6_K -> Q8_0), and rows not a multiple of 32 stay as they are
  (llama.cpp keeps them in F16). Which layers fell back is reported.
* GG3: a named format (``Q4_0`` ...) rounds every linear layer of the transformer blocks (ATK-Q2); the embeddings
  and the LM head stay in full precision. The base's own format (``base_file_format``): when the base model came
  from a GGUF file, every tensor gets the type that tensor has in that file (so SmolLM2's ``Q4_1`` file also
  rounds the tied embedding to Q8_0, as the file does). Tensor names are matched with gguf's own HF -> GGUF name
  map; the rows of Q and K that the converter permutes for rotary embeddings keep their blocks (blocks run along
  a row), so rounding the Hugging Face weight equals rounding the file's tensor.
* GG4: the quantization step of a weight: Q8_0 ``max|x| / 127``, Q4_0 ``max|x| / 8``, Q5_0 ``max|x| / 16``,
  Q4_1 ``(max - min) / 15``, Q5_1 ``(max - min) / 31`` over its block of 32; Q4_K ``(max - min) / 15`` over its
  sub-block of 32; Q6_K ``max|x| / 32`` over its sub-block of 16. A change smaller than half a step of the base
  weight's block mostly rounds back to the base's code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

logger = logging.getLogger(__name__)

FORMATS = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "Q4_K")  # what `attack` offers by name
DEFAULT_FORMATS = ["Q8_0", "Q4_1", "Q4_0", "Q5_0", "Q4_K"]
K_FALLBACK = {"Q4_K": "Q5_0", "Q6_K": "Q8_0"}  # llama.cpp llama_tensor_get_type, row width % 256 != 0
QK_K = 256
_FLOAT_TYPES = {"F32", "F16", "BF16", "F64"}


def _qtype(name: str):
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType[name]
    except KeyError as exc:
        raise ValueError(f"unknown GGUF format {name!r}") from exc


def block_size(fmt: str) -> int:
    from gguf import GGML_QUANT_SIZES

    return GGML_QUANT_SIZES[_qtype(fmt)][0]


def effective_format(fmt: str, width: int) -> str | None:
    """GG2: the format a row of ``width`` gets (``fmt``, its k-quant fallback, or None = kept as is)."""
    if width % block_size(fmt) == 0:
        return fmt
    fb = K_FALLBACK.get(fmt)
    if fb and width % block_size(fb) == 0:
        return fb
    return None


# ---- k-quant encoders (GG1): GGUF byte layout, decoded by gguf's own dequantize ---------------------------------
def _fp16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


def _qkx2(x: np.ndarray, w: np.ndarray, nmax: int = 15, rmin: float = -1.0, rdelta: float = 0.1,
          nstep: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """ggml's ``make_qkx2_quants`` over rows of ``x`` (sub-blocks) with weights ``w``: (scale, offset) per row,
    ``x ~ scale * q - offset`` with q in 0..nmax: the min/max fit, then ``nstep + 1`` candidate scales, each refit by
    weighted least squares, the one with the smallest weighted squared error kept."""
    f32 = np.float32
    mn = np.minimum(x.min(1), f32(0))
    mx = x.max(1)
    flat = mx == mn
    rng = np.where(flat, f32(1), mx - mn)
    iscale = f32(nmax) / rng
    scale = f32(1) / iscale
    q = np.clip(np.rint(iscale[:, None] * (x - mn[:, None])), 0, nmax)
    err = (w * (scale[:, None] * q + mn[:, None] - x) ** 2).sum(1)
    sum_w, sum_x = w.sum(1), (w * x).sum(1)
    for i in range(nstep + 1):
        isc = (f32(rmin) + f32(rdelta) * f32(i) + f32(nmax)) / rng
        qa = np.clip(np.rint(isc[:, None] * (x - mn[:, None])), 0, nmax)
        sl, sl2, sxl = (w * qa).sum(1), (w * qa * qa).sum(1), (w * qa * x).sum(1)
        d = sum_w * sl2 - sl * sl
        with np.errstate(divide="ignore", invalid="ignore"):
            ts = (sum_w * sxl - sum_x * sl) / d
            tm = (sl2 * sum_x - sl * sxl) / d
            pos = tm > 0
            tm = np.where(pos, f32(0), tm)
            ts = np.where(pos, sxl / sl2, ts)
        cur = (w * (ts[:, None] * qa + tm[:, None] - x) ** 2).sum(1)
        better = (d > 0) & (cur < err) & ~flat
        err = np.where(better, cur, err)
        scale = np.where(better, ts, scale)
        mn = np.where(better, tm, mn)
    scale = np.where(flat, f32(0), scale)
    return scale.astype(f32), (-mn).astype(f32)


def encode_q4_k(rows: np.ndarray) -> np.ndarray:
    """Q4_K blocks (144 bytes per 256 weights: d, dmin, 12 bytes of packed 6-bit scales and mins, 128 of codes),
    fitted as ggml's ``quantize_row_q4_K_ref``: per sub-block of 32, ``make_qkx2_quants`` with weights
    ``sqrt(mean x^2) + |x|``; the sub-block scales and mins in 6 bits against fp16 d and dmin; codes again with
    those."""
    f32 = np.float32
    x = rows.astype(f32).reshape(-1, 32)
    w = np.sqrt((x * x).mean(1, keepdims=True)) + np.abs(x)
    scales, mins = _qkx2(x, w)
    scales, mins = scales.reshape(-1, 8), mins.reshape(-1, 8)
    nb = scales.shape[0]
    max_scale, max_min = scales.max(1), mins.max(1)
    with np.errstate(divide="ignore"):
        inv_s = np.where(max_scale > 0, f32(63) / max_scale, f32(0))
        inv_m = np.where(max_min > 0, f32(63) / max_min, f32(0))
    sc = np.minimum(63, np.rint(inv_s[:, None] * scales)).astype(np.uint8)
    m = np.minimum(63, np.rint(inv_m[:, None] * mins)).astype(np.uint8)
    d = _fp16(max_scale / f32(63))
    dmin = _fp16(max_min / f32(63))
    eff_d = (d.astype(f32)[:, None] * sc)[..., None]
    eff_m = (dmin.astype(f32)[:, None] * m)[..., None]
    xs = x.reshape(nb, 8, 32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(eff_d > 0, np.clip(np.rint((xs + eff_m) / eff_d), 0, 15), 0).astype(np.uint8)
    packed = np.empty((nb, 12), dtype=np.uint8)
    packed[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    packed[:, 4:8] = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    q = q.reshape(nb, 4, 2, 32)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(nb, 128)
    return np.concatenate([d.reshape(nb, 1).view(np.uint8), dmin.reshape(nb, 1).view(np.uint8), packed, qs], axis=1)


def _qx(x: np.ndarray, nmax: int = 32) -> np.ndarray:
    """ggml's ``make_qx_quants`` with rmse_type 1 (weights x^2) over rows of ``x``: the signed scale per row,
    ``x ~ scale * q`` with q in -nmax..nmax-1, the best of 19 candidate scales by weighted least squares."""
    f32 = np.float32
    imax = np.abs(x).argmax(1)[:, None]
    mx = np.take_along_axis(x, imax, 1)[:, 0]
    zero = np.abs(mx) < f32(1e-15)
    mxs = np.where(zero, f32(1), mx)
    w = x * x

    def fit(iscale):
        q = np.clip(np.rint(iscale[:, None] * x), -nmax, nmax - 1)
        return (w * x * q).sum(1), (w * q * q).sum(1)

    sumlx, suml2 = fit(f32(-nmax) / mxs)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 > 0, sumlx / suml2, f32(0))
    best = scale * sumlx
    for i in range(-9, 10):
        if i == 0:
            continue
        slx, sl2 = fit(-(f32(nmax) + f32(0.1) * f32(i)) / mxs)
        better = (sl2 > 0) & (slx * slx > best * sl2)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(better, slx / sl2, scale)
        best = np.where(better, scale * slx, best)
    return np.where(zero, f32(0), scale).astype(f32)


def encode_q6_k(rows: np.ndarray) -> np.ndarray:
    """Q6_K blocks (210 bytes per 256 weights: 128 bytes of low nibbles, 64 of high bits, 16 int8 scales, d),
    fitted as ggml's ``quantize_row_q6_K_ref``: per sub-block of 16, ``make_qx_quants(16, 32, rmse_type 1)``; the
    sub-block scales in int8 against fp16 d = -max_scale / 128; codes again with those."""
    f32 = np.float32
    x = rows.astype(f32).reshape(-1, 16)
    scales = _qx(x).reshape(-1, 16)
    nb = scales.shape[0]
    imax = np.abs(scales).argmax(1)[:, None]
    max_scale = np.take_along_axis(scales, imax, 1)[:, 0]
    zero = np.abs(max_scale) < f32(1e-15)
    iscale = np.where(zero, f32(0), f32(-128) / np.where(zero, f32(1), max_scale))
    with np.errstate(divide="ignore"):
        d = _fp16(np.where(zero, f32(0), f32(1) / np.where(zero, f32(1), iscale)))
    sc = np.minimum(127, np.rint(iscale[:, None] * scales)).astype(np.int8)
    eff = (d.astype(f32)[:, None] * sc)[..., None]
    xs = x.reshape(nb, 16, 16)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(eff != 0, np.clip(np.rint(xs / eff), -32, 31), 0).astype(np.int16)
    q6 = (q + 32).astype(np.uint8).reshape(nb, QK_K)
    low, high = q6 & 0x0F, q6 >> 4
    low = low.reshape(nb, 2, 2, 64)
    ql = (low[:, :, 0, :] | (low[:, :, 1, :] << 4)).reshape(nb, 128)
    high = high.reshape(nb, 2, 4, 32)
    qh = (high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)).reshape(nb, 64)
    return np.concatenate([ql, qh, sc.view(np.uint8), d.reshape(nb, 1).view(np.uint8)], axis=1)


_ENCODERS = {"Q4_K": encode_q4_k, "Q6_K": encode_q6_k}


def quantize_array(arr: np.ndarray, fmt: str) -> np.ndarray:
    """GG1: GGUF bytes of a float32 array whose last axis is a multiple of the format's block."""
    from gguf import quants

    if fmt in _ENCODERS:
        flat = arr.reshape(-1, QK_K)
        return _ENCODERS[fmt](flat).reshape(*arr.shape[:-1], -1)
    return quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), _qtype(fmt))


def round_trip_array(arr: np.ndarray, fmt: str) -> np.ndarray:
    from gguf import quants

    return quants.dequantize(quantize_array(arr, fmt), _qtype(fmt)).reshape(arr.shape)


def round_trip(weight: torch.Tensor, fmt: str) -> tuple[torch.Tensor, str | None]:
    """GG1/GG2: (rounded copy of a 2-D weight in its dtype, the format used or None when kept)."""
    used = effective_format(fmt, weight.shape[-1])
    if used is None:
        return weight.detach().clone(), None
    out = round_trip_array(weight.detach().float().cpu().numpy(), used)
    return torch.from_numpy(out).to(dtype=weight.dtype, device=weight.device), used


def step_size(weight: torch.Tensor, fmt: str) -> torch.Tensor:
    """GG4: the quantization step of every weight of a 2-D tensor in ``fmt`` (its k-quant fallback where needed)."""
    used = effective_format(fmt, weight.shape[-1])
    if used is None:
        return torch.zeros_like(weight, dtype=torch.float32)
    group = 16 if used == "Q6_K" else 32
    w = weight.detach().float().reshape(weight.shape[0], -1, group)
    amax, mx, mn = w.abs().amax(-1), w.amax(-1), w.amin(-1)
    step = {"Q8_0": amax / 127, "Q4_0": amax / 8, "Q5_0": amax / 16, "Q6_K": amax / 32,
            "Q4_1": (mx - mn) / 15, "Q5_1": (mx - mn) / 31,
            "Q4_K": (mx - torch.clamp(mn, max=0)) / 15}[used]
    return step[..., None].expand_as(w).reshape(weight.shape)


# ---- which tensors get which format (GG3) --------------------------------------------------------------------
@dataclass
class Plan:
    """Which parameter gets which GGUF format."""

    label: str  # "Q4_1", or the base file's type, e.g. "Q4_1 (base file)"
    types: dict[str, str]  # parameter name -> format
    from_file: bool = False
    notes: list[str] = field(default_factory=list)


def quantized_linears(model) -> dict[str, torch.nn.Linear]:
    """ATK-Q2: the linear layers that get quantized (not the embeddings, not the LM head)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {name: mod for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and mod is not head and not name.endswith("lm_head")}


def linear_plan(model, fmt: str) -> Plan:
    """GG3: every linear layer of the transformer blocks in ``fmt``."""
    return Plan(fmt, {f"{name}.weight": fmt for name in quantized_linears(model)})


def file_types(path) -> tuple[str, str, dict[str, str], int]:
    """(architecture, file type label, {GGUF tensor name: type}, blocks) of a GGUF file."""
    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(str(path))

    def field_value(key):
        f = reader.fields.get(key)
        if f is None:
            return None
        part = f.parts[f.data[0]]
        return bytes(part).decode() if f.types and f.types[0].name == "STRING" else int(part[0])

    arch = field_value("general.architecture")
    ftype = field_value("general.file_type")
    try:
        label = LlamaFileType(ftype).name.removeprefix("MOSTLY_") if ftype is not None else "unknown"
    except ValueError:
        label = f"file type {ftype}"
    blocks = field_value(f"{arch}.block_count") or 0
    return arch, label, {t.name: t.tensor_type.name for t in reader.tensors}, int(blocks)


def file_plan(model, path) -> Plan:
    """GG3: each parameter of ``model`` in the type its tensor has in the GGUF file at ``path``."""
    from gguf.constants import MODEL_ARCH_NAMES
    from gguf.tensor_mapping import get_tensor_name_map

    arch, label, types, blocks = file_types(path)
    arch_enum = {v: k for k, v in MODEL_ARCH_NAMES.items()}.get(arch)
    if arch_enum is None:
        raise ValueError(f"gguf does not know the architecture {arch!r} of {path}")
    name_map = get_tensor_name_map(arch_enum, blocks)
    plan = Plan(f"{label} (base file)", {}, from_file=True)
    unmatched = []
    for name, param in model.named_parameters():
        if param.dim() != 2:
            continue
        gname = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        t = types.get(gname) if gname else None
        if t is None:
            unmatched.append(name)
        elif t not in _FLOAT_TYPES:
            plan.types[name] = t
    if unmatched:
        plan.notes.append(f"{len(unmatched)} weights not in the file, kept: {', '.join(unmatched[:4])}")
    return plan


def base_gguf_path(spec: str):
    """The GGUF file a base spec came from (a .gguf path or a packaged alias), else None. A chunked package is
    assembled into a temporary file: the caller removes ``(path, tmp_dir)[1]`` when not None."""
    from .models import _packaged_gguf_path, resolve_spec

    try:
        r = resolve_spec(spec)
    except Exception:  # noqa: BLE001 - a spec that does not resolve has no file
        return None, None
    if r.kind == "gguf":
        return r.path, None
    if r.kind == "alias" and r.packaged is not None:
        path = _packaged_gguf_path(r.packaged)
        tmp = path.parent if path.parent.name.startswith(f"{r.packaged.alias}.tmp-") else None
        return path, tmp
    return None, None


def base_plan(model, spec: str) -> Plan | None:
    """GG3: the base's own format, or None when the base did not come from a GGUF file."""
    import shutil

    path, tmp = base_gguf_path(spec)
    if path is None:
        return None
    try:
        return file_plan(model, path)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# ---- applying a plan -------------------------------------------------------------------------------------------
@torch.no_grad()
def apply_plan_(model, plan: Plan) -> dict:
    """Round the planned parameters of ``model`` in place; returns {format used: count, "kept": names}."""
    params = dict(model.named_parameters())
    used: dict = {}
    kept = []
    for name, fmt in plan.types.items():
        p = params.get(name)
        if p is None:
            continue
        new, got = round_trip(p.data, fmt)
        if got is None:
            kept.append(name)
            continue
        p.data.copy_(new)
        used[got] = used.get(got, 0) + 1
    return {"formats": used, "kept": kept}


def rounded_copy(model, plan: Plan):
    import copy

    q = copy.deepcopy(model)
    info = apply_plan_(q, plan)
    return q, info


@torch.no_grad()
def delta_vs_steps(base_model, unlearned_model, plan: Plan) -> dict | None:
    """GG4 and ATK-Q4 for a GGUF plan, over the planned weights both models share.

    ``share_below_half_step``: of the weights the unlearning changed, the share whose change is smaller than half
    a step of the base weight's block; ``projection``/``cosine``/``norm_ratio`` as ATK-Q4 with dQ = R(W_u) - R(W_b);
    ``share_changed_after``: share of all weights whose rounded value differs between the two models.
    """
    b_params, u_params = dict(base_model.named_parameters()), dict(unlearned_model.named_parameters())
    d2 = qd2 = dot = 0.0
    nonzero = below = changed = total = 0
    layers = 0
    for name, fmt in plan.types.items():
        wb, wu = b_params.get(name), u_params.get(name)
        if wb is None or wu is None or wb.shape != wu.shape or effective_format(fmt, wb.shape[-1]) is None:
            continue
        wb, wu = wb.detach().float().cpu(), wu.detach().float().cpu()
        dw = wu - wb
        mask = dw != 0
        rb, _ = round_trip(wb, fmt)
        ru, _ = round_trip(wu, fmt)
        dq = ru - rb
        step = step_size(wb, fmt)
        d2 += float((dw * dw).sum())
        qd2 += float((dq * dq).sum())
        dot += float((dw * dq).sum())
        nonzero += int(mask.sum())
        below += int(((dw.abs() < step / 2) & mask).sum())
        changed += int((dq != 0).sum())
        total += dw.numel()
        layers += 1
    if not layers:
        return None
    dn, qn = d2 ** 0.5, qd2 ** 0.5
    return {"format": plan.label, "layers": layers, "delta_norm": dn, "quantized_delta_norm": qn,
            "projection": dot / d2 if d2 > 0 else None, "norm_ratio": qn / dn if dn > 0 else None,
            "cosine": dot / (dn * qn) if dn > 0 and qn > 0 else None,
            "share_delta_nonzero": nonzero / total, "share_changed_after": changed / total,
            "share_below_half_step": below / nonzero if nonzero else None}


# ---- the warning `llm-unlearn run` prints under its before/after table (GG5) -------------------------------------
WARN_SHARE = 0.5


def rounding_check(base_model, unlearned_model, plan: Plan) -> dict | None:
    """GG5: ``delta_vs_steps`` of the unlearned model against the base in the base's own format, with ``warn`` set
    when most changed weights moved by less than half a quantization step (so rounding the unlearned model to the
    base's format mostly gives back the base's weights)."""
    d = delta_vs_steps(base_model, unlearned_model, plan)
    if d is None or d.get("share_below_half_step") is None:
        return None
    d["warn"] = d["share_below_half_step"] > WARN_SHARE
    return d


def rounding_message(check: dict | None) -> str | None:
    if not check or not check.get("warn"):
        return None
    fmt = check["format"].split(" ")[0]
    return (f"warning: {check['share_below_half_step']:.0%} of the weights unlearning changed moved by less than half "
            f"a {fmt} quantization step of the base; shipped in the base's own format ({fmt}), rounding gives back "
            f"the base's weights (the rounded change keeps {check['projection']:.0%} of itself in its own "
            "direction). Check with: llm-unlearn attack --attacks quantization")


def run_rounding_check(base_spec: str, model_path, dtype: str = "float32") -> dict | None:
    """GG5 for a run: None unless the base came from a GGUF file (then both models are loaded on the CPU)."""
    import shutil

    path, tmp = base_gguf_path(base_spec)
    if path is None:
        return None
    from .models import load_model

    try:
        base, _ = load_model(base_spec, dtype=dtype, device="cpu")
        plan = file_plan(base, path)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    unlearned, _ = load_model(str(model_path), dtype=dtype, device="cpu")
    return rounding_check(base, unlearned, plan)
