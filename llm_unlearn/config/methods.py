"""The methods' own recipe sections (``npo: {beta: 0.2}``): plain dataclasses with their checks in
``__post_init__``. The losses live in :mod:`llm_unlearn.methods`, one module per method, found by name there; this
module names the methods the config layer accepts (a test checks that the two lists agree).

Every method trains with the ``finetune`` section's training settings, so methods compare at equal budgets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import RecipeError
from .checks import need_int, need_number

DEFAULT_METHOD = "whp"
METHOD_NAMES = ("whp", "grad_ascent", "grad_diff", "npo", "simnpo", "rmu")
RETAIN_LOSSES = ("nll", "kl")


def check_method(name) -> None:
    """An unknown method is a :class:`RecipeError` naming the valid ones."""
    if name not in METHOD_NAMES:
        raise RecipeError(f"unknown method {name!r}; valid methods: {', '.join(METHOD_NAMES)}")


def check_retain(section: str, retain_loss: str, retain_weight: float) -> None:
    if retain_loss not in RETAIN_LOSSES:
        raise RecipeError(f"{section}.retain_loss must be one of {', '.join(RETAIN_LOSSES)} (got {retain_loss!r})")
    need_number(section, "retain_weight", retain_weight, 0)


@dataclass
class GradAscentConfig:
    """``grad_ascent`` section: no settings of its own (training settings: the ``finetune`` section; for a retain
    term use ``method: grad_diff``)."""

    def needs_reference(self) -> bool:
        return False


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


@dataclass
class NPOConfig:
    """``npo`` section.

    Attributes:
        beta: inverse temperature (0.1, the paper's and open-unlearning's default).
        retain_weight: weight of the retain term on generic text (1.0 = NPO+RT as open-unlearning runs it; 0 = NPO
            alone).
        retain_loss: ``nll`` or ``kl`` (KL to the base on the generic text).
    """

    beta: float = 0.1
    retain_weight: float = 1.0
    retain_loss: str = "nll"

    def __post_init__(self):
        need_number("npo", "beta", self.beta, 0, low_open=True)
        check_retain("npo", self.retain_loss, self.retain_weight)

    def needs_reference(self) -> bool:
        return True


@dataclass
class SimNPOConfig:
    """``simnpo`` section (defaults: rule SN1 in :mod:`llm_unlearn.methods.simnpo`, the authors' TOFU settings as
    open-unlearning ships them).

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


@dataclass
class RMUConfig:
    """``rmu`` section (rules RMU1-RMU4 in :mod:`llm_unlearn.methods.rmu`).

    Attributes:
        layer: the steered layer, a 0-based index into ``model.layers`` as the reference's ``layers[layer_id]``;
            default ``round(7/32 * depth)`` (the reference's layer 7 of Zephyr's 32).
        steering_coeff: c, the norm of the target direction; default None = ``steering_ratio`` x the base model's
            mean activation norm at the layer on the forget text (RMU3).
        steering_ratio: see ``steering_coeff`` (1.0).
        retain_weight: weight of the retain term (1200, the WMDP README's Zephyr-7B value; 0 = off).
        seed: the random direction.
    """

    layer: Optional[int] = None
    steering_coeff: Optional[float] = None
    steering_ratio: float = 1.0
    retain_weight: float = 1200.0
    seed: int = 0

    def __post_init__(self):
        need_int("rmu", "layer", self.layer, 0, optional=True)
        need_number("rmu", "steering_coeff", self.steering_coeff, 0, low_open=True, optional=True)
        need_number("rmu", "steering_ratio", self.steering_ratio, 0, low_open=True)
        need_number("rmu", "retain_weight", self.retain_weight, 0)
        need_int("rmu", "seed", self.seed, 0)

    def needs_reference(self) -> bool:
        return True  # the retain term and RMU3's norm read the base model's activations


# the config class of each method with a section of its own (WHP's settings are the stage sections)
METHOD_CONFIGS = {"grad_ascent": GradAscentConfig, "grad_diff": GradDiffConfig, "npo": NPOConfig,
                  "simnpo": SimNPOConfig, "rmu": RMUConfig}
