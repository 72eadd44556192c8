"""The one training engine every training stage shares: a subclass of ``transformers.Trainer``.

The optimizer, schedule (warmup + decay), gradient accumulation, mixed precision, checkpoints and resume,
best-checkpoint selection by validation loss, logging (``report_to``) and DDP / FSDP / DeepSpeed (through the
accelerate configs in ``recipes/accelerate/``) all come from transformers. What is ours is small:

* :class:`~llm_unlearn.config.TrainConfig`, the training settings every stage reads (reinforce, the WHP fine-tune,
  the baselines);
* an :class:`Objective` -- the loss of a method. ``loss(model, batch)`` is the main term (also the validation
  loss); ``second_loss(model, batch, micro_step)`` an optional term (a retain term, the retain guard) that gets
  its OWN backward pass after the main one, so the two autograd graphs are never in memory together (the gradients
  add up as for ``backward(main + second)``);
* a seeded data order (:class:`SeededSampler`): an epoch-wise permutation that is a pure function of (seed, epoch),
  so a resumed run sees exactly the batches the killed run would have seen, and N processes each take their slice
  of the same global batches (global batch = ``batch_size`` x processes).

Checkpoints (``STAGE/checkpoints/checkpoint-N``) hold the trainable weights only (the LoRA adapter, not the frozen
base), the optimizer, scheduler and RNG states; a rerun resumes from the newest complete one.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import DistributedType
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .config import TrainConfig
from .errors import RecipeError
from .hardware import resolve_mixed_precision, training_weights_dtype
from .losses import pad_batch, soft_label_loss, token_nll
from .robust import (
    CollapseIrrelevant,
    DisruptionMask,
    MetaRelearner,
    meta_unlearning_step,
    set_aside,
    sharpness_aware_step,
)

logger = logging.getLogger(__name__)


class Objective:
    """The loss a method trains with, called by :class:`UnlearnTrainer`.

    ``loss(model, batch)`` is the main term, on the training batch (also the validation loss); ``second_loss(model,
    batch, micro_step)`` an optional term that gets its own forward and backward after the main one (the retain
    term), so that two autograd graphs are never alive together. The default is next-token cross-entropy on
    ``batch['labels']`` (reinforce; WHP's fine-tune on generic labels), or on soft labels when the batch holds them.
    """

    def loss(self, model, batch: dict) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if "soft_ids" in batch:
            return soft_label_loss(logits, batch["labels"], batch["soft_ids"], batch["soft_logits"])
        return token_nll(logits, batch["labels"])

    def second_loss(self, model, batch: dict, micro_step: int) -> torch.Tensor | None:
        return None

    def setup(self, model) -> None:
        """Called once with the model being trained (LoRA-wrapped), before training."""


def stage_config(section, recipe=None) -> TrainConfig:
    """The training fields of a recipe section (``reinforce``, ``finetune``); with the recipe, ``mixed_precision:
    auto`` is resolved for its model dtype and device (:mod:`llm_unlearn.hardware`, H2)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(section).items() if k in names})
    if recipe is not None:
        from .models import default_device

        cfg.mixed_precision = resolve_mixed_precision(cfg.mixed_precision, recipe.model.device or default_device(),
                                                      recipe.model.dtype)
    return cfg


def load_for_training(recipe):
    """The recipe's base model and tokenizer, in the dtype training uses (:func:`training_dtype`)."""
    from .models import load_model

    return load_model(recipe.model.spec, dtype=training_dtype(recipe), device=recipe.model.device,
                      trust_remote_code=recipe.model.trust_remote_code)


def resolve_precision(value: str, device=None, weights_dtype=None) -> str:
    """``mixed_precision`` as the engine uses it: ``no`` | ``bf16`` | ``fp16``.

    ``auto`` follows llm_unlearn.hardware (rule H2): bf16 autocast for float32 weights on a CPU with native bf16.
    Recipe stages resolve it earlier with the model dtype (:func:`stage_config`)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    fp32 = weights_dtype in (None, torch.float32)
    return resolve_mixed_precision(value, str(device), "auto" if fp32 else "explicit")


def training_dtype(recipe):
    """Master-weight dtype of the training stages (float32 on CPU, bf16 compute via autocast; hardware rule H2)."""
    from .models import default_device

    return training_weights_dtype(recipe.model.dtype, recipe.model.device or default_device())


def allow_mixed_precision(mixed_precision: str) -> None:
    """accelerate keeps one process-wide state and refuses an Accelerator whose mixed precision differs from the
    first one's; a process that trains twice with different settings (the Python API, the tests) forgets the old
    setting here. The process group (PartialState) is kept."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision") not in (
            None, mixed_precision):
        AcceleratorState._reset_state(reset_partial_state=False)


def process_state():
    """The accelerate process state (rank, world size). On a machine without GPU, processes started by
    ``accelerate launch`` / ``torchrun`` join over gloo on the CPU."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def lora_targets(model, wanted: list[str]) -> list[str]:
    """The requested LoRA target module names that exist in this model (a clear error if none do)."""
    linear_names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    present = [t for t in wanted if t in linear_names]
    if not present:
        raise RecipeError(
            f"none of the LoRA target_modules {wanted} exist in {type(model).__name__}; "
            f"its linear layers are: {sorted(linear_names - {'lm_head'})}"
        )
    return present


def wrap_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=lora_targets(model, cfg.target_modules))
    return get_peft_model(model, lcfg)


def batch_schedule(n_items: int, global_batch: int, n_steps_micro: int, seed: int) -> list[list[int]]:
    """Deterministic list of global micro-batches (item indices): an epoch-wise seeded permutation
    (the order :class:`SeededSampler` yields, cut into global batches)."""
    out: list[list[int]] = []
    epoch = 0
    while len(out) < n_steps_micro:
        perm = epoch_permutation(n_items, seed, epoch)
        for start in range(0, n_items, global_batch):
            out.append(perm[start:start + global_batch])
            if len(out) == n_steps_micro:
                break
        epoch += 1
    return out


def epoch_permutation(n_items: int, seed: int, epoch: int) -> list[int]:
    return np.random.default_rng(seed + epoch).permutation(n_items).tolist()


class SeededSampler(torch.utils.data.Sampler):
    """Item order of one epoch: a permutation seeded by (seed, epoch), the same in every process (accelerate
    then gives each process its batches of it). Draws nothing from torch's RNG, so skipping batches on resume
    leaves the dropout RNG untouched."""

    def __init__(self, n_items: int, seed: int):
        self.n_items, self.seed, self.epoch = n_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_items

    def __iter__(self):
        return iter(epoch_permutation(self.n_items, self.seed, self.epoch))


class RowDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


class UnlearnTrainer(Trainer):
    """``transformers.Trainer`` whose loss is the method's :class:`Objective`; its optional second term gets its
    own backward pass after the main one (see the module docstring)."""

    # compute_loss returns a per-micro-batch mean: the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, objective: Objective, sam_rho: float = 0.0, disruption_mask: bool = False,
                 cir_components: int = 0, meta_relearn_step: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.sam_rho = sam_rho
        self.meta = (MetaRelearner([p for p in self.model.parameters() if p.requires_grad], meta_relearn_step)
                     if meta_relearn_step > 0 else None)
        self.disruption = DisruptionMask() if disruption_mask else None
        self.cir = CollapseIrrelevant(self.model, cir_components) if cir_components else None
        self._micro_step: int | None = None
        self.second_losses: list[float] = []

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return SeededSampler(len(dataset), self.args.data_seed if self.args.data_seed is not None else self.args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = self.objective.loss(model, inputs)
        return (loss, {}) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._micro_step is None:  # resumed runs start at an optimizer-step boundary
            self._micro_step = self.state.global_step * self.args.gradient_accumulation_steps
        inputs = self._prepare_inputs(inputs)
        if self.cir and not self.cir.ready:
            self.cir.collect_for(self, model)  # rule CIR1 (llm_unlearn.robust)
        params = [p for p in model.parameters() if p.requires_grad] if self.disruption or self.cir else []
        held = set_aside(params)  # earlier micro-batches' gradients, aside while this one is changed
        if self.sam_rho > 0 or self.meta:
            def plain_step():
                return super(UnlearnTrainer, self).training_step(model, inputs, num_items_in_batch)

            step = sharpness_aware_step if self.sam_rho > 0 else meta_unlearning_step
            loss = step(self, model, inputs, plain_step)
        else:
            if self.cir:
                self.cir.capturing = True
            loss = super().training_step(model, inputs, num_items_in_batch)
        if self.cir:  # rule CIR2: the main term's gradient rebuilt from collapsed activations and gradients
            self.cir.capturing = False
            self.cir.rebuild()
        main = set_aside(params)
        second = self.objective.second_loss(model, inputs, self._micro_step)
        if self.disruption:
            self.disruption.missing_retain(second)
        if second is not None:
            kwargs = {}
            if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
                kwargs["scale_wrt_gas"] = False  # divided here, as the Trainer does for the main loss
            self.accelerator.backward(second / self.current_gradient_accumulation_steps, **kwargs)
            self.second_losses.append(float(second.detach()))
        if params:  # rules DM1-DM2 (llm_unlearn.robust) where masked; else main + second
            second_grads = [p.grad for p in params]
            combined = (self.disruption.combine(main, second_grads) if self.disruption else
                        [m if r is None else (r if m is None else m + r) for m, r in zip(main, second_grads, strict=True)])
            for p, h, g in zip(params, held, combined, strict=True):
                p.grad = g if h is None else (h if g is None else h + g)
        self._micro_step += 1
        return loss


class _EvalAtEnd(TrainerCallback):
    """Validate and checkpoint after the last step too (the old loop did), whatever eval_every is."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_evaluate = args.eval_strategy != "no"
            control.should_save = True
            control.should_log = True
        return control


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints that were written to the end (trainer_state.json is written last), oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))


def _drop_partial_checkpoints(folder: Path) -> None:
    """A kill during a save leaves a checkpoint without trainer_state.json; it must not be resumed from or kept."""
    if not folder.is_dir():
        return
    complete = set(complete_checkpoints(folder))
    for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        if p not in complete:
            shutil.rmtree(p, ignore_errors=True)


def training_args(cfg: TrainConfig, stage_dir: Path, has_validation: bool, select_best: bool,
                  progress: bool, weights_dtype=None) -> TrainingArguments:
    precision = resolve_precision(cfg.mixed_precision, weights_dtype=weights_dtype)
    report_to = cfg.report_to
    if report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError as exc:
            raise RecipeError("report_to: tensorboard is not installed (pip install tensorboard), "
                              "or set report_to: none") from exc
    max_steps = cfg.max_steps if cfg.max_steps else -1
    evaluate = "steps" if has_validation else "no"
    return TrainingArguments(
        output_dir=str(stage_dir / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation,
        learning_rate=cfg.learning_rate,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        max_steps=max_steps,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a share of the steps
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=1.0,
        optim="adamw_torch",
        eval_strategy=evaluate,
        eval_steps=cfg.eval_every,
        save_strategy="steps",
        save_steps=cfg.eval_every,
        save_total_limit=1,  # the newest (resume point); with select_best also the best one
        load_best_model_at_end=select_best and has_validation,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        prediction_loss_only=True,
        logging_strategy="steps",
        logging_steps=cfg.eval_every,
        report_to=report_to,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        seed=cfg.seed,
        data_seed=cfg.seed,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=0,
        disable_tqdm=not progress,
    )


def _history(log_history: list[dict], accumulation: int) -> list[dict]:
    """One entry per validation: step, micro_step, train_loss (mean since the previous entry), val_loss, lr."""
    out: list[dict] = []
    train: dict[int, dict] = {e["step"]: e for e in log_history if "loss" in e and "step" in e}
    for e in log_history:
        if "eval_loss" in e:
            t = train.get(e["step"], {})
            out.append({"step": e["step"], "micro_step": e["step"] * accumulation, "train_loss": t.get("loss"),
                        "val_loss": e["eval_loss"], "lr": t.get("learning_rate")})
    if not out:  # no validation rows: the training losses alone
        out = [{"step": s, "micro_step": s * accumulation, "train_loss": e.get("loss"), "val_loss": float("nan"),
                "lr": e.get("learning_rate")} for s, e in sorted(train.items())]
    return out


def train_stage(model, tokenizer, cfg: TrainConfig, stage_dir: str | Path, train_rows: list[dict],
                val_rows: list[dict], objective: Objective | None = None, label_key: str | None = None,
                soft_keys: tuple[str, str] | None = None, select_best: bool = True, desc: str = "train",
                progress: bool = True, callbacks: list | None = None, sam_rho: float = 0.0,
                before_save=None, disruption_mask: bool = False, cir_components: int = 0,
                meta_relearn_step: float = 0.0) -> tuple[dict, UnlearnTrainer]:
    """Train ``model`` (wrapped in LoRA unless ``cfg.full_finetune``) on ``train_rows`` and validate on ``val_rows``.

    Rows are dicts with ``input_ids`` and, optionally, ``label_key`` (the labels) and the ``soft_keys`` columns.
    Writes ``STAGE/checkpoints`` (resumed from when present) and the kept weights: ``STAGE/best`` (lowest
    validation loss) with ``select_best``, else ``STAGE/final``; ``before_save(model)`` runs on the kept weights just
    before they are written (quantization-aware training puts them on their grid there, rule QA5). Returns (metrics,
    trainer)."""
    stage_dir = Path(stage_dir)
    if not train_rows:
        raise RecipeError(f"{desc}: no training blocks (corpus too small for the validation split?)")
    objective = objective or Objective()
    torch.manual_seed(cfg.seed)  # the LoRA initialisation
    if not cfg.full_finetune:
        model = wrap_lora(model, cfg)
    if cfg.gradient_checkpointing:
        # With LoRA the frozen embeddings output no grad; checkpointed blocks then would not train.
        model.enable_input_require_grads()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    pad_id = tokenizer.pad_token_id

    def collate(rows):
        return pad_batch(rows, pad_id, label_key, soft_keys)

    weights_dtype = next(model.parameters()).dtype
    args = training_args(cfg, stage_dir, bool(val_rows), select_best, progress, weights_dtype)
    allow_mixed_precision("bf16" if args.bf16 else "fp16" if args.fp16 else "no")  # before the Trainer's Accelerator
    logger.info("%s: %s weights, mixed precision %s, %d threads", desc, str(weights_dtype).replace("torch.", ""),
                "bf16" if args.bf16 else "fp16" if args.fp16 else "no", torch.get_num_threads())
    trainer = UnlearnTrainer(model=model, args=args, train_dataset=RowDataset(train_rows),
                             eval_dataset=RowDataset(val_rows) if val_rows else None, data_collator=collate,
                             objective=objective, callbacks=[_EvalAtEnd(), *(callbacks or [])], sam_rho=sam_rho,
                             disruption_mask=disruption_mask, cir_components=cir_components,
                             meta_relearn_step=meta_relearn_step)
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    objective.setup(trainer.model)
    ckpt_dir = stage_dir / "checkpoints"
    if trainer.accelerator.is_main_process:
        _drop_partial_checkpoints(ckpt_dir)
    trainer.accelerator.wait_for_everyone()
    found = complete_checkpoints(ckpt_dir)
    resume = str(found[-1]) if found else None
    if resume:
        logger.warning("%s: resuming from %s", desc, Path(resume).name)
    trainer.train(resume_from_checkpoint=resume)
    state = trainer.state
    history = _history(state.log_history, cfg.gradient_accumulation)
    kept = stage_dir / ("best" if select_best else "final")
    if before_save is not None:
        before_save(trainer.model)
    trainer.save_model(str(kept))  # after load_best_model_at_end: the best weights
    trainer.accelerator.wait_for_everyone()
    vals = [h for h in history if not math.isnan(h["val_loss"])]
    best_entry = min(vals, key=lambda h: h["val_loss"]) if vals else None
    if select_best and state.best_global_step:
        best = {"val_loss": state.best_metric, "step": state.best_global_step}
    elif best_entry:
        best = {"val_loss": best_entry["val_loss"], "step": best_entry["step"]}
    else:
        best = {"val_loss": None, "step": None}
    metrics = {"history": history, "best": best, "total_steps": state.max_steps, "kept": kept.name,
               "train_blocks": len(train_rows), "val_blocks": len(val_rows)}
    if trainer.second_losses:
        metrics["second_loss_last"] = trainer.second_losses[-1]
    if trainer.disruption and trainer.disruption.kept:
        metrics["disruption_mask_kept"] = float(np.mean(trainer.disruption.kept))
    if trainer.cir and trainer.cir.ready:
        metrics["cir"] = {"directions": trainer.cir.directions, "maps": len(trainer.cir.maps),
                          "seconds": round(trainer.cir.collect_seconds, 1)}
    return metrics, trainer


def cleanup_checkpoints(trainer: UnlearnTrainer, stage_dir: str | Path) -> None:
    """Remove the resume checkpoints of a finished stage (main process); logs (``runs/``) stay."""
    if trainer.accelerator.is_main_process:
        folder = Path(stage_dir) / "checkpoints"
        for ckpt in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            shutil.rmtree(ckpt, ignore_errors=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    trainer.accelerator.wait_for_everyone()


@torch.inference_mode()
def perplexity(model, rows: list[dict], pad_id: int, batch_size: int = 4, device=None) -> float:
    """Token-level perplexity of ``model`` on rows (next-token loss over input_ids)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = pad_batch(rows[start:start + batch_size], pad_id, None)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        labels = batch["labels"][:, 1:].to(device)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        nll += float(loss)
        count += int((labels != -100).sum())
    if was_training:
        model.train()
    return math.exp(nll / max(count, 1))


def train_and_keep(model, tokenizer, cfg: TrainConfig, stage_dir: str | Path, weights_dir: str | Path,
                   train_rows: list[dict], val_rows: list[dict], keep: str = "final", **kwargs):
    """The training stages' one skeleton: :func:`train_stage`, then the kept weights (``final``: after the last step;
    ``best``: the lowest validation loss) copied to ``weights_dir`` by the main process, and the checkpoints
    removed. Returns ``(metrics, trainer)``."""
    if keep not in ("final", "best"):
        raise ValueError(f"keep must be 'final' or 'best', got {keep!r}")
    result, trainer = train_stage(model, tokenizer, cfg, stage_dir, train_rows, val_rows, select_best=keep == "best",
                                  **kwargs)
    if trainer.accelerator.is_main_process:
        shutil.rmtree(weights_dir, ignore_errors=True)
        shutil.copytree(Path(stage_dir) / keep, weights_dir)
    cleanup_checkpoints(trainer, stage_dir)
    return result, trainer
