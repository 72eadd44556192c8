"""Stage 4: the unlearning fine-tune (whp-method.md, "Stage 4").

The BASE model is fine-tuned on the original blocks with the generic labels (cross-entropy), LoRA by default.
As in the authors' script, the checkpoint with the lowest validation loss (on held-out blocks' generic
labels) is kept. Optional, beyond the paper: a retain guard, ``retain_weight * KL(base || model)`` on generic
text (WikiText-2 by default), which protects related knowledge that the labels alone would also push down (with
``retain_name_weight``, weighted toward the positions that complete names: rules G1-G2 in :mod:`llm_unlearn.retain`); and
soft labels (``soft_labels``): cross-entropy against softmax of the stored top-k generic logits instead of their
argmax (:func:`llm_unlearn.losses.soft_label_loss`). The loss is :class:`llm_unlearn.methods.whp.WhpObjective`.
"""

from __future__ import annotations

import logging
import shutil

from .anchors import AnchorDictionary
from .corpus import read_split, texts_jsonl
from .errors import RecipeError
from .labels import alpha_key, load_label_rows, soft_keys, weight_key
from .methods.base import RetainTerm
from .methods.whp import WhpObjective
from .models import load_model
from .neighbours import guard_rows, neighbour_texts
from .recipe import Recipe
from .retain import NamePositions, RetainBatches, retain_paths, retain_rows  # noqa: F401 (retain_paths, retain_rows: re-exported)
from .rundir import RunPaths
from .runio import atomic_write_text
from .training import TrainConfig, cleanup_checkpoints, train_stage, training_dtype

logger = logging.getLogger(__name__)


class RetainGuard(WhpObjective):
    """WHP's objective with the retain guard: KL(base || model) on generic-text blocks, times ``weight``.

    For a LoRA model the base distribution comes from the same weights with the adapter disabled, so the guard
    costs no extra memory (``base_model``: a frozen copy, for full fine-tuning). Retain blocks are cycled
    deterministically by micro-step (resume-safe)."""

    def __init__(self, retain_rows: list[dict], weight: float, batch_size: int, pad_id: int, base_model=None,
                 name_weight: float = 0.0, tokenizer=None):
        names = NamePositions(tokenizer) if name_weight else None
        super().__init__(RetainTerm(RetainBatches(retain_rows, batch_size, pad_id, names), weight, "kl", base_model,
                                    name_weight))


def neighbour_guard_texts(run: RunPaths, recipe: Recipe, model, tokenizer, progress: bool = True) -> list[str]:
    """``finetune.neighbour_texts`` texts about other entities of the anchors' kinds, by the base model (before any
    adapter), kept in ``finetune/neighbours.jsonl`` for inspection (rules N1-N3 of :mod:`llm_unlearn.neighbours`)."""
    dictionary = AnchorDictionary.load(run.anchors)
    kinds = {e.type for e in dictionary.entries()}
    banned = [*dictionary.keys(), *dictionary.vetoed, *str(recipe.target or "").split()]
    texts = neighbour_texts(model, tokenizer, kinds, banned, recipe.finetune.neighbour_texts,
                            seed=recipe.finetune.seed, progress=progress)
    if not texts:
        raise RecipeError("finetune.neighbour_texts: every neighbour text the base model wrote named the target; "
                          "set finetune.neighbour_texts: 0")
    atomic_write_text(run.finetune_dir / "neighbours.jsonl", texts_jsonl(texts))
    logger.info("retain guard: %d neighbour texts (finetune/neighbours.jsonl)", len(texts))
    return texts


def run_finetune(run: RunPaths, recipe: Recipe, progress: bool = True) -> dict:
    """labels/dataset -> finetune/adapter (best by validation loss on generic labels) + metrics."""
    cfg = TrainConfig.from_section(recipe.finetune, recipe)
    model, tokenizer = load_model(recipe.model.spec, dtype=training_dtype(recipe), device=recipe.model.device,
                                  trust_remote_code=recipe.model.trust_remote_code)
    alpha = recipe.finetune.label_alpha if recipe.finetune.label_alpha is not None else recipe.labels.alpha
    key = alpha_key(alpha)
    soft = soft_keys(alpha) if recipe.finetune.soft_labels else None
    weights = weight_key(alpha) if recipe.finetune.position_weighting else None
    if weights and soft:
        raise RecipeError("finetune.position_weighting and finetune.soft_labels cannot be combined (the weights "
                          "apply to hard labels); turn one off")
    by_block = load_label_rows(run.labels_dataset, key, soft, weights)
    split = read_split(run)
    train = [by_block[i] for i in split["train"]]
    val = [by_block[i] for i in split["validation"]]
    objective = WhpObjective()
    if recipe.finetune.retain_weight > 0:
        base_copy = None
        if cfg.full_finetune:
            base_copy, _ = load_model(recipe.model.spec, dtype=training_dtype(recipe), device=recipe.model.device)
            base_copy.eval().requires_grad_(False)
        rows = retain_rows(recipe, tokenizer)
        if recipe.finetune.neighbour_texts:
            rows = guard_rows(rows, neighbour_guard_texts(run, recipe, model, tokenizer, progress), tokenizer)
        objective = RetainGuard(rows, recipe.finetune.retain_weight,
                                recipe.finetune.retain_batch_size or cfg.batch_size, tokenizer.pad_token_id, base_copy,
                                recipe.finetune.retain_name_weight, tokenizer)
    result, trainer = train_stage(model, tokenizer, cfg, run.finetune_dir, train, val, objective=objective,
                                  label_key=key, soft_keys=soft, select_best=True, desc="unlearn", progress=progress)
    if trainer.accelerator.is_main_process:
        shutil.rmtree(run.finetune_weights, ignore_errors=True)
        shutil.copytree(run.finetune_dir / "best", run.finetune_weights)
    cleanup_checkpoints(trainer, run.finetune_dir)
    if "second_loss_last" in result:
        result["extra_loss"] = result["second_loss_last"]
    return {"label_alpha": alpha, "soft_labels": bool(soft), "position_weighting": bool(weights), **result}

