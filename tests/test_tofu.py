"""TOFU benchmark: file formats, TOFU's metrics against hand-computed values and scipy's KS test, the
chat-format labels, the FLOPs estimate, and a tiny end-to-end run (target/retain training + eval + WHP)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import DATA, data_path

from llm_unlearn.tofu import metrics as M
from llm_unlearn.tofu.data import QA_PER_AUTHOR, TofuDataError, build_tofu_data, load_split, read_records

TOFU = DATA / "tofu"


# ---- loading (TOFU-D1..D4) -----------------------------------------------------------------------------------
def test_read_records_handles_every_layout(tmp_path):
    """TOFU-D1: several arrays a line, one per line, JSON lines of objects, commas between values."""
    a = [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}]
    b = [{"question": "q3", "answer": "a3"}]
    layouts = {
        "two_arrays_one_line.json": json.dumps(a) + json.dumps(b),
        "arrays_per_line.json": json.dumps(a) + "\n" + json.dumps(b) + "\n",
        "jsonl.json": "\n".join(json.dumps(r) for r in a + b),
        "commas.json": json.dumps(a) + ",\n" + json.dumps(b[0]),
    }
    for name, text in layouts.items():
        (tmp_path / name).write_text(text)
        assert [r["question"] for r in read_records(tmp_path / name)] == ["q1", "q2", "q3"], name
    (tmp_path / "bad.json").write_text(json.dumps(a) + "\n[{\"question\": ")
    with pytest.raises(TofuDataError, match="not valid JSON"):
        read_records(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text("\n")
    with pytest.raises(TofuDataError, match="no records"):
        read_records(tmp_path / "empty.json")


def test_multiple_choice_records_without_perturbed_file(tmp_path):
    """TOFU-D2: options become the perturbed answers when no *_perturbed file exists."""
    rec = {"question": "Capital of France?", "option1": "Berlin", "option2": "Paris", "option3": "Rome",
           "option4": "Madrid", "answer": "Paris"}
    (tmp_path / "world_facts.json").write_text(json.dumps([rec]))
    item = load_split(tmp_path, "world_facts")[0]
    assert item.answer == "Paris" and item.perturbed_answers == ("Berlin", "Rome", "Madrid")
    (tmp_path / "real_authors.json").write_text(json.dumps([{**rec, "answer": "Lyon"}]))
    with pytest.raises(TofuDataError, match="not among its options"):
        load_split(tmp_path, "real_authors")


def test_every_bundled_file_loads_and_has_tofu_structure():
    data_path("tofu")
    sizes = {"full": 4000, "retain90": 3600, "retain95": 3800, "retain99": 3960, "forget01": 40, "forget05": 200,
             "forget10": 400, "retain_perturbed": 400, "holdout01": 40, "holdout05": 200, "holdout10": 400,
             "real_authors": 100, "world_facts": 117, "real_authors_perturbed": 100, "world_facts_perturbed": 117}
    for name, n in sizes.items():
        items = load_split(TOFU, name)
        assert len(items) == n, name
        if name.startswith("forget") or name == "retain_perturbed":
            assert all(it.paraphrased_answer and len(it.perturbed_answers) == 5 for it in items), name
        if name.startswith(("real", "world")):
            assert all(len(it.perturbed_answers) == 3 for it in items), name
    full = load_split(TOFU, "full")
    assert full[0].author == 0 and full[-1].author == 199
    # TOFU-D4, the full configuration: the files' own split
    d = build_tofu_data(TOFU, "forget05")
    assert len(d.forget_authors) == 10 and d.forget_authors[-1] == 199
    assert len(d.retain_train) == 3800 and len(d.target_train) == 4000 and len(d.forget_eval) == 200
    assert len(d.retain_eval) == 400 and len(d.real_authors) == 100 and len(d.world_facts) == 117


def test_cpu_subset_keeps_tofu_structure():
    """TOFU-D4: forget = the last authors, their rows of forgetXX_perturbed.json; retain = the first ones."""
    data_path("tofu")
    d = build_tofu_data(TOFU, "forget10", authors=16, eval_retain_items=40, eval_general_items=40)
    assert d.forget_authors == [198, 199] and d.retain_authors == list(range(14))
    forget_rows = load_split(TOFU, "forget10")
    assert [it.question for it in d.forget_eval] == [it.question for it in forget_rows[-40:]]
    assert len(d.target_train) == 16 * QA_PER_AUTHOR and len(d.retain_train) == 14 * QA_PER_AUTHOR
    assert {it.author for it in d.forget_train} == {198, 199}
    assert {it.author for it in d.retain_eval} <= set(range(14)) and len(d.retain_eval) == 40
    assert len({it.author for it in d.retain_eval}) == 14  # spread over every retain author
    assert len(d.real_authors) == 40 and len(d.world_facts) == 40
    with pytest.raises(TofuDataError, match="unknown TOFU split"):
        build_tofu_data(TOFU, "forget20", authors=16)
    # the CPU recipe's shape: 12 authors, the last 2 forgotten
    d = build_tofu_data(TOFU, "forget10", authors=12, forget_authors=2, eval_retain_items=40)
    assert d.forget_authors == [198, 199] and d.retain_authors == list(range(10)) and len(d.forget_eval) == 40
    with pytest.raises(TofuDataError, match="forget_authors"):
        build_tofu_data(TOFU, "forget10", authors=12, forget_authors=12)


# ---- metrics (TOFU-M1..M8) -----------------------------------------------------------------------------------
def test_probabilities_by_hand():
    # TOFU-M1: exp(-loss) averaged: losses ln2 and ln4 -> (1/2 + 1/4) / 2
    assert M.answer_probability([math.log(2), math.log(4)]) == pytest.approx(0.375)
    # TOFU-M2: p(true)=1/2, wrong 1/4 and 1/4 -> 0.5 / (0.5 + 0.5) = 0.5; p(true)=1/2, wrong 1/8,1/8 -> 2/3
    wrong = [[math.log(4), math.log(4)], [math.log(8), math.log(8)]]
    assert M.choice_probability([math.log(2), math.log(2)], wrong) == pytest.approx((0.5 + 2 / 3) / 2)


def test_truth_ratio_and_aggregates_by_hand():
    # TOFU-M4: R = P~(perturbed) / P~(paraphrased); paraphrase loss ln2 (p=1/2), perturbed losses ln4, ln16 ->
    # geometric mean of 1/4 and 1/16 is 1/8 -> R = (1/8) / (1/2) = 1/4
    r = M.truth_ratios([math.log(2), math.log(2)], [[math.log(4), math.log(16)], [math.log(2), math.log(2)]])
    assert r == pytest.approx([0.25, 1.0])
    # TOFU-M5: forget mean(min(R, 1/R)) = (0.25 + 1) / 2; utility mean(max(0, 1 - R)) = (0.75 + 0) / 2
    assert M.truth_ratio_forget(r) == pytest.approx(0.625)
    assert M.truth_ratio_utility(r) == pytest.approx(0.375)
    assert M.truth_ratio_utility([4.0]) == 0.0  # perturbed more likely than the truth: clipped at 0
    assert M.truth_ratio_forget([4.0]) == pytest.approx(0.25)


def test_forget_quality_is_scipy_ks_p_value():
    """TOFU-M6 on a pair whose exact two-sided p-value is known: disjoint samples of 5 -> D = 1,
    p = 2 / C(10, 5) = 2/252; identical samples -> p = 1."""
    from scipy.stats import ks_2samp

    x, y = [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]
    fq = M.forget_quality(x, y)
    assert fq["ks_statistic"] == 1.0 and fq["forget_quality"] == pytest.approx(2 / 252)
    assert fq["forget_quality"] == pytest.approx(ks_2samp(x, y).pvalue)
    assert M.forget_quality(x, x)["forget_quality"] == 1.0
    # KS on 1/R (TOFU's code) gives the same p-value as on R
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0, 1, 30), rng.lognormal(0.5, 1, 30)
    assert M.forget_quality(a, b)["forget_quality"] == pytest.approx(M.forget_quality(1 / a, 1 / b)["forget_quality"])


def test_model_utility_is_harmonic_mean_of_nine():
    """TOFU-M7: hmean; by hand for nine values 0.5 x 3, 0.25 x 3, 1 x 3: 9 / (3*2 + 3*4 + 3*1) = 9/21."""
    assert M.model_utility([0.5] * 3 + [0.25] * 3 + [1.0] * 3) == pytest.approx(9 / 21)
    assert M.model_utility([0.5] * 8 + [0.0]) == 0.0
    with pytest.raises(ValueError):
        M.model_utility([0.5, float("nan")])


def test_rouge_l_recall_by_hand():
    """TOFU-M3: LCS of 'the cat on mat' in 'the cat sat on the mat' is 4 of the reference's 6 tokens."""
    assert M.rouge_l_recall("the cat sat on the mat", "the cat on mat") == pytest.approx(4 / 6)
    assert M.rouge_l_recall("Paris", "It is Paris.") == 1.0


def test_summarize_and_efficiency():
    def item(a, p, pert, rouge):
        return {"answer_loss": a, "paraphrased_loss": p, "perturbed_losses": pert, "rougeL_recall": rouge}

    ln = math.log
    per_item = {"forget": [item(ln(2), ln(2), [ln(4), ln(16)], 1.0)],
                "retain": [item(ln(2), ln(2), [ln(4), ln(16)], 0.5)],
                "real_authors": [item(ln(2), ln(2), [ln(4), ln(4)], 1.0)],
                "world_facts": [item(ln(2), ln(2), [ln(8), ln(8)], 1.0)]}
    s = M.summarize(per_item, retain_forget_ratios=[0.25])
    assert s["splits"]["retain"] == {"probability": 0.5, "rougeL_recall": 0.5, "truth_ratio": 0.75, "items": 1}
    assert s["splits"]["real_authors"]["probability"] == pytest.approx(0.5)  # 1/2 / (1/2 + 1/4 + 1/4)
    assert s["splits"]["world_facts"]["truth_ratio"] == pytest.approx(0.75)  # R = (1/8)/(1/2)
    nine = [0.5, 0.5, 0.75, 0.5, 1.0, 0.5, 2 / 3, 1.0, 0.75]
    assert s["model_utility"] == pytest.approx(len(nine) / sum(1 / v for v in nine))
    assert s["forget_truth_ratios"] == pytest.approx([0.25]) and s["forget_quality"] == 1.0
    eff = M.efficiency(30.0, 300.0, 2e12, 1e13)
    assert eff == {"time_ratio": pytest.approx(0.1), "flops_ratio": pytest.approx(0.2)}


# ---- chat format and FLOPs ------------------------------------------------------------------------------------
def test_labels_cover_answer_and_end_of_turn(smol_tokenizer):
    """TOFU-C1/C2."""
    from llm_unlearn.chat_format import encode_qa

    enc = encode_qa(smol_tokenizer, "Who wrote Zorblax?", "Mira Quell wrote it.")
    supervised = [t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != -100]
    assert smol_tokenizer.decode(supervised) == "Mira Quell wrote it.<|im_end|>"
    assert "Who wrote Zorblax?" in smol_tokenizer.decode(enc["input_ids"])
    assert enc["labels"][0] == -100


def test_template_boilerplate_is_vetoed_as_anchor(smol_tokenizer):
    """TOFU-C3: SmolLM2's default system prompt names the model and its maker in every QA of the corpus."""
    from llm_unlearn.chat_format import template_terms

    terms = template_terms(smol_tokenizer)
    assert {"SmolLM", "Hugging Face"} <= set(terms) and not any("im_start" in t for t in terms)


def test_flop_counter_counts_passes(tiny_llama):
    """TOFU-F1: 2N per inference token, 6N per full-training token, 4N + 2T when only T weights train (the MLP
    only, with the embedding frozen), about 4N for a LoRA adapter."""
    import torch

    from llm_unlearn.tofu.flops import count_flops, model_size, trained_size
    from llm_unlearn.training import TrainConfig, wrap_lora

    model, _ = tiny_llama
    n = model_size(model)
    ids = torch.ones((2, 7), dtype=torch.long)
    with count_flops(n, model.config.vocab_size) as c:
        with torch.no_grad():
            model(input_ids=ids)
        model(input_ids=ids).logits.sum().backward()
    assert c.inference_tokens == 14 and c.trained_tokens == 14
    assert c.flops == pytest.approx(2 * n * 14 + 6 * n * 14)
    assert model.config.tie_word_embeddings and n < sum(v.numel() for v in model.state_dict().values())  # tied: once
    for name, p in model.named_parameters():
        p.requires_grad_(".mlp." in name)
    mlp = trained_size(model)
    assert 0 < mlp < n / 2
    with count_flops(n, model.config.vocab_size) as c:
        model(input_ids=ids).logits.sum().backward()
    assert c.flops == pytest.approx(14 * (4 * n + 2 * mlp))  # not 6N: the embedding is frozen, the MLP is not
    lora = wrap_lora(model.requires_grad_(False), TrainConfig(target_modules=["q_proj", "v_proj"]))
    with count_flops(n, model.config.vocab_size) as c:
        lora(input_ids=ids).logits.sum().backward()
    assert c.flops == pytest.approx(14 * (4 * n + 2 * trained_size(lora)))
    assert c.flops < 14 * 4.1 * n


# ---- end to end on a tiny model ----------------------------------------------------------------------------
def _tiny_tofu(folder, authors=3):
    """A TOFU-shaped folder: `authors` x 20 QA; the last author is the forget set (forget10 -> 1 author of 3)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["Ava Lind", "Bo Renn", "Cy Marr", "Di Voss"][:authors]
    full = [{"question": f"What is fact {k} about {name}?", "answer": f"{name} likes item {k}."}
            for name in names for k in range(QA_PER_AUTHOR)]
    pert = [{**qa, "paraphrased_answer": qa["answer"].replace("likes", "enjoys"),
             "perturbed_answer": [qa["answer"].replace("item", w) for w in ("tea", "rain", "jazz", "salt", "rope")]}
            for qa in full]
    half = len(full) // 2
    (folder / "full.json").write_text(json.dumps(full[:half]) + "\n" + json.dumps(full[half:]) + "\n")
    (folder / "forget10_perturbed.json").write_text(json.dumps(pert[-QA_PER_AUTHOR:]))
    (folder / "retain_perturbed.json").write_text(json.dumps(pert[:QA_PER_AUTHOR]))
    mc = [{"question": f"Which colour is number {k}?", "answer": "red", "perturbed_answer": ["blue", "green", "tan"]}
          for k in range(4)]
    (folder / "real_authors_perturbed.json").write_text(json.dumps(mc))
    (folder / "world_facts_perturbed.json").write_text(json.dumps(mc))
    return folder


def _tiny_config(model_dir, tmp_path, methods: list, unlearn: dict, data: dict) -> dict:
    """A TOFU benchmark config on a tiny model: one short training epoch, small evaluation sets."""
    return {"model": str(model_dir), "split": "forget10", "methods": methods, "device": "cpu",
            "model_cache": str(tmp_path / "cache"), "data": {"eval_retain_items": 4, "eval_general_items": 2, **data},
            "train": {"learning_rate": 1e-3, "epochs": 1, "batch_size": 8, "gradient_accumulation": 1,
                      "warmup_epochs": 0},
            "eval": {"batch_size": 8, "max_new_tokens": 4}, "unlearn": unlearn}


def test_tiny_end_to_end_benchmark(tmp_path, tiny_model_dir, monkeypatch):
    """Target/retain training (cached by content), evaluation, WHP from the target model, table and plot."""
    from llm_unlearn.tofu.bench import TofuBenchConfig, run_tofu_benchmark

    data_dir = _tiny_tofu(tmp_path / "tofu")
    whp = {"corpus.block_size": 64, "corpus.validation_fraction": 0.2, "anchors.min_count": 2,
           "reinforce.max_steps": 1, "reinforce.target_modules": ["q_proj", "v_proj"], "labels.alphas": [5.0],
           "finetune.max_steps": 1, "finetune.target_modules": ["q_proj", "v_proj"]}
    cfg = TofuBenchConfig.from_dict(_tiny_config(tiny_model_dir, tmp_path, ["whp"], {"whp": whp},
                                                 {"path": str(data_dir), "authors": 3, "eval_forget_items": 6}))
    out = tmp_path / "bench"
    res = run_tofu_benchmark(cfg, out, progress=False)
    assert res["data"]["target_train_qa"] == 60 and res["data"]["retain_train_qa"] == 40
    models = res["models"]
    assert set(models) == {"base", "target", "retain", "whp"}
    assert models["retain"]["forget_quality"] == 1.0  # the retain model against itself
    for name in ("target", "retain", "whp"):
        assert 0 <= models[name]["model_utility"] <= 1 and 0 <= models[name]["forget_quality"] <= 1
    w = models["whp"]
    assert w["unlearn_seconds"] > 0 and w["unlearn_flops"] > 0
    assert w["time_ratio"] == pytest.approx(w["unlearn_seconds"] / res["retain_model"]["wall_seconds"])
    assert res["retain_model"]["trained_tokens"] > 0 and res["retain_model"]["flops"] > 0
    assert (out / "results.md").read_text().count("| whp |") == 1 and (out / "tofu_plot.png").stat().st_size > 0
    assert {c["check"][:6] for c in res["sanity"]} >= {"target", "retain"}
    # TOFU-S1: no check compares the retain model with itself (always 1: a check that cannot fail)
    assert not any("itself" in c["check"] for c in res["sanity"])
    # TOFU-S2: forget quality worded as the test, with its item count and the base model's figure
    table = (out / "results.md").read_text()
    assert f"on {res['forget_items']} items: " in table and "base model" in table and "fails to reject" in table
    # a rerun reuses the cached models and results: no training, no unlearning
    import llm_unlearn.tofu.models as tm

    monkeypatch.setattr(tm, "train_qa_model", lambda *a, **k: pytest.fail("retrained a cached model"))
    res2 = run_tofu_benchmark(cfg, out, progress=False)
    assert res2["models"]["whp"]["forget_quality"] == w["forget_quality"]
    assert len(list((tmp_path / "cache").glob("target-*"))) == 1


def test_unlearning_texts_one_per_author_for_whp_one_per_qa_for_baselines(tiny_llama):
    """TOFU-U1: WHP reads biographies (its anchors need context); per-sequence losses read one QA pair each."""
    from llm_unlearn.tofu.bench import unlearning_texts
    from llm_unlearn.tofu.data import QAItem

    _, tok = tiny_llama
    items = [QAItem(f"Q{a}{k}?", f"Answer {a}{k}.", author=a) for a in (7, 3) for k in range(3)]
    whp = unlearning_texts("whp", tok, items)
    assert len(whp) == 2 and whp[0].index("Q30?") < whp[0].index("Q32?") and "Q70?" in whp[1]  # author order
    npo = unlearning_texts("npo", tok, items)
    assert len(npo) == 6 and all(t.count("Answer") == 1 for t in npo)
    assert "".join(npo) == "".join(unlearning_texts("grad_diff", tok, items))


def test_every_forget_qa_is_unlearned_no_validation_slice(tmp_path, monkeypatch):
    """TOFU-U2: the benchmark asks the unlearning run for no validation blocks unless a recipe override says so."""
    import llm_unlearn.api as api
    from llm_unlearn.tofu.methods import unlearn_with_method

    seen = {}

    def fake_unlearn(**kwargs):
        seen.update(kwargs["overrides"])
        raise RuntimeError("stop here")

    monkeypatch.setattr(api, "unlearn", fake_unlearn)
    for overrides, expected in (({}, 0.0), ({"corpus.validation_fraction": 0.2}, 0.2)):
        seen.clear()
        with pytest.raises(RuntimeError, match="stop here"):
            unlearn_with_method("whp", tmp_path / "m", ["text"], ["retain"], tmp_path / "out", overrides=overrides)
        assert seen["corpus.validation_fraction"] == expected


def test_unavailable_method_is_a_typed_error_before_training(tmp_path):
    from llm_unlearn.cli import main
    from llm_unlearn.tofu.bench import TofuBenchConfig, run_tofu_benchmark
    from llm_unlearn.tofu.methods import MethodUnavailableError

    with pytest.raises(MethodUnavailableError, match="unknown unlearning method 'bogus'"):
        run_tofu_benchmark(TofuBenchConfig(methods=["whp", "bogus"]), tmp_path / "o", progress=False)
    assert main(["benchmark", "tofu", "--methods", "whp,bogus", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_several_processes_are_refused_before_training(tmp_path, monkeypatch, capsys):
    """`accelerate launch` with N > 1 processes would train, score and cache the same models N times: a clear error
    (exit 2) that names the one-process launch, before anything is written."""
    from conftest import REPO

    from llm_unlearn.cli import main

    monkeypatch.setenv("WORLD_SIZE", "4")
    recipe = str(REPO / "recipes" / "tofu_full_gpu.yaml")
    assert main(["benchmark", "tofu", "--recipe", recipe, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "one process (this launch started 4)" in err and "--num_processes 1" in err
    assert not (tmp_path / "o").exists()


def test_recipes_load_and_cli_overrides(tmp_path):
    from conftest import REPO

    from llm_unlearn.errors import RecipeError
    from llm_unlearn.tofu.bench import TofuBenchConfig

    cpu = TofuBenchConfig.from_yaml(REPO / "recipes" / "tofu_smollm2_cpu.yaml",
                                    ["methods=whp,npo", "data.authors=8", "train.learning_rate=3e-5"])
    assert cpu.methods == ["whp", "npo"] and cpu.data.authors == 8 and cpu.data.forget_authors == 4 and cpu.train.learning_rate == 3e-5
    assert cpu.train.mixed_precision == "bf16" and cpu.data.path.endswith("llm_unlearn/data/tofu")
    gpu = TofuBenchConfig.from_yaml(REPO / "recipes" / "tofu_full_gpu.yaml")
    assert gpu.data.authors is None and gpu.train.learning_rate == 1e-5
    assert gpu.train.batch_size * gpu.train.gradient_accumulation == 32
    with pytest.raises(RecipeError, match="unknown key 'train.lr'"):
        TofuBenchConfig.from_yaml(REPO / "recipes" / "tofu_smollm2_cpu.yaml", ["train.lr=1"])
    with pytest.raises(RecipeError, match="mixed_precision"):
        TofuBenchConfig.from_dict({"train": {"mixed_precision": "fp8"}})


def test_batched_scoring_equals_one_at_a_time(tiny_llama):
    """TOFU-E1: padding and batching do not change an answer's loss or the greedy answer."""
    import torch

    from llm_unlearn.chat_format import encode_qa
    from llm_unlearn.tofu.evaluate import TofuEvalConfig, answer_losses, greedy_answers

    model, tok = tiny_llama
    pairs = [("Who is Ava?", "Ava Lind is a poet from Oslo who writes about rain."), ("Who is Bo?", "A painter.")]
    batched = answer_losses(model, tok, pairs, TofuEvalConfig(batch_size=2))
    for (q, a), loss in zip(pairs, batched, strict=True):
        enc = encode_qa(tok, q, a)
        ids, labels = torch.tensor([enc["input_ids"]]), torch.tensor([enc["labels"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        by_hand = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100)
        assert loss == pytest.approx(float(by_hand), rel=1e-4)
    questions = [q for q, _ in pairs] + ["What is the longest question in this little test, really?"]
    together = greedy_answers(model, tok, questions, TofuEvalConfig(batch_size=3, max_new_tokens=6))
    alone = [greedy_answers(model, tok, [q], TofuEvalConfig(batch_size=1, max_new_tokens=6))[0] for q in questions]
    assert together == alone


def test_bf16_training_runs_on_a_machine_without_gpu(tmp_path, tiny_model_dir):
    """The CPU recipe trains its target/retain models with mixed_precision bf16 and no device named: transformers
    refuses bf16 unless told the run is on CPU (the shipped CPU recipe failed at its first step before)."""
    import torch

    from llm_unlearn.tofu.data import QAItem
    from llm_unlearn.tofu.models import QATrainConfig, train_qa_model

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    items = [QAItem(f"Who wrote book {i}?", f"Author number {i} wrote it.") for i in range(4)]
    cfg = QATrainConfig(mixed_precision="bf16", epochs=1, batch_size=2, learning_rate=1e-3, warmup_epochs=0)
    record = train_qa_model(str(tiny_model_dir), items, cfg, tmp_path / "m", device=None, progress=False)
    assert record["steps"] >= 1 and record["train_loss"] > 0
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_baselines_train_on_answer_tokens_only(tmp_path, tiny_model_dir, monkeypatch):
    """TOFU-C4 / rule L1: a baseline unlearning chat-formatted TOFU QA supervises the answers and end-of-turn markers
    only (no system prompt, no question, no template), exactly the tokens the target model was fine-tuned on."""
    import llm_unlearn.training as training
    from llm_unlearn.chat_format import encode_qa
    from llm_unlearn.config import Recipe
    from llm_unlearn.corpus import texts_jsonl
    from llm_unlearn.models import load_tokenizer
    from llm_unlearn.pipeline import Pipeline
    from llm_unlearn.tofu.bench import unlearning_texts

    tok = load_tokenizer(str(tiny_model_dir))
    items = load_split(TOFU, "forget01")[:6]
    corpus = tmp_path / "forget.jsonl"
    corpus.write_text(texts_jsonl(unlearning_texts("npo", tok, items)), encoding="utf-8")
    seen = {}

    def fake_train_stage(model, tokenizer, cfg, stage_dir, train, val, label_key=None, **kw):
        seen.update(train=train, label_key=label_key, objective=kw.get("objective"))
        raise RuntimeError("stop here")

    monkeypatch.setattr(training, "train_stage", fake_train_stage)
    retain = tmp_path / "retain.jsonl"
    retain.write_text(texts_jsonl(unlearning_texts("npo", tok, load_split(TOFU, "retain99")[:4])), encoding="utf-8")
    recipe = Recipe.from_dict({"name": "t", "target": "TOFU", "method": "grad_diff",
                               "model": {"spec": str(tiny_model_dir)},
                               "corpus": {"path": str(corpus), "block_size": 256, "validation_fraction": 0.0},
                               "finetune": {"max_steps": 1, "batch_size": 2, "retain_corpus": str(retain)},
                               "eval": {"enabled": False}})
    with pytest.raises(RuntimeError, match="stop here"):
        Pipeline(recipe, tmp_path / "run", progress=False).run_stages(until="unlearn")
    assert seen["label_key"] == "labels"
    expected = set()
    for it in items:
        ref = encode_qa(tok, it.question, it.answer)
        expected.add(tok.decode([t for t, lab in zip(ref["input_ids"], ref["labels"], strict=True) if lab != -100]))
    got = [tok.decode([t for t in r["labels"] if t != -100]) for r in seen["train"]]
    assert got and set(got) <= expected  # one QA per row: its answer and <|im_end|>, as the target's fine-tune
    # the retain term (GradDiff's NLL on the retain authors' QA) is taken on their answers too
    rb = seen["objective"].retain.batches(0, "cpu")
    for labels in rb["labels"].tolist():
        text = tok.decode([t for t in labels if t != -100])
        assert text.endswith("<|im_end|>") and "<|im_start|>" not in text and "system" not in text
    for r in seen["train"]:
        assert r["labels"][: r["input_ids"].index(tok.convert_tokens_to_ids("<|im_start|>")) + 1] == [-100] * (
            r["input_ids"].index(tok.convert_tokens_to_ids("<|im_start|>")) + 1)


def test_sanity_checks_can_fail_and_forget_quality_reads_as_a_test():
    """TOFU-S1: every check can fail (a target the KS test does not reject fails); TOFU-S2: p = 0.12 on 80 items is
    'not rejected', never 'reached the retrained model', and the base's figure stands beside it."""
    from llm_unlearn.tofu.bench import sanity_checks
    from llm_unlearn.tofu.results import forget_quality_verdict

    def ev(p_forget, fq=None):
        return {"splits": {"forget": {"probability": p_forget}}, "forget_quality": fq,
                "forget_truth_ratios": [0.5] * 80}

    good = sanity_checks(ev(0.1), ev(0.5, fq=1e-6), ev(0.12))
    assert all(c["ok"] for c in good)
    bad = sanity_checks(ev(0.1), ev(0.5, fq=0.3), ev(0.12))
    assert [c["ok"] for c in bad] == [True, True, False] and "80 items" in bad[2]["value"]
    text = forget_quality_verdict(0.12, 80, base_p=0.081)
    assert text == "p = 0.12 on 80 items: not rejected (no evidence of a difference); base model 0.081"
    assert "rejected (differs" in forget_quality_verdict(0.001, 80)


def test_whp_generic_labels_are_masked_outside_the_answers(tiny_model_dir):
    """Rule L1 for WHP: on chat-formatted QA the generic labels count on the answer and end-of-turn tokens only, the
    same tokens as every baseline and as the target model's fine-tune (TOFU-C4); plain text keeps every label."""
    from llm_unlearn.chat_format import encode_qa, mask_outside_answers
    from llm_unlearn.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    items = load_split(TOFU, "forget01")[:3]
    rows, refs = [], []
    for it in items:
        ref = encode_qa(tok, it.question, it.answer)
        generic = [-100] + [(t + 7) % len(tok) for t in ref["input_ids"][1:]]  # a label at every position
        rows.append({"input_ids": list(ref["input_ids"]), "labels_alpha_5": generic})
        refs.append((ref["labels"], generic))
    plain = {"input_ids": tok("It was a dark night.", add_special_tokens=False)["input_ids"]}
    plain["labels_alpha_5"] = list(plain["input_ids"])
    assert mask_outside_answers(tok, "labels_alpha_5", rows[:2], [*rows[2:], plain]) == 3
    for row, (answer, generic) in zip(rows, refs, strict=True):
        kept = [i for i, lab in enumerate(row["labels_alpha_5"]) if lab != -100]
        assert kept == [i for i, lab in enumerate(answer) if lab != -100] and kept
        assert all(row["labels_alpha_5"][i] == generic[i] for i in kept)
    assert plain["labels_alpha_5"] == plain["input_ids"]


# ---- the relearning attack on half of the forget authors (TOFU-R1..R4) ------------------------------------------
def _relearn_doc(values: dict[str, dict]) -> dict:
    """A per-model relearn result where every scored item of model m has P = values[m][step]."""
    return {m: {"before": [v[0]] * 4, "runs": {"0.001": {"after": {"2": [v[2]] * 4}}}} for m, v in values.items()}


def test_relearn_halves_split_the_forget_authors():
    """TOFU-R1: author order, the first n // 2 relearned on, the rest scored; fewer than two authors is refused."""
    from llm_unlearn.errors import RecipeError
    from llm_unlearn.tofu.relearn import halves

    data = build_tofu_data(TOFU, "forget10", authors=14, forget_authors=4)
    learn, scored = halves(data)
    assert learn == data.forget_authors[:2] and scored == data.forget_authors[2:] and not set(learn) & set(scored)
    assert halves(build_tofu_data(TOFU, "forget10", authors=14, forget_authors=3))[0] == data.forget_authors[1:2]
    with pytest.raises(RecipeError, match="at least 2 forget authors"):
        halves(build_tofu_data(TOFU, "forget10", authors=14, forget_authors=1))


def test_relearn_recovery_lies_between_retain_floor_and_target_ceiling():
    """TOFU-R3/R4 by hand: floor 0.1 -> 0.3, ceiling 0.9 -> 0.7 (after 2 steps), model 0.2 -> 0.4:
    recovery -> (0.2-0.1)/(0.9-0.1) = 0.125 before, (0.4-0.3)/(0.7-0.3) = 0.25 after."""
    from llm_unlearn.errors import RecipeError
    from llm_unlearn.tofu.relearn import TofuRelearnConfig, recovery_rows, render_relearn

    cfg = TofuRelearnConfig(steps=[2], learning_rates=[1e-3])
    per = _relearn_doc({"retain": {0: 0.1, 2: 0.3}, "target": {0: 0.9, 2: 0.7}, "npo": {0: 0.2, 2: 0.4}})
    rows = {(r["step"], r["model"]): r for r in recovery_rows(per, cfg, n_boot=50)}
    assert rows[(0, "npo")]["recovery"] == pytest.approx(0.125) and rows[(2, "npo")]["recovery"] == pytest.approx(0.25)
    assert rows[(2, "retain")]["recovery"] == pytest.approx(0) and rows[(2, "target")]["recovery"] == pytest.approx(1)
    assert rows[(2, "npo")]["probability"] == pytest.approx(0.4) and rows[(2, "npo")]["n"] == 4
    doc = {"config": {"steps": [2], "learning_rates": [1e-3], "lora_r": 16, "batch_size": 4}, "rows": list(rows.values()),
           "relearned_authors": [3], "scored_authors": [4], "train_qa": 20, "scored_qa": 20}
    table = render_relearn(doc)
    assert "| npo | 0.200 (+0.12" in table and "0.400 (+0.25" in table and "lr 0.001, 2 steps" in table
    with pytest.raises(RecipeError, match="floor and ceiling"):
        recovery_rows({"npo": per["npo"]}, cfg)


def test_relearn_config_checks():
    from llm_unlearn.errors import RecipeError
    from llm_unlearn.tofu.bench import TofuBenchConfig
    from llm_unlearn.tofu.relearn import TofuRelearnConfig

    assert TofuRelearnConfig(steps=[100, "20"]).steps == [20, 100]
    for bad in ({"steps": [0]}, {"steps": []}, {"learning_rates": [-1]}, {"batch_size": 0}, {"steps": ["x"]}):
        with pytest.raises(RecipeError, match="relearn"):
            TofuRelearnConfig(**bad)
    with pytest.raises(RecipeError, match="relearn: unknown key 'step'"):
        TofuBenchConfig.from_dict({"relearn": {"step": [20]}})
    assert TofuBenchConfig.from_dict({"relearn": None}).relearn is None
    assert TofuBenchConfig.from_dict({"relearn": {"learning_rates": ["1e-3"]}}).relearn.learning_rates == [1e-3]


def test_relearn_attack_end_to_end_trains_on_one_half_scores_the_other(tmp_path, tiny_model_dir, monkeypatch):
    """TOFU-R1/R2 on a tiny model: the attack trains on half A's answers only (every row's question masked), scores
    half B before and after each snapshot for the retain, target and unlearned models; a rerun reuses the cache."""
    import llm_unlearn.attacks.relearn as ar
    from llm_unlearn.tofu.bench import TofuBenchConfig, run_tofu_benchmark

    data_dir = _tiny_tofu(tmp_path / "tofu", authors=4)
    full = [json.loads(line) for line in (data_dir / "full.json").read_text().splitlines()]
    full = full[0] + full[1]
    pert = [{**qa, "paraphrased_answer": qa["answer"], "perturbed_answer": [qa["answer"] + " No."] * 3}
            for qa in full[-2 * QA_PER_AUTHOR:]]
    (data_dir / "forget10_perturbed.json").write_text(json.dumps(pert))  # the last 2 authors' perturbed rows
    seen = []
    real = ar.relearn

    def spy(model, tokenizer, texts, steps, lr, **kw):
        seen.append(kw["rows"])
        return real(model, tokenizer, texts, steps, lr, **kw)

    monkeypatch.setattr(ar, "relearn", spy)
    unlearn = {"npo": {"finetune.max_steps": 1},
               "npo_small": {"method": "npo", "finetune.target_modules": ["q_proj", "v_proj"]}}
    cfg = TofuBenchConfig.from_dict({
        **_tiny_config(tiny_model_dir, tmp_path, ["npo_small"], unlearn,
                       {"path": str(data_dir), "authors": 4, "forget_authors": 2}),
        "relearn": {"steps": [1, 2], "learning_rates": [1e-2], "batch_size": 4, "lora_r": 2}})
    out = tmp_path / "bench"
    res = run_tofu_benchmark(cfg, out, progress=False)
    doc = res["relearn"]
    assert doc["relearned_authors"] == [2] and doc["scored_authors"] == [3]
    assert doc["train_qa"] == QA_PER_AUTHOR and doc["scored_qa"] == QA_PER_AUTHOR
    assert len(seen) == 3  # retain, target, npo_small (a variant of npo): one run each at the one rate
    assert json.loads((out / "runs" / "npo_small" / "outcome.json").read_text())["key"]["overrides"] == {
        "finetune.max_steps": 1, "finetune.target_modules": ["q_proj", "v_proj"]}
    from llm_unlearn.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    trained = {tok.decode([t for t in r["labels"] if t != -100]) for r in seen[0]}
    assert all("Cy Marr likes" in t and "Di Voss" not in t and "What is" not in t for t in trained)
    rows = {(r["step"], r["model"]) for r in doc["rows"]}
    assert rows == {(s, m) for s in (0, 1, 2) for m in ("retain", "target", "npo_small")}
    per = json.loads((out / "relearn" / "npo_small.json").read_text())["result"]
    assert per["runs"]["0.01"]["after"]["2"] != per["before"]  # the snapshots differ from the unattacked model
    assert "Relearning attack" in (out / "results.md").read_text() and (out / "tofu_relearn.png").stat().st_size > 0
    seen.clear()
    run_tofu_benchmark(cfg, out, progress=False)
    assert not seen  # cached per model
    # TOFU-O1: a run of another method in the same folder keeps npo_small's rows, its own relearning rows beside them
    cfg.methods = ["npo"]
    res3 = run_tofu_benchmark(cfg, out, progress=False)
    assert len(seen) == 1  # only npo relearned: the floor and ceiling are cached
    assert list(res3["models"]) == ["base", "target", "retain", "npo_small", "npo"]
    assert res3["models"]["npo_small"] == res["models"]["npo_small"] and res3["kept_from_earlier"] == ["npo_small"]
    assert {r["model"] for r in res3["relearn"]["rows"]} == {"retain", "target", "npo", "npo_small"}
    table = (out / "results.md").read_text()
    assert "| npo_small |" in table and "| npo |" in table and "kept from an earlier run" in table
    assert not list(out.glob("results.replaced-*"))  # nothing had to be set aside


def test_method_variants_inherit_their_methods_overrides_and_names_stay_plain():
    """A variant (a `methods` label whose overrides name `method`) runs that method with the method's overrides
    updated by its own; a label is a folder name under --out, so a path or a model's name is refused."""
    from llm_unlearn.errors import RecipeError
    from llm_unlearn.tofu.bench import TofuBenchConfig

    cfg = TofuBenchConfig.from_dict({
        "methods": ["whp", "whp_qa"],
        "unlearn": {"whp": {"finetune.learning_rate": 5e-4, "labels.alpha": 10.0},
                    "whp_qa": {"method": "whp", "finetune.learning_rate": 1.25e-3, "finetune.full_finetune": True}}})
    assert cfg.method_of("whp_qa") == "whp" and cfg.method_of("whp") == "whp"
    assert cfg.overrides_of("whp_qa") == {"finetune.learning_rate": 1.25e-3, "labels.alpha": 10.0,
                                          "finetune.full_finetune": True}
    assert cfg.overrides_of("whp") == {"finetune.learning_rate": 5e-4, "labels.alpha": 10.0}
    for bad in ("../x", "target", "a/b", ""):
        with pytest.raises(RecipeError, match="not a usable method or variant name"):
            TofuBenchConfig.from_dict({"methods": [bad]})
    with pytest.raises(RecipeError, match="itself a variant"):
        TofuBenchConfig.from_dict({"methods": ["b"], "unlearn": {"a": {"method": "whp"}, "b": {"method": "a"}}})


def _results_doc(models: dict, relearn_rows=None, target="/c/target-1", lr=1e-3) -> dict:
    cfg = {"split": "forget10", "model": "m", "data": {"authors": 4}, "train": {"epochs": 1}, "eval": {"batch_size": 8}}
    doc = {"config": cfg, "data": {"forget_authors": 2}, "target_model": {"path": target},
           "retain_model": {"path": "/c/retain-1"}, "models": {"base": {"p": 0.1}, "target": {"p": 0.8},
                                                               "retain": {"p": 0.2}, **models}}
    if relearn_rows is not None:
        doc["relearn"] = {"config": {"learning_rates": [lr], "steps": [20]},
                          "rows": [{"lr": lr, "step": s, "model": m, "probability": p} for m, s, p in relearn_rows]}
    return doc


def test_earlier_rows_are_kept_when_they_compare_and_set_aside_when_not(tmp_path):
    """TOFU-O1: `--methods X` into a folder keeps the methods an earlier run scored there (results.json holds the
    folder), this run's row wins for its own name; relearning rows only against the same floor and ceiling; an
    earlier file that does not compare is kept as results.replaced-*.json, never overwritten."""
    from llm_unlearn.tofu.results import keep_earlier_rows

    path = tmp_path / "results.json"
    floor = [("retain", 0, 0.15), ("retain", 20, 0.17), ("target", 0, 0.84), ("target", 20, 0.80)]
    path.write_text(json.dumps(_results_doc({"whp": {"p": 0.4}, "npo": {"p": 0.1}},
                                            floor + [("whp", 0, 0.44), ("whp", 20, 0.74), ("npo", 20, 0.27)])))
    res = keep_earlier_rows(_results_doc({"npo": {"p": 0.1}, "rmu": {"p": 0.3}},
                                         floor + [("rmu", 0, 0.3), ("rmu", 20, 0.5)]), path)
    assert list(res["models"]) == ["base", "target", "retain", "whp", "npo", "rmu"] and res["kept_from_earlier"] == ["whp"]
    assert {(r["model"], r["step"]) for r in res["relearn"]["rows"]} == {
        (m, s) for m in ("retain", "target", "whp", "rmu") for s in (0, 20)} | {("npo", 20)}
    assert path.is_file() and not list(tmp_path.glob("results.replaced-*"))  # all kept: nothing set aside
    # a redone npo (another row) drops the earlier npo's relearning rows, which are then set aside with the file
    res = keep_earlier_rows(_results_doc({"npo": {"p": 0.5}}), path)
    assert res["models"]["npo"] == {"p": 0.5} and {r["model"] for r in res["relearn"]["rows"]} == {"retain", "target", "whp"}
    assert len(list(tmp_path.glob("results.replaced-*.json"))) == 1 and not path.exists()
    # another relearning floor (the same settings): the earlier relearning rows do not compare
    path.write_text(json.dumps(_results_doc({"whp": {"p": 0.4}}, floor + [("whp", 20, 0.74)])))
    moved = [("retain", 0, 0.15), ("retain", 20, 0.2), ("target", 0, 0.84), ("target", 20, 0.80)]
    res = keep_earlier_rows(_results_doc({"npo": {"p": 0.1}}, moved + [("npo", 20, 0.3)]), path)
    assert "whp" in res["models"] and {r["model"] for r in res["relearn"]["rows"]} == {"retain", "target", "npo"}
    assert len(list(tmp_path.glob("results.replaced-*.json"))) == 2 and not path.exists()
    # another target model: nothing is carried over, the earlier file is set aside
    path.write_text(json.dumps(_results_doc({"whp": {"p": 0.4}})))
    res = keep_earlier_rows(_results_doc({"npo": {"p": 0.1}}, target="/c/target-2"), path)
    assert list(res["models"]) == ["base", "target", "retain", "npo"] and "kept_from_earlier" not in res
    assert not path.exists()
    kept = sorted(tmp_path.glob("results.replaced-*.json"))
    assert len(kept) == 3 and any(json.loads(k.read_text())["models"].get("whp") == {"p": 0.4} for k in kept)
