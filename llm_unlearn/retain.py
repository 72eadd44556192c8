"""Retain text: generic text that a method's retain term keeps the model good at (WHP's retain guard, GradDiff,
NPO, SimNPO, RMU). WikiText-2 valid from the data folder by default (:mod:`llm_unlearn.datadir`), or the files a
recipe lists in ``finetune.retain_corpus``.

Beyond the paper, WHP's guard can weigh the positions of retain text where a name is completed
(``finetune.retain_name_weight``, :class:`NamePositions`):

G1. A name position predicts a token that starts a capitalised word after a space (``ĠPoirot``, ``▁Christie``), and
    is not at a sentence start (the token before it does not end in ``. ! ? : "`` or a newline): there the model
    recalls which entity comes next, the skill WHP's labels teach it to drop (they replace the target's names with
    generic ones, and the model learns to do so for other names too).
G2. The guard's name term is the KL to the base averaged over name positions only, so its scale does not depend on
    how many names a block holds; a batch without any name position adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .datadir import default_retain_text, is_hf_ref, resolve_data_ref
from .errors import RecipeError
from .losses import pad_batch


def retain_paths(recipe) -> list[str]:
    """The retain text files of a recipe (``finetune.retain_corpus``: a path or a list of paths)."""
    paths = recipe.finetune.retain_corpus or str(default_retain_text())
    return [paths] if isinstance(paths, str) else list(paths)


def retain_rows(recipe, tokenizer, limit_blocks: int = 256) -> list[dict]:
    """Blocks of generic text; with several files their blocks alternate, so every few steps see each kind of text
    (e.g. encyclopedia text and other fiction)."""
    from .corpus import load_blocks

    paths = retain_paths(recipe)
    paths = [resolve_data_ref(p, "finetune.retain_corpus") for p in paths]
    missing = [p for p in paths if not (is_hf_ref(p) or Path(p).is_file())]
    if missing:
        raise RecipeError(f"the retain term needs generic text: {', '.join(missing)} not found; "
                          "set finetune.retain_corpus to a text file (or a list of them)")
    per_file = [load_blocks(p, tokenizer, block_size=min(recipe.corpus.block_size, 256),
                            max_blocks=max(1, limit_blocks // len(paths))) for p in paths]
    return interleave([[{"input_ids": b.input_ids} for b in blocks] for blocks in per_file])


def interleave(lists: Sequence[Sequence]) -> list:
    """Items of several lists alternating (first of each, second of each, ...), then the rest of the longer ones."""
    out: list = []
    for k in range(max((len(x) for x in lists), default=0)):
        out += [x[k] for x in lists if k < len(x)]
    return out


WORD_START_MARKS = ("Ġ", "▁", " ")  # byte-level BPE (GPT-2, SmolLM2), SentencePiece (Llama, Gemma), plain
SENTENCE_ENDS = (".", "!", "?", ":", '"', "Ċ", "\n", "<0x0A>")  # Ċ: byte-level BPE's newline


class NamePositions:
    """Rule G1: which positions of a batch predict the start of a capitalised word that is not a sentence start."""

    def __init__(self, tokenizer):
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        tokens = [t if isinstance(t, str) else "" for t in tokens]
        self.name_start = torch.tensor([t[:1] in WORD_START_MARKS and t[1:2].isupper() for t in tokens])
        self.sentence_end = torch.tensor([t.endswith(SENTENCE_ENDS) for t in tokens])

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Bool (batch, length): True at position i when token i + 1 starts a name (G1); the last position and
        padding are never name positions."""
        ids = input_ids.clamp(0, self.name_start.numel() - 1).cpu()
        out = torch.zeros(ids.shape, dtype=torch.bool)
        out[:, :-1] = self.name_start[ids[:, 1:]] & ~self.sentence_end[ids[:, :-1]]
        out[:, :-1] &= attention_mask[:, 1:].bool().cpu()
        return out.to(input_ids.device)


class RetainBatches:
    """Retain blocks cycled deterministically by micro-step (so a resumed run sees the same ones). With
    ``name_positions`` (rule G1) every batch also holds ``name_mask``."""

    def __init__(self, rows: list[dict], batch_size: int, pad_id: int, name_positions: NamePositions | None = None):
        if not rows:
            raise RecipeError("the retain term needs generic text, and none was found")
        self.rows, self.batch_size, self.pad_id = rows, batch_size, pad_id
        self.name_positions = name_positions

    def __call__(self, micro_step: int, device) -> dict[str, torch.Tensor]:
        n = len(self.rows)
        rows = [self.rows[(micro_step * self.batch_size + k) % n] for k in range(self.batch_size)]
        batch = pad_batch(rows, self.pad_id, "labels" if "labels" in rows[0] else None)  # chat QA: rule L1
        if self.name_positions is not None:
            batch["name_mask"] = self.name_positions(batch["input_ids"], batch["attention_mask"])
        return {k: v.to(device) for k, v in batch.items()}
