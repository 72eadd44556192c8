"""Perplexity with a sliding window (WikiText-2, and a held-out slice of the target).

The text is tokenized once; windows of ``window`` tokens advance by ``stride`` and each token is scored once,
in the window where it has the most left context (at least ``window - stride`` tokens except at the start),
as in the Hugging Face perplexity guide. Reported: token perplexity, and, because token perplexities of
different tokenizers are not comparable, word perplexity and bits per byte over the same text (lm-eval's
``wikitext`` metrics are also word perplexity, byte perplexity and bits per byte).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import EvalError
from .scoring import forward


def wikitext_detokenize(text: str) -> str:
    """Undo WikiText's tokenization (`` @-@ ``, spaces before punctuation), as lm-eval's wikitext task does."""
    s = text.replace("s '", "s'")
    s = re.sub(r"/' [0-9]/", r"/'[0-9]/", s)
    s = s.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    s = s.replace(" : ", ": ").replace(" ; ", "; ").replace(" . ", ". ").replace(" ! ", "! ").replace(" ? ", "? ")
    s = s.replace(" , ", ", ")
    s = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", s)
    s = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", s)
    s = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", s)
    s = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', s)
    s = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", s)
    s = s.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    s = s.replace(" " + chr(176) + " ", chr(176)).replace(" \n", "\n").replace("\n ", "\n")
    s = s.replace(" N ", " 1 ").replace(" 's", "'s")
    return s


def read_wikitext(path: str | Path, detokenize: bool = True) -> str:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "test.txt"
    if not p.is_file():
        raise EvalError(f"WikiText-2 file not found: {p} (pass the path of wikitext2/test.txt, or a folder with it)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EvalError(f"{p}: not UTF-8 text ({exc})") from exc
    if not text.strip():
        raise EvalError(f"{p}: empty file")
    return wikitext_detokenize(text) if detokenize else text


def _windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, n_scored) for a sequence of n tokens: windows advance by ``stride``; each scores the tokens
    not scored before (token 0 is never scored: nothing predicts it)."""
    out, prev_end = [], 1
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        if end > prev_end:
            out.append((begin, end, end - prev_end))
            prev_end = end
        if end == n:
            break
    return out


def perplexity(model, tokenizer, texts: str | Sequence[str], window: int | None = 1024, stride: int = 512,
               max_tokens: int | None = None, batch_size: int = 2, progress: bool = True,
               desc: str = "perplexity") -> dict:
    """Sliding-window perplexity over one text or several documents (each scored on its own; totals pooled).

    ``max_tokens`` caps the tokens read (the first ones, in document order) to bound the run time.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from ..batching import pad_ids, positions

    docs = [texts] if isinstance(texts, str) else list(texts)
    docs = [d for d in docs if d and d.strip()]
    if not docs:
        raise EvalError("perplexity: no text to score")
    ctx = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    window = max(2, min(window or ctx, ctx))
    stride = max(1, min(stride, window - 1))
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    rows: list[tuple[list[int], int]] = []  # (window token ids, number of trailing tokens scored)
    budget = max_tokens or float("inf")
    scored_ids: list[list[int]] = []
    for doc in docs:
        if budget <= 0:
            break
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        ids = ids[: int(min(budget, len(ids)))]
        budget -= len(ids)
        if adds_bos:  # a model trained with BOS first sees it first here too, and then every token is scored
            ids = [bos] + ids
        if len(ids) < 2:
            continue
        rows.extend((ids[b:e], k) for b, e, k in _windows(len(ids), window, stride))
        scored_ids.append(ids[1:])
    if not rows:
        raise EvalError("perplexity: the text is shorter than two tokens")
    dev = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll, count = 0.0, 0
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
            batch = [rows[i] for i in order[start:start + batch_size]]
            # left padding: every row's scored tokens end at the same place
            ids, mask = pad_ids([w for w, _ in batch], pad, left=True)
            pos = positions(mask)
            keep = max(k for _, k in batch) + 1  # logits only where they are needed (vocab x window is large)
            out = forward(model, keep, input_ids=ids.to(dev), attention_mask=mask.to(dev),
                          position_ids=pos.to(dev), use_cache=False)
            for r, (w, k) in enumerate(batch):
                logits = out.logits[r, keep - k - 1:keep - 1].float()
                tgt = torch.tensor(w[-k:], device=dev)
                nll += float(F.cross_entropy(logits, tgt, reduction="sum"))
                count += k
    text = "".join(tokenizer.decode(t) for t in scored_ids)
    n_words = max(1, len(re.findall(r"\S+", text)))
    n_bytes = max(1, len(text.encode("utf-8")))
    return {"tokens": count, "words": n_words, "bytes": n_bytes, "nll": nll,
            "token_perplexity": math.exp(nll / count), "word_perplexity": math.exp(nll / n_words),
            "bits_per_byte": nll / n_bytes / math.log(2), "window": window, "stride": stride,
            "documents": len(scored_ids)}
