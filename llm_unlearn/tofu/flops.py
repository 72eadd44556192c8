"""A FLOPs estimate that works for any method without knowing its stages: count the tokens every forward pass of
the language model processes, and whether a backward pass follows.

Rule TOFU-F1 (the usual ``6 * N * D`` estimate, Kaplan et al. 2020, split by pass):
* a forward pass costs ``2 * N`` FLOPs per token (``N`` = parameters of the model, tied weights once; attention's
  ``O(length^2)`` term is left out, small at TOFU's ~100-token QA);
* a training forward (gradients enabled) adds a backward pass: ``2 * N`` per token for the gradients of the
  activations, plus ``2 * T`` for the gradients of the ``T`` weights being trained (those that require a gradient in
  the outermost model running, tied weights once).
So full fine-tuning is ``6 * N`` per token, LoRA about ``4 * N`` (its adapters are a fraction of a percent of N), a
fine-tune of the MLP weights only ``4 * N + 2 * T_mlp``, inference ``2 * N``.

Tokens are counted at the model's input embedding (one call per forward pass, padding included: it is computed),
through a global forward hook on ``torch.nn.Embedding`` modules whose size is the model's vocabulary, so the
count covers every model loaded inside the ``with`` block (reference models, generation steps, evaluation inside
a method); ``T`` is read from the outermost ``transformers`` model whose forward is running. Gradient
checkpointing's recomputed forward is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FlopCount:
    params: int
    inference_tokens: int = 0
    trained_tokens: int = 0  # forward with gradients
    trained_weight_tokens: int = 0  # sum over those tokens of the weights being trained (T)

    @property
    def flops(self) -> float:
        n = float(self.params)
        return (2 * n * (self.inference_tokens + self.trained_tokens) + 2 * n * self.trained_tokens
                + 2 * float(self.trained_weight_tokens))

    def to_dict(self) -> dict:
        return {"params": self.params, "inference_tokens": self.inference_tokens,
                "trained_tokens": self.trained_tokens, "trained_weight_tokens": self.trained_weight_tokens,
                "flops": self.flops}


def trained_size(model) -> int:
    """The weights that require a gradient, each tensor once."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.requires_grad and p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total


class count_flops:  # noqa: N801 - used as a context manager, like torch.no_grad
    """``with count_flops(params, vocab_size) as c: ...`` then ``c.flops`` (rule TOFU-F1)."""

    def __init__(self, params: int, vocab_size: int):
        self.count = FlopCount(params=int(params))
        self.vocab_size = int(vocab_size)
        self._handles: list = []
        self._running: list[int] = []  # trained weights of each transformers model whose forward is running

    def _enter_model(self, module, args):
        from transformers import PreTrainedModel

        if isinstance(module, PreTrainedModel):
            self._running.append(trained_size(module) if torch.is_grad_enabled() else 0)

    def _leave_model(self, module, args, output):
        from transformers import PreTrainedModel

        if isinstance(module, PreTrainedModel) and self._running:
            self._running.pop()

    def _hook(self, module, args):
        if not isinstance(module, torch.nn.Embedding) or module.num_embeddings < self.vocab_size or not args:
            return
        ids = args[0]
        if not torch.is_tensor(ids):
            return
        n = int(ids.numel())
        if torch.is_grad_enabled():
            self.count.trained_tokens += n
            trained = self._running[0] if self._running else trained_size(module)
            self.count.trained_weight_tokens += n * trained
        else:
            self.count.inference_tokens += n

    def __enter__(self) -> FlopCount:
        hooks = torch.nn.modules.module
        self._handles = [hooks.register_module_forward_pre_hook(self._enter_model),
                         hooks.register_module_forward_pre_hook(self._hook),
                         hooks.register_module_forward_hook(self._leave_model, always_call=True)]
        return self.count

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False


def model_size(model) -> int:
    """Parameters, each tensor once (tied input/output embeddings count once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total
