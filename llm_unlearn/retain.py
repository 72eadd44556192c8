"""Retain text and the retain term: generic text that a method's retain term keeps the model good at (WHP's retain guard, GradDiff,
NPO, SimNPO, RMU). WikiText-2 valid from the data folder by default (:mod:`llm_unlearn.config.datadir`), or the files a
recipe lists in ``finetune.retain_corpus``.

"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .config.datadir import default_retain_text, is_hf_ref, resolve_data_ref
from .errors import RecipeError
from .losses import pad_batch, token_nll


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


class RetainBatches:
    """Retain blocks cycled deterministically by micro-step (so a resumed run sees the same ones)."""

    def __init__(self, rows: list[dict], batch_size: int, pad_id: int):
        if not rows:
            raise RecipeError("the retain term needs generic text, and none was found")
        self.rows, self.batch_size, self.pad_id = rows, batch_size, pad_id

    def __call__(self, micro_step: int, device) -> dict[str, torch.Tensor]:
        n = len(self.rows)
        rows = [self.rows[(micro_step * self.batch_size + k) % n] for k in range(self.batch_size)]
        batch = pad_batch(rows, self.pad_id, "labels" if "labels" in rows[0] else None)  # chat QA: rule L1
        return {k: v.to(device) for k, v in batch.items()}


# ---- the retain term and the reference model -----------------------------------------------------------------
def unwrap(model):
    """The model inside a DDP / accelerate wrapper."""
    return model.module if hasattr(model, "module") else model


def reference_forward(model, reference_model, forward=None, **inputs):
    """Outputs of the reference model, without gradients: ``reference_model`` when given (full fine-tuning keeps a
    frozen copy), else the trained model itself with its LoRA adapter off (no extra memory). ``forward(m, **inputs)``
    is what runs on that model (default: its forward pass; RMU reads one layer's output)."""
    run = forward or (lambda m, **kw: m(**kw))
    with torch.no_grad():
        if reference_model is not None:
            return run(reference_model, **inputs)
        inner = unwrap(model)
        with inner.disable_adapter():
            return run(inner, **inputs)


def retain_kl(logits: torch.Tensor, ref_logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) of the next-token distributions, mean over the attended positions."""
    mask = attention_mask.bool()
    cur = torch.log_softmax(logits.float()[mask], -1)
    ref = torch.log_softmax(ref_logits.float()[mask], -1)
    return torch.nn.functional.kl_div(cur, ref, log_target=True, reduction="batchmean")


class RetainTerm:
    """``weight * NLL`` or ``weight * KL(reference || model)`` on generic-text batches cycled by micro-step."""

    def __init__(self, batches, weight: float, kind: str = "nll", reference_model=None):
        self.batches, self.weight, self.kind, self.reference_model = batches, weight, kind, reference_model

    def __call__(self, model, device_like: torch.Tensor, micro_step: int) -> torch.Tensor:
        b = self.batches(micro_step, device_like.device)
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        if self.kind == "kl":
            ref = reference_forward(model, self.reference_model, **inputs).logits
            logits = model(**inputs).logits
            return self.weight * retain_kl(logits, ref, b["attention_mask"])
        return self.weight * token_nll(model(**inputs).logits, b["labels"])
