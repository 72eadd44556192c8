"""What every method shares: the :class:`Method` record the registry holds (its config class, its loss, its stages,
where its trained weights are), the reference-model forward, the retain term, and the one ``unlearn`` stage all
baselines run. The loss interface the training engine calls is :class:`llm_unlearn.training.Objective`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..losses import sequence_nll
from ..retain import RetainTerm
from ..training import Objective


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage: the recipe sections it reads (its fingerprint), the stages it needs, and its function
    (``module:function``, imported when the stage runs)."""

    name: str
    sections: tuple[str, ...]
    depends: tuple[str, ...]
    function: str
    distributed: bool = False  # runs on every process (accelerate); otherwise on the main process only


@dataclass(frozen=True)
class Method:
    """A registered unlearning method.

    ``config`` is the dataclass of the recipe section named after the method (:mod:`llm_unlearn.config.methods`;
    None: the method reads only the stage sections), ``stages`` the pipeline stage table, ``weights_stage`` the stage
    whose ``adapter`` folder holds the trained weights (what export merges), ``summary`` one sentence for the model
    card, ``objective(config, retain_batches, reference_model)`` the loss of the ``unlearn`` stage (baselines)."""

    name: str
    config: type | None
    stages: tuple[StageSpec, ...]
    weights_stage: str
    summary: str
    paper: str
    objective: Callable[..., Objective] | None = None

    def weights(self, run) -> Path:
        return Path(run.root) / self.weights_stage / "adapter"

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


class ForgetObjective(Objective):
    """A baseline's objective: ``forget_loss`` on the target blocks, plus an optional retain term."""

    def __init__(self, retain: RetainTerm | None = None, reference_model=None):
        self.retain, self.reference_model = retain, reference_model

    def forget_loss(self, model, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, model, batch: dict) -> torch.Tensor:
        return self.forget_loss(model, batch)

    def second_loss(self, model, batch: dict, micro_step: int) -> torch.Tensor | None:
        if self.retain is None or self.retain.weight == 0:
            return None
        return self.retain(model, batch["input_ids"], micro_step)

    @staticmethod
    def sequence_nll(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return sequence_nll(logits, batch["labels"])


# Every method ends with it: attacks on the exported model (llm_unlearn.attacks), run only when attack.enabled.
ATTACK_STAGE = StageSpec("attack", ("eval", "attack", "finetune"), ("export",), "llm_unlearn.pipeline:run_attack")


def baseline_stages(name: str) -> tuple[StageSpec, ...]:
    """corpus -> unlearn -> export -> eval (-> attack): the target blocks (same split as WHP), one training stage."""
    return (
        StageSpec("corpus", ("model", "corpus"), (), "llm_unlearn.corpus:run_corpus"),
        StageSpec("unlearn", ("model", "method", "finetune", name), ("corpus",),
                  "llm_unlearn.methods.unlearn:run_unlearn", distributed=True),
        StageSpec("export", ("model", "export", "finetune"), ("unlearn",), "llm_unlearn.export:run_export"),
        StageSpec("eval", ("eval",), ("export",), "llm_unlearn.pipeline:run_eval"),
        ATTACK_STAGE,
    )


def needs_retain_text(recipe) -> bool:
    """Whether the recipe's method reads generic (retain) text."""
    if recipe.method == "whp":
        return recipe.finetune.retain_weight > 0
    section = getattr(recipe, recipe.method, None)
    return getattr(section, "retain_weight", 0) > 0


def retain_term(config, retain_batches, reference_model) -> RetainTerm | None:
    """The retain term of a baseline whose section has ``retain_weight`` and ``retain_loss``."""
    if retain_batches is None:
        return None
    return RetainTerm(retain_batches, config.retain_weight, config.retain_loss, reference_model)
