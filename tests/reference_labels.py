"""A straightforward re-implementation of the authors' label procedure (whp-method.md, "Stage 3").

This is what the benchmark compares :func:`llm_unlearn.whp.labels.label_blocks` against, and what the equality test
checks it against. It is written the way the procedure reads, with no batching or vectorisation:

* one block at a time (batch of one, so no padding);
* the base model on the translated block, the reinforced model on the original block;
* a Python loop over the positions of the block; at each kept position the suppression id list is rebuilt from
  ``suppress_from`` (every entry whose translated position is <= this position), and for each alpha the generic
  logits are computed with the project's own :func:`~llm_unlearn.whp.labels.generic_logits` (so the formula is
  single-sourced), the suppressed ids are set to -inf, and the argmax is the label.

It is deliberately not slowed down artificially: it uses the same model, the same attention implementation, the
same translator and ``torch.no_grad``. It only omits what the optimised path does on top (bucketing by length,
several blocks per forward pass, vectorised masking and suppression, inference mode).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from llm_unlearn.whp.labels import IGNORE, alpha_key, block_rng, generic_logits


def reference_block_labels(source, block, translated, alphas: Sequence[float], suppress: bool = True,
                           timings: dict | None = None) -> dict:
    """Labels for ONE block, given its translation (a ``TranslatedBlock``). ``timings`` (optional) accumulates
    seconds spent in the forward passes ("forward") and in the per-position loop ("loop")."""
    t0 = time.perf_counter()
    orig = torch.tensor([block.input_ids], device=source.device)
    tr = torch.tensor([translated.translated_ids], device=source.device)
    with torch.no_grad():
        logits_b = source.base(tr, torch.ones_like(tr))[0]
        logits_r = source.reinforced_logits(orig, torch.ones_like(orig))[0]
    t1 = time.perf_counter()
    n = len(block.input_ids)
    labels = {alpha: [IGNORE] * n for alpha in alphas}
    for i in range(n - 1):  # the last position predicts nothing inside the block
        t = int(translated.mapping[i])
        if t < 0 or int(translated.mask_reason[i]) != 0:
            continue  # inside an anchor, or predicting a repeated anchor: no loss
        # the ids suppressed at this translated position, rebuilt from scratch here
        suppressed: list[int] = []
        if suppress:
            for p, ids in translated.suppress_from:
                if t >= p:
                    suppressed.extend(ids)
        v_b = logits_b[t].float()
        v_r = logits_r[i].float()
        for alpha in alphas:
            v = generic_logits(v_b, v_r, alpha)
            if suppressed:
                v[suppressed] = float("-inf")
            labels[alpha][i + 1] = int(v.argmax())
    if timings is not None:
        timings["forward"] = timings.get("forward", 0.0) + t1 - t0
        timings["loop"] = timings.get("loop", 0.0) + time.perf_counter() - t1
    out = {"block_index": None, "input_ids": list(block.input_ids)}
    for alpha in alphas:
        out[alpha_key(alpha)] = labels[alpha]
    return out


def reference_labels(source, blocks, indices: Sequence[int], translator, alphas: Sequence[float], seed: int,
                     suppress: bool = True, timings: dict | None = None) -> list[dict]:
    """Rows in the same format as :func:`llm_unlearn.whp.labels.label_blocks` (sorted by block index)."""
    rows = []
    for bi in sorted(indices):
        block = blocks[bi]
        translated = translator.translate(block, block_rng(seed, bi))
        row = reference_block_labels(source, block, translated, alphas, suppress, timings)
        row["block_index"] = int(bi)
        rows.append(row)
    return rows


def compare_rows(fast: list[dict], ref: list[dict], alphas: Sequence[float]) -> dict:
    """Count label differences between two row lists (same blocks); lists every differing position."""
    diffs = []
    total = 0
    assert [r["block_index"] for r in fast] == [r["block_index"] for r in ref], "different blocks"
    for a_row, b_row in zip(fast, ref, strict=True):
        assert a_row["input_ids"] == b_row["input_ids"]
        for alpha in alphas:
            a, b = a_row[alpha_key(alpha)], b_row[alpha_key(alpha)]
            total += sum(x != IGNORE for x in b)
            for pos, (x, y) in enumerate(zip(a, b, strict=True)):
                if x != y:
                    diffs.append({"block_index": a_row["block_index"], "alpha": alpha, "position": pos,
                                  "fast": x, "reference": y})
    return {"labels_compared": total, "differences": len(diffs), "examples": diffs[:20]}
