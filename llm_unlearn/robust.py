"""Robust unlearning steps that any method's training can use (the training engine calls them).

Sharpness-aware unlearning (Fan et al. 2025, "Towards LLM Unlearning Resilient to Relearning Attacks";
``finetune.sam_rho``), rules SAM1-SAM3 in :meth:`llm_unlearn.training.UnlearnTrainer._sharpness_aware_step`, with
the weight perturbation here (:func:`perturb_along_gradient`, :func:`undo_perturbation`).

Disruption masking (Sondej et al. 2025, "Robust LLM Unlearning with MUDMAN"; ``finetune.disruption_mask``):

* DM1: the retain term's gradient is averaged over steps, weight by weight (an exponential moving average with
  momentum :data:`DM_MOMENTUM`, from zero, as the authors' ``retain_acc``).
* DM2: the unlearning (main) term's gradient is kept only where its sign equals the averaged retain gradient's: a
  step down the unlearning loss is then, to first order and weight by weight, also a step down the retain loss
  (the update never disrupts what the retain text needs). The retain term's own gradient is added unmasked, as the
  authors' separate retain update.
* DM3: no global gradient normalisation. The authors' SGD rescales the unlearning gradient to a fixed norm; the
  engine's AdamW already divides every weight's step by that weight's own gradient scale, which a global factor
  does not change.
* DM4: a method without a retain term cannot be masked (there is nothing to agree with): a typed error at the first
  step says to set one.

The meta-learning part of MUDMAN (unlearning against a simulated relearning adversary) is not implemented.
"""

from __future__ import annotations

import torch

from .errors import RecipeError

DM_MOMENTUM = 0.9


def perturb_along_gradient(params: list, rho: float) -> list:
    """SAM2: move each parameter by ``rho * grad / ||grad||`` (the norm over all of them); returns what
    :func:`undo_perturbation` needs (each moved parameter's weights before the move; None where a parameter has no
    gradient). With a zero gradient nothing moves."""
    grads = [p.grad for p in params]
    norm = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None) or torch.tensor(0.0)))
    saved = []
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            if g is None or norm == 0.0:
                saved.append(None)
                continue
            saved.append(p.detach().clone())
            p.add_((g.float() * (rho / norm)).to(p.dtype))
    return saved


def undo_perturbation(params: list, saved: list) -> None:
    """SAM3: the parameters back, bit for bit, where :func:`perturb_along_gradient` found them."""
    with torch.no_grad():
        for p, before in zip(params, saved, strict=True):
            if before is not None:
                p.copy_(before)


class DisruptionMask:
    """DM1-DM2 across the steps of one training stage (the averaged retain gradient is its state)."""

    def __init__(self, momentum: float = DM_MOMENTUM):
        self.momentum = momentum
        self.retain_avg: list[torch.Tensor | None] | None = None
        self.kept: list[float] = []  # per micro-batch: share of the main gradient's nonzero entries kept

    @torch.no_grad()
    def combine(self, main: list, retain: list) -> list:
        """The gradients to step with: ``mask * main + retain`` per parameter (None where both are None); updates
        the average with ``retain`` first (DM1), then masks (DM2)."""
        if self.retain_avg is None:
            self.retain_avg = [None] * len(retain)
        out, kept, total = [], 0, 0
        for i, (g, r) in enumerate(zip(main, retain, strict=True)):
            if r is not None:
                avg = self.retain_avg[i]
                self.retain_avg[i] = (1 - self.momentum) * r.float() if avg is None else (
                    avg.mul_(self.momentum).add_(r.float(), alpha=1 - self.momentum))
            avg = self.retain_avg[i]
            if g is not None:
                keep = (torch.sign(g.float()) == torch.sign(avg)) if avg is not None else torch.zeros_like(g, dtype=torch.bool)
                nonzero = g != 0
                kept += int((keep & nonzero).sum())
                total += int(nonzero.sum())
                g = g * keep.to(g.dtype)
            if g is None:
                out.append(r)
            elif r is None:
                out.append(g)
            else:
                out.append(g + r)
        self.kept.append(kept / total if total else 0.0)
        return out

    @staticmethod
    def missing_retain(second) -> None:
        """DM4."""
        if second is None:
            raise RecipeError("finetune.disruption_mask needs a retain term to agree with: set finetune.retain_weight "
                              "> 0 (WHP's guard on generic text) or keep the method's retain_weight above 0; or turn "
                              "the mask off")
