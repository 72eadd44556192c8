"""Chat questions (in the model's chat template, answer matching) and two-choice items (true vs false answer).

ATK-C1: both are scored on the base and the unlearned model (scoring rules ATK-S3, ATK-S4); recovery compares
their relative forgetting with the plain suite's familiarity (ATK-R3; floor 0 for chat, 0.5 for two choices).
"""

from __future__ import annotations

from .base import PROBE, AttackContext, MissingInput, Row
from .probes import load_chat, load_two_choice

NAME = "chat"


def missing_input(ctx: AttackContext) -> str | None:
    if not any(load_chat(s.path) or load_two_choice(s.path) for s in ctx.suites):
        return "no suite holds chat.jsonl or two_choice.jsonl"
    return None


def run(ctx: AttackContext) -> list[Row]:
    reason = missing_input(ctx)
    if reason:
        raise MissingInput(reason)
    rows = []
    for suite in ctx.suites:
        questions, pairs = load_chat(suite.path), load_two_choice(suite.path)
        for label, model, tok in ctx.models():
            if questions:
                m = ctx.scorer.chat(model, tok, questions, label=f"{suite.name} chat {label}")
                rows.append(Row(NAME, "questions", suite.name, label, m, kind=PROBE, probe="chat"))
            if pairs:
                m = ctx.scorer.two_choice(model, tok, pairs, label=f"{suite.name} two-choice {label}")
                rows.append(Row(NAME, "two-choice", suite.name, label, m, kind=PROBE, floor=0.5, probe="two_choice"))
    return rows
