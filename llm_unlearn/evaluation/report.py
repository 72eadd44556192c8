"""Reports: ``report.md`` (tables), PNG plots, and the flat summaries ``llm-unlearn compare`` puts side by side."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from ..runio import save_figure
from ..whp.floor import informative, section_scores
from .familiarity import FIRM_MARGIN, lost_items, lost_totals
from .grading import GRADE_NAMES

logger = logging.getLogger(__name__)


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        if x != 0 and abs(x) < 10 ** -digits:
            return f"{x:.1e}"
        return f"{x:.{digits}f}"
    return str(x)


def _pm(v, se, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{_f(v, digits)} ± {_f(se, digits)}" if se is not None and not math.isnan(se) else _f(v, digits)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def flat_summary(doc: dict) -> dict[str, dict[str, float]]:
    """{model label: {metric key: value}} with keys like ``familiarity/sherlock_holmes``,
    ``prob/sherlock_holmes``, ``acc/arc_easy``, ``ppl/wikitext``; used by ``compare``. Models other than the
    baseline also get ``firm_lost/<suite>`` and ``near_tie_lost/<suite>``: the baseline's explicit answers they
    lost, by the baseline's margins (when the evaluation recorded them)."""
    out: dict[str, dict[str, float]] = {}
    models = doc.get("models", {})
    base = models.get(doc.get("baseline")) if doc.get("baseline") else None
    for label, res in models.items():
        row: dict[str, float] = {}
        for suite, s in res.get("suites", {}).items():
            comp, prob = s.get("completion") or {}, s.get("probability") or {}
            if comp.get("n"):
                row[f"familiarity/{suite}"] = comp["familiarity"]
                row[f"frac_ge2/{suite}"] = comp["frac_ge2"]
                base_comp = ((base or {}).get("suites", {}).get(suite) or {}).get("completion")
                if base_comp and res is not base:
                    groups = lost_items(base_comp, comp)
                    if groups and "unknown" not in groups:
                        for kind in ("firm", "near_tie"):
                            row[f"{kind}_lost/{suite}"] = len(groups.get(kind, {"lost": []})["lost"])
            if prob.get("n"):
                row[f"prob/{suite}"] = prob["mean_prob"]
                row[f"prob_top1/{suite}"] = prob["frac_first_top1"]
        for task, b in res.get("benchmarks", {}).items():
            row[f"acc/{task}"] = b["acc"]
            if "acc_norm" in b:
                row[f"acc_norm/{task}"] = b["acc_norm"]
        for name, p in res.get("perplexity", {}).items():
            row[f"ppl/{name}"] = p["token_perplexity"]
        for task, metrics in (res.get("lm_eval") or {}).get("tasks", {}).items():
            for m, v in metrics.items():
                if not m.endswith("_stderr") and m in ("acc", "acc_norm", "exact_match", "word_perplexity"):
                    row[f"lm_eval:{m}/{task}"] = v
        out[label] = row
    return out


def changes_vs_base(base: dict[str, float], row: dict[str, float]) -> dict[str, float]:
    """How one model's flat summary row differs from the baseline's, in the units the targets use:
    ``<key> %base`` (familiarity, its grade >= 2 share and probability: share of base, where base is not 0), ``<key> points``
    (accuracies: difference in points), ``<key> %change`` (perplexities), plus ``acc_mean`` and
    ``acc_mean points`` over the benchmarks both rows have. Shared by ``run``'s before/after table and the
    alpha sweep."""
    out: dict[str, float] = {}
    for key, value in row.items():
        b = base.get(key)
        if b is None:
            continue
        kind = key.split("/", 1)[0]
        if kind in ("familiarity", "frac_ge2", "prob") and b:
            out[f"{key} %base"] = 100 * value / b
        elif kind == "acc":
            out[f"{key} points"] = 100 * (value - b)
        elif kind == "ppl" and b:
            out[f"{key} %change"] = 100 * (value / b - 1)
    tasks = sorted(k for k in row if k.startswith("acc/") and k in base)
    if tasks:
        out["acc_mean"] = sum(row[t] for t in tasks) / len(tasks)
        out["acc_mean base"] = sum(base[t] for t in tasks) / len(tasks)
        out["acc_mean points"] = 100 * (out["acc_mean"] - out["acc_mean base"])
        out["acc_mean n_tasks"] = len(tasks)
    return out


def _lost_section(models: dict, base: str | None, suites: list[str]) -> list[str]:
    """The baseline's explicit answers (grade 3) that each other model no longer gives, split by how firmly the
    baseline gave them (familiarity.lost_items): on a neighbour suite, firm items lost are real damage and near ties
    lost are mostly noise; on the target suite, lost items are forgetting."""
    if not base or base not in models:
        return []
    rows, firm_lost = [], []
    for suite in suites:
        b = (models[base].get("suites", {}).get(suite) or {}).get("completion")
        if not b:
            continue
        prompts = {it["id"]: it["prompt"] for it in b.get("items") or []}
        for lab in models:
            o = (models[lab].get("suites", {}).get(suite) or {}).get("completion")
            if lab == base or not o:
                continue
            groups = lost_items(b, o)
            rows.append([suite, lab, *lost_totals(groups), *(lost_of(groups, kind) for kind in ("firm", "near_tie"))])
            firm_lost += [f"{suite}, {lab}: `{prompts[i]}`" for i in (groups.get("firm") or {}).get("lost", [])]
    if not rows:
        return []
    out = ["", "### The baseline's explicit answers lost", "",
           f"Items `{base}` answers with the reference (grade 3) that a model no longer does, split by `{base}`'s "
           f"margin for the reference's first token: firm (>= {FIRM_MARGIN:g} nat) or near tie (below: any fine-tune "
           "tips some of these). On the target's suite a lost item is forgetting; on a neighbour's, damage.", "",
           _table(["suite", "model", "grade-3 items", "lost", "firm lost", "near ties lost"], rows)]
    if firm_lost:
        out += ["", "Firm items lost:", ""] + [f"- {x}" for x in firm_lost[:40]]
        if len(firm_lost) > 40:
            out.append(f"- ... and {len(firm_lost) - 40} more (eval.json has every item)")
    return out


def lost_of(groups: dict, kind: str) -> str:
    """"lost of known" for one kind of a :func:`~.familiarity.lost_items` result; "-" where the baseline recorded no
    margins (an older evaluation). The report and ``llm-unlearn run``'s before/after table both write it."""
    g = groups.get(kind)
    if g:
        return f"{len(g['lost'])} of {g['known']}"
    return "-" if "unknown" in groups else "0 of 0"


def _floor_section(floors: dict, base: str | None) -> list[str]:
    """The generic floor (llm_unlearn.whp.floor) per suite: the floor and every model on the same translated
    prompts, with % of the baseline. Suites with too few translated prompts (F5) are named below the table, and so
    are the suite terms that translated prompts still name (F6)."""
    rows, few, cued = [], [], []
    for suite, fl in floors.items():
        comp, prob = fl.get("completion") or {}, fl.get("probability") or {}
        if not (informative(comp) or informative(prob)):
            few.append(f"{suite} ({comp.get('translated', 0)} of {comp.get('prompts', 0)} completion, "
                       f"{prob.get('translated', 0)} of {prob.get('prompts', 0)} probability prompts)")
            continue
        if note := _cue_note(suite, fl):
            cued.append(note)
        c_scores, p_scores = section_scores(comp), section_scores(prob)
        names = ["floor"] + [k for k in c_scores if k != "floor"]
        b_fam = (c_scores.get(base) or {}).get("familiarity") if base else None
        b_p = (p_scores.get(base) or {}).get("mean_prob") if base else None
        for name in names:
            c, p = c_scores.get(name) or {}, p_scores.get(name) or {}
            fam, mp = c.get("familiarity"), p.get("mean_prob")
            rows.append([suite, "generic floor" if name == "floor" else name,
                         f"{comp.get('translated', 0)} / {comp.get('prompts', 0)}", _f(fam),
                         _pct(fam, b_fam), _f(c.get("frac_3")),
                         f"{prob.get('translated', 0)} / {prob.get('prompts', 0)}", _f(mp, 4), _pct(mp, b_p)])
    if not rows and not few:
        return []
    out = ["", "### Generic floor", "",
           "The baseline model on the suites' prompts with the run's anchored terms replaced by their generic "
           "translations (only prompts that name one): where a model that never knew the target would stand on the "
           "same prompts. Each model is scored on the same prompts."]
    if rows:
        out += ["", _table(["suite", "model", "translated prompts", "familiarity", "% of base", "grade 3",
                            "translated prob. prompts", "mean P(target)", "% of base"], rows)]
    if cued:
        out += ["", "Translated prompts that still name a term of the suite's own anchor list keep a cue to the "
                "target, so the floor on them is an estimate from above; adding those terms to the run's anchor "
                "dictionary (anchors.user_dictionary) makes it cleaner (rule F6):", ""] + [f"- {c}" for c in cued]
    if few:
        out += ["", "No floor for suites where fewer than a quarter of the prompts name an anchored term (too few to "
                "say anything; the rows are in eval.json): " + "; ".join(few) + "."]
    return out


def _cue_note(suite: str, floor: dict) -> str:
    """F6: how many translated prompts of a suite still name one of its anchor terms, and the commonest terms."""
    parts = []
    terms: dict[str, int] = {}
    for section in ("completion", "probability"):
        sec = floor.get(section) or {}
        if sec.get("with_cues_left"):
            parts.append(f"{sec['with_cues_left']} of {sec.get('translated', 0)} {section} prompts")
            for term, n in (sec.get("cue_terms") or {}).items():
                terms[term] = terms.get(term, 0) + n
    if not parts:
        return ""
    top = ", ".join(f"{t} ({n})" for t, n in sorted(terms.items(), key=lambda kv: (-kv[1], kv[0]))[:8])
    return f"{suite}: {' and '.join(parts)}; terms left: {top}"


def _pct(value, base) -> str:
    return f"{100 * value / base:.0f}%" if value is not None and base else "-"


def render_markdown(doc: dict) -> str:
    models = doc.get("models", {})
    labels = list(models)
    cfg = doc.get("config", {})
    parts = ["# Evaluation report", ""]
    parts.append(f"Created {doc.get('created', '?')} by llm-unlearn {doc.get('llm_unlearn_version', '?')}. "
                 f"Offline grading ({doc.get('grading', {}).get('backend', '?')}); "
                 f"decoding: {'greedy' if cfg.get('samples', 1) == 1 else str(cfg.get('samples')) + ' samples'}, "
                 f"{cfg.get('max_new_tokens')} new tokens; benchmark limit: {cfg.get('limit') or 'all items'}.")
    parts.append("")
    parts.append(_table(["model", "spec", "seconds"],
                        [[lab, f"`{m.get('spec', '?')}`", _f(m.get("seconds"), 1)] for lab, m in models.items()]))
    base = doc.get("baseline")
    paired = doc.get("paired", {})

    # ---- familiarity
    suites = list(dict.fromkeys(s for m in models.values() for s in m.get("suites", {})))
    if suites:
        parts += ["", "## Familiarity", "",
                  "Completion familiarity = mean offline grade / 3 (grades: 3 explicit reference, 2 other "
                  "target-specific term, 1 genre word, 0 generic). Probability familiarity = mean P(target | prompt) "
                  "of the whole target.", ""]
        rows = []
        for suite in suites:
            for lab in labels:
                s = models[lab].get("suites", {}).get(suite)
                if not s:
                    continue
                c, p = s.get("completion") or {}, s.get("probability") or {}
                rows.append([suite, lab, c.get("n", 0), _f(c.get("familiarity")), _f(c.get("frac_ge2")),
                             _f(c.get("frac_3")), p.get("n", 0), _f(p.get("mean_prob"), 4), _f(p.get("frac_first_top1")),
                             _f(p.get("median_first_rank"), 1)])
        parts.append(_table(["suite", "model", "prompts", "familiarity", "grade ≥ 2", "grade 3", "prob. prompts",
                             "mean P(target)", "first token top-1", "median rank"], rows))
        # by subtlety
        rows = []
        for suite in suites:
            for lab in labels:
                c = (models[lab].get("suites", {}).get(suite) or {}).get("completion") or {}
                for sub, v in (c.get("by_subtlety") or {}).items():
                    rows.append([suite, lab, sub, v.get("n"), _f(v.get("familiarity")), _f(v.get("frac_ge2"))])
        if rows:
            parts += ["", "### By subtlety", "", _table(["suite", "model", "subtlety", "n", "familiarity", "grade ≥ 2"], rows)]
        judge_rows = []
        for suite in suites:
            for lab in labels:
                c = (models[lab].get("suites", {}).get(suite) or {}).get("completion") or {}
                if c.get("judge"):
                    j = c["judge"]
                    judge_rows.append([suite, lab, j.get("name"), _f(j.get("familiarity")), _f(j.get("frac_ge2")),
                                       j.get("unparsed")])
        if judge_rows:
            parts += ["", "### LLM judge", "", _table(["suite", "model", "judge", "familiarity", "grade ≥ 2", "unparsed"],
                                                     judge_rows)]
        parts += _lost_section(models, base, suites)
        parts += _floor_section(doc.get("generic_floor") or {}, base)

    # ---- benchmarks
    tasks = list(dict.fromkeys(t for m in models.values() for t in m.get("benchmarks", {})))
    if tasks:
        parts += ["", "## Retained ability (zero-shot, built-in lm-eval-compatible scorer)", ""]
        rows = []
        for t in tasks:
            for lab in labels:
                b = models[lab].get("benchmarks", {}).get(t)
                if b:
                    rows.append([t, lab, b["n"], _pm(b["acc"], b.get("acc_stderr")),
                                 _pm(b.get("acc_norm"), b.get("acc_norm_stderr")) if "acc_norm" in b else "-"])
        parts.append(_table(["task", "model", "n", "acc ± stderr", "acc_norm ± stderr"], rows))
    lm_rows = []
    for lab in labels:
        for t, metrics in ((models[lab].get("lm_eval") or {}).get("tasks") or {}).items():
            lm_rows.append([t, lab] + [f"{k}={_f(v)}" for k, v in metrics.items() if isinstance(v, (int, float))][:4])
    if lm_rows:
        width = max(len(r) for r in lm_rows)
        parts += ["", "### lm-evaluation-harness (named tasks)", "",
                  _table(["task", "model"] + ["metric"] * (width - 2), [r + [""] * (width - len(r)) for r in lm_rows])]

    # ---- perplexity
    ppl_names = list(dict.fromkeys(n for m in models.values() for n in m.get("perplexity", {})))
    if ppl_names:
        parts += ["", "## Perplexity (sliding window)", ""]
        rows = []
        for n in ppl_names:
            for lab in labels:
                p = models[lab].get("perplexity", {}).get(n)
                if p:
                    rows.append([n, lab, p["tokens"], _f(p["token_perplexity"], 2), _f(p["word_perplexity"], 2),
                                 _f(p["bits_per_byte"], 4)])
        parts.append(_table(["text", "model", "tokens", "token ppl", "word ppl", "bits/byte"], rows))

    # ---- paired
    if base and paired:
        parts += ["", f"## Paired differences vs `{base}` (same items)", "",
                  "Difference = model − baseline; 95% percentile bootstrap over items (paired, seeded); for 0/1 "
                  "outcomes McNemar's discordant counts (gained = wrong→right, lost = right→wrong) and exact p-value.", ""]
        rows = []
        for lab, pr in paired.items():
            for key, d in pr.get("measures", {}).items():
                mc = d.get("mcnemar")
                ci = f"[{_f(d.get('ci_low'), 4)}, {_f(d.get('ci_high'), 4)}]" if "ci_low" in d else "-"
                extra = (f"+{mc['gained']} / −{mc['lost']} (p={_f(mc['p_value'])})" if mc
                         else f"ratio {_f(d['ratio'])}" if "ratio" in d else "-")
                rows.append([lab, key, _f(d.get("mean_a"), 4), _f(d.get("mean_b"), 4), _f(d.get("diff"), 4), ci, extra])
        parts.append(_table(["model", "measure", base, "model", "diff", "95% CI", "McNemar / ratio"], rows))

    # ---- examples
    if suites and labels:
        ref = base or labels[0]
        parts += ["", "## Example completions", "",
                  f"Prompts where `{ref}` scored highest, with every model's (first) completion and grade.", ""]
        for suite in suites:
            c = (models[ref].get("suites", {}).get(suite) or {}).get("completion") or {}
            items = sorted(c.get("items") or [], key=lambda it: -it["grade"])[:8]
            if not items:
                continue
            rows = []
            by_model = {lab: {it["id"]: it for it in ((models[lab].get("suites", {}).get(suite) or {}).get("completion")
                                                      or {}).get("items") or []} for lab in labels}
            for it in items:
                cells = [f"`{it['prompt']}`"]
                for lab in labels:
                    o = by_model[lab].get(it["id"])
                    cells.append(f"{o['completions'][0].strip()[:90]} **[{o['grades'][0]}]**" if o else "-")
                rows.append(cells)
            parts += [f"**{suite}**", "", _table(["prompt"] + labels, rows), ""]
    parts += ["", "## Grading scale", ""]
    parts += [f"- {g}: {name}" for g, name in sorted(GRADE_NAMES.items(), reverse=True)]
    parts.append("")
    plots = doc.get("plots") or []
    if plots:
        parts += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(parts)


def make_plots(doc: dict, out_dir: str | Path) -> list[str]:
    """familiarity.png and benchmarks.png (before/after bars with 95% intervals). Returns the written paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    from .stats import mean_ci

    out = Path(out_dir)
    models = doc.get("models", {})
    labels = list(models)
    seed = (doc.get("config") or {}).get("seed", 0)
    written = []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    suites = list(dict.fromkeys(s for m in models.values() for s in m.get("suites", {})))
    if suites:
        fig, axes = plt.subplots(1, 2, figsize=(max(7, 2.2 * len(suites) * 2), 4))
        width = 0.8 / max(1, len(labels))
        for ax, kind, title in ((axes[0], "completion", "Completion familiarity (mean grade / 3)"),
                                (axes[1], "probability", "Probability familiarity (mean P(target))")):
            for j, lab in enumerate(labels):
                vals, lows, highs = [], [], []
                for suite in suites:
                    s = (models[lab].get("suites", {}).get(suite) or {}).get(kind) or {}
                    items = s.get("items") or []
                    xs = [it["grade"] / 3 for it in items] if kind == "completion" else [it["prob"] for it in items]
                    if xs:
                        m = sum(xs) / len(xs)
                        lo, hi = mean_ci(xs, n_boot=1000, seed=seed)
                        vals.append(m)
                        lows.append(max(0.0, m - lo))
                        highs.append(max(0.0, hi - m))
                    else:
                        vals.append(0.0)
                        lows.append(0.0)
                        highs.append(0.0)
                pos = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(suites))]
                ax.bar(pos, vals, width, yerr=[lows, highs], capsize=3, label=lab, color=colors[j % len(colors)])
            ax.set_xticks(range(len(suites)))
            ax.set_xticklabels(suites, rotation=15)
            ax.set_title(title, fontsize=10)
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)
        fig.suptitle("Familiarity per suite (95% bootstrap CI)", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.95))  # keep the suptitle clear of the panel titles
        path = out / "familiarity.png"
        save_figure(fig, path, bbox_inches="tight")
        plt.close(fig)
        written.append(str(path))

    tasks = list(dict.fromkeys(t for m in models.values() for t in m.get("benchmarks", {})))
    if tasks:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks) * max(1, len(labels)) / 1.5), 4))
        width = 0.8 / max(1, len(labels))
        for j, lab in enumerate(labels):
            vals, errs = [], []
            for t in tasks:
                b = models[lab].get("benchmarks", {}).get(t)
                vals.append(b["acc"] if b else 0.0)
                se = b.get("acc_stderr") if b else None
                errs.append(1.96 * se if se is not None and not math.isnan(se) else 0.0)
            pos = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(tasks))]
            ax.bar(pos, vals, width, yerr=errs, capsize=3, label=lab, color=colors[j % len(colors)])
        chance = {"arc_easy": 0.25, "arc_challenge": 0.25, "hellaswag": 0.25, "piqa": 0.5, "boolq": 0.5, "winogrande": 0.5}
        for i, t in enumerate(tasks):
            if t in chance:
                ax.hlines(chance[t], i - 0.45, i + 0.45, colors="grey", linestyles="dotted")
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title("Zero-shot accuracy (±1.96 stderr; dotted: chance)", fontsize=10)
        ax.legend(fontsize=8)
        path = out / "benchmarks.png"
        save_figure(fig, path, bbox_inches="tight")
        plt.close(fig)
        written.append(str(path))
    return written


def render_compare(docs: list[tuple[str, dict]]) -> str:
    """Side-by-side markdown table of several eval.json files: one column per (run, model)."""
    columns: list[tuple[str, dict]] = []
    for name, doc in docs:
        for label, row in flat_summary(doc).items():
            columns.append((f"{name}:{label}", row))
    keys = list(dict.fromkeys(k for _, row in columns for k in row))
    rows = [[k] + [_f(row.get(k), 4) for _, row in columns] for k in keys]
    return _table(["measure"] + [c for c, _ in columns], rows)
