"""Log-likelihood scoring (lm-eval conventions, shared-prefix batching) and probability familiarity, checked
against hand computations on a tiny random model."""

from __future__ import annotations

import math

import pytest
import torch

from llm_unlearn.evaluation.familiarity import probability_familiarity
from llm_unlearn.evaluation.scoring import encode_pair, score_items
from llm_unlearn.evaluation.suites import ProbabilityPrompt, Suite


def hand_logprobs(model, ctx_ids, cont_ids):
    """log P(cont | ctx) token by token from one plain forward pass over ctx + cont."""
    with torch.no_grad():
        logits = model(torch.tensor([ctx_ids + cont_ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return [float(logp[len(ctx_ids) - 1 + j, t]) for j, t in enumerate(cont_ids)], logits


def test_encode_pair_follows_lm_eval(smol_tokenizer):
    tok = smol_tokenizer
    ctx, cont = encode_pair(tok, "Question: what?\nAnswer:", " Paris")
    assert ctx == tok.encode("Question: what?\nAnswer:")
    assert ctx + cont == tok.encode("Question: what?\nAnswer: Paris")
    # a trailing space of the context moves to the continuation
    ctx2, cont2 = encode_pair(tok, "Sherlock ", "Holmes")
    assert ctx2 == tok.encode("Sherlock") and tok.decode(cont2) == " Holmes"
    # an empty context becomes the prefix token (BOS, else EOS)
    pre = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ctx3, cont3 = encode_pair(tok, "", " Holmes")
    assert ctx3 == [pre] and cont3 == tok.encode(" Holmes", add_special_tokens=False)


def test_probability_matches_hand_computation(tiny_llama):
    model, tok = tiny_llama
    prompts = [("Sherlock Holmes's friend, Dr.", " Watson"),  # one or more tokens
               ("Sherlock Holmes lived at 221B", " Baker Street"),  # several tokens
               ("The famous detective", " Sherlock Holmes of Baker Street")]
    suite = Suite("t", "/tmp/t", probability=[ProbabilityPrompt(f"p{i}", p, t) for i, (p, t) in enumerate(prompts)])
    res = probability_familiarity(model, tok, suite, batch_size=2, progress=False)
    for (prompt, target), item in zip(prompts, res["items"], strict=True):
        ctx, cont = tok.encode(prompt), tok.encode(prompt + target)[len(tok.encode(prompt)):]
        lps, logits = hand_logprobs(model, ctx, cont)
        assert item["n_tokens"] == len(cont)
        assert item["logprob"] == pytest.approx(sum(lps), abs=1e-4)
        assert item["prob"] == pytest.approx(math.exp(sum(lps)), rel=1e-3)
        assert item["token_prob"] == pytest.approx(math.exp(sum(lps) / len(cont)), rel=1e-3)
        first, ref = logits[len(ctx) - 1], logits[len(ctx) - 1, cont[0]]
        # a random model has many near-equal logits: allow float32 ties
        assert int((first > ref + 1e-5).sum()) + 1 <= item["first_rank"] <= int((first > ref - 1e-5).sum()) + 1
        greedy = all(int(logits[len(ctx) - 1 + j].argmax()) == t for j, t in enumerate(cont))
        assert item["greedy"] == greedy
    assert res["mean_prob"] == pytest.approx(sum(it["prob"] for it in res["items"]) / 3)


def test_greedy_target_is_recognised(tiny_llama):
    """Take the model's own argmax continuation as target: it must be greedy with first rank 1."""
    model, tok = tiny_llama
    prompt = "Elementary, my dear"
    ids = tok.encode(prompt)
    with torch.no_grad():
        nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
    target = tok.decode([nxt])
    (choice,), = score_items(model, tok, [[(prompt, target)]], progress=False)
    if tok.encode(prompt + target)[len(ids):] == [nxt]:  # the round trip keeps the token
        assert choice.is_greedy and choice.first_rank == 1


def test_shared_prefix_equals_rows_and_hand(tiny_llama):
    """All choices of an item on one KV cache == each scored alone == a plain forward."""
    model, tok = tiny_llama
    ctx = "Question: Which planet is largest?\nAnswer:"
    conts = [" Jupiter", " the planet Saturn, which has rings", " Mars", " Earth"]
    shared = score_items(model, tok, [[(ctx, c) for c in conts]], progress=False)[0]
    alone = [score_items(model, tok, [[(ctx, c)]], progress=False)[0][0] for c in conts]
    for c, s, a in zip(conts, shared, alone, strict=True):
        cids, xids = encode_pair(tok, ctx, c)
        hand = sum(hand_logprobs(model, cids, xids)[0])
        assert s.logprob == pytest.approx(hand, abs=1e-4)
        assert a.logprob == pytest.approx(hand, abs=1e-4)
        assert s.n_tokens == len(xids)


def test_shared_prefix_batched_across_items(tiny_llama):
    """Several items of different context lengths in one batch (left-padded contexts, repeated caches), with
    single- and multi-token continuations mixed: every score equals the plain forward pass."""
    model, tok = tiny_llama
    items = [[("Passage: a long passage about the weather in spring and summer.\nQuestion: is it warm?\nAnswer:", c)
              for c in (" no", " yes")],
             [("Question: 2+2?\nAnswer:", c) for c in (" four", " five hundred and six", " 4")],
             [("Sherlock", " Holmes of 221B Baker Street")],
             [("Hi", " there")]]
    res = score_items(model, tok, items, batch_size=16, progress=False)
    res_small = score_items(model, tok, items, batch_size=2, progress=False)
    for item, scored, small in zip(items, res, res_small, strict=True):
        for (c, x), s, s2 in zip(item, scored, small, strict=True):
            cids, xids = encode_pair(tok, c, x)
            hand = sum(hand_logprobs(model, cids, xids)[0])
            assert s.logprob == pytest.approx(hand, abs=1e-4) and s2.logprob == pytest.approx(hand, abs=1e-4)


def test_row_batches_with_different_contexts(tiny_llama):
    """WinoGrande-style items (one context per choice), batched and left-padded across items."""
    model, tok = tiny_llama
    items = [[("Sarah was a better surgeon than Maria so Sarah", " always got the easier cases."),
              ("Sarah was a better surgeon than Maria so Maria", " always got the easier cases.")],
             [("The cup", " fell."), ("The very large cup on the table", " fell.")]]
    res = score_items(model, tok, items, batch_size=3, progress=False)
    for item, scored in zip(items, res, strict=True):
        for (c, x), s in zip(item, scored, strict=True):
            cids, xids = encode_pair(tok, c, x)
            assert s.logprob == pytest.approx(sum(hand_logprobs(model, cids, xids)[0]), abs=1e-4)


def test_left_truncation_of_long_contexts(smol_tokenizer):
    """Contexts longer than the model's window are cut from the left, as lm-eval does."""
    from tests.conftest import build_tiny_llama

    model = build_tiny_llama(smol_tokenizer)
    model.config.max_position_embeddings = 32
    long_ctx = " ".join(["word"] * 100)
    res = score_items(model, smol_tokenizer, [[(long_ctx, " yes"), (long_ctx, " no")]], progress=False)
    assert all(math.isfinite(c.logprob) for c in res[0])


def test_gemma_architecture(tiny_gemma):
    """The shared-prefix path must also work with Gemma-3's sliding-window cache."""
    model, tok = tiny_gemma
    items = [[("Question: Which planet is largest?\nAnswer:", c) for c in (" Jupiter", " Mars and Venus")],
             [("Q: yes?\nA:", c) for c in (" no", " yes")]]
    res = score_items(model, tok, items, progress=False)
    for item, scored in zip(items, res, strict=True):
        for (c, x), s in zip(item, scored, strict=True):
            cids, xids = encode_pair(tok, c, x)
            assert s.logprob == pytest.approx(sum(hand_logprobs(model, cids, xids)[0]), abs=1e-3)


def test_generation_batched_equals_single_and_seeded_sampling(tiny_llama):
    from llm_unlearn.evaluation.familiarity import generate

    model, tok = tiny_llama
    prompts = ["Hello there", "Sherlock Holmes lived at the", "x"]
    batched = generate(model, tok, prompts, max_new_tokens=5, batch_size=3, progress=False)
    single = [generate(model, tok, [p], max_new_tokens=5, progress=False)[0] for p in prompts]
    assert batched == single and all(len(c) == 1 for c in batched)
    assert tok.padding_side == "right"  # restored
    kw = dict(max_new_tokens=5, samples=3, temperature=0.8, top_p=0.9, seed=1, progress=False)
    s1, s2 = generate(model, tok, prompts, **kw), generate(model, tok, prompts, **kw)
    assert s1 == s2 and all(len(c) == 3 for c in s1)
    assert generate(model, tok, prompts, **{**kw, "seed": 2}) != s1
