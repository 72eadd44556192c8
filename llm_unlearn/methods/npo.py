"""Negative Preference Optimization (Zhang et al. 2024, "Negative Preference Optimization: From Catastrophic
Collapse to Effective Unlearning").

Loss on a forget sequence y (log-probabilities summed over its tokens):

    L_NPO = -(2 / beta) * log sigmoid(-beta * (log p_model(y) - log p_ref(y)))
          =  (2 / beta) * log(1 + (p_model(y) / p_ref(y)) ** beta)

The reference is the base model: the trained model with its LoRA adapter off (no second copy), or a frozen copy
when fine-tuning every weight. As beta -> 0 the gradient tends to gradient ascent's; the sigmoid weight makes it
vanish once a sequence is much less likely than under the reference, which is what keeps NPO from collapsing.
Optional retain term (NPO+RT in the paper; on by default as in open-unlearning): ``retain_weight`` x NLL (or KL).
"""

from __future__ import annotations

import torch

from ..config.methods import NPOConfig
from ..losses import sequence_nll
from ..retain import reference_forward
from .base import ForgetObjective, Method, baseline_stages, retain_term


def npo_loss(nll: torch.Tensor, ref_nll: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO from per-sequence summed NLLs of the model and the reference: mean of -(2/beta) log sigmoid(beta (nll -
    ref_nll)) (``nll - ref_nll = -(log p_model - log p_ref)``)."""
    return -(2.0 / beta) * torch.nn.functional.logsigmoid(beta * (nll - ref_nll)).mean()


class NPOObjective(ForgetObjective):
    def __init__(self, beta: float, retain=None, reference_model=None):
        super().__init__(retain, reference_model)
        self.beta = beta

    def forget_loss(self, model, batch: dict) -> torch.Tensor:
        nll, _ = self.sequence_nll(model, batch)
        ref = reference_forward(model, self.reference_model, input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"]).logits
        ref_nll, _ = sequence_nll(ref, batch["labels"])
        return npo_loss(nll, ref_nll, self.beta)


def objective(config: NPOConfig, retain_batches=None, reference_model=None) -> NPOObjective:
    return NPOObjective(config.beta, retain_term(config, retain_batches, reference_model), reference_model)


METHOD = Method("npo", NPOConfig, baseline_stages("npo"), "unlearn",
                "negative preference optimization against the base model (plus a retain term)",
                "Zhang et al. 2024, Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
                objective)
