"""Run the attacks: score base and unlearned plainly, then under each attack; pair the rows and write
``attack.json``, ``report.md`` and ``attack.png``."""

from __future__ import annotations

import datetime as _dt
import gc
import logging
import time
from pathlib import Path

from ..config import AttackConfig, EvalConfig
from ..errors import EvalError
from ..evaluation.suites import load_suite
from ..runio import atomic_write_json, atomic_write_text
from .base import PROBE, AttackContext, MissingInput, Row
from .metrics import aligned, cross_recovery_ci, recovery_ci
from .registry import ATTACKS, attack_module, parse_attacks
from .scoring import Scorer

logger = logging.getLogger(__name__)

SCHEMA = "llm-unlearn-attack/1"
METRICS = ("familiarity", "prob", "accuracy")


def _load(spec_or_pair, eval_config: EvalConfig, what: str):
    from ..evaluation.core import _prepare

    model, tok, spec, _ = _prepare(spec_or_pair, eval_config)
    logger.info("%s model: %s", what, spec)
    return model, tok, spec


def attack(model, base, suites: list, out_dir: str | Path, config: AttackConfig | None = None,
           eval_config: EvalConfig | None = None, heldout_texts: list[str] | None = None,
           relearn_texts: dict[str, list[str]] | None = None, relearn_lr: float | None = None,
           overwrite: bool = False, progress: bool = True) -> dict:
    """Attack an unlearned ``model`` and compare with ``base`` (specs, or loaded ``(model, tokenizer)`` pairs).

    ``suites``: suite folders; ``heldout_texts``: target text no stage trained on (relearn, passage);
    ``relearn_texts``: other texts to relearn from, by name. Returns the attack.json dict.
    """
    config = config or AttackConfig()
    eval_config = eval_config or EvalConfig()
    explicit = parse_attacks(config.attacks)
    names = explicit or list(ATTACKS)
    out = Path(out_dir).expanduser()
    existing = [n for n in ("attack.json", "report.md") if (out / n).exists()]
    if existing and not overwrite:
        raise EvalError(f"{out} already holds attack results ({', '.join(existing)}); pass overwrite or another folder")
    if not suites:
        raise EvalError("give at least one prompt suite (--suite DIR)")
    loaded = [load_suite(p) for p in suites]  # fail on bad data before any model is loaded
    for t_name, texts in (relearn_texts or {}).items():
        if not texts or not any(t.strip() for t in texts):
            raise EvalError(f"relearn text {t_name!r} is empty")
    scorer = Scorer(eval_config, progress=progress, chat_max_new_tokens=config.chat_max_new_tokens)
    t_start = time.perf_counter()
    b_model, b_tok, b_spec = _load(base, eval_config, "base")
    u_model, u_tok, u_spec = _load(model, eval_config, "unlearned")
    ctx = AttackContext(base=(b_model, b_tok), unlearned=(u_model, u_tok), suites=loaded, scorer=scorer,
                        config=config, heldout_texts=[t for t in heldout_texts or [] if t.strip()],
                        relearn_texts=dict(relearn_texts or {}),
                        relearn_lr=relearn_lr if relearn_lr is not None else (config.relearn_lr or 3e-4),
                        base_spec=b_spec if isinstance(b_spec, str) else None)
    skipped = {}
    for name in names:  # inputs each attack needs, checked before the long part
        check = getattr(attack_module(name), "missing_input", None)
        reason = check(ctx) if check else None
        if reason and name in explicit:
            raise EvalError(f"attack {name!r} cannot run: {reason}")
        if reason:
            skipped[name] = reason
            logger.warning("attack %s skipped: %s", name, reason)
    rows: list[Row] = []
    for suite in loaded:
        ctx.plain[suite.name] = {}
        for label, m, tok in ctx.models():
            ctx.plain[suite.name][label] = scorer.suite(m, tok, suite, label=f"plain {label}")
            rows.append(Row("none", "plain", suite.name, label, ctx.plain[suite.name][label]))
    timing = {}
    for name in names:
        if name in skipped:
            continue
        t0 = time.perf_counter()
        logger.info("attack %s", name)
        try:
            rows += attack_module(name).run(ctx)
        except MissingInput as exc:
            skipped[name] = str(exc)
            continue
        timing[name] = round(time.perf_counter() - t0, 1)
        gc.collect()
    results = pair_rows(rows, ctx.plain, config)
    doc = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "base": b_spec, "model": u_spec,
        "suites": [s.describe() for s in loaded],
        "attacks": [n for n in names if n not in skipped], "skipped": skipped,
        "config": _asdict(config), "eval_config": {k: getattr(eval_config, k) for k in
                                                   ("max_new_tokens", "batch_size", "seed", "dtype", "device")},
        "relearn_lr": ctx.relearn_lr, "heldout_texts": len(ctx.heldout_texts),
        "relearn_sources": sorted(ctx.relearn_texts),
        "recovery_rules": {"same_items": "(attacked - unlearned) / (base - unlearned) on the same items",
                           "vs_control": "1 - (control - attacked) / (base - unlearned), control = base under attack",
                           "probe": "1 - rf_probe / rf_plain, rf = (base - unlearned) / (base - floor)"},
        "results": results,
        "rows": [_row_dict(r) for r in rows],
        "timing": {**timing, "total": round(time.perf_counter() - t_start, 1)},
    }
    doc["summary"] = {f"{r['attack']}/{r['variant']}/{r['suite']}": r["recovery"].get(r["headline"], {}).get("recovery")
                      for r in results if r["attack"] != "none"}
    from .report import make_plot, render_markdown

    out.mkdir(parents=True, exist_ok=True)
    doc["plots"] = [Path(p).name for p in make_plot(doc, out)]
    atomic_write_json(out / "attack.json", doc)
    atomic_write_text(out / "report.md", render_markdown(doc))
    return doc


def _asdict(config) -> dict:
    import dataclasses

    return dataclasses.asdict(config)


def _row_dict(r: Row) -> dict:
    return {"attack": r.attack, "variant": r.variant, "suite": r.suite, "model": r.model, "kind": r.kind,
            "probe": r.probe, "floor": r.floor, "measure": r.measure, "info": r.info}


def pair_rows(rows: list[Row], plain: dict, config: AttackConfig) -> list[dict]:
    """Group rows by (attack, variant, suite) and compute recovery per measure (ATK-R1/R2/R3)."""
    groups: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        groups.setdefault((r.attack, r.variant, r.suite), {})[r.model] = r
    kw = dict(n_boot=config.bootstrap, seed=config.seed)
    out = []
    for (attack_name, variant, suite), by_model in groups.items():
        att = by_model.get("unlearned")
        ctl = by_model.get("base")
        pb, pu = plain[suite]["base"], plain[suite]["unlearned"]
        entry = {"attack": attack_name, "variant": variant, "suite": suite,
                 "kind": (att or ctl).kind, "probe": (att or ctl).probe,
                 "scores": {label: {k: r.measure.get(k) for k in METRICS} for label, r in by_model.items()},
                 "recovery": {}, "info": (att.info if att else {})}
        if attack_name != "none" and att is not None:
            if att.kind == PROBE:
                for key in METRICS:
                    ref = key if key in ("familiarity", "prob") else "familiarity"
                    if ctl is None or att.measure.get(key) is None or pb.get(ref) is None:
                        continue
                    ids, a_vals = aligned(att.measure, key)
                    _, c_vals = aligned(ctl.measure, key, ids)
                    q_ids, qb = aligned(pb, ref)
                    _, qu = aligned(pu, ref, q_ids)
                    entry["recovery"][key] = {"reference": ref, **cross_recovery_ci(c_vals, a_vals, qb, qu,
                                                                                    probe_floor=att.floor, **kw)}
            else:
                for key in ("familiarity", "prob"):
                    if att.measure.get(key) is None or pb.get(key) is None:
                        continue
                    ids, a_vals = aligned(att.measure, key)
                    _, b_vals = aligned(pb, key, ids)
                    _, u_vals = aligned(pu, key, ids)
                    c_vals = aligned(ctl.measure, key, ids)[1] if ctl is not None else None
                    entry["recovery"][key] = recovery_ci(a_vals, u_vals, b_vals, control=c_vals, **kw)
        # the measure the summary and the plot show: the first one whose recovery is defined
        entry["headline"] = next((k for k in METRICS if (entry["recovery"].get(k) or {}).get("recovery") is not None),
                                 next((k for k in METRICS if k in entry["recovery"]), "familiarity"))
        out.append(entry)
    return out
