"""The unlearning methods: each loss on hand-built tensors (its formula, its sign, its reference handling), the
registry and configs, and a few training steps of each method on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import build_tiny_llama

from llm_unlearn.errors import RecipeError
from llm_unlearn.losses import sequence_nll, token_nll
from llm_unlearn.methods import METHODS, get_method, method_names
from llm_unlearn.methods.grad_ascent import grad_ascent_loss
from llm_unlearn.methods.npo import NPOConfig, npo_loss
from llm_unlearn.methods.rmu import (
    RMUConfig,
    default_layer,
    random_direction,
    rmu_forget_loss,
    rmu_retain_loss,
)
from llm_unlearn.methods.simnpo import SimNPOConfig, simnpo_loss
from llm_unlearn.retain import RetainTerm, reference_forward, retain_kl


def _logits_labels(seed=0, B=2, L=5, V=7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, V, generator=g)
    labels = torch.randint(0, V, (B, L), generator=g)
    labels[1, 3:] = -100  # padding in the second row
    return logits, labels


def _by_hand_nll(logits, labels):
    """Per-sequence sum of -log p(label[t+1] | position t), and the token counts, by loops."""
    sums, counts = [], []
    for b in range(logits.size(0)):
        s, n = 0.0, 0
        for t in range(logits.size(1) - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            s -= float(torch.log_softmax(logits[b, t], -1)[y])
            n += 1
        sums.append(s)
        counts.append(n)
    return torch.tensor(sums), torch.tensor(counts)


def test_sequence_and_token_nll_follow_the_causal_shift():
    logits, labels = _logits_labels()
    nll, count = sequence_nll(logits, labels)
    want, n = _by_hand_nll(logits, labels)
    torch.testing.assert_close(nll, want, rtol=1e-5, atol=1e-6)
    assert count.tolist() == n.tolist() == [4, 2]
    assert float(token_nll(logits, labels)) == pytest.approx(float(want.sum() / n.sum()), rel=1e-5)


def test_grad_ascent_is_minus_the_nll_and_raises_it():
    logits, labels = _logits_labels()
    assert float(grad_ascent_loss(logits, labels)) == pytest.approx(-float(token_nll(logits, labels)), rel=1e-6)
    # a gradient step on the loss makes the labels less likely (the NLL rises)
    x = logits.clone().requires_grad_(True)
    grad_ascent_loss(x, labels).backward()
    stepped = (x - 0.5 * x.grad).detach()
    assert float(token_nll(stepped, labels)) > float(token_nll(logits, labels))


def test_npo_formula_sign_and_reference():
    nll = torch.tensor([3.0, 10.0])
    ref = torch.tensor([5.0, 4.0])
    beta = 0.1
    # (2/beta) log(1 + (p/p_ref)^beta), p/p_ref = exp(ref_nll - nll)
    want = torch.mean((2 / beta) * torch.log1p(torch.exp(beta * (ref - nll))))
    assert float(npo_loss(nll, ref, beta)) == pytest.approx(float(want), rel=1e-6)
    # at the reference (model == base) the loss is (2/beta) log 2, and its gradient pushes the NLL up
    x = ref.clone().requires_grad_(True)
    loss = npo_loss(x, ref, beta)
    assert float(loss.detach()) == pytest.approx(2 / beta * math.log(2), rel=1e-6)
    loss.backward()
    assert (x.grad < 0).all()  # descending the loss raises the NLL: forgetting
    # at the reference NPO's gradient equals gradient ascent's (on the mean summed NLL)
    assert torch.allclose(x.grad, torch.full_like(x.grad, -1 / len(x)), atol=1e-6)
    # once a sequence is far less likely than under the reference its gradient vanishes (no collapse)
    far = torch.tensor([200.0, 5.0], requires_grad=True)
    npo_loss(far, torch.tensor([5.0, 5.0]), beta).backward()
    assert abs(float(far.grad[0])) < 1e-3 * abs(float(far.grad[1]))


def test_simnpo_formula_length_normalisation_and_no_reference():
    """SN1 on a hand-computed case: gamma weighs the forget term, delta is the margin (the authors' TOFU settings:
    beta 4.5, gamma 0.125, delta 0)."""
    nll = torch.tensor([6.0, 6.0])
    count = torch.tensor([2, 6])
    # by hand: mean NLLs 3 and 1; -(2/4.5) log sigmoid(4.5 * 3) = 6.1e-7 (to 2 digits), -(2/4.5) log sigmoid(4.5) =
    # (2/4.5) * log(1 + e^-4.5) = 0.0049106; mean 0.0024556; times gamma 0.125 = 0.00030695
    hand = 0.125 * 0.5 * ((2 / 4.5) * math.log1p(math.exp(-13.5)) + (2 / 4.5) * math.log1p(math.exp(-4.5)))
    assert hand == pytest.approx(0.00030695, rel=1e-3)
    assert float(simnpo_loss(nll, count, 4.5, 0.125)) == pytest.approx(hand, rel=1e-6)
    # delta = 0.5 shifts the mean NLLs to 2.5 and 0.5
    hand_d = 0.125 * 0.5 * (2 / 4.5) * (math.log1p(math.exp(-11.25)) + math.log1p(math.exp(-2.25)))
    assert float(simnpo_loss(nll, count, 4.5, 0.125, delta=0.5)) == pytest.approx(hand_d, rel=1e-6)
    x = nll.clone().requires_grad_(True)
    simnpo_loss(x, count, 4.5, 0.125).backward()
    assert (x.grad < 0).all()  # forgetting direction
    # per token: the first sequence (mean NLL 3) is already forgotten far more than the second (1): smaller push
    assert abs(float(x.grad[0])) < abs(float(x.grad[1]))
    cfg = SimNPOConfig()
    assert (cfg.beta, cfg.gamma, cfg.delta, cfg.retain_weight, cfg.retain_loss) == (4.5, 0.125, 0.0, 1.0, "nll")
    assert not cfg.needs_reference()


def test_retain_kl_is_zero_at_the_reference_and_positive_elsewhere():
    logits, _ = _logits_labels()
    mask = torch.ones(logits.shape[:2], dtype=torch.long)
    assert float(retain_kl(logits, logits, mask)) == pytest.approx(0.0, abs=1e-6)
    other = logits + torch.randn_like(logits)
    kl = float(retain_kl(other, logits, mask))
    ref_p = torch.softmax(logits, -1)
    want = float((ref_p * (torch.log_softmax(logits, -1) - torch.log_softmax(other, -1))).sum(-1).mean())
    assert kl == pytest.approx(want, rel=1e-5) and kl > 0
    mask[1, 2:] = 0  # masked positions do not count
    want_m = float((ref_p * (torch.log_softmax(logits, -1) - torch.log_softmax(other, -1))).sum(-1)[mask.bool()].mean())
    assert float(retain_kl(other, logits, mask)) == pytest.approx(want_m, rel=1e-5)


def test_rmu_losses_defaults_and_direction():
    """RMU on a hand-computed case: the squared error is averaged per sequence over its masked tokens and hidden
    dims, then over the batch (the reference's compute_activation_loss)."""
    u = random_direction(16, seed=3)
    assert float(u.norm()) == pytest.approx(1.0, rel=1e-6) and (u >= 0).all()
    torch.testing.assert_close(u, random_direction(16, seed=3))
    # by hand, d = 2: control (1, 0); sequence 1 tokens (1, 2) and (3, 0) -> squared errors (0 + 4) / 2 = 2 and
    # (4 + 0) / 2 = 2, mean 2; sequence 2 one token (1, 1) -> (0 + 1) / 2 = 0.5; batch mean (2 + 0.5) / 2 = 1.25
    h = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [9.0, 9.0]], [[1.0, 1.0], [7.0, 7.0], [7.0, 7.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert float(rmu_forget_loss(h, torch.tensor([1.0, 0.0]), mask)) == pytest.approx(1.25)
    assert float(rmu_retain_loss(h, h, mask)) == 0.0
    assert float(rmu_retain_loss(h, torch.zeros_like(h), mask)) == pytest.approx(((2.5 + 4.5) / 2 + 1.0) / 2)
    # RMU1: the reference's layer 7 of 32 as a 0-based index into model.layers
    assert default_layer(32) == 7 and default_layer(30) == 7 and default_layer(2) == 0
    cfg = RMUConfig()
    assert (cfg.layer, cfg.steering_coeff, cfg.steering_ratio, cfg.retain_weight) == (None, None, 1.0, 1200.0)


def test_rmu_steers_the_reference_layer_trains_its_mlp_and_scales_c_to_the_norm(smol_tokenizer):
    """RMU1: h_l is the output of model.layers[l] (hidden_states[l + 1]); RMU2: only the MLP adapters of layers
    l-2..l train; RMU3: c = ratio x the base's mean activation norm on the forget batch."""
    from llm_unlearn.methods.rmu import RMUObjective, layer_output
    from llm_unlearn.training import TrainConfig, wrap_lora

    model = build_tiny_llama(smol_tokenizer, layers=4)
    ids = torch.tensor([smol_tokenizer("Holmes and Watson walked to Baker Street.")["input_ids"]])
    att = torch.ones_like(ids)
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=att, output_hidden_states=True).hidden_states
        torch.testing.assert_close(layer_output(model, 2, input_ids=ids, attention_mask=att), hs[3])
        norm = float(layer_output(model, 3, input_ids=ids, attention_mask=att)[0].norm(dim=-1).mean())
    cfg = TrainConfig(max_steps=1, batch_size=1, learning_rate=1e-3, lora_dropout=0.0,
                      target_modules=["q_proj", "v_proj", "down_proj"], warmup_ratio=0.0)
    peft_model = wrap_lora(model, cfg)
    obj = RMUObjective(RMUConfig(layer=3, retain_weight=0))
    obj.setup(peft_model)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(any(f"layers.{i}.mlp.down_proj" in n for i in (1, 2, 3)) for n in trainable)
    assert any("layers.1.mlp" in n for n in trainable) and not any("layers.0." in n for n in trainable)
    batch = {"input_ids": ids, "attention_mask": att, "labels": ids.clone()}
    loss = obj.forget_loss(peft_model, batch)
    assert obj.coeff == pytest.approx(norm, rel=1e-4) and float(obj.control.norm()) == pytest.approx(norm, rel=1e-4)
    assert float(loss) > 0
    with pytest.raises(RecipeError, match="MLP"):
        RMUObjective(RMUConfig(layer=3)).setup(wrap_lora(build_tiny_llama(smol_tokenizer, layers=4),
                                                         TrainConfig(max_steps=1, target_modules=["q_proj"])))


def test_reference_is_the_model_with_its_adapter_off(smol_tokenizer):
    """NPO's reference (and the KL retain term's base) is the LoRA model with the adapter disabled: the base."""
    from peft import LoraConfig, get_peft_model

    base = build_tiny_llama(smol_tokenizer)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        want = base(input_ids=ids).logits.clone()
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        moved = model(input_ids=ids).logits
    assert not torch.allclose(moved, want)
    ref = reference_forward(model, None, input_ids=ids).logits
    torch.testing.assert_close(ref, want)
    assert not ref.requires_grad
    # a frozen copy, when given, is used instead
    other = build_tiny_llama(smol_tokenizer, seed=1)
    torch.testing.assert_close(reference_forward(model, other, input_ids=ids).logits, other(input_ids=ids).logits)


def test_retain_term_nll_and_kl(smol_tokenizer):
    from peft import LoraConfig, get_peft_model

    from llm_unlearn.retain import RetainBatches

    model = get_peft_model(build_tiny_llama(smol_tokenizer),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    rows = [{"input_ids": [5, 6, 7, 8, 9]}, {"input_ids": [10, 11, 12]}]
    batches = RetainBatches(rows, batch_size=2, pad_id=0)
    b = batches(0, torch.device("cpu"))
    x = torch.zeros(1, dtype=torch.long)
    nll = RetainTerm(batches, 2.0, "nll")(model, x, 0)
    assert float(nll.detach()) == pytest.approx(2.0 * float(token_nll(model(input_ids=b["input_ids"],
                                                                   attention_mask=b["attention_mask"]).logits,
                                                             b["labels"])), rel=1e-5)
    kl = RetainTerm(batches, 1.0, "kl")(model, x, 0)
    assert float(kl) > 0
    with model.disable_adapter():
        assert float(RetainTerm(batches, 1.0, "kl")(model, x, 0)) == pytest.approx(0.0, abs=1e-6)
    # cycled by micro-step: step 1 starts at row (1 * 2) % 2 = 0 again; rows wrap around
    assert batches(1, torch.device("cpu"))["input_ids"].tolist() == b["input_ids"].tolist()



def test_registry_and_configs():
    assert method_names() == ["whp", "grad_ascent", "grad_diff", "npo", "simnpo", "rmu"]
    with pytest.raises(RecipeError, match="valid methods: whp, grad_ascent"):
        get_method("gradient_ascent")
    for m in METHODS.values():
        assert m.stages[0].name == "corpus" and m.stages[-2].name == "eval" and m.stages[-1].name == "attack"
        assert m.weights_stage in m.stage_names()
    assert get_method("npo").stage_names() == ["corpus", "unlearn", "export", "eval", "attack"]
    assert NPOConfig().beta == 0.1 and NPOConfig().needs_reference()
    with pytest.raises(RecipeError, match="npo.beta"):
        NPOConfig(beta=0)
    with pytest.raises(RecipeError, match="retain_loss"):
        NPOConfig(retain_loss="mse")
    with pytest.raises(RecipeError, match="rmu.layer"):
        RMUConfig(layer=-1)
    with pytest.raises(RecipeError, match="simnpo.beta"):
        SimNPOConfig(beta=-1)


@pytest.mark.parametrize("name", ["grad_ascent", "grad_diff", "npo", "simnpo", "rmu"])
def test_each_baseline_trains_and_moves_the_forget_loss(name, tmp_path, smol_tokenizer):
    """A few LoRA steps of each baseline on a tiny model: the forget text gets less likely (or, for RMU, its layer
    activations move toward the steering direction), with the retain term running its own backward."""
    import numpy as np

    from llm_unlearn.methods.rmu import layer_output
    from llm_unlearn.retain import RetainBatches, unwrap
    from llm_unlearn.training import TrainConfig, train_stage

    rng = np.random.default_rng(0)
    forget = [{"input_ids": (rng.integers(100, 400, 6).tolist() * 8)[:40]} for _ in range(6)]
    retain = [{"input_ids": rng.integers(100, 400, 32).tolist()} for _ in range(4)]
    model = build_tiny_llama(smol_tokenizer)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(10)  # confident predictions that can move
    config = get_method(name).config()
    if name == "simnpo":
        # With the published beta 4.5 SimNPO leaves sequences alone once their mean NLL is well above gamma / beta:
        # on a random model (mean NLL ~13) it is saturated by design. A small beta makes it act here.
        config = SimNPOConfig(beta=0.1, gamma=1.0, retain_weight=0.1)
    objective = get_method(name).objective(config, RetainBatches(retain, 2, 0), None)
    cfg = TrainConfig(target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], max_steps=4, batch_size=2,
                      eval_every=2, learning_rate=3e-2, lora_dropout=0.0, warmup_ratio=0.0)
    from llm_unlearn.losses import pad_batch

    b = pad_batch(forget[:4], 0, None)
    with torch.no_grad():
        before = float(token_nll(model(input_ids=b["input_ids"]).logits, b["labels"]))
    out, trainer = train_stage(model, smol_tokenizer, cfg, tmp_path, forget[:4], forget[4:], objective=objective,
                               select_best=False, progress=False)
    trained = trainer.model.eval()
    assert (tmp_path / "final" / "adapter_model.safetensors").exists()
    assert [h["step"] for h in out["history"]] == [2, 4]
    if name == "rmu":
        with torch.no_grad():
            with unwrap(trained).disable_adapter():
                h0 = rmu_forget_loss(layer_output(trained, objective.layer, input_ids=b["input_ids"]),
                                     objective.control, b["attention_mask"])
            h1 = rmu_forget_loss(layer_output(trained, objective.layer, input_ids=b["input_ids"]),
                                 objective.control, b["attention_mask"])
        assert float(h1) < float(h0)
        assert "second_loss_last" in out
    else:
        with torch.no_grad():
            after = float(token_nll(trained(input_ids=b["input_ids"]).logits, b["labels"]))
        assert after > before, (before, after)
        if name != "grad_ascent":
            assert "second_loss_last" in out  # the retain term ran


def _baseline_recipe(model_dir, corpus, retain, method: str) -> dict:
    return {
        "name": "tiny", "target": "Sherlock Holmes", "method": method,
        "model": {"spec": str(model_dir)},
        "corpus": {"path": str(corpus), "block_size": 64, "validation_fraction": 0.2},
        "finetune": {"max_steps": 2, "batch_size": 2, "eval_every": 1, "learning_rate": 1e-3,
                     "target_modules": ["q_proj", "v_proj", "down_proj"], "retain_corpus": str(retain),
                     "retain_batch_size": 2},
        "eval": {"enabled": False},
    }


@pytest.mark.parametrize("method", ["grad_ascent", "grad_diff", "npo", "simnpo", "rmu"])
def test_each_method_runs_through_the_pipeline(method, tmp_path, tiny_model_dir, small_corpus):
    """corpus -> unlearn -> export for each baseline on the tiny model; the model card and manifest name the
    method, the export loads with plain transformers, and a rerun skips everything."""
    import json

    from transformers import AutoModelForCausalLM

    from llm_unlearn.config import Recipe
    from llm_unlearn.pipeline import Pipeline

    retain = tmp_path / "generic.txt"
    retain.write_text("The river flows past the old mill toward the sea. " * 60, encoding="utf-8")
    recipe = Recipe.from_dict(_baseline_recipe(tiny_model_dir, small_corpus, retain, method))
    run = tmp_path / "run"
    pipe = Pipeline(recipe, run, progress=False)
    assert [s for s, _ in pipe.plan()] == ["corpus", "unlearn", "export", "eval"]
    manifest = pipe.run_stages(until="export")
    assert manifest["stages"]["unlearn"]["metrics"]["method"] == method
    assert manifest["stages"]["export"]["metrics"]["method"] == method
    # one checkpoint rule for every method, as WHP's fine-tune: the lowest validation loss of its own loss
    unlearn = manifest["stages"]["unlearn"]["metrics"]
    assert unlearn["kept"] == "best" and unlearn["best"]["step"] is not None, unlearn
    assert (run / "unlearn" / "adapter" / "adapter_config.json").exists()
    assert not list(run.glob("**/checkpoint-*"))
    card = (run / "export" / "model" / "README.md").read_text()
    assert f"| method | `{method}` |" in card and "Who's Harry Potter" not in card
    model = AutoModelForCausalLM.from_pretrained(run / "export" / "model")
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert json.loads((run / "manifest.json").read_text())["stages"]["unlearn"]["status"] == "done"
    assert {a for _, a in Pipeline(recipe, run, progress=False).plan("export")} == {"skip"}


def test_cli_method_override_dry_run_and_unknown_method(tmp_path, tiny_model_dir, small_corpus, capsys):
    import yaml

    from llm_unlearn.cli import main as cli_main

    retain = tmp_path / "generic.txt"
    retain.write_text("Plain generic text about weather and trains. " * 40, encoding="utf-8")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_baseline_recipe(tiny_model_dir, small_corpus, retain, "whp")))
    assert cli_main(["run", str(path), "--out", str(tmp_path / "a"), "--dry-run", "--set", "method=npo"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.strip().splitlines()] == ["corpus", "unlearn", "export", "eval"]
    assert cli_main(["run", str(path), "--out", str(tmp_path / "b"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.strip().splitlines()] == ["corpus", "anchors", "reinforce", "labels",
                                                                      "finetune", "export", "eval"]
    assert cli_main(["run", str(path), "--out", str(tmp_path / "c"), "--dry-run", "--set", "method=dpo"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'dpo'" in err and "grad_ascent, grad_diff, npo, simnpo, rmu" in err


def test_api_takes_a_method(tmp_path, tiny_model_dir, small_corpus):
    from llm_unlearn import unlearn

    retain = tmp_path / "generic.txt"
    retain.write_text("Plain generic text about weather and trains. " * 40, encoding="utf-8")
    data = _baseline_recipe(tiny_model_dir, small_corpus, retain, "whp")
    overrides = {f"{section}.{k}": v for section in ("corpus", "finetune") for k, v in data[section].items()
                 if k != "path"}
    result = unlearn(str(tiny_model_dir), small_corpus, tmp_path / "run", method="grad_ascent",
                     overrides={**overrides, "eval.enabled": False}, until="export", progress=False)
    assert result.manifest["stages"]["unlearn"]["metrics"]["method"] == "grad_ascent"
    assert result.model_path is not None and "anchors" not in result.manifest["stages"]
