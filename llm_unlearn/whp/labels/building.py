"""Stage 3: generic-prediction labels (whp-method.md, "Stage 3").

For every block: translate it (anchored terms -> generic translations, :mod:`llm_unlearn.translation`), run the
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
style of every similar text, which damages neighbours (other fiction) rather than the target. ``labels.rise_other``
keeps a share of the other tokens' rise (R4), a dial between the two; ``labels.rise_near_anchor`` counts every token's
rise again near the anchors (R5).

Memory: full-vocabulary logits exist only for the current batch; labels for several alphas come from the
same forward passes. With a LoRA reinforced model only ONE copy of the base weights is in memory: the adapter
is switched off for the base pass. Work is sharded over processes (accelerate) by block index, and every
block's translation is seeded by (seed, block index), so any number of processes gives identical labels.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .corpus import Block
from .hardware import training_weights_dtype as label_weights_dtype

logger = logging.getLogger(__name__)

IGNORE = -100
MASK_RULES = {1: "inside_anchor", 2: "predicts_repeated_anchor"}


# Positions are post-processed in chunks of about this many logits (per tensor), so that the temporaries of the
# formula stay small (and in cache on a CPU) whatever the vocabulary and block size: 2**18 float32 = 1 MiB.
CHUNK_LOGITS = 2**18


def generic_logits(v_base: torch.Tensor, v_reinforced: torch.Tensor, alpha: float,
                   rise: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """The WHP formula: push down every logit the reinforced model raised above the base model.

    ``rise`` (``relu(v_reinforced - v_base)``, see :func:`reinforced_rise`) may be passed to share it between
    several alphas, and ``out`` a buffer to write into; the result is bit-identical either way (the same
    float32 operations in the same order)."""
    if rise is None:
        rise = reinforced_rise(v_base, v_reinforced)
    if out is None:
        return v_base - alpha * rise
    torch.mul(rise, alpha, out=out)
    return torch.sub(v_base, out, out=out)


POSITION_WEIGHTS = ("none", "kl", "tv")


def position_weights(v_base: torch.Tensor, v_generic: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """How far the generic distribution moved from the base model's at each position (beyond the paper), in [0, 1].

    W1. ``kl``: ``1 - exp(-KL(generic || base))``; ``tv``: the probability mass that moved,
        ``0.5 * sum |p_generic - p_base|`` (what the ReLU term and the suppression took from the base model's
        predictions and gave to other tokens).
    W2. 0 where the generic logits equal the base logits (nothing target-specific happens there), close to 1 where
        the target's tokens held most of the mass.
    W3. Suppressed tokens (-inf generic logits) count as moved mass; they contribute nothing to the KL sum themselves.

    ``v_base`` and ``v_generic``: logits (..., vocabulary); returns weights of shape (...)."""
    if kind not in ("kl", "tv"):
        raise ValueError(f"position weight kind must be 'kl' or 'tv', got {kind!r}")
    logp_b = torch.log_softmax(v_base.float(), -1)
    logp_g = torch.log_softmax(v_generic.float(), -1)
    p_g = logp_g.exp()
    if kind == "tv":
        return (0.5 * (p_g - logp_b.exp()).abs().sum(-1)).clamp(0.0, 1.0)
    terms = torch.where(p_g > 0, p_g * (logp_g - logp_b), torch.zeros_like(p_g))
    return 1.0 - torch.exp(-terms.sum(-1).clamp(min=0.0))


def weighted_label_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                        reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on hard labels with a weight per position (``labels`` and ``weights`` aligned like causal-LM
    labels: row ``i + 1`` for the prediction at position ``i``). W4: the sum of weighted losses is divided by the
    number of supervised positions (not by the sum of weights), so a block where the target barely lives
    contributes little instead of being scaled back up."""
    lab, w = labels[:, 1:], weights[:, 1:].float()
    mask = lab != IGNORE
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].float()[mask], lab[mask], reduction="none")
    total = (ce * w[mask]).sum()
    if reduction == "sum":
        return total
    return total / mask.sum().clamp(min=1)


def reinforced_rise(v_base: torch.Tensor, v_reinforced: torch.Tensor,
                    token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ReLU(v_r - v_b): how much the reinforced model raised each logit; with ``token_mask`` (vocabulary, 0/1), only
    the rise of the masked-in tokens (R3 of :func:`target_token_mask`)."""
    rise = (v_reinforced - v_base).relu_()
    if token_mask is not None:
        rise.mul_(token_mask[: rise.size(-1)])
    return rise


WORD = re.compile(r"[A-Za-z][A-Za-z'’]*")


def blend_rise_mask(target_mask: torch.Tensor, other: float) -> torch.Tensor:
    """R4: the rise mask with weight 1 on the target's tokens and ``other`` on every other token."""
    if not 0.0 <= other <= 1.0:
        raise ValueError(f"the share of the rise kept for other tokens must be in [0, 1], got {other!r}")
    return target_mask + other * (1.0 - target_mask)


def near_anchor_positions(n: int, anchor_spans: Sequence[tuple[int, int]], window: int) -> np.ndarray:
    """R5. Where the target lives in a block, for ``labels.rise_near_anchor = W`` (with ``rise_tokens: target``):
    from the position that predicts an anchor's first token to the W positions after its last token (the
    predictions of the W tokens that follow the anchor). There the rise of EVERY token counts, as in the paper's
    formula: how the book goes on after "Holmes" (his habits, his genre) is the target's own. Elsewhere only the
    target's tokens' rise counts (R3, R4), so the book's style is not unlearned from similar text. ``anchor_spans``:
    (first, last) original token positions of the translated anchors (``TranslatedBlock.anchor_spans``); W = 0:
    no position (the option is off). Returns a bool array over the block's ``n`` positions."""
    near = np.zeros(n, dtype=bool)
    if window <= 0:
        return near
    for first, last in anchor_spans:
        near[max(first - 1, 0):min(last + window + 1, n)] = True
    return near


def target_words(texts: Iterable[str], min_ratio: float, min_count: int = 3) -> dict[str, float]:
    """R1. The target's own words: words (letters and apostrophes) that occur at least ``min_count`` times in the
    target text and ``min_ratio`` times more often there than in general English (wordfreq; the same smoothed
    frequency ratio per million words as the anchors' keyness). Case-folded for counting; returns every surface form
    seen of a kept word -> its ratio. Punctuation and numbers are never words, so never target tokens."""
    from .anchors import keyness_ratio

    forms: Counter = Counter()
    for text in texts:
        forms.update(WORD.findall(text))
    folded: Counter = Counter()
    for form, n in forms.items():
        folded[form.lower()] += n
    total = sum(folded.values())
    ratios = {w: keyness_ratio(n, total, w) for w, n in folded.items() if n >= min_count}
    return {form: ratios[form.lower()] for form in forms
            if form.lower() in ratios and ratios[form.lower()] >= min_ratio}


def target_token_mask(words: Iterable[str], anchor_keys: Iterable[str], tokenizer, vocab_size: int,
                      common_zipf: float = 4.5, single_letters: bool = True) -> torch.Tensor:
    """R2. The target's tokens: the first token of `` word`` (the word after a space, as inside a sentence), and a
    capitalised ``word`` at a line start when it is one token, for the target's words (R1) and the anchors' keys: the
    token the position before the word predicts, where the model's knowledge of what comes next lives. Later pieces of
    a word ("ing", "ness") and other pieces without a space ("ar", "hat") are shared with every other word, so they
    are left out.
    R3. ``labels.rise_tokens: target``: the ReLU term acts only on these tokens (float 0/1 mask over the vocabulary,
    ``vocab_size`` = the logits' width); every other token keeps the base model's logit.
    R4. ``labels.rise_other = w`` (0 <= w <= 1): every other token keeps the share ``w`` of its rise instead
    (:func:`blend_rise_mask`); w = 0 is R3, w = 1 the paper's formula.
    R5. ``labels.rise_near_anchor = W``: near an anchor every token's rise counts again (:func:`near_anchor_positions`).
    A piece without letters ("-", "1"), the words " a" and " I", or a common English word that is not itself a
    target word (wordfreq Zipf >= ``common_zipf``: " the", " as") is never a target token, whatever word it came
    from; one capital or small letter is (" L" of " L|est|rade": many names start with one) unless
    ``single_letters`` is false (``labels.rise_letters: false``): such a piece also starts every other name that
    the tokenizer splits the same way (" L|incoln"), so pushing it down can reach famous names outside the target."""
    from wordfreq import zipf_frequency

    words, anchor_keys = list(words), list(anchor_keys)  # each is read twice
    own = {w.lower() for w in words} | {p.lower() for k in anchor_keys for p in WORD.findall(k)}
    mask = torch.zeros(vocab_size)
    for word in {*words, *anchor_keys}:
        inside = tokenizer(" " + word, add_special_tokens=False)["input_ids"][:1]
        start = tokenizer(word, add_special_tokens=False)["input_ids"]
        for i in {*inside, *(start if len(start) == 1 and word[:1].isupper() else ())}:
            piece = tokenizer.decode([i]).strip().lower()
            if not 0 <= i < vocab_size or not any(c.isalpha() for c in piece) or piece in ("a", "i"):
                continue
            if len(piece) == 1 and not single_letters:
                continue
            if len(piece) == 1 or piece in own or zipf_frequency(piece, "en") < common_zipf:
                mask[i] = 1.0
    return mask


def suppression_index(translated_pos: np.ndarray, suppress_from: Sequence[tuple[int, list[int]]],
                      device=None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(rows, cols) of the logits to suppress: at each row whose translated position is >= p, the ids of p."""
    rows_all, cols_all = [], []
    for p, ids in suppress_from:
        if not ids:
            continue
        rows = np.nonzero(translated_pos >= p)[0]
        if rows.size == 0:
            continue
        rows_all.append(np.repeat(rows, len(ids)))
        cols_all.append(np.tile(np.asarray(ids, dtype=np.int64), rows.size))
    if not rows_all:
        return None
    return (torch.from_numpy(np.concatenate(rows_all)).to(device),
            torch.from_numpy(np.concatenate(cols_all)).to(device))


def apply_suppression(v: torch.Tensor, translated_pos: np.ndarray, suppress_from: Sequence[tuple[int, list[int]]]) -> None:
    """In place: set to -inf, at each row whose translated position is >= p, the token ids suppressed from p on.

    Suppressing in v_b before the formula or in v_generic after it is the same for the argmax:
    -inf - alpha * ReLU(v_r + inf) = -inf. Doing it once on v_generic per alpha is simplest."""
    index = suppression_index(translated_pos, suppress_from, v.device)
    if index is not None:
        v[index] = float("-inf")


def block_rng(seed: int, block_index: int) -> random.Random:
    """Per-block RNG for choosing translations: independent of batching and sharding."""
    return random.Random(f"{seed}:{block_index}")


def alpha_key(alpha: float) -> str:
    return f"labels_alpha_{float(alpha):g}"


def weight_key(alpha: float) -> str:
    """Dataset column of the position weights for one alpha (labels.position_weight != "none")."""
    return f"position_weights_alpha_{float(alpha):g}"


def soft_keys(alpha: float) -> tuple[str, str]:
    """Dataset columns of the top-k generic logits (token ids, logits) for one alpha (labels.soft_top_k > 0)."""
    return f"soft_ids_alpha_{float(alpha):g}", f"soft_logits_alpha_{float(alpha):g}"


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


def _pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s)
        att[i, : len(s)] = 1
    return ids, att


@dataclass
class LabelStats:
    positions: int = 0
    supervised: int = 0
    changed: int = 0
    masked: Counter = None
    replacements: Counter = None
    anchors_used: Counter = None
    weight_sum: float = 0.0  # sum of position weights at the main alpha (labels.position_weight)
    near_anchor: int = 0  # supervised positions where every token's rise counts (R5)

    def __post_init__(self):
        self.masked = self.masked or Counter()
        self.replacements = self.replacements or Counter()
        self.anchors_used = self.anchors_used or Counter()


def label_batch(source: LogitSource, blocks: Sequence[Block], block_indices: Sequence[int], translator,
                alphas: Sequence[float], seed: int, pad_id: int, stats: LabelStats,
                suppress: bool = True, soft_top_k: int = 0, weight_kind: str = "none",
                rise_mask: torch.Tensor | None = None, near_anchor: int = 0) -> list[dict]:
    """Labels for one batch of blocks. Returns rows: block_index, input_ids, and one label list per alpha
    (with ``soft_top_k``, also the top-k generic logits and their token ids at every labelled position; with
    ``weight_kind`` "kl" or "tv", the position weights of :func:`position_weights`, aligned like the labels).
    ``rise_mask``: the ReLU term acts only on these tokens (R3 of :func:`target_token_mask`), except within
    ``near_anchor`` positions of an anchor, where it acts on every token (R5 of :func:`near_anchor_positions`)."""
    translated = [translator.translate(b, block_rng(seed, bi)) for b, bi in zip(blocks, block_indices, strict=True)]
    orig_ids, orig_att = _pad([b.input_ids for b in blocks], pad_id)
    tr_ids, tr_att = _pad([t.translated_ids for t in translated], pad_id)
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
        weights = ({alpha: torch.empty(pos.size, device=dev) for alpha in alphas} if weight_kind != "none" else None)
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
                if weights is not None:
                    weights[alpha][c0:c0 + c_pos.size] = position_weights(v_b, v, weight_kind)
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
            if weights is not None:
                w = np.zeros(n, dtype=np.float32)
                w[pos + 1] = weights[alpha].cpu().numpy()
                out[weight_key(alpha)] = w.tolist()
                if alpha == main_alpha:
                    stats.weight_sum += float(w.sum())
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
                 progress: bool = True, desc: str = "labels", soft_top_k: int = 0,
                 weight_kind: str = "none", rise_mask: torch.Tensor | None = None,
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
                            soft_top_k, weight_kind, rise_mask, near_anchor)
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
        "mean_position_weight": stats.weight_sum / max(stats.supervised, 1),
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
        total.weight_sum += p.get("weight_sum", 0.0)
        total.near_anchor += p.get("near_anchor", 0)
    return stats_summary(total, tokenizer)


def raw_stats(stats: LabelStats) -> dict:
    return {"positions": stats.positions, "supervised": stats.supervised, "changed": stats.changed,
            "masked": dict(stats.masked), "anchors_used": dict(stats.anchors_used), "weight_sum": stats.weight_sum,
            "near_anchor": stats.near_anchor,
            "replacements": {f"{a},{b}": c for (a, b), c in stats.replacements.items()}}


def label_dataset(rows: list[dict], alphas: Sequence[float]):
    """Rows as a `datasets` dataset: block_index, input_ids, attention_mask, one labels column per alpha (and the
    soft-label columns when present)."""
    import datasets

    data = {"block_index": [r["block_index"] for r in rows], "input_ids": [r["input_ids"] for r in rows],
            "attention_mask": [[1] * len(r["input_ids"]) for r in rows]}
    for a in alphas:
        for key in (alpha_key(a), *soft_keys(a), weight_key(a)):
            if rows and key in rows[0]:
                data[key] = [r[key] for r in rows]
    return datasets.Dataset.from_dict(data)


def save_label_dataset(rows: list[dict], alphas: Sequence[float], folder: Path) -> None:
    """Save rows as a `datasets` dataset (see :func:`label_dataset`), atomically."""
    from .runio import atomic_dir

    ds = label_dataset(rows, alphas)
    with atomic_dir(folder) as tmp:
        ds.save_to_disk(str(tmp))


def load_label_rows(folder: Path, key: str, soft: tuple[str, str] | None = None,
                    weights: str | None = None) -> dict[int, dict]:
    """The label dataset as training rows by block index: ``input_ids``, the labels column ``key``, with ``soft``
    the two soft-label columns, and with ``weights`` that position-weights column (as ``position_weights``).
    Clear errors when the wanted columns are missing."""
    import datasets

    from .errors import RecipeError

    ds = datasets.load_from_disk(str(folder))
    if key not in ds.column_names:
        raise RecipeError(f"no labels {key} in {folder} (have {ds.column_names}); the alpha must be among "
                          "labels.alphas")
    if soft and soft[0] not in ds.column_names:
        raise RecipeError(f"finetune.soft_labels: {folder} has no top-k generic logits; set labels.soft_top_k "
                          "(e.g. 32) so the labels stage keeps them")
    if weights and weights not in ds.column_names:
        raise RecipeError(f"finetune.position_weighting: {folder} has no position weights; set "
                          "labels.position_weight (kl or tv) so the labels stage stores them")
    names = ["input_ids", key, *(soft or ()), *([weights] if weights else [])]
    cols = ds.select_columns(["block_index", *names]).to_dict()
    return {int(b): {("position_weights" if c == weights else c): cols[c][i] for c in names}
            for i, b in enumerate(cols["block_index"])}


def run_labels(run, recipe, progress: bool = True) -> dict:
    """anchors/anchors.yaml + reinforce/adapter + corpus/blocks.jsonl -> labels/dataset + labels/stats.json."""
    import shutil

    from .anchors import AnchorDictionary
    from .corpus import read_blocks
    from .models import default_device, load_model
    from .training import process_state
    from .translation import Translator

    if recipe.labels.position_weight not in POSITION_WEIGHTS:
        from .errors import RecipeError

        raise RecipeError(f"labels.position_weight must be one of {', '.join(POSITION_WEIGHTS)} "
                          f"(got {recipe.labels.position_weight!r})")
    state = process_state()
    # Float32 weights on CPU even where bf16 is native (hardware rule H2): alpha multiplies the rounding error of
    # v_r - v_b, and bf16 forward passes changed 8-21% of the labels in bench/cpu_speed.py.
    model, tokenizer = load_model(recipe.model.spec, dtype=label_weights_dtype(recipe.model.dtype,
                                                                          recipe.model.device or default_device()),
                                  device=recipe.model.device,
                                  trust_remote_code=recipe.model.trust_remote_code)
    if recipe.reinforce.full_finetune:
        from transformers import AutoModelForCausalLM

        reinforced = AutoModelForCausalLM.from_pretrained(run.reinforce_weights, dtype=model.dtype,
                                                          use_safetensors=True).to(model.device).eval()
        source = LogitSource(reinforced, base_model=model)
    else:
        from peft import PeftModel

        source = LogitSource(PeftModel.from_pretrained(model, run.reinforce_weights).eval())
    logger.info("labels: forward passes in %s (label formula in float32), %d threads",
                str(model.dtype).replace("torch.", ""), torch.get_num_threads())
    blocks = read_blocks(run.blocks)
    dictionary = AnchorDictionary.load(run.anchors)
    if len(dictionary) == 0:
        logger.warning("labels: the anchor dictionary is empty; labels come from the logit offset alone")
    translator = Translator(dictionary, tokenizer)
    rise_mask, rise_info = None, {}
    if recipe.labels.rise_tokens == "target":
        from .corpus import whole_corpus_texts

        words = target_words(whole_corpus_texts(recipe.corpus), recipe.labels.rise_keyness)
        target_mask = target_token_mask(words, dictionary.keys(), tokenizer,
                                        model.get_output_embeddings().weight.size(0),
                                        single_letters=recipe.labels.rise_letters)
        rise_mask = blend_rise_mask(target_mask, recipe.labels.rise_other).to(model.device)
        top = sorted(words, key=lambda w: -words[w])
        rise_info = {"rise_tokens": "target", "rise_other": recipe.labels.rise_other,
                     "rise_near_anchor": recipe.labels.rise_near_anchor, "rise_letters": recipe.labels.rise_letters,
                     "rise_words": len(words),
                     "rise_token_count": int(target_mask.sum()),
                     "rise_words_sample": top[:20] + top[len(top) // 2:len(top) // 2 + 10]}
        logger.info("labels: the ReLU term acts on %d tokens of %d target words and %d anchor keys (R1-R3), on "
                    "others at weight %g (R4)", int(target_mask.sum()), len(words), len(dictionary),
                    recipe.labels.rise_other)
    alphas = recipe.label_alphas()
    mine = list(range(len(blocks)))[state.process_index::state.num_processes]
    rows, stats = label_blocks(source, blocks, mine, translator, alphas, recipe.labels.batch_size, recipe.labels.seed,
                               tokenizer.pad_token_id, recipe.labels.suppress_used_translations,
                               progress=progress and state.is_main_process, soft_top_k=recipe.labels.soft_top_k,
                               weight_kind=recipe.labels.position_weight, rise_mask=rise_mask,
                               near_anchor=recipe.labels.rise_near_anchor)
    shard_dir = run.labels_dir / "shards"
    summary = {}
    if state.num_processes == 1:
        save_label_dataset(rows, alphas, run.labels_dataset)
        summary = stats_summary(stats, tokenizer)
        n_rows = len(rows)
    else:  # each process saves its rows as a dataset; the main process concatenates them in block order
        from .runio import atomic_write_json

        save_label_dataset(rows, alphas, shard_dir / f"rank-{state.process_index:03d}")
        atomic_write_json(shard_dir / f"stats-{state.process_index:03d}.json", raw_stats(stats))
        state.wait_for_everyone()
        if state.is_main_process:
            import datasets

            from .runio import atomic_dir

            parts = [datasets.load_from_disk(str(shard_dir / f"rank-{r:03d}")) for r in range(state.num_processes)]
            merged = datasets.concatenate_datasets(parts).sort("block_index")
            with atomic_dir(run.labels_dataset) as tmp:
                merged.save_to_disk(str(tmp))
            n_rows = len(merged)
            summary = merge_stats([json.loads((shard_dir / f"stats-{r:03d}.json").read_text())
                                   for r in range(state.num_processes)], tokenizer)
    if state.is_main_process:
        summary.update({"alphas": alphas, "blocks": n_rows, "anchor_keys": len(dictionary),
                        "processes": state.num_processes, **rise_info})
        from .runio import atomic_write_json

        atomic_write_json(run.labels_stats, summary)
        shutil.rmtree(shard_dir, ignore_errors=True)
        logger.info("labels: %d blocks, %.1f%% of supervised positions changed (alpha %g)", n_rows,
                    100 * summary["changed_fraction"], alphas[len(alphas) // 2])
    state.wait_for_everyone()
    return summary
