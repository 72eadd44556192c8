"""``evaluate``: run every configured measurement on one or more models, pair them, and write the report."""

from __future__ import annotations

import datetime as _dt
import gc
import logging
import time
from pathlib import Path
from typing import Any

from ..config import EvalConfig
from ..errors import EvalError, RecipeError
from ..runio import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

SCHEMA = "llm-unlearn-eval/1"


def default_benchmark_dir() -> Path:
    """The data folder's benchmark files (:mod:`llm_unlearn.config.datadir`)."""
    from ..config.datadir import default_benchmark_dir as bundled

    try:
        return bundled()
    except RecipeError as exc:
        raise EvalError(f"{exc} (or set eval.benchmark_dir / --benchmark-dir)") from exc


def _prepare(spec_or_pair, config: EvalConfig):
    """(model, tokenizer, spec text, loaded_here)."""
    from ..models import load_model, prepare_tokenizer

    if isinstance(spec_or_pair, (tuple, list)):
        if len(spec_or_pair) != 2:
            raise EvalError("a loaded model must be given as a (model, tokenizer) pair")
        model, tok = spec_or_pair
        prepare_tokenizer(tok, getattr(model, "config", None))
        spec = getattr(model, "llm_unlearn_source", None) or getattr(getattr(model, "config", None), "_name_or_path", "") \
            or type(model).__name__
        return model, tok, str(spec), False
    model, tok = load_model(spec_or_pair, dtype=config.dtype, device=config.device)
    return model, tok, str(spec_or_pair), True


def _check_inputs(config: EvalConfig):
    """Load and validate every data input before any model is loaded (fail in seconds, not after an hour)."""
    from .benchmarks import load_benchmark, parse_benchmark_list
    from .perplexity import read_wikitext
    from .suites import load_suite

    suites = [load_suite(p) for p in config.suites]
    names = [s.name for s in suites]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise EvalError(f"two suites are named {sorted(dup)}: give them distinct names in suite.yaml")
    tasks = parse_benchmark_list(config.benchmarks)
    bench = {}
    if tasks:
        bdir = Path(config.benchmark_dir).expanduser() if config.benchmark_dir else default_benchmark_dir()
        bench = {t: load_benchmark(t, bdir, config.limit) for t in tasks}
    wikitext = read_wikitext(config.wikitext, detokenize=config.wikitext_detokenize) if config.wikitext else None
    if config.samples < 1 or config.max_new_tokens < 1 or config.batch_size < 1:
        raise EvalError("eval.samples, eval.max_new_tokens and eval.batch_size must be >= 1")
    return suites, bench, wikitext


def evaluate_model(model, tokenizer, config: EvalConfig, suites: list, bench: dict, wikitext: str | None,
                   target_heldout: list[str] | None, judge=None, normalizer=None, progress: bool = True) -> dict:
    """All measurements of one loaded model (no file writes)."""
    import torch

    from .benchmarks import score_benchmark
    from .familiarity import completion_familiarity, probability_familiarity
    from .grading import Grader
    from .lm_eval_bridge import run_named_tasks
    from .perplexity import perplexity

    was_training = model.training
    model.eval()
    res: dict[str, Any] = {"suites": {}, "benchmarks": {}, "perplexity": {}, "timing": {}}
    try:
        with torch.inference_mode():
            for suite in suites:
                t0 = time.perf_counter()
                grader = Grader(suite.anchors, suite.genre_terms, normalizer=normalizer)
                comp = completion_familiarity(model, tokenizer, suite, grader, max_new_tokens=config.max_new_tokens,
                                              batch_size=config.batch_size, samples=config.samples,
                                              temperature=config.temperature, top_p=config.top_p, seed=config.seed,
                                              judge=judge, progress=progress, margins=True)
                prob = probability_familiarity(model, tokenizer, suite, batch_size=config.batch_size, progress=progress)
                res["suites"][suite.name] = {"suite": suite.describe(), "completion": comp, "probability": prob}
                res["timing"][f"suite/{suite.name}"] = round(time.perf_counter() - t0, 2)
                logger.info("suite %s: familiarity %.3f, P(target) %.4f", suite.name, comp.get("familiarity", float("nan")),
                            prob.get("mean_prob", float("nan")))
            for task, items in bench.items():
                t0 = time.perf_counter()
                res["benchmarks"][task] = score_benchmark(model, tokenizer, task, items, batch_size=config.batch_size,
                                                          progress=progress)
                res["timing"][f"benchmark/{task}"] = round(time.perf_counter() - t0, 2)
                logger.info("%s: acc %.4f (n=%d)", task, res["benchmarks"][task]["acc"], len(items))
            ppl_kw = dict(window=config.perplexity_window, stride=config.perplexity_stride,
                          max_tokens=config.perplexity_max_tokens, progress=progress)
            if wikitext is not None:
                t0 = time.perf_counter()
                res["perplexity"]["wikitext"] = perplexity(model, tokenizer, wikitext, desc="wikitext ppl", **ppl_kw)
                res["timing"]["perplexity/wikitext"] = round(time.perf_counter() - t0, 2)
            if target_heldout:
                t0 = time.perf_counter()
                res["perplexity"]["target_heldout"] = perplexity(model, tokenizer, list(target_heldout),
                                                                 desc="held-out target ppl", **ppl_kw)
                res["timing"]["perplexity/target_heldout"] = round(time.perf_counter() - t0, 2)
        if config.lm_eval_tasks:
            t0 = time.perf_counter()
            res["lm_eval"] = run_named_tasks(model, tokenizer, config.lm_eval_tasks, limit=config.limit,
                                             batch_size=config.batch_size)
            res["timing"]["lm_eval"] = round(time.perf_counter() - t0, 2)
    finally:
        model.train(was_training)
    return res


def _pair(base: dict, other: dict, config: EvalConfig) -> dict:
    """Paired differences of ``other`` vs ``base`` on the items both evaluated."""
    from .stats import mcnemar, paired_bootstrap

    kw = dict(n_boot=config.bootstrap, seed=config.seed)
    measures: dict[str, dict] = {}
    for suite, s_b in base.get("suites", {}).items():
        s_o = other.get("suites", {}).get(suite)
        if not s_o:
            continue
        cb, co = s_b["completion"].get("items") or [], s_o["completion"].get("items") or []
        if cb and co:
            if [i["id"] for i in cb] != [i["id"] for i in co]:
                raise EvalError(f"suite {suite}: the two models were evaluated on different prompts")
            measures[f"familiarity/{suite}"] = paired_bootstrap([i["grade"] / 3 for i in cb], [i["grade"] / 3 for i in co], **kw)
            a2 = [int(i["grade"] >= 2) for i in cb]
            b2 = [int(i["grade"] >= 2) for i in co]
            measures[f"grade_ge2/{suite}"] = {**paired_bootstrap(a2, b2, **kw), "mcnemar": mcnemar(a2, b2)}
        pb, po = s_b["probability"].get("items") or [], s_o["probability"].get("items") or []
        if pb and po:
            if [i["id"] for i in pb] != [i["id"] for i in po]:
                raise EvalError(f"suite {suite}: the two models were evaluated on different probability prompts")
            measures[f"prob/{suite}"] = paired_bootstrap([i["prob"] for i in pb], [i["prob"] for i in po], **kw)
    for task, b_b in base.get("benchmarks", {}).items():
        b_o = other.get("benchmarks", {}).get(task)
        if not b_o:
            continue
        if b_b["n"] != b_o["n"]:
            raise EvalError(f"{task}: the two models were evaluated on different items ({b_b['n']} vs {b_o['n']})")
        for key, metric in (("correct", "acc"), ("correct_norm", "acc_norm")):
            if key in b_b and key in b_o:
                measures[f"{metric}/{task}"] = {**paired_bootstrap(b_b[key], b_o[key], **kw),
                                                "mcnemar": mcnemar(b_b[key], b_o[key])}
    for name, p_b in base.get("perplexity", {}).items():
        p_o = other.get("perplexity", {}).get(name)
        if p_o:
            measures[f"ppl/{name}"] = {"mean_a": p_b["token_perplexity"], "mean_b": p_o["token_perplexity"],
                                       "diff": p_o["token_perplexity"] - p_b["token_perplexity"],
                                       "ratio": p_o["token_perplexity"] / p_b["token_perplexity"]}
    return {"vs": None, "measures": measures}


def evaluate(models: dict[str, str | tuple], config: EvalConfig, out_dir: str | Path,
             target_heldout: list[str] | None = None, baseline: str | None = None, progress: bool = True,
             reuse: dict[str, dict] | None = None, floor_dictionary=None) -> dict:
    """Evaluate each model of ``models`` (label -> model spec, or a loaded ``(model, tokenizer)``) on the same
    items; when ``baseline`` names one of them, report paired differences of the others against it.

    ``reuse`` maps labels to results of an earlier ``eval.json`` (its ``models[label]`` entry) made with the
    same config: those models are not evaluated again (the caller checks the config, see :func:`same_config`).

    With ``config.generic_floor``, ``floor_dictionary`` (an anchor dictionary: a run's ``anchors/anchors.yaml``, an
    :class:`~llm_unlearn.whp.anchors.AnchorDictionary` or a mapping key -> translations) translates every suite's prompts
    and the baseline model answers them (:mod:`.floor`): ``eval.json``'s ``generic_floor`` holds, per suite, that
    floor beside every model's score on the same prompts.

    Writes ``eval.json``, ``report.md`` and PNG plots into ``out_dir`` (each file atomically) and returns the
    eval.json dict. A spec is loaded once, evaluated on everything, and released before the next model.
    """
    from .. import __version__
    from .grading import Normalizer
    from .judge import make_judge
    from .lm_eval_bridge import _online, lm_eval_available
    from .report import make_plots, render_markdown

    if not models:
        raise EvalError("no model to evaluate")
    if baseline is not None and baseline not in models:
        raise EvalError(f"baseline '{baseline}' is not one of the models ({', '.join(models)})")
    suites, bench, wikitext = _check_inputs(config)
    if config.lm_eval_tasks:
        if not lm_eval_available():
            raise EvalError("eval.lm_eval_tasks needs lm-evaluation-harness: pip install 'lm-eval>=0.4.4'")
        if not _online():
            raise EvalError(f"eval.lm_eval_tasks ({', '.join(config.lm_eval_tasks)}) need the Hugging Face Hub, which "
                            "is not reachable; run them online, or use the built-in offline scorer (eval.benchmarks)")
    floor_anchors = _floor_dictionary(config, floor_dictionary, baseline, suites, labels=list(models))
    if not (suites or bench or wikitext or target_heldout or config.lm_eval_tasks):
        raise EvalError("nothing to evaluate: give at least one suite, benchmark, WikiText file or held-out text")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    normalizer = Normalizer(config.spacy_model) if suites else None
    judge = make_judge(config.judge, config.judge_model, device=config.device) if suites else None

    order = list(models)
    if baseline:  # baseline first: its numbers are reported first, and a failure there stops early
        order.remove(baseline)
        order.insert(0, baseline)
    results: dict[str, dict] = {}
    floors: dict[str, dict] = {}
    for label in order:
        reused = bool(reuse and label in reuse)
        if reused and not (floor_anchors is not None and label == baseline):
            results[label] = {**reuse[label], "reused": True}
            logger.info("%s: results reused from an earlier evaluation with the same config", label)
            continue
        t0 = time.perf_counter()
        model, tok, spec, loaded_here = _prepare(models[label], config)
        try:
            if floor_anchors is not None and label == baseline:
                floors = _floor_scores(model, tok, config, suites, floor_anchors, normalizer, progress)
            if reused:
                results[label] = {**reuse[label], "reused": True}
                continue
            logger.info("evaluating %s (%s)", label, spec)
            res = evaluate_model(model, tok, config, suites, bench, wikitext, target_heldout, judge=judge,
                                 normalizer=normalizer, progress=progress)
        finally:
            if loaded_here:
                del model
                gc.collect()
        res = {"spec": spec, "seconds": round(time.perf_counter() - t0, 1), **res}
        results[label] = res
    paired = {}
    if baseline:
        for label in order[1:]:
            pr = _pair(results[baseline], results[label], config)
            pr["vs"] = baseline
            paired[label] = pr
    doc = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "llm_unlearn_version": __version__,
        "config": _config_dict(config),
        "baseline": baseline,
        "grading": {"backend": normalizer.backend if normalizer else None,
                    "familiarity": "mean grade / 3 over prompts (grade of a prompt = mean over its samples)"},
        "suites": [s.describe() for s in suites],
        "models": {label: results[label] for label in models},
        "paired": paired,
    }
    if floors:
        from ..whp.floor import compare_floor

        doc["generic_floor"] = {name: compare_floor(scores, {label: results[label]["suites"][name] for label in order
                                                             if name in results[label].get("suites", {})})
                                for name, scores in floors.items()}
    doc["plots"] = [Path(p).name for p in make_plots(doc, out)] if config.plots else []
    atomic_write_json(out / "eval.json", doc)
    atomic_write_text(out / "report.md", render_markdown(doc))
    return doc


def _floor_dictionary(config: EvalConfig, dictionary, baseline: str | None, suites: list, labels=()):
    """The anchor dictionary for the generic floor, loaded (None when not asked for); refuses what cannot give one."""
    if not config.generic_floor:
        return None
    if "floor" in labels:
        raise EvalError("eval.generic_floor reports its own column 'floor' beside the models: give the model called "
                        "'floor' another name (e.g. --model floor_model=...), or set eval.generic_floor: false")
    if dictionary is None:
        raise EvalError("eval.generic_floor needs an anchor dictionary (a WHP run's anchors/anchors.yaml): evaluate a "
                        "run with it, or set eval.generic_floor: false")
    if baseline is None:
        raise EvalError("eval.generic_floor is scored with the baseline model: name one (the base model)")
    if not suites:
        raise EvalError("eval.generic_floor needs at least one familiarity suite (eval.suites)")
    from ..whp.anchors import AnchorDictionary

    if isinstance(dictionary, (str, Path)):
        if not Path(dictionary).is_file():
            raise EvalError(f"eval.generic_floor: the anchor dictionary {dictionary} does not exist; run the anchors "
                            "stage first, or set eval.generic_floor: false")
        dictionary = AnchorDictionary.load(dictionary)
    return dictionary


def _floor_scores(model, tokenizer, config: EvalConfig, suites: list, anchors, normalizer, progress: bool) -> dict:
    """Per suite with a prompt that names an anchored term: the baseline model's floor scores (F1-F3)."""
    import torch

    from ..whp.floor import floor_scores
    from ..whp.translation import Translator
    from .grading import Grader

    translator = Translator(anchors, tokenizer)
    out = {}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for suite in suites:
                scores = floor_scores(model, tokenizer, suite, translator, seed=config.seed,
                                      grader=Grader(suite.anchors, suite.genre_terms, normalizer=normalizer),
                                      max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                                      samples=config.samples, temperature=config.temperature, top_p=config.top_p,
                                      progress=progress)
                if scores["completion"]["items"] or scores["probability"]["items"]:
                    out[suite.name] = scores
    finally:
        model.train(was_training)
    return out


def same_config(doc: dict, config: EvalConfig) -> bool:
    """Whether an earlier eval.json was made with ``config`` (what is measured; plots and bootstrap aside)."""
    ignore = {"plots", "bootstrap"}
    old = {"generic_floor": False, **{k: v for k, v in (doc.get("config") or {}).items() if k not in ignore}}
    new = {k: v for k, v in _config_dict(config).items() if k not in ignore}
    return old == new


def _config_dict(config: EvalConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(config)
