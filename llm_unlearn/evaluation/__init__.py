"""Evaluation of unlearning: familiarity (completion and probability), retained ability, perplexity, and a
before/after report.

Public API::

    from llm_unlearn.evaluation import evaluate
    doc = evaluate({"base": "smollm2-135m", "unlearned": "runs/x/model"}, EvalConfig(...), "runs/x/eval",
                   baseline="base")

Building blocks: :func:`load_suite` / :func:`draft_suite` (prompt suites), :func:`completion_familiarity`,
:func:`probability_familiarity`, :func:`generic_floor` (the base model on the prompts with the target's names made
generic), :func:`load_benchmark` / :func:`score_benchmark`, :func:`compute_perplexity`,
:func:`paired_bootstrap` / :func:`mcnemar`, and :mod:`.lm_eval_bridge`.
"""

from __future__ import annotations

_LAZY = {
    "evaluate": ("core", "evaluate"),
    "evaluate_model": ("core", "evaluate_model"),
    "load_suite": ("suites", "load_suite"),
    "draft_suite": ("suites", "draft_suite"),
    "Suite": ("suites", "Suite"),
    "Grader": ("grading", "Grader"),
    "completion_familiarity": ("familiarity", "completion_familiarity"),
    "probability_familiarity": ("familiarity", "probability_familiarity"),
    "generate": ("familiarity", "generate"),
    "generic_floor": ("floor", "generic_floor"),
    "load_benchmark": ("benchmarks", "load_benchmark"),
    "score_benchmark": ("benchmarks", "score_benchmark"),
    "BENCHMARK_FILES": ("benchmarks", "BENCHMARK_FILES"),
    "compute_perplexity": ("perplexity", "perplexity"),  # (the submodule name would shadow "perplexity")
    "paired_bootstrap": ("stats", "paired_bootstrap"),
    "mcnemar": ("stats", "mcnemar"),
    "score_items": ("scoring", "score_items"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
