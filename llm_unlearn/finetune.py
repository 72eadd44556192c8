"""Stage 4: the unlearning fine-tune (whp-method.md, "Stage 4").

The BASE model is fine-tuned on the original blocks with the generic labels (cross-entropy), LoRA by default.
As in the authors' script, the checkpoint with the lowest validation loss (on held-out blocks' generic
labels) is kept. Optional, beyond the paper: a retain guard, ``retain_weight * KL(base || model)`` on generic
text (WikiText-2 by default), which protects related knowledge that the labels alone would also push down; and
soft labels (``soft_labels``): cross-entropy against softmax of the stored top-k generic logits instead of their
argmax (:func:`llm_unlearn.training.soft_label_loss`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from .errors import RecipeError
from .labels import alpha_key, soft_keys, weight_key
from .models import load_model
from .recipe import Recipe
from .rundir import RunPaths
from .training import TrainConfig, Trainer, training_dtype

logger = logging.getLogger(__name__)

DEFAULT_RETAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext2" / "valid.txt"


class RetainGuard:
    """KL(base || model) on generic-text blocks, added to the loss with a weight.

    For a LoRA model the base distribution comes from the same weights with the adapter disabled, so the
    guard costs no extra memory. Retain blocks are cycled deterministically by step (resume-safe)."""

    def __init__(self, retain_rows: list[dict], weight: float, batch_size: int, pad_id: int, base_model=None):
        if not retain_rows:
            raise ValueError("retain guard needs generic text")
        self.rows, self.weight, self.batch_size, self.pad_id, self.base_model = retain_rows, weight, batch_size, pad_id, base_model

    def __call__(self, model, batch, step: int):
        from .training import pad_batch

        n = len(self.rows)
        rows = [self.rows[(step * self.batch_size + k) % n] for k in range(self.batch_size)]
        b = pad_batch(rows, self.pad_id, None)
        dev = batch["input_ids"].device
        ids, att = b["input_ids"].to(dev), b["attention_mask"].to(dev)
        inner = model.module if hasattr(model, "module") else model
        with torch.no_grad():
            if self.base_model is not None:
                ref = self.base_model(input_ids=ids, attention_mask=att).logits
            else:
                with inner.disable_adapter():
                    ref = inner(input_ids=ids, attention_mask=att).logits
        cur = model(input_ids=ids, attention_mask=att).logits
        mask = att.bool()
        ref_logp = torch.log_softmax(ref.float()[mask], -1)
        cur_logp = torch.log_softmax(cur.float()[mask], -1)
        kl = torch.nn.functional.kl_div(cur_logp, ref_logp, log_target=True, reduction="batchmean")
        return self.weight * kl


def retain_paths(recipe: Recipe) -> list[str]:
    paths = recipe.finetune.retain_corpus or str(DEFAULT_RETAIN)
    return [paths] if isinstance(paths, str) else list(paths)


def retain_rows(recipe: Recipe, tokenizer, limit_blocks: int = 256) -> list[dict]:
    """Blocks of generic text for the guard; with several files their blocks alternate, so every few steps see
    each kind of text (e.g. encyclopedia text and other fiction)."""
    from .corpus import load_blocks

    paths = retain_paths(recipe)
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise RecipeError(f"finetune.retain_weight > 0 needs generic text: {', '.join(missing)} not found; "
                          "set finetune.retain_corpus to a text file (or a list of them)")
    per_file = [load_blocks(p, tokenizer, block_size=min(recipe.corpus.block_size, 256),
                            max_blocks=max(1, limit_blocks // len(paths))) for p in paths]
    rows = []
    for k in range(max(len(b) for b in per_file)):
        rows += [{"input_ids": b[k].input_ids} for b in per_file if k < len(b)]
    return rows


def run_finetune(run: RunPaths, recipe: Recipe, progress: bool = True) -> dict:
    """labels/dataset -> finetune/adapter (best by validation loss on generic labels) + metrics."""
    import datasets

    cfg = TrainConfig.from_section(recipe.finetune, recipe)
    model, tokenizer = load_model(recipe.model.spec, dtype=training_dtype(recipe), device=recipe.model.device,
                                  trust_remote_code=recipe.model.trust_remote_code)
    alpha = recipe.finetune.label_alpha if recipe.finetune.label_alpha is not None else recipe.labels.alpha
    key = alpha_key(alpha)
    ds = datasets.load_from_disk(str(run.labels_dataset))
    if key not in ds.column_names:
        raise RecipeError(f"no labels for alpha {alpha} in {run.labels_dataset} (have {ds.column_names})")
    soft = soft_keys(alpha) if recipe.finetune.soft_labels else None
    if soft and soft[0] not in ds.column_names:
        raise RecipeError(f"finetune.soft_labels: {run.labels_dataset} has no top-k generic logits; set "
                          "labels.soft_top_k (e.g. 32) so the labels stage keeps them")
    weights = weight_key(alpha) if recipe.finetune.position_weighting else None
    if weights and (soft or weights not in ds.column_names):
        raise RecipeError("finetune.position_weighting needs the labels' position weights and hard labels: set "
                          "labels.position_weight (kl or tv) and finetune.soft_labels=false"
                          if not soft else "finetune.position_weighting and finetune.soft_labels cannot be combined")
    split = json.loads(run.split.read_text())
    by_block = {int(b): i for i, b in enumerate(ds["block_index"])}
    names = ["input_ids", key, *(soft or ()), *([weights] if weights else [])]
    cols = ds.select_columns(names).to_dict()
    rows = [{("position_weights" if c == weights else c): cols[c][i] for c in names} for i in range(len(ds))]
    train = [rows[by_block[i]] for i in split["train"]]
    val = [rows[by_block[i]] for i in split["validation"]]
    extra = None
    base_copy = None
    if cfg.retain_weight > 0:
        if cfg.full_finetune:
            base_copy, _ = load_model(recipe.model.spec, dtype=training_dtype(recipe), device=recipe.model.device)
        extra = RetainGuard(retain_rows(recipe, tokenizer), cfg.retain_weight,
                            recipe.finetune.retain_batch_size or cfg.batch_size,
                            tokenizer.pad_token_id, base_copy)
    trainer = Trainer(model, tokenizer, cfg, run.finetune_dir, train, val, label_key=key, extra_loss=extra,
                      desc="unlearn", soft_keys=soft)
    result = trainer.train(progress=progress)
    if trainer.accelerator.is_main_process:
        shutil.rmtree(run.finetune_weights, ignore_errors=True)
        shutil.copytree(run.finetune_dir / "best", run.finetune_weights)
        trainer.cleanup_checkpoints()
    return {"label_alpha": alpha, "soft_labels": bool(soft), "position_weighting": bool(weights), **result}
