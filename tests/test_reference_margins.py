"""Reference margins: how firmly a model's next token starts a completion prompt's reference, and the split of a
baseline's lost explicit answers into firm items and near ties (llm_unlearn.evaluation.familiarity, report)."""

from __future__ import annotations

import pytest
import torch

from llm_unlearn.evaluation.familiarity import FIRM_MARGIN, lost_items, reference_margins
from llm_unlearn.evaluation.report import _lost_section


def _by_hand(model, tok, prompt: str, refs: list[str]) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(model(tok(prompt, return_tensors="pt")["input_ids"]).logits[0, -1].float(), -1)
    firsts = sorted({tok(" " + r, add_special_tokens=False)["input_ids"][0] for r in refs})
    rest = logp.clone()
    rest[firsts] = float("-inf")
    return float(logp[firsts].max() - rest.max())


def test_reference_margins_match_one_prompt_at_a_time(tiny_llama):
    """Batched prompts of different lengths (right padding) give each prompt's own margin, as computed alone by hand;
    a prompt without a reference gets None; the tokenizer's padding side is given back."""
    model, tok = tiny_llama
    model.eval()
    prompts = ["The capital of France is", "Hi", "The planet closest to the Sun is called", "Nothing to say"]
    refs = [["Paris", "Lyon"], ["there"], ["Mercury"], []]
    tok.padding_side = "left"
    got = reference_margins(model, tok, prompts, refs, batch_size=3)
    assert tok.padding_side == "left"
    assert got[3] is None
    for i in range(3):
        assert got[i] == pytest.approx(_by_hand(model, tok, prompts[i], refs[i]), abs=1e-3)


def test_reference_margin_is_positive_when_the_reference_is_the_greedy_token(tiny_llama):
    """The margin's sign says whether the greedy next token starts the reference: take the model's own top token as
    the reference and the margin is >= 0; take a token it ranks low and it is < 0."""
    model, tok = tiny_llama
    model.eval()
    prompt = "Once upon a time"
    with torch.no_grad():
        order = model(tok(prompt, return_tensors="pt")["input_ids"]).logits[0, -1].argsort(descending=True)
    words = [tok.decode([int(t)]) for t in order[:200]]
    top = next(w.strip() for w in words if w.startswith(" ") and w.strip().isalpha()
               and tok(" " + w.strip(), add_special_tokens=False)["input_ids"][0] == order[0])
    low = tok.decode([int(order[-1])]).strip() or "zzz"
    high, bottom = reference_margins(model, tok, [prompt, prompt], [[top], [low]])
    assert high >= 0 > bottom


def test_lost_items_split_by_the_baselines_margin():
    """Only the baseline's grade-3 items count; each is firm (margin >= FIRM_MARGIN), a near tie, or unknown (an
    older evaluation without margins); an item the other model also answers at grade 3 is kept."""
    base = {"items": [{"id": "a", "grade": 3.0, "margin": FIRM_MARGIN}, {"id": "b", "grade": 3.0, "margin": 0.2},
                      {"id": "c", "grade": 3.0, "margin": 2.0}, {"id": "d", "grade": 2.0, "margin": 5.0},
                      {"id": "e", "grade": 3.0}]}
    other = {"items": [{"id": "a", "grade": 1.0}, {"id": "b", "grade": 0.0}, {"id": "c", "grade": 3.0},
                       {"id": "d", "grade": 0.0}, {"id": "e", "grade": 2.0}]}
    assert lost_items(base, other) == {"firm": {"known": 2, "lost": ["a"]}, "near_tie": {"known": 1, "lost": ["b"]},
                                       "unknown": {"known": 1, "lost": ["e"]}}
    assert lost_items(base, {"items": []}) == {}


def test_report_table_and_firm_items_listed():
    """The report gives, per suite and model, the baseline's grade-3 items lost, firm and near ties, and names the
    firm ones lost; with margins missing (base results of an older evaluation) the split shows '-'."""
    def comp(grades, margins=None):
        return {"completion": {"items": [{"id": i, "prompt": f"prompt {i}", "grade": g,
                                          **({"margin": margins[i]} if margins else {})}
                                         for i, g in grades.items()]}}

    models = {"base": {"suites": {"ctl": comp({"a": 3.0, "b": 3.0, "c": 3.0}, {"a": 2.0, "b": 0.1, "c": 3.0})}},
              "unlearned": {"suites": {"ctl": comp({"a": 0.0, "b": 1.0, "c": 3.0})}}}
    text = "\n".join(_lost_section(models, "base", ["ctl"]))
    assert "| ctl | unlearned | 3 | 2 | 1 of 2 | 1 of 1 |" in text and "- ctl, unlearned: `prompt a`" in text
    models["base"] = {"suites": {"ctl": comp({"a": 3.0, "b": 3.0, "c": 3.0})}}
    text = "\n".join(_lost_section(models, "base", ["ctl"]))
    assert "| ctl | unlearned | 3 | 2 | - | - |" in text and "Firm items lost" not in text
    assert _lost_section(models, None, ["ctl"]) == []


def test_flat_summary_counts_lost_items_for_models_other_than_the_baseline():
    """``compare`` and ``eval``'s summary show, per suite, the baseline's firm items and near ties each other model
    lost; the baseline itself gets no such key, nor does an evaluation without margins."""
    from llm_unlearn.evaluation.report import flat_summary

    def suite(grades, margins=None):
        items = [{"id": i, "grade": g, **({"margin": margins[i]} if margins else {})} for i, g in grades.items()]
        return {"ctl": {"completion": {"n": len(items), "familiarity": 0.5, "frac_ge2": 0.5, "items": items}}}

    doc = {"baseline": "base",
           "models": {"base": {"suites": suite({"a": 3.0, "b": 3.0, "c": 3.0}, {"a": 2.0, "b": 0.1, "c": 0.5})},
                      "new": {"suites": suite({"a": 0.0, "b": 0.0, "c": 3.0})}}}
    flat = flat_summary(doc)
    assert flat["new"]["firm_lost/ctl"] == 1 and flat["new"]["near_tie_lost/ctl"] == 1
    assert "firm_lost/ctl" not in flat["base"]
    doc["models"]["base"]["suites"] = suite({"a": 3.0, "b": 3.0, "c": 3.0})
    assert "firm_lost/ctl" not in flat_summary(doc)["new"]
    assert "firm_lost/ctl" not in flat_summary({**doc, "baseline": None})["new"]
