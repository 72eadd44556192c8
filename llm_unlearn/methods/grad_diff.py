"""Gradient difference: gradient ascent on the target text plus a retain term on generic text (Liu et al. 2022;
the TOFU baseline of Maini et al. 2024). Loss = -NLL(forget) + retain_weight * R, where R is the NLL of the generic
text (``retain_loss: nll``) or KL(base || model) on it (``kl``; the base = the model with its LoRA adapter off)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import ForgetObjective, Method, RetainTerm, baseline_stages, check_retain
from .grad_ascent import grad_ascent_loss


class GradDiffObjective(ForgetObjective):
    def forget_loss(self, model, batch: dict) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return grad_ascent_loss(logits, batch["labels"])


@dataclass
class GradDiffConfig:
    """``grad_diff`` section.

    Attributes:
        retain_weight: weight of the retain term (1.0 as in TOFU / open-unlearning; 0 = plain gradient ascent).
        retain_loss: ``nll`` (keep predicting the generic text) or ``kl`` (stay close to the base model on it).
    """

    retain_weight: float = 1.0
    retain_loss: str = "nll"

    def __post_init__(self):
        check_retain("grad_diff", self.retain_loss, self.retain_weight)

    def needs_reference(self) -> bool:
        return self.retain_loss == "kl" and self.retain_weight > 0

    def objective(self, retain_batches=None, reference_model=None) -> GradDiffObjective:
        retain = RetainTerm(retain_batches, self.retain_weight, self.retain_loss, reference_model) \
            if retain_batches is not None else None
        return GradDiffObjective(retain, reference_model)


METHOD = Method("grad_diff", GradDiffConfig, baseline_stages("grad_diff"), "unlearn",
                "gradient ascent on the target text plus a retain term (NLL or KL to the base) on generic text",
                "Liu et al. 2022, Continual Learning and Private Unlearning; Maini et al. 2024, TOFU")
