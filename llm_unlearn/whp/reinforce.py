"""Stage 1: the reinforced model (whp-method.md, "Stage 1").

The base model is fine-tuned further on the target blocks with the ordinary next-token loss, by default as a
LoRA adapter (cheap, and the labels stage then needs only one copy of the base weights). The reinforced model
must fit the target better than the base: we measure perplexity on held-out target blocks before and after,
and say so loudly when it did not improve (the logit offset would then carry no target signal).
"""

from __future__ import annotations

import logging
import shutil

from .corpus import split_rows
from .models import load_model
from .recipe import Recipe
from .rundir import RunPaths
from .training import TrainConfig, cleanup_checkpoints, perplexity, train_stage, training_dtype

logger = logging.getLogger(__name__)


def run_reinforce(run: RunPaths, recipe: Recipe, progress: bool = True) -> dict:
    """corpus/blocks.jsonl -> reinforce/adapter (LoRA) or reinforce/adapter (full weights), + metrics."""
    cfg = TrainConfig.from_section(recipe.reinforce, recipe)
    model, tokenizer = load_model(recipe.model.spec, dtype=training_dtype(recipe), device=recipe.model.device,
                                  trust_remote_code=recipe.model.trust_remote_code)
    train, val = split_rows(run)
    ppl_rows = val or train[: max(1, len(train) // 20)]
    base_ppl = perplexity(model, ppl_rows, tokenizer.pad_token_id, cfg.batch_size)
    # The reinforced model is the FINAL one: it should know the target blocks as well as possible (the labels are
    # computed on these same blocks), so no early stopping here.
    result, trainer = train_stage(model, tokenizer, cfg, run.reinforce_dir, train, val, select_best=False,
                                  desc="reinforce", progress=progress)
    reinforced = trainer.accelerator.unwrap_model(trainer.model)
    reinforced_ppl = perplexity(reinforced, ppl_rows, tokenizer.pad_token_id, cfg.batch_size)
    if trainer.accelerator.is_main_process:
        shutil.rmtree(run.reinforce_weights, ignore_errors=True)
        shutil.copytree(run.reinforce_dir / "final", run.reinforce_weights)
    cleanup_checkpoints(trainer, run.reinforce_dir)
    improved = reinforced_ppl < base_ppl
    metrics = {"base_perplexity": base_ppl, "reinforced_perplexity": reinforced_ppl, "improved": improved,
               "perplexity_on": "validation blocks" if val else "training blocks", **result}
    if not improved:
        logger.warning("!" * 70)
        logger.warning("REINFORCED MODEL DOES NOT FIT THE TARGET BETTER: perplexity %.3f -> %.3f. The labels "
                       "will carry little target signal; raise reinforce.epochs / learning_rate.", base_ppl, reinforced_ppl)
        logger.warning("!" * 70)
    else:
        logger.info("reinforce: target perplexity %.3f -> %.3f", base_ppl, reinforced_ppl)
    return metrics
