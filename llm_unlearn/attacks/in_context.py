"""In-context priming: solved examples about the target, or a passage of target text, before each prompt.

* ATK-I1: k solved examples (k = 3 and 10 by default) come from the suite's own items of the same kind (completion
  prompt + its first reference; probability prompt + its target), one per line, never the scored item itself nor
  an item whose solved text contains the scored prompt (a copy or a longer variant of it); chosen by a generator seeded with (seed, item id), so reruns are identical.
* ATK-I2: the "passage" variant puts a paragraph of target text (the first ~150 words of the held-out target text,
  else the suite's ``passage.txt``) before each prompt, separated by a blank line.
Completions are graded against the original prompt (ATK-S1) and end at the first newline with examples (ATK-S2).
"""

from __future__ import annotations

import random

from ..evaluation.suites import Suite
from .base import AttackContext, Row
from .probes import load_passage

NAME = "in_context"
PASSAGE_WORDS = 150


def solved_examples(suite: Suite, kind: str, item_id: str, k: int, seed: int = 0) -> list[str]:
    """ATK-I1: k solved examples for one scored item (never the item itself, nor a copy of its prompt)."""
    if kind == "completion":
        items = suite.completion
        solved = {p.id: p.prompt.rstrip() + " " + p.references[0] for p in items}
    else:
        items = suite.probability
        solved = {p.id: p.prompt + p.target for p in items}
    scored = next(p for p in items if p.id == item_id)
    key = " ".join(scored.prompt.split()).casefold()
    # not the item itself, nor any item whose solved text contains the scored prompt (a longer variant of the same
    # sentence would hand over the answer: '"You have been in Afghanistan, I perceive," said ...')
    pool = [p.id for p in items if p.id != item_id and key not in " ".join(solved[p.id].split()).casefold()]
    rng = random.Random(f"{seed}:{kind}:{item_id}")
    return [solved[i] for i in rng.sample(pool, min(k, len(pool)))]


def examples_context(suite: Suite, k: int, seed: int = 0):
    def context(kind: str, item_id: str) -> str:
        return "".join(line + "\n" for line in solved_examples(suite, kind, item_id, k, seed))

    return context


def passage_text(ctx: AttackContext, suite: Suite) -> str | None:
    """ATK-I2: the passage for a suite, or None when there is no target text to take it from."""
    for text in ctx.heldout_texts:
        words = text.split()
        if len(words) >= 30:
            return " ".join(words[:PASSAGE_WORDS])
    return load_passage(suite.path)


def run(ctx: AttackContext) -> list[Row]:
    rows = []
    for suite in ctx.suites:
        for k in ctx.config.in_context_k:
            fn = examples_context(suite, k, ctx.config.seed)
            for label, model, tok in ctx.models():
                m = ctx.scorer.suite(model, tok, suite, context=fn, cut_at_newline=True,
                                     label=f"in-context k={k} {label}")
                rows.append(Row(NAME, f"k={k}", suite.name, label, m))
        passage = passage_text(ctx, suite)
        if passage:
            for label, model, tok in ctx.models():
                m = ctx.scorer.suite(model, tok, suite, context=lambda kind, pid, p=passage: p + "\n\n",
                                     label=f"passage {label}")
                rows.append(Row(NAME, "passage", suite.name, label, m, info={"passage_words": len(passage.split())}))
    return rows
