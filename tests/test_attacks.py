"""The attack suite (llm_unlearn.attacks) on tiny random models: each attack does what it says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from llm_unlearn.attacks import metrics
from llm_unlearn.attacks.in_context import examples_context, solved_examples
from llm_unlearn.attacks.quantization import delta_survival, quantize_model_, quantize_tensor, quantized_linears
from llm_unlearn.config import AttackConfig, EvalConfig, Recipe
from llm_unlearn.errors import EvalError, RecipeError
from llm_unlearn.evaluation.suites import load_suite, suite_languages
from tests.conftest import REPO, build_tiny_llama

SHERLOCK_SUITE = REPO / "eval" / "sherlock_holmes"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture()
def mini_suite(tmp_path) -> Path:
    """A small suite with every part: completion, probability, French versions, chat and two-choice items."""
    d = tmp_path / "mini_suite"
    d.mkdir()
    (d / "suite.yaml").write_text("name: mini\nconcept: Sherlock Holmes\nanchors: [Holmes, Watson, Baker Street]\n"
                                  "genre_terms: [detective]\nlanguages:\n  fr:\n    genre_terms: [détective]\n")
    _write_jsonl(d / "completion.jsonl", [
        {"id": "c1", "prompt": "Sherlock Holmes's friend, Dr.", "references": ["Watson"]},
        {"id": "c2", "prompt": "The famous detective Sherlock", "references": ["Holmes"]},
        {"id": "c3", "prompt": "Holmes lived at 221B", "references": ["Baker Street"]},
        {"id": "c4", "prompt": "Holmes's brother was called", "references": ["Mycroft"]},
        {"id": "c5", "prompt": "Holmes's enemy was Professor", "references": ["Moriarty"]}])
    _write_jsonl(d / "probability.jsonl", [
        {"id": "p1", "prompt": "Sherlock Holmes and Dr.", "target": " Watson"},
        {"id": "p2", "prompt": "The famous detective Sherlock", "target": " Holmes"},
        {"id": "p3", "prompt": "Holmes lived at 221B Baker", "target": " Street"}])
    _write_jsonl(d / "completion.fr.jsonl", [
        {"id": "c1-fr", "prompt": "L'ami de Sherlock Holmes, le docteur", "references": ["Watson"]},
        {"id": "c2-fr", "prompt": "Le célèbre détective Sherlock", "references": ["Holmes"]}])
    _write_jsonl(d / "probability.fr.jsonl", [{"id": "p1-fr", "prompt": "Sherlock Holmes et le docteur",
                                               "target": " Watson"}])
    _write_jsonl(d / "chat.jsonl", [
        {"id": "q1", "question": "Who is Sherlock Holmes's friend and biographer?", "answers": ["Watson"]},
        {"id": "q2", "question": "On which street did Sherlock Holmes live?", "answers": ["Baker Street"]}])
    _write_jsonl(d / "two_choice.jsonl", [
        {"id": "t1", "question": "Who is Sherlock Holmes's friend?", "true": "Dr. Watson", "false": "Dr. Jekyll"},
        {"id": "t2", "question": "Where did Holmes live?", "true": "Baker Street", "false": "Fleet Street"},
        {"id": "t3", "question": "Who was Holmes's enemy?", "true": "Moriarty", "false": "Lestrade"}])
    return d


# ---- recovery (ATK-R1, ATK-R2, ATK-R3) -------------------------------------------------------------------

def test_recovery_formula_on_hand_values():
    assert metrics.recovery(0.5, 0.2, 0.8) == pytest.approx(0.5)
    assert metrics.recovery(0.2, 0.2, 0.8) == pytest.approx(0.0)
    assert metrics.recovery(0.8, 0.2, 0.8) == pytest.approx(1.0)
    assert metrics.recovery(0.5, 0.5, 0.5) is None  # nothing was forgotten: recovery is undefined
    r = metrics.recovery_ci([1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1], control=[1, 1, 1, 0], n_boot=200)
    assert r["recovery"] == pytest.approx(0.5)
    assert r["recovery_vs_control"] == pytest.approx(1 - (0.75 - 0.5) / 1.0)
    assert r["ci_low"] <= 0.5 <= r["ci_high"]
    # ATK-R3: probe forgetting 0.5 of its room, plain forgetting all of it -> half the forgetting is missing
    c = metrics.cross_recovery_ci([1, 1], [0.5, 0.5], [0.8, 0.8], [0.0, 0.0], n_boot=100)
    assert c["recovery"] == pytest.approx(0.5)
    # two-choice floor 0.5: base 1.0, unlearned 0.5 = fully forgotten, like the plain suite -> recovery 0
    c = metrics.cross_recovery_ci([1, 1], [0.5, 0.5], [0.6, 0.6], [0.0, 0.0], probe_floor=0.5, n_boot=100)
    assert c["recovery"] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        metrics.recovery_ci([1, 0], [0], [1, 1])


# ---- quantization (ATK-Q1 .. Q4) ----------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_round_trips_representable_weights(bits):
    qmax = 2 ** (bits - 1) - 1
    g = torch.Generator().manual_seed(0)
    out, cols, gs = 6, 300, 128  # 300 columns: the last group has 44
    q = torch.randint(-qmax, qmax + 1, (out, cols), generator=g).float()
    for start in range(0, cols, gs):
        q[:, start] = qmax  # every group reaches its maximum, so its scale is exactly the one chosen below
    # power-of-two scales keep every product and quotient exact in float32, so "exact" means bit-for-bit
    scales = 2.0 ** torch.randint(-12, 0, (out, (cols + gs - 1) // gs), generator=g).float()
    w = q * scales.repeat_interleave(gs, dim=1)[:, :cols]
    assert torch.equal(quantize_tensor(w, bits, gs), w)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_error_is_at_most_half_a_step(bits):
    qmax = 2 ** (bits - 1) - 1
    w = torch.randn(5, 260, generator=torch.Generator().manual_seed(1))
    deq = quantize_tensor(w, bits, 128)
    padded = torch.nn.functional.pad(w, (0, 124))
    step = (padded.view(5, -1, 128).abs().amax(-1, keepdim=True) / qmax).expand(-1, -1, 128).reshape(5, -1)[:, :260]
    assert ((deq - w).abs() <= step / 2 + 1e-6).all()
    assert (deq != w).any()  # random weights are not representable: something is rounded
    assert quantize_tensor(torch.zeros(2, 8), bits, 4).eq(0).all()


def test_quantize_model_keeps_head_and_measures_delta_survival(smol_tokenizer):
    base = build_tiny_llama(smol_tokenizer)
    head_before = base.lm_head.weight.detach().clone()
    unlearned = build_tiny_llama(smol_tokenizer)
    with torch.no_grad():
        for mod in quantized_linears(unlearned).values():  # a delta far below half an int4 step
            mod.weight.add_(1e-5 * torch.randn_like(mod.weight))
    tiny = delta_survival(base, unlearned, bits=4)
    assert tiny["layers"] == len(quantized_linears(base))
    # ATK-Q4: a few weights jump a whole step, the rest lose the delta: sparse noise, little of it the delta
    assert tiny["share_codes_changed"] < 0.01 < tiny["share_delta_nonzero"]
    assert tiny["cosine"] < 0.3 and tiny["norm_ratio"] > 1
    with torch.no_grad():
        for mod in quantized_linears(unlearned).values():  # a delta of many steps survives
            mod.weight.add_(0.5 * torch.randn_like(mod.weight))
    big = delta_survival(base, unlearned, bits=8)
    assert 0.95 < big["projection"] < 1.05 and big["cosine"] > 0.99
    assert delta_survival(base, base, bits=8)["projection"] is None  # no delta: nothing to survive
    n = quantize_model_(base, 4)
    assert n == len(quantized_linears(base)) > 0
    assert torch.equal(base.lm_head.weight, head_before)  # ATK-Q2: the head stays in full precision


# ---- in-context (ATK-I1) --------------------------------------------------------------------------------------

def test_in_context_prompts_never_contain_the_scored_item():
    suite = load_suite(SHERLOCK_SUITE)
    for k in (3, 10):
        ctx = examples_context(suite, k, seed=0)
        for p in suite.completion:
            text = ctx("completion", p.id)
            lines = text.splitlines()
            assert len(lines) == k
            assert all(" ".join(p.prompt.split()).casefold() not in " ".join(line.split()).casefold()
                       for line in lines), (p.id, text)
        for p in suite.probability:
            lines = ctx("probability", p.id).splitlines()
            assert len(lines) == k
            assert all(p.prompt.strip().casefold() not in line.casefold() for line in lines), (p.id, lines)
    # deterministic, and tiny suites give every other item
    assert solved_examples(suite, "completion", suite.completion[0].id, 3) == \
        solved_examples(suite, "completion", suite.completion[0].id, 3)


def test_in_context_attack_scores_with_context_but_grades_the_original_prompt(mini_suite, tiny_llama, monkeypatch):
    from llm_unlearn.attacks import scoring

    model, tok = tiny_llama
    seen = []

    def fake_generate(model, tokenizer, prompts, **kw):
        seen.extend(prompts)
        return [["Holmes\nWatson"] for _ in prompts]  # ATK-S2: only the first line counts

    monkeypatch.setattr(scoring, "generate", fake_generate)
    suite = load_suite(mini_suite)
    m = scoring.Scorer(EvalConfig(), progress=False).suite(model, tok, suite, context=examples_context(suite, 10),
                                                         cut_at_newline=True)
    # ATK-I1: c2's answer is Holmes, which every other item's text names: it gets no example at all (the old pool
    # gave it four lines naming Holmes, and the model scored by copying); the others get the items that do not
    # share or name their answer
    assert len(seen) == 5 and seen[1] == suite.completion[1].prompt
    by_id = dict(zip(m["items"]["familiarity"]["ids"], m["items"]["familiarity"]["values"], strict=True))
    assert set(by_id) == {"c1", "c2", "c3", "c4", "c5"} and m["left_out"] == {"completion": 0, "probability": 0}
    assert by_id["c2"] == 1.0  # "Holmes" is c2's reference, produced without being shown
    # c1 names Holmes in its own prompt (so Holmes is no grade-2 anchor there), and the second line (Watson,
    # c1's reference) is cut off: only the genre-less first line is graded
    assert by_id["c1"] == 0.0


def test_items_whose_answer_the_attack_text_names_are_not_scored(mini_suite, tiny_llama):
    """ATK-S1: a prefix that names Holmes (and Mycroft) leaves out the items answered by them; recovery is computed
    on the items kept, for every model."""
    from llm_unlearn.attacks.base import Row
    from llm_unlearn.attacks.runner import pair_rows
    from llm_unlearn.attacks.scoring import Scorer, answer_terms, copied

    assert answer_terms(["Mycroft Holmes", "Dr. Watson", "Holmes"]) == ["Mycroft Holmes", "Mycroft", "Dr. Watson",
                                                                        "Holmes"]
    assert copied("I like the Holmes stories.", ["Holmes"]) and not copied("Holmesian", ["Holmes"])
    model, tok = tiny_llama
    suite = load_suite(mini_suite)
    scorer = Scorer(EvalConfig(max_new_tokens=2), progress=False)
    prefix = "Tell me about Sherlock Holmes and his brother Mycroft.\n\n"
    m = scorer.suite(model, tok, suite, context=lambda kind, pid: prefix)
    assert m["left_out"] == {"completion": 2, "probability": 1}  # c2 (Holmes), c4 (Mycroft); p2 (Holmes)
    assert set(m["items"]["familiarity"]["ids"]) == {"c1", "c3", "c5"}
    assert set(m["items"]["prob"]["ids"]) == {"p1", "p3"}
    plain = {"base": scorer.suite(model, tok, suite), "unlearned": scorer.suite(model, tok, suite)}
    rows = [Row("jailbreak", "x", "mini", "unlearned", m), Row("jailbreak", "x", "mini", "base", m)]
    res = pair_rows(rows, {"mini": plain}, AttackConfig(bootstrap=10))
    assert res[0]["recovery"]["prob"]["n"] == 2


def test_in_context_examples_never_carry_the_scored_answer():
    """ATK-I1 on the Sherlock suite: no example shares the scored item's answers or names them."""
    from llm_unlearn.attacks.scoring import copied

    suite = load_suite(SHERLOCK_SUITE)
    ctx = examples_context(suite, 3, seed=0)
    for p in suite.completion:
        assert not copied(ctx("completion", p.id), p.references), p.id
    for p in suite.probability:
        assert not copied(ctx("probability", p.id), [p.target]), p.id
    with_examples = sum(bool(ctx("completion", p.id)) for p in suite.completion)
    assert with_examples > len(suite.completion) // 2  # most items still get examples


def test_passage_variants_are_what_their_names_say(tiny_llama):
    """ATK-I2: ``passage`` is the suite's passage.txt (a pastiche), ``heldout-text`` the held-out target text."""
    from llm_unlearn.attacks.base import AttackContext
    from llm_unlearn.attacks.in_context import passage_texts
    from llm_unlearn.attacks.scoring import Scorer

    suite = load_suite(SHERLOCK_SUITE)
    held = " ".join(f"word{i}" for i in range(400))
    ctx = AttackContext(base=tiny_llama, unlearned=tiny_llama, suites=[suite], scorer=Scorer(progress=False),
                        config=AttackConfig(), heldout_texts=[held])
    texts = passage_texts(ctx, suite)
    assert texts["passage"] == (SHERLOCK_SUITE / "passage.txt").read_text(encoding="utf-8").strip()
    assert texts["heldout-text"].split() == held.split()[:150]
    ctx.heldout_texts = []
    assert list(passage_texts(ctx, suite)) == ["passage"]


def test_run_heldout_text_is_the_relearn_split_never_validation(tmp_path, smol_tokenizer):
    """ATK-RL2: the validation blocks chose the checkpoint: a run without a relearn split gives no held-out text."""
    from llm_unlearn.attacks import heldout_from_run
    from llm_unlearn.corpus import Document, make_blocks, save_blocks

    blocks = make_blocks([Document("d", "Holmes and Watson walked to Baker Street. " * 40)], smol_tokenizer, 32)
    (tmp_path / "corpus").mkdir()
    save_blocks(blocks, tmp_path / "corpus" / "blocks.jsonl")
    split = {"train": list(range(2, len(blocks))), "validation": [0, 1], "relearn": []}
    (tmp_path / "corpus" / "split.json").write_text(json.dumps(split))
    assert heldout_from_run(tmp_path) == []
    split.update(relearn=[2], train=list(range(3, len(blocks))))
    (tmp_path / "corpus" / "split.json").write_text(json.dumps(split))
    assert heldout_from_run(tmp_path) == [blocks[2].text]


# ---- languages (ATK-L1) -------------------------------------------------------------------------------------

def test_sherlock_language_suites_load():
    assert {"fr", "de", "es"} <= set(suite_languages(SHERLOCK_SUITE))
    plain = load_suite(SHERLOCK_SUITE)
    for lang in ("fr", "de", "es"):
        s = load_suite(SHERLOCK_SUITE, language=lang)
        assert s.name == f"sherlock_holmes.{lang}" and s.anchors == plain.anchors
        assert len(s.completion) >= 40 and len(s.probability) >= 20
        assert len(s.genre_terms) > len(plain.genre_terms)  # the language's own genre words are added
    with pytest.raises(EvalError, match="languages of this suite"):
        load_suite(SHERLOCK_SUITE, language="xx")


def test_language_suites_are_scored(mini_suite, tiny_llama):
    from llm_unlearn.attacks import languages
    from llm_unlearn.attacks.base import AttackContext
    from llm_unlearn.attacks.scoring import Scorer

    model, tok = tiny_llama
    ctx = AttackContext(base=(model, tok), unlearned=(model, tok), suites=[load_suite(mini_suite)],
                        scorer=Scorer(EvalConfig(max_new_tokens=4), progress=False), config=AttackConfig())
    rows = languages.run(ctx)
    assert [(r.variant, r.model, r.probe) for r in rows] == [("fr", "unlearned", "mini.fr"), ("fr", "base", "mini.fr")]
    m = rows[0].measure
    assert m["items"]["familiarity"]["ids"] == ["c1-fr", "c2-fr"] and m["items"]["prob"]["ids"] == ["p1-fr"]
    assert 0 <= m["familiarity"] <= 1 and 0 < m["prob"] < 1


# ---- chat questions and two-choice items (ATK-S3, ATK-S4) -----------------------------------------------------

def test_chat_scoring_uses_the_template_and_matches_answers(mini_suite, tiny_llama, monkeypatch):
    from llm_unlearn.attacks import scoring
    from llm_unlearn.attacks.probes import load_chat

    model, tok = tiny_llama
    seen = []

    def fake_generate(model, tokenizer, prompts, **kw):
        seen.extend(prompts)
        return [["It was Dr. WATSON's friend."], ["He lived on Fleet Street."]]

    monkeypatch.setattr(scoring, "generate", fake_generate)
    m = scoring.Scorer(EvalConfig(), progress=False).chat(model, tok, load_chat(mini_suite), system="Be exact.")
    assert m["items"]["accuracy"]["values"] == [1.0, 0.0] and m["accuracy"] == 0.5
    assert "<|im_start|>system\nBe exact." in seen[0] and seen[0].rstrip().endswith("<|im_start|>assistant")


def test_two_choice_scoring_compares_true_and_false(mini_suite, tiny_llama):
    from llm_unlearn.attacks.probes import TwoChoiceItem, load_two_choice
    from llm_unlearn.attacks.scoring import Scorer

    model, tok = tiny_llama
    items = load_two_choice(mini_suite)
    scorer = Scorer(EvalConfig(), progress=False)
    acc = scorer.two_choice(model, tok, items)["items"]["accuracy"]["values"]
    swapped = [TwoChoiceItem(i.id, i.question, i.false, i.true) for i in items]
    acc_swapped = scorer.two_choice(model, tok, swapped)["items"]["accuracy"]["values"]
    assert [a + b for a, b in zip(acc, acc_swapped, strict=True)] == [1.0] * len(items)


def test_sherlock_chat_and_two_choice_files():
    from llm_unlearn.attacks.probes import load_chat, load_two_choice

    chat, pairs = load_chat(SHERLOCK_SUITE), load_two_choice(SHERLOCK_SUITE)
    assert len(chat) == 40 and len(pairs) == 40
    assert all(a.casefold() not in q.question.casefold() for q in chat for a in q.answers)  # no giveaways


# ---- relearn (ATK-RL1, ATK-RL3) -------------------------------------------------------------------------------

def test_relearn_lowers_the_loss_on_its_text(tiny_llama):
    from llm_unlearn.attacks.relearn import relearn

    model, tok = tiny_llama
    before = {k: v.clone() for k, v in model.state_dict().items()}
    text = ("Sherlock Holmes took his bottle from the corner of the mantelpiece. Dr. Watson watched him. " * 6)
    peft_model, res = relearn(model, tok, [text], steps=[3, 12], learning_rate=5e-3, batch_size=2, block_size=64,
                              progress=False)
    assert sorted(res.snapshots) == [3, 12] and len(res.loss_curve) == 12
    assert res.text_loss[12] < res.text_loss[3] < res.text_loss[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the given model is untouched


def test_relearn_snapshots_are_runs_of_their_own_length_whatever_ran_before(tiny_llama):
    """ATK-RL1: the 3-step snapshot of a 3-and-12-step run is a 3-step run, bit for bit, and a run repeats itself
    whatever the global RNG did in between (the adapter's init comes from the seed); another seed is another run."""
    from llm_unlearn.attacks.relearn import relearn

    model, tok = tiny_llama
    text = ("Sherlock Holmes took his bottle from the corner of the mantelpiece. Dr. Watson watched him. " * 12)
    kw = {"learning_rate": 5e-3, "batch_size": 2, "block_size": 32, "progress": False}
    _, long = relearn(model, tok, [text], steps=[3, 12], **kw)
    torch.rand(1000)  # other work between the runs
    _, short = relearn(model, tok, [text], steps=[3], **kw)
    assert long.snapshots[3].keys() == short.snapshots[3].keys()
    assert all(torch.equal(long.snapshots[3][k], short.snapshots[3][k]) for k in short.snapshots[3])
    _, other_seed = relearn(model, tok, [text], steps=[3], seed=1, **kw)
    assert not all(torch.equal(other_seed.snapshots[3][k], short.snapshots[3][k]) for k in short.snapshots[3])


def test_relearn_does_not_score_items_whose_answer_its_text_contains(tmp_path, mini_suite, smol_tokenizer):
    """ATK-RL4: relearning on text that names Holmes and Watson scores the other items only (for the base, the
    unlearned model and both relearned ones) and records how many it left out."""
    from llm_unlearn.attacks import attack

    base, unlearned = build_tiny_llama(smol_tokenizer, seed=0), build_tiny_llama(smol_tokenizer, seed=1)
    cfg = AttackConfig(attacks=["relearn"], relearn_steps=[1], bootstrap=20, relearn_block_size=32)
    doc = attack((unlearned, smol_tokenizer), (base, smol_tokenizer), [mini_suite], tmp_path / "out", config=cfg,
                 eval_config=EvalConfig(max_new_tokens=2), heldout_texts=["Holmes and Watson walked. " * 20],
                 relearn_lr=1e-3, progress=False)
    row = next(r for r in doc["results"] if r["attack"] == "relearn")
    assert row["info"]["left_out"] == {"completion": 2, "probability": 2}  # c1, c2 / p1, p2
    assert row["recovery"]["familiarity"]["n"] == 3 and row["recovery"]["prob"]["n"] == 1  # c3-c5 / p3
    assert "2 completion and 2 probability items not scored" in (tmp_path / "out" / "report.md").read_text()


# ---- the whole run, the recipe, the split, the CLI ------------------------------------------------------------

def test_attack_end_to_end(tmp_path, mini_suite, smol_tokenizer):
    from llm_unlearn.attacks import attack

    base, unlearned = build_tiny_llama(smol_tokenizer, seed=0), build_tiny_llama(smol_tokenizer, seed=1)
    cfg = AttackConfig(relearn_steps=[2], in_context_k=[2], quant_bits=[4], quant_formats=["Q8_0"], bootstrap=100,
                       relearn_block_size=32)
    doc = attack((unlearned, smol_tokenizer), (base, smol_tokenizer), [mini_suite], tmp_path / "out", config=cfg,
                 eval_config=EvalConfig(max_new_tokens=4), heldout_texts=["Holmes and Watson walked. " * 20],
                 relearn_lr=1e-3, progress=False)
    assert set(doc["attacks"]) == {"in_context", "jailbreak", "languages", "chat", "quantization", "relearn"}
    variants = {(r["attack"], r["variant"]) for r in doc["results"]}
    assert {("none", "plain"), ("in_context", "k=2"), ("in_context", "heldout-text"), ("quantization", "int4"),
            ("quantization", "gguf Q8_0"),
            ("relearn", "heldout-2"), ("languages", "fr"), ("chat", "questions"), ("chat", "two-choice"),
            ("jailbreak", "permission"), ("jailbreak", "chat-system")} <= variants
    for r in doc["results"]:
        assert set(r["scores"]) == {"base", "unlearned"}  # every attack has its control
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| attack | variant | suite | model |" in report and "quantization" in report
    assert json.loads((tmp_path / "out" / "attack.json").read_text())["schema"] == "llm-unlearn-attack/1"
    with pytest.raises(EvalError, match="already holds"):
        attack((unlearned, smol_tokenizer), (base, smol_tokenizer), [mini_suite], tmp_path / "out", config=cfg)


def test_explicit_attack_without_its_input_is_an_error(tmp_path, mini_suite, tiny_llama):
    from llm_unlearn.attacks import attack

    with pytest.raises(EvalError, match="no text to relearn from"):
        attack(tiny_llama, tiny_llama, [mini_suite], tmp_path / "o", config=AttackConfig(attacks=["relearn"]),
               progress=False)


def test_recipe_attack_section_and_relearn_split():
    from llm_unlearn.corpus import split_blocks, split_relearn
    from llm_unlearn.pipeline import Pipeline

    r = Recipe.from_dict({"attack": {"enabled": True, "attacks": ["quantization"], "quant_bits": [4]},
                          "corpus": {"path": "book.txt"}})
    assert r.attack.enabled and r.attack.quant_bits == [4]
    with pytest.raises(RecipeError):
        Recipe.from_dict({"attack": {"quant_bits": [5]}})
    with pytest.raises(RecipeError):
        Recipe.from_dict({"attack": {"relearn_steps": [0]}})
    train, val = split_blocks(list(range(60)), 0.05)
    assert split_relearn(train, 0.0) == (train, [])  # default: earlier runs keep their split
    kept, relearn = split_relearn(train, 0.1)
    assert len(relearn) == 6 and not set(relearn) & set(kept) and not set(relearn) & set(val)
    assert sorted(kept + relearn) == train
    # a relearn_fraction of 0 leaves the corpus stage's fingerprint as it was before the field existed
    p0 = Pipeline(Recipe.from_dict({"corpus": {"path": "book.txt"}}), "/nonexistent-run")
    p1 = Pipeline(Recipe.from_dict({"corpus": {"path": "book.txt", "relearn_fraction": 0.1}}), "/nonexistent-run")
    from llm_unlearn.pipeline import STAGES

    assert p0._config_hash(STAGES["corpus"]) != p1._config_hash(STAGES["corpus"])
    data = Recipe.from_dict({"corpus": {"path": "book.txt"}}).to_dict()
    data["corpus"].pop("relearn_fraction")
    before = json.dumps({"model": data["model"], "corpus": data["corpus"]}, sort_keys=True, default=str)
    assert p0._config_hash(STAGES["corpus"]) == hashlib.sha256(before.encode()).hexdigest()[:16]
    assert p1.plan()[-1][0] == "eval" and Pipeline(r, "/nonexistent-run").plan()[-1][0] == "attack"


def test_cli_bad_input_exits_2(tmp_path, mini_suite, tiny_model_dir, capsys):
    from llm_unlearn.cli import main

    code = main(["attack", "--model", str(tiny_model_dir), "--base", str(tiny_model_dir), "--suite", str(mini_suite),
                 "--attacks", "quantization,telepathy", "--out", str(tmp_path / "o")])
    assert code == 2 and "unknown attack" in capsys.readouterr().err
    code = main(["attack", "--model", str(tmp_path / "no-such-model"), "--base", str(tiny_model_dir),
                 "--suite", str(mini_suite), "--out", str(tmp_path / "o")])
    assert code == 2 and "not a model folder" in capsys.readouterr().err
    code = main(["attack", "--model", str(tiny_model_dir), "--base", str(tiny_model_dir), "--suite",
                 str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == 2 and "not found" in capsys.readouterr().err


def test_cli_runs_an_attack(tmp_path, mini_suite, tiny_model_dir, capsys):
    from llm_unlearn.cli import main

    code = main(["attack", "--model", str(tiny_model_dir), "--base", str(tiny_model_dir), "--suite", str(mini_suite),
                 "--attacks", "quantization", "--quant-bits", "8", "--max-new-tokens", "3", "--quiet",
                 "--out", str(tmp_path / "o")])
    assert code == 0
    doc = json.loads((tmp_path / "o" / "attack.json").read_text())
    assert doc["attacks"] == ["quantization"] and any(r["variant"] == "int8" for r in doc["results"])
    assert "recovery" in capsys.readouterr().out


def test_pipeline_attack_stage_uses_the_relearn_slice(tmp_path, tiny_model_dir, small_corpus, mini_suite):
    pytest.importorskip("llm_unlearn.whp.anchors")
    from llm_unlearn.pipeline import Pipeline
    from tests.test_pipeline import tiny_recipe

    data = tiny_recipe(tiny_model_dir, small_corpus, corpus={"relearn_fraction": 0.2},
                       attack={"enabled": True, "attacks": ["relearn", "quantization"], "relearn_steps": [2],
                               "quant_bits": [8], "suites": [str(mini_suite)], "bootstrap": 50,
                               "relearn_block_size": 32},
                       eval={"max_new_tokens": 3})
    run = tmp_path / "run"
    manifest = Pipeline(Recipe.from_dict(data), run, progress=False).run_stages()
    assert manifest["stages"]["attack"]["status"] == "done"
    split = json.loads((run / "corpus" / "split.json").read_text())
    assert split["relearn"] and not set(split["relearn"]) & (set(split["train"]) | set(split["validation"]))
    doc = json.loads((run / "attack" / "attack.json").read_text())
    assert doc["heldout_texts"] == len(split["relearn"]) and doc["relearn_lr"] == data["finetune"]["learning_rate"]
    relearn_rows = [r for r in doc["results"] if r["attack"] == "relearn"]
    assert relearn_rows and relearn_rows[0]["variant"] == "heldout-2"
    assert (run / "attack" / "report.md").exists()


def test_named_relearn_texts(tmp_path):
    from llm_unlearn.attacks import _named_texts

    (tmp_path / "wiki.txt").write_text("Holmes was a consulting detective in London.")
    texts = _named_texts([f"articles={tmp_path / 'wiki.txt'}", str(tmp_path / "wiki.txt")])
    assert texts == {"articles": ["Holmes was a consulting detective in London."],
                     "wiki": ["Holmes was a consulting detective in London."]}
    with pytest.raises(EvalError, match="relearn text"):
        _named_texts([f"x={tmp_path / 'missing.txt'}"])
