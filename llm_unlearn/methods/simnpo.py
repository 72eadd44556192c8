"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
Unlearning"): NPO without a reference model, on the length-normalised log-probability.

    L_SimNPO = gamma * ( -(2 / beta) * log sigmoid(-(beta / |y|) * log p_model(y) - delta) )  +  retain_weight * R

(``delta``: the paper's reward margin; ``gamma``: the weight of the forget term; R: NLL or KL on retain text).

Defaults as the authors run TOFU (rule SN1), with their sources:

* beta = 4.5: open-unlearning ``configs/trainer/SimNPO.yaml`` (``beta: 4.5``), from the authors' TOFU config;
* delta = 0 (the margin): open-unlearning's ``delta: 0.0``, whose comment names it the ``gamma`` of the authors'
  ``Unlearn-Simple/TOFU/config/forget.yaml``;
* gamma = 0.125 (the forget term's weight): open-unlearning's ``gamma: 0.125``, the ``npo_coeff`` of the authors'
  TOFU config, applied as ``loss = gamma * forget_loss + alpha * retain_loss`` (open-unlearning
  ``src/trainer/unlearn/simnpo.py``);
* retain_weight = 1.0 with NLL: open-unlearning's ``alpha: 1.0`` and ``retain_loss_type: NLL``.
"""

from __future__ import annotations

import torch

from ..config.methods import SimNPOConfig
from .base import ForgetObjective, Method, baseline_stages, retain_term


def simnpo_loss(nll: torch.Tensor, n_tokens: torch.Tensor, beta: float, gamma: float, delta: float = 0.0) -> torch.Tensor:
    """SN1: ``gamma * mean(-(2 / beta) * log sigmoid(beta * (nll / |y| - delta)))`` from per-sequence summed NLLs
    and their token counts (``-log p / |y| = nll / |y|``)."""
    mean_nll = nll / n_tokens.clamp(min=1)
    return gamma * (-(2.0 / beta) * torch.nn.functional.logsigmoid(beta * (mean_nll - delta))).mean()


class SimNPOObjective(ForgetObjective):
    def __init__(self, beta: float, gamma: float, delta: float, retain=None):
        super().__init__(retain, None)
        self.beta, self.gamma, self.delta = beta, gamma, delta

    def forget_loss(self, model, batch: dict) -> torch.Tensor:
        nll, count = self.sequence_nll(model, batch)
        return simnpo_loss(nll, count, self.beta, self.gamma, self.delta)


def objective(config: SimNPOConfig, retain_batches=None, reference_model=None) -> SimNPOObjective:
    return SimNPOObjective(config.beta, config.gamma, config.delta, retain_term(config, retain_batches,
                                                                            reference_model))


METHOD = Method("simnpo", SimNPOConfig, baseline_stages("simnpo"), "unlearn",
                "SimNPO: reference-free, length-normalised negative preference optimization (plus a retain term)",
                "Fan et al. 2024, Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
                objective)
