"""Robust unlearning steps that any method's training can use (the training engine calls them).

Sharpness-aware unlearning (Fan et al. 2025, "Towards LLM Unlearning Resilient to Relearning Attacks";
``finetune.sam_rho``), rules SAM1-SAM3 in :func:`sharpness_aware_step`, with
the weight perturbation (:func:`perturb_along_gradient`, :func:`undo_perturbation`).

Disruption masking (Sondej et al. 2025, "Robust LLM Unlearning with MUDMAN"; ``finetune.disruption_mask``):

* DM1: the retain term's gradient is averaged over steps, weight by weight (an exponential moving average with
  momentum :data:`DM_MOMENTUM`, from zero, as the authors' ``retain_acc``).
* DM2: the unlearning (main) term's gradient is kept only where its sign equals the averaged retain gradient's: a
  step down the unlearning loss is then, to first order and weight by weight, also a step down the retain loss
  (the update never disrupts what the retain text needs). The retain term's own gradient is added unmasked, as the
  authors' separate retain update.
* DM3: no global gradient normalisation. The authors' SGD rescales the unlearning gradient to a fixed norm; the
  engine's AdamW already divides every weight's step by that weight's own gradient scale, which a global factor
  does not change.
* DM4: a method without a retain term cannot be masked (there is nothing to agree with): a typed error at the first
  step says to set one.

Meta-unlearning, MUDMAN's meta-learning part (``finetune.meta_relearn_step``, :class:`MetaRelearner`): the
unlearning gradient is taken where a relearning attacker would have moved the weights.

* MU1 (the relearner): a copy of the trained weights, forked from them every :data:`META_FORK_EVERY` micro-batches
  (the authors fork every 32 of their steps). At every micro-batch it takes one step of normalised gradient descent,
  of length ``meta_relearn_step`` (the norm over all trained weights), on the batch's own text: the language-model
  loss of its ``input_ids`` (what an attack relearning that text lowers), whatever labels the method trains on.
  Its weights are not checkpointed: a resumed stage forks it again at the resumed weights.
* MU2 (the main gradient): the method's main loss is differentiated at the relearner's weights (before its step
  of this micro-batch, as the authors reuse that forward) and the gradient goes to the trained weights; the
  retain term, if any, is taken at the trained weights themselves.
* MU3: the trained weights are back bit for bit after each micro-batch, before the optimizer moves them; one extra
  forward and backward per micro-batch (about 2x a step). Not with ``sam_rho`` or ``cir_components`` (each rebuilds
  the main gradient its own way): a typed error says so.

Collapse of irrelevant representations (Sondej & Yang 2025, "CIR Ensures Robust and Non-Disruptive LLM
Unlearning"; ``finetune.cir_components``, :class:`CollapseIrrelevant`): the unlearning update is built only from what
is specific to each token, not from the representations all the training text shares.

* CIR1: for every trained linear map, two bases: of its inputs (the activations) the mean and the top k-1 principal
  components (k = ``cir_components``), of the gradients at its outputs the mean and the top round(1.5 k) - 1 (the
  reference's 24 activation and 36 gradient directions). Taken once, before the first step, over the training rows
  at the starting weights by a forward and backward of the main loss that moves no weight (the reference's first
  epoch, which makes no update; the reference refreshes them every epoch, here they stay; a resumed stage takes
  them again at its resumed weights). Each row's first token (the attention sink, whose activations are outliers;
  the reference leaves it out too) and padding are left out of these statistics, and at most
  :data:`CIR_TOKENS_PER_BATCH` evenly spaced tokens of each batch go in (the outer products cost per token).
* CIR2: at every step every token's input and output gradient lose their part in those spans (an exact orthogonal
  projection; the reference subtracts the directions one after another), and the main term's gradient is rebuilt
  from them: ``sum_t g'_t x'_t^T`` for a trained linear weight, and the chain rule of the same through ``B A`` for a
  LoRA pair. With empty bases the rebuilt gradient is autograd's own (the oracle test).
* CIR3: only the main (unlearning) term is collapsed: the retain term's gradient is added as computed. Weights
  outside linear maps (norms, embeddings) and the output head keep their plain gradient.
* CIR4: one process only, no gradient checkpointing (its second forward would be captured twice), not with
  ``sam_rho``: a typed error says so.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings

import torch

from .errors import RecipeError
from .losses import token_nll

logger = logging.getLogger(__name__)

DM_MOMENTUM = 0.9
CIR_GRAD_RATIO = 1.5  # CIR1: gradient directions per activation direction (the reference's 36 / 24)
CIR_TOKENS_PER_BATCH = 512  # CIR1: tokens of each batch in the statistics, evenly spaced (the cost is per token)
META_FORK_EVERY = 16  # MU1: micro-batches between forks of the simulated relearner from the trained weights


def _norm(grads: list) -> float:
    """The global L2 norm of gradients (None entries left out)."""
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None) or torch.tensor(0.0)))


def perturb_along_gradient(params: list, rho: float) -> list:
    """SAM2: move each parameter by ``rho * grad / ||grad||`` (the norm over all of them); returns what
    :func:`undo_perturbation` needs (each moved parameter's weights before the move; None where a parameter has no
    gradient). With a zero gradient nothing moves."""
    grads = [p.grad for p in params]
    norm = _norm(grads)
    saved = []
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            if g is None or norm == 0.0:
                saved.append(None)
                continue
            saved.append(p.detach().clone())
            p.add_((g.float() * (rho / norm)).to(p.dtype))
    return saved


def undo_perturbation(params: list, saved: list) -> None:
    """SAM3: the parameters back, bit for bit, where :func:`perturb_along_gradient` found them."""
    with torch.no_grad():
        for p, before in zip(params, saved, strict=True):
            if before is not None:
                p.copy_(before)


def own_text_loss(model, batch) -> torch.Tensor:
    """MU1: the language-model loss of a batch's own ``input_ids`` (padding left out), whatever its labels."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    labels = ids if mask is None else ids.masked_fill(mask == 0, -100)
    return token_nll(model(input_ids=ids, attention_mask=mask).logits, labels)


class MetaRelearner:
    """MU1 and MU3 over the trained weights ``params``: :meth:`enter` puts the relearner's weights in their place
    (forking it first when due) and returns the trained ones, :meth:`relearn` moves the relearner, :meth:`leave`
    puts the trained weights back."""

    def __init__(self, params: list, step: float):
        self.params, self.step = params, step
        self.weights: list[torch.Tensor] | None = None
        self.calls = 0

    @torch.no_grad()
    def enter(self) -> list[torch.Tensor]:
        trained = [p.detach().clone() for p in self.params]
        if self.weights is None or self.calls % META_FORK_EVERY == 0:
            self.weights = [t.clone() for t in trained]
        for p, w in zip(self.params, self.weights, strict=True):
            p.copy_(w)
        self.calls += 1
        return trained

    @torch.no_grad()
    def relearn(self, grads: list) -> None:
        """MU1: one normalised descent step of length ``step`` along the relearning gradients ``grads``."""
        norm = _norm(grads)
        if norm == 0.0:
            return
        for w, g in zip(self.weights, grads, strict=True):
            if g is not None:
                w.sub_((g.float() * (self.step / norm)).to(w.dtype))

    @torch.no_grad()
    def leave(self, trained: list[torch.Tensor]) -> None:
        for p, t in zip(self.params, trained, strict=True):
            p.copy_(t)


def set_aside(params: list) -> list:
    """The parameters' gradients so far, handed back and cleared on the parameters (so a pass that follows writes
    its own gradient only)."""
    held = [p.grad for p in params]
    for p in params:
        p.grad = None
    return held


def put_back(params: list, held: list) -> None:
    """The inverse of :func:`set_aside`: the held gradients become the parameters' gradients again."""
    for p, grad in zip(params, held, strict=True):
        p.grad = grad


def sharpness_aware_step(trainer, model, inputs, plain_step):
    """Rules SAM1-SAM3 (sharpness-aware unlearning, Fan et al. 2025) for the trainer's micro-batch: the main loss's
    gradient is taken at the worst nearby weights. SAM1: a first backward at the weights gives g; SAM2: the trainable
    weights move by ``rho * g / ||g||`` (the steepest ascent of radius rho) and the main term's backward
    (``plain_step``, the Trainer's own step) runs there; SAM3: the weights move back, and the second term (the retain
    term) is taken at the weights themselves. Gradients of earlier micro-batches are kept aside during SAM1, so
    accumulation adds the perturbed gradients only."""
    params = [p for p in model.parameters() if p.requires_grad]
    held = set_aside(params)
    model.train()
    with trainer.compute_loss_context_manager():
        first = trainer.objective.loss(model, inputs)
    trainer.accelerator.backward(first)
    shifts = perturb_along_gradient(params, trainer.sam_rho)
    put_back(params, held)
    loss = plain_step()
    undo_perturbation(params, shifts)
    return loss


def meta_unlearning_step(trainer, model, inputs, plain_step):
    """Rules MU1-MU3 for the trainer's micro-batch: the relearner's own-text gradient, then the main loss's gradient
    at the relearner's weights (``plain_step``, the Trainer's own step), the relearner one step further, the trained
    weights back."""
    meta = trainer.meta
    held = set_aside(meta.params)
    trained = meta.enter()
    model.train()
    with trainer.compute_loss_context_manager():
        relearn = own_text_loss(model, inputs)
    trainer.accelerator.backward(relearn)
    relearn_grads = [p.grad for p in meta.params]
    put_back(meta.params, held)
    loss = plain_step()
    meta.relearn(relearn_grads)
    meta.leave(trained)
    return loss


class DisruptionMask:
    """DM1-DM2 across the steps of one training stage (the averaged retain gradient is its state)."""

    def __init__(self, momentum: float = DM_MOMENTUM):
        self.momentum = momentum
        self.retain_avg: list[torch.Tensor | None] | None = None
        self.kept: list[float] = []  # per micro-batch: share of the main gradient's nonzero entries kept

    @torch.no_grad()
    def combine(self, main: list, retain: list) -> list:
        """The gradients to step with: ``mask * main + retain`` per parameter (None where both are None); updates
        the average with ``retain`` first (DM1), then masks (DM2)."""
        if self.retain_avg is None:
            self.retain_avg = [None] * len(retain)
        out, kept, total = [], 0, 0
        for i, (g, r) in enumerate(zip(main, retain, strict=True)):
            if r is not None:
                avg = self.retain_avg[i]
                self.retain_avg[i] = (1 - self.momentum) * r.float() if avg is None else (
                    avg.mul_(self.momentum).add_(r.float(), alpha=1 - self.momentum))
            avg = self.retain_avg[i]
            if g is not None:
                keep = (torch.sign(g.float()) == torch.sign(avg)) if avg is not None else torch.zeros_like(g, dtype=torch.bool)
                nonzero = g != 0
                kept += int((keep & nonzero).sum())
                total += int(nonzero.sum())
                g = g * keep.to(g.dtype)
            if g is None:
                out.append(r)
            elif r is None:
                out.append(g)
            else:
                out.append(g + r)
        self.kept.append(kept / total if total else 0.0)
        return out

    @staticmethod
    def missing_retain(second) -> None:
        """DM4."""
        if second is None:
            raise RecipeError("finetune.disruption_mask needs a retain term to agree with: set finetune.retain_weight "
                              "> 0 (WHP's guard on generic text) or keep the method's retain_weight above 0; or turn "
                              "the mask off")


def collapse_basis(total: torch.Tensor, outer: torch.Tensor, count: int, k: int) -> torch.Tensor:
    """CIR1: orthonormal rows (at most ``k``) spanning the mean and the top ``k - 1`` principal components of
    vectors whose sum is ``total``, sum of outer products ``outer`` and number ``count``."""
    d = total.shape[0]
    if k <= 0 or count == 0:
        return torch.zeros(0, d)
    mean = total.double() / count
    rows = [mean]
    if k > 1:
        cov = outer.double() / count - torch.outer(mean, mean)
        _, vecs = torch.linalg.eigh((cov + cov.T) / 2)  # ascending eigenvalues
        rows.extend(vecs[:, -(min(k, d) - 1):].flip(-1).T)
    q, r = torch.linalg.qr(torch.stack(rows).T)
    keep = r.diagonal().abs() > 1e-9 * max(1.0, float(r.diagonal().abs().max()))
    return q[:, keep].T.float()


def collapse(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """CIR2: ``v`` (rows) without its part in the span of ``basis``'s orthonormal rows."""
    if basis.shape[0] == 0:
        return v
    return v - (v @ basis.T) @ basis


class _Map:
    """One trained linear map: the module whose input is the activation (a Linear, or a LoRA pair's A) and the
    module at whose output the gradient is taken (the same Linear, or B)."""

    def __init__(self, name: str, inp, out, lora: bool):
        self.name, self.inp, self.out, self.lora = name, inp, out, lora
        self.xs: list[torch.Tensor] = []
        self.gs: list[torch.Tensor] = []
        self.stats: dict[str, list] = {}
        self.bases: dict[str, torch.Tensor] = {}


def linear_maps(model) -> list[_Map]:
    """CIR3: the LoRA pairs of the active adapters, and the trained ``nn.Linear`` weights outside them, except the
    output head (its gradient is vocabulary-wide, and a tied head shares its weight with the embedding)."""
    from peft.tuners.lora import LoraLayer

    head = model.get_output_embeddings()
    maps, inside = [], set()
    for name, mod in model.named_modules():
        if isinstance(mod, LoraLayer):
            for adapter in mod.active_adapters:
                if adapter in mod.lora_A and mod.lora_A[adapter].weight.requires_grad:
                    a, b = mod.lora_A[adapter], mod.lora_B[adapter]
                    maps.append(_Map(name, a, b, True))
                    inside.update((id(a), id(b)))
    for name, mod in model.named_modules():
        if (isinstance(mod, torch.nn.Linear) and id(mod) not in inside and mod.weight.requires_grad
                and mod is not head and (head is None or mod.weight is not head.weight)):
            maps.append(_Map(name, mod, mod, False))
    return maps


class CollapseIrrelevant:
    """CIR1-CIR3 for one training stage: hooks on every trained linear map, the bases (its state) and the rebuilt
    main gradient."""

    def __init__(self, model, components: int):
        self.k = {"x": components, "g": round(CIR_GRAD_RATIO * components)}
        self.maps = linear_maps(model)
        if not self.maps:
            raise RecipeError("finetune.cir_components: the model has no trained linear weight to collapse (check "
                              "finetune.target_modules)")
        self.capturing = False
        self.ready = False
        self.directions: dict[str, int] = {}
        self.collect_seconds = 0.0
        # the hooks read only the output gradient, which torch gives also where the layer's input needs none (the
        # first trained layer when everything below it is frozen); its warning about that case does not apply
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with "
                                "respect to module outputs")
        for m in self.maps:
            m.inp.register_forward_pre_hook(functools.partial(self._keep_input, m))
            m.out.register_full_backward_pre_hook(functools.partial(self._keep_grad, m))

    def _keep_input(self, m: _Map, module, args) -> None:
        if self.capturing and torch.is_grad_enabled():
            m.xs.append(args[0].detach())

    def _keep_grad(self, m: _Map, module, grad_output) -> None:
        if self.capturing:
            m.gs.append(grad_output[0].detach())

    def _pairs(self, m: _Map):
        if len(m.xs) != len(m.gs):
            raise RuntimeError(f"CIR: {m.name} saw {len(m.xs)} inputs and {len(m.gs)} output gradients in one step")
        pairs = list(zip(m.xs, reversed(m.gs), strict=True))  # backward meets the calls in reverse order
        m.xs, m.gs = [], []
        return pairs

    @torch.no_grad()
    def _add_stats(self, m: _Map, keep: torch.Tensor | None) -> None:
        for x, g in self._pairs(m):
            for key, v in (("x", x), ("g", g)):
                if keep is not None and v.shape[:-1] == keep.shape:
                    v = v[keep]
                v = v.reshape(-1, v.shape[-1]).float()
                if v.shape[0] > CIR_TOKENS_PER_BATCH:
                    v = v[torch.linspace(0, v.shape[0] - 1, CIR_TOKENS_PER_BATCH).round().long()]
                st = m.stats.setdefault(key, [torch.zeros(v.shape[1]), torch.zeros(v.shape[1], v.shape[1]), 0])
                st[0] += v.sum(0)
                st[1] += v.T @ v
                st[2] += v.shape[0]

    def collect_for(self, trainer, model) -> None:
        """CIR1 in a trainer: the bases over its training rows, in batches of its batch size, with its loss."""
        if trainer.args.world_size > 1:
            raise RecipeError("finetune.cir_components runs on one process (its rebuilt gradients are not "
                              "all-reduced): launch without accelerate's multi-process config, or set it to 0")
        from tqdm.auto import tqdm

        rows, bs = trainer.train_dataset, trainer.args.per_device_train_batch_size
        starts = tqdm(range(0, len(rows), bs), desc="CIR bases", unit="batch", disable=trainer.args.disable_tqdm)
        batches = (trainer._prepare_inputs(trainer.data_collator([rows[j] for j in range(i, min(i + bs, len(rows)))]))
                   for i in starts)

        def loss_of(batch):
            with trainer.compute_loss_context_manager():
                return trainer.objective.loss(model, batch)

        self.collect(model, batches, loss_of)

    def collect(self, model, batches, loss_of) -> None:
        """CIR1: the bases, from one forward and backward of ``loss_of(batch)`` per batch (no weight moves; the
        gradients are cleared after each)."""
        start, n = time.perf_counter(), 0
        for batch in batches:
            mask = batch.get("attention_mask")
            keep = (mask.bool() if mask is not None else torch.ones_like(batch["input_ids"], dtype=torch.bool)).clone()
            keep[:, 0] = False
            self.capturing = True
            loss_of(batch).backward()
            self.capturing = False
            for m in self.maps:
                self._add_stats(m, keep)
            model.zero_grad(set_to_none=True)
            n += batch["input_ids"].shape[0]
        for m in self.maps:
            for key in ("x", "g"):
                if key in m.stats:
                    total, outer, count = m.stats.pop(key)
                    m.bases[key] = collapse_basis(total, outer, count, self.k[key])
                    self.directions[key] = max(self.directions.get(key, 0), m.bases[key].shape[0])
        self.collect_seconds = time.perf_counter() - start
        self.ready = True
        logger.info("CIR: %d activation and %d gradient directions per map over %d rows, %d maps, %.0f s",
                    self.directions.get("x", 0), self.directions.get("g", 0), n, len(self.maps),
                    self.collect_seconds)

    @torch.no_grad()
    def rebuild(self) -> None:
        """CIR2: every map's main-term gradient from its collapsed inputs and output gradients (replaces what
        autograd put there for this micro-batch)."""
        for m in self.maps:
            pairs = self._pairs(m)
            if not pairs:
                continue
            d_in = d_out = None
            for x, g in pairs:
                # a map with no basis (nothing to collapse) gets an empty one, made once
                x = collapse(x.reshape(-1, x.shape[-1]).float(), m.bases.setdefault("x", torch.zeros(0, x.shape[-1])))
                g = collapse(g.reshape(-1, g.shape[-1]).float(), m.bases.setdefault("g", torch.zeros(0, g.shape[-1])))
                if m.lora:  # h = B (A x): dB = sum g (A x)^T, dA = sum (B^T g) x^T
                    a, b = (g.T @ (x @ m.inp.weight.float().T)), ((g @ m.out.weight.float()).T @ x)
                    d_out, d_in = (a, b) if d_out is None else (d_out + a, d_in + b)
                else:
                    w = g.T @ x
                    d_in = w if d_in is None else d_in + w
                    if m.inp.bias is not None and m.inp.bias.requires_grad:
                        d_out = g.sum(0) if d_out is None else d_out + g.sum(0)
            m.inp.weight.grad = d_in.to(m.inp.weight.dtype)
            if m.lora:
                m.out.weight.grad = d_out.to(m.out.weight.dtype)
            elif d_out is not None:
                m.inp.bias.grad = d_out.to(m.inp.bias.dtype)
