"""Quantization-aware unlearning (llm_unlearn.quant_aware, rules QA1-QA5)."""

from __future__ import annotations

import pytest
import torch

from llm_unlearn import gguf_formats as G
from llm_unlearn.config.training import QUANT_AWARE_CHOICES
from llm_unlearn.errors import RecipeError
from llm_unlearn.gguf_formats import quantized_linears
from llm_unlearn.quant_aware import GRID_FORMATS, GridTraining, block_grid, grid_training, snap
from tests.conftest import build_tiny_llama

_LIMITS = {"Q4_1": (0, 15), "Q5_1": (0, 31), "Q4_0": (-8, 7), "Q5_0": (-16, 15), "Q8_0": (-127, 127)}


def _encoded(fmt: str, seed: int = 0, shape=(8, 128)) -> torch.Tensor:
    """A weight as it comes out of a GGUF file of ``fmt`` (gguf's own encoder and decoder)."""
    g = torch.Generator().manual_seed(seed)
    return G.round_trip(torch.randn(shape, generator=g) * 0.05, fmt)[0]


def _trained(w: torch.Tensor, fmt: str, steps: float = 2.5, seed: int = 1) -> torch.Tensor:
    """A weight trained on ``w``'s grid: latent moved by up to ``steps`` quantization steps, then snapped (QA5)."""
    d, m, fixed = block_grid(w, fmt)
    lo, hi = _LIMITS[fmt]
    codes = torch.round((w.reshape(w.shape[0], -1, 32) - m[..., None]) / d[..., None]).reshape(w.shape)
    g = torch.Generator().manual_seed(seed)
    latent = w + steps * G.step_size(w, fmt) * (2 * torch.rand(w.shape, generator=g) - 1)
    return snap(latent, d, m, lo, hi, fixed, codes)


def test_config_choices_are_the_grid_formats():
    assert set(QUANT_AWARE_CHOICES) == {"base", *GRID_FORMATS}


@pytest.mark.parametrize("fmt", GRID_FORMATS)
def test_grid_of_an_encoded_weight_gives_it_back(fmt):
    """QA1: the grid read off a weight decoded from ``fmt`` holds that weight exactly (d and m as gguf stores them)."""
    w = _encoded(fmt)
    d, m, fixed = block_grid(w, fmt)
    lo, hi = _LIMITS[fmt]
    assert torch.equal(snap(w, d, m, lo, hi), w)
    assert fixed.reshape(8, -1, 32).any(-1).all()  # every block has the entries that fix its grid (QA3)


@pytest.mark.parametrize("fmt", GRID_FORMATS)
def test_trained_weight_is_its_own_gguf_encoding(fmt):
    """QA3 + QA5: a weight trained on its grid, many codes changed, goes through gguf's encoder and decoder
    unchanged: rounding it to ``fmt`` is the identity."""
    w = _encoded(fmt)
    t = _trained(w, fmt)
    assert (t != w).float().mean() > 0.3  # codes did change
    assert torch.equal(G.round_trip(t, fmt)[0], t)


def test_moving_the_entries_that_fix_a_block_breaks_the_round_trip():
    """QA3 is needed: the same training without the fixed entries (a block's min may rise, its max fall) is no longer
    its own Q4_1 encoding."""
    w = _encoded("Q4_1")
    d, m, _ = block_grid(w, "Q4_1")
    g = torch.Generator().manual_seed(1)
    latent = w + 2.5 * G.step_size(w, "Q4_1") * (2 * torch.rand(w.shape, generator=g) - 1)
    free = snap(latent, d, m, 0, 15)
    assert not torch.equal(G.round_trip(free, "Q4_1")[0], free)


def test_straight_through_gradient_is_the_gradient_at_the_grid_weight(tiny_llama):
    """QA2: the forward uses the grid value, and the latent weight gets the gradient taken at the grid value."""
    model, _ = tiny_llama
    gt = GridTraining({f"{n}.weight": "Q4_1" for n in quantized_linears(model)}, "Q4_1")
    gt.attach(model)
    lin = model.model.layers[0].mlp.down_proj
    with torch.no_grad():
        lin.weight.add_(0.3 * G.step_size(lin.weight, "Q4_1"))  # latent off the grid
    x = torch.randn(3, lin.in_features)
    q = snap(lin.weight, lin.grid_d, lin.grid_m, 0, 15, lin.grid_fixed, lin.grid_base_codes)
    y = lin(x)
    assert torch.allclose(y, x @ q.T)
    y.pow(2).sum().backward()
    assert torch.allclose(lin.weight.grad, (2 * (x @ q.T)).T @ x, atol=1e-5)


def test_attach_trains_only_gridded_linears_and_finish_leaves_plain_grid_weights(tiny_llama, tmp_path):
    """QA4: only the linear weights on a grid train; QA5: finish() writes the grid values (their own encoding), gives
    back the plain forward and leaves no extra keys in what is saved."""
    model, _ = tiny_llama
    keys = set(model.state_dict())
    linears = quantized_linears(model)
    gt = grid_training(model, "Q4_0", "unused", full_finetune=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.weight" for n in linears}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    ids = torch.randint(0, 100, (2, 12))
    for _ in range(5):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    gt.finish(model)
    assert set(model.state_dict()) == keys
    for name, mod in linears.items():
        assert "forward" not in vars(mod) and not hasattr(mod, "grid_d"), name
        assert torch.equal(G.round_trip(mod.weight.data, "Q4_0")[0], mod.weight.data), name


def test_settings_are_checked():
    from llm_unlearn.config.training import FinetuneConfig

    with pytest.raises(RecipeError, match="full_finetune"):
        FinetuneConfig(quantization_aware="Q4_1")
    with pytest.raises(RecipeError, match="quantization_aware"):
        FinetuneConfig(quantization_aware="Q4_K", full_finetune=True)
    assert FinetuneConfig(quantization_aware="base", full_finetune=True).quantization_aware == "base"
    with pytest.raises(RecipeError, match="full_finetune"):
        grid_training(None, "Q4_1", "x", full_finetune=False)


def test_base_needs_a_gguf_base(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(RecipeError, match="did not come from a GGUF file"):
        grid_training(model, "base", "/no/such/model", full_finetune=True)


@pytest.mark.integration
def test_packaged_smollm2_trains_on_its_own_q4_1_grid(tmp_path):
    """QA1 on the real base (a Q4_1 file): ``base`` puts every decoder linear on the file's grid, which holds the
    base exactly (the forward at step 0 is the base's); after training steps that flip codes, the kept weights
    are their own Q4_1 encoding (gguf's quantizer changes nothing), while the codes did move."""
    from llm_unlearn.models import load_model

    model, tok = load_model("smollm2-135m", dtype="float32", device="cpu")
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    gt = grid_training(model, "base", "smollm2-135m", full_finetune=True)
    assert len(gt.modules) == len(quantized_linears(model))
    ids = tok("Sherlock Holmes took his bottle from the corner of the mantelpiece.", return_tensors="pt").input_ids
    with torch.no_grad():
        for mod in gt.modules:  # the grid holds the base: snapping the base changes nothing
            assert torch.equal(snap(mod.weight, mod.grid_d, mod.grid_m, 0, 15, mod.grid_fixed, mod.grid_base_codes),
                               mod.weight)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    for _ in range(3):
        opt.zero_grad()
        (-model(input_ids=ids, labels=ids).loss).backward()
        opt.step()
    gt.finish(model)
    changed = 0
    for name, mod in quantized_linears(model).items():
        w = mod.weight.data
        assert torch.equal(G.round_trip(w, "Q4_1")[0], w), name
        changed += int((w != base[f"{name}.weight"]).sum())
    assert changed > 1000
    assert torch.equal(model.model.embed_tokens.weight, base["model.embed_tokens.weight"])


def test_target_modules_choose_what_trains(tiny_llama):
    """QA4: with target_modules the MLP only trains (every other weight frozen); a list naming no layer is refused."""
    model, tok = tiny_llama
    gt = grid_training(model, "Q4_1", "unused", True, ["gate_proj", "up_proj", "down_proj"])
    trainable = {n.rsplit(".", 2)[-2] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"gate_proj", "up_proj", "down_proj"} and len(gt.modules) == 3 * 2
    with pytest.raises(RecipeError, match="target_modules"):
        grid_training(build_tiny_llama(tok), "Q4_1", "unused", True, ["no_such_proj"])


@pytest.mark.parametrize("method", ["whp", "npo"])
def test_pipeline_keeps_weights_that_are_their_own_gguf_encoding(tmp_path, tiny_model_dir, small_corpus, method):
    """QA5 end to end, for WHP and a baseline: the kept (and exported) weights of a quantization-aware full
    fine-tune are their own Q4_0 encoding, they differ from the base rounded to Q4_0, and nothing else trained
    (the recipe's target_modules are q_proj and v_proj)."""
    from llm_unlearn.config import Recipe
    from llm_unlearn.models import load_model
    from llm_unlearn.pipeline import Pipeline
    from tests.test_pipeline import tiny_recipe

    data = tiny_recipe(tiny_model_dir, small_corpus)
    data["method"] = method
    data["finetune"].update(full_finetune=True, quantization_aware="Q4_0", learning_rate=5e-2)
    run = tmp_path / "run"
    manifest = Pipeline(Recipe.from_dict(data), run, progress=False).run_stages(until="export")
    assert "export" in manifest["stages"]
    base, _ = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    out, _ = load_model(str(run / "export" / "model"), dtype="float32", device="cpu")
    b, o = dict(base.named_parameters()), dict(out.named_parameters())
    moved = 0
    for name in quantized_linears(out):
        w = o[f"{name}.weight"].data
        if name.rsplit(".", 1)[-1] not in ("q_proj", "v_proj"):
            assert torch.equal(w, b[f"{name}.weight"].data), name
            continue
        assert torch.equal(G.round_trip(w, "Q4_0")[0], w), name
        moved += int((w != G.round_trip(b[f"{name}.weight"].data, "Q4_0")[0]).sum())
    assert moved > 0
    assert torch.equal(o["model.embed_tokens.weight"], b["model.embed_tokens.weight"])
    card = (run / "export" / "model" / "README.md").read_text()
    assert "quantization-aware: trained on the grid of Q4_0" in card
