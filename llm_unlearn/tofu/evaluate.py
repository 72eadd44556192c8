"""Score a model on TOFU's evaluation sets: per-item losses and greedy answers, then TOFU's metrics.

Rule TOFU-E1: an answer's loss is its length-normalised NLL given the prompt (chat format, TOFU-C1/C2), computed
with teacher forcing in batches; the greedy answer is decoded from the prompt (no sampling) up to
``max_new_tokens`` or the end of the turn, and scored by ROUGE-L recall against the reference answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch

from ..batching import pad_ids
from ..chat_format import encode_qa, prompt_text
from ..errors import RecipeError
from .data import QAItem
from .metrics import rouge_l_recall, summarize

logger = logging.getLogger(__name__)


@dataclass
class TofuEvalConfig:
    batch_size: int = 16
    max_new_tokens: int = 128  # TOFU generates up to 200 tokens in all; its answers are < 80 tokens
    mixed_precision: str = "no"  # no | bf16: autocast the forward passes (bf16 speeds up recent CPUs)
    max_length: int = 512

    def __post_init__(self):
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise RecipeError("eval.batch_size and eval.max_new_tokens must be >= 1")
        if self.mixed_precision not in ("no", "bf16"):
            raise RecipeError(f"eval.mixed_precision must be no or bf16 (got {self.mixed_precision!r})")


def _autocast(model, cfg: TofuEvalConfig):
    device = next(model.parameters()).device
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16")


@torch.inference_mode()
def answer_losses(model, tokenizer, pairs: list[tuple[str, str]], cfg: TofuEvalConfig, progress=None) -> list[float]:
    """Length-normalised NLL of each (question, answer) pair's answer tokens (TOFU-E1)."""
    device = next(model.parameters()).device
    rows = [encode_qa(tokenizer, q, a, cfg.max_length) for q, a in pairs]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # similar lengths: little padding
    out = [0.0] * len(rows)
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        ids, att = pad_ids([rows[i]["input_ids"] for i in idx], tokenizer.pad_token_id)
        lab, _ = pad_ids([rows[i]["labels"] for i in idx], -100)
        ids, att, lab = ids.to(device), att.to(device), lab.to(device)
        with _autocast(model, cfg):
            logits = model(input_ids=ids, attention_mask=att).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        target = lab[:, 1:]
        mask = target != -100
        nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        per_item = nll.sum(-1) / mask.sum(-1).clamp(min=1)
        for j, i in enumerate(idx):
            out[i] = float(per_item[j])
        if progress is not None:
            progress.update(len(idx))
    return out


@torch.inference_mode()
def greedy_answers(model, tokenizer, questions: list[str], cfg: TofuEvalConfig, progress=None) -> list[str]:
    """Greedy answers to the questions, in the chat format, left-padded batches (TOFU-E1)."""
    device = next(model.parameters()).device
    prompts = [prompt_text(tokenizer, q) for q in questions]
    add_special = not getattr(tokenizer, "chat_template", None)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    stop = [tokenizer.eos_token_id]
    for marker in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(marker) if marker in tokenizer.get_vocab() else None
        if tid is not None:
            stop.append(tid)
    out: list[str] = []
    try:
        for start in range(0, len(prompts), cfg.batch_size):
            enc = tokenizer(prompts[start:start + cfg.batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=add_special).to(device)
            with _autocast(model, cfg):
                gen = model.generate(**enc, do_sample=False, max_new_tokens=cfg.max_new_tokens, eos_token_id=stop,
                                     pad_token_id=tokenizer.pad_token_id, top_p=None, top_k=None, temperature=None)
            new = gen[:, enc["input_ids"].shape[1]:]
            out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
            if progress is not None:
                progress.update(len(new))
    finally:
        tokenizer.padding_side = side
    return out


def score_split(model, tokenizer, split: str, items: list[QAItem], cfg: TofuEvalConfig, progress=None) -> list[dict]:
    """Per-item records: answer / paraphrased / perturbed losses, greedy answer and its ROUGE-L recall."""
    if any(not it.perturbed_answers for it in items):
        raise RecipeError(f"TOFU split {split}: every item needs perturbed answers")
    n_pert = {len(it.perturbed_answers) for it in items}
    if len(n_pert) != 1:
        raise RecipeError(f"TOFU split {split}: items have different numbers of perturbed answers {sorted(n_pert)}")
    pairs = [(it.question, it.answer) for it in items]
    pairs += [(it.question, it.paraphrased_answer) for it in items if it.paraphrased_answer]
    pairs += [(it.question, p) for it in items for p in it.perturbed_answers]
    losses = answer_losses(model, tokenizer, pairs, cfg, progress)
    n, k = len(items), n_pert.pop()
    answer = losses[:n]
    has_para = all(it.paraphrased_answer for it in items)
    para = losses[n:2 * n] if has_para else answer  # TOFU-M4: the answer stands in for a missing paraphrase
    pert_flat = losses[2 * n:] if has_para else losses[n:]
    generated = greedy_answers(model, tokenizer, [it.question for it in items], cfg, progress)
    return [{"question": it.question, "answer_loss": answer[i], "paraphrased_loss": para[i],
             "perturbed_losses": pert_flat[i * k:(i + 1) * k], "generated": generated[i],
             "rougeL_recall": rouge_l_recall(it.answer, generated[i])} for i, it in enumerate(items)]


def evaluate_model(model, tokenizer, eval_sets: dict[str, list[QAItem]], cfg: TofuEvalConfig,
                   retain_forget_ratios: Optional[list[float]] = None, progress: bool = True, desc: str = "eval") -> dict:
    """TOFU's metrics of one model on the given splits; ``per_item`` keeps every item's record."""
    from tqdm.auto import tqdm

    model.eval()
    total = sum(len(v) * (3 + max(len(it.perturbed_answers) for it in v)) for v in eval_sets.values() if v)
    bar = tqdm(total=total, desc=f"TOFU eval {desc}", disable=not progress, unit="seq")
    try:
        per_item = {split: score_split(model, tokenizer, split, items, cfg, bar) for split, items in eval_sets.items()}
    finally:
        bar.close()
    result = summarize(per_item, retain_forget_ratios)
    result["per_item"] = per_item
    return result
