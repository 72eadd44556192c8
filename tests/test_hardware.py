"""Compute settings (llm_unlearn.hardware): bf16 where the CPU has it (H1), float32 where precision matters (H2),
threads (H3)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import build_tiny_llama

from llm_unlearn import hardware
from llm_unlearn.config import Recipe
from llm_unlearn.training import TrainConfig, stage_config, train_stage


@pytest.fixture()
def cpu_bf16(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16, without the env override."""

    def set_native(native: bool):
        monkeypatch.delenv(hardware.CPU_BF16_ENV, raising=False)
        monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "avx512f"} | ({"avx512_bf16"} if native else set()))
        monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
        hardware.cpu_bf16_native.cache_clear()

    yield set_native
    hardware.cpu_bf16_native.cache_clear()


def test_h1_detection_from_cpu_flags_and_env_override(cpu_bf16, monkeypatch):
    cpu_bf16(True)
    assert hardware.cpu_bf16_native()
    cpu_bf16(False)
    assert not hardware.cpu_bf16_native()
    monkeypatch.setenv(hardware.CPU_BF16_ENV, "1")
    hardware.cpu_bf16_native.cache_clear()
    assert hardware.cpu_bf16_native()  # the override wins over the flags


def test_h1_auto_dtype_is_bf16_only_on_native_cpus_and_explicit_wins(cpu_bf16):
    cpu_bf16(True)
    assert hardware.inference_dtype("auto", "cpu") == torch.bfloat16
    assert hardware.inference_dtype(None, "cpu") == torch.bfloat16
    assert hardware.inference_dtype("float32", "cpu") == torch.float32
    cpu_bf16(False)
    assert hardware.inference_dtype("auto", "cpu") == torch.float32
    assert hardware.inference_dtype("bf16", "cpu") == torch.bfloat16


def test_h2_training_keeps_float32_weights_and_autocasts(cpu_bf16):
    cpu_bf16(True)
    assert hardware.training_weights_dtype("auto", "cpu") == torch.float32
    assert hardware.resolve_mixed_precision("auto", "cpu") == "bf16"
    assert hardware.resolve_mixed_precision("auto", "cpu", dtype_setting="float32") == "no"  # explicit dtype wins
    assert hardware.resolve_mixed_precision("no", "cpu") == "no"
    recipe = Recipe()
    assert stage_config(recipe.finetune, recipe).mixed_precision == "bf16"
    assert stage_config(recipe.reinforce, recipe).mixed_precision == "bf16"
    cpu_bf16(False)
    assert hardware.resolve_mixed_precision("auto", "cpu") == "no"
    assert stage_config(recipe.finetune, recipe).mixed_precision == "no"


def test_h2_bf16_training_computes_in_bf16_but_keeps_fp32_weights_and_loss(tmp_path, smol_tokenizer, cpu_bf16):
    cpu_bf16(True)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(8):
        motif = rng.integers(100, 400, 6).tolist()
        rows.append({"input_ids": (motif * 9)[:48]})
    model = build_tiny_llama(smol_tokenizer)
    cfg = TrainConfig(target_modules=["q_proj", "v_proj", "o_proj"], max_steps=8, batch_size=2, eval_every=4,
                      learning_rate=5e-2, lora_dropout=0.0, warmup_ratio=0.0)  # mixed_precision: auto
    seen = []
    # LoRA wraps q/v/o; down_proj stays a plain frozen Linear whose matmul autocast runs in bf16
    hook = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    out, trainer = train_stage(model, smol_tokenizer, cfg, tmp_path, rows[:6], rows[6:], progress=False)
    hook.remove()
    assert trainer.args.bf16 and not trainer.args.fp16  # auto -> bf16 on a CPU with native bf16
    assert seen and set(seen) == {torch.bfloat16}  # the matmuls ran in bf16 ...
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # ... on float32 master weights
    losses = [h["train_loss"] for h in out["history"] if h["train_loss"] is not None]
    vals = [h["val_loss"] for h in out["history"]]
    assert losses and all(np.isfinite(losses)) and all(np.isfinite(vals)) and losses[-1] < losses[0]


def test_h3_threads_follow_physical_cores_unless_the_user_set_them(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(hardware, "physical_cores", lambda: 1)
        assert hardware.configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        torch.set_num_threads(2)
        assert hardware.configure_threads() == 2  # the user's choice is left alone
    finally:
        torch.set_num_threads(before)
    assert 1 <= hardware.physical_cores() <= (os.cpu_count() or 1)


def test_info_prints_the_compute_dtype(tiny_model_dir, capsys):
    from llm_unlearn.cli import main

    env_before = os.environ.get(hardware.CPU_BF16_ENV)
    os.environ[hardware.CPU_BF16_ENV] = "1"
    hardware.cpu_bf16_native.cache_clear()
    try:
        assert main(["info", str(tiny_model_dir)]) == 0
    finally:
        os.environ[hardware.CPU_BF16_ENV] = env_before if env_before is not None else "0"
        hardware.cpu_bf16_native.cache_clear()
    out = capsys.readouterr().out
    assert "compute_dtype    bfloat16" in out
    assert "float32 weights, mixed precision bf16" in out
