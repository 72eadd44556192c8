"""Gradient ascent: maximise the next-token loss on the target text (the simplest unlearning baseline; e.g.
Jang et al. 2023, "Knowledge Unlearning"). Loss = -NLL(forget). It has no retain term, so it usually degrades the
model everywhere once it has forgotten; :mod:`.grad_diff` adds one."""

from __future__ import annotations

import torch

from ..config.methods import GradAscentConfig
from ..losses import token_nll
from .base import ForgetObjective, Method, baseline_stages


def grad_ascent_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-(mean next-token NLL): minimising it raises the loss on the forget text."""
    return -token_nll(logits, labels)


class GradAscentObjective(ForgetObjective):
    def forget_loss(self, model, batch: dict) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return grad_ascent_loss(logits, batch["labels"])


def objective(config: GradAscentConfig, retain_batches=None, reference_model=None) -> GradAscentObjective:
    return GradAscentObjective()


METHOD = Method("grad_ascent", GradAscentConfig, baseline_stages("grad_ascent"), "unlearn",
                "gradient ascent on the target text (maximises its next-token loss)",
                "Jang et al. 2023, Knowledge Unlearning for Mitigating Privacy Risks in Language Models",
                objective)
