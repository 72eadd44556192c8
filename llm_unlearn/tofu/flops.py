"""A FLOPs estimate that works for any method without knowing its stages: count the tokens every forward pass of
the language model processes, and whether a backward pass follows.

Rule TOFU-F1 (the usual ``6 * N * D`` estimate, Kaplan et al. 2020, split by pass):
* a forward pass costs ``2 * N`` FLOPs per token (``N`` = parameters of the model, tied weights once; attention's
  ``O(length^2)`` term is left out, small at TOFU's ~100-token QA);
* a training forward (gradients enabled) adds a backward pass: ``4 * N`` per token when the embedding weights
  are trained (full fine-tuning: gradients of activations and of weights), ``2 * N`` when they are frozen (LoRA /
  adapters: gradients of activations only; the adapters' own weight gradients are negligible).
So full fine-tuning is ``6 * N`` per token, LoRA ``4 * N``, inference ``2 * N``.

Tokens are counted at the model's input embedding (one call per forward pass, padding included: it is computed),
through a global forward hook on ``torch.nn.Embedding`` modules whose size is the model's vocabulary, so the
count covers every model loaded inside the ``with`` block (reference models, generation steps, evaluation inside
a method). Gradient checkpointing's recomputed forward is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FlopCount:
    params: int
    inference_tokens: int = 0
    trained_full_tokens: int = 0  # forward with gradients, embeddings trainable
    trained_adapter_tokens: int = 0  # forward with gradients, embeddings frozen

    @property
    def flops(self) -> float:
        n = float(self.params)
        return (2 * n * (self.inference_tokens + self.trained_full_tokens + self.trained_adapter_tokens)
                + 4 * n * self.trained_full_tokens + 2 * n * self.trained_adapter_tokens)

    def to_dict(self) -> dict:
        return {"params": self.params, "inference_tokens": self.inference_tokens,
                "trained_full_tokens": self.trained_full_tokens, "trained_adapter_tokens": self.trained_adapter_tokens,
                "flops": self.flops}


class count_flops:  # noqa: N801 - used as a context manager, like torch.no_grad
    """``with count_flops(params, vocab_size) as c: ...`` then ``c.flops`` (rule TOFU-F1)."""

    def __init__(self, params: int, vocab_size: int):
        self.count = FlopCount(params=int(params))
        self.vocab_size = int(vocab_size)
        self._handle = None

    def _hook(self, module, args):
        if not isinstance(module, torch.nn.Embedding) or module.num_embeddings < self.vocab_size or not args:
            return
        ids = args[0]
        if not torch.is_tensor(ids):
            return
        n = int(ids.numel())
        if torch.is_grad_enabled():
            if module.weight.requires_grad:
                self.count.trained_full_tokens += n
            else:
                self.count.trained_adapter_tokens += n
        else:
            self.count.inference_tokens += n

    def __enter__(self) -> FlopCount:
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._hook)
        return self.count

    def __exit__(self, *exc):
        if self._handle is not None:
            self._handle.remove()
        return False


def model_size(model) -> int:
    """Parameters, each tensor once (tied input/output embeddings count once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total
