"""Substitutes proposed by the base model: what a model that never heard of the concept would say in its place.

WHP's dictionary maps each anchored term to a generic thing *of the same kind that fits the text* (the paper asked
GPT-4). Offline, the base model can answer the same question for any concept: at an occurrence of a term, its
next-token distribution given the left context says which words fit there. Rules (cited by the tests):

P1. Contexts: up to ``occurrences`` occurrences per term, spread evenly over the corpus (first, last and evenly in
    between), each preceded by a space (so the term's first token is a word start) and cut to the last
    ``context_tokens`` tokens of its left context. Hard line wraps are joined first.
P2. Scores: the base model's next-token probabilities at the term's position, averaged over the term's contexts.
    The ``top_tokens`` best first tokens that start a word (a leading space then a letter) are candidates.
P3. Whole words: a candidate whose first token is not a common English word by itself (wordfreq Zipf < 3), and
    every candidate for a multi-word term, is continued greedily from the context that gave it the highest
    probability until it holds as many whole words as the term (a word ends at a space or punctuation).
P4. Shape: same number of words as the term; a capitalised term gets candidates whose first and last words are
    capitalised, a lower-case term lower-case candidates; letters, apostrophes and hyphens only; no stop word or
    honorific as first or last word.
P5. Never the target: a candidate is refused when it equals the term, starts or ends like it ("Rabbits" for
    "Rabbit"), or holds a word of any anchored term or other target-specific candidate (``forbidden``).
P6. Person names (``person_names`` given): a person's substitutes must consist of known names (Faker's lists);
    when none qualifies, the caller falls back to Faker.
P7. Deterministic: greedy decoding, ties broken by token id, no sampling.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

_SINGLE_NEWLINE = re.compile(r"(?<!\n)\n(?!\n)")
_WORD = re.compile(r"^[A-Za-z][A-Za-z'’\-]*$")
_COMPLETE_WORD_ZIPF = 3.0  # a first token that is this common a word alone is taken as a whole word (P3)


@dataclass
class Proposal:
    text: str
    score: float  # mean probability of the first token at the term's position


def _shape_ok(words: list[str], key_words: list[str], stop: set[str], titles: set[str]) -> bool:
    """Rule P4."""
    if len(words) != len(key_words) or not all(_WORD.match(w) for w in words):
        return False
    for w in (words[0], words[-1]):
        if w.lower() in stop or w.lower().rstrip(".") in titles:
            return False
    if key_words[0][:1].isupper():
        return words[0][:1].isupper() and words[-1][:1].isupper() and not words[0].isupper()
    return all(w.islower() for w in words)


def _not_target(cand: str, key: str, forbidden: set[str]) -> bool:
    """Rule P5."""
    c, k = cand.lower().replace("’", "'"), key.lower().replace("’", "'")
    if c == k or c.startswith(k) or k.startswith(c):
        return False
    stem = k.rstrip("s")
    if len(stem) >= 3 and (c.startswith(stem) or c.rstrip("s") == stem):
        return False
    return not any(w.strip("'’") in forbidden for w in c.split(" "))


def find_contexts(texts: Sequence[str], keys: Iterable[str], occurrences: int) -> dict[str, list[str]]:
    """Left contexts (text before the term, trailing whitespace removed) of up to ``occurrences`` occurrences
    of each key, spread evenly over the corpus (rule P1)."""
    from ..translation import AnchorMatcher

    keys = list(keys)
    matcher = AnchorMatcher({k: ["-"] for k in keys})
    found: dict[str, list[tuple[int, int]]] = {k: [] for k in keys}
    joined = [_SINGLE_NEWLINE.sub(" ", t) for t in texts]
    for d, text in enumerate(joined):
        for s, _e, key, case in matcher.find(text):
            if case == "upper" or s == 0 or not text[s - 1].isspace():
                continue
            found[key].append((d, s))
    out: dict[str, list[str]] = {}
    for key, where in found.items():
        if not where:
            continue
        if len(where) > occurrences:
            n = len(where)
            picks = sorted({round(i * (n - 1) / max(occurrences - 1, 1)) for i in range(occurrences)})
            where = [where[i] for i in picks]
        out[key] = [joined[d][max(0, s - 600):s].rstrip() for d, s in where]
    return out


def _encode_left(tokenizer, contexts: list[str], context_tokens: int) -> list[list[int]]:
    enc = tokenizer(contexts, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
    return [bos + list(ids[-context_tokens:]) for ids in enc]


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s):] = torch.as_tensor(s)
        att[i, n - len(s):] = 1
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), att.to(device), pos.to(device)


@torch.inference_mode()
def next_token_probs(model, tokenizer, seqs: list[list[int]], batch_size: int, progress: bool = False,
                     desc: str = "anchors: substitutes") -> torch.Tensor:
    """Next-token probabilities after each token sequence (float32, on the CPU): one row per sequence."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # similar lengths together: little padding
    out: list[torch.Tensor | None] = [None] * len(seqs)
    for b in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress):
        chunk = order[b:b + batch_size]
        ids, att, pos = _left_pad([seqs[i] for i in chunk], pad, device)
        logits = model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False).logits[:, -1]
        probs = torch.softmax(logits.float(), -1).cpu()
        for j, i in enumerate(chunk):
            out[i] = probs[j]
    return torch.stack(out) if out else torch.empty(0)


@torch.inference_mode()
def _greedy(model, tokenizer, seqs: list[list[int]], steps: int, batch_size: int) -> list[list[int]]:
    """Greedy continuation of each sequence by ``steps`` tokens (rule P7)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for b in range(0, len(seqs), batch_size):
        cur = [list(s) for s in seqs[b:b + batch_size]]
        new: list[list[int]] = [[] for _ in cur]
        for _ in range(steps):
            ids, att, pos = _left_pad(cur, pad, device)
            logits = model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False).logits[:, -1]
            nxt = logits.float().argmax(-1).tolist()
            for j, t in enumerate(nxt):
                cur[j].append(t)
                new[j].append(t)
        out += new
    return out


def _whole_words(text: str, n_words: int) -> str | None:
    """The first ``n_words`` whole words of ``text`` (which starts with a word), or None if the text ends
    inside the n-th word (rule P3)."""
    word = r"[A-Za-z'’\-]+"
    m = re.match(rf"\s*({word}(?: +{word}){{{n_words - 1}}})(?=$|[^A-Za-z'’\-])", text)
    if m is None:
        return None
    rest = text[m.end():]
    if not rest:
        return None  # cannot tell whether the word is complete
    return m.group(1)


def propose_substitutes(model, tokenizer, texts: Sequence[str], keys: Sequence[str], forbidden: Iterable[str],
                        stop_words: Iterable[str] = (), titles: Iterable[str] = (),
                        person_keys: Iterable[str] = (), person_names: Mapping[str, object] | set | None = None,
                        occurrences: int = 12, context_tokens: int = 48, top_tokens: int = 40,
                        max_per_key: int = 8, batch_size: int = 16, progress: bool = False) -> dict[str, list[Proposal]]:
    """Same-kind, in-context substitutes for ``keys`` proposed by ``model`` (rules P1-P7), best first.

    ``forbidden``: lower-case words that no substitute may contain (words of anchors and of other
    target-specific candidates). ``person_keys`` with ``person_names`` (lower-case known names): rule P6."""
    from wordfreq import zipf_frequency

    forbidden = {w.lower().replace("’", "'") for w in forbidden}
    stop, titles = {w.lower() for w in stop_words}, {w.lower() for w in titles}
    person_keys = set(person_keys)
    contexts = find_contexts(texts, keys, occurrences)
    flat = [(k, c) for k in keys for c in contexts.get(k, [])]
    if not flat:
        return {}
    seqs = _encode_left(tokenizer, [c for _k, c in flat], context_tokens)
    probs = next_token_probs(model, tokenizer, seqs, batch_size, progress=progress)
    rows_of: dict[str, list[int]] = {}
    for i, (k, _c) in enumerate(flat):
        rows_of.setdefault(k, []).append(i)

    vocab_text: dict[int, str] = {}

    def token_text(tid: int) -> str:
        if tid not in vocab_text:
            vocab_text[tid] = tokenizer.decode([tid])
        return vocab_text[tid]

    pending: dict[str, list[tuple[str, float]]] = {}  # key -> [(candidate or "", score)] in rank order
    jobs: list[tuple[str, int, list[int], int]] = []  # (key, slot, sequence, n_words) to continue greedily
    for key in keys:
        rows = rows_of.get(key)
        if not rows:
            continue
        key_words = key.split(" ")
        mean = probs[rows].mean(0)
        top = torch.topk(mean, min(top_tokens * 4, mean.numel()))
        ranked = sorted(zip(top.values.tolist(), top.indices.tolist(), strict=True), key=lambda x: (-x[0], x[1]))
        slots: list[tuple[str, float]] = []
        for p, tid in ranked:
            if len(slots) >= top_tokens:
                break
            piece = token_text(tid)
            if not piece.startswith(" ") or not piece[1:2].isalpha():
                continue
            first = piece.strip()
            if key_words[0][:1].isupper() != first[:1].isupper():
                continue  # the first letter already breaks the shape (P4)
            complete = (len(key_words) == 1 and _WORD.match(first)
                        and zipf_frequency(first, "en") >= _COMPLETE_WORD_ZIPF)
            if complete:
                slots.append((first, p))
            else:  # P3: continue from the context that liked this token best
                best_row = max(rows, key=lambda r: (float(probs[r, tid]), -r))
                jobs.append((key, len(slots), seqs[best_row][-16:] + [tid], len(key_words)))
                slots.append(("", p))
        pending[key] = slots
    if jobs:
        steps = max(3, 2 * max(n for *_x, n in jobs))
        conts = _greedy(model, tokenizer, [s for _k, _i, s, _n in jobs], steps, batch_size)
        for (key, slot, seq, n_words), cont in zip(jobs, conts, strict=True):
            text = tokenizer.decode([seq[-1], *cont])
            words = _whole_words(text, n_words)
            pending[key][slot] = (words or "", pending[key][slot][1])

    out: dict[str, list[Proposal]] = {}
    for key, slots in pending.items():
        key_words = key.split(" ")
        best: dict[str, float] = {}
        for text, p in slots:
            if not text or not _shape_ok(text.split(" "), key_words, stop, titles) or not _not_target(text, key,
                                                                                                        forbidden):
                continue
            if key in person_keys and person_names is not None and not all(w.lower() in person_names
                                                                           for w in text.split(" ")):
                continue  # P6
            best[text] = best.get(text, 0.0) + p  # first tokens that complete to the same words add up
        ranked = sorted(best.items(), key=lambda x: (-x[1], x[0]))[:max_per_key]
        if ranked:
            out[key] = [Proposal(t, s) for t, s in ranked]
    return out
