"""The one trainer both training stages share (reinforce: next-token loss on the target; finetune: generic labels).

Small and explicit, in the spirit of peft/trl: a config, a LoRA (or full) wrapper, an accelerate loop with
gradient accumulation, warmup + schedule, periodic validation and checkpoints, best-checkpoint selection by
validation loss, and resume from the last checkpoint after a crash or kill.

Data order is a pure function of (seed, step), so a resumed run sees exactly the batches the killed run
would have seen; with several processes each takes its slice of every global batch (DDP via accelerate).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .errors import RecipeError
from .hardware import resolve_mixed_precision, training_weights_dtype
from .runio import atomic_write_json

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    full_finetune: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list = field(default_factory=list)
    learning_rate: float = 3e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.0
    epochs: float = 1.0
    max_steps: Optional[int] = None
    batch_size: int = 4
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.05
    lr_scheduler: str = "linear"
    eval_every: int = 20
    mixed_precision: str = "auto"  # auto: bf16 autocast on CPUs with native bf16 (hardware rule H2)
    gradient_checkpointing: bool = False
    retain_weight: float = 0.0
    seed: int = 0

    @classmethod
    def from_section(cls, section, recipe=None) -> TrainConfig:
        """The training fields of a recipe section; with the recipe, ``mixed_precision: auto`` is resolved for
        its model dtype and device (hardware rule H2)."""
        names = set(cls.__dataclass_fields__)
        cfg = cls(**{k: v for k, v in vars(section).items() if k in names})
        if recipe is not None:
            from .models import default_device

            cfg.mixed_precision = resolve_mixed_precision(cfg.mixed_precision, recipe.model.device or default_device(),
                                                          recipe.model.dtype)
        return cfg


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


def pad_batch(rows: list[dict], pad_id: int, label_key: str | None, soft_keys: tuple[str, str] | None = None) -> dict:
    """Right-pad a list of examples; padding gets attention 0 and label -100 (never trained on).

    With ``soft_keys`` (ids column, logits column) the batch also holds ``soft_ids`` / ``soft_logits``
    (batch x length x k): the top-k generic logits aligned with the labels."""
    length = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), length), dtype=torch.long)
    lab = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.as_tensor(r["input_ids"])
        att[i, :n] = 1
        lab[i, :n] = torch.as_tensor(r[label_key] if label_key else r["input_ids"])
    batch = {"input_ids": ids, "attention_mask": att, "labels": lab}
    if soft_keys:
        k = len(rows[0][soft_keys[0]][0])
        s_ids = torch.zeros((len(rows), length, k), dtype=torch.long)
        s_val = torch.zeros((len(rows), length, k), dtype=torch.float32)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            s_ids[i, :n] = torch.as_tensor(r[soft_keys[0]])
            s_val[i, :n] = torch.as_tensor(r[soft_keys[1]], dtype=torch.float32)
        batch.update(soft_ids=s_ids, soft_logits=s_val)
    if "position_weights" in rows[0]:  # finetune.position_weighting: a loss weight per position, aligned like labels
        weights = torch.zeros((len(rows), length), dtype=torch.float32)
        for i, r in enumerate(rows):
            weights[i, :len(r["input_ids"])] = torch.as_tensor(r["position_weights"], dtype=torch.float32)
        batch["weights"] = weights
    return batch


def soft_label_loss(logits: torch.Tensor, labels: torch.Tensor, soft_ids: torch.Tensor, soft_logits: torch.Tensor,
                    reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the model against softmax(top-k generic logits), at the positions the labels supervise.

    Shifted like causal-LM labels: position i predicts row i + 1. Tokens outside the top-k get target 0."""
    mask = labels[:, 1:] != -100
    logq = torch.log_softmax(logits[:, :-1].float()[mask], -1)
    p = torch.softmax(soft_logits[:, 1:][mask].float(), -1)
    nll = -(p * logq.gather(-1, soft_ids[:, 1:][mask])).sum(-1)
    return nll.mean() if reduction == "mean" else nll.sum()


def batch_schedule(n_items: int, global_batch: int, n_steps_micro: int, seed: int) -> list[list[int]]:
    """Deterministic list of global micro-batches (item indices): an epoch-wise seeded permutation."""
    out: list[list[int]] = []
    epoch = 0
    while len(out) < n_steps_micro:
        perm = np.random.default_rng(seed + epoch).permutation(n_items).tolist()
        for start in range(0, n_items, global_batch):
            out.append(perm[start:start + global_batch])
            if len(out) == n_steps_micro:
                break
        epoch += 1
    return out


class Trainer:
    """Train ``model`` on ``train_rows`` (dicts with input_ids and ``label_key``), validate on ``val_rows``.

    ``stage_dir`` receives ``checkpoints/`` (resume state), ``best/`` (adapter or full weights with the lowest
    validation loss), ``final/`` and ``metrics.json``. ``extra_loss(model, batch, step)`` may add a term (the
    retain guard); it is called on every micro-batch.
    """

    def __init__(self, model, tokenizer, cfg: TrainConfig, stage_dir: str | Path, train_rows: list[dict],
                 val_rows: list[dict], label_key: str | None = None,
                 extra_loss: Callable | None = None, accelerator=None, desc: str = "train",
                 soft_keys: tuple[str, str] | None = None):
        from accelerate import Accelerator

        self.cfg, self.tokenizer, self.label_key, self.extra_loss, self.desc = cfg, tokenizer, label_key, extra_loss, desc
        self.soft_keys = soft_keys  # train on soft labels (top-k generic logits) instead of hard labels
        self.stage_dir = Path(stage_dir)
        self.train_rows, self.val_rows = train_rows, val_rows
        if not train_rows:
            raise RecipeError(f"{desc}: no training blocks (corpus too small for the validation split?)")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        weights_are_fp32 = next(model.parameters()).dtype == torch.float32
        self.mixed_precision = resolve_mixed_precision(cfg.mixed_precision, device,
                                                       "auto" if weights_are_fp32 else "explicit")
        if accelerator is None:
            allow_mixed_precision(self.mixed_precision)
        self.accelerator = accelerator or Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation,
                                                      mixed_precision=self.mixed_precision,
                                                      cpu=not torch.cuda.is_available())
        logger.info("%s: %s weights, mixed precision %s, %d threads", desc,
                    str(next(model.parameters()).dtype).replace("torch.", ""), self.mixed_precision,
                    torch.get_num_threads())
        torch.manual_seed(cfg.seed)
        if cfg.full_finetune:
            self.model = model
        else:
            self.model = wrap_lora(model, cfg)
        if cfg.gradient_checkpointing:
            # With LoRA the frozen embeddings output no grad; checkpointed blocks then would not train.
            self.model.enable_input_require_grads()
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model.train()
        world = self.accelerator.num_processes
        self.global_batch = cfg.batch_size * world
        micro_per_epoch = math.ceil(len(train_rows) / self.global_batch)
        total_micro = cfg.max_steps * cfg.gradient_accumulation if cfg.max_steps else math.ceil(micro_per_epoch * cfg.epochs)
        self.total_micro = max(total_micro, 1)
        self.total_steps = math.ceil(self.total_micro / cfg.gradient_accumulation)
        self.schedule = batch_schedule(len(train_rows), self.global_batch, self.total_micro, cfg.seed)
        params = [p for p in self.model.parameters() if p.requires_grad]
        from transformers import get_scheduler

        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                           weight_decay=cfg.weight_decay)
        self.scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer,
                                       num_warmup_steps=int(cfg.warmup_ratio * self.total_steps),
                                       num_training_steps=self.total_steps)
        # The scheduler is stepped by hand once per optimizer step: accelerate's wrapper would step it once per
        # process, which is wrong for our global-step schedule.
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.pad_id = tokenizer.pad_token_id
        self.history: list[dict] = []
        self.best = {"val_loss": math.inf, "step": None}

    # ---- persistence ---------------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.stage_dir / "checkpoints"

    def _save_weights(self, folder: Path) -> None:
        """Adapter (LoRA) or full weights, safetensors, atomically."""
        acc = self.accelerator
        if not acc.is_main_process:
            return
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        acc.unwrap_model(self.model).save_pretrained(tmp, safe_serialization=True)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def _trainable_state(self) -> dict:
        model = self.accelerator.unwrap_model(self.model)
        return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}

    def _checkpoint(self, micro_step: int) -> None:
        """Save what a resume needs: trainable weights only (the LoRA adapter, not the frozen base), optimizer,
        scheduler, RNG and history. Written under a temporary name, then renamed."""
        from safetensors.torch import save_file

        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            target = self.ckpt_dir / f"step-{micro_step:07d}"
            tmp = self.ckpt_dir / f".tmp-step-{micro_step:07d}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_file(self._trainable_state(), str(tmp / "trainable.safetensors"))
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state()}, tmp / "state.pt")
            atomic_write_json(tmp / "trainer_state.json",
                              {"micro_step": micro_step, "history": self.history, "best": self.best})
            os.replace(tmp, target)
            # Keep only the newest checkpoint: it is all a resume needs.
            for old in sorted(self.ckpt_dir.glob("step-*"))[:-1]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _resume(self) -> int:
        from safetensors.torch import load_file

        ckpts = sorted(self.ckpt_dir.glob("step-*")) if self.ckpt_dir.exists() else []
        if not ckpts:
            return 0
        last = ckpts[-1]
        weights = load_file(str(last / "trainable.safetensors"))
        model = self.accelerator.unwrap_model(self.model)
        missing = set(weights) - {n for n, _ in model.named_parameters()}
        if missing:
            raise RuntimeError(f"checkpoint {last} does not match the model (e.g. {sorted(missing)[:3]})")
        model.load_state_dict(weights, strict=False)
        state = torch.load(last / "state.pt", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        info = json.loads((last / "trainer_state.json").read_text())
        self.history, self.best = info["history"], info["best"]
        if self.best.get("val_loss") is None:
            self.best["val_loss"] = math.inf
        logger.info("%s: resuming from %s (micro-step %d of %d)", self.desc, last.name, info["micro_step"], self.total_micro)
        return int(info["micro_step"])

    # ---- loop ----------------------------------------------------------------------------------------
    def _local_rows(self, global_indices: list[int]) -> list[dict]:
        acc = self.accelerator
        mine = global_indices[acc.process_index::acc.num_processes]
        return [self.train_rows[i] for i in (mine or global_indices[:1])]

    def _loss(self, batch: dict, reduction: str = "mean") -> torch.Tensor:
        """Token loss on the supervised positions: cross-entropy against the labels, or against the soft labels
        (softmax of the stored top-k generic logits) when the trainer has ``soft_keys``."""
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if self.soft_keys:
            return soft_label_loss(logits, batch["labels"], batch["soft_ids"], batch["soft_logits"], reduction=reduction)
        if "weights" in batch:
            from .labels import weighted_label_loss

            return weighted_label_loss(logits, batch["labels"], batch["weights"], reduction=reduction)
        shift_logits = logits[:, :-1].float()
        return torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                 batch["labels"][:, 1:].reshape(-1), ignore_index=-100,
                                                 reduction=reduction)

    @torch.no_grad()
    def validate(self) -> float:
        """Mean token loss on the validation rows (summed over processes)."""
        if not self.val_rows:
            return float("nan")
        acc = self.accelerator
        self.model.eval()
        total = torch.zeros(2, device=acc.device)
        rows = self.val_rows[acc.process_index::acc.num_processes]
        for start in range(0, len(rows), self.cfg.batch_size):
            batch = {k: v.to(acc.device) for k, v in pad_batch(rows[start:start + self.cfg.batch_size], self.pad_id,
                                                               self.label_key, self.soft_keys).items()}
            loss = self._loss(batch, reduction="sum")
            total += torch.stack([loss, (batch["labels"][:, 1:] != -100).sum().float()])
        total = acc.reduce(total, reduction="sum")
        self.model.train()
        return float(total[0] / total[1].clamp(min=1))

    def train(self, progress: bool = True) -> dict:
        from tqdm.auto import tqdm

        acc = self.accelerator
        start = self._resume()
        bar = tqdm(total=self.total_micro, initial=start, desc=self.desc, disable=not (progress and acc.is_main_process),
                   unit="batch")
        running = []
        for micro in range(start, self.total_micro):
            batch = {k: v.to(acc.device) for k, v in pad_batch(self._local_rows(self.schedule[micro]), self.pad_id,
                                                               self.label_key, self.soft_keys).items()}
            with acc.accumulate(self.model):
                loss = self._loss(batch)
                acc.backward(loss)
                # The extra term (retain guard) runs its own forward and backward after the main one, so the two
                # graphs are never in memory together; gradients add up as for backward(loss + extra).
                extra = self.extra_loss(self.model, batch, micro) if self.extra_loss else None
                if extra is not None:
                    acc.backward(extra)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
                if acc.sync_gradients:
                    self.scheduler.step()
                self.optimizer.zero_grad()
            running.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(running[-8:]):.3f}")
            done = micro + 1
            if done % (self.cfg.eval_every * self.cfg.gradient_accumulation) == 0 or done == self.total_micro:
                val = self.validate()
                entry = {"micro_step": done, "step": math.ceil(done / self.cfg.gradient_accumulation),
                         "train_loss": float(np.mean(running)) if running else None, "val_loss": val,
                         "lr": self.scheduler.get_last_lr()[0]}
                if extra is not None:
                    entry["extra_loss"] = float(extra.detach())
                self.history.append(entry)
                running = []
                if not math.isnan(val) and val < self.best["val_loss"]:
                    self.best = {"val_loss": val, "step": entry["step"]}
                    self._save_weights(self.stage_dir / "best")
                bar.write(f"{self.desc} step {entry['step']}/{self.total_steps}: train {entry['train_loss']:.4f} "
                          f"val {val:.4f}")
                self._checkpoint(done)
        bar.close()
        acc.wait_for_everyone()
        self._save_weights(self.stage_dir / "final")
        if acc.is_main_process and not (self.stage_dir / "best").exists():
            shutil.copytree(self.stage_dir / "final", self.stage_dir / "best")
        acc.wait_for_everyone()
        return {"history": self.history, "best": self.best, "total_steps": self.total_steps,
                "train_blocks": len(self.train_rows), "val_blocks": len(self.val_rows)}

    def cleanup_checkpoints(self) -> None:
        if self.accelerator.is_main_process:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)


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
