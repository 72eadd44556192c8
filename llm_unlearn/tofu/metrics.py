"""TOFU's metrics (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs", section 2.2 and their
reference code), computed from per-item losses. Every loss here is a LENGTH-NORMALISED negative log-likelihood:
the mean over the answer's tokens of -log p(token | question, previous tokens), so ``exp(-loss)`` is the
normalised answer probability ``P(a|q)^(1/|a|)``.

Rules (cited by the tests):

* TOFU-M1 answer probability, QA splits (forget, retain): mean over items of ``exp(-loss(answer))``.
* TOFU-M2 answer probability, multiple-choice splits (real authors, world facts): mean over items of
  ``p(answer) / (p(answer) + sum p(wrong option))`` with each ``p = exp(-loss)`` (normalised probabilities).
* TOFU-M3 ROUGE-L recall of the greedy answer against the reference answer (``rouge-score``, stemming on, as the
  reference code): mean over items.
* TOFU-M4 truth ratio of an item: ``R = P~(perturbed) / P~(paraphrased)`` where ``P~(perturbed)`` is the geometric
  mean of the normalised probabilities of the perturbed answers, i.e. ``R = exp(loss(paraphrased) -
  mean(loss(perturbed)))``. For real authors / world facts, which have no paraphrase, the answer itself stands in
  for it (TOFU's configuration does the same).
* TOFU-M5 truth-ratio aggregate of a split. Forget: ``mean(min(R, 1/R))`` (reported, not used by forget
  quality). Retain / real authors / world facts (the utility numbers): ``mean(max(0, 1 - R))``: high when
  perturbed answers are much less likely than the true one.
* TOFU-M6 forget quality: p-value of the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``,
  two-sided, default method) between the RAW per-item truth ratios of the model and of the retain model on the
  forget set. The reference code tests ``1/R``; the KS statistic is unchanged by a monotone map applied to both
  samples, so the p-value is the same.
* TOFU-M7 model utility: harmonic mean (``scipy.stats.hmean``) of the nine numbers answer probability, ROUGE-L
  recall and truth-ratio aggregate on retain, real authors and world facts. A zero among them gives 0.
* TOFU-M8 efficiency (the unlearning challenge's bar, < 0.2): unlearning wall time / retain-model training wall
  time on the same machine, and the same ratio of estimated FLOPs (see :mod:`llm_unlearn.tofu.flops`).

Choices where TOFU's definition left one open, or where we differ from its code:

* Format: the model's own chat template (TOFU used each model's instruction format, e.g. Llama-2's ``[INST]``);
  the answer's loss covers its tokens and the template's end-of-turn token (TOFU's covers the answer and EOS).
* Greedy answers stop at the end of the turn or after ``eval.max_new_tokens`` new tokens (TOFU: 200 tokens for
  prompt and answer together); batched with left padding.
* Real authors / world facts: the answer loss is the option's text as the assistant's whole answer.
* Model utility is 0 when one of the nine numbers is 0 (scipy's hmean would warn and return 0 too).
* The CPU configuration evaluates the retain split, real authors and world facts on spread subsets
  (``data.eval_*_items``); the full configuration uses every item, as TOFU.
* Efficiency: the retain model's time is its training loop (``Trainer.train``); the unlearning time is the whole
  method call (every stage, model loading included), so the ratio does not flatter the method. Both come from
  the machine that ran them: a retain model cached on another machine makes the time ratio meaningless (the FLOPs
  ratio still holds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import hmean, ks_2samp

QA_SPLITS = ("forget", "retain")
CHOICE_SPLITS = ("real_authors", "world_facts")
UTILITY_SPLITS = ("retain", "real_authors", "world_facts")


def answer_probability(answer_losses: Sequence[float]) -> float:
    """TOFU-M1."""
    return float(np.mean(np.exp(-np.asarray(answer_losses, dtype=float))))


def choice_probability(answer_losses: Sequence[float], wrong_losses: Sequence[Sequence[float]]) -> float:
    """TOFU-M2: normalised probability of the correct option among all options."""
    p_true = np.exp(-np.asarray(answer_losses, dtype=float))
    p_wrong = np.exp(-np.asarray(wrong_losses, dtype=float)).sum(axis=-1)
    return float(np.mean(p_true / (p_true + p_wrong)))


_SCORER = None


def rouge_l_recall(reference: str, generated: str) -> float:
    """TOFU-M3 for one item."""
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(_SCORER.score(reference, generated)["rougeL"].recall)


def truth_ratios(paraphrased_losses: Sequence[float], perturbed_losses: Sequence[Sequence[float]]) -> np.ndarray:
    """TOFU-M4: per-item ``R = exp(loss(paraphrased) - mean(loss(perturbed)))``."""
    para = np.asarray(paraphrased_losses, dtype=float)
    pert = np.asarray(perturbed_losses, dtype=float).mean(axis=-1)
    return np.exp(para - pert)


def truth_ratio_forget(ratios: Sequence[float]) -> float:
    """TOFU-M5, forget split."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.minimum(r, 1.0 / r)))


def truth_ratio_utility(ratios: Sequence[float]) -> float:
    """TOFU-M5, retain / real authors / world facts."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def forget_quality(model_forget_ratios: Sequence[float], retain_forget_ratios: Sequence[float]) -> dict:
    """TOFU-M6: ``{"forget_quality": p-value, "ks_statistic": D}``."""
    res = ks_2samp(np.asarray(model_forget_ratios, dtype=float), np.asarray(retain_forget_ratios, dtype=float))
    return {"forget_quality": float(res.pvalue), "ks_statistic": float(res.statistic)}


def model_utility(values: Sequence[float]) -> float:
    """TOFU-M7: harmonic mean of the nine utility numbers (0 when any is 0)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0 or np.any(~np.isfinite(v)) or np.any(v < 0):
        raise ValueError(f"model utility needs finite non-negative numbers, got {values}")
    if np.any(v == 0):
        return 0.0
    return float(hmean(v))


def split_summary(split: str, items: Sequence[dict]) -> dict:
    """Aggregate one split's per-item records (keys ``answer_loss``, ``paraphrased_loss``, ``perturbed_losses``,
    ``rougeL_recall``) into TOFU's three numbers."""
    answer = [it["answer_loss"] for it in items]
    para = [it["paraphrased_loss"] for it in items]
    pert = [it["perturbed_losses"] for it in items]
    ratios = truth_ratios(para, pert)
    prob = choice_probability(answer, pert) if split in CHOICE_SPLITS else answer_probability(answer)
    tr = truth_ratio_forget(ratios) if split == "forget" else truth_ratio_utility(ratios)
    return {"probability": prob, "rougeL_recall": float(np.mean([it["rougeL_recall"] for it in items])),
            "truth_ratio": tr, "items": len(items)}


def summarize(per_item: dict[str, Sequence[dict]], retain_forget_ratios: Sequence[float] | None = None) -> dict:
    """All of TOFU's numbers for one model: per-split summaries, model utility (when the three utility splits
    are there) and forget quality (when the retain model's forget-set truth ratios are given)."""
    out: dict = {"splits": {s: split_summary(s, items) for s, items in per_item.items()}}
    if all(s in out["splits"] for s in UTILITY_SPLITS):
        nine = [out["splits"][s][k] for s in UTILITY_SPLITS for k in ("probability", "rougeL_recall", "truth_ratio")]
        out["model_utility"] = model_utility(nine)
    if "forget" in per_item:
        ratios = truth_ratios([it["paraphrased_loss"] for it in per_item["forget"]],
                              [it["perturbed_losses"] for it in per_item["forget"]])
        out["forget_truth_ratios"] = [float(x) for x in ratios]
        if retain_forget_ratios is not None:
            out.update(forget_quality(ratios, retain_forget_ratios))
            out["log10_forget_quality"] = math.log10(max(out["forget_quality"], 1e-300))
    return out


def efficiency(unlearn_seconds: float, retain_seconds: float, unlearn_flops: float | None = None,
               retain_flops: float | None = None) -> dict:
    """TOFU-M8: cost of unlearning as a share of retraining (the retain model)."""
    out = {"time_ratio": unlearn_seconds / retain_seconds if retain_seconds > 0 else float("nan")}
    if unlearn_flops is not None and retain_flops:
        out["flops_ratio"] = unlearn_flops / retain_flops
    return out
