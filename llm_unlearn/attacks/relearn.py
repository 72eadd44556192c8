"""Relearning: a few fine-tuning steps on target text bring forgotten knowledge back (Deeb & Roger 2024,
Hu et al. 2025).

* ATK-RL1: a fresh LoRA adapter on a copy of the model (the model given is never changed) is trained with plain
  causal-LM loss for ``max(steps)`` optimizer steps at a constant learning rate (default: the recipe's
  ``finetune.learning_rate``), one run per text source and model; the adapter is snapshotted after each of
  ``steps`` (20 and 100 by default), so the 20-step model is exactly a 20-step run. The adapter's initial weights
  come from ``seed`` alone, not from whatever ran before: every model relearned with one seed, the base control
  included, starts from the same adapter, and a run repeats bit for bit (like any transformers Trainer, it leaves
  the global RNG seeded).
* ATK-RL2: sources are (a) held-out target text that neither training nor checkpoint selection saw (the run's
  ``relearn`` blocks, never its ``validation`` blocks, which chose the checkpoint; or ``--heldout FILE``) and
  (b) any text the user names (``--relearn-text NAME=FILE``).
* ATK-RL3: the loss curve (every step) and the mean loss on the relearn text before and at each snapshot are
  recorded; the base model is relearned the same way as the control (``attack.relearn_control``).
* ATK-RL4: after relearning on a source, an item whose answer that source contains (ATK-S1's test, applied to the
  whole relearn text) is not scored: the text teaches that answer directly, which is learning, not recovery of what
  was forgotten (Deeb & Roger 2024 relearn on some facts and score others). The row records how many items were left
  out; base, unlearned and control are compared on the items kept.

The loop is ``transformers.Trainer`` + ``peft`` behind one function, :func:`relearn`, so it can move onto the
project's own Trainer subclass without touching the attack.
"""

from __future__ import annotations

import copy
import functools
import logging
import tempfile
from dataclasses import dataclass, field

import torch

from ..corpus import Document, make_blocks
from ..errors import EvalError
from ..losses import pad_batch
from .base import AttackContext, MissingInput, Row
from .scoring import without_copied

logger = logging.getLogger(__name__)

NAME = "relearn"


@dataclass
class RelearnResult:
    steps: list[int]
    snapshots: dict[int, dict] = field(repr=False)  # step -> LoRA state dict
    loss_curve: list[dict] = field(default_factory=list)  # [{"step", "loss"}]
    text_loss: dict[int, float] = field(default_factory=dict)  # step -> mean loss on the relearn text (0 = before)
    n_blocks: int = 0


def text_rows(texts: list[str], tokenizer, block_size: int) -> list[dict]:
    blocks = make_blocks([Document(f"text{i}", t) for i, t in enumerate(texts) if t.strip()], tokenizer, block_size)
    return [{"input_ids": b.input_ids} for b in blocks if len(b) >= 2]


def _collate(pad_id: int, labelled: bool = False):
    """Right-padded next-token batches (padding never trained on), as every training stage pads them; ``labelled``
    rows carry their own ``labels`` (e.g. answer tokens only), others are trained on every token."""
    return functools.partial(pad_batch, pad_id=pad_id, label_key="labels" if labelled else None)


@torch.no_grad()
def mean_loss(model, rows: list[dict], pad_id: int, batch_size: int = 4) -> float:
    """Token-weighted mean causal-LM loss of ``model`` on ``rows`` (on their ``labels`` where they have them)."""
    was_training = model.training
    model.eval()
    collate = _collate(pad_id, labelled=bool(rows) and "labels" in rows[0])
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for i in range(0, len(rows), batch_size):
            b = {k: v.to(dev) for k, v in collate(rows[i:i + batch_size]).items()}
            n = int((b["labels"][:, 1:] != -100).sum())
            total += float(model(**b).loss) * n
            count += n
    finally:
        model.train(was_training)
    return total / max(count, 1)


def relearn(model, tokenizer, texts: list[str] | None, steps: list[int], learning_rate: float, batch_size: int = 4,
            block_size: int = 256, lora_r: int = 16, seed: int = 0, progress: bool = True,
            rows: list[dict] | None = None):
    """ATK-RL1: LoRA-fine-tune a copy of ``model`` on ``texts``; returns (peft model, :class:`RelearnResult`).

    ``rows`` (instead of ``texts``): tokenized examples, ``input_ids`` with their own ``labels`` (e.g. a QA pair
    supervised on its answer only). Load a snapshot with ``peft.set_peft_model_state_dict(peft_model,
    result.snapshots[n])``."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

    from ..training import lora_targets

    steps = sorted(set(int(s) for s in steps))
    if not steps or steps[0] < 1:
        raise EvalError("relearn steps must be positive integers")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    labelled = rows is not None
    rows = list(rows) if labelled else text_rows(texts or [], tokenizer, block_size)
    if not rows:
        raise EvalError("the relearn text is empty (no block of at least 2 tokens)")
    work = copy.deepcopy(model)
    work.train()
    targets = lora_targets(work, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    set_seed(seed)  # the adapter's init from the seed (the Trainer below seeds the data order the same way)
    peft_model = get_peft_model(work, LoraConfig(task_type="CAUSAL_LM", r=lora_r, lora_alpha=2 * lora_r,
                                                 lora_dropout=0.0, target_modules=targets))
    result = RelearnResult(steps=steps, snapshots={}, n_blocks=len(rows))
    result.text_loss[0] = mean_loss(peft_model, rows, pad_id, batch_size)

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in steps:
                result.snapshots[state.global_step] = {k: v.detach().clone()
                                                       for k, v in get_peft_model_state_dict(peft_model).items()}

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                result.loss_curve.append({"step": state.global_step, "loss": float(logs["loss"])})

    with tempfile.TemporaryDirectory(prefix="relearn-") as tmp:
        args = TrainingArguments(output_dir=tmp, max_steps=steps[-1], per_device_train_batch_size=batch_size,
                                 learning_rate=learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                                 weight_decay=0.0, logging_steps=1, save_strategy="no", eval_strategy="no",
                                 report_to="none", seed=seed, data_seed=seed, disable_tqdm=not progress,
                                 remove_unused_columns=False, dataloader_num_workers=0,
                                 use_cpu=next(model.parameters()).device.type == "cpu")
        trainer = Trainer(model=peft_model, args=args, train_dataset=rows, data_collator=_collate(pad_id, labelled),
                          callbacks=[Snapshot()])
        trainer.remove_callback(PrinterCallback)  # the loss curve is kept in the result, not printed per step
        trainer.train()
    from peft import set_peft_model_state_dict

    for n in steps:
        set_peft_model_state_dict(peft_model, result.snapshots[n])
        result.text_loss[n] = mean_loss(peft_model, rows, pad_id, batch_size)
    peft_model.eval()
    return peft_model, result


def sources(ctx: AttackContext) -> dict[str, list[str]]:
    """ATK-RL2: text source name -> texts."""
    out = {}
    if ctx.heldout_texts:
        out["heldout"] = list(ctx.heldout_texts)
    for name, texts in ctx.relearn_texts.items():
        out[name] = list(texts)
    return out


def missing_input(ctx: AttackContext) -> str | None:
    if not sources(ctx):
        return ("no text to relearn from: give held-out target text (--run RUN_DIR or --heldout FILE) or "
                "--relearn-text NAME=FILE")
    return None


def run(ctx: AttackContext) -> list[Row]:
    from peft import set_peft_model_state_dict

    reason = missing_input(ctx)
    if reason:
        raise MissingInput(reason)
    cfg = ctx.config
    rows = []
    for source, texts in sources(ctx).items():
        joined = "\n".join(texts)
        scored = [without_copied(suite, lambda kind, pid, t=joined: t) for suite in ctx.suites]  # ATK-RL4
        for label, model, tok in ctx.models(control=cfg.relearn_control):
            peft_model, res = relearn(model, tok, texts, cfg.relearn_steps, ctx.relearn_lr,
                                      batch_size=cfg.relearn_batch_size, block_size=cfg.relearn_block_size,
                                      lora_r=cfg.relearn_lora_r, seed=cfg.seed, progress=ctx.scorer.progress)
            logger.info("relearn %s on %s (%d blocks): loss %s", label, source, res.n_blocks,
                        ", ".join(f"{k}: {v:.3f}" for k, v in sorted(res.text_loss.items())))
            try:
                for n in res.steps:
                    set_peft_model_state_dict(peft_model, res.snapshots[n])
                    for suite, left_out in scored:
                        m = ctx.scorer.suite(peft_model, tok, suite, label=f"relearn {source} {n} {label}")
                        m["left_out"] = left_out
                        rows.append(Row(NAME, f"{source}-{n}", suite.name, label, m,
                                        info={"source": source, "steps": n, "lr": ctx.relearn_lr,
                                              "blocks": res.n_blocks, "text_loss": res.text_loss,
                                              "loss_curve": res.loss_curve, "left_out": left_out}))
            finally:
                del peft_model
    return rows
