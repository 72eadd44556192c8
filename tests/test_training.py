"""The shared trainer: LoRA training lowers the loss, checkpoints hold only trainable weights, and a run
interrupted after a checkpoint resumes to exactly the weights of an uninterrupted run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_tiny_llama, first_step_grads
from safetensors.torch import load_file
from transformers import TrainerCallback

from llm_unlearn.errors import RecipeError
from llm_unlearn.training import (
    TrainConfig,
    batch_schedule,
    complete_checkpoints,
    lora_targets,
    pad_batch,
    perplexity,
    train_stage,
)


def _rows(n, length=48, seed=0):
    # Repetitive sequences: learnable, so the loss must fall.
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        motif = rng.integers(100, 400, 6).tolist()
        out.append({"input_ids": (motif * (length // 6 + 1))[:length]})
    return out


def _cfg(**kw):
    base = dict(target_modules=["q_proj", "v_proj", "o_proj"], max_steps=6, batch_size=2, eval_every=2,
                learning_rate=5e-3, lora_dropout=0.1, warmup_ratio=0.0)
    base.update(kw)
    return TrainConfig(**base)


def test_pad_batch_masks_padding():
    b = pad_batch([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}], pad_id=0, label_key=None)
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]


def test_batch_schedule_is_deterministic_and_covers_epochs():
    s1 = batch_schedule(5, 2, 7, seed=3)
    assert s1 == batch_schedule(5, 2, 7, seed=3)
    assert sorted(i for b in s1[:3] for i in b) == [0, 1, 2, 3, 4]  # first epoch sees every item once


def test_lora_targets_error_names_layers(smol_tokenizer):
    model = build_tiny_llama(smol_tokenizer)
    assert lora_targets(model, ["q_proj", "nonexistent"]) == ["q_proj"]
    with pytest.raises(RecipeError, match="q_proj"):
        lora_targets(model, ["c_attn"])


def test_engine_is_a_transformers_trainer():
    from transformers import Trainer

    from llm_unlearn.training import UnlearnTrainer

    assert issubclass(UnlearnTrainer, Trainer)


def test_training_lowers_loss_and_keeps_adapter_only(tmp_path, smol_tokenizer):
    rows = _rows(10)
    cfg = _cfg(max_steps=10, learning_rate=5e-2, lora_dropout=0.0,
               target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = build_tiny_llama(smol_tokenizer)
    before = perplexity(model, rows[:8], pad_id=0)
    out, trainer = train_stage(model, smol_tokenizer, cfg, tmp_path, rows[:8], rows[8:], desc="t", progress=False)
    after = perplexity(trainer.model, rows[:8], pad_id=0)
    assert after < 0.9 * before, (before, after)  # seeded: deterministic
    assert out["best"]["step"] is not None and out["total_steps"] == 10
    assert [h["step"] for h in out["history"]] == [2, 4, 6, 8, 10]
    assert (tmp_path / "best" / "adapter_model.safetensors").exists()
    ckpt = complete_checkpoints(tmp_path / "checkpoints")[-1]
    saved = load_file(str(ckpt / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)  # never the frozen base weights
    assert not list(ckpt.glob("model*.safetensors"))


def test_best_checkpoint_is_the_lowest_validation_loss(tmp_path, smol_tokenizer):
    """select_best keeps the weights of the lowest validation loss: with a learning rate high enough to overshoot,
    the kept adapter is the best step's, and its validation loss is the recorded one."""
    rows = _rows(10)
    cfg = _cfg(max_steps=8, learning_rate=0.3, lora_dropout=0.0, eval_every=1)
    out, trainer = train_stage(build_tiny_llama(smol_tokenizer), smol_tokenizer, cfg, tmp_path, rows[:8], rows[8:],
                               progress=False)
    vals = {h["step"]: h["val_loss"] for h in out["history"]}
    best_step = min(vals, key=vals.get)
    assert out["best"]["step"] == best_step
    assert trainer.evaluate()["eval_loss"] == pytest.approx(vals[best_step], rel=1e-5)


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path, smol_tokenizer):
    """2 micro-batches of 2 accumulated = 1 batch of 4 (equal-length rows, no dropout)."""
    rows = _rows(12)

    def final(tag, **kw):
        cfg = _cfg(max_steps=3, lora_dropout=0.0, eval_every=3, **kw)
        train_stage(build_tiny_llama(smol_tokenizer), smol_tokenizer, cfg, tmp_path / tag, rows[:8], [],
                    select_best=False, progress=False)
        return load_file(str(tmp_path / tag / "final" / "adapter_model.safetensors"))

    a, b = final("big", batch_size=4), final("acc", batch_size=2, gradient_accumulation=2)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_bf16_mixed_precision_trains_on_cpu(tmp_path, smol_tokenizer):
    rows = _rows(6)
    out, _ = train_stage(build_tiny_llama(smol_tokenizer), smol_tokenizer, _cfg(max_steps=2, mixed_precision="bf16"),
                         tmp_path, rows[:4], rows[4:], progress=False)
    assert out["history"][-1]["val_loss"] > 0


def test_config_checks():
    with pytest.raises(RecipeError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(RecipeError, match="learning_rate"):
        TrainConfig(learning_rate=0)
    with pytest.raises(RecipeError, match="eval_every"):
        TrainConfig(eval_every=0)


class Interrupt(Exception):
    pass


class CrashAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupt()


def test_resume_after_interrupt_matches_uninterrupted(tmp_path, smol_tokenizer):
    """Dropout on (0.1): the RNG state is restored too. The crash comes after the checkpoint of step 4 and before
    that of step 6 would be written (a partial one is discarded)."""
    rows = _rows(10)

    def final_weights(stage):
        return load_file(str(stage / "final" / "adapter_model.safetensors"))

    train_stage(build_tiny_llama(smol_tokenizer), smol_tokenizer, _cfg(), tmp_path / "a", rows[:8], rows[8:],
                select_best=False, progress=False)
    with pytest.raises(Interrupt):
        train_stage(build_tiny_llama(smol_tokenizer), smol_tokenizer, _cfg(), tmp_path / "b", rows[:8], rows[8:],
                    select_best=False, progress=False, callbacks=[CrashAt(5)])
    assert [p.name for p in complete_checkpoints(tmp_path / "b" / "checkpoints")] == ["checkpoint-4"]
    (tmp_path / "b" / "checkpoints" / "checkpoint-6").mkdir()  # as a kill during a save leaves it
    out, _ = train_stage(build_tiny_llama(smol_tokenizer), smol_tokenizer, _cfg(), tmp_path / "b", rows[:8], rows[8:],
                         select_best=False, progress=False)
    assert [h["micro_step"] for h in out["history"]] == [2, 4, 6]
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_soft_label_loss_is_cross_entropy_against_the_top_k_distribution():
    from llm_unlearn.training import soft_label_loss

    torch.manual_seed(0)
    B, L, V, k = 2, 5, 11, 3
    logits = torch.randn(B, L, V)
    labels = torch.full((B, L), -100)
    labels[0, 2], labels[1, 4] = 3, 7  # two supervised positions: (0, 1) and (1, 3)
    ids = torch.randint(0, V, (B, L, k))
    vals = torch.randn(B, L, k)
    got = soft_label_loss(logits, labels, ids, vals)
    want = []
    for b, t in ((0, 2), (1, 4)):
        p = torch.softmax(vals[b, t], -1)
        logq = torch.log_softmax(logits[b, t - 1], -1)
        want.append(-(p * logq[ids[b, t]]).sum())
    assert float(got) == pytest.approx(float(torch.stack(want).mean()), rel=1e-5)
    # a one-hot soft target (one logit far above the rest) is the hard-label cross-entropy
    vals_hot = torch.full((B, L, k), -1e4)
    vals_hot[..., 0] = 0.0
    ids_hot = ids.clone()
    ids_hot[0, 2, 0], ids_hot[1, 4, 0] = 3, 7
    hard = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert float(soft_label_loss(logits, labels, ids_hot, vals_hot)) == pytest.approx(float(hard), rel=1e-5)


def test_retain_guard_keeps_generic_text_closer_to_the_base(tmp_path, smol_tokenizer):
    """finetune.retain_weight (beyond the paper): KL(base || model) on generic text, the base being the same
    weights with the LoRA adapter off. Trained on labels that move the model, the guarded run stays much closer
    to the base on the generic rows than the unguarded one."""
    from llm_unlearn.retain import RetainBatches, RetainTerm
    from llm_unlearn.whp.finetune import WhpObjective

    def sharp_model():
        # A random tiny model predicts nearly uniformly (every KL ~0); scaled (tied) embeddings give it
        # confident predictions that training can move.
        model = build_tiny_llama(smol_tokenizer)
        with torch.no_grad():
            model.model.embed_tokens.weight.mul_(30)
        return model

    train = _rows(8, seed=1)
    for r in train:  # "generic labels": a fixed token everywhere, far from what the base predicts
        r["labels"] = [-100] + [123] * (len(r["input_ids"]) - 1)
    retain = _rows(6, seed=2)
    b = pad_batch(retain, 0, None)
    with torch.no_grad():
        ref = torch.log_softmax(sharp_model()(input_ids=b["input_ids"]).logits, -1).flatten(0, 1)

    def kl_to_base(weight):
        cfg = _cfg(max_steps=12, learning_rate=2e-2, lora_dropout=0.0, eval_every=4)
        guard = WhpObjective(RetainTerm(RetainBatches(retain, 2, 0), weight, "kl")) if weight else None
        _, trainer = train_stage(sharp_model(), smol_tokenizer, cfg, tmp_path / f"w{weight}", train, [],
                                 objective=guard, label_key="labels", select_best=False, progress=False)
        model = trainer.accelerator.unwrap_model(trainer.model).eval()
        with torch.no_grad():
            cur = torch.log_softmax(model(input_ids=b["input_ids"]).logits, -1).flatten(0, 1)
        return float(torch.nn.functional.kl_div(cur, ref, log_target=True, reduction="batchmean"))

    free, guarded = kl_to_base(0.0), kl_to_base(20.0)
    assert free > 1.0, "the labels should move the unguarded model"
    assert guarded < 0.2 * free, (free, guarded)  # measured: 7.0 vs 0.3


def test_report_to_tensorboard_needs_the_package(tmp_path, smol_tokenizer):
    """report_to: none by default; tensorboard when installed, else a clear error saying how to get it."""
    import importlib.util

    from llm_unlearn.training import training_args

    assert training_args(_cfg(), tmp_path, True, True, False).report_to in ([], "none", ["none"])
    if importlib.util.find_spec("tensorboard") is not None:
        assert training_args(_cfg(report_to="tensorboard"), tmp_path, True, True, False).report_to == ["tensorboard"]
    else:
        with pytest.raises(RecipeError, match="pip install tensorboard"):
            training_args(_cfg(report_to="tensorboard"), tmp_path, True, True, False)


def test_sam_perturbation_moves_rho_along_the_gradient_and_back():
    """SAM2 / SAM3 on hand-made parameters: the shift is rho * g / ||g|| (norm over all parameters), a parameter
    without a gradient stays, a zero gradient moves nothing, and undoing restores the weights exactly."""
    from llm_unlearn.robust import perturb_along_gradient, undo_perturbation

    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([[0.5]]))
    c = torch.nn.Parameter(torch.tensor([7.0]))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])  # ||g|| = 5
    shifts = perturb_along_gradient([a, b, c], 0.5)
    assert torch.allclose(a.detach(), torch.tensor([1.3, 2.0])) and torch.allclose(b.detach(), torch.tensor([[0.9]]))
    assert shifts[2] is None and float(c.detach()) == 7.0
    undo_perturbation([a, b, c], shifts)
    assert torch.equal(a.detach(), torch.tensor([1.0, 2.0])) and torch.equal(b.detach(), torch.tensor([[0.5]]))
    a.grad = torch.zeros(2)
    b.grad = None
    assert perturb_along_gradient([a, b], 0.5) == [None, None] and torch.equal(a.detach(), torch.tensor([1.0, 2.0]))


def test_sam_step_takes_the_gradient_at_the_perturbed_weights(tmp_path, smol_tokenizer):
    """SAM1-SAM3 in the trainer, against a plain reference: the gradient the optimizer sees in the first step is the
    loss's gradient at w + rho * g / ||g|| (computed by hand from the same starting weights and batch), and after the
    step the weights are those it started from (the perturbation is undone before the optimizer moves them)."""
    from llm_unlearn.losses import pad_batch

    rows = _rows(2)
    grab, seen = first_step_grads()

    def start():
        torch.manual_seed(0)
        return build_tiny_llama(smol_tokenizer)

    cfg = _cfg(max_steps=1, batch_size=2, lora_dropout=0.0, mixed_precision="no")
    train_stage(start(), smol_tokenizer, cfg, tmp_path / "sam", rows, [], select_best=False, progress=False,
                callbacks=[grab], sam_rho=0.05)
    sam_grads, weights = seen["grads"], seen["weights"]
    # the reference: the same LoRA model at the weights the trainer held before its step (nothing left perturbed)
    from llm_unlearn.training import wrap_lora

    model = wrap_lora(start(), cfg)
    params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    assert set(params) == set(weights)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n])
    batch = pad_batch(rows, smol_tokenizer.pad_token_id, None)
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    loss.backward()
    g = {n: p.grad.clone() for n, p in params.items()}
    norm = torch.sqrt(sum((v ** 2).sum() for v in g.values()))
    with torch.no_grad():
        for n, p in params.items():
            p.add_(0.05 * g[n] / norm)
            p.grad = None
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
    # the trainer clips the gradient's norm to 1 before its step: compare directions
    def unit(grads):
        flat = torch.cat([grads[n].flatten() for n in sorted(params)])
        return flat / flat.norm()

    sam, ref, plain = unit(sam_grads), unit({n: p.grad for n, p in params.items()}), unit(g)
    assert float(sam @ ref) > 0.99999, float(sam @ ref)
    assert float(sam @ plain) < 0.9999, float(sam @ plain)  # not the gradient at the weights themselves


def test_disruption_mask_by_hand():
    """DM1 / DM2: the retain gradient's running average (momentum 0.9, from zero) decides which entries of the main
    gradient stay; the retain gradient is added unmasked; a parameter with only one of the two keeps what it has."""
    from llm_unlearn.robust import DisruptionMask

    dm = DisruptionMask()
    main = [torch.tensor([1.0, -2.0, 3.0, 0.0]), torch.tensor([5.0]), None]
    retain = [torch.tensor([0.5, 0.5, -1.0, 1.0]), None, torch.tensor([2.0])]
    out = dm.combine(main, retain)
    # average 0.1 * retain = [+, +, -, +]; main's signs [+, -, +, 0]: only the first entry agrees
    assert torch.allclose(out[0], torch.tensor([1.5, 0.5, -1.0, 1.0]))
    assert torch.equal(out[1], torch.tensor([0.0])) and torch.equal(out[2], torch.tensor([2.0]))  # no average: masked
    assert dm.kept == [pytest.approx(1 / 4)]  # 1 of the 4 nonzero main entries
    out = dm.combine([torch.tensor([1.0, 1.0, 1.0, 1.0]), None, None],
                     [torch.tensor([-0.1, -1.0, 0.0, 0.0]), None, None])
    # average now 0.9 * [0.05, 0.05, -0.1, 0.1] + 0.1 * [-0.1, -1, 0, 0] = [0.035, -0.055, -0.09, 0.09]
    assert torch.allclose(out[0], torch.tensor([0.9, -1.0, 0.0, 1.0]))
    assert torch.allclose(dm.retain_avg[0], torch.tensor([0.035, -0.055, -0.09, 0.09]))


def test_disruption_masked_step_equals_a_plain_reference(tmp_path, smol_tokenizer):
    """DM1-DM2 in the trainer, against a plain reference loop: the first step's gradient is the main loss's gradient
    masked where its sign differs from (0.1 x) the retain loss's, plus the retain loss's gradient, from the same
    weights and batches; DM4: a method objective without a retain term is refused at its first step."""
    from llm_unlearn.losses import pad_batch, token_nll
    from llm_unlearn.training import Objective, wrap_lora

    rows, retain_rows = _rows(2), _rows(2, seed=5)
    retain_batch = pad_batch(retain_rows, smol_tokenizer.pad_token_id, None)

    class WithRetain(Objective):
        def second_loss(self, model, batch, micro_step):
            out = model(input_ids=retain_batch["input_ids"], attention_mask=retain_batch["attention_mask"]).logits
            return 0.5 * token_nll(out, retain_batch["labels"])

    grab, seen = first_step_grads()

    def start():
        torch.manual_seed(0)
        return build_tiny_llama(smol_tokenizer)

    cfg = _cfg(max_steps=1, batch_size=2, lora_dropout=0.0, mixed_precision="no")
    metrics, _ = train_stage(start(), smol_tokenizer, cfg, tmp_path / "dm", rows, [], objective=WithRetain(),
                             select_best=False, progress=False, callbacks=[grab], disruption_mask=True)
    assert 0 < metrics["disruption_mask_kept"] < 1
    model = start()
    torch.manual_seed(cfg.seed)  # as train_stage: the LoRA initialisation
    model = wrap_lora(model, cfg)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    batch = pad_batch(rows, smol_tokenizer.pad_token_id, None)
    token_nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
              batch["labels"]).backward()
    g_main = {n: p.grad.clone() for n, p in params.items()}
    for p in params.values():
        p.grad = None
    WithRetain().second_loss(model, None, 0).backward()
    ref = {}
    for n, p in params.items():
        r = p.grad
        ref[n] = g_main[n] * (torch.sign(g_main[n]) == torch.sign(0.1 * r)) + r

    def unit(grads):
        flat = torch.cat([grads[n].flatten() for n in sorted(params)])
        return flat / flat.norm()

    plain = {n: g_main[n] + params[n].grad for n in params}
    assert float(unit(seen["grads"]) @ unit(ref)) > 0.99999
    assert float(unit(seen["grads"]) @ unit(plain)) < 0.999  # not the unmasked sum
    with pytest.raises(RecipeError, match="disruption_mask needs a retain term"):
        train_stage(start(), smol_tokenizer, cfg, tmp_path / "dm2", rows, [], select_best=False, progress=False,
                    disruption_mask=True)


@pytest.mark.parametrize("method", ["whp", "npo"])
def test_disruption_mask_reaches_the_unlearning_stage_and_needs_a_retain_term(tmp_path, tiny_model_dir, small_corpus,
                                                                              monkeypatch, method):
    """The recipe's finetune.disruption_mask reaches the trainer of WHP's fine-tune and of a baseline's unlearning
    stage; DM4 at the recipe: a method without a retain term (or with its weight at 0) is refused before any stage."""
    import llm_unlearn.training as training
    from llm_unlearn.config import Recipe
    from llm_unlearn.pipeline import Pipeline

    seen = {}
    real = training.train_stage

    def spy(*args, **kw):
        if kw.get("desc") in ("unlearn", method):
            seen["mask"] = kw.get("disruption_mask")
            raise RuntimeError("stop here")
        return real(*args, **kw)

    monkeypatch.setattr(training, "train_stage", spy)
    small = {"max_steps": 1, "batch_size": 2, "target_modules": ["q_proj", "v_proj"]}
    recipe = Recipe.from_dict({"name": "t", "target": "Sherlock Holmes", "method": method,
                               "model": {"spec": str(tiny_model_dir)},
                               "corpus": {"path": str(small_corpus), "block_size": 64, "validation_fraction": 0.2},
                               "anchors": {"min_count": 1}, "reinforce": small, "labels": {"alphas": [5.0]},
                               "finetune": {**small, "disruption_mask": True, "retain_weight": 1.0,
                                            "retain_batch_size": 1},
                               "eval": {"enabled": False}})
    with pytest.raises(RuntimeError, match="stop here"):
        Pipeline(recipe, tmp_path / "run", progress=False).run_stages(until="export")
    assert seen["mask"] is True
    bad = {"whp": {"finetune": {"disruption_mask": True}}, "npo": {"npo": {"retain_weight": 0},
                                                                   "finetune": {"disruption_mask": True}}}[method]
    with pytest.raises(RecipeError, match="disruption_mask needs a retain term"):
        Recipe.from_dict({"method": method, "corpus": {"path": "x.txt"}, **bad}).validate()
