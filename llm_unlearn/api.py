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

Rules:

A1. Every argument is checked as the CLI checks its flags (types, non-empty, booleans that are booleans), before
    anything is read or written; an error names the argument.
A2. Texts given in memory are written into the run directory only once its lock is held, and never replace the
    input of a finished run (``inputs/corpus.jsonl``, else ``inputs/corpus-HASH.jsonl``); a refused or failed call
    removes what it wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Recipe, resolve_override_path
from .errors import CorpusError, RecipeError, RunDirError
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
    if not isinstance(recipe, (str, os.PathLike)) or not str(recipe).strip():
        raise RecipeError(f"recipe must be a Recipe, a recipe file's path or None (got {recipe!r})")
    return Recipe.from_yaml(recipe)


# ---- the arguments, checked as the CLI checks its flags (rule A1) -------------------------------------------------
def _check_text(name: str, value, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise RecipeError(f"{name} must be a non-empty string{' or None' if optional else ''} (got {value!r})")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise RecipeError(f"{name} must be True or False (got {value!r})")


def _override_value(key: str, value):
    """A value of ``overrides`` as JSON (paths as strings); anything else is an error naming the key."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_override_value(key, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _override_value(key, v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise RecipeError(f"overrides['{key}']: {type(value).__name__} is not a recipe value (a string, number, "
                      "bool, None, list or mapping)")


def _check_corpus(corpus) -> None:
    if corpus is None or isinstance(corpus, (str, os.PathLike)) or _is_dataset(corpus):
        return
    if isinstance(corpus, (list, tuple)) and all(isinstance(t, str) for t in corpus):
        return
    raise CorpusError(f"corpus must be a path, a datasets id, a list of strings or a datasets.Dataset (got "
                      f"{type(corpus).__name__}{': a mapping would give its keys' if isinstance(corpus, Mapping) else ''})")


def _is_dataset(value) -> bool:
    return hasattr(value, "column_names") and hasattr(value, "__getitem__")


class Unlearner:
    """A configured unlearning job. ``overrides`` maps ``"section.key"`` to a value, as ``--set`` does; ``method``
    names the unlearning method (:mod:`llm_unlearn.methods`; default: the recipe's, ``whp``)."""

    def __init__(self, model: str | None = None, recipe: Recipe | str | Path | None = None,
                 overrides: Mapping[str, Any] | None = None, target: str | None = None, method: str | None = None):
        _check_text("model", model)
        if target is not None and not isinstance(target, str):
            raise RecipeError(f"target must be a string naming the concept (got {target!r})")
        if method is not None and (not isinstance(method, str) or not method.strip()):
            raise RecipeError(f"method must name an unlearning method, e.g. 'whp' or 'npo' (got {method!r})")
        if overrides is not None and not isinstance(overrides, Mapping):
            raise RecipeError(f"overrides must be a mapping {{'section.key': value}} (got {type(overrides).__name__})")
        items = [(key, _override_value(str(key), value)) for key, value in (overrides or {}).items()]
        bad = next((key for key, _ in items if not isinstance(key, str)), None)
        if bad is not None:
            raise RecipeError(f"overrides: key {bad!r} must be a string 'section.key'")
        self.recipe = _as_recipe(recipe)
        if model is not None:
            self.recipe.model.spec = resolve_override_path(("model", "spec"), os.fspath(model))  # rule T6
        if target is not None:
            self.recipe.target = target
        sets = [] if method is None else [f"method={json.dumps(method)}"]
        self.recipe = self.recipe.with_overrides(sets + [f"{key}={json.dumps(value)}" for key, value in items])

    def run(self, corpus=None, out: str | Path = "runs/unlearn", anchors: Mapping[str, Sequence[str] | None] | None = None,
            overwrite: bool = False, until: str = "eval", progress: bool = True) -> RunResult:
        from .pipeline import Pipeline

        _check_text("out", out, optional=False)
        _check_bool("overwrite", overwrite)
        _check_bool("progress", progress)
        if not isinstance(until, str):
            raise RecipeError(f"until must be a stage name (got {until!r})")
        _check_corpus(corpus)
        run = RunPaths(Path(out).expanduser().absolute())
        from .preflight import check_out

        check_out(run.root)
        recipe = Recipe.from_dict(self.recipe.to_dict())
        if anchors:
            if not isinstance(anchors, Mapping):
                raise RecipeError("anchors must be a mapping {term: [translations, ...] or None to veto}")
            recipe.anchors.extra = {**recipe.anchors.extra, **{k: _translations(k, v) for k, v in anchors.items()}}
        if isinstance(corpus, str) and not corpus.strip():
            raise CorpusError("corpus is an empty string: pass a file or folder path, a datasets id, or a list of "
                              "texts (an empty path would read the current folder)")
        inline = None
        if corpus is not None and not isinstance(corpus, (str, os.PathLike)):
            inline = self._inline_corpus(corpus, run)  # read and checked now; written under the lock (rule A2)
            recipe.corpus.path = str(inline[0])
        elif corpus is not None:
            recipe.corpus.path = resolve_override_path(("corpus", "path"), os.fspath(corpus))  # rule T6
        pipe = Pipeline(recipe, run.root, overwrite=overwrite, progress=progress)
        written: list[Path] = []

        def prepare():
            from .rundir import links_in

            if inline and links_in(run.inputs):  # rule T3: never write through a link
                raise RunDirError(f"{links_in(run.inputs)[0]} is a symbolic link: llm-unlearn will not write the "
                                  "texts through it; replace it with a folder, or use a new out")
            if inline and not inline[0].exists():
                atomic_write_text(inline[0], inline[1])
                written.append(inline[0])

        try:
            manifest = pipe.run_stages(until=until, prepare=prepare)
        except Exception:
            if not pipe._finished_here:  # a refused or failed call leaves no new input behind
                for path in written:
                    path.unlink(missing_ok=True)
            raise
        return RunResult(run.root, manifest)

    @staticmethod
    def _inline_corpus(corpus, run: RunPaths) -> tuple[Path, str]:
        """Texts given in memory are written into the run directory, so every stage reads from disk (rule A2): as
        ``inputs/corpus.jsonl``, or, when that holds other texts (an earlier call's), as
        ``inputs/corpus-HASH.jsonl``, so that no call replaces the input of a finished run."""
        from .corpus import read_corpus, texts_jsonl

        docs = read_corpus(corpus)
        if not docs:
            raise CorpusError("the corpus contains no text")
        payload = texts_jsonl(d.text for d in docs)
        path = run.inputs / "corpus.jsonl"
        if path.is_file() and path.read_text(encoding="utf-8") != payload:
            path = run.inputs / f"corpus-{hashlib.sha256(payload.encode()).hexdigest()[:12]}.jsonl"
        return path, payload


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
    """Unlearn ``corpus`` from ``model`` with ``method`` (default ``whp``); returns a :class:`RunResult`.

    ``model`` may be None only with a ``recipe`` (its model is used)."""
    if model is None and recipe is None:
        raise RecipeError("model must name a model spec (an alias, a folder, a .gguf file or a Hub id), or pass a "
                          "recipe whose model.spec is used")
    return Unlearner(model, recipe, overrides, target, method).run(corpus, out, anchors=anchors, overwrite=overwrite,
                                                          until=until, progress=progress)
