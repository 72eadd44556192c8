"""Other languages: the suite's prompts in French, German, Spanish ... (``completion.<lang>.jsonl``).

ATK-L1: each language the suite holds (or those of ``attack.languages``) is scored on the base and the unlearned
model like the plain suite, with the suite's anchors (names rarely change across languages) and the language's
own genre words; recovery compares its relative forgetting with the plain suite's (ATK-R3).
"""

from __future__ import annotations

from ..errors import EvalError
from ..evaluation.suites import load_suite, suite_languages
from .base import PROBE, AttackContext, MissingInput, Row

NAME = "languages"


def languages_for(ctx: AttackContext, suite) -> list[str]:
    have = suite_languages(suite.path)
    if ctx.config.languages is None:
        return have
    missing = [lang for lang in ctx.config.languages if lang not in have]
    if missing:
        raise EvalError(f"suite {suite.name} has no prompts in {', '.join(missing)} (it has: {', '.join(have) or 'none'})")
    return list(ctx.config.languages)


def missing_input(ctx: AttackContext) -> str | None:
    if not any(suite_languages(s.path) for s in ctx.suites):
        return "no suite holds per-language prompt files (completion.<lang>.jsonl)"
    return None


def run(ctx: AttackContext) -> list[Row]:
    reason = missing_input(ctx)
    if reason:
        raise MissingInput(reason)
    rows = []
    for suite in ctx.suites:
        for lang in languages_for(ctx, suite):
            lsuite = load_suite(suite.path, language=lang)
            for label, model, tok in ctx.models():
                m = ctx.scorer.suite(model, tok, lsuite, label=f"{lsuite.name} {label}")
                rows.append(Row(NAME, lang, suite.name, label, m, kind=PROBE, probe=lsuite.name))
    return rows
