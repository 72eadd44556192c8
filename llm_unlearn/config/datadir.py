"""Where data lives: one rule, used by the code, the recipes, the benchmarks and the tests.

The package carries the public data the product needs (``llm_unlearn/data``: the target books, WikiText-2, the six
benchmarks, TOFU; licences and sources in its README). The data folder is:

1. ``$LLM_UNLEARN_DATA`` when set (it must exist: a wrong value is an error, never a silent fall-back);
2. else the bundled folder.

Recipes name a file of the data folder as ``data:REL/PATH`` (``corpus.path: data:corpora/alice_in_wonderland.txt``);
any other path is a user's own file. Where the internet is reachable, a corpus or retain text can also be a
``datasets`` source: ``hf:NAME[:CONFIG][:SPLIT]`` (see :func:`parse_hf_ref`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RecipeError

BUNDLED = Path(__file__).resolve().parent.parent / "data"  # llm_unlearn/data
DATA_PREFIX = "data:"
HF_PREFIX = "hf:"
WIKITEXT_VALID = ("wikitext2", "valid.txt")
WIKITEXT_TEST = ("wikitext2", "test.txt")
BENCHMARKS = ("benchmarks",)
TOFU = ("tofu",)


def data_dir() -> Path:
    """The data folder: ``$LLM_UNLEARN_DATA`` when set, else the bundled one (see the module docstring)."""
    env = os.environ.get("LLM_UNLEARN_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise RecipeError(f"LLM_UNLEARN_DATA={env} is not a folder; point it at a data folder (the layout of "
                              f"{BUNDLED}) or unset it to use the bundled data")
        return path
    return BUNDLED


def data_file(*parts: str, what: str, setting: str) -> Path:
    """A file (or folder) of the data folder; a clear error naming the recipe ``setting`` that replaces it."""
    path = data_dir().joinpath(*parts)
    if not path.exists():
        raise RecipeError(f"{what}: {path} not found; set {setting} to your own file(s), or point LLM_UNLEARN_DATA "
                          "at a data folder holding it")
    return path


def is_data_ref(value) -> bool:
    return isinstance(value, str) and value.startswith(DATA_PREFIX)


def resolve_data_ref(value: str, key: str = "path") -> str:
    """``data:REL`` -> the absolute path of REL in the data folder (which must hold it); other values unchanged."""
    if not is_data_ref(value):
        return value
    rel = value[len(DATA_PREFIX):].strip().lstrip("/")
    parts = Path(rel).parts
    if not rel or ".." in parts:
        raise RecipeError(f"{key}: '{value}' must name a file inside the data folder, e.g. "
                          "data:corpora/sherlock_holmes_adventures.txt")
    return str(data_file(*parts, what=key, setting=key))


def is_hf_ref(value) -> bool:
    return isinstance(value, str) and value.startswith(HF_PREFIX)


def parse_hf_ref(value: str) -> tuple[str, str | None, str]:
    """``hf:NAME[:CONFIG][:SPLIT]`` -> (name, config or None, split; default ``train``).

    ``hf:wikitext:wikitext-2-raw-v1:validation`` is WikiText-2's validation split; ``hf:imdb:test`` a dataset
    without configs; NAME may also be a local folder that ``datasets.load_dataset`` reads (offline)."""
    body = value[len(HF_PREFIX):]
    parts = body.split(":")
    if not parts[0] or len(parts) > 3 or any(not p for p in parts):
        raise RecipeError(f"'{value}' is not a datasets source: write hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
    if len(parts) == 1:
        return parts[0], None, "train"
    if len(parts) == 2:
        return parts[0], None, parts[1]
    return parts[0], parts[1], parts[2]


def default_retain_text() -> Path:
    """Generic text for retain terms: WikiText-2 valid."""
    return data_file(*WIKITEXT_VALID, what="generic (retain) text", setting="finetune.retain_corpus")


def default_wikitext() -> Path:
    """WikiText-2 test: the perplexity text."""
    return data_file(*WIKITEXT_TEST, what="WikiText-2 perplexity text", setting="eval.wikitext")


def default_benchmark_dir() -> Path:
    return data_file(*BENCHMARKS, what="benchmark files", setting="eval.benchmark_dir")


def default_tofu_dir() -> Path:
    return data_file(*TOFU, what="TOFU data", setting="data.path")
