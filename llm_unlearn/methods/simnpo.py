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

from dataclasses import dataclass

import torch

from .base import ForgetObjective, Method, RetainTerm, baseline_stages, check_retain, need_number


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


@dataclass
class SimNPOConfig:
    """``simnpo`` section (defaults: rule SN1, the authors' TOFU settings as open-unlearning ships them).

    Attributes:
        beta: inverse temperature on the mean token log-probability (4.5).
        gamma: weight of the forget term (0.125, the authors' ``npo_coeff``).
        delta: reward margin subtracted from the mean token NLL (0, the authors' ``gamma``).
        retain_weight: weight of the retain term (1.0; 0 = off).
        retain_loss: ``nll`` or ``kl`` (KL to the base on the retain text).
    """

    beta: float = 4.5
    gamma: float = 0.125
    delta: float = 0.0
    retain_weight: float = 1.0
    retain_loss: str = "nll"

    def __post_init__(self):
        need_number("simnpo", "beta", self.beta, 0, low_open=True)
        need_number("simnpo", "gamma", self.gamma, 0)
        need_number("simnpo", "delta", self.delta)
        check_retain("simnpo", self.retain_loss, self.retain_weight)

    def needs_reference(self) -> bool:
        return self.retain_loss == "kl" and self.retain_weight > 0

    def objective(self, retain_batches=None, reference_model=None) -> SimNPOObjective:
        retain = RetainTerm(retain_batches, self.retain_weight, self.retain_loss, reference_model) \
            if retain_batches is not None else None
        return SimNPOObjective(self.beta, self.gamma, self.delta, retain)


METHOD = Method("simnpo", SimNPOConfig, baseline_stages("simnpo"), "unlearn",
                "SimNPO: reference-free, length-normalised negative preference optimization (plus a retain term)",
                "Fan et al. 2024, Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning")
