"""What every method shares: the :class:`Objective` interface the training engine calls, the :class:`Method`
record the registry holds (its config class, its stages, where its trained weights are), the reference-model
forward, the retain term, and the one ``unlearn`` stage all baselines run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RecipeError
from ..losses import sequence_nll, soft_label_loss, token_nll

RETAIN_LOSSES = ("nll", "kl")


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

    ``config`` is the dataclass of the recipe section named after the method (None: the method reads only the
    stage sections), ``stages`` the pipeline stage table, ``weights_stage`` the stage whose ``adapter`` folder holds
    the trained weights (what export merges), ``summary`` one sentence for the model card."""

    name: str
    config: type | None
    stages: tuple[StageSpec, ...]
    weights_stage: str
    summary: str
    paper: str

    def weights(self, run) -> Path:
        return Path(run.root) / self.weights_stage / "adapter"

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


def need_number(section: str, name: str, value, low: float | None = None, low_open: bool = False,
                optional: bool = False) -> None:
    """A finite number (not a bool) >= low (> low with ``low_open``); the error names ``section.name``."""
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if low_open else '>='} {low}"
        raise RecipeError(f"{section}.{name} must be a finite number{bound}{' or null' if optional else ''} "
                          f"(got {value!r})")


def need_int(section: str, name: str, value, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise RecipeError(f"{section}.{name} must be an integer >= {minimum}{' or null' if optional else ''} "
                          f"(got {value!r})")


def check_retain(section: str, retain_loss: str, retain_weight: float) -> None:
    if retain_loss not in RETAIN_LOSSES:
        raise RecipeError(f"{section}.retain_loss must be one of {', '.join(RETAIN_LOSSES)} (got {retain_loss!r})")
    need_number(section, "retain_weight", retain_weight, 0)


class Objective:
    """The loss a method trains with, called by :class:`llm_unlearn.training.UnlearnTrainer`.

    ``loss(model, batch)`` is the main term, on the training batch (also the validation loss); ``second_loss(model,
    batch, micro_step)`` an optional term that gets its own forward and backward after the main one (the retain
    term), so that two autograd graphs are never alive together. The default is next-token cross-entropy on
    ``batch['labels']`` (reinforce; WHP's fine-tune on generic labels), or on soft labels when the batch holds them.
    """

    def loss(self, model, batch: dict) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if "soft_ids" in batch:
            return soft_label_loss(logits, batch["labels"], batch["soft_ids"], batch["soft_logits"])
        if "weights" in batch:  # finetune.position_weighting: the loss lives where the target does
            from ..labels import weighted_label_loss

            return weighted_label_loss(logits, batch["labels"], batch["weights"])
        return token_nll(logits, batch["labels"])

    def second_loss(self, model, batch: dict, micro_step: int) -> torch.Tensor | None:
        return None

    def setup(self, model) -> None:
        """Called once with the model being trained (LoRA-wrapped), before training."""


def unwrap(model):
    """The model inside a DDP / accelerate wrapper."""
    return model.module if hasattr(model, "module") else model


def reference_forward(model, reference_model, **inputs):
    """Outputs of the reference model, without gradients: ``reference_model`` when given (full fine-tuning keeps a
    frozen copy), else the trained model itself with its LoRA adapter off (no extra memory)."""
    with torch.no_grad():
        if reference_model is not None:
            return reference_model(**inputs)
        inner = unwrap(model)
        with inner.disable_adapter():
            return inner(**inputs)


def retain_kl(logits: torch.Tensor, ref_logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) of the next-token distributions, mean over the attended positions."""
    mask = attention_mask.bool()
    cur = torch.log_softmax(logits.float()[mask], -1)
    ref = torch.log_softmax(ref_logits.float()[mask], -1)
    return torch.nn.functional.kl_div(cur, ref, log_target=True, reduction="batchmean")


class RetainTerm:
    """``weight * NLL`` or ``weight * KL(reference || model)`` on generic-text batches cycled by micro-step.

    With ``name_weight`` (KL only; the batches must hold ``name_mask``, :class:`llm_unlearn.retain.NamePositions`):
    ``weight * (KL over all positions + name_weight * KL over the name positions)`` (rules G1-G2 in
    :mod:`llm_unlearn.retain`)."""

    def __init__(self, batches, weight: float, kind: str = "nll", reference_model=None, name_weight: float = 0.0):
        self.batches, self.weight, self.kind, self.reference_model = batches, weight, kind, reference_model
        self.name_weight = name_weight

    def __call__(self, model, device_like: torch.Tensor, micro_step: int) -> torch.Tensor:
        b = self.batches(micro_step, device_like.device)
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        if self.kind == "kl":
            ref = reference_forward(model, self.reference_model, **inputs).logits
            logits = model(**inputs).logits
            loss = retain_kl(logits, ref, b["attention_mask"])
            if self.name_weight and bool(b["name_mask"].any()):  # G2: mean over name positions; none -> nothing
                loss = loss + self.name_weight * retain_kl(logits, ref, b["name_mask"])
            return self.weight * loss
        return self.weight * token_nll(model(**inputs).logits, b["labels"])


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
        StageSpec("corpus", ("model", "corpus"), (), "llm_unlearn.pipeline:run_corpus"),
        StageSpec("unlearn", ("model", "method", "finetune", name), ("corpus",),
                  "llm_unlearn.methods.base:run_unlearn", distributed=True),
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


def run_unlearn(run, recipe, progress: bool = True) -> dict:
    """corpus/blocks.jsonl -> unlearn/adapter: a baseline method's training on the target blocks (its training
    settings are the ``finetune`` section's; the weights after the last step are kept: every method gets the same
    number of optimizer steps)."""
    import shutil

    from ..corpus import split_rows
    from ..models import load_model
    from ..training import TrainConfig, cleanup_checkpoints, train_stage, training_dtype
    from . import get_method

    method = get_method(recipe.method)
    config = getattr(recipe, method.name)
    cfg = TrainConfig.from_section(recipe.finetune, recipe)
    model, tokenizer = load_model(recipe.model.spec, dtype=training_dtype(recipe), device=recipe.model.device,
                                  trust_remote_code=recipe.model.trust_remote_code)
    reference = None
    if cfg.full_finetune and config.needs_reference():
        reference, _ = load_model(recipe.model.spec, dtype=training_dtype(recipe), device=recipe.model.device,
                                  trust_remote_code=recipe.model.trust_remote_code)
        reference.eval().requires_grad_(False)
    retain_batches = None
    if needs_retain_text(recipe):
        from ..retain import RetainBatches, retain_rows
        from ..tofu.chat import answer_only_rows

        rows = retain_rows(recipe, tokenizer)
        answer_only_rows(tokenizer, rows)  # retain QA in the chat format: its answers only, as the forget side (L1)
        retain_batches = RetainBatches(rows, recipe.finetune.retain_batch_size or cfg.batch_size,
                                       tokenizer.pad_token_id)
    objective = config.objective(retain_batches, reference)
    train, val = split_rows(run)
    from ..tofu.chat import answer_only_rows

    label_key = answer_only_rows(tokenizer, train, val)  # chat QA: the answer tokens only (rule L1, TOFU-C4)
    stage_dir = Path(run.root) / method.weights_stage
    result, trainer = train_stage(model, tokenizer, cfg, stage_dir, train, val, objective=objective,
                                  label_key=label_key, select_best=False, desc=method.name, progress=progress)
    if trainer.accelerator.is_main_process:
        weights = method.weights(run)
        shutil.rmtree(weights, ignore_errors=True)
        shutil.copytree(stage_dir / "final", weights)
    cleanup_checkpoints(trainer, stage_dir)
    return {"method": method.name, **result}
