"""Gradient difference: gradient ascent on the target text plus a retain term on generic text (Liu et al. 2022;
the TOFU baseline of Maini et al. 2024). Loss = -NLL(forget) + retain_weight * R, where R is the NLL of the generic
text (``retain_loss: nll``) or KL(base || model) on it (``kl``; the base = the model with its LoRA adapter off)."""

from __future__ import annotations

import torch

from ..config.methods import GradDiffConfig
from .base import ForgetObjective, Method, baseline_stages, retain_term
from .grad_ascent import grad_ascent_loss


class GradDiffObjective(ForgetObjective):
    def forget_loss(self, model, batch: dict) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return grad_ascent_loss(logits, batch["labels"])


def objective(config: GradDiffConfig, retain_batches=None, reference_model=None) -> GradDiffObjective:
    return GradDiffObjective(retain_term(config, retain_batches, reference_model), reference_model)


METHOD = Method("grad_diff", GradDiffConfig, baseline_stages("grad_diff"), "unlearn",
                "gradient ascent on the target text plus a retain term (NLL or KL to the base) on generic text",
                "Liu et al. 2022, Continual Learning and Private Unlearning; Maini et al. 2024, TOFU",
                objective)
