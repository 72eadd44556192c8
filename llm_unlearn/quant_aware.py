"""Quantization-aware unlearning: train the weights that the shipped GGUF file will hold.

A model unlearned by small weight changes and then rounded to a 4-bit GGUF format gets its base weights back
(every change under half a quantization step rounds to the base's code). Here the training forward already sees
the weights on the grid of the shipped format, so what is evaluated is what ships.

* QA1 (the grid): every block of 32 along a row of a BASE weight fixes a grid as gguf's encoder
  (``gguf.quants``) does: Q4_1 / Q5_1 ``d = fp16((max - min) / n)``, ``m = fp16(min)``, value ``m + d*c`` with
  codes ``c`` in 0..n (n = 15 / 31); Q4_0 / Q5_0 ``d = fp16(v / -h)`` with ``v`` the block's value of largest
  magnitude (h = 8 / 16), value ``d*c``, ``c`` in -h..h-1; Q8_0 ``d = fp16(max|x| / 127)``, ``c`` in -127..127.
  Rows whose width is not a multiple of 32 stay in full precision in llama.cpp, and here they do not train.
* QA2 (the forward): a weight on a grid enters the forward as its nearest grid value (code clamped to the
  range) with a straight-through gradient (``d w_q / d w = 1``): the latent weight moves with the gradient, the
  forward changes once a code flips.
* QA3 (the fixed entries): the entries that fix a block's grid (its min and max for Q4_1 / Q5_1, its entries of
  largest magnitude otherwise) keep their base code, so re-encoding a trained block gives the same ``d`` and ``m``.
* QA4 (what trains): only the weights on a grid, of the layers ``finetune.target_modules`` names (all seven
  projections by default; ``[gate_proj, up_proj, down_proj]`` trains the MLP only); embeddings, norms, the head and
  rows left in full precision are frozen. It needs full fine-tuning: a LoRA adapter's merged change would be
  rounded again.
* QA5 (what is kept): before the kept weights are saved every gridded weight becomes its grid value, so
  gguf's encoder in that format reproduces it exactly: rounding the unlearned model to that format is the
  identity, and the forgetting measured in full precision is the forgetting of the shipped file.

The format is ``finetune.quantization_aware``: ``base`` (the type each weight has in the base's GGUF file) or a
format name; see :data:`llm_unlearn.config.training.GRID_FORMATS`.
"""

from __future__ import annotations

import logging
import types

import torch

from .errors import RecipeError

logger = logging.getLogger(__name__)

BLOCK = 32
# format -> (affine: value m + d*c, code low, code high, h: the divisor of v for the symmetric formats)
_GRIDS = {"Q4_1": (True, 0, 15, None), "Q5_1": (True, 0, 31, None),
          "Q4_0": (False, -8, 7, 8), "Q5_0": (False, -16, 15, 16), "Q8_0": (False, -127, 127, None)}
GRID_FORMATS = tuple(_GRIDS)


def block_grid(weight: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """QA1 and QA3 for a 2-D weight whose width is a multiple of 32: ``(d, m, fixed)`` with ``d`` and ``m`` per
    block (shape ``rows x blocks``, float32 values of fp16 numbers) and ``fixed`` (the weight's shape) marking the
    entries that fix their block's grid."""
    if fmt not in _GRIDS:
        raise ValueError(f"no fixed grid for {fmt!r}: use one of {', '.join(GRID_FORMATS)}")
    if weight.dim() != 2 or weight.shape[1] % BLOCK:
        raise ValueError(f"a grid needs a 2-D weight whose width is a multiple of {BLOCK}, got {tuple(weight.shape)}")
    affine, lo, hi, h = _GRIDS[fmt]
    w = weight.detach().float().reshape(weight.shape[0], -1, BLOCK)
    if affine:
        mx, mn = w.amax(-1), w.amin(-1)
        d = ((mx - mn) / hi).half().float()
        m = mn.half().float()
        fixed = (w == mx[..., None]) | (w == mn[..., None])
    else:
        amax = w.abs().amax(-1)
        if h is None:  # Q8_0
            d = (amax / 127).half().float()
        else:
            v = torch.gather(w, -1, w.abs().argmax(-1, keepdim=True))[..., 0]
            d = (v / -h).half().float()
        m = torch.zeros_like(d)
        fixed = w.abs() == amax[..., None]
    return d, m, fixed.reshape(weight.shape)


def nearest_codes(weight: torch.Tensor, d: torch.Tensor, m: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """QA2: each entry's nearest code on its block's grid, clamped to ``lo..hi`` (float, shape ``rows x blocks x
    32``); a block with ``d == 0`` gets code 0."""
    w = weight.float().reshape(weight.shape[0], -1, BLOCK)
    dd = d[..., None]
    safe = torch.where(dd == 0, torch.ones_like(dd), dd)
    return torch.clamp(torch.round((w - m[..., None]) / safe), lo, hi)


def snap(weight: torch.Tensor, d: torch.Tensor, m: torch.Tensor, lo: int, hi: int,
         fixed: torch.Tensor | None = None, base_codes: torch.Tensor | None = None) -> torch.Tensor:
    """QA2 / QA3: each entry's nearest grid value, codes clamped to ``lo..hi``; ``fixed`` entries take
    ``base_codes``. Blocks with ``d == 0`` (constant blocks) keep their one value ``m``."""
    codes = nearest_codes(weight, d, m, lo, hi)
    w_shape = codes.shape
    dd, mm = d[..., None], m[..., None]
    if fixed is not None:
        codes = torch.where(fixed.reshape(w_shape), base_codes.reshape(w_shape).float(), codes)
    out = torch.where(dd == 0, mm.expand(w_shape), mm + dd * codes)
    return out.reshape(weight.shape).to(weight.dtype)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, q):
        return q

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _grid_forward(self, x):
    q = snap(self.weight.detach(), self.grid_d, self.grid_m, self.grid_lo, self.grid_hi, self.grid_fixed,
             self.grid_base_codes)
    return torch.nn.functional.linear(x, _StraightThrough.apply(self.weight, q), self.bias)


class GridTraining:
    """QA1-QA5 on a model: :meth:`attach` puts its linear weights on their grids (and freezes the rest), and
    :meth:`finish` writes the grid values into the weights and gives the layers their plain forward back."""

    def __init__(self, types_by_param: dict[str, str], label: str):
        self.types = types_by_param
        self.label = label
        self.modules: list[torch.nn.Linear] = []

    @torch.no_grad()
    def attach(self, model) -> None:
        mods = dict(model.named_modules())
        for p in model.parameters():  # QA4
            p.requires_grad_(False)
        counts: dict[str, int] = {}
        skipped = []
        for name, fmt in self.types.items():
            mod = mods.get(name.removesuffix(".weight"))
            if not isinstance(mod, torch.nn.Linear) or fmt not in _GRIDS or mod.weight.shape[1] % BLOCK:
                skipped.append(name)
                continue
            _, lo, hi, _ = _GRIDS[fmt]
            d, m, fixed = block_grid(mod.weight, fmt)
            codes = nearest_codes(mod.weight, d, m, lo, hi).to(torch.int16)
            mod.register_buffer("grid_d", d, persistent=False)
            mod.register_buffer("grid_m", m, persistent=False)
            mod.register_buffer("grid_fixed", fixed, persistent=False)
            mod.register_buffer("grid_base_codes", codes.reshape(mod.weight.shape), persistent=False)
            mod.grid_lo, mod.grid_hi = lo, hi
            mod.forward = types.MethodType(_grid_forward, mod)
            mod.weight.requires_grad_(True)
            self.modules.append(mod)
            counts[fmt] = counts.get(fmt, 0) + 1
        if not self.modules:
            raise RecipeError(f"finetune.quantization_aware ({self.label}): no linear weight of the model is in a "
                              f"format with a fixed grid ({', '.join(GRID_FORMATS)}); name one of these formats")
        logger.info("quantization-aware training on %s grids: %s; %d weights not on a grid stay frozen", self.label,
                    ", ".join(f"{n} {f}" for f, n in sorted(counts.items())), len(skipped))

    @torch.no_grad()
    def finish(self, model=None) -> None:
        """QA5: the grid values into the weights, the plain forward back, the grid buffers gone (``model``, what
        ``train_stage``'s ``before_save`` passes, is not needed: the attached layers are known)."""
        for mod in self.modules:
            mod.weight.copy_(snap(mod.weight, mod.grid_d, mod.grid_m, mod.grid_lo, mod.grid_hi, mod.grid_fixed,
                                  mod.grid_base_codes))
            del mod.forward
            for key in ("grid_d", "grid_m", "grid_fixed", "grid_base_codes"):
                delattr(mod, key)
            del mod.grid_lo, mod.grid_hi
        self.modules = []


def grid_training(model, fmt: str | None, spec: str, full_finetune: bool,
                  target_modules: list | None = None) -> GridTraining | None:
    """The recipe's ``finetune.quantization_aware`` for ``model`` (None when off), attached: the linear layers whose
    last name is in ``target_modules`` (all when None) train on their grids (QA4)."""
    if not fmt:
        return None
    if not full_finetune:
        raise RecipeError("finetune.quantization_aware trains the quantized weights themselves: set "
                          "finetune.full_finetune: true (a LoRA adapter merged into the weights would be rounded again)")
    from .gguf_formats import base_plan, quantized_linears

    if fmt == "base":
        plan = base_plan(model, spec)
        if plan is None:
            raise RecipeError(f"finetune.quantization_aware: base: the base model {spec!r} did not come from a GGUF "
                              f"file; name the format to ship instead ({', '.join(GRID_FORMATS)})")
        label = plan.label
    names = [n for n in quantized_linears(model) if not target_modules or n.rsplit(".", 1)[-1] in target_modules]
    if not names:
        raise RecipeError(f"finetune.quantization_aware: no linear layer of the model is named in "
                          f"finetune.target_modules {list(target_modules)}")
    if fmt == "base":
        wanted = {f"{n}.weight": plan.types[f"{n}.weight"] for n in names if f"{n}.weight" in plan.types}
    else:
        wanted = {f"{n}.weight": fmt for n in names}
        label = fmt
    gt = GridTraining(wanted, label)
    gt.attach(model)
    return gt
