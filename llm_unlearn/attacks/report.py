"""``report.md`` (one table: attack x model, with recovery) and ``attack.png`` (recovery per attack)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..runio import save_figure

logger = logging.getLogger(__name__)

_KIND_NOTE = {"same_items": "", "probe": "†"}


def _f(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _with_interval(r: dict | None, key: str, low: str, high: str) -> str:
    if not r or r.get(key) is None:
        return "–"
    s = f"{r[key]:+.2f}"
    if r.get(low) is not None:
        s += f" [{r[low]:+.2f}, {r[high]:+.2f}]"
    return s


def _rec(r: dict | None) -> str:
    return _with_interval(r, "recovery", "ci_low", "ci_high")


def _rec_vc(r: dict | None) -> str:
    """ATK-R2: recovery against the control (the base model under the same attack)."""
    return _with_interval(r, "recovery_vs_control", "vs_control_ci_low", "vs_control_ci_high")


def render_markdown(doc: dict) -> str:
    lines = ["# Attack report: does the forgetting hold?", "",
             f"- unlearned model: `{doc['model']}`", f"- base model: `{doc['base']}`",
             f"- suites: {', '.join(s['name'] for s in doc['suites'])}",
             f"- attacks: {', '.join(doc['attacks']) or 'none'}"]
    for name, reason in (doc.get("skipped") or {}).items():
        lines.append(f"- skipped **{name}**: {reason}")
    lines += ["",
              "Recovery = (attacked − unlearned) / (base − unlearned) on the same items, with a 95% bootstrap "
              "interval over items: 0 = the attack brings nothing back, 1 = as familiar as the base model. "
              "Rows marked † are other items (another language, chat questions, two-choice items): their recovery "
              "is 1 − (relative forgetting on them) / (relative forgetting on the plain suite), relative forgetting "
              "= (base − unlearned) / (base − chance). The `base` rows are the control: the base model under the "
              "same attack. Recovery vs control = 1 − (control − attacked) / (base − unlearned): the share of the "
              "plain gap the attack closes once its effect on the base model is taken out (an attack that damages "
              "every model alike, such as coarse rounding, can lower both models and show a high plain recovery "
              "with none against the control). The `none / plain` rows are the absolute before / after numbers.",
              "",
              "| attack | variant | suite | model | familiarity | P(target) | accuracy | recovery (familiarity) "
              "| recovery (P / accuracy) | vs control (familiarity) | vs control (P) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        mark = _KIND_NOTE.get(r["kind"], "")
        for label in ("base", "unlearned"):
            s = r["scores"].get(label)
            if s is None:
                continue
            rec_f = rec_p = vc_f = vc_p = ""
            if label == "unlearned" and r["attack"] != "none":
                rec_f = _rec(r["recovery"].get("familiarity"))
                rec_p = _rec(r["recovery"].get("prob") or r["recovery"].get("accuracy"))
                vc_f = _rec_vc(r["recovery"].get("familiarity"))
                vc_p = _rec_vc(r["recovery"].get("prob"))
            lines.append(f"| {r['attack']}{mark} | {r['variant']} | {r['suite']} | {label} | {_f(s['familiarity'])} "
                         f"| {_f(s['prob'], 4)} | {_f(s['accuracy'])} | {rec_f} | {rec_p} | {vc_f} | {vc_p} |")
    extra = []
    for r in doc["results"]:
        surv = (r.get("info") or {}).get("delta_survival")
        if surv:
            extra.append(f"- {r['variant']} ({r['suite']}): after rounding, the unlearning delta keeps "
                         f"{_f(surv['projection'], 2)} of itself in its own direction (cosine with what rounding "
                         f"leaves: {_f(surv['cosine'], 2)}, norm ratio {_f(surv['norm_ratio'], 2)}); "
                         f"{surv['share_codes_changed']:.1%} "
                         f"of the integer codes change vs {surv['share_delta_nonzero']:.1%} of the full-precision "
                         f"weights; mean |ΔW| = {_f(surv['mean_abs_delta_in_steps'], 3)} quantization steps.")
        left = (r.get("info") or {}).get("left_out")
        if left and any(left.values()):
            extra.append(f"- {r['attack']} {r['variant']} ({r['suite']}): {left['completion']} completion and "
                         f"{left['probability']} probability items not scored: the attack's text names their answer "
                         "(scoring them would credit copying, or learning that very text)")
        gd = (r.get("info") or {}).get("gguf_delta")
        if gd:
            below = gd.get("share_below_half_step")
            extra.append(f"- {r['variant']}: {gd['share_delta_nonzero']:.1%} of the rounded weights were changed by "
                         f"unlearning, {'–' if below is None else f'{below:.1%}'} of those by less than half a "
                         f"quantization step of the base's block; after rounding, {gd['share_changed_after']:.1%} "
                         f"differ from the rounded base; the delta keeps {_f(gd['projection'], 2)} of itself in its "
                         f"own direction (cosine {_f(gd['cosine'], 2)}).")
        gg = (r.get("info") or {}).get("gguf")
        if gg and (gg.get("kept") or gg.get("notes")):
            extra.append(f"- {r['variant']}: formats used {gg.get('formats')}; "
                         f"{len(gg.get('kept') or [])} weights kept in full precision (row width)"
                         + "".join(f"; {n}" for n in gg.get("notes") or []))
        loss = (r.get("info") or {}).get("text_loss")
        if loss and r["attack"] == "relearn":
            extra.append(f"- relearn on {r['info'].get('source')} text ({r['info'].get('blocks')} blocks, "
                         f"lr {r['info'].get('lr')}): loss of the unlearned model on it, "
                         + ", ".join(f"step {k}: {v:.3f}" for k, v in sorted(loss.items(), key=lambda kv: int(kv[0]))))
    if extra:
        lines += ["", "## Details", "", *dict.fromkeys(extra)]
    if doc.get("plots"):
        lines += ["", *[f"![{p}]({p})" for p in doc["plots"]]]
    return "\n".join(lines) + "\n"


def make_plot(doc: dict, out: Path) -> list[Path]:
    """Recovery per attack variant, with its interval: of familiarity, else P(target), else accuracy."""
    rows = [r for r in doc["results"] if r["attack"] != "none" and r["recovery"].get(r["headline"], {}).get("recovery")
            is not None]
    if not rows:
        return []
    try:
        import matplotlib
    except ImportError:
        logger.warning("matplotlib is not installed: no attack.png (pip install 'llm-unlearn[eval]')")
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, vals, lo, hi = [], [], [], []
    for r in rows:
        rec = r["recovery"][r["headline"]]
        short = {"familiarity": "fam.", "prob": "P", "accuracy": "acc."}[r["headline"]]
        labels.append(f"{r['attack']}:{r['variant']} [{short}]" + (f" ({r['suite']})" if len(doc["suites"]) > 1 else ""))
        vals.append(rec["recovery"])
        lo.append(rec["recovery"] - rec["ci_low"] if rec.get("ci_low") is not None else 0)
        hi.append(rec["ci_high"] - rec["recovery"] if rec.get("ci_high") is not None else 0)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
    y = range(len(rows))
    ax.barh(list(y), vals, xerr=[lo, hi], color="tab:red", alpha=0.7, capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.axvline(1, color="gray", lw=0.8, ls="--")
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("recovery (0 = still forgotten, 1 = back to base)")
    ax.set_title("Recovery of forgotten knowledge under attack (95% intervals)")
    fig.tight_layout()
    path = out / "attack.png"
    save_figure(fig, path)
    plt.close(fig)
    return [path]
