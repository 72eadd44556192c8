"""The label formula and the masking / suppression rules of whp-method.md stage 3, on hand-built logits."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llm_unlearn.corpus import Block
from llm_unlearn.whp.labels import (
    IGNORE,
    LabelStats,
    LogitSource,
    alpha_key,
    apply_suppression,
    block_rng,
    generic_logits,
    label_batch,
    label_blocks,
    near_anchor_positions,
    reinforced_rise,
    target_token_mask,
    target_words,
)

V = 12


def test_generic_logits_formula():
    v_b = torch.tensor([1.0, 2.0, 3.0, 0.0])
    v_r = torch.tensor([1.0, 4.0, 2.0, 0.5])
    out = generic_logits(v_b, v_r, alpha=5.0)
    # only logits the reinforced model RAISED are pushed down, by alpha times the rise
    assert out.tolist() == pytest.approx([1.0, 2.0 - 5 * 2.0, 3.0, 0.0 - 5 * 0.5])


def test_apply_suppression_from_position_inclusive():
    v = torch.zeros(4, V)
    translated_pos = np.array([0, 2, 3, 5])
    apply_suppression(v, translated_pos, [(3, [1, 4]), (5, [7])])
    assert torch.isinf(v[:, 1]).tolist() == [False, False, True, True]
    assert torch.isinf(v[:, 4]).tolist() == [False, False, True, True]
    assert torch.isinf(v[:, 7]).tolist() == [False, False, False, True]
    assert int(torch.isinf(v).sum()) == 5


class FakeTranslator:
    """Returns a fixed translation result per block (the translation module is tested on its own)."""

    def __init__(self, results):
        self.results = results

    def translate(self, block, rng):
        return self.results[tuple(block.input_ids)]


class FakeModel(torch.nn.Module):
    """Logits that predict (token + 1) % V; with ``boost`` the 'reinforced' model raises token 7 by 3."""

    def __init__(self, boost: float = 0.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.boost = boost

    def forward(self, input_ids, attention_mask=None):
        logits = torch.nn.functional.one_hot((input_ids + 1) % V, V).float() * 2.0
        logits[..., 7] += self.boost
        return SimpleNamespace(logits=logits)


def _block(ids):
    return Block(0, 0, "", list(ids), [(i, i + 1) for i in range(len(ids))])


def test_label_batch_masks_mapping_and_formula():
    # original: 0 1 2 3 4 5 ; tokens 2,3 form an anchor "K" translated into one token 9:
    # translated: 0 1 9 4 5  -> mapping: 0->0, 1->1, 2->-1 (inside anchor), 3->2 (last anchor token), 4->3, 5->4
    orig = [0, 1, 2, 3, 4, 5]
    tb = SimpleNamespace(translated_ids=[0, 1, 9, 4, 5], mapping=np.array([0, 1, -1, 2, 3, 4]),
                         mask_reason=np.array([0, 0, 1, 0, 2, 0], dtype=np.int8),
                         suppress_from=[(2, [10])], chosen={"K": "N"}, translated_text="")
    source = LogitSource(FakeModel(boost=3.0), base_model=FakeModel())
    stats = LabelStats()
    rows = label_batch(source, [_block(orig)], [0], FakeTranslator({tuple(orig): tb}), [5.0], seed=0,
                       pad_id=0, stats=stats)
    labels = rows[0][alpha_key(5.0)]
    # labels[0] is never a target; position 2 (inside anchor) and 4 (predicts a repeated anchor) have no loss;
    # the last position predicts nothing.
    assert labels[0] == IGNORE
    assert labels[3] == IGNORE  # predicted by position 2 (inside anchor)
    assert labels[5] == IGNORE  # predicted by position 4 (repeated anchor)
    # kept positions 0, 1, 3: base on the TRANSLATED token at the mapped position predicts (t + 1) % V;
    # token 7 raised by the reinforced model is pushed down, so never chosen.
    assert labels[1] == 1  # position 0: translated token 0 -> 1
    assert labels[2] == 2  # position 1: translated token 1 -> 2
    # position 3 (last anchor token) maps to translated position 2 (token 9): base predicts 10, but 10 (the
    # translation's first token) is suppressed from translated position 2 on, so the next best is taken
    assert labels[4] != 10 and labels[4] != 7
    assert stats.masked["inside_anchor"] == 1 and stats.masked["predicts_repeated_anchor"] == 1
    assert stats.supervised == 3


def test_reinforced_boost_changes_labels_only_where_it_wins():
    orig = [5, 6, 3]
    tb = SimpleNamespace(translated_ids=orig, mapping=np.arange(3), mask_reason=np.zeros(3, dtype=np.int8),
                         suppress_from=[], chosen={}, translated_text="")
    # Base predicts 6 after 5 and 7 after 6; reinforced raises 7 by 3 everywhere.
    source = LogitSource(FakeModel(boost=3.0), base_model=FakeModel())
    stats = LabelStats()
    rows = label_batch(source, [_block(orig)], [0], FakeTranslator({tuple(orig): tb}), [0.5, 5.0], 0, 0, stats)
    small, big = rows[0][alpha_key(0.5)], rows[0][alpha_key(5.0)]
    assert small[1] == 6 and big[1] == 6  # position 0: base already prefers 6
    # position 1: base prefers 7 (logit 2) and the reinforced model raised 7 further: v_generic(7) = 2 - a*3
    assert small[2] == 7  # alpha 0.5: 2 - 1.5 = 0.5 > 0, still the best
    assert big[2] != 7  # alpha 5: 2 - 15 < 0, another token wins


def test_label_blocks_order_and_determinism():
    blocks = [_block([1, 2, 3, 4]), _block([2, 3]), _block([4, 5, 6])]
    results = {tuple(b.input_ids): SimpleNamespace(translated_ids=b.input_ids, mapping=np.arange(len(b)),
                                                   mask_reason=np.zeros(len(b), dtype=np.int8), suppress_from=[],
                                                   chosen={}, translated_text="") for b in blocks}
    source = LogitSource(FakeModel(boost=1.0), base_model=FakeModel())
    rows_a, _ = label_blocks(source, blocks, [0, 1, 2], FakeTranslator(results), [5.0], 2, 0, 0, progress=False)
    rows_b, _ = label_blocks(source, blocks, [2, 0, 1], FakeTranslator(results), [5.0], 1, 0, 0, progress=False)
    assert [r["block_index"] for r in rows_a] == [0, 1, 2]
    assert rows_a == rows_b  # batch size and order do not change labels
    assert [len(r[alpha_key(5.0)]) for r in rows_a] == [4, 2, 3]


def test_block_rng_is_per_block():
    assert block_rng(0, 3).random() == block_rng(0, 3).random()
    assert block_rng(0, 3).random() != block_rng(0, 4).random()


def test_soft_top_k_holds_the_generic_logits_of_each_labelled_position():
    """labels.soft_top_k (beyond the paper): the stored top-k are the generic logits v_b - alpha*ReLU(v_r - v_b)
    after suppression, aligned with the hard labels (row i + 1 for position i); their first is the label's logit."""
    from llm_unlearn.whp.labels import soft_keys

    orig = [5, 6, 3]
    tb = SimpleNamespace(translated_ids=orig, mapping=np.arange(3), mask_reason=np.zeros(3, dtype=np.int8),
                         suppress_from=[(1, [4])], chosen={}, translated_text="")
    source = LogitSource(FakeModel(boost=3.0), base_model=FakeModel())
    rows = label_batch(source, [_block(orig)], [0], FakeTranslator({tuple(orig): tb}), [5.0], 0, 0, LabelStats(),
                       soft_top_k=3)
    ids_key, logits_key = soft_keys(5.0)
    ids, vals, hard = rows[0][ids_key], rows[0][logits_key], rows[0][alpha_key(5.0)]
    assert len(ids) == len(orig) and all(len(r) == 3 for r in ids)
    for i in (1, 2):  # rows predicted by positions 0 and 1
        v_b = FakeModel()(torch.tensor([orig])).logits[0, i - 1]
        v = generic_logits(v_b, v_b + torch.nn.functional.one_hot(torch.tensor(7), V) * 3.0, 5.0)
        if i == 2:
            v[4] = float("-inf")  # suppressed from translated position 1 on
        top = torch.topk(v, 3)
        assert vals[i] == pytest.approx(top.values.tolist())
        assert vals[i][0] == pytest.approx(float(v[hard[i]]))  # the hard label is a top-1 (ties aside)
    assert 4 not in ids[2]
    # without soft_top_k nothing extra is stored
    plain = label_batch(source, [_block(orig)], [0], FakeTranslator({tuple(orig): tb}), [5.0], 0, 0, LabelStats())
    assert ids_key not in plain[0] and plain[0][alpha_key(5.0)] == hard


def test_target_token_mask_keeps_the_rise_of_target_tokens_only():
    """R3 (labels.rise_tokens: target): the ReLU term acts only on the masked-in tokens; every other token keeps the
    base model's logit, and an all-ones mask is the paper's formula exactly."""
    v_b = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    v_r = torch.tensor([[1.0, 4.0, 5.0, 0.5]])
    mask = torch.tensor([0.0, 1.0, 0.0, 1.0])
    out = generic_logits(v_b, v_r, 5.0, rise=reinforced_rise(v_b, v_r, mask))
    assert out.tolist()[0] == pytest.approx([1.0, 2.0 - 5 * 2.0, 3.0, 0.0 - 5 * 0.5])  # token 2 rose but is not masked in
    full = generic_logits(v_b, v_r, 5.0, rise=reinforced_rise(v_b, v_r, torch.ones(4)))
    assert torch.equal(full, generic_logits(v_b, v_r, 5.0))



def test_label_batch_with_a_rise_mask_leaves_unmasked_tokens_to_the_base():
    """R3 through label_batch: the reinforced model raises token 7 by 3 everywhere; with 7 outside the mask the base
    model's 7 wins where it predicts 7, as with no reinforced model at all."""
    orig = [5, 6, 3]
    tb = SimpleNamespace(translated_ids=orig, mapping=np.arange(3), mask_reason=np.zeros(3, dtype=np.int8),
                         suppress_from=[], chosen={}, translated_text="")
    source = LogitSource(FakeModel(boost=3.0), base_model=FakeModel())
    no_seven = torch.ones(V)
    no_seven[7] = 0
    rows = label_batch(source, [_block(orig)], [0], FakeTranslator({tuple(orig): tb}), [5.0], 0, 0, LabelStats(),
                       rise_mask=no_seven)
    assert rows[0][alpha_key(5.0)][2] == 7  # the paper's formula pushes 7 out here (test above)
    rows = label_batch(source, [_block(orig)], [0], FakeTranslator({tuple(orig): tb}), [5.0], 0, 0, LabelStats(),
                       rise_mask=torch.ones(V))
    assert rows[0][alpha_key(5.0)][2] != 7


def test_near_anchor_positions_span_the_anchor_and_the_window_after_it():
    """R5: from the position predicting an anchor's first token to ``window`` positions after its last token;
    clipped at the block's edges; window 0 = off."""
    near = near_anchor_positions(12, [(3, 4), (10, 11)], 2)
    assert np.nonzero(near)[0].tolist() == [2, 3, 4, 5, 6, 9, 10, 11]
    assert near_anchor_positions(6, [(0, 0)], 1).tolist() == [True, True, False, False, False, False]
    assert not near_anchor_positions(12, [(3, 4)], 0).any()


def test_label_batch_counts_every_tokens_rise_near_anchors_only():
    """R5 through label_batch: every position's base model predicts 7 and the reinforced model raises 7 by 3; 7 is
    not a target token, so far from the anchor (at position 2) the label stays 7 (R3) and within one position of it
    the whole rise pushes 7 out, as in the paper's formula."""
    orig = [6] * 8
    tb = SimpleNamespace(translated_ids=orig, mapping=np.arange(8), mask_reason=np.zeros(8, dtype=np.int8),
                         suppress_from=[], chosen={}, translated_text="", anchor_spans=[(2, 2)])
    source = LogitSource(FakeModel(boost=3.0), base_model=FakeModel())
    no_seven = torch.ones(V)
    no_seven[7] = 0
    stats = LabelStats()
    rows = label_batch(source, [_block(orig)], [0], FakeTranslator({tuple(orig): tb}), [5.0], 0, 0, stats,
                       rise_mask=no_seven, near_anchor=1)
    predicted = rows[0][alpha_key(5.0)][1:]  # labels[i + 1] is the prediction at position i
    assert [p == 7 for p in predicted] == [True, False, False, False, True, True, True]
    assert stats.near_anchor == 3
    plain = label_batch(source, [_block(orig)], [0], FakeTranslator({tuple(orig): tb}), [5.0], 0, 0, LabelStats(),
                        rise_mask=no_seven)
    assert all(p == 7 for p in plain[0][alpha_key(5.0)][1:])


def test_target_words_are_frequent_here_and_rare_in_english():
    """R1: a word counts when it occurs >= 3 times and >= min_ratio times more often than in general English; every
    surface form of it is kept; function words, punctuation and numbers never count."""
    background = "the people of the city went to work in the morning and came back home at night. " * 2000
    text = background + ("Zorblax met the Quennitt. The zorblax said: 1896, 1896, 1896! " * 3) + "Vantrell came once."
    words = target_words([text], min_ratio=5.0)
    assert {"Zorblax", "zorblax", "Quennitt"} <= set(words)
    assert not {"the", "The", "said", "met", "1896", "Vantrell"} & set(words)
    assert all(ratio >= 5.0 for ratio in words.values())


def test_target_token_mask_marks_first_tokens_not_shared_pieces(smol_tokenizer):
    """R2 on SmolLM2's tokenizer: the first token of " word" of each target word and anchor key; never a
    continuation piece, punctuation, or a common English word that is not itself a target word; a one-letter first
    piece is one."""
    tok = smol_tokenizer
    vocab = len(tok)
    mask = target_token_mask(["Lestrade", "hansom", "the"], ["Baker Street", "221B"], tok, vocab)
    first = tok(" Lestrade", add_special_tokens=False)["input_ids"]
    assert mask[first[0]] == 1 and all(mask[i] == 0 for i in first[1:] if i != first[0])
    assert mask[tok(" hansom", add_special_tokens=False)["input_ids"][0]] == 1
    assert mask[tok(" Baker", add_special_tokens=False)["input_ids"][0]] == 1  # an anchor key's first word
    assert mask[tok(" the", add_special_tokens=False)["input_ids"][0]] == 1  # "the" was given as a target word
    common = target_token_mask(["Lestrade"], [], tok, vocab)
    for piece in (" the", " a", " I", ",", ".", " 2", "ing", "est", "rade"):
        assert common[tok(piece, add_special_tokens=False)["input_ids"][0]] == 0, piece
    assert int(common.sum()) == 1  # " L" (SmolLM2 splits " Lestrade" into " L", "est", "rade")
