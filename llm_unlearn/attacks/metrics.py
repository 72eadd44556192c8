"""Recovery: how much of what was forgotten comes back under an attack, with bootstrap intervals.

* ATK-R1 (same items): ``recovery = (attacked - unlearned) / (base - unlearned)``, all three on the same items
  (base and unlearned as plain ``eval`` scores them). 0 = the attack brings nothing back, 1 = back to the base
  model, > 1 = beyond it. The interval resamples items jointly (percentile bootstrap, seeded, as
  :func:`llm_unlearn.evaluation.stats.paired_bootstrap`). Undefined (None) when base - unlearned is 0.
* ATK-R2 (against the control): ``recovery_vs_control = 1 - (control - attacked) / (base - unlearned)``, where the
  control is the base model under the same attack: the share of the plain gap that the attack closes when the
  attack's own effect on any model is taken out.
* ATK-R3 (other items: languages, chat, two-choice): there is no unlearned/attacked pair on the same items, so
  we compare relative forgetting, ``rf = (base - unlearned) / (base - floor)`` (floor = chance: 0, or 0.5 for
  two choices), of the probe with that of the plain suite: ``recovery = 1 - rf_probe / rf_plain``. 0 = the probe
  shows the same forgetting as the plain suite, 1 = no forgetting at all on the probe. Items of the two sets
  are resampled independently.
"""

from __future__ import annotations

import numpy as np


def recovery(attacked: float, unlearned: float, base: float) -> float | None:
    """ATK-R1 on summary values."""
    gap = base - unlearned
    if abs(gap) < 1e-12:
        return None
    return (attacked - unlearned) / gap


def relative_forgetting(base: float, unlearned: float, floor: float = 0.0) -> float | None:
    room = base - floor
    if abs(room) < 1e-12:
        return None
    return (base - unlearned) / room


def _percentile(values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None, None
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def recovery_ci(attacked, unlearned, base, control=None, n_boot: int = 1000, seed: int = 0,
                confidence: float = 0.95) -> dict:
    """ATK-R1 (and ATK-R2 when ``control`` is given) with a bootstrap over items resampled jointly."""
    a, u, b = (np.asarray(x, dtype=float) for x in (attacked, unlearned, base))
    if not (len(a) == len(u) == len(b)) or (control is not None and len(control) != len(a)):
        raise ValueError("recovery needs the same items for every model")
    out: dict = {"n": int(len(a)), "recovery": recovery(a.mean(), u.mean(), b.mean()) if len(a) else None}
    c = np.asarray(control, dtype=float) if control is not None else None
    if c is not None and len(a):
        r = recovery(a.mean(), u.mean(), b.mean())
        out["recovery_vs_control"] = None if r is None else 1 - (c.mean() - a.mean()) / (b.mean() - u.mean())
    if len(a) < 2:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    am, um, bm = a[idx].mean(1), u[idx].mean(1), b[idx].mean(1)
    gap = bm - um
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = np.where(np.abs(gap) > 1e-12, (am - um) / gap, np.nan)
        out["ci_low"], out["ci_high"] = _percentile(rec, confidence)
        if c is not None:
            cm = c[idx].mean(1)
            rvc = np.where(np.abs(gap) > 1e-12, 1 - (cm - am) / gap, np.nan)
            out["vs_control_ci_low"], out["vs_control_ci_high"] = _percentile(rvc, confidence)
    out.update(confidence=confidence, n_boot=n_boot, seed=seed)
    return out


def cross_recovery_ci(probe_base, probe_unlearned, plain_base, plain_unlearned, probe_floor: float = 0.0,
                      plain_floor: float = 0.0, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """ATK-R3: 1 - rf_probe / rf_plain; probe and plain items resampled independently (pairs kept in each)."""
    pb, pu, qb, qu = (np.asarray(x, dtype=float) for x in (probe_base, probe_unlearned, plain_base, plain_unlearned))
    if len(pb) != len(pu) or len(qb) != len(qu):
        raise ValueError("base and unlearned must be scored on the same items")
    rf_probe = relative_forgetting(pb.mean(), pu.mean(), probe_floor) if len(pb) else None
    rf_plain = relative_forgetting(qb.mean(), qu.mean(), plain_floor) if len(qb) else None
    rec = None if rf_probe is None or not rf_plain else 1 - rf_probe / rf_plain
    out: dict = {"n": int(len(pb)), "n_plain": int(len(qb)), "recovery": rec, "rf_probe": rf_probe, "rf_plain": rf_plain}
    if len(pb) < 2 or len(qb) < 2 or rec is None:
        return out
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(pb), size=(n_boot, len(pb)))
    j = rng.integers(0, len(qb), size=(n_boot, len(qb)))
    pbm, pum, qbm, qum = pb[i].mean(1), pu[i].mean(1), qb[j].mean(1), qu[j].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rfp = (pbm - pum) / (pbm - probe_floor)
        rfq = (qbm - qum) / (qbm - plain_floor)
        vals = 1 - rfp / rfq
    out["ci_low"], out["ci_high"] = _percentile(vals, confidence)
    out.update(confidence=confidence, n_boot=n_boot, seed=seed)
    return out


def aligned(measure: dict, key: str, ids: list[str] | None = None) -> tuple[list[str], list[float]]:
    """(ids, values) of a measurement's items for ``key``, reordered to ``ids`` when given (``ids`` may be a subset:
    the items an attack scored, ATK-S1)."""
    part = (measure.get("items") or {}).get(key)
    if not part:
        return [], []
    if ids is None:
        return list(part["ids"]), list(part["values"])
    by_id = dict(zip(part["ids"], part["values"], strict=True))
    if not set(ids) <= set(by_id):
        raise ValueError(f"measurements of {key} are on different items")
    return list(ids), [by_id[i] for i in ids]
