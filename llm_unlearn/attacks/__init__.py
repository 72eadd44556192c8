"""Does the forgetting hold? Attacks on an unlearned model, scored like ``eval``.

Public API::

    from llm_unlearn.attacks import attack
    doc = attack("runs/sherlock/export/model", "smollm2-135m", ["eval/sherlock_holmes"], "runs/sherlock/attack",
                 heldout_texts=[...])

Attacks (:data:`ATTACKS`): ``in_context`` (solved examples, a passage), ``jailbreak`` (permission prefixes),
``languages`` (the suite in other languages), ``chat`` (chat questions and two-choice items), ``quantization``
(int8 / 4-bit rounding) and ``relearn`` (a few LoRA steps on held-out or other text). Each scores the base model,
the unlearned model and the unlearned model under attack, and reports recovery (:mod:`.metrics`).
"""

from __future__ import annotations

import json
from pathlib import Path

from .registry import ATTACKS, parse_attacks
from .runner import attack

__all__ = ["ATTACKS", "attack", "attack_run", "parse_attacks", "heldout_from_run"]


def heldout_from_run(run_dir: str | Path) -> list[str]:
    """ATK-RL2: target text of a run that neither training nor checkpoint selection saw: its ``relearn`` blocks
    (``corpus.relearn_fraction`` > 0). The ``validation`` blocks are never used: they chose the checkpoint, so
    relearning on them would train on text the run was tuned against. A run without a relearn split gives none
    (a warning says so)."""
    from ..corpus import read_blocks
    from ..errors import RunDirError
    from ..rundir import RunPaths

    run = RunPaths(run_dir)
    if not run.split.is_file() or not run.blocks.is_file():
        raise RunDirError(f"{run.root} has no corpus/split.json and blocks.jsonl: not a run directory past the "
                          "corpus stage")
    split = json.loads(run.split.read_text())
    blocks = read_blocks(run.blocks)
    if not split.get("relearn"):
        import logging

        logging.getLogger(__name__).warning(
            "%s has no relearn split (corpus.relearn_fraction was 0): no held-out text from it; its validation blocks "
            "chose the checkpoint and are not used. Give --heldout FILE, or rerun with corpus.relearn_fraction > 0",
            run.root)
        return []
    return [blocks[i].text for i in split["relearn"]]


def _named_texts(entries: list[str]) -> dict[str, list[str]]:
    """``NAME=PATH`` or ``PATH`` entries -> {name: texts} (a file or a folder of .txt/.md, read like a corpus)."""
    from ..corpus import read_corpus
    from ..errors import CorpusError, EvalError

    out: dict[str, list[str]] = {}
    for entry in entries:
        name, _, path = entry.partition("=") if "=" in entry and not Path(entry).exists() else ("", "", entry)
        name = name or Path(path.rstrip("/")).stem or "text"
        try:
            out[name] = [d.text for d in read_corpus(str(Path(path).expanduser()))]
        except CorpusError as exc:
            raise EvalError(f"relearn text {entry!r}: {exc}") from exc
    return out


def attack_run(run_dir: str | Path, recipe, progress: bool = True) -> dict:
    """The pipeline's ``attack`` stage: the exported model of a run vs the recipe's base model."""
    from ..rundir import RunPaths

    run = RunPaths(run_dir)
    cfg = recipe.attack
    suites = cfg.suites or recipe.eval.suites
    lr = cfg.relearn_lr if cfg.relearn_lr is not None else recipe.finetune.learning_rate
    return attack(str(run.export_model), recipe.model.spec, suites, run.stage_dir("attack"), config=cfg,
                  eval_config=recipe.eval, heldout_texts=heldout_from_run(run.root),
                  relearn_texts=_named_texts(cfg.relearn_texts), relearn_lr=lr, overwrite=True, progress=progress)
