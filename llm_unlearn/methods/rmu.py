"""Representation Misdirection for Unlearning, RMU (Li et al. 2024, "The WMDP Benchmark").

At one layer l, the hidden states of the forget text are pushed toward a fixed random direction scaled by c, and
the hidden states of generic (retain) text are kept where the base model puts them:

    L = mean ||h_l(x_forget) - c * u||^2  +  retain_weight * mean ||h_l(x_retain) - h_l^base(x_retain)||^2

(means over tokens and hidden dimensions; u: a random unit vector, drawn once from U[0, 1)^d and normalised as
in the paper's code, seeded by ``seed``). The base activations come from the model with its LoRA adapter off (or a
frozen copy when fine-tuning every weight). Only layers <= l receive gradient.

Scaling to other models (the paper tuned Zephyr-7B: 32 layers, hidden size 4096, l = 7, c = 6.5, retain weight
1200): by default the layer is at the same relative depth, ``l = round(7/32 * n_layers)`` (at least 1), and the
coefficient keeps the paper's per-dimension target size, ``c = 6.5 * sqrt(d / 4096)`` (a direction of norm c in d
dimensions has per-dimension size c / sqrt(d)). Both can be set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .base import ForgetObjective, Method, baseline_stages, need_int, need_number, reference_forward, unwrap

PAPER_LAYER_FRACTION = 7 / 32
PAPER_COEFF, PAPER_WIDTH = 6.5, 4096


def default_layer(n_layers: int) -> int:
    return min(max(1, round(PAPER_LAYER_FRACTION * n_layers)), n_layers)


def default_steering_coeff(hidden_size: int) -> float:
    return PAPER_COEFF * math.sqrt(hidden_size / PAPER_WIDTH)


def random_direction(hidden_size: int, seed: int) -> torch.Tensor:
    """A random unit vector, U[0, 1)^d normalised (the paper's code), seeded."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden_size, generator=gen)
    return u / u.norm()


def rmu_forget_loss(hidden: torch.Tensor, control: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the attended hidden states to the control vector ``c * u``."""
    mask = attention_mask.bool()
    return ((hidden.float()[mask] - control.to(hidden.device)) ** 2).mean()


def rmu_retain_loss(hidden: torch.Tensor, base_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the attended hidden states to the base model's."""
    mask = attention_mask.bool()
    return ((hidden.float()[mask] - base_hidden.float()[mask]) ** 2).mean()


def _hidden(outputs, layer: int) -> torch.Tensor:
    return outputs.hidden_states[layer]  # index 0 = embeddings, l = output of decoder layer l


class RMUObjective(ForgetObjective):
    def __init__(self, config: RMUConfig, retain_batches=None, reference_model=None):
        super().__init__(None, reference_model)
        self.config, self.retain_batches = config, retain_batches
        self.layer: int | None = config.layer
        self.control: torch.Tensor | None = None

    def setup(self, model) -> None:
        cfg = unwrap(model).config
        cfg = getattr(cfg, "text_config", None) or cfg
        n_layers, width = cfg.num_hidden_layers, cfg.hidden_size
        self.layer = self.layer or default_layer(n_layers)
        if not 1 <= self.layer <= n_layers:
            from ..errors import RecipeError

            raise RecipeError(f"rmu.layer must be in 1..{n_layers} for this model (got {self.layer})")
        coeff = self.config.steering_coeff or default_steering_coeff(width)
        self.control = coeff * random_direction(width, self.config.seed)

    def _layer_states(self, model, input_ids, attention_mask) -> torch.Tensor:
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return _hidden(out, self.layer)

    def forget_loss(self, model, batch: dict) -> torch.Tensor:
        if self.control is None:
            self.setup(model)
        h = self._layer_states(model, batch["input_ids"], batch["attention_mask"])
        return rmu_forget_loss(h, self.control, batch["attention_mask"])

    def second_loss(self, model, batch: dict, micro_step: int) -> torch.Tensor | None:
        if self.retain_batches is None or self.config.retain_weight == 0:
            return None
        b = self.retain_batches(micro_step, batch["input_ids"].device)
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        base = _hidden(reference_forward(model, self.reference_model, output_hidden_states=True, **inputs), self.layer)
        h = self._layer_states(model, **inputs)
        return self.config.retain_weight * rmu_retain_loss(h, base, b["attention_mask"])


@dataclass
class RMUConfig:
    """``rmu`` section.

    Attributes:
        layer: the steered layer (1-based: the output of decoder layer ``layer``); default ``round(7/32 * depth)``,
            the paper's relative depth.
        steering_coeff: c, the norm of the target direction; default ``6.5 * sqrt(hidden_size / 4096)``, the paper's
            value at the paper's per-dimension size.
        retain_weight: weight of the retain term (the paper's 1200; 0 = off).
        seed: the random direction.
    """

    layer: Optional[int] = None
    steering_coeff: Optional[float] = None
    retain_weight: float = 1200.0
    seed: int = 0

    def __post_init__(self):
        need_int("rmu", "layer", self.layer, 1, optional=True)
        need_number("rmu", "steering_coeff", self.steering_coeff, 0, low_open=True, optional=True)
        need_number("rmu", "retain_weight", self.retain_weight, 0)
        need_int("rmu", "seed", self.seed, 0)

    def needs_reference(self) -> bool:
        return self.retain_weight > 0

    def objective(self, retain_batches=None, reference_model=None) -> RMUObjective:
        return RMUObjective(self, retain_batches, reference_model)


METHOD = Method("rmu", RMUConfig, baseline_stages("rmu"), "unlearn",
                "RMU: steer one layer's activations on the target text toward a random direction, keep them on generic text",
                "Li et al. 2024, The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning")
