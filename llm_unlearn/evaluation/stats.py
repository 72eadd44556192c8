"""Paired statistics for before/after comparisons on the same items.

Users decide on *differences* (did the benchmark drop? did familiarity fall?), so each difference comes with a
paired interval: the percentile bootstrap over items (resampling items, keeping each item's before/after pair
together; seeded), and for 0/1 outcomes McNemar's discordant counts with an exact two-sided p-value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import EvalError


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """Difference of means ``mean(b) - mean(a)`` over paired items, with a percentile bootstrap interval."""
    import numpy as np

    if len(a) != len(b):
        raise EvalError(f"paired comparison needs the same items: {len(a)} vs {len(b)} values")
    n = len(a)
    if n == 0:
        return {"n": 0, "diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # chunks bound memory at 256 x n indices
        k = min(256, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        means[start:start + k] = d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return {"n": n, "mean_a": float(np.mean(a)), "mean_b": float(np.mean(b)), "diff": float(d.mean()),
            "ci_low": float(lo), "ci_high": float(hi), "confidence": confidence, "n_boot": n_boot, "seed": seed}


def mcnemar(a: Sequence[int], b: Sequence[int]) -> dict:
    """McNemar's test on paired 0/1 outcomes: ``b01`` = wrong before / right after, ``b10`` = right before / wrong
    after; exact two-sided binomial p-value on the discordant pairs."""
    if len(a) != len(b):
        raise EvalError(f"McNemar needs the same items: {len(a)} vs {len(b)}")
    n01 = sum(1 for x, y in zip(a, b, strict=True) if not x and y)
    n10 = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    n = n01 + n10
    if n == 0:
        p = 1.0
    else:
        k = min(n01, n10)
        # P(X <= k) for X ~ Bin(n, 1/2), doubled; computed in log space for large n
        logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
        m = max(logs)
        p = min(1.0, 2 * math.exp(m) * sum(math.exp(x - m) for x in logs))
    return {"both_right": sum(1 for x, y in zip(a, b, strict=True) if x and y), "both_wrong": sum(1 for x, y in zip(a, b, strict=True) if not x and not y),
            "gained": n01, "lost": n10, "p_value": p}


def mean_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (for plot error bars of unpaired summaries)."""
    r = paired_bootstrap([0.0] * len(values), values, n_boot=n_boot, seed=seed, confidence=confidence)
    return r["ci_low"], r["ci_high"]
