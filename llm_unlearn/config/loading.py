"""Reading a recipe: YAML to typed sections (:func:`build`), paths relative to the recipe file, ``data:`` references,
the trust rule for settings from files, and the options that were removed."""

from __future__ import annotations

import dataclasses
import logging
import re
import types
import typing
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from .checks import did_you_mean
from .datadir import is_data_ref, is_hf_ref, resolve_data_ref

logger = logging.getLogger(__name__)

# Options that were measured and removed (docs/results.md, "Options measured and removed"), with the value that
# meant "off" and what to use instead. A recipe that sets one to anything else stops with that advice (exit 2); at
# its "off" value (what run directories of earlier versions saved) it is dropped with a note in the log.
REMOVED_OPTIONS = {
    ("finetune", "retain_name_weight"): (0.0, "it made forgetting worse (P(target) 20% -> 36% of base); use "
                                              "finetune.retain_weight alone"),
    ("finetune", "neighbour_texts"): (0, "it had no measurable effect; use finetune.retain_weight with "
                                         "finetune.retain_corpus (your own generic text) instead"),
    ("finetune", "position_weighting"): (False, "it was never shown to help; use finetune.soft_labels"),
    ("labels", "position_weight"): ("none", "it fed finetune.position_weighting, also removed; use "
                                            "labels.soft_top_k with finetune.soft_labels"),
    ("labels", "rise_other"): (0.0, "0.1 already cost as much as the paper's formula; use labels.rise_tokens: all "
                                    "(the paper) or target"),
    ("labels", "rise_letters"): (True, "its effect was within seed noise; one-letter pieces of target words always "
                                       "count as target tokens now"),
}


def removed_option(section: str, key: str, value: Any, source: str) -> bool:
    """True when ``section.key`` is a removed option at its "off" value (drop it); a :class:`RecipeError` with what
    to use instead when it is set to anything else; False when it is not a removed option."""
    if (section, key) not in REMOVED_OPTIONS:
        return False
    off, advice = REMOVED_OPTIONS[(section, key)]
    if value == off and isinstance(value, bool) == isinstance(off, bool):
        logger.info("%s: %s.%s was removed; its value %r (off) is ignored", source, section, key, value)
        return True
    raise RecipeError(f"{source}: {section}.{key} was removed: {advice}")


_PATH_KEYS = {("corpus", "path"), ("anchors", "user_dictionary"), ("eval", "benchmark_dir"), ("eval", "wikitext"),
              ("finetune", "retain_corpus"), ("model", "spec")}
_PATH_LIST_KEYS = {("eval", "suites"), ("corpus", "extra_paths"), ("finetune", "retain_corpus"), ("attack", "suites"),
                   ("attack", "relearn_texts")}
_FILE_SUFFIXES = {".txt", ".md", ".jsonl", ".json", ".gguf", ".yaml", ".yml"}  # a name with these is a file
# keys whose value may also be a name rather than a path (datasets id, Hub id, model alias)
_MAYBE_NAME_KEYS = {("corpus", "path"), ("corpus", "extra_paths"), ("finetune", "retain_corpus"), ("model", "spec")}


def resolve_path(value: Any, base: Path, maybe_name: bool, key: str) -> Any:
    """One recipe path: relative paths are relative to the recipe file.

    ``./x`` and ``../x`` always; a bare ``x`` when it exists next to the recipe, else, for keys that may hold a
    name, it stays as written unless it ends like a file (a datasets or Hub id). A bare path found only under the current directory is kept
    (recipes saved in run directories by older versions hold such paths), and the log says so."""
    if not isinstance(value, str) or not value or Path(value).is_absolute() or value.startswith("~"):
        return value
    if is_data_ref(value):
        return resolve_data_ref(value, key)
    if is_hf_ref(value):
        return value
    here = base / value
    if value.startswith(("./", "../")) or _exists(here):
        return str(here.resolve())
    if _exists(Path(value)):
        logger.info("%s: '%s' is not next to the recipe (%s); using it relative to the current directory",
                    key, value, base)
        return value
    if maybe_name and Path(value).suffix.lower() not in _FILE_SUFFIXES:
        return value
    return str(here.resolve())


def _exists(path: Path) -> bool:
    """``path.exists()``, False for a name the OS cannot even look up (too long, ...)."""
    try:
        return path.exists()
    except OSError:
        return False


def resolve_override_path(parts: tuple[str, ...], value: Any) -> Any:
    """Rule T6: a path given with ``--set`` (or the API's overrides) is relative to the current folder, resolved once,
    here, and stored absolute, so a run resumed from another folder reads the same file."""
    if len(parts) != 2:
        return value
    key, maybe_name = f"{parts[0]}.{parts[1]}", parts in _MAYBE_NAME_KEYS
    if parts in _PATH_KEYS and isinstance(value, str):
        return resolve_path(value, Path.cwd(), maybe_name, key)
    if parts in _PATH_LIST_KEYS and isinstance(value, list):
        return [resolve_path(v, Path.cwd(), maybe_name, key) for v in value]
    return value


def drop_file_trust(data: dict, path: Path) -> None:
    """Rule T2: ``model.trust_remote_code`` is honoured only from the person running (``--set
    model.trust_remote_code=true``, ``--trust-remote-code``, the Python API), never from a file: a recipe or a run
    directory someone shared must not run the code of a model folder it points at."""
    model = data.get("model")
    if isinstance(model, dict) and model.get("trust_remote_code") is True:
        model["trust_remote_code"] = False
        logger.warning("%s: model.trust_remote_code is ignored in a recipe file (it would run code from the model "
                       "folder); pass --set model.trust_remote_code=true yourself if you trust that code", path)


def resolve_data_refs(data: dict) -> dict:
    """``data:REL`` in any path key -> the file's absolute path in the data folder (:mod:`llm_unlearn.config.datadir`); the
    same for recipes from YAML, ``--set`` and the Python API. Returns a copy when anything changed."""
    out = None
    for section, key in _PATH_KEYS | _PATH_LIST_KEYS:
        sec = data.get(section)
        if not isinstance(sec, dict):
            continue
        value = sec.get(key)
        if is_data_ref(value):
            new = resolve_data_ref(value, f"{section}.{key}")
        elif isinstance(value, list) and any(is_data_ref(v) for v in value):
            new = [resolve_data_ref(v, f"{section}.{key}") if is_data_ref(v) else v for v in value]
        else:
            continue
        out = out or {**data}
        out[section] = {**out[section], key: new}
    return out or data


def resolve_relative_paths(data: dict, base: Path) -> dict:
    """Paths in a recipe are relative to the recipe file, as the README says and users expect."""
    for section, key in _PATH_KEYS:
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            sec[key] = resolve_path(sec[key], base, (section, key) in _MAYBE_NAME_KEYS, f"{section}.{key}")
    for section, key in _PATH_LIST_KEYS:
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), list):
            sec[key] = [resolve_path(v, base, (section, key) in _MAYBE_NAME_KEYS, f"{section}.{key}")
                        for v in sec[key]]
    return data


_YAML11_MISSED_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, conv = _type_ok(value, arg)
            if ok:
                return True, conv
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        # PyYAML (YAML 1.1) reads `3e-4` (no dot in the mantissa) as a string: accept such numbers.
        if isinstance(value, str) and _YAML11_MISSED_FLOAT.match(value.strip()):
            return True, float(value)
        return False, value
    if hint is str:
        return isinstance(value, str), value
    if hint is list or origin is list:
        return isinstance(value, list), value
    if hint is dict or origin is dict:
        return isinstance(value, dict), value
    return True, value


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def build(cls, data: dict, source: str, prefix: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: '{prefix.rstrip('.') or 'recipe'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    section = prefix.rstrip(".")
    data = {k: v for k, v in data.items() if k in names or not removed_option(section, k, v, source)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = unknown[0]
        raise RecipeError(f"{source}: unknown key '{prefix}{key}'{did_you_mean(key, names, prefix, 'known keys')}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            # `model:` with every key commented out is YAML null: the section's defaults
            kwargs[name] = build(hint, {} if value is None else value, source, prefix=f"{prefix}{name}.")
            continue
        if name == "mixed_precision" and value is False:
            value = "no"  # YAML 1.1 reads an unquoted `no` as false
        ok, conv = _type_ok(value, hint)
        if not ok:
            raise RecipeError(
                f"{source}: key '{prefix}{name}' must be {_type_name(hint)}, got {type(value).__name__} ({value!r})"
            )
        kwargs[name] = conv
    try:
        return cls(**kwargs)  # every section checks its fields in __post_init__
    except RecipeError as exc:
        raise RecipeError(f"{source}: {exc}") from exc

