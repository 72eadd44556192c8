"""Meta-unlearning (``finetune.meta_relearn_step``, rules MU1-MU3 in llm_unlearn.robust): the relearner by hand, and
the trainer's gradient against a plain reference loop."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_llama
from transformers import TrainerCallback

from llm_unlearn.errors import RecipeError
from llm_unlearn.losses import pad_batch, token_nll
from llm_unlearn.robust import META_FORK_EVERY, MetaRelearner, own_text_loss
from llm_unlearn.training import TrainConfig, train_stage, wrap_lora


def test_relearner_by_hand():
    """MU1: a normalised step of the given length along the relearning gradient, on the relearner's own copy; a
    fork from the trained weights every META_FORK_EVERY calls. MU3: the trained weights come back bit for bit."""
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([[0.5]]))
    meta = MetaRelearner([a, b], step=0.5)
    trained = meta.enter()  # first call: forked, so the relearner is the trained weights
    assert torch.equal(a.detach(), torch.tensor([1.0, 2.0]))
    meta.relearn([torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])])  # ||g|| = 5: moves by 0.5 * g / 5
    meta.leave(trained)
    assert torch.equal(a.detach(), torch.tensor([1.0, 2.0])) and torch.equal(b.detach(), torch.tensor([[0.5]]))
    with torch.no_grad():
        a.add_(10.0)  # the optimizer moves the trained weights; the relearner keeps its own
    trained = meta.enter()
    assert torch.allclose(a.detach(), torch.tensor([0.7, 2.0])) and torch.allclose(b.detach(), torch.tensor([[0.1]]))
    meta.relearn([torch.zeros(2), None])  # a zero gradient moves nothing
    meta.leave(trained)
    assert torch.equal(a.detach(), torch.tensor([11.0, 12.0]))
    for _ in range(META_FORK_EVERY - 2):
        meta.leave(meta.enter())
    meta.enter()  # a fork: the relearner starts again from the trained weights
    assert torch.equal(a.detach(), torch.tensor([11.0, 12.0])) and torch.equal(b.detach(), torch.tensor([[0.5]]))


def test_own_text_loss_ignores_the_labels_and_the_padding(smol_tokenizer):
    """MU1's loss is the LM loss of the input_ids, whatever labels the batch carries (WHP's generic ones)."""
    model = build_tiny_llama(smol_tokenizer)
    rows = [{"input_ids": [5, 6, 7, 8, 9], "g": [1, 2, 3, 4, 5]}, {"input_ids": [10, 11, 12], "g": [1, 2, 3]}]
    batch = pad_batch(rows, smol_tokenizer.pad_token_id, "g")
    plain = pad_batch(rows, smol_tokenizer.pad_token_id, None)
    with torch.no_grad():
        got = own_text_loss(model, batch)
        ref = token_nll(model(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"]).logits,
                        plain["labels"])
    assert torch.allclose(got, ref)


class _Grab(TrainerCallback):
    """The trainable weights' gradients and values just before each optimizer step."""

    def __init__(self):
        self.grads, self.weights = [], []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.grads.append({n: p.grad.detach().clone() for n, p in trained})
        self.weights.append({n: p.detach().clone() for n, p in trained})


def test_meta_step_takes_the_gradient_at_the_relearners_weights(tmp_path, smol_tokenizer):
    """MU1-MU3 in the trainer, against a plain reference loop: the first step's gradient is the plain one (the
    relearner was just forked); the second is the loss's gradient at w0 - s * r0 / ||r0|| (r0: the own-text
    gradient at the starting weights), not at the trained weights, which are what the optimizer holds."""
    rows = [{"input_ids": list(range(100 + 7 * i, 148 + 7 * i))} for i in range(2)]

    def start():
        torch.manual_seed(0)
        return build_tiny_llama(smol_tokenizer)

    cfg = TrainConfig(target_modules=["q_proj", "v_proj"], max_steps=2, batch_size=2, learning_rate=5e-3,
                      lora_dropout=0.0, warmup_ratio=0.0, mixed_precision="no")
    grab = _Grab()
    train_stage(start(), smol_tokenizer, cfg, tmp_path / "meta", rows, [], select_best=False, progress=False,
                callbacks=[grab], meta_relearn_step=0.5)
    model = wrap_lora(start(), cfg)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    batch = pad_batch(rows, smol_tokenizer.pad_token_id, None)

    def grads_at(weights):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(weights[n])
                p.grad = None
        token_nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                  batch["labels"]).backward()
        return {n: p.grad.clone() for n, p in params.items()}

    def unit(g):
        flat = torch.cat([g[n].flatten() for n in sorted(params)])
        return flat / flat.norm()

    w0, w1 = grab.weights
    r0 = grads_at(w0)  # the default objective's loss is the own-text loss here
    assert float(unit(grab.grads[0]) @ unit(r0)) > 0.99999
    norm = torch.sqrt(sum((v ** 2).sum() for v in r0.values()))
    relearner = {n: w0[n] - 0.5 * r0[n] / norm for n in params}
    ref = grads_at(relearner)
    assert float(unit(grab.grads[1]) @ unit(ref)) > 0.99999
    assert float(unit(grab.grads[1]) @ unit(grads_at(w1))) < 0.9999  # not the gradient at the trained weights
    assert not all(torch.equal(w1[n], relearner[n]) for n in params)


def test_meta_settings_are_checked():
    from llm_unlearn.config.training import FinetuneConfig

    for bad, match in (({"meta_relearn_step": -1.0}, "meta_relearn_step"),
                       ({"meta_relearn_step": 0.5, "sam_rho": 0.1}, "sam_rho or cir_components"),
                       ({"meta_relearn_step": 0.5, "cir_components": 4}, "sam_rho or cir_components")):
        with pytest.raises(RecipeError, match=match):
            FinetuneConfig(**bad).validate()


@pytest.mark.parametrize("method", ["whp", "npo"])
def test_meta_unlearning_reaches_the_unlearning_stage(tmp_path, tiny_model_dir, small_corpus, method):
    """The recipe's finetune.meta_relearn_step reaches WHP's fine-tune and a baseline's unlearning stage: the kept
    weights differ from the same run without it."""
    from llm_unlearn.config import Recipe
    from llm_unlearn.models import load_model
    from llm_unlearn.pipeline import Pipeline
    from tests.test_pipeline import tiny_recipe

    out = {}
    for step in (0.0, 0.5):
        data = tiny_recipe(tiny_model_dir, small_corpus)
        data["method"] = method
        data["finetune"]["meta_relearn_step"] = step
        run = tmp_path / f"run{step}"
        Pipeline(Recipe.from_dict(data), run, progress=False).run_stages(until="export")
        model, _ = load_model(str(run / "export" / "model"), dtype="float32", device="cpu")
        out[step] = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert any(not torch.equal(out[0.0][n], out[0.5][n]) for n in out[0.0])
