"""Batches and the token losses the methods are built from (torch only: importable without transformers)."""

from __future__ import annotations

import torch

from .batching import pad_ids


def pad_batch(rows: list[dict], pad_id: int, label_key: str | None, soft_keys: tuple[str, str] | None = None) -> dict:
    """Right-pad a list of examples; padding gets attention 0 and label -100 (never trained on).

    With ``soft_keys`` (ids column, logits column) the batch also holds ``soft_ids`` / ``soft_logits``
    (batch x length x k): the top-k generic logits aligned with the labels."""
    ids, att = pad_ids([r["input_ids"] for r in rows], pad_id)
    length = ids.size(1)
    lab, _ = pad_ids([r[label_key] if label_key else r["input_ids"] for r in rows], -100)
    batch = {"input_ids": ids, "attention_mask": att, "labels": lab}
    if soft_keys:
        k = len(rows[0][soft_keys[0]][0])
        s_ids = torch.zeros((len(rows), length, k), dtype=torch.long)
        s_val = torch.zeros((len(rows), length, k), dtype=torch.float32)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            s_ids[i, :n] = torch.as_tensor(r[soft_keys[0]])
            s_val[i, :n] = torch.as_tensor(r[soft_keys[1]], dtype=torch.float32)
        batch.update(soft_ids=s_ids, soft_logits=s_val)
    return batch


def soft_label_loss(logits: torch.Tensor, labels: torch.Tensor, soft_ids: torch.Tensor, soft_logits: torch.Tensor,
                    reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the model against softmax(top-k generic logits), at the positions the labels supervise.

    Shifted like causal-LM labels: position i predicts row i + 1. Tokens outside the top-k get target 0."""
    mask = labels[:, 1:] != -100
    logq = torch.log_softmax(logits[:, :-1].float()[mask], -1)
    p = torch.softmax(soft_logits[:, 1:][mask].float(), -1)
    nll = -(p * logq.gather(-1, soft_ids[:, 1:][mask])).sum(-1)
    return nll.mean() if reduction == "mean" else nll.sum()


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the supervised positions (causal shift: position i predicts i + 1)."""
    shift = logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(shift.reshape(-1, shift.size(-1)), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence summed next-token NLL and the number of supervised tokens of each sequence (batch,)."""
    shift, target = logits[:, :-1].float(), labels[:, 1:]
    per_token = torch.nn.functional.cross_entropy(shift.transpose(1, 2), target, ignore_index=-100, reduction="none")
    count = (target != -100).sum(-1)
    return per_token.sum(-1), count


def chat_answer_labels(input_ids: list[int], header: list[int], end: list[int]) -> list[int] | None:
    """Rule L1 (answer tokens only, as TOFU and open-unlearning train): the labels of a chat-formatted row: the
    tokens after each assistant header (``header``: the ids the chat template puts before an answer) up to and
    including the end-of-turn marker (``end``), -100 everywhere else (system prompt, question, template). None when
    the row holds no assistant header (plain text: every token is supervised, as before)."""
    n, h = len(input_ids), len(header)
    if not h or not end:
        return None
    labels = [-100] * n
    found = False
    i = 0
    while i <= n - h:
        if input_ids[i:i + h] != header:
            i += 1
            continue
        found = True
        j = i + h
        while j < n:
            labels[j] = input_ids[j]
            if input_ids[j:j + len(end)] == end:
                for k in range(j, min(n, j + len(end))):
                    labels[k] = input_ids[k]
                j += len(end)
                break
            j += 1
        i = j
    return labels if found else None
