"""The benchmark's equality assertion as a test: the optimised label path (:func:`label_blocks`: bucketing,
padding, vectorised masks and suppression) gives exactly the labels of the straightforward reference procedure
(``tests/reference_labels.py``: one block at a time, per-position Python loop, suppression list rebuilt at every
position), on a tiny random Llama with a random non-zero LoRA adapter as the reinforced model."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_llama

from llm_unlearn.corpus import Document, make_blocks
from llm_unlearn.whp.labels import IGNORE, LogitSource, alpha_key, block_rng, label_blocks
from llm_unlearn.whp.translation import Translator
from tests.reference_labels import compare_rows, reference_labels

TEXT = (
    "To Sherlock Holmes she is always the woman. I have seldom heard him mention her under any other name. "
    "In his eyes she eclipses and predominates the whole of her sex. It was not that he felt any emotion akin "
    "to love for Irene Adler. One night I was returning from a journey to a patient, when my way led me through "
    "Baker Street. As I passed the well-remembered door, I was seized with a keen desire to see Holmes again. "
    "Watson, said Holmes, you have put on seven and a half pounds since I saw you. Irene Adler sang at the "
    "opera, and Holmes sat in the stalls. Baker Street was quiet. Doctor Watson laughed, and Sherlock Holmes "
    "lit his pipe. Mrs. Hudson brought the tray to Baker Street, where Holmes and Watson waited for Adler.\n"
) * 3

DICTIONARY = {
    "Sherlock Holmes": ["Owen Hart", "Peter Lane"],
    "Holmes": ["Hart", "Lane"],
    "Watson": ["Miller", "Brooks"],
    "Irene Adler": ["Clara Vance"],
    "Adler": ["Vance"],
    "Baker Street": ["Elm Street", "Mill Road"],
    "Mrs. Hudson": ["Mrs. Dale"],
}


@pytest.fixture(scope="module")
def setup(smol_tokenizer):
    from peft import LoraConfig, get_peft_model

    base = build_tiny_llama(smol_tokenizer, seed=1)
    torch.manual_seed(2)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    reinforced = get_peft_model(base, cfg).eval()
    blocks = make_blocks([Document("d", TEXT)], smol_tokenizer, block_size=48)
    return LogitSource(reinforced), blocks, Translator(DICTIONARY, smol_tokenizer)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_label_blocks_equal_reference_procedure(setup, smol_tokenizer, batch_size):
    source, blocks, translator = setup
    alphas = [2.5, 5.0, 10.0]
    idx = list(range(len(blocks)))
    fast, stats = label_blocks(source, blocks, idx, translator, alphas, batch_size, 7, smol_tokenizer.pad_token_id,
                               progress=False)
    ref = reference_labels(source, blocks, idx, translator, alphas, 7)
    cmp = compare_rows(fast, ref, alphas)
    assert cmp["differences"] == 0, cmp["examples"]
    # the check is not vacuous: lengths differ (padding in batches), rules fired, labels moved off the text
    assert len({len(b) for b in blocks}) > 1
    assert stats.masked["inside_anchor"] > 0 and stats.masked["predicts_repeated_anchor"] > 0
    assert stats.changed > 0
    assert sum(len(translator.translate(b, block_rng(7, i)).suppress_from) for i, b in enumerate(blocks)) > 3
    supervised = sum(x != IGNORE for r in ref for x in r[alpha_key(5.0)])
    assert supervised == stats.supervised
