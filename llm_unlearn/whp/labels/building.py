"""Building labels for blocks: both models' forward passes on a batch, the formula at every mapped position, the
statistics, and the label dataset on disk."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...batching import pad_ids
from ...corpus import Block
from .formula import (
    CHUNK_LOGITS,
    IGNORE,
    MASK_RULES,
    alpha_key,
    block_rng,
    generic_logits,
    near_anchor_positions,
    reinforced_rise,
    soft_keys,
    suppression_index,
)

logger = logging.getLogger(__name__)


class LogitSource:
    """Gives base and reinforced logits. With a peft model the base pass runs with the adapter disabled."""

    def __init__(self, reinforced_model, base_model=None):
        self.reinforced = reinforced_model
        self.base_model = base_model  # only for a fully fine-tuned reinforced model
        self.device = next(reinforced_model.parameters()).device

    @staticmethod
    def _kwargs(model) -> dict:
        # No KV cache: a single forward pass would otherwise keep every layer's keys and values alive until it
        # returns (2 x layers x kv width x tokens; ~2 GB for a 7B model on 8 x 512 tokens). Logits are unchanged.
        return {"use_cache": False} if getattr(model, "config", None) is not None else {}

    def base(self, ids, att):
        if self.base_model is not None:
            return self.base_model(input_ids=ids, attention_mask=att, **self._kwargs(self.base_model)).logits
        with self.reinforced.disable_adapter():
            return self.reinforced(input_ids=ids, attention_mask=att, **self._kwargs(self.reinforced)).logits

    def reinforced_logits(self, ids, att):
        return self.reinforced(input_ids=ids, attention_mask=att, **self._kwargs(self.reinforced)).logits


@dataclass
class LabelStats:
    positions: int = 0
    supervised: int = 0
    changed: int = 0
    masked: Counter = None
    replacements: Counter = None
    anchors_used: Counter = None
    near_anchor: int = 0  # supervised positions where every token's rise counts (R5)

    def __post_init__(self):
        self.masked = self.masked or Counter()
        self.replacements = self.replacements or Counter()
        self.anchors_used = self.anchors_used or Counter()


def label_batch(source: LogitSource, blocks: Sequence[Block], block_indices: Sequence[int], translator,
                alphas: Sequence[float], seed: int, pad_id: int, stats: LabelStats,
                suppress: bool = True, soft_top_k: int = 0, rise_mask: torch.Tensor | None = None, near_anchor: int = 0) -> list[dict]:
    """Labels for one batch of blocks. Returns rows: block_index, input_ids, and one label list per alpha
    (with ``soft_top_k``, also the top-k generic logits and their token ids at every labelled position).
    ``rise_mask``: the ReLU term acts only on these tokens (R3 of :func:`target_token_mask`), except within
    ``near_anchor`` positions of an anchor, where it acts on every token (R5 of :func:`near_anchor_positions`)."""
    translated = [translator.translate(b, block_rng(seed, bi)) for b, bi in zip(blocks, block_indices, strict=True)]
    orig_ids, orig_att = pad_ids([b.input_ids for b in blocks], pad_id)
    tr_ids, tr_att = pad_ids([t.translated_ids for t in translated], pad_id)
    dev = source.device
    with torch.inference_mode():
        logits_b = source.base(tr_ids.to(dev), tr_att.to(dev))
        logits_r = source.reinforced_logits(orig_ids.to(dev), orig_att.to(dev))
    main_alpha = alphas[len(alphas) // 2]
    rows = []
    for row, (block, tb, bi) in enumerate(zip(blocks, translated, block_indices, strict=True)):
        n = len(block.input_ids)
        mapping, reason = np.asarray(tb.mapping), np.asarray(tb.mask_reason)
        keep = np.zeros(n, dtype=bool)
        keep[: n - 1] = (mapping[: n - 1] >= 0) & (reason[: n - 1] == 0)  # the last token predicts nothing
        for code, name in MASK_RULES.items():
            stats.masked[name] += int((reason[: n - 1] == code).sum())
        stats.masked["last_position"] += 1
        pos = np.nonzero(keep)[0]
        t_pos = mapping[pos]
        near = (near_anchor_positions(n, tb.anchor_spans, near_anchor)
                if rise_mask is not None and near_anchor > 0 else None)
        if near is not None:
            stats.near_anchor += int(near[pos].sum())
        preds = {alpha: torch.empty(pos.size, dtype=torch.long, device=dev) for alpha in alphas}
        k = min(soft_top_k, logits_b.size(-1))
        if k:
            top_v = {alpha: torch.empty(pos.size, k, device=dev) for alpha in alphas}
            top_i = {alpha: torch.empty(pos.size, k, dtype=torch.long, device=dev) for alpha in alphas}
        # Positions in chunks: the temporaries are chunk x vocabulary, whatever the block length; the rise
        # ReLU(v_r - v_b) and the suppression index are computed once per chunk and shared by every alpha.
        step = max(1, CHUNK_LOGITS // logits_b.size(-1))
        for c0 in range(0, pos.size, step):
            c_pos, c_tpos = pos[c0:c0 + step], t_pos[c0:c0 + step]
            v_b = logits_b[row, torch.from_numpy(c_tpos).to(dev)].float()
            v_r = logits_r[row, torch.from_numpy(c_pos).to(dev)].float()
            if near is None:
                rise = reinforced_rise(v_b, v_r, rise_mask)
            else:  # R5: the whole rise near anchors, the masked rise elsewhere
                rise = reinforced_rise(v_b, v_r)
                far = torch.from_numpy(~near[c_pos]).to(dev)
                rise[far] = rise[far] * rise_mask[: rise.size(-1)]
            sup = suppression_index(c_tpos, tb.suppress_from, dev) if suppress else None
            buf = torch.empty_like(v_b)
            for alpha in alphas:
                v = generic_logits(v_b, v_r, alpha, rise=rise, out=buf)
                if sup is not None:
                    v[sup] = float("-inf")
                torch.argmax(v, -1, out=preds[alpha][c0:c0 + c_pos.size])
                if k:
                    vals, idx = torch.topk(v, k, dim=-1)
                    top_v[alpha][c0:c0 + c_pos.size], top_i[alpha][c0:c0 + c_pos.size] = vals, idx
        ids = np.asarray(block.input_ids)
        out = {"block_index": int(bi), "input_ids": list(block.input_ids)}
        for alpha in alphas:
            pred = preds[alpha].cpu().numpy()
            labels = np.full(n, IGNORE, dtype=np.int64)
            labels[pos + 1] = pred
            out[alpha_key(alpha)] = labels.tolist()
            if k:  # aligned with the labels: row i + 1 holds the distribution predicted at position i
                ids_key, logits_key = soft_keys(alpha)
                soft_i = np.zeros((n, k), dtype=np.int64)
                soft_v = np.zeros((n, k), dtype=np.float32)
                soft_i[pos + 1], soft_v[pos + 1] = top_i[alpha].cpu().numpy(), top_v[alpha].cpu().numpy()
                out[ids_key], out[logits_key] = soft_i.tolist(), soft_v.tolist()
            if alpha == main_alpha:
                nxt = ids[pos + 1]
                changed = pred != nxt
                stats.changed += int(changed.sum())
                stats.replacements.update(zip(nxt[changed].tolist(), pred[changed].tolist(), strict=True))
        stats.positions += n
        stats.supervised += int(pos.size)
        stats.anchors_used.update(tb.chosen.keys())
        rows.append(out)
    del logits_b, logits_r
    return rows


def label_blocks(source: LogitSource, blocks: Sequence[Block], indices: Sequence[int], translator,
                 alphas: Sequence[float], batch_size: int, seed: int, pad_id: int, suppress: bool = True,
                 progress: bool = True, desc: str = "labels", soft_top_k: int = 0, rise_mask: torch.Tensor | None = None,
                 near_anchor: int = 0) -> tuple[list[dict], LabelStats]:
    """Label the blocks ``indices`` (of ``blocks``), batching blocks of similar length together."""
    from tqdm.auto import tqdm

    stats = LabelStats()
    # Padding-aware bucketing: sort by length so a batch pads little; output order is restored by block_index.
    order = sorted(indices, key=lambda i: -len(blocks[i].input_ids))
    rows: list[dict] = []
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, unit="batch"):
        chunk = order[start:start + batch_size]
        rows += label_batch(source, [blocks[i] for i in chunk], chunk, translator, alphas, seed, pad_id, stats, suppress,
                            soft_top_k, rise_mask, near_anchor)
    rows.sort(key=lambda r: r["block_index"])
    return rows, stats


def stats_summary(stats: LabelStats, tokenizer, top: int = 30) -> dict:
    repl = [{"original": tokenizer.decode([a]), "generic": tokenizer.decode([b]), "count": c}
            for (a, b), c in stats.replacements.most_common(top)]
    return {
        "positions": stats.positions,
        "supervised_positions": stats.supervised,
        "changed_fraction": stats.changed / max(stats.supervised, 1),
        "masked_by_rule": dict(stats.masked),
        "top_replacements": repl,
        "anchors_used_in_blocks": dict(stats.anchors_used.most_common(50)),
        "near_anchor_fraction": stats.near_anchor / max(stats.supervised, 1),
    }


def merge_stats(parts: list[dict], tokenizer) -> dict:
    """Combine per-process raw statistics (written as JSON by each shard)."""
    total = LabelStats()
    for p in parts:
        total.positions += p["positions"]
        total.supervised += p["supervised"]
        total.changed += p["changed"]
        total.masked.update(p["masked"])
        total.replacements.update({tuple(map(int, k.split(","))): v for k, v in p["replacements"].items()})
        total.anchors_used.update(p["anchors_used"])
        total.near_anchor += p.get("near_anchor", 0)
    return stats_summary(total, tokenizer)


def raw_stats(stats: LabelStats) -> dict:
    return {"positions": stats.positions, "supervised": stats.supervised, "changed": stats.changed,
            "masked": dict(stats.masked), "anchors_used": dict(stats.anchors_used),
            "near_anchor": stats.near_anchor,
            "replacements": {f"{a},{b}": c for (a, b), c in stats.replacements.items()}}


def label_dataset(rows: list[dict], alphas: Sequence[float]):
    """Rows as a `datasets` dataset: block_index, input_ids, attention_mask, one labels column per alpha (and the
    soft-label columns when present)."""
    import datasets

    data = {"block_index": [r["block_index"] for r in rows], "input_ids": [r["input_ids"] for r in rows],
            "attention_mask": [[1] * len(r["input_ids"]) for r in rows]}
    for a in alphas:
        for key in (alpha_key(a), *soft_keys(a)):
            if rows and key in rows[0]:
                data[key] = [r[key] for r in rows]
    return datasets.Dataset.from_dict(data)


def save_label_dataset(rows: list[dict], alphas: Sequence[float], folder: Path) -> None:
    """Save rows as a `datasets` dataset (see :func:`label_dataset`), atomically."""
    from ...runio import atomic_dir

    ds = label_dataset(rows, alphas)
    with atomic_dir(folder) as tmp:
        ds.save_to_disk(str(tmp))


def load_label_rows(folder: Path, key: str, soft: tuple[str, str] | None = None) -> dict[int, dict]:
    """The label dataset as training rows by block index: ``input_ids``, the labels column ``key``, and with ``soft``
    the two soft-label columns. Clear errors when the wanted columns are missing."""
    import datasets

    from ...errors import RecipeError

    ds = datasets.load_from_disk(str(folder))
    if key not in ds.column_names:
        raise RecipeError(f"no labels {key} in {folder} (have {ds.column_names}); the alpha must be among "
                          "labels.alphas")
    if soft and soft[0] not in ds.column_names:
        raise RecipeError(f"finetune.soft_labels: {folder} has no top-k generic logits; set labels.soft_top_k "
                          "(e.g. 32) so the labels stage keeps them")
    names = ["input_ids", key, *(soft or ())]
    cols = ds.select_columns(["block_index", *names]).to_dict()
    return {int(b): {c: cols[c][i] for c in names}
            for i, b in enumerate(cols["block_index"])}
