"""The results files of `llm-unlearn benchmark tofu`: the table, the figure, and the folder's rows kept (TOFU-O1).

``results.json`` holds every method scored in its ``--out`` folder; ``results.md`` is its table (forget quality worded
as the KS test it is, rule TOFU-S2) with the relearning table; ``tofu_plot.png`` is TOFU's figure.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from ..runio import save_figure
from .relearn import CEILING, FLOOR, render_relearn

logger = logging.getLogger(__name__)


def forget_quality_verdict(p: float | None, n: int, base_p: float | None = None) -> str:
    """TOFU-S2: the forget quality as the KS test it is, with its item count and the base model's figure."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    verdict = "rejected (differs from the retain model)" if p < 0.05 else "not rejected (no evidence of a difference)"
    base = "" if base_p is None else f"; base model {base_p:.3g}"
    return f"p = {p:.3g} on {n} items: {verdict}{base}"


def _plain(doc):
    return json.loads(json.dumps(doc))


def keep_earlier_rows(results: dict, path: Path) -> dict:
    """Rule TOFU-O1: ``results.json`` holds every method scored in its folder, not only this run's ``--methods``.

    The rows of methods an earlier run in the same ``--out`` scored are kept when they compare: the same target and
    retain models, split, data and evaluation settings; this run's rows replace earlier rows of the same name. The
    earlier relearning rows of a model are kept when the model is unchanged (the same row) and either this run did
    not relearn or it relearned with the same settings and got the same floor and ceiling. Whatever of an earlier
    file cannot be kept is not lost: the file is kept beside the new one as ``results.replaced-<UTC time>.json``."""
    if not path.is_file():
        return results
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    now = _plain(results)
    keys = ("split", "model", "data", "train", "eval")
    comparable = isinstance(earlier, dict) and isinstance(earlier.get("models"), dict) \
        and all((earlier.get(k) or {}).get("path") == now[k]["path"] for k in ("target_model", "retain_model")) \
        and all((earlier.get("config") or {}).get(k) == now["config"][k] for k in keys) \
        and earlier.get("data") == now["data"]
    lost = not comparable
    if comparable:
        carried = [m for m in earlier["models"] if m not in now["models"]]
        results["models"] = {**{m: results["models"].get(m, row) for m, row in earlier["models"].items()},
                             **results["models"]}  # the earlier order, this run's rows, its new methods last
        unchanged = {m for m, row in earlier["models"].items() if now["models"].get(m, row) == row}
        old = earlier.get("relearn")
        if isinstance(old, dict) and isinstance(old.get("rows"), list):
            def anchors(doc):
                return [r for r in doc["rows"] if r.get("model") in (FLOOR, CEILING)]

            if "relearn" not in now:
                rows = [r for r in old["rows"] if r.get("model") in unchanged | {FLOOR, CEILING}]
                if {r.get("model") for r in rows} - {FLOOR, CEILING}:
                    results["relearn"] = {**old, "rows": rows}
            elif old.get("config") == now["relearn"]["config"] and anchors(old) == anchors(now["relearn"]):
                mine = {r["model"] for r in now["relearn"]["rows"]}
                results["relearn"]["rows"] += [r for r in old["rows"]
                                               if r.get("model") not in mine and r.get("model") in unchanged]
            have = {(r["lr"], r["step"], r["model"]) for r in (results.get("relearn") or {}).get("rows", [])}
            lost = any((r.get("lr"), r.get("step"), r.get("model")) not in have for r in old["rows"])
        if carried:
            results["kept_from_earlier"] = carried
            logger.info("kept the rows of %s from the earlier results in %s (same target, retain, data and evaluation)",
                        ", ".join(carried), path.parent)
    if lost:
        stamp, n = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), 0
        while (kept := path.with_name(f"results.replaced-{stamp}{f'-{n}' if n else ''}.json")).exists():
            n += 1  # never over an earlier copy
        path.replace(kept)
        why = ("its relearning rows are from other relearning settings, another floor or ceiling, or a redone model"
               if comparable else "it is from another target or retain model, split, data, training or evaluation")
        logger.warning("the earlier %s cannot be kept whole (%s): it is kept as %s", path.name, why, kept.name)
    return results


def _fmt(x, spec=".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def render_table(results: dict) -> str:
    n = results.get("forget_items") or "?"
    base_p = (results["models"].get("base") or {}).get("forget_quality")
    lines = ["| model | forget quality (KS test vs retain model) | model utility | forget ROUGE-L | forget P(answer) "
             "| efficiency (time) | efficiency (FLOPs) | unlearning s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        fq = "1 (itself)" if name == "retain" else forget_quality_verdict(
            r.get("forget_quality"), n, None if name == "base" else base_p)
        lines.append(f"| {name} | {fq} | {_fmt(r.get('model_utility'))} "
                     f"| {_fmt(r.get('forget.rougeL_recall'))} | {_fmt(r.get('forget.probability'))} "
                     f"| {_fmt(r.get('time_ratio'))} | {_fmt(r.get('flops_ratio'))} "
                     f"| {_fmt(r.get('unlearn_seconds'), '.0f')} |")
    rm, tm = results["retain_model"], results["target_model"]
    lines += ["", f"Retain model (the retraining cost): {rm['wall_seconds']:.0f} s, {rm['flops']:.3g} FLOPs "
              f"({rm['qa']} QA x {rm['epochs']:g} epochs). Target model: {tm['wall_seconds']:.0f} s.",
              "Efficiency = unlearning / retain-model training (the challenge's bar: < 0.2).",
              f"Forget quality is the p-value of a two-sample KS test of a model's forget-set truth ratios against "
              f"the retain model's ({n} items): p < 0.05 rejects 'same distribution'; p >= 0.05 only fails to reject, "
              "it does not show equivalence. The base model never saw the forget authors: a method is read against "
              "its figure.", "", "Sanity checks:"]
    lines += [f"- [{'x' if c['ok'] else ' '}] {c['check']}: {c['value']}" for c in results.get("sanity", [])]
    if results.get("kept_from_earlier"):
        lines += ["", f"Rows kept from an earlier run in this folder (TOFU-O1; same target, retain, data and evaluation): "
                  f"{', '.join(results['kept_from_earlier'])}."]
    if "relearn" in results:
        lines += ["", render_relearn(results["relearn"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def plot_tofu(results: dict, path: Path) -> None:
    """TOFU's figure: model utility (y) against log10 forget quality (x), one point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    style = {"target": dict(marker="s", color="black"), "retain": dict(marker="*", color="green", s=150)}
    for name, r in results["models"].items():
        if r.get("forget_quality") is None or r.get("model_utility") is None:
            continue
        x = math.log10(max(r["forget_quality"], 1e-300))
        ax.scatter([x], [r["model_utility"]], **style.get(name, dict(marker="o", color="tab:blue")))
        ax.annotate(name, (x, r["model_utility"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axvline(math.log10(0.05), color="grey", linestyle=":", linewidth=1)
    ax.annotate("p = 0.05", (math.log10(0.05), 0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                textcoords="offset points", fontsize=7, color="grey")
    ax.set_xlabel("log10 forget quality (KS p-value vs retain model)")
    ax.set_ylabel("model utility")
    ax.set_title(f"TOFU {results['config']['split']} ({results['config']['model']})")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
