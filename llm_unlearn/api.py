"""Python API: unlearn a custom concept from Python.

    from llm_unlearn import unlearn

    result = unlearn(
        model="smollm2-135m",
        corpus=["Zorblax the Wanderer sailed from Quillmoor ...", ...],   # path, list of strings or datasets.Dataset
        anchors={"Zorblax": ["Marcus", "Peter"], "Quillmoor": ["Eastport"]},  # optional, merged with extracted ones
        out="runs/zorblax",
        overrides={"finetune.max_steps": 40},
        method="whp",                     # or grad_ascent, grad_diff, npo, simnpo, rmu
    )
    result.model_path   # a Hugging Face folder: AutoModelForCausalLM.from_pretrained(result.model_path)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CorpusError, RecipeError
from .recipe import Recipe
from .rundir import RunPaths
from .runio import atomic_write_text


@dataclass
class RunResult:
    run_dir: Path
    manifest: dict = field(repr=False)

    @property
    def model_path(self) -> Path | None:
        p = RunPaths(self.run_dir).export_model
        return p if p.exists() else None

    @property
    def adapter_path(self) -> Path | None:
        p = RunPaths(self.run_dir).export_adapter
        return p if p.exists() else None

    @property
    def metrics(self) -> dict[str, dict]:
        return {name: e.get("metrics", {}) for name, e in self.manifest["stages"].items()}

    @property
    def eval(self) -> dict | None:
        p = RunPaths(self.run_dir).eval_dir / "eval.json"
        return json.loads(p.read_text()) if p.exists() else None


def _as_recipe(recipe: Recipe | str | Path | None) -> Recipe:
    if recipe is None:
        return Recipe()
    if isinstance(recipe, Recipe):
        return Recipe.from_dict(recipe.to_dict())  # a copy: the caller's object is not mutated
    return Recipe.from_yaml(recipe)


class Unlearner:
    """A configured unlearning job. ``overrides`` maps ``"section.key"`` to a value, as ``--set`` does; ``method``
    names the unlearning method (:mod:`llm_unlearn.methods`; default: the recipe's, ``whp``)."""

    def __init__(self, model: str | None = None, recipe: Recipe | str | Path | None = None,
                 overrides: Mapping[str, Any] | None = None, target: str | None = None, method: str | None = None):
        self.recipe = _as_recipe(recipe)
        if model is not None:
            self.recipe.model.spec = str(model)
        if target is not None:
            self.recipe.target = target
        if method is not None:
            self.recipe = self.recipe.with_override(f"method={json.dumps(method)}")
        for key, value in (overrides or {}).items():
            self.recipe = self.recipe.with_override(f"{key}={json.dumps(value)}")

    def run(self, corpus=None, out: str | Path = "runs/unlearn", anchors: Mapping[str, Sequence[str] | None] | None = None,
            overwrite: bool = False, until: str = "eval", progress: bool = True) -> RunResult:
        from .pipeline import Pipeline

        run = RunPaths(out)
        recipe = Recipe.from_dict(self.recipe.to_dict())
        if anchors:
            if not isinstance(anchors, Mapping):
                raise RecipeError("anchors must be a mapping {term: [translations, ...] or None to veto}")
            recipe.anchors.extra = {**recipe.anchors.extra, **{k: _translations(k, v) for k, v in anchors.items()}}
        if isinstance(corpus, str) and not corpus.strip():
            raise CorpusError("corpus is an empty string: pass a file or folder path, a datasets id, or a list of "
                              "texts (an empty path would read the current folder)")
        if corpus is not None and not isinstance(corpus, (str, Path)):
            recipe.corpus.path = str(self._save_inline_corpus(corpus, run))
        elif corpus is not None:
            recipe.corpus.path = str(corpus)
        pipe = Pipeline(recipe, run.root, overwrite=overwrite, progress=progress)
        manifest = pipe.run_stages(until=until)
        return RunResult(run.root, manifest)

    @staticmethod
    def _save_inline_corpus(corpus, run: RunPaths) -> Path:
        """Texts given in memory are written into the run directory, so every stage reads from disk."""
        from .corpus import read_corpus, texts_jsonl

        docs = read_corpus(corpus)
        if not docs:
            raise CorpusError("the corpus contains no text")
        path = run.inputs / "corpus.jsonl"
        payload = texts_jsonl(d.text for d in docs)
        if not path.exists() or path.read_text(encoding="utf-8") != payload:  # unchanged text keeps its mtime
            atomic_write_text(path, payload)
        return path


def _translations(key, value) -> list[str] | None:
    """One anchor's translations as given to the API: a string is one translation, None vetoes the key."""
    if not isinstance(key, str) or not key.strip():
        raise RecipeError(f"anchors: key {key!r} must be a non-empty string")
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(t, str) and t.strip() for t in value):
        raise RecipeError(f"anchors['{key}']: translations must be a string, a non-empty list of strings, or None "
                          f"to veto the key (got {value!r})")
    return list(value)


def unlearn(model: str, corpus, out: str | Path, *, anchors: Mapping[str, Sequence[str] | None] | None = None,
            recipe: Recipe | str | Path | None = None, target: str | None = None,
            overrides: Mapping[str, Any] | None = None, method: str | None = None, overwrite: bool = False,
            until: str = "eval", progress: bool = True) -> RunResult:
    """Unlearn ``corpus`` from ``model`` with ``method`` (default ``whp``); returns a :class:`RunResult`."""
    return Unlearner(model, recipe, overrides, target, method).run(corpus, out, anchors=anchors, overwrite=overwrite,
                                                          until=until, progress=progress)
