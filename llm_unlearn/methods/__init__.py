"""Unlearning methods, one small module each, in a registry by name.

A method module holds its loss (an :class:`~llm_unlearn.training.Objective` the training engine calls, built from
its recipe section by ``objective``) and its stage table; its section's settings are a dataclass in
:mod:`llm_unlearn.config.methods` (``npo: {beta: 0.2}``). A recipe picks one with ``method: NAME`` (default ``whp``);
every method trains with the ``finetune`` section's training settings (LoRA rank, steps, learning rate...), so
methods compare at equal budgets.

=============  ===================================================================================================
``whp``        Who's Harry Potter (the toolkit's method, :mod:`llm_unlearn.whp`): corpus -> anchors, reinforce ->
               labels -> finetune -> ...
``grad_ascent`` gradient ascent on the target text
``grad_diff``  gradient ascent + a retain term on generic text
``npo``        negative preference optimization against the base model
``simnpo``     reference-free, length-normalised NPO
``rmu``        representation misdirection at one layer
=============  ===================================================================================================

The baselines' stages are corpus -> unlearn -> export -> eval: the forget data are the recipe's target corpus
blocks (the same train / validation split as WHP), the retain data generic text (``finetune.retain_corpus``,
WikiText-2 valid by default).
"""

from __future__ import annotations

from ..config.methods import DEFAULT_METHOD, METHOD_NAMES, check_method
from . import grad_ascent, grad_diff, npo, rmu, simnpo, whp
from .base import Method, StageSpec

METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in (whp, grad_ascent, grad_diff, npo, simnpo, rmu)}
if tuple(METHODS) != METHOD_NAMES:  # the config layer accepts exactly the registered methods
    raise ImportError(f"llm_unlearn.config.methods.METHOD_NAMES {METHOD_NAMES} != registered {tuple(METHODS)}")

__all__ = ["METHODS", "DEFAULT_METHOD", "Method", "StageSpec", "get_method", "method_names"]


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name``; a :class:`~llm_unlearn.errors.RecipeError` naming the valid ones otherwise."""
    check_method(name)
    return METHODS[name]
