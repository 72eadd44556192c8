"""Collapse of irrelevant representations (``finetune.cir_components``, rules CIR1-CIR4 in llm_unlearn.robust):
the bases against a plain PCA, the rebuilt gradient against autograd, the collapsed step against a hand-built one."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_llama, first_step_grads

from llm_unlearn.errors import RecipeError
from llm_unlearn.losses import pad_batch, token_nll
from llm_unlearn.robust import CollapseIrrelevant, collapse, collapse_basis, linear_maps
from llm_unlearn.training import Objective, TrainConfig, train_stage, wrap_lora


def _rows(n, length=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(100, 400, (length - i,), generator=g).tolist()} for i in range(n)]


def _stats(v):
    return v.sum(0), v.T @ v, v.shape[0]


def test_collapse_basis_by_hand():
    """CIR1: the span of the mean and the top k-1 principal components, orthonormal; CIR2: what collapse leaves
    is orthogonal to it, and a vector already orthogonal is left as it is."""
    # points spread along x (variance 100) and a little along y (variance 1), centred at (0, 0, 5)
    pts = torch.tensor([[10.0, 1, 5], [-10, -1, 5], [10, -1, 5], [-10, 1, 5]], dtype=torch.float64)
    b1 = collapse_basis(*_stats(pts), k=1)
    assert torch.allclose(b1.T @ b1, torch.diag(torch.tensor([0.0, 0, 1])))  # the mean's direction only
    b2 = collapse_basis(*_stats(pts), k=2)
    assert b2.shape == (2, 3)
    assert torch.allclose(b2 @ b2.T, torch.eye(2), atol=1e-6)
    span = b2.T @ b2
    assert torch.allclose(span, torch.diag(torch.tensor([1.0, 0, 1])), atol=1e-6)  # mean (z) and the top PC (x)
    v = torch.tensor([[3.0, 4.0, 5.0]])
    assert torch.allclose(collapse(v, b2), torch.tensor([[0.0, 4.0, 0.0]]), atol=1e-6)
    assert torch.equal(collapse(v, torch.zeros(0, 3)), v)
    assert collapse_basis(*_stats(pts), k=0).shape == (0, 3)
    assert collapse_basis(*_stats(pts), k=9).shape == (3, 3)  # never more than the dimension


def _rebuilt_is_autograds(model, cir, backward) -> dict:
    """CIR2's oracle for one backward: with ``cir``'s bases as they are (empty), every trained weight's rebuilt
    gradient equals autograd's; returns autograd's."""
    cir.capturing = True
    backward()
    cir.capturing = False
    auto = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    cir.rebuild()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, auto[n], rtol=1e-4, atol=1e-6), n
    return auto


@pytest.mark.parametrize("full", [False, True])
def test_rebuilt_gradient_with_empty_bases_is_autograds(smol_tokenizer, full):
    """CIR2's oracle: from the captured activations and output gradients with nothing collapsed, the rebuilt
    gradient of every trained linear map (LoRA pairs with dropout, or full weights) equals autograd's."""
    torch.manual_seed(0)
    model = build_tiny_llama(smol_tokenizer).train()
    if not full:
        model = wrap_lora(model, TrainConfig(target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.1))
        with torch.no_grad():  # B starts at zero; give it weights so dA is not trivially zero
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
    cir = CollapseIrrelevant(model, 2)
    assert len(cir.maps) == (6 if not full else 14)  # 3 LoRA pairs x 2 layers; 7 linears x 2 layers, no head
    cir.ready = True  # empty bases: nothing is collapsed
    batch = pad_batch(_rows(3), smol_tokenizer.pad_token_id, None)

    def backward():
        torch.manual_seed(1)
        token_nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                  batch["labels"]).backward()

    auto = _rebuilt_is_autograds(model, cir, backward)
    assert all(not m.xs and not m.gs for m in cir.maps)  # the captured vectors are released
    assert full or auto[next(n for n in auto if "lora_A" in n)].abs().sum() > 0


class _WithRetain(Objective):
    def __init__(self, batch):
        self.batch = batch

    def second_loss(self, model, batch, micro_step):
        b = self.batch
        return 0.5 * token_nll(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])


def test_collapsed_step_against_a_plain_reference(tmp_path, smol_tokenizer):
    """CIR1-CIR3 in the trainer, full fine-tune: the bases equal a plain PCA (SVD of the centred vectors) of the
    training rows' activations and output gradients at the starting weights, first tokens and padding left out;
    the first step's gradient is the main gradient rebuilt from collapsed vectors (orthogonal to both bases on
    each side) plus the retain term's plain gradient; and it is not the plain gradient."""
    rows = _rows(4)
    retain = pad_batch(_rows(2, seed=7), smol_tokenizer.pad_token_id, None)
    grab, seen = first_step_grads()

    def start():
        torch.manual_seed(0)
        return build_tiny_llama(smol_tokenizer)

    cfg = TrainConfig(full_finetune=True, max_steps=1, batch_size=4, mixed_precision="no", warmup_ratio=0.0,
                      learning_rate=1e-3)
    metrics, trainer = train_stage(start(), smol_tokenizer, cfg, tmp_path / "cir", rows, [],
                                   objective=_WithRetain(retain), select_best=False, progress=False,
                                   callbacks=[grab], cir_components=3)
    assert metrics["cir"]["directions"] == {"x": 3, "g": 4} and metrics["cir"]["maps"] == 14
    maps = {m.name: m for m in trainer.cir.maps}

    # the plain reference, at the starting weights
    model = start().train()
    params = dict(model.named_parameters())
    mods = dict(model.named_modules())
    xs, gs = {}, {}
    def keep(store, name, v):  # the main term's vectors only: the retain pass below does not replace them
        store.setdefault(name, v.detach())

    for name in maps:
        mods[name].register_forward_hook(lambda m, a, o, name=name: keep(xs, name, a[0]))
        mods[name].register_full_backward_hook(lambda m, gi, go, name=name: keep(gs, name, go[0]))
    batch = pad_batch(rows, smol_tokenizer.pad_token_id, None)
    token_nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
              batch["labels"]).backward()
    main = {n: p.grad.clone() for n, p in params.items()}
    model.zero_grad()
    _WithRetain(retain).second_loss(model, None, 0).backward()
    retain_grad = {n: p.grad.clone() for n, p in params.items()}
    tokens = batch["attention_mask"].bool().clone()
    tokens[:, 0] = False

    def plain_pca_span(v, k):
        v = v[tokens].double()
        mean = v.mean(0)
        _, _, vt = torch.linalg.svd(v - mean, full_matrices=False)
        q, _ = torch.linalg.qr(torch.cat([mean[None], vt[:k - 1]]).T)
        return q @ q.T

    ref = {n: main[n] + retain_grad[n] for n in params}  # CIR3: outside linear maps, the plain main + retain
    for name, m in maps.items():
        for key, vecs, k in (("x", xs, 3), ("g", gs, 4)):
            span = m.bases[key].T.double() @ m.bases[key].double()
            assert torch.allclose(span, plain_pca_span(vecs[name], k), atol=1e-4), (name, key)
        x = collapse(xs[name].reshape(-1, xs[name].shape[-1]), m.bases["x"])
        g = collapse(gs[name].reshape(-1, gs[name].shape[-1]), m.bases["g"])
        ref[f"{name}.weight"] = g.T @ x + retain_grad[f"{name}.weight"]

    def flat(grads):
        return torch.cat([grads[n].flatten() for n in sorted(params)])

    got, want, plain = flat(seen["grads"]), flat(ref), flat({n: main[n] + retain_grad[n] for n in params})
    assert float(got @ want / (got.norm() * want.norm())) > 0.99999
    assert float(got @ plain / (got.norm() * plain.norm())) < 0.999  # not the plain gradient
    scale = float(got.norm() / want.norm())  # the Trainer clips the whole gradient to max_grad_norm
    for name, m in maps.items():  # the collapsed main step is orthogonal to both bases
        step = seen["grads"][f"{name}.weight"] / scale - retain_grad[f"{name}.weight"]
        assert float((step @ m.bases["x"].T).abs().max()) < 1e-4 * float(step.abs().max()), name
        assert float((m.bases["g"] @ step).abs().max()) < 1e-4 * float(step.abs().max()), name


def test_cir_settings_are_checked(smol_tokenizer):
    """CIR4 and the setting's range, at the recipe; a model with nothing trained in a linear map is refused."""
    from llm_unlearn.config import Recipe

    for fin, match in (({"cir_components": -1}, "cir_components must be an integer"),
                       ({"cir_components": 4, "sam_rho": 0.1}, "while sam_rho is set"),
                       ({"cir_components": 4, "gradient_checkpointing": True}, "with gradient_checkpointing")):
        with pytest.raises(RecipeError, match=match):
            Recipe.from_dict({"corpus": {"path": "x.txt"}, "finetune": fin}).validate()
    model = build_tiny_llama(smol_tokenizer).requires_grad_(False)
    assert linear_maps(model) == []
    with pytest.raises(RecipeError, match="no trained linear weight"):
        CollapseIrrelevant(model, 2)


@pytest.mark.parametrize("method", ["whp", "npo"])
def test_cir_trains_the_unlearning_stage_of_a_run(tmp_path, tiny_model_dir, small_corpus, method):
    """The recipe's finetune.cir_components reaches WHP's fine-tune and a baseline's unlearning stage (LoRA, with
    the retain term), and the stage records the directions it collapsed."""
    import json

    from llm_unlearn.config import Recipe
    from llm_unlearn.pipeline import Pipeline

    small = {"max_steps": 2, "batch_size": 2, "target_modules": ["q_proj", "v_proj"]}
    recipe = Recipe.from_dict({"name": "t", "target": "Sherlock Holmes", "method": method,
                               "model": {"spec": str(tiny_model_dir)},
                               "corpus": {"path": str(small_corpus), "block_size": 64, "validation_fraction": 0.2},
                               "anchors": {"min_count": 1}, "reinforce": small, "labels": {"alphas": [5.0]},
                               "finetune": {**small, "cir_components": 2, "retain_weight": 1.0,
                                            "retain_batch_size": 1},
                               "eval": {"enabled": False}})
    run = tmp_path / "run"
    Pipeline(recipe, run, progress=False).run_stages(until="export")
    manifest = json.loads((run / "manifest.json").read_text())
    stage = "finetune" if method == "whp" else "unlearn"
    result = manifest["stages"][stage]["metrics"]
    assert result["cir"]["directions"] == {"x": 2, "g": 3} and result["cir"]["maps"] == 4


def test_collapse_composes_with_quantization_aware_training(smol_tokenizer):
    """CIR3 with QA2/QA4: on grid-trained layers CIR hooks only the weights on a grid (the frozen rest is not a
    map), and with empty bases its rebuilt gradient is the straight-through gradient autograd gives the latent
    weight; a collapsed step still leaves weights that are their own encoding after QA5."""
    from llm_unlearn import gguf_formats as G
    from llm_unlearn.quant_aware import grid_training

    torch.manual_seed(0)
    model = build_tiny_llama(smol_tokenizer).train()
    gt = grid_training(model, "Q4_1", "unused", True, ["gate_proj", "up_proj", "down_proj"])
    cir = CollapseIrrelevant(model, 2)
    assert sorted(m.name for m in cir.maps) == sorted(n for n, _ in model.named_modules()
                                                      if n.rsplit(".", 1)[-1] in ("gate_proj", "up_proj", "down_proj"))
    batch = pad_batch(_rows(3), smol_tokenizer.pad_token_id, None)

    def loss_of(b):
        return token_nll(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])

    cir.ready = True  # empty bases first: the oracle
    auto = _rebuilt_is_autograds(model, cir, lambda: loss_of(batch).backward())
    model.zero_grad(set_to_none=True)
    cir.collect(model, [batch], loss_of)  # now with bases: the step differs from autograd's and stays on the grid
    cir.capturing = True
    loss_of(batch).backward()
    cir.capturing = False
    cir.rebuild()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    differs = False
    for n, p in model.named_parameters():
        if p.requires_grad:
            differs |= not torch.allclose(p.grad, auto[n], rtol=1e-2, atol=1e-5)
    assert differs
    opt.step()
    gt.finish(model)
    for m in cir.maps:
        w = m.inp.weight.data
        assert torch.equal(G.round_trip(w, "Q4_1")[0], w), m.name


def test_cir_with_quantization_aware_full_finetune_in_a_run(tmp_path, tiny_model_dir, small_corpus):
    """The two options together in a run: CIR collapses only the weights on the grid (q_proj and v_proj, 2 layers)
    and the exported weights are their own Q4_0 encoding (QA5)."""
    import json

    from llm_unlearn import gguf_formats as G
    from llm_unlearn.config import Recipe
    from llm_unlearn.gguf_formats import quantized_linears
    from llm_unlearn.models import load_model
    from llm_unlearn.pipeline import Pipeline
    from tests.test_pipeline import tiny_recipe

    data = tiny_recipe(tiny_model_dir, small_corpus)
    data["finetune"].update(full_finetune=True, quantization_aware="Q4_0", learning_rate=5e-2, cir_components=2)
    run = tmp_path / "run"
    Pipeline(Recipe.from_dict(data), run, progress=False).run_stages(until="export")
    result = json.loads((run / "manifest.json").read_text())["stages"]["finetune"]["metrics"]
    assert result["cir"]["maps"] == 4
    out, _ = load_model(str(run / "export" / "model"), dtype="float32", device="cpu")
    o = dict(out.named_parameters())
    for name in quantized_linears(out):
        if name.rsplit(".", 1)[-1] in ("q_proj", "v_proj"):
            w = o[f"{name}.weight"].data
            assert torch.equal(G.round_trip(w, "Q4_0")[0], w), name


def test_cir_on_several_processes_is_refused_before_any_stage(tmp_path, tiny_model_dir, small_corpus, monkeypatch):
    """CIR4 / preflight P7: a launch of several processes whose run goes as far as the fine-tune is refused before
    the first stage writes anything; a labels-only run of the same recipe, or one process, is not refused."""
    from llm_unlearn.config import Recipe
    from llm_unlearn.pipeline import Pipeline

    small = {"max_steps": 2, "batch_size": 2, "target_modules": ["q_proj", "v_proj"]}
    recipe = Recipe.from_dict({"name": "t", "target": "Sherlock Holmes", "model": {"spec": str(tiny_model_dir)},
                               "corpus": {"path": str(small_corpus), "block_size": 64, "validation_fraction": 0.2},
                               "anchors": {"min_count": 1}, "reinforce": small, "labels": {"alphas": [5.0]},
                               "finetune": {**small, "cir_components": 2}, "eval": {"enabled": False}})
    run = tmp_path / "run"
    pipe = Pipeline(recipe, run, progress=False)  # before WORLD_SIZE: it sets up accelerate's state
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RecipeError, match=r"cir_components=2 trains on one process .*started 2.*--num_processes 1"):
        pipe.plan(until="export")
    assert not (run / "corpus").exists()
    assert pipe.plan(until="labels")  # labels may use several processes
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert pipe.plan(until="export")
