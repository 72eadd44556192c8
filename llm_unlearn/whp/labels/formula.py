"""The label formula and its pure helpers (rules R1-R5; no model, no files): the generic logits
``v_b - alpha * ReLU(v_r - v_b)``, which tokens' rise counts, and the suppression of used translations."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch

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


def reinforced_rise(v_base: torch.Tensor, v_reinforced: torch.Tensor,
                    token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ReLU(v_r - v_b): how much the reinforced model raised each logit; with ``token_mask`` (vocabulary, 0/1), only
    the rise of the masked-in tokens (R3 of :func:`target_token_mask`)."""
    rise = (v_reinforced - v_base).relu_()
    if token_mask is not None:
        rise.mul_(token_mask[: rise.size(-1)])
    return rise


WORD = re.compile(r"[A-Za-z][A-Za-z'’]*")


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
    from ..anchors import keyness_ratio

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
                      common_zipf: float = 4.5) -> torch.Tensor:
    """R2. The target's tokens: the first token of `` word`` (the word after a space, as inside a sentence), and a
    capitalised ``word`` at a line start when it is one token, for the target's words (R1) and the anchors' keys: the
    token the position before the word predicts, where the model's knowledge of what comes next lives. Later pieces of
    a word ("ing", "ness") and other pieces without a space ("ar", "hat") are shared with every other word, so they
    are left out.
    R3. ``labels.rise_tokens: target``: the ReLU term acts only on these tokens (float 0/1 mask over the vocabulary,
    ``vocab_size`` = the logits' width); every other token keeps the base model's logit.
    R5. ``labels.rise_near_anchor = W``: near an anchor every token's rise counts again (:func:`near_anchor_positions`).
    A piece without letters ("-", "1"), the words " a" and " I", or a common English word that is not itself a
    target word (wordfreq Zipf >= ``common_zipf``: " the", " as") is never a target token, whatever word it came
    from; one capital or small letter is (" L" of " L|est|rade": many names start with one; such a piece also
    starts other names the tokenizer splits the same way, " L|incoln": measured, that reach is within seed noise)."""
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


def soft_keys(alpha: float) -> tuple[str, str]:
    """Dataset columns of the top-k generic logits (token ids, logits) for one alpha (labels.soft_top_k > 0)."""
    return f"soft_ids_alpha_{float(alpha):g}", f"soft_logits_alpha_{float(alpha):g}"
