"""Training settings: one :class:`TrainConfig` for every training stage (the engine is
:mod:`llm_unlearn.training`); ``reinforce`` and ``finetune`` are this class with their own defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from .checks import SectionChecks

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
# transformers.get_scheduler names that need nothing beyond warmup and total steps (reduce_lr_on_plateau,
# cosine_with_min_lr and warmup_stable_decay need extra arguments the trainers do not pass)
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")

def check_training(cfg: SectionChecks) -> None:
    """Checks shared by the reinforce and finetune sections (same trainer)."""
    cfg._bool("full_finetune", "gradient_checkpointing")
    cfg._int("lora_r", 1)
    cfg._float("lora_alpha", 0, low_open=True)
    cfg._float("lora_dropout", 0, 1, high_open=True)
    if not cfg.full_finetune:
        cfg._texts("target_modules", non_empty=True)
    else:
        cfg._texts("target_modules")
    cfg._float("learning_rate", 0, low_open=True)
    cfg._float("epochs", 0, low_open=True)
    cfg._int("max_steps", 1, optional=True)
    cfg._int("batch_size", 1)
    cfg._int("gradient_accumulation", 1)
    cfg._float("warmup_ratio", 0, 1)
    cfg._float("weight_decay", 0)
    cfg._choice("lr_scheduler", LR_SCHEDULERS)
    cfg._int("eval_every", 1)
    cfg._choice("mixed_precision", MIXED_PRECISION)
    cfg._int("seed", 0)




# finetune.quantization_aware: the base file's own types, or a GGUF block format with a fixed grid
# (llm_unlearn.quant_aware.GRID_FORMATS)
QUANT_AWARE_CHOICES = ("base", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig(SectionChecks):
    """Training settings, the same fields for every training stage: the ``reinforce`` and ``finetune`` sections
    are this class (with their own defaults and, for finetune, more fields); the engine is
    :mod:`llm_unlearn.training`.

    Attributes:
        full_finetune: train every weight instead of a LoRA adapter.
        lora_r, lora_alpha, lora_dropout, target_modules: the LoRA adapter (peft); target modules absent from a
            model are skipped (none present is an error naming its linear layers).
        learning_rate, adam_beta1, adam_beta2, weight_decay: AdamW (beta2 0.999 is torch's default; the WHP
            fine-tune uses 0.98).
        epochs: passes over the training blocks, unless ``max_steps`` (optimizer steps) is set.
        batch_size: blocks per process per micro-batch; ``gradient_accumulation`` micro-batches per optimizer step.
        warmup_ratio, lr_scheduler: linear warmup over that share of the steps, then this transformers schedule.
        eval_every: optimizer steps between validations and checkpoints (resume points); also after the last step.
        mixed_precision: auto (bf16 autocast on CPUs with native bf16, see llm_unlearn.hardware) | no | bf16 |
            fp16 (GPU); bf16 works on any CPU (autocast), fast only where it is native.
        gradient_checkpointing: recompute activations in the backward pass (less memory, more time).
        report_to: ``none`` or a transformers logging integration (``tensorboard`` when installed, ``wandb``...).
        seed: LoRA initialisation, dropout and the data order.
    """

    section: ClassVar[str] = "training"
    full_finetune: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
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
    eval_every: int = 20  # steps between validation + checkpoint (resume point)
    mixed_precision: str = "auto"  # auto (bf16 autocast on CPUs with native bf16) | no | bf16 | fp16
    gradient_checkpointing: bool = False
    report_to: str = "none"  # none | tensorboard | ... (transformers integrations)
    seed: int = 0

    def validate(self) -> None:
        check_training(self)
        self._float("adam_beta1", 0, 1, high_open=True)
        self._float("adam_beta2", 0, 1, high_open=True)
        self._text("report_to")


@dataclass
class ReinforceConfig(TrainConfig):
    """WHP stage 1 (the reinforced model): :class:`TrainConfig` with 2 epochs."""

    section: ClassVar[str] = "reinforce"
    epochs: float = 2.0


# The labels settings that refine ``rise_tokens: target`` (R2, R4, R5), each with the value that means "off": the

@dataclass
class FinetuneConfig(TrainConfig):
    """The unlearning training: WHP's fine-tune on generic labels, and the training settings of every other
    method (``method``) too, so that methods compare at equal budgets. :class:`TrainConfig` (3 epochs, Adam beta2
    0.98 as in the authors' script) plus WHP's options and the retain text."""

    section: ClassVar[str] = "finetune"
    adam_beta2: float = 0.98
    epochs: float = 3.0
    label_alpha: Optional[float] = None  # which alpha's labels to train on (default: labels.alpha)
    # Beyond the paper (which trains on hard labels, argmax of the generic logits): cross-entropy against
    # softmax(generic logits) over their top-k (labels.soft_top_k > 0). Where nothing target-specific happens the
    # generic distribution is the base model's own, so the model is not sharpened toward its greedy guesses.
    soft_labels: bool = False
    retain_weight: float = 0.0  # beyond the paper: WHP's KL-to-base guard on generic text (0 = off)
    # generic text for retain terms (WHP's guard, the baselines' retain terms): a path or a list of paths, whose
    # blocks alternate (default: WikiText-2 valid from the data folder, see llm_unlearn.config.datadir)
    retain_corpus: Optional[str | list] = None
    retain_batch_size: Optional[int] = None  # generic blocks per step for retain terms (default: batch_size)
    # Robust unlearning, any method: sharpness-aware unlearning (Fan et al. 2025; llm_unlearn.training, rules
    # SAM1-SAM3): the main loss's gradient taken at the worst weights within this radius (0 = off; ~2x a step)
    sam_rho: float = 0.0
    # Disruption masking (Sondej et al. 2025, MUDMAN; llm_unlearn.robust, rules DM1-DM4): the unlearning gradient
    # kept only where its sign agrees with the averaged retain gradient's. Needs a retain term.
    disruption_mask: bool = False
    # Collapse of irrelevant representations (Sondej & Yang 2025, CIR; llm_unlearn.robust, rules CIR1-CIR4): the
    # unlearning gradient rebuilt from activations and output gradients without their mean and top principal
    # components over the training text: this many activation directions (1.5x as many gradient ones); 0 = off
    cir_components: int = 0
    # Meta-unlearning (MUDMAN's meta-learning; llm_unlearn.robust, rules MU1-MU3): the main loss's gradient taken at
    # the weights of a simulated relearner of the training text, which moves this far (normalised) each micro-batch
    # and is forked from the trained weights every 16; 0 = off; ~2x a step
    meta_relearn_step: float = 0.0
    # Quantization-aware unlearning (llm_unlearn.quant_aware, rules QA1-QA5): the forward sees the weights on the grid
    # of the format the model will ship in (``base``: each weight's type in the base's GGUF file), so rounding the
    # result to that format changes nothing. Needs full_finetune; null = off.
    quantization_aware: Optional[str] = None

    def validate(self) -> None:
        super().validate()
        self._choice("quantization_aware", QUANT_AWARE_CHOICES, optional=True)
        if self.quantization_aware and not self.full_finetune:
            self._fail("quantization_aware", "null unless full_finetune is true (it trains the quantized weights "
                       "themselves; a LoRA adapter merged into them would be rounded again)")
        self._float("label_alpha", 0, low_open=True, optional=True)
        self._bool("soft_labels", "disruption_mask")
        self._float("retain_weight", 0)
        self._float("sam_rho", 0)
        self._int("cir_components", 0)
        if self.cir_components and self.sam_rho:
            self._fail("cir_components", "0 while sam_rho is set (the two rebuild the main gradient in different "
                       "ways; use one)")
        self._float("meta_relearn_step", 0)
        if self.meta_relearn_step and (self.sam_rho or self.cir_components):
            self._fail("meta_relearn_step", "0 while sam_rho or cir_components is set (each rebuilds the main "
                       "gradient its own way; use one)")
        if self.cir_components and self.gradient_checkpointing:
            self._fail("cir_components", "0 with gradient_checkpointing (its recomputed forward would be collected "
                       "twice); turn checkpointing off")
        rc = self.retain_corpus
        if rc is not None and not (isinstance(rc, str) and rc.strip()) and not (
                isinstance(rc, list) and rc and all(isinstance(p, str) and p.strip() for p in rc)):
            self._fail("retain_corpus", "a path, a non-empty list of paths, or null")
        self._int("retain_batch_size", 1, optional=True)



