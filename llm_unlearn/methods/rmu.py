"""Representation Misdirection for Unlearning, RMU (Li et al. 2024, "The WMDP Benchmark").

At one decoder layer l, the activations of the forget text are pushed toward a fixed random direction scaled by c,
and the activations of generic (retain) text are kept where the base model puts them:

    L = mean_seq mean_tok mean_dim (h_l(x_forget) - c * u)^2
        + retain_weight * mean_seq mean_tok mean_dim (h_l(x_retain) - h_l^base(x_retain))^2

(u: a random unit vector, drawn once from U[0, 1)^d and normalised, seeded by ``seed``; per sequence the squared
error is averaged over its supervised tokens, then over the batch, as the reference's ``compute_activation_loss``).
The base activations come from the model with its LoRA adapter off (or a frozen copy when fine-tuning every weight).

Defaults and their sources (rules RMU1-RMU4):

* RMU1, the layer: h_l is the output of ``model.layers[l]`` (0-based), read with a forward hook, as the reference
  (WMDP ``rmu/unlearn.py``: ``module_str = "{model_name}.model.layers[{layer_id}]"``, ``layer_id = 7`` for
  Zephyr-7B; open-unlearning ``configs/trainer/RMU.yaml``: ``module_regex: model\\.layers\\.7``). That is Hugging
  Face's ``hidden_states[l + 1]``. Default l = round(7/32 * depth), the reference's relative depth (7 of 32).
* RMU2, what trains: only the MLP of layers l-2, l-1, l (WMDP ``layer_ids = 5,6,7`` with ``param_ids = 6``, the
  ``mlp.down_proj`` weight of each; open-unlearning's comment names the same regex). Here: the LoRA adapters of the
  MLP projections that ``finetune.target_modules`` puts on those three layers (every other adapter is frozen);
  with ``finetune.full_finetune`` the MLP weights of those layers. A recipe whose targets miss the MLP is refused.
* RMU3, the steering coefficient: the reference sets c per model by hand (WMDP README: c = 6.5 with retain weight
  1200 for Zephyr-7B at layer 7; its code's default 20; open-unlearning's TOFU config 2 for Llama at layer 7),
  a number that only means something against that model's activation norm at that layer. Rule here: c =
  ``steering_ratio`` x the base model's mean activation norm ||h_l|| on the first forget batch (measured once, with
  the adapter off), ``steering_ratio`` 1 by default: the target is as long as the activations it replaces, so it is
  never close to the zero vector (a fixed c = 2.4 against norms near 125 was). ``steering_coeff`` sets c directly.
* RMU4, the retain weight: 1200, the WMDP README's value for Zephyr-7B (its code's default is 100; open-unlearning's
  TOFU config uses 1).
"""

from __future__ import annotations

import functools

import torch

from ..config.methods import RMUConfig
from ..retain import reference_forward, unwrap
from .base import ForgetObjective, Method, baseline_stages

PAPER_LAYER_FRACTION = 7 / 32
PAPER_COEFF, PAPER_WIDTH = 6.5, 4096  # the WMDP README's Zephyr-7B value, kept for reference
TRAINED_LAYERS_BELOW = 2  # RMU2: layers l-2..l


def default_layer(n_layers: int) -> int:
    """RMU1: the reference's relative depth, as a 0-based index into ``model.layers``."""
    return min(max(0, round(PAPER_LAYER_FRACTION * n_layers)), n_layers - 1)


def random_direction(hidden_size: int, seed: int) -> torch.Tensor:
    """A random unit vector, U[0, 1)^d normalised (the reference's code), seeded."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden_size, generator=gen)
    return u / u.norm()


def _mse_per_sequence(diff: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over hidden dims, mean over each sequence's masked tokens, mean over sequences."""
    m = mask.to(diff.dtype)
    per_tok = (diff.float() ** 2).mean(-1)
    per_seq = (per_tok * m).sum(-1) / m.sum(-1).clamp(min=1)
    return per_seq[m.sum(-1) > 0].mean() if bool((m.sum(-1) > 0).any()) else per_seq.sum() * 0


def rmu_forget_loss(hidden: torch.Tensor, control: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared distance of the masked activations to the control vector ``c * u`` (per sequence, then batch)."""
    return _mse_per_sequence(hidden.float() - control.to(hidden.device), mask.bool())


def rmu_retain_loss(hidden: torch.Tensor, base_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared distance of the masked activations to the base model's (per sequence, then batch)."""
    return _mse_per_sequence(hidden.float() - base_hidden.float(), mask.bool())


def decoder_layers(model):
    """The ``layers`` ModuleList of the decoder inside a (LoRA-wrapped) causal LM."""
    best = None
    for name, mod in unwrap(model).named_modules():
        if isinstance(mod, torch.nn.ModuleList) and (name == "layers" or name.endswith(".layers")):
            if best is None or len(name) < len(best[0]):
                best = (name, mod)
    if best is None:
        from ..errors import RecipeError

        raise RecipeError("rmu: this model has no decoder `layers` list to steer")
    return best


def layer_output(model, layer: int, **inputs) -> torch.Tensor:
    """RMU1: the output of ``layers[layer]`` (a forward hook; the forward runs as called, with or without grad)."""
    _, layers = decoder_layers(model)
    cache = []

    def hook(module, args, output):
        cache.append(output[0] if isinstance(output, tuple) else output)

    handle = layers[layer].register_forward_hook(hook)
    try:
        model(**inputs)
    finally:
        handle.remove()
    return cache[0]


def _forget_mask(batch: dict) -> torch.Tensor:
    labels = batch.get("labels")
    return labels != -100 if labels is not None else batch["attention_mask"].bool()


class RMUObjective(ForgetObjective):
    def __init__(self, config: RMUConfig, retain_batches=None, reference_model=None):
        super().__init__(None, reference_model)
        self.config, self.retain_batches = config, retain_batches
        self.layer: int | None = config.layer
        self.control: torch.Tensor | None = None
        self.coeff: float | None = config.steering_coeff
        self.trained: list[str] = []

    def setup(self, model) -> None:
        """RMU1 (the layer) and RMU2 (freeze everything but the MLP of layers l-2..l)."""
        from ..errors import RecipeError

        name, layers = decoder_layers(model)
        n_layers = len(layers)
        self.layer = default_layer(n_layers) if self.layer is None else self.layer
        if not 0 <= self.layer < n_layers:
            raise RecipeError(f"rmu.layer must be in 0..{n_layers - 1} for this model (got {self.layer})")
        keep = range(max(0, self.layer - TRAINED_LAYERS_BELOW), self.layer + 1)
        prefixes = tuple(f"{name}.{i}.mlp." for i in keep)
        self.trained = []
        for pname, p in unwrap(model).named_parameters():
            if not p.requires_grad:
                continue
            if pname.startswith(prefixes) or any(f".{name}.{i}.mlp." in pname for i in keep):
                self.trained.append(pname)
            else:
                p.requires_grad_(False)
        if not self.trained:
            raise RecipeError(f"rmu trains the MLP of layers {keep.start}..{keep.stop - 1}, but nothing trainable is "
                              "there: add the MLP projections (e.g. down_proj) to finetune.target_modules")

    def _base_output(self, model, inputs: dict) -> torch.Tensor:
        """The frozen model's output of the steering layer (the reference model, or the adapter off)."""
        return reference_forward(model, self.reference_model, functools.partial(layer_output, layer=self.layer),
                                 **inputs)

    def _control(self, model, batch: dict, width: int) -> torch.Tensor:
        if self.control is None:
            if self.coeff is None:  # RMU3: c = ratio x the base's mean activation norm on this forget batch
                inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
                base = self._base_output(model, inputs)
                norms = base.float().norm(dim=-1)[_forget_mask(batch)]
                self.coeff = self.config.steering_ratio * float(norms.mean())
            self.control = self.coeff * random_direction(width, self.config.seed)
        return self.control

    def forget_loss(self, model, batch: dict) -> torch.Tensor:
        if self.layer is None:
            self.setup(model)
        h = layer_output(model, self.layer, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        control = self._control(model, batch, h.shape[-1])
        return rmu_forget_loss(h, control, _forget_mask(batch))

    def second_loss(self, model, batch: dict, micro_step: int) -> torch.Tensor | None:
        if self.retain_batches is None or self.config.retain_weight == 0:
            return None
        b = self.retain_batches(micro_step, batch["input_ids"].device)
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        base = self._base_output(model, inputs)
        h = layer_output(model, self.layer, **inputs)
        return self.config.retain_weight * rmu_retain_loss(h, base, b["attention_mask"])


def objective(config: RMUConfig, retain_batches=None, reference_model=None) -> RMUObjective:
    return RMUObjective(config, retain_batches, reference_model)


METHOD = Method("rmu", RMUConfig, baseline_stages("rmu"), "unlearn",
                "RMU: steer one layer's activations on the target text toward a random direction, keep them on generic "
                "text (the MLP of the three layers up to it trains)",
                "Li et al. 2024, The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning",
                objective)
