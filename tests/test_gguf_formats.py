"""GGUF deployment rounding (llm_unlearn.gguf_formats, rules GG1-GG5; attack rule ATK-Q5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from llm_unlearn import gguf_formats as G
from llm_unlearn.attacks.quantization import quantized_linears
from tests.conftest import build_tiny_llama

LEGACY = ["Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"]


def _reference(w: torch.Tensor, fmt: str) -> torch.Tensor:
    t = GGMLQuantizationType[fmt]
    arr = w.detach().float().numpy()
    return torch.from_numpy(quants.dequantize(quants.quantize(arr, t), t).reshape(arr.shape))


@pytest.mark.parametrize("fmt", LEGACY)
def test_round_trip_on_tiny_model_equals_gguf_reference(smol_tokenizer, fmt):
    """GG1/GG3: every linear of the blocks is exactly gguf-py's quantize -> dequantize; embeddings untouched."""
    model = build_tiny_llama(smol_tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    plan = G.linear_plan(model, fmt)
    info = G.apply_plan_(model, plan)
    assert info["formats"] == {fmt: len(quantized_linears(model))} and not info["kept"]
    params = dict(model.named_parameters())
    for name in plan.types:
        assert torch.equal(params[name].detach(), _reference(before[name], fmt)), name
        assert not torch.equal(params[name].detach(), before[name])
    assert torch.equal(params["model.embed_tokens.weight"], before["model.embed_tokens.weight"])


def test_k_quants_decode_with_gguf_and_fall_back_like_llama_cpp():
    """GG1: our Q4_K / Q6_K bytes, decoded by gguf, are within about half a step and are a fixed point;
    GG2: rows not a multiple of 256 take llama.cpp's fallback, rows not a multiple of 32 are kept."""
    torch.manual_seed(0)
    w = torch.randn(8, 512)
    for fmt, bound in (("Q4_K", 0.55), ("Q6_K", 1.15)):  # Q6_K: int8 sub-block scales, codes clamp at +31
        r, used = G.round_trip(w, fmt)
        assert used == fmt
        err = (r - w).abs() / G.step_size(w, fmt)
        assert float(err.max()) < bound and float(err.mean()) < 0.3
        again, _ = G.round_trip(r, fmt)
        assert torch.equal(again, r)
    # hand-made Q4_K block: sub-block j holds codes 0..15 times (63 - 4j)/64 minus (63 - 8j)/32, values that the
    # block's fp16 scales and 6-bit sub-scales (sc 63..35, m 63..7: the packed high bits too) hold exactly
    q = np.arange(16, dtype=np.float32).repeat(2)
    x = np.concatenate([q * (63 - 4 * j) / 64 - (63 - 8 * j) / 32 for j in range(8)]).astype(np.float32)[None, :]
    assert np.array_equal(quants.dequantize(G.encode_q4_k(x), GGMLQuantizationType.Q4_K).reshape(x.shape), x)
    assert G.effective_format("Q4_K", 576) == "Q5_0" and G.effective_format("Q4_K", 1536) == "Q4_K"
    assert G.effective_format("Q6_K", 576) == "Q8_0" and G.effective_format("Q4_0", 50) is None
    same, used = G.round_trip(torch.randn(3, 50), "Q4_0")
    assert used is None and same.shape == (3, 50)


def test_base_plan_reads_the_packaged_smollm2_file(smol_tokenizer):
    """GG3: the packaged SmolLM2 base is a Q4_1 file whose embedding is Q8_0; a model with its names maps onto it."""
    model = build_tiny_llama(smol_tokenizer)
    plan = G.base_plan(model, "smollm2-135m")
    assert plan is not None and plan.from_file and plan.label == "Q4_1 (base file)"
    lin = {f"{n}.weight" for n in quantized_linears(model)}
    assert {plan.types[n] for n in lin} == {"Q4_1"}
    assert plan.types["model.embed_tokens.weight"] == "Q8_0"
    assert G.base_plan(model, "/no/such/model") is None


def test_sub_half_step_delta_rounds_back_to_the_base_and_is_flagged(smol_tokenizer):
    """GG4/GG5: the mechanism measured on the demo model: a delta far below half a Q4_1 step is undone by Q4_1
    rounding (the warning fires); a delta of several steps survives (no warning)."""
    base = build_tiny_llama(smol_tokenizer)
    plan = G.linear_plan(base, "Q4_1")
    G.apply_plan_(base, plan)  # the base's weights on the Q4_1 grid, as a model dequantized from a Q4_1 file
    small = build_tiny_llama(smol_tokenizer)
    small.load_state_dict(base.state_dict())
    big = build_tiny_llama(smol_tokenizer)
    big.load_state_dict(base.state_dict())
    with torch.no_grad():
        for name in plan.types:
            p_s, p_b = dict(small.named_parameters())[name], dict(big.named_parameters())[name]
            step = G.step_size(p_s, "Q4_1")
            p_s.add_(0.1 * step * torch.randn_like(p_s).clamp(-2, 2))
            p_b.add_(3 * step * torch.randn_like(p_b))
    check = G.rounding_check(base, small, plan)
    assert check["warn"] and check["share_below_half_step"] > 0.9 and check["share_delta_nonzero"] > 0.9
    assert check["projection"] < 0.3  # rounded, little of the change is left in its own direction
    assert "Q4_1" in G.rounding_message(check)
    loud = G.rounding_check(base, big, plan)
    assert not loud["warn"] and loud["projection"] > 0.9
    assert G.rounding_message(loud) is None


def test_attack_has_gguf_rows_with_control_and_vs_control_column(smol_tokenizer, tmp_path):
    """ATK-Q5: each format gives a base (control) and an unlearned row; report.md shows recovery vs control."""
    from llm_unlearn.attacks import attack
    from llm_unlearn.config import AttackConfig, EvalConfig
    from tests.test_attacks import SHERLOCK_SUITE

    base = build_tiny_llama(smol_tokenizer, seed=0)
    unl = build_tiny_llama(smol_tokenizer, seed=1)
    cfg = AttackConfig(attacks=["quantization"], quant_bits=[], quant_formats=["Q4_1", "Q8_0"], bootstrap=20)
    doc = attack((unl, smol_tokenizer), (base, smol_tokenizer), [str(SHERLOCK_SUITE)], tmp_path / "a", config=cfg,
                 eval_config=EvalConfig(max_new_tokens=2, batch_size=16), progress=False)
    variants = {(r["variant"], m) for r in doc["results"] for m in r["scores"]}
    assert {("gguf Q4_1", "base"), ("gguf Q4_1", "unlearned"), ("gguf Q8_0", "base")} <= variants
    report = (tmp_path / "a" / "report.md").read_text()
    assert "vs control (familiarity)" in report and "gguf Q4_1" in report


def test_run_warns_when_the_real_base_rounds_the_change_away(tmp_path, capsys):
    """GG5 on the packaged SmolLM2 (a Q4_1 file): a model whose linears moved by a tenth of a Q4_1 step gets the
    warning under `llm-unlearn run`'s before/after table; the base itself (no change) gets none."""
    from llm_unlearn.commands.stages import print_rounding_warning
    from llm_unlearn.models import load_model

    model, tok = load_model("smollm2-135m", dtype="float32", device="cpu")
    # GG3: the base dequantized from its Q4_1 file is on its own grid: its own format gives it back bit for bit
    plan = G.base_plan(model, "smollm2-135m")
    params = dict(model.named_parameters())
    for name in ["model.embed_tokens.weight", *list(plan.types)[:6]]:
        assert torch.equal(G.round_trip(params[name].data, plan.types[name])[0], params[name].data), name
    with torch.no_grad():
        for mod in list(quantized_linears(model).values())[:8]:
            mod.weight.add_(0.1 * G.step_size(mod.weight, "Q4_1") * torch.randn_like(mod.weight).clamp(-2, 2))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    message = print_rounding_warning("smollm2-135m", tmp_path / "m")
    assert message and "Q4_1" in message and message in capsys.readouterr().out
    assert print_rounding_warning(str(tmp_path / "m"), tmp_path / "m") is None  # a folder base: no GGUF format


def test_attack_help_lists_gguf_formats_and_recipe_checks_them(capsys):
    from llm_unlearn.cli import main
    from llm_unlearn.config import Recipe
    from llm_unlearn.errors import RecipeError

    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    out = capsys.readouterr().out
    for fmt in G.FORMATS:
        assert fmt in out
    assert Recipe.from_dict({"attack": {"quant_formats": ["Q4_1"]}}).attack.quant_formats == ["Q4_1"]
    with pytest.raises(RecipeError, match="quant_formats"):
        Recipe.from_dict({"attack": {"quant_formats": ["Q3_K"]}})


def test_k_quant_encoders_give_back_the_packaged_gemma_base(gemma_tokenizer):
    """GG1: Gemma-3-270M dequantized from its Q4_K_M file is (nearly) a fixed point of our Q4_K / Q6_K encoders
    (ggml's reference fits): a min/max fit would move 40% / 96% of those weights."""
    from llm_unlearn.models import load_model

    model, _ = load_model("gemma3-270m", dtype="float32", device="cpu")
    plan = G.base_plan(model, "gemma3-270m")
    assert plan.label == "Q4_K_M (base file)"
    params = dict(model.named_parameters())
    changed = total = 0
    seen = set()
    for name, fmt in plan.types.items():
        if fmt in ("Q4_K", "Q6_K") and any(f"layers.{i}." in name for i in range(3)):
            w = params[name].data
            r, used = G.round_trip(w, fmt)
            assert used == fmt
            changed += int((r != w).sum())
            total += w.numel()
            seen.add(fmt)
    assert seen == {"Q4_K", "Q6_K"} and changed / total < 0.002
