"""In-context priming: solved examples about the target, or a passage of target text, before each prompt.

* ATK-I1: k solved examples (k = 3 and 10 by default) come from the suite's own items of the same kind (completion
  prompt + its first reference; probability prompt + its target), one per line, chosen by a generator seeded with
  (seed, item id), so reruns are identical. An example never comes from the scored item, nor from an item whose
  solved text contains the scored prompt, nor from an item whose answers overlap the scored item's, nor from one
  whose solved text names the scored item's answer (ATK-S1's terms): the examples show the format and the topic,
  never the answer.
* ATK-I2: two passage variants. ``passage``: the suite's ``passage.txt`` (a paragraph written in the target's style,
  a pastiche, not text from the book); ``heldout-text``: the first ~150 words of held-out target text (a run's
  relearn split or ``--heldout``). Items whose answer the passage contains are not scored (ATK-S1).
Completions are graded against the original prompt (ATK-S1) and end at the first newline with examples (ATK-S2).
"""

from __future__ import annotations

import random

from ..evaluation.suites import Suite
from .base import AttackContext, Row
from .probes import load_passage
from .scoring import copied

NAME = "in_context"
PASSAGE_WORDS = 150


def solved_examples(suite: Suite, kind: str, item_id: str, k: int, seed: int = 0) -> list[str]:
    """ATK-I1: k solved examples for one scored item (never the item itself, nor a copy of its prompt)."""
    if kind == "completion":
        items = suite.completion
        solved = {p.id: p.prompt.rstrip() + " " + p.references[0] for p in items}
        answers = {p.id: p.references for p in items}
    else:
        items = suite.probability
        solved = {p.id: p.prompt + p.target for p in items}
        answers = {p.id: [p.target] for p in items}
    scored = next(p for p in items if p.id == item_id)
    key = " ".join(scored.prompt.split()).casefold()
    mine = {a.strip().casefold() for a in answers[item_id]}
    # not the item itself, nor any item whose solved text contains the scored prompt (a longer variant of the same
    # sentence would hand over the answer: '"You have been in Afghanistan, I perceive," said ...'), nor one with a
    # shared answer, nor one whose text names the scored answer
    pool = [p.id for p in items if p.id != item_id and key not in " ".join(solved[p.id].split()).casefold()
            and not mine & {a.strip().casefold() for a in answers[p.id]}
            and not copied(solved[p.id], answers[item_id])]
    rng = random.Random(f"{seed}:{kind}:{item_id}")
    return [solved[i] for i in rng.sample(pool, min(k, len(pool)))]


def examples_context(suite: Suite, k: int, seed: int = 0):
    def context(kind: str, item_id: str) -> str:
        return "".join(line + "\n" for line in solved_examples(suite, kind, item_id, k, seed))

    return context


def heldout_passage(ctx: AttackContext) -> str | None:
    """ATK-I2: the first ~150 words of held-out target text, or None without any."""
    for text in ctx.heldout_texts:
        words = text.split()
        if len(words) >= 30:
            return " ".join(words[:PASSAGE_WORDS])
    return None


def passage_texts(ctx: AttackContext, suite: Suite) -> dict[str, str]:
    """ATK-I2: {variant: text}: the suite's passage.txt as ``passage``, held-out text as ``heldout-text``."""
    out = {}
    own = load_passage(suite.path)
    if own:
        out["passage"] = own
    held = heldout_passage(ctx)
    if held:
        out["heldout-text"] = held
    return out


def run(ctx: AttackContext) -> list[Row]:
    rows = []
    for suite in ctx.suites:
        for k in ctx.config.in_context_k:
            fn = examples_context(suite, k, ctx.config.seed)
            for label, model, tok in ctx.models():
                m = ctx.scorer.suite(model, tok, suite, context=fn, cut_at_newline=True,
                                     label=f"in-context k={k} {label}")
                rows.append(Row(NAME, f"k={k}", suite.name, label, m, info={"left_out": m.get("left_out")}))
        for variant, passage in passage_texts(ctx, suite).items():
            for label, model, tok in ctx.models():
                m = ctx.scorer.suite(model, tok, suite, context=lambda kind, pid, p=passage: p + "\n\n",
                                     label=f"{variant} {label}")
                rows.append(Row(NAME, variant, suite.name, label, m,
                                info={"passage_words": len(passage.split()), "left_out": m.get("left_out")}))
    return rows
