"""`llm-unlearn benchmark tofu`: TOFU (Maini et al. 2024) as the unlearning challenge judges it.

1. target model = base fine-tuned on all authors of the configuration; retain model = base fine-tuned on the
   retain authors only (cached by content, rule TOFU-T1; the retain model's cost is the retraining cost);
2. each method unlearns the forget authors' QA (chat format) from the target model: all of them (no validation
   blocks are held out of the forget set, rule TOFU-U2), one text per author for WHP and one per QA pair for the
   baselines (TOFU-U1);
3. every model is scored on forget / retain / real authors / world facts; forget quality against the retain
   model, model utility, and efficiency = unlearning cost / retain-model training cost (TOFU-M1..M8);
4. sanity checks (rule TOFU-S1), printed and stored, each of which can fail: the target answers the forget
   questions far better than the base model (forget-set answer probability at least twice the base's); the retain
   model does not (below half of the target's); the KS test rejects the target model against the retain model
   (p < 0.05: at this item count the test can tell a model that learned the forget authors). The retain model's
   own forget quality (1 by construction) is not a check;
   rule TOFU-S2: forget quality is reported as the test it is, with its item count and the base model's own
   figure: p < 0.05 rejects "same truth-ratio distribution as the retain model"; p >= 0.05 only fails to reject
   (no equivalence), and the base model, which never saw the forget authors, is the reference a method is read
   against;
5. ``results.json``, ``results.md`` (table) and ``tofu_plot.png`` (model utility vs log forget quality) in ``--out``,
   with the rows of methods that earlier runs in the same ``--out`` scored (rule TOFU-O1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from ..chat_format import chat_corpus_text, template_terms
from ..config.datadir import is_data_ref, resolve_data_ref
from ..config.yamlio import load_yaml
from ..errors import RecipeError, RunDirError
from ..runio import atomic_write_json, atomic_write_text, cached_json
from .data import build_tofu_data
from .evaluate import TofuEvalConfig, evaluate_model
from .methods import check_method, unlearn_with_method
from .metrics import efficiency, forget_quality
from .models import QATrainConfig, cached_qa_model
from .relearn import TofuRelearnConfig, cached_relearn, plot_relearn, recovery_rows
from .results import keep_earlier_rows, plot_tofu, render_table

logger = logging.getLogger(__name__)


@dataclass
class TofuDataConfig:
    path: Optional[str] = None  # the TOFU folder (default: the bundled TOFU files; data:tofu)
    authors: Optional[int] = None  # None = all 200 authors (TOFU); N = a subset keeping TOFU's structure
    eval_retain_items: Optional[int] = None  # evaluate on at most this many retain_perturbed QA (None = all)
    eval_general_items: Optional[int] = None  # at most this many real-author / world-fact questions each
    eval_forget_items: Optional[int] = None
    forget_authors: Optional[int] = None  # with authors=N: how many of them are forgotten (default N x the split's %)

    def __post_init__(self):
        if is_data_ref(self.path):  # data:tofu, the bundled (or $LLM_UNLEARN_DATA) TOFU folder
            self.path = resolve_data_ref(self.path, "data.path")
        for name in ("authors", "eval_retain_items", "eval_general_items", "eval_forget_items", "forget_authors"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise RecipeError(f"data.{name} must be a positive integer or null (got {v!r})")


@dataclass
class TofuBenchConfig:
    name: str = "tofu"
    model: str = "smollm2-135m"
    split: str = "forget10"
    methods: list = field(default_factory=lambda: ["whp"])
    device: Optional[str] = None
    model_cache: Optional[str] = None  # where target/retain models are cached (default: <LLM_UNLEARN_CACHE>/tofu)
    data: TofuDataConfig = field(default_factory=TofuDataConfig)
    train: QATrainConfig = field(default_factory=QATrainConfig)
    eval: TofuEvalConfig = field(default_factory=TofuEvalConfig)
    # per-method overrides of the unlearning recipe, e.g. {whp: {"reinforce.epochs": 3}}; a variant is a label of
    # `methods` whose overrides name its method: {whp_qa: {method: whp, "finetune.quantization_aware": Q4_1}}
    unlearn: dict = field(default_factory=dict)
    relearn: Optional[TofuRelearnConfig] = None  # the relearning attack on half of the forget authors (TOFU-R1..R4)

    def __post_init__(self):
        if isinstance(self.methods, str):
            self.methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        if not self.methods:
            raise RecipeError("methods: name at least one unlearning method")
        bad = [k for k, v in self.unlearn.items() if not isinstance(v, dict)]
        if bad:
            raise RecipeError(f"unlearn.{bad[0]} must be a mapping of 'section.key': value overrides")
        for label in self.methods:  # a label names folders under --out: a plain name, not a path
            if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", label) \
                    or label in ("base", "target", "retain"):
                raise RecipeError(f"methods: {label!r} is not a usable method or variant name (letters, digits, "
                                  "'_', '-', '.'; not base, target or retain)")
            method = self.method_of(label)
            if method != label and "method" in self.unlearn.get(method, {}):
                raise RecipeError(f"unlearn.{label}: method '{method}' is itself a variant; name a method")

    def method_of(self, label: str) -> str:
        """The unlearning method of a ``methods`` entry: its own name, or a variant's ``method`` override."""
        return str(self.unlearn.get(label, {}).get("method", label))

    def overrides_of(self, label: str) -> dict:
        """A method's overrides; a variant's are its method's overrides updated by its own (``method`` dropped)."""
        own = {k: v for k, v in self.unlearn.get(label, {}).items() if k != "method"}
        method = self.method_of(label)
        return {**self.unlearn.get(method, {}), **own} if method != label else own

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> TofuBenchConfig:
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"{source}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
        sections = {"data": TofuDataConfig, "train": QATrainConfig, "eval": TofuEvalConfig}
        for key, sec_cls in sections.items():
            value = data.get(key) or {}
            if not isinstance(value, dict):
                raise RecipeError(f"{source}: '{key}' must be a mapping")
            names = {f.name for f in dataclasses.fields(sec_cls)}
            bad = sorted(set(value) - names)
            if bad:
                raise RecipeError(f"{source}: unknown key '{key}.{bad[0]}' (known: {', '.join(sorted(names))})")
            try:
                data[key] = sec_cls(**_numbers(value, sec_cls))
            except TypeError as exc:
                raise RecipeError(f"{source}: section '{key}': {exc}") from exc
        if data.get("relearn") is not None:
            value = data["relearn"]
            names = {f.name for f in dataclasses.fields(TofuRelearnConfig)}
            if not isinstance(value, dict) or set(value) - names:
                bad = sorted(set(value) - names) if isinstance(value, dict) else ["(not a mapping)"]
                raise RecipeError(f"{source}: relearn: unknown key '{bad[0]}' (known: {', '.join(sorted(names))})")
            data["relearn"] = TofuRelearnConfig(**value)
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Optional[list[str]] = None) -> TofuBenchConfig:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"TOFU recipe not found: {path}")
        try:
            data = load_yaml(path.read_text(encoding="utf-8")) or {}  # no aliases, no duplicate keys
        except yaml.YAMLError as exc:
            raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
        dpath = (data.get("data") or {}).get("path")
        if isinstance(dpath, str) and dpath.startswith(("./", "../")):  # relative to the recipe file
            data["data"]["path"] = str((path.parent / dpath).resolve())
        return cls.from_dict(apply_overrides(data, overrides or []), source=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _numbers(section: dict, sec_cls) -> dict:
    """YAML 1.1 reads ``1e-5`` as a string: convert where the field is a float."""
    hints = {f.name: f.type for f in dataclasses.fields(sec_cls)}
    out = {}
    for k, v in section.items():
        if isinstance(v, str) and "float" in str(hints.get(k)):
            try:
                v = float(v)
            except ValueError as exc:
                raise RecipeError(f"{sec_cls.__name__}.{k} must be a number (got {v!r})") from exc
        out[k] = v
    return out


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``key=value`` / ``section.key=value`` (value parsed as YAML), as ``--set`` does for recipes."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override '{item}' must look like section.key=value")
        dotted, raw = item.split("=", 1)
        value = load_yaml(raw)
        node, parts = data, dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return data


def default_data_dir() -> Path:
    """The data folder's TOFU files (:mod:`llm_unlearn.config.datadir`)."""
    from ..config.datadir import default_tofu_dir

    return default_tofu_dir()


def tofu_data(cfg: TofuBenchConfig):
    """The configuration's TOFU data (rule TOFU-D4), from ``data.path`` or the bundled TOFU files."""
    data_dir = Path(cfg.data.path) if cfg.data.path else default_data_dir()
    return build_tofu_data(data_dir, cfg.split, cfg.data.authors, cfg.data.eval_retain_items,
                           cfg.data.eval_general_items, cfg.data.eval_forget_items, cfg.data.forget_authors)


def _load_weights(path: str | Path, device: Optional[str]):
    """The model at ``path`` in float32 (a folder we wrote: loaded directly, the tokenizer is shared; any other
    spec through :func:`llm_unlearn.models.load_model`)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..models import default_device, load_model

    if not Path(path).is_dir():
        return load_model(str(path), dtype="float32", device=device)[0]
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, use_safetensors=True)
    return model.to(device or default_device()).eval()


def _eval_cached(name: str, path: Path, out: Path, data, cfg: TofuBenchConfig, retain_ratios, progress: bool,
                 tokenizer, splits: Optional[list[str]] = None) -> dict:
    """Evaluate the model at ``path`` (once: the per-model result is kept in ``out/eval/<name>.json``)."""
    key = {"model": str(path), "stamp": _folder_stamp(path), "eval": dataclasses.asdict(cfg.eval), "data": dataclasses.asdict(cfg.data),
           "split": cfg.split, "splits": splits,
           "retain_ratios": hashlib.sha256(json.dumps(retain_ratios).encode()).hexdigest()[:16]}

    def evaluate() -> dict:
        import torch

        model = _load_weights(path, cfg.device)
        sets = {k: v for k, v in data.eval_sets().items() if splits is None or k in splits}
        t0 = time.perf_counter()
        result = evaluate_model(model, tokenizer, sets, cfg.eval, retain_forget_ratios=retain_ratios,
                                progress=progress, desc=name)
        result["eval_seconds"] = time.perf_counter() - t0
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return result

    return cached_json(out / "eval" / f"{name}.json", key, evaluate)


def _folder_stamp(path: Path) -> str:
    """Changes when the model in ``path`` is rewritten (a redone unlearning run)."""
    files = sorted(Path(path).glob("*.safetensors")) + [Path(path) / "config.json"]
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file())


def sanity_checks(base: dict, target: dict, retain: dict) -> list[dict]:
    """Rule TOFU-S1."""
    pb = base["splits"]["forget"]["probability"]
    pt = target["splits"]["forget"]["probability"]
    pr = retain["splits"]["forget"]["probability"]
    return [
        {"check": "target answers forget questions far better than base (P(answer) >= 2x base)",
         "value": f"target {pt:.3g} vs base {pb:.3g}", "ok": pt >= 2 * pb},
        {"check": "retain model does not (P(answer) on forget < half of target's)",
         "value": f"retain {pr:.3g} vs target {pt:.3g}", "ok": pr < 0.5 * pt},
        {"check": "the KS test rejects the target model against the retain model (forget quality < 0.05)",
         "value": f"{target['forget_quality']:.3g} on {len(retain.get('forget_truth_ratios') or [])} items",
         "ok": target["forget_quality"] < 0.05},
    ]


def run_tofu_benchmark(cfg: TofuBenchConfig, out: str | Path, progress: bool = True) -> dict:
    """Run the whole benchmark (see module docstring); returns the ``results.json`` document."""
    from ..models import cache_dir, load_model_config, load_tokenizer
    from ..preflight import launched_processes

    processes = launched_processes()
    if processes > 1:  # before any training: each process would train, evaluate and cache the same models
        raise RecipeError(f"benchmark tofu runs in one process (this launch started {processes}): its evaluation and "
                          "model cache are not shared between processes. Use `accelerate launch --num_processes 1 -m "
                          "llm_unlearn benchmark tofu ...` or plain `llm-unlearn benchmark tofu ...` (one GPU)")
    for label in cfg.methods:
        check_method(cfg.method_of(label))  # fail before hours of training
    out = Path(out)
    data = tofu_data(cfg)
    logger.info("TOFU %s: %s", cfg.split, data.describe())
    cache_root = Path(cfg.model_cache) if cfg.model_cache else cache_dir() / "tofu"
    target = cached_qa_model("target", cfg.model, data.target_train, cfg.train, cache_root, cfg.device, progress)
    retain = cached_qa_model("retain", cfg.model, data.retain_train, cfg.train, cache_root, cfg.device, progress)
    mcfg = load_model_config(str(target.path))
    params = int(target.record["flops"]["params"])
    tokenizer = load_tokenizer(str(target.path))  # the base model's, saved with the target: shared by every model

    results: dict = {"config": cfg.to_dict(), "data": data.describe(), "data_notes": data.notes,
                     "target_model": {"path": str(target.path), **_training_summary(target.record)},
                     "retain_model": {"path": str(retain.path), **_training_summary(retain.record)},
                     "models": {}}
    retain_eval = _eval_cached("retain", retain.path, out, data, cfg, None, progress, tokenizer)
    ratios = retain_eval["forget_truth_ratios"]
    retain_eval.update(forget_quality(ratios, ratios))  # the retain model against itself: 1, not a check
    results["forget_items"] = len(ratios)
    base_eval = _eval_cached("base", Path(_base_path(cfg.model)), out, data, cfg, ratios, progress, tokenizer,
                             ["forget"])
    target_eval = _eval_cached("target", target.path, out, data, cfg, ratios, progress, tokenizer)
    results["models"]["base"] = _row(base_eval)
    results["models"]["target"] = _row(target_eval)
    results["models"]["retain"] = _row(retain_eval)
    results["sanity"] = sanity_checks(base_eval, target_eval, retain_eval)
    for check in results["sanity"]:
        print(f"[{'ok' if check['ok'] else 'FAILED'}] {check['check']}: {check['value']}")

    template_vetoes = {term: None for term in template_terms(tokenizer)}  # rule TOFU-C3
    model_paths = {"retain": retain.path, "target": target.path}
    for label in cfg.methods:
        method, overrides = cfg.method_of(label), cfg.overrides_of(label)
        forget_texts = unlearning_texts(method, tokenizer, data.forget_train)
        retain_texts = unlearning_texts(method, tokenizer, data.retain_train)
        run_dir = out / "runs" / label
        outcome_path = run_dir / "outcome.json"
        run_key = {"target_model": str(target.path), "overrides": overrides,
                   "forget_texts": hashlib.sha256("\x00".join(forget_texts).encode()).hexdigest()[:16]}
        if outcome_path.is_file():
            outcome = json.loads(outcome_path.read_text())
            if outcome.get("key") != json.loads(json.dumps(run_key)):
                raise RunDirError(f"{run_dir} holds a {label} run from another target model or other overrides; "
                                  "use a new --out, or delete that folder to redo it")
        else:
            res = unlearn_with_method(method, target.path, forget_texts, retain_texts, run_dir,
                                      overrides=overrides, params=params,
                                      vocab_size=mcfg.vocab_size, anchors=template_vetoes, progress=progress)
            outcome = {"key": run_key, "model_path": str(res.model_path), "wall_seconds": res.wall_seconds, "flops": res.flops}
            atomic_write_json(outcome_path, outcome)
        ev = _eval_cached(label, Path(outcome["model_path"]), out, data, cfg, ratios, progress, tokenizer)
        row = _row(ev)
        row.update({"unlearn_seconds": outcome["wall_seconds"], "unlearn_flops": outcome["flops"]["flops"],
                    **efficiency(outcome["wall_seconds"], retain.seconds, outcome["flops"]["flops"], retain.flops)})
        results["models"][label] = row
        model_paths[label] = Path(outcome["model_path"])
    if cfg.relearn is not None:
        results["relearn"] = relearn_attack(model_paths, out, data, cfg, tokenizer, progress)
    results = keep_earlier_rows(results, out / "results.json")
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", render_table(results))
    try:
        plot_tofu(results, out / "tofu_plot.png")
        if "relearn" in results:
            plot_relearn(results["relearn"], out / "tofu_relearn.png")
    except ImportError:
        logger.warning("matplotlib is not installed: no plot (pip install matplotlib)")
    print(render_table(results))
    return results


def relearn_attack(model_paths: dict[str, Path], out: Path, data, cfg: TofuBenchConfig, tokenizer,
                   progress: bool) -> dict:
    """TOFU-R1..R4 on the retain model (floor), the target model (ceiling) and every unlearned model."""
    per_model = {name: cached_relearn(name, path, _folder_stamp(path), out, lambda p: _load_weights(p, cfg.device),
                                      tokenizer, data, cfg.relearn, cfg.eval, progress)
                 for name, path in model_paths.items()}
    first = next(iter(per_model.values()))
    return {"config": dataclasses.asdict(cfg.relearn), "relearned_authors": first["relearned_authors"],
            "scored_authors": first["scored_authors"], "train_qa": first["train_qa"], "scored_qa": first["scored_qa"],
            "rows": recovery_rows(per_model, cfg.relearn)}


def unlearning_texts(method: str, tokenizer, items) -> list[str]:
    """Rule TOFU-U1: the documents a method unlearns (or retains) from, in the chat format (TOFU-C1).

    WHP gets one text per author (its 20 QA in a row): anchored terms and generic labels need a biography's context.
    The baselines get one text per QA pair, as TOFU's own baselines do: NPO's and SimNPO's losses are per sequence,
    and a 256-token block of several QA saturates their sigmoid after a small per-token change."""
    if method == "whp":
        authors = sorted({it.author for it in items}, key=lambda a: (a is None, a or 0))
        return [chat_corpus_text(tokenizer, [it for it in items if it.author == a]) for a in authors]
    return [chat_corpus_text(tokenizer, [it]) for it in items]


def _base_path(spec: str) -> str:
    from ..models import materialize

    return materialize(spec)[1]


def _training_summary(record: dict) -> dict:
    return {k: record.get(k) for k in ("qa", "epochs", "wall_seconds", "trained_tokens", "analytic_flops",
                                       "train_loss")} | {"flops": record["flops"]["flops"]}


def _row(ev: dict) -> dict:
    row = {"forget_quality": ev.get("forget_quality"), "ks_statistic": ev.get("ks_statistic"),
           "model_utility": ev.get("model_utility"), "eval_seconds": ev.get("eval_seconds")}
    for split, s in ev["splits"].items():
        for k in ("probability", "rougeL_recall", "truth_ratio"):
            row[f"{split}.{k}"] = s[k]
    return row
