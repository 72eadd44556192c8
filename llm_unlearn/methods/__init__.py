"""Unlearning methods, one small module each, in a registry by name.

A method module holds its config dataclass (the recipe section named after it: ``npo: {beta: 0.2}``), its loss
(an :class:`~.base.Objective` the training engine calls) and its stage table. A recipe picks one with
``method: NAME`` (default ``whp``); every method trains with the ``finetune`` section's training settings (LoRA rank,
steps, learning rate...), so methods compare at equal budgets.

=============  ===================================================================================================
``whp``        Who's Harry Potter (the toolkit's method): corpus -> anchors, reinforce -> labels -> finetune -> ...
``grad_ascent`` gradient ascent on the target text
``grad_diff``  gradient ascent + a retain term on generic text
``npo``        negative preference optimization against the base model
``simnpo``     reference-free, length-normalised NPO
``rmu``        representation misdirection at one layer
=============  ===================================================================================================

The baselines' stages are corpus -> unlearn -> export -> eval: the forget data are the recipe's target corpus
blocks (the same train / validation split as WHP), the retain data generic text (``finetune.retain_corpus``,
WikiText-2 valid by default). Config modules import torch only (not transformers), so loading a recipe stays quick.
"""

from __future__ import annotations

from ..errors import RecipeError
from . import grad_ascent, grad_diff, npo, rmu, simnpo, whp
from .base import Method, Objective, StageSpec

METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in (whp, grad_ascent, grad_diff, npo, simnpo, rmu)}
DEFAULT_METHOD = "whp"

__all__ = ["METHODS", "DEFAULT_METHOD", "Method", "Objective", "StageSpec", "get_method", "method_names"]


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name``; a :class:`RecipeError` naming the valid ones otherwise."""
    if name not in METHODS:
        raise RecipeError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]
