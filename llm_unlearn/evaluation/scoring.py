"""Log-likelihood scoring of (context, continuation) pairs, in lm-evaluation-harness's conventions.

Both the multiple-choice benchmarks and probability familiarity reduce to one question: what is
log P(continuation | context) under the model, and is the continuation the greedy one?  We answer it the
way lm-eval's ``HFLM`` does, so that our accuracies are comparable with published lm-eval numbers:

* trailing spaces of the context move to the continuation (``_encode_pair``);
* the context is tokenized on its own, the continuation is the tail of the tokenization of
  ``context + continuation`` (so a merge across the boundary is attributed like lm-eval does);
* an empty context is replaced by one prefix token (BOS, else EOS);
* the tokenizer's default special-token behaviour is used (no BOS for SmolLM2, BOS for Gemma).

It differs in *how* it computes, not what: all choices of an item share one context, so the context is run
once, its KV cache is repeated for the choices, and only the continuations are run as a batch
("shared-prefix scoring"). Items whose choices have different contexts (WinoGrande) are scored as full rows,
left-padded and batched across items.
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


def _repeat_cache(cache, n: int):
    if n == 1:
        return cache
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(n)
        return cache
    # legacy tuple cache
    return tuple(tuple(t.repeat_interleave(n, dim=0) for t in layer) for layer in cache)


def _score_shared(model, ctx: list[int], conts: list[list[int]], pad_id: int, max_len: int) -> list[Choice]:
    """Run the context once, then all continuations as one batch on top of its KV cache."""
    import torch

    dev = _device(model)
    longest = max(len(c) for c in conts)
    if len(ctx) + longest > max_len + 1:  # left-truncate like lm-eval
        ctx = ctx[-(max_len + 1 - longest):]
    out = forward(model, 1, input_ids=torch.tensor([ctx], device=dev), use_cache=True)
    first_logits = out.logits[0, -1]  # predicts the first continuation token
    if longest == 1:  # single-token continuations: the context pass is all we need
        return [_choice_from_logits(first_logits[None], c) for c in conts]
    # Continuations without their last token (nothing to predict after it); right-padded: with a causal mask
    # the pads only ever come after the real tokens, so they cannot influence them.
    width = longest - 1
    rows = [c[:-1] + [pad_id] * (width - (len(c) - 1)) for c in conts]
    cache = _repeat_cache(_out_cache(out), len(conts))
    attn = torch.ones(len(conts), len(ctx) + width, dtype=torch.long, device=dev)
    out2 = model(input_ids=torch.tensor(rows, device=dev), attention_mask=attn, use_cache=False,
                 **{_cache_kwarg(model): cache})
    results = []
    for i, c in enumerate(conts):
        logits = torch.cat([first_logits[None], out2.logits[i, : len(c) - 1]], dim=0)
        results.append(_choice_from_logits(logits, c))
    return results


def _score_rows(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, max_len: int) -> list[Choice]:
    """Score full (context + continuation) rows as one left-padded batch."""
    import torch

    dev = _device(model)
    seqs, conts = [], []
    for ctx, cont in pairs:
        seq = (ctx + cont)[-(max_len + 1):][:-1]  # lm-eval: truncate left, drop the last token
        seqs.append(seq)
        conts.append(cont)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    # explicit positions so that left padding does not shift them (matters for absolute-position models)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = max(len(c) for c in conts)
    out = forward(model, keep, input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                  use_cache=False)
    results = []
    for i, c in enumerate(conts):
        results.append(_choice_from_logits(out.logits[i, keep - len(c):], c))
    return results


def score_items(model, tokenizer, items: Sequence[Sequence[tuple[str, str]]], batch_size: int = 16,
                desc: str = "scoring", progress: bool = True) -> list[list[Choice]]:
    """Score every (context, continuation) pair of every item; returns one list of :class:`Choice` per item.

    Items with several pairs sharing one context use shared-prefix scoring (one item per forward pass, its
    choices batched on the context's KV cache); the others (single pairs, per-choice contexts) are batched as
    full rows across items (up to ``batch_size`` rows).
    """
    import torch
    from tqdm.auto import tqdm

    max_len = _max_length(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_token_id(tokenizer)
    encoded = [[encode_pair(tokenizer, ctx, cont) for ctx, cont in item] for item in items]
    results: list[list[Choice] | None] = [None] * len(items)
    row_items = []
    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=False)
    with torch.inference_mode():
        for idx, pairs in enumerate(encoded):
            # shared prefix pays off from two choices up; single pairs (probability prompts) batch better as rows
            if len(pairs) > 1 and len({tuple(c) for c, _ in pairs}) == 1:
                results[idx] = _score_shared(model, pairs[0][0], [p[1] for p in pairs], pad_id, max_len)
                bar.update(1)
            else:
                row_items.append(idx)
        # Multi-context items: pack whole items into batches of about batch_size rows, longest first so the
        # padding inside a batch stays small.
        row_items.sort(key=lambda i: -max(len(c) + len(t) for c, t in encoded[i]))
        batch: list[int] = []
        for pos, idx in enumerate(row_items):
            batch.append(idx)
            n_rows = sum(len(encoded[i]) for i in batch)
            if n_rows >= batch_size or pos == len(row_items) - 1:
                flat = [p for i in batch for p in encoded[i]]
                scored = _score_rows(model, flat, pad_id, max_len)
                k = 0
                for i in batch:
                    results[i] = scored[k: k + len(encoded[i])]
                    k += len(encoded[i])
                bar.update(len(batch))
                batch = []
    bar.close()
    return results  # type: ignore[return-value]
