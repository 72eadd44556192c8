"""One padded batch of token sequences, for every forward pass in the package (training batches, label
generation, scoring, generation contexts)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_ids(seqs: Sequence[Sequence[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of a batch, both ``long`` and (batch x longest). Right padding by default
    (training, label generation: position i is token i of every row); ``left=True`` puts every row's last token in
    the last column (generation, scoring the continuation at the end), with :func:`positions` to keep the real
    tokens' position ids from shifting."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, cols] = torch.as_tensor(s, dtype=torch.long)
        att[i, cols] = 1
    return ids, att


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: 0 at each row's first real token (0 on the padding before it)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
