"""Stage 1: the reinforced model (whp-method.md, "Stage 1").

The base model is fine-tuned further on the target blocks with the ordinary next-token loss, by default as a
LoRA adapter (cheap, and the labels stage then needs only one copy of the base weights). The reinforced model
must fit the target better than the base: we measure perplexity on held-out target blocks before and after,
and say so loudly when it did not improve (the logit offset would then carry no target signal).
"""

from __future__ import annotations

import logging

from ..corpus import split_rows
from ..training import load_for_training, perplexity, stage_config, train_and_keep

logger = logging.getLogger(__name__)


def run_reinforce(run, recipe, progress: bool = True) -> dict:
    """corpus/blocks.jsonl -> reinforce/adapter (LoRA) or reinforce/adapter (full weights), + metrics."""
    cfg = stage_config(recipe.reinforce, recipe)
    model, tokenizer = load_for_training(recipe)
    train, val = split_rows(run)
    ppl_rows = val or train[: max(1, len(train) // 20)]
    base_ppl = perplexity(model, ppl_rows, tokenizer.pad_token_id, cfg.batch_size)
    # The reinforced model is the FINAL one: it should know the target blocks as well as possible (the labels are
    # computed on these same blocks), so no early stopping here.
    result, trainer = train_and_keep(model, tokenizer, cfg, run.reinforce_dir, run.reinforce_weights, train, val,
                                     keep="final", desc="reinforce", progress=progress)
    reinforced = trainer.accelerator.unwrap_model(trainer.model)
    reinforced_ppl = perplexity(reinforced, ppl_rows, tokenizer.pad_token_id, cfg.batch_size)
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
