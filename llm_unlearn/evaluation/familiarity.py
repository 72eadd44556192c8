"""Familiarity: how much a model shows knowledge of the concept.

* **Completion familiarity**: generate a completion of each suite prompt (greedy by default, or N samples),
  grade each 0-3 offline (:mod:`.grading`), and report ``familiarity = mean grade / 3`` (0 = never anything
  target-specific, 1 = always the explicit reference), the fraction of prompts graded >= 2 and == 3, and the
  grade histogram, overall and by subtlety / category. With N samples a prompt's grade is the mean over its
  samples, and ``familiarity_max`` uses the best sample (what an attacker sampling N times would get).
* **Probability familiarity**: P(target | prompt) of the full, possibly multi-token target, plus the rank of its
  first token; ``mean_prob`` is the paper-style probability familiarity.
* **Reference margins** (with ``margins=True``, as the evaluation asks): per completion prompt, how firmly the model's
  next token starts the reference (:func:`reference_margins`). A baseline's grade-3 answer with a margin under
  :data:`FIRM_MARGIN` is a near tie that any fine-tune, on any text, can tip; the report splits lost items by it.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence

from .grading import Grader
from .scoring import score_items
from .suites import Suite

logger = logging.getLogger(__name__)

# nats. On the demo's control suite the baseline's grade-3 answers under this margin (17 of 59) flip in every
# fine-tune measured, even unlearning an unrelated book; those above it (42) are lost 0-3 at a time.
FIRM_MARGIN = 1.0


def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 24, batch_size: int = 16,
             samples: int = 1, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             progress: bool = True, desc: str = "generating") -> list[list[str]]:
    """Completions (text after the prompt) for each prompt: greedy when ``samples == 1``, else ``samples``
    seeded samples. Plain text in, no chat template. Batched with left padding (prompts sorted by length so a
    batch pads little), returned in the original order."""
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    if samples < 1:
        raise ValueError("samples must be >= 1")
    do_sample = samples > 1
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, num_return_sequences=samples,
                  pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
                  bos_token_id=getattr(model.generation_config, "bos_token_id", None))
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    gen_cfg = GenerationConfig(**kwargs)
    order = sorted(range(len(prompts)), key=lambda i: len(tokenizer.encode(prompts[i])))
    results: list[list[str]] = [[] for _ in prompts]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the last position of every row
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    dev = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
                idx = order[start:start + batch_size]
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(dev)
                out = model.generate(**enc, generation_config=gen_cfg)
                new = out[:, enc["input_ids"].shape[1]:]
                texts = tokenizer.batch_decode(new, skip_special_tokens=True)
                for k, i in enumerate(idx):
                    results[i] = texts[k * samples:(k + 1) * samples]
    finally:
        tokenizer.padding_side = old_side
        torch.random.set_rng_state(generator_state)
    return results


def grade_summary(grades: list[float]) -> dict:
    """Familiarity (mean grade / 3), mean grade and the shares of grade >= 2 and == 3 of a list of prompt grades."""
    n = len(grades)
    if not n:
        return {"n": 0}
    return {"n": n, "familiarity": sum(grades) / (3 * n), "mean_grade": sum(grades) / n,
            "frac_ge2": sum(g >= 2 for g in grades) / n, "frac_3": sum(g >= 3 for g in grades) / n}


def reference_margins(model, tokenizer, prompts: Sequence[str], references: Sequence[Sequence[str]],
                      batch_size: int = 16) -> list[float | None]:
    """Per prompt, in nats: log p(first token of its likeliest reference) - log p(likeliest token that starts no
    reference), at the position after the prompt (None for a prompt without references). Positive: the greedy next
    token starts a reference; near 0: a near tie. Prompts are encoded as :func:`generate` encodes them; batches are
    right-padded, so every prompt's last position sees exactly its own tokens."""
    import torch

    dev = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    out: list[float | None] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                enc = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True).to(dev)
                logits = model(**enc).logits
                last = enc["attention_mask"].sum(1) - 1
                logp = torch.log_softmax(logits[torch.arange(logits.size(0), device=dev), last].float(), -1)
                for row, refs in zip(logp, references[start:start + batch_size], strict=True):
                    firsts = sorted({ids[0] for r in refs if r.strip()
                                     for ids in [tokenizer(" " + r.strip(), add_special_tokens=False)["input_ids"]]
                                     if ids})
                    if not firsts:
                        out.append(None)
                        continue
                    others = row.clone()
                    others[firsts] = float("-inf")
                    out.append(round(float(row[firsts].max() - others.max()), 4))
    finally:
        tokenizer.padding_side = old_side
    return out


def completion_familiarity(model, tokenizer, suite: Suite, grader: Grader | None = None, max_new_tokens: int = 24,
                           batch_size: int = 16, samples: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                           seed: int = 0, judge=None, progress: bool = True, margins: bool = False) -> dict:
    """Generate and grade completions of the suite's completion prompts. Returns summary + per-prompt items (with
    ``margins``, each item's :func:`reference_margins` value as ``margin``)."""
    if not suite.completion:
        return {"n": 0, "items": []}
    grader = grader or Grader(suite.anchors, suite.genre_terms)
    prompts = [p.prompt for p in suite.completion]
    completions = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           samples=samples, temperature=temperature, top_p=top_p, seed=seed, progress=progress,
                           desc=f"{suite.name}: completions")
    flat_p = [p.prompt for p, cs in zip(suite.completion, completions, strict=True) for _ in cs]
    flat_c = [c for cs in completions for c in cs]
    flat_r = [p.references for p, cs in zip(suite.completion, completions, strict=True) for _ in cs]
    flat_g = grader.grade_many(flat_p, flat_c, flat_r)
    judged = judge.grade_many(flat_p, flat_c, flat_r, concept=suite.concept or suite.name) if judge else None
    items, k = [], 0
    for p, cs in zip(suite.completion, completions, strict=True):
        gs = flat_g[k:k + len(cs)]
        item = {"id": p.id, "prompt": p.prompt, "subtlety": p.subtlety, "category": p.category,
                "references": p.references, "completions": cs, "grades": [g.grade for g in gs],
                "matched": [g.matched for g in gs]}
        item["grade"] = sum(item["grades"]) / len(gs)
        item["max_grade"] = max(item["grades"])
        if judged is not None:
            js = [j for j in judged[k:k + len(cs)] if j is not None]
            item["judge_grades"] = judged[k:k + len(cs)]
            item["judge_grade"] = sum(js) / len(js) if js else None
        items.append(item)
        k += len(cs)
    if margins:
        for item, margin in zip(items, reference_margins(model, tokenizer, prompts,
                                                         [p.references for p in suite.completion], batch_size),
                                strict=True):
            item["margin"] = margin
    grades = [it["grade"] for it in items]
    summary = grade_summary(grades)
    summary["samples"] = samples
    summary["decoding"] = "greedy" if samples == 1 else f"sampling (T={temperature}, top_p={top_p}, seed={seed})"
    summary["max_new_tokens"] = max_new_tokens
    if samples > 1:
        summary["familiarity_max"] = sum(it["max_grade"] for it in items) / (3 * len(items))
    summary["histogram"] = {str(g): sum(1 for it in items for x in it["grades"] if x == g) for g in range(4)}
    for key in ("subtlety", "category"):
        groups: dict[str, list[float]] = defaultdict(list)
        for it in items:
            groups[it[key]].append(it["grade"])
        summary[f"by_{key}"] = {name: grade_summary(v) for name, v in sorted(groups.items())}
    if judged is not None:
        jg = [it["judge_grade"] for it in items if it["judge_grade"] is not None]
        summary["judge"] = {"name": getattr(judge, "name", "judge"), **grade_summary(jg),
                            "unparsed": sum(1 for x in judged if x is None)}
    summary["grader"] = grader.norm.backend
    summary["items"] = items
    return summary


def probability_familiarity(model, tokenizer, suite: Suite, batch_size: int = 16, progress: bool = True) -> dict:
    """P(target | prompt) for each probability prompt (the whole target: product over its tokens)."""
    if not suite.probability:
        return {"n": 0, "items": []}
    scored = score_items(model, tokenizer, [[(p.prompt, p.target)] for p in suite.probability],
                         batch_size=batch_size, desc=f"{suite.name}: probabilities", progress=progress)
    items = []
    for p, (ch,) in zip(suite.probability, scored, strict=True):
        items.append({"id": p.id, "prompt": p.prompt, "target": p.target, "category": p.category,
                      "prob": math.exp(ch.logprob), "logprob": ch.logprob, "n_tokens": ch.n_tokens,
                      "token_prob": math.exp(ch.logprob / ch.n_tokens), "first_token_prob": math.exp(ch.token_logprobs[0]),
                      "first_rank": ch.first_rank, "greedy": ch.is_greedy})
    n = len(items)
    ranks = sorted(it["first_rank"] for it in items)
    summary = {"n": n, "mean_prob": sum(it["prob"] for it in items) / n,
               "mean_token_prob": sum(it["token_prob"] for it in items) / n,
               "mean_first_token_prob": sum(it["first_token_prob"] for it in items) / n,
               "median_first_rank": ranks[n // 2] if n % 2 else (ranks[n // 2 - 1] + ranks[n // 2]) / 2,
               "frac_first_top1": sum(r == 1 for r in ranks) / n, "frac_first_top10": sum(r <= 10 for r in ranks) / n,
               "frac_greedy": sum(it["greedy"] for it in items) / n}
    groups: dict[str, list[float]] = defaultdict(list)
    for it in items:
        groups[it["category"]].append(it["prob"])
    summary["by_category"] = {k: {"n": len(v), "mean_prob": sum(v) / len(v)} for k, v in sorted(groups.items())}
    summary["items"] = items
    return summary


def lost_items(base: dict, other: dict, firm_margin: float = FIRM_MARGIN) -> dict[str, dict]:
    """The baseline's grade-3 completion items (``base``, ``other``: completion results of one suite) that ``other``
    no longer answers at grade 3, split by the baseline's margin (:func:`reference_margins`) into ``firm`` (margin >=
    ``firm_margin``), ``near_tie`` and ``unknown`` (no margin recorded): kind -> {"known": how many grade-3 items,
    "lost": their ids that ``other`` lost}. Only items both results hold count."""
    grades = {it["id"]: it["grade"] for it in other.get("items") or []}
    out: dict[str, dict] = {}
    for it in base.get("items") or []:
        if it["grade"] < 3 or it["id"] not in grades:
            continue
        margin = it.get("margin")
        kind = "unknown" if margin is None else "firm" if margin >= firm_margin else "near_tie"
        group = out.setdefault(kind, {"known": 0, "lost": []})
        group["known"] += 1
        if grades[it["id"]] < 3:
            group["lost"].append(it["id"])
    return out


def lost_totals(groups: dict[str, dict]) -> tuple[int, int]:
    """(the baseline's grade-3 items, how many of them were lost) over every kind of a :func:`lost_items` result."""
    return sum(g["known"] for g in groups.values()), sum(len(g["lost"]) for g in groups.values())
