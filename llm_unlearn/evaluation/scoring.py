"""Log-likelihood scoring of (context, continuation) pairs, in lm-evaluation-harness's conventions.

Both the multiple-choice benchmarks and probability familiarity reduce to one question: what is
log P(continuation | context) under the model, and is the continuation the greedy one?  We answer it the
way lm-eval's ``HFLM`` does, so that our accuracies are comparable with published lm-eval numbers:

* trailing spaces of the context move to the continuation (``_encode_pair``);
* the context is tokenized on its own, the continuation is the tail of the tokenization of
  ``context + continuation`` (so a merge across the boundary is attributed like lm-eval does);
* an empty context is replaced by one prefix token (BOS, else EOS);
* the tokenizer's default special-token behaviour is used (no BOS for SmolLM2, BOS for Gemma).

It differs in *how* it computes, not what: all choices of an item share one context, so the contexts of a
batch of items are run once (left-padded), their KV caches are repeated once per choice, and only the
continuations are run on top ("shared-prefix scoring"). Items whose choices have different contexts
(WinoGrande) are scored as full rows, left-padded and batched across items.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import EvalError

logger = logging.getLogger(__name__)


@dataclass
class Choice:
    """Score of one continuation."""

    logprob: float  # sum of log-probabilities of the continuation tokens
    is_greedy: bool  # every continuation token is the argmax
    n_tokens: int
    first_rank: int  # 1 + number of vocabulary items scored above the first continuation token
    token_logprobs: list[float]


def prefix_token_id(tokenizer) -> int:
    """lm-eval's prefix token for empty contexts: BOS if the tokenizer has one, else EOS."""
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise EvalError("the tokenizer has neither a BOS nor an EOS token; cannot score an empty context")
    return int(tid)


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) exactly as lm-eval's HFLM builds them."""
    if context == "":
        cont = tokenizer.encode(continuation, add_special_tokens=False)
        pre = prefix_token_id(tokenizer)
        if cont and cont[0] == pre:
            return cont[:1], cont[1:]
        return [pre], cont
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    cont = whole[len(ctx):]
    if not cont:
        # The whole continuation merged into the context's last token: fall back to separate encoding
        # rather than scoring nothing (lm-eval would assert here).
        cont = tokenizer.encode(continuation, add_special_tokens=False)
    if not cont:
        raise EvalError(f"continuation {continuation!r} tokenizes to nothing")
    return ctx, cont


def _max_length(model, tokenizer) -> int:
    n = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    tml = getattr(tokenizer, "model_max_length", None)
    if tml and tml < 10**8:
        n = min(n, int(tml)) if n else int(tml)
    return n or 2048


def _device(model):
    return next(model.parameters()).device


def forward(model, logits_to_keep: int | None = None, **kwargs):
    """``model(**kwargs)`` keeping only the last ``logits_to_keep`` positions' logits (saves a
    (batch, length, vocab) tensor); models whose forward lacks the argument get sliced afterwards."""
    if logits_to_keep is None:
        return model(**kwargs)
    try:
        return model(logits_to_keep=logits_to_keep, **kwargs)
    except TypeError as exc:
        if "logits_to_keep" not in str(exc):
            raise
        out = model(**kwargs)
        out.logits = out.logits[:, -logits_to_keep:]
        return out


def _choice_from_logits(logits, cont: list[int]) -> Choice:
    """logits: (len(cont), vocab), row i predicting cont[i]."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(cont, device=logp.device)
    tok_lp = logp.gather(-1, target[:, None])[:, 0]
    greedy = bool((logp.argmax(-1) == target).all())
    first_rank = int((logp[0] > tok_lp[0]).sum()) + 1
    return Choice(float(tok_lp.sum()), greedy, len(cont), first_rank, [float(x) for x in tok_lp])


def _cache_kwarg(model) -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache``; support both."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _select_cache(cache, index):
    """Reorder / repeat the batch rows of a KV cache (row i of the result = row index[i])."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(index)
        return cache
    return tuple(tuple(t[index] for t in layer) for layer in cache)  # legacy tuple cache


def _score_shared(model, batch: list[tuple[list[int], list[list[int]]]], pad_id: int, max_len: int) -> list[list[Choice]]:
    """Shared-prefix scoring of several items at once: each item is (context ids, [continuation ids ...]).

    Pass 1 runs the items' contexts once, as one left-padded batch, keeping the KV cache and the last position's
    logits (which predict every continuation's first token). Pass 2 repeats each item's cache rows once per
    continuation and runs all continuations (without their last token) as one right-padded batch on top, with
    explicit positions. Contexts are never recomputed per choice.
    """
    import torch

    from ..batching import pad_ids, positions

    dev = _device(model)
    ctxs = []
    for ctx, conts in batch:
        longest = max(len(c) for c in conts)
        ctxs.append(ctx[-(max_len + 1 - longest):] if len(ctx) + longest > max_len + 1 else ctx)  # lm-eval: cut left
    ids, mask = pad_ids(ctxs, pad_id, left=True)
    pos = positions(mask)
    need_rest = any(len(c) > 1 for _, conts in batch for c in conts)
    out = forward(model, 1, input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                  use_cache=need_rest)
    first = out.logits[:, -1]  # (items, vocab): predicts each continuation's first token
    rest: dict[tuple[int, int], object] = {}
    if need_rest:
        # one row per continuation longer than one token; single-token ones are done with pass 1
        rows = [(i, j) for i, (_, conts) in enumerate(batch) for j, c in enumerate(conts) if len(c) > 1]
        sel = torch.tensor([i for i, _ in rows], device=dev)
        # right padding: pads follow the real tokens, never precede them
        cont, _ = pad_ids([batch[i][1][j][:-1] for i, j in rows], pad_id)
        w2 = cont.size(1)
        ctx_len = mask.sum(-1).to(dev)[sel]
        cache = _select_cache(_out_cache(out), sel)
        attn = torch.cat([mask.to(dev)[sel], torch.ones((len(rows), w2), dtype=torch.long, device=dev)], dim=1)
        positions = ctx_len[:, None] + torch.arange(w2, device=dev)[None, :]
        out2 = model(input_ids=cont.to(dev), attention_mask=attn, position_ids=positions, use_cache=False,
                     **{_cache_kwarg(model): cache})
        for r, (i, j) in enumerate(rows):
            rest[(i, j)] = out2.logits[r, :len(batch[i][1][j]) - 1]
    results = []
    for i, (_, conts) in enumerate(batch):
        item = []
        for j, c in enumerate(conts):
            logits = first[i][None] if len(c) == 1 else torch.cat([first[i][None], rest[(i, j)]], dim=0)
            item.append(_choice_from_logits(logits, c))
        results.append(item)
    return results


def _score_rows(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, max_len: int) -> list[Choice]:
    """Score full (context + continuation) rows as one left-padded batch."""

    from ..batching import pad_ids, positions

    dev = _device(model)
    seqs, conts = [], []
    for ctx, cont in pairs:
        seq = (ctx + cont)[-(max_len + 1):][:-1]  # lm-eval: truncate left, drop the last token
        seqs.append(seq)
        conts.append(cont)
    ids, mask = pad_ids(seqs, pad_id, left=True)
    # explicit positions so that left padding does not shift them (matters for absolute-position models)
    pos = positions(mask)
    keep = max(len(c) for c in conts)
    out = forward(model, keep, input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                  use_cache=False)
    results = []
    for i, c in enumerate(conts):
        results.append(_choice_from_logits(out.logits[i, keep - len(c):], c))
    return results


def _batches(indices: list[int], sizes: dict[int, int], batch_size: int):
    """Consecutive groups of items holding about ``batch_size`` rows (an item with more rows goes alone)."""
    batch: list[int] = []
    for idx in indices:
        if batch and sum(sizes[i] for i in batch) + sizes[idx] > batch_size:
            yield batch
            batch = []
        batch.append(idx)
    if batch:
        yield batch


def score_items(model, tokenizer, items: Sequence[Sequence[tuple[str, str]]], batch_size: int = 16,
                desc: str = "scoring", progress: bool = True) -> list[list[Choice]]:
    """Score every (context, continuation) pair of every item; returns one list of :class:`Choice` per item.

    Items whose pairs share one context (multiple choice with a common question, probability prompts) use
    shared-prefix scoring, several items per forward pass (:func:`_score_shared`); items with one context per
    choice (WinoGrande) are scored as full rows. Either way a batch holds about ``batch_size`` continuations,
    and items are sorted by length first so that a batch pads little.
    """
    import torch
    from tqdm.auto import tqdm

    max_len = _max_length(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_token_id(tokenizer)
    encoded = [[encode_pair(tokenizer, ctx, cont) for ctx, cont in item] for item in items]
    results: list[list[Choice] | None] = [None] * len(items)
    shared = [i for i, pairs in enumerate(encoded) if len({tuple(c) for c, _ in pairs}) == 1]
    shared_set = set(shared)
    rows = [i for i in range(len(encoded)) if i not in shared_set]
    sizes = {i: len(pairs) for i, pairs in enumerate(encoded)}
    length = {i: max(len(c) + len(t) for c, t in pairs) for i, pairs in enumerate(encoded)}
    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=False)
    with torch.inference_mode():
        for batch in _batches(sorted(shared, key=lambda i: -length[i]), sizes, batch_size):
            scored = _score_shared(model, [(encoded[i][0][0], [t for _, t in encoded[i]]) for i in batch], pad_id,
                                   max_len)
            for i, res in zip(batch, scored, strict=True):
                results[i] = res
            bar.update(len(batch))
        for batch in _batches(sorted(rows, key=lambda i: -length[i]), sizes, batch_size):
            flat = [p for i in batch for p in encoded[i]]
            scored = _score_rows(model, flat, pad_id, max_len)
            k = 0
            for i in batch:
                results[i] = scored[k: k + len(encoded[i])]
                k += len(encoded[i])
            bar.update(len(batch))
    bar.close()
    return results  # type: ignore[return-value]
