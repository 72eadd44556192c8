"""Paired statistics (bootstrap intervals, McNemar) and sliding-window perplexity."""

from __future__ import annotations

import math

import pytest
import torch

from llm_unlearn.errors import EvalError
from llm_unlearn.evaluation.perplexity import _windows, perplexity, read_wikitext, wikitext_detokenize
from llm_unlearn.evaluation.stats import mcnemar, mean_ci, paired_bootstrap
from tests.conftest import data_path


def test_bootstrap_identical_and_shifted():
    a = [0, 1, 1, 0, 1, 0, 1, 1]
    same = paired_bootstrap(a, a, n_boot=500)
    assert same["diff"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
    shifted = paired_bootstrap([0.1 * i for i in range(50)], [0.1 * i + 0.5 for i in range(50)], n_boot=500)
    assert shifted["diff"] == pytest.approx(0.5) and shifted["ci_low"] == pytest.approx(0.5)


def test_bootstrap_interval_is_seeded_and_sane():
    import random

    rng = random.Random(1)
    a = [rng.random() < 0.6 for _ in range(300)]
    b = [x if rng.random() < 0.8 else (not x) for x in a]
    r1 = paired_bootstrap(a, b, n_boot=1000, seed=3)
    r2 = paired_bootstrap(a, b, n_boot=1000, seed=3)
    assert r1 == r2
    assert r1["ci_low"] <= r1["diff"] <= r1["ci_high"]
    # roughly the normal-approximation width of a paired difference of proportions
    d = [int(y) - int(x) for x, y in zip(a, b, strict=True)]
    mu = sum(d) / len(d)
    se = math.sqrt(sum((x - mu) ** 2 for x in d) / (len(d) - 1) / len(d))
    assert (r1["ci_high"] - r1["ci_low"]) == pytest.approx(2 * 1.96 * se, rel=0.25)
    lo, hi = mean_ci([0.0, 1.0] * 20, n_boot=500)
    assert lo < 0.5 < hi


def test_mcnemar_counts_and_exact_p():
    a = [1] * 10 + [0] * 5 + [1] * 3
    b = [0] * 10 + [0] * 5 + [1] * 3
    r = mcnemar(a, b)
    assert (r["lost"], r["gained"], r["both_right"], r["both_wrong"]) == (10, 0, 3, 5)
    assert r["p_value"] == pytest.approx(2 * 0.5 ** 10)
    assert mcnemar([1, 0], [1, 0])["p_value"] == 1.0
    r = mcnemar([1, 1, 1, 0, 0], [0, 0, 1, 1, 0])  # 2 lost, 1 gained: p = 2 * P(X <= 1 | n=3) = 1
    assert r["p_value"] == pytest.approx(1.0)
    with pytest.raises(EvalError):
        mcnemar([1], [1, 0])
    with pytest.raises(EvalError):
        paired_bootstrap([1], [1, 0])


def test_windows_cover_every_token_once():
    for n, w, s in [(10, 4, 2), (100, 32, 16), (5, 10, 5), (33, 8, 7)]:
        wins = _windows(n, w, s)
        assert sum(k for _, _, k in wins) == n - 1
        assert all(e - b <= w and k <= e - b - (1 if b == 0 else 0) for b, e, k in wins)
        assert wins[-1][1] == n


def test_perplexity_matches_full_forward(tiny_llama):
    model, tok = tiny_llama
    text = "It was a dark and stormy night; the rain fell in torrents, except at occasional intervals. " * 3
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    nll = float(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum"))
    full = perplexity(model, tok, text, window=1024, stride=512, progress=False)
    assert full["tokens"] == len(ids) - 1
    assert full["nll"] == pytest.approx(nll, rel=1e-4)
    assert full["token_perplexity"] == pytest.approx(math.exp(nll / (len(ids) - 1)), rel=1e-4)
    # a small window scores each token once, with less context: same count, close but not equal
    small = perplexity(model, tok, text, window=16, stride=8, batch_size=3, progress=False)
    assert small["tokens"] == len(ids) - 1
    assert small["bits_per_byte"] > 0 and small["word_perplexity"] > small["token_perplexity"]
    capped = perplexity(model, tok, [text, text], window=16, stride=8, max_tokens=20, progress=False)
    assert capped["tokens"] == 19 and capped["documents"] == 1


def test_wikitext_reading(tmp_path):
    assert wikitext_detokenize("a @-@ b , c @,@ 000 ( x )") == "a-b, c,000 (x)"
    with pytest.raises(EvalError, match="WikiText-2 file not found"):
        read_wikitext(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(EvalError, match="empty file"):
        read_wikitext(tmp_path / "empty.txt")


def test_real_wikitext_is_read(tmp_path):
    path = data_path("wikitext2", "test.txt")
    text = read_wikitext(path)
    assert " @-@ " not in text and "is an English film, television and theatre actor" in text[:2000]
    assert read_wikitext(path.parent) == text  # a folder means its test.txt
