"""The one ``unlearn`` stage every baseline runs: the method's loss on the target blocks, with the ``finetune``
section's training settings."""

from __future__ import annotations

from pathlib import Path

from ..chat_format import answer_only_rows
from ..corpus import split_rows
from ..quant_aware import grid_training
from ..training import load_for_training, stage_config, train_and_keep
from . import get_method
from .base import needs_retain_text


def run_unlearn(run, recipe, progress: bool = True) -> dict:
    """corpus/blocks.jsonl -> unlearn/adapter: a baseline method's training on the target blocks (its training
    settings are the ``finetune`` section's). Checkpoint rule, the same for every method (WHP's fine-tune included):
    the checkpoint with the lowest validation loss of the method's own loss on the held-out target blocks, the last
    step when there are none (TOFU unlearns every forget QA)."""
    method = get_method(recipe.method)
    config = getattr(recipe, method.name)
    cfg = stage_config(recipe.finetune, recipe)
    model, tokenizer = load_for_training(recipe)
    reference = None
    if cfg.full_finetune and config.needs_reference():
        reference, _ = load_for_training(recipe)
        reference.eval().requires_grad_(False)
    retain_batches = None
    if needs_retain_text(recipe):
        from ..retain import RetainBatches, retain_rows

        rows = retain_rows(recipe, tokenizer)
        answer_only_rows(tokenizer, rows)  # retain QA in the chat format: its answers only, as the forget side (L1)
        retain_batches = RetainBatches(rows, recipe.finetune.retain_batch_size or cfg.batch_size,
                                       tokenizer.pad_token_id)
    objective = method.objective(config, retain_batches, reference)
    train, val = split_rows(run)
    label_key = answer_only_rows(tokenizer, train, val)  # chat QA: the answer tokens only (rule L1, TOFU-C4)
    grid = grid_training(model, recipe.finetune.quantization_aware, recipe.model.spec, cfg.full_finetune,
                         cfg.target_modules)
    result, _ = train_and_keep(model, tokenizer, cfg, Path(run.root) / method.weights_stage, method.weights(run),
                               train, val, keep="best", objective=objective, label_key=label_key, desc=method.name,
                               progress=progress, sam_rho=recipe.finetune.sam_rho,
                               disruption_mask=recipe.finetune.disruption_mask,
                               cir_components=recipe.finetune.cir_components,
                               meta_relearn_step=recipe.finetune.meta_relearn_step,
                               before_save=grid.finish if grid else None)
    return {"method": method.name, **result}
