"""Checks that need no stage, run before any stage changes a run directory (``--dry-run`` included): rule T5 of
:mod:`llm_unlearn.pipeline`. Each raises the typed error of what is wrong, naming the setting to fix.

P1. ``--out``: the nearest existing folder on its path is a folder (not a file).
P2. ``model.spec`` resolves (an alias that is installed, a folder with a config.json that is JSON with a model_type,
    a .gguf file, a Hub id); when its config is on disk (a folder, an already converted alias or GGUF), ``corpus.block_size`` fits the context length.
P3. ``corpus.path`` and ``corpus.extra_paths``: a path that exists is a regular file or a folder (never a device or a
    FIFO, which would hang or fill memory); an absolute path that does not exist is an error (a relative name that
    does not exist is a datasets id).
P4. ``anchors.user_dictionary``: exists and is YAML without aliases or duplicate keys (rules Y1, Y2).
P5. The judge / chat endpoints of the stages to run are ones the person running allowed (rule T1a).
P6. A device named (``model.device``, ``eval.device``) exists in this torch build (cuda on a CPU-only build would
    crash a stage later).
P7. ``finetune.cir_components`` (rule CIR4 of :mod:`llm_unlearn.robust`: one process) is not set for a launch of
    several processes (``WORLD_SIZE`` > 1) of a run that goes as far as a ``finetune`` or ``unlearn`` stage: the
    error comes before the stages that come first, not after them.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from .errors import AnchorError, CorpusError, EvalError, ModelLoadError, RecipeError, RunDirError


def check_out(root: Path) -> None:
    """P1."""
    try:
        for parent in [root, *root.parents]:
            if parent.exists():
                if not parent.is_dir():
                    raise RunDirError(f"--out {root}: {parent} is a file, not a folder; choose another --out")
                return
    except OSError as exc:  # a path the OS cannot look up (a name too long, ...)
        raise RunDirError(f"--out {str(root)[:120]}: {exc.strerror or exc}; choose another --out") from exc


def config_context_length(folder: Path) -> int | None:
    """The context length in a model folder's config.json (also a nested text_config's), or None."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    for cfg in (config, config.get("text_config")):
        if isinstance(cfg, dict):
            for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
                value = cfg.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
    return None


def check_model(recipe) -> None:
    """P2."""
    from .models import check_model_config, resolve_spec

    try:
        resolved = resolve_spec(recipe.model.spec)
    except OSError as exc:  # a name the OS cannot look up (too long, ...)
        raise ModelLoadError(f"model.spec {recipe.model.spec[:80]!r}: {exc.strerror or exc}") from exc
    folder = resolved.path if resolved.kind == "local" else resolved.cached_path
    if folder is None:
        return
    if resolved.kind == "local":
        check_model_config(Path(folder), "model.spec")
    ctx = config_context_length(Path(folder))
    if ctx and recipe.corpus.block_size > ctx:
        raise RecipeError(f"corpus.block_size={recipe.corpus.block_size} is larger than the model's context "
                          f"length ({ctx}); lower it with --set corpus.block_size={min(512, ctx)}")


def check_corpus_path(value: str, key: str) -> None:
    """P3 for one path."""
    path = Path(value).expanduser()
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        if path.is_absolute():
            raise CorpusError(f"{key}: {path} does not exist; check the path") from None
        return  # a datasets id or hf: source
    except OSError as exc:
        raise CorpusError(f"{key}: cannot read {path}: {exc.strerror or exc}") from exc
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise CorpusError(f"{key}: {path} is not a regular file or a folder (a device, FIFO or socket would never "
                          "end); point it at a text file, a .jsonl file or a folder of them")


def check_corpus(recipe) -> None:
    """P3."""
    if recipe.corpus.path:
        check_corpus_path(recipe.corpus.path, "corpus.path")
    for extra in recipe.corpus.extra_paths:
        check_corpus_path(extra, "corpus.extra_paths")


def check_user_dictionary(recipe) -> None:
    """P4."""
    from .config.yamlio import read_yaml_file

    path = recipe.anchors.user_dictionary
    if not path:
        return
    if not Path(path).is_file():
        raise AnchorError(f"anchors.user_dictionary: {path} is not a file; check the path")
    if Path(path).suffix.lower() != ".json":
        read_yaml_file(path, AnchorError, "anchor dictionary")


def check_endpoints(recipe, stages: list[str]) -> None:
    """P5: the endpoints of the stages in ``stages``."""
    from .openai_chat import choose_endpoint

    judge = recipe.eval.judge
    if "eval" in stages and recipe.eval.enabled and isinstance(judge, str) and judge.partition(":")[0] == "openai":
        choose_endpoint("judge", judge.partition(":")[2], EvalError, "eval.judge")
    chat = recipe.anchors.substitute_chat
    if ("anchors" in stages and recipe.anchors.substitutes == "chat" and isinstance(chat, str)
            and chat.partition(":")[0] == "openai"):
        choose_endpoint("chat", chat.partition(":")[2], AnchorError, "anchors.substitute_chat")


def check_device(device: str | None, key: str, error: type[Exception] = RecipeError) -> None:
    """P6."""
    if not device or device == "cpu":
        return
    import torch

    kind = device.split(":")[0]
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None), "mps": getattr(torch.backends, "mps", None)}
    available = bool(backend.get(kind) is not None and backend[kind].is_available())
    if available and kind in ("cuda", "xpu") and ":" in device:
        available = int(device.split(":")[1]) < backend[kind].device_count()
    if not available:
        raise error(f"{key}={device}: no such device in this torch build / machine; use cpu, or leave it unset "
                    "(automatic)")


def check_all(recipe, root: Path, stages: list[str]) -> None:
    """P1-P7, for a run of ``stages`` into ``root``."""
    check_out(root)
    check_device(recipe.model.device, "model.device")
    if "eval" in stages and recipe.eval.enabled:
        check_device(recipe.eval.device, "eval.device")
    check_model(recipe)
    check_corpus(recipe)
    if "anchors" in stages:
        check_user_dictionary(recipe)
    check_endpoints(recipe, stages)
    check_processes(recipe, stages)


def launched_processes() -> int:
    """How many processes this launch started (``WORLD_SIZE``, set by ``accelerate launch`` / ``torchrun``; 1
    otherwise), read before any accelerate state exists."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def check_processes(recipe, stages: list[str]) -> None:
    """P7: collapse of irrelevant representations trains on one process only."""
    processes = launched_processes()
    if processes > 1 and recipe.finetune.cir_components and {"finetune", "unlearn"} & set(stages):
        raise RecipeError(f"finetune.cir_components={recipe.finetune.cir_components} trains on one process (its "
                          f"rebuilt gradients are not all-reduced) and this launch started {processes}: launch with "
                          "`accelerate launch --num_processes 1` or plain `llm-unlearn run`, or add "
                          "--set finetune.cir_components=0")
