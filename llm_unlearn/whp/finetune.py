"""Stage 4: the unlearning fine-tune (whp-method.md, "Stage 4").

The BASE model is fine-tuned on the original blocks with the generic labels (cross-entropy), LoRA by default.
As in the authors' script, the checkpoint with the lowest validation loss (on held-out blocks' generic
labels) is kept. Optional, beyond the paper: the retain guard, ``retain_weight * KL(base || model)`` on generic
text (WikiText-2 by default), which protects related knowledge that the labels alone would also push down; and
soft labels (``soft_labels``): cross-entropy against softmax of the stored top-k generic logits instead of their
argmax (:func:`llm_unlearn.losses.soft_label_loss`). The loss is :class:`WhpObjective`. On chat-formatted QA
(TOFU) the loss is on the answer tokens only, as for every method (rule L1,
:func:`llm_unlearn.chat_format.mask_outside_answers`).
"""

from __future__ import annotations

import torch

from ..chat_format import mask_outside_answers
from ..corpus import read_split
from ..quant_aware import grid_training
from ..retain import RetainBatches, RetainTerm, retain_rows
from ..training import Objective, load_for_training, stage_config, train_and_keep
from .labels import alpha_key, load_label_rows, soft_keys


class WhpObjective(Objective):
    """Cross-entropy on the generic labels (hard, or soft when the batch holds them), plus the optional retain guard:
    ``retain_weight * KL(base || model)`` on generic text, with its own backward after the main one. For a LoRA model
    the base distribution comes from the same weights with the adapter off (no extra memory; a frozen copy for full
    fine-tuning); retain blocks are cycled deterministically by micro-step (resume-safe)."""

    def __init__(self, guard: RetainTerm | None = None):
        self.guard = guard

    def second_loss(self, model, batch: dict, micro_step: int) -> torch.Tensor | None:
        if self.guard is None or self.guard.weight == 0:
            return None
        return self.guard(model, batch["input_ids"], micro_step)


def run_finetune(run, recipe, progress: bool = True) -> dict:
    """labels/dataset -> finetune/adapter (best by validation loss on generic labels) + metrics."""
    cfg = stage_config(recipe.finetune, recipe)
    model, tokenizer = load_for_training(recipe)
    alpha = recipe.finetune.label_alpha if recipe.finetune.label_alpha is not None else recipe.labels.alpha
    key = alpha_key(alpha)
    soft = soft_keys(alpha) if recipe.finetune.soft_labels else None
    by_block = load_label_rows(run.labels_dataset, key, soft)
    split = read_split(run)
    train = [by_block[i] for i in split["train"]]
    val = [by_block[i] for i in split["validation"]]
    answers_only = mask_outside_answers(tokenizer, key, train, val)  # chat QA: the answer tokens only (rule L1)
    guard = None
    if recipe.finetune.retain_weight > 0:
        base_copy = None
        if cfg.full_finetune:
            base_copy, _ = load_for_training(recipe)
            base_copy.eval().requires_grad_(False)
        batches = RetainBatches(retain_rows(recipe, tokenizer), recipe.finetune.retain_batch_size or cfg.batch_size,
                                tokenizer.pad_token_id)
        guard = RetainTerm(batches, recipe.finetune.retain_weight, "kl", base_copy)
    grid = grid_training(model, recipe.finetune.quantization_aware, recipe.model.spec, cfg.full_finetune,
                         cfg.target_modules)
    result, _ = train_and_keep(model, tokenizer, cfg, run.finetune_dir, run.finetune_weights, train, val, keep="best",
                               objective=WhpObjective(guard), label_key=key, soft_keys=soft, desc="unlearn",
                               progress=progress, sam_rho=recipe.finetune.sam_rho,
                               disruption_mask=recipe.finetune.disruption_mask,
                               cir_components=recipe.finetune.cir_components,
                               meta_relearn_step=recipe.finetune.meta_relearn_step,
                               before_save=grid.finish if grid else None)
    if "second_loss_last" in result:
        result["extra_loss"] = result["second_loss_last"]
    return {"label_alpha": alpha, "soft_labels": bool(soft), "answer_only_rows": answers_only, **result}
