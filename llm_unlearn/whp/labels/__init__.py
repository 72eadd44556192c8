"""Stage 3: generic-prediction labels (whp-method.md, "Stage 3").

For every block: translate it (anchored terms -> generic translations, :mod:`llm_unlearn.whp.translation`), run the
BASE model on the translated block and the REINFORCED model on the original block, and at every mapped position

    v_generic = v_b - alpha * ReLU(v_r - v_b)                                  (:func:`generic_logits`)

The label for the next original token is ``argmax(v_generic)``. Positions that the translation marks as
"no loss" (inside an anchor, or predicting a repeated anchor) get ``-100``, and after a translation has been
used in the block its first tokens are suppressed at later positions (:func:`apply_suppression`).
Labels are stored shifted like ordinary causal-LM labels: ``labels[i + 1]`` is the target predicted at position
``i`` (Hugging Face models shift internally), and ``labels[0] = -100``. Beyond the paper, ``labels.soft_top_k = k``
also stores the top-k generic logits (and their token ids) of every labelled position, aligned the same way, for
fine-tuning on soft labels (``finetune.soft_labels``).

Beyond the paper, ``labels.rise_tokens: target`` lets the ReLU term act only on the target's own tokens
(:func:`target_token_mask`, rules R1-R3): the reinforced model also learns the target text's style (quotation marks
opening paragraphs, its punctuation and function words), and ``alpha`` times that rise teaches the model to avoid the
style of every similar text, which damages neighbours (other fiction) rather than the target;
``labels.rise_near_anchor`` counts every token's rise again near the anchors (R5).

Memory: full-vocabulary logits exist only for the current batch; labels for several alphas come from the
same forward passes. With a LoRA reinforced model only ONE copy of the base weights is in memory: the adapter
is switched off for the base pass. Work is sharded over processes (accelerate) by block index, and every
block's translation is seeded by (seed, block index), so any number of processes gives identical labels.
"""

from .building import (
           LabelStats,
           LogitSource,
           label_batch,
           label_blocks,
           label_dataset,
           load_label_rows,
           save_label_dataset,
)
from .formula import (
           IGNORE,
           MASK_RULES,
           alpha_key,
           apply_suppression,
           block_rng,
           generic_logits,
           near_anchor_positions,
           reinforced_rise,
           soft_keys,
           suppression_index,
           target_token_mask,
           target_words,
)
from .stage import run_labels

__all__ = ["LabelStats", "LogitSource", "label_batch", "label_blocks", "label_dataset", "load_label_rows",
           "save_label_dataset", "IGNORE", "MASK_RULES", "alpha_key", "apply_suppression", "block_rng",
           "generic_logits", "near_anchor_positions", "reinforced_rise", "soft_keys", "suppression_index",
           "target_token_mask", "target_words", "run_labels"]
