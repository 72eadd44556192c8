"""The one boundary between the TOFU benchmark and the unlearning methods.

:func:`unlearn_with_method` unlearns ``forget_texts`` from the model in ``model_dir`` with the named method through
the project's Python API (:func:`llm_unlearn.api.unlearn`) and returns the unlearned model's folder with the
cost of the call. WHP is the API's own method (corpus = the forget texts, anchored terms extracted automatically,
reinforced model trained on the forget text). Other methods (npo, grad_diff, ...) come from the method registry;
until the API takes ``method=``, asking for one is a :class:`MethodUnavailableError`, raised before any training.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config.methods import METHOD_NAMES
from ..corpus import texts_jsonl
from ..errors import RecipeError
from ..runio import atomic_write_text
from .flops import count_flops

KNOWN_METHODS = METHOD_NAMES  # the registry's methods (llm_unlearn.methods)


class MethodUnavailableError(RecipeError):
    """An unlearning method that is unknown, or not available in this installation."""


@dataclass
class UnlearnOutcome:
    method: str
    model_path: Path
    wall_seconds: float
    flops: dict  # FlopCount.to_dict()
    run_dir: Path


def check_method(name: str) -> None:
    """Raise :class:`MethodUnavailableError` when ``name`` cannot run here (call it before any training)."""
    if name not in KNOWN_METHODS:
        raise MethodUnavailableError(f"unknown unlearning method '{name}'; known: {', '.join(KNOWN_METHODS)}")


def unlearn_with_method(name: str, model_dir: str | Path, forget_texts: Sequence[str], retain_texts: Sequence[str],
                        out: str | Path, overrides: Optional[Mapping[str, Any]] = None, params: int = 0,
                        vocab_size: int = 0, anchors: Optional[Mapping[str, Any]] = None,
                        progress: bool = True) -> UnlearnOutcome:
    """Unlearn ``forget_texts`` from ``model_dir`` with method ``name``; the run lives in ``out``.

    ``retain_texts`` (the retain authors' QA) are written to ``out/inputs/retain.jsonl`` and handed to methods
    that use retain data (``finetune.retain_corpus``). ``params`` / ``vocab_size`` size the FLOPs estimate.
    ``anchors`` (WHP only) is merged into the extracted anchor dictionary (``{term: None}`` vetoes a term).
    """
    from ..api import unlearn

    check_method(name)
    out = Path(out)
    kwargs: dict[str, Any] = {"method": name}
    if anchors and name == "whp":
        kwargs["anchors"] = dict(anchors)
    retain_path = out / "inputs" / "retain.jsonl"  # kept for every method: a recipe override may name it
    atomic_write_text(retain_path, texts_jsonl(retain_texts))
    run_overrides = dict(overrides or {})
    # rule TOFU-U2: every forget QA is unlearned; a validation slice of the forget set would be scored as forgotten
    # without ever being trained on
    run_overrides.setdefault("corpus.validation_fraction", 0.0)
    if name != "whp":  # the baselines' retain terms read finetune.retain_corpus: the retain authors' QA, not WikiText
        run_overrides.setdefault("finetune.retain_corpus", str(retain_path))
    t0 = time.perf_counter()
    with count_flops(params, vocab_size) as flops:
        result = unlearn(model=str(model_dir), corpus=list(forget_texts), out=out, target="TOFU forget authors",
                         overrides=run_overrides, until="export", progress=progress, **kwargs)
    seconds = time.perf_counter() - t0
    if result.model_path is None:
        raise RecipeError(f"method '{name}' left no exported model in {out}/export/model (set export.merge: true)")
    return UnlearnOutcome(name, Path(result.model_path), seconds, flops.to_dict(), out)
