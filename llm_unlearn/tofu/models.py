"""The target and retain models of TOFU: the base model fine-tuned on the QA of all authors of a configuration
(target) or of the retain authors only (retain), in the model's chat format, loss on the answer tokens only
(rules TOFU-C1/C2).

Rule TOFU-T1 (cache): a trained model lives in ``<cache>/<role>-<key>/`` where ``key`` hashes the QA pairs
trained on, the training config and the base model's identity (alias + package version, or a local folder's
config and weight file sizes, or a Hub id). Every method and every rerun reuses it; a changed input trains anew.
The folder is complete or absent (written atomically), with ``training.json``: wall time, tokens, estimated
FLOPs (rule TOFU-F1) - the retain model's cost is the "retraining" cost of the unlearning challenge.

Training runs through :func:`train_qa_model`, a small function boundary over ``transformers.Trainer`` + peft, so
the project's Trainer subclass can take its place without touching the rest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from ..chat_format import encode_qa
from ..errors import RecipeError
from ..runio import atomic_dir, atomic_write_json
from .data import QAItem
from .flops import count_flops, model_size

logger = logging.getLogger(__name__)

CHAT_FORMAT_VERSION = 1  # bump when chat.py changes what is trained on (invalidates cached models)


@dataclass
class QATrainConfig:
    """How the target and retain models are fine-tuned (TOFU: full fine-tuning, 5 epochs, lr 1e-5, batch 32)."""

    full_finetune: bool = True
    lora_r: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"])
    learning_rate: float = 1e-5
    epochs: float = 5.0
    batch_size: int = 8
    gradient_accumulation: int = 4
    warmup_epochs: float = 1.0  # TOFU warms up for one epoch
    weight_decay: float = 0.01
    lr_scheduler: str = "linear"
    mixed_precision: str = "no"  # no | bf16 | fp16 (bf16 also speeds up recent CPUs)
    gradient_checkpointing: bool = False
    max_length: int = 512
    group_by_length: bool = True  # batches of similar lengths: less padding computed (QA are 60-130 tokens)
    seed: int = 42

    def __post_init__(self):
        if self.learning_rate <= 0 or self.epochs <= 0:
            raise RecipeError("train.learning_rate and train.epochs must be > 0")
        if self.batch_size < 1 or self.gradient_accumulation < 1:
            raise RecipeError("train.batch_size and train.gradient_accumulation must be >= 1")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise RecipeError(f"train.mixed_precision must be no, bf16 or fp16 (got {self.mixed_precision!r})")
        if not self.full_finetune and not self.target_modules:
            raise RecipeError("train.target_modules must name the LoRA target layers when full_finetune is false")


@dataclass
class TrainedModel:
    path: Path  # a Hugging Face folder (weights merged when trained with LoRA)
    record: dict  # training.json

    @property
    def seconds(self) -> float:
        return float(self.record["wall_seconds"])

    @property
    def flops(self) -> float:
        return float(self.record["flops"]["flops"])


def base_identity(spec: str) -> str:
    """What identifies a base model's weights without reading them all (rule TOFU-T1)."""
    from ..models import resolve_spec

    resolved = resolve_spec(spec)
    if resolved.kind in ("alias", "gguf"):
        return f"{resolved.kind}:{resolved.cache_key}"
    if resolved.kind == "local":
        folder = Path(resolved.path)
        parts = [(folder / "config.json").read_text(encoding="utf-8")]
        parts += [f"{f.name}:{f.stat().st_size}" for f in sorted(folder.glob("*.safetensors"))]
        return "local:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"hub:{resolved.spec}"


def cache_key(base_spec: str, items: list[QAItem], cfg: QATrainConfig) -> str:
    payload = {"base": base_identity(base_spec), "train": asdict(cfg), "format": CHAT_FORMAT_VERSION,
               "qa": [[it.question, it.answer] for it in items]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _collate(pad_id: int):
    """Right-padded batches of QA rows (labels: the answer tokens only), as every training stage pads them."""
    from ..losses import pad_batch

    return functools.partial(pad_batch, pad_id=pad_id, label_key="labels")


def train_qa_model(base_spec: str, items: list[QAItem], cfg: QATrainConfig, out_dir: str | Path,
                   device: Optional[str] = None, progress: bool = True) -> dict:
    """Fine-tune ``base_spec`` on the QA ``items`` and save a standalone model in ``out_dir``; return the record.

    The function boundary over the trainer: ``transformers.Trainer`` (optimizer, schedule, accumulation, mixed
    precision, DDP under ``accelerate launch``) with peft LoRA when ``cfg.full_finetune`` is false."""
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from ..models import load_model
    from ..training import allow_mixed_precision, lora_targets

    if not items:
        raise RecipeError("no QA to train on")
    model, tokenizer = load_model(base_spec, dtype="float32", device=device)
    rows = [encode_qa(tokenizer, it.question, it.answer, cfg.max_length) for it in items]
    n_params = model_size(model)
    if not cfg.full_finetune:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=cfg.lora_dropout,
                                                 target_modules=lora_targets(model, cfg.target_modules)))
    model.train()
    steps_per_epoch = math.ceil(len(rows) / (cfg.batch_size * cfg.gradient_accumulation))
    out_dir = Path(out_dir)
    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation, num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)), bf16=cfg.mixed_precision == "bf16",
        fp16=cfg.mixed_precision == "fp16",
        save_strategy="no", report_to="none", logging_steps=max(1, steps_per_epoch // 2), seed=cfg.seed,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        # use_cpu whenever no GPU will be used: transformers refuses bf16 on a CPU unless told it is one
        remove_unused_columns=False, disable_tqdm=not progress,
        use_cpu=device == "cpu" or not torch.cuda.is_available(), optim="adamw_torch",
        # named only when on: transformers 5 renames the option (activation_checkpointing) and warns on the old one
        **({"gradient_checkpointing": True} if cfg.gradient_checkpointing else {}),
    )
    allow_mixed_precision(cfg.mixed_precision)  # before the Trainer's Accelerator (a process may train twice)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list([{**r, "length": len(r["input_ids"])} for r in rows]),
                      data_collator=_collate(tokenizer.pad_token_id))
    t0 = time.perf_counter()
    with count_flops(n_params, model.config.vocab_size) as flops:
        result = trainer.train()
    seconds = time.perf_counter() - t0
    trained = trainer.model
    if not cfg.full_finetune:
        trained = trained.merge_and_unload()
    trained = trained.to(torch.float32)
    trained.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    epochs = float(cfg.epochs)
    answer_tokens = sum(sum(1 for x in r["labels"] if x != -100) for r in rows)
    sequence_tokens = sum(len(r["input_ids"]) for r in rows)
    return {
        "base_model": base_spec, "qa": len(items), "epochs": epochs, "wall_seconds": seconds,
        "sequence_tokens_per_epoch": sequence_tokens, "answer_tokens_per_epoch": answer_tokens,
        "trained_tokens": int(flops.trained_tokens),
        "analytic_flops": (6 if cfg.full_finetune else 4) * n_params * sequence_tokens * epochs,
        "flops": flops.to_dict(), "train_loss": float(result.training_loss), "steps": int(result.global_step),
        "log": [h for h in trainer.state.log_history if "loss" in h],
        "config": asdict(cfg), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def cached_qa_model(role: str, base_spec: str, items: list[QAItem], cfg: QATrainConfig, cache_root: str | Path,
                    device: Optional[str] = None, progress: bool = True) -> TrainedModel:
    """The ``role`` (target / retain) model trained on ``items``, from the cache or trained now (rule TOFU-T1)."""
    folder = Path(cache_root) / f"{role}-{cache_key(base_spec, items, cfg)}"
    record_path = folder / "training.json"
    if record_path.is_file() and (folder / "config.json").is_file():
        logger.info("%s model: cached at %s", role, folder)
        return TrainedModel(folder, json.loads(record_path.read_text()))
    logger.info("%s model: fine-tuning %s on %d QA (cached at %s)", role, base_spec, len(items), folder)
    with atomic_dir(folder) as tmp:
        record = train_qa_model(base_spec, items, cfg, tmp, device=device, progress=progress)
        record["role"] = role
        import shutil

        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        atomic_write_json(tmp / "training.json", record)
    return TrainedModel(folder, record)
