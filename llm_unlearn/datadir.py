"""Where the default data lives (retain text, WikiText-2, benchmarks): one rule, used everywhere.

The package holds no data. Default files come from the data folder, found in this order:

1. ``$LLM_UNLEARN_DATA`` (the data folder itself);
2. ``$LLM_UNLEARN_SHARED/data``;
3. ``../shared/data`` next to the checkout, then next to the current folder, then ``./shared/data``.

A recipe can always name the files instead (``finetune.retain_corpus``, ``eval.wikitext``, ``eval.benchmark_dir``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import RecipeError

WIKITEXT_VALID = ("wikitext2", "valid.txt")


def data_dir() -> Path | None:
    """The data folder, or None when there is none (see the module docstring for the order)."""
    candidates = []
    if os.environ.get("LLM_UNLEARN_DATA"):
        candidates.append(Path(os.environ["LLM_UNLEARN_DATA"]).expanduser())
    if os.environ.get("LLM_UNLEARN_SHARED"):
        candidates.append(Path(os.environ["LLM_UNLEARN_SHARED"]).expanduser() / "data")
    checkout = Path(__file__).resolve().parent.parent
    candidates += [checkout.parent / "shared" / "data", Path.cwd().parent / "shared" / "data",
                   Path.cwd() / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def data_file(*parts: str, what: str, setting: str) -> Path:
    """A file of the data folder; a clear error naming the recipe ``setting`` that replaces it when absent."""
    folder = data_dir()
    path = folder.joinpath(*parts) if folder else None
    if path is None or not path.exists():
        where = str(path) if path else f"the data folder ({'/'.join(parts)})"
        raise RecipeError(f"{what}: {where} not found; set {setting} to your own file(s), or point LLM_UNLEARN_DATA "
                          "at a data folder holding it")
    return path


def default_retain_text() -> Path:
    """Generic text for retain terms: WikiText-2 valid."""
    return data_file(*WIKITEXT_VALID, what="generic (retain) text", setting="finetune.retain_corpus")
