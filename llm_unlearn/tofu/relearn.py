"""Relearning on TOFU as Deeb & Roger (2024) measure it: was a forget author removed, or only hidden?

An attacker who fine-tunes on some forgotten facts should not get back the others. The forget authors are split in
two; every model relearns the QA of one half and is scored on the other half's QA, which no relearning step saw.

* TOFU-R1 halves: the forget authors in author order, the first ``n // 2`` relearned on (half A), the rest scored
  (half B); at least two forget authors. Half A's training QA are the target model's (``data.forget_train``), half
  B's scored items its forget evaluation rows.
* TOFU-R2 attack: ATK-RL1's loop (:func:`llm_unlearn.attacks.relearn.relearn`): a fresh LoRA adapter on a copy of
  each model, trained on half A's QA in the chat format with the loss on the answer tokens only (TOFU-C2), at a
  constant rate, for each of ``relearn.learning_rates``, with snapshots after each of ``relearn.steps``. Same seed,
  batches and steps for every model.
* TOFU-R3 floor and ceiling: the retain model (it never saw a forget author) relearned the same way is the floor,
  the never-knew model; the target model (it learned them and unlearned nothing) relearned the same way the ceiling.
* TOFU-R4 score: half B's answer probability (TOFU-M1, per item ``exp(-loss)``) before relearning and at each
  snapshot; recovery = ``(model - floor) / (ceiling - floor)`` at the same rate and step (ATK-R1's formula with the
  floor in the unlearned model's place), with a bootstrap interval over half B's items resampled jointly. 0: where
  a model that never knew the authors lands; 1: where the model that never unlearned them lands. Step 0 is the
  forgetting before any attack.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..chat_format import encode_qa
from ..errors import RecipeError
from ..runio import cached_json, save_figure
from .data import TofuData
from .evaluate import TofuEvalConfig, answer_losses

logger = logging.getLogger(__name__)

FLOOR, CEILING = "retain", "target"


@dataclass
class TofuRelearnConfig:
    """The relearning attack of ``llm-unlearn benchmark tofu`` (section ``relearn:`` of a TOFU recipe)."""

    steps: list = field(default_factory=lambda: [20, 100])
    learning_rates: list = field(default_factory=lambda: [1e-4, 1e-3])  # a mild and a strong LoRA rate
    batch_size: int = 4
    lora_r: int = 16
    seed: int = 0

    def __post_init__(self):
        try:
            self.steps = sorted({int(s) for s in self.steps})
            self.learning_rates = [float(x) for x in self.learning_rates]
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"relearn.steps must be integers and relearn.learning_rates numbers ({exc})") from exc
        if not self.steps or self.steps[0] < 1:
            raise RecipeError("relearn.steps must list positive step counts, e.g. [20, 100]")
        if not self.learning_rates or min(self.learning_rates) <= 0:
            raise RecipeError("relearn.learning_rates must list positive rates, e.g. [1.0e-4, 1.0e-3]")
        if self.batch_size < 1 or self.lora_r < 1:
            raise RecipeError("relearn.batch_size and relearn.lora_r must be >= 1")


def halves(data: TofuData) -> tuple[list[int], list[int]]:
    """TOFU-R1: (authors relearned on, authors scored)."""
    authors = sorted(data.forget_authors)
    if len(authors) < 2:
        raise RecipeError(f"the relearning attack needs at least 2 forget authors to split (this configuration has "
                          f"{len(authors)}): raise data.forget_authors, or drop the relearn section")
    k = len(authors) // 2
    return authors[:k], authors[k:]


def relearn_model(model, tokenizer, data: TofuData, cfg: TofuRelearnConfig, eval_cfg: TofuEvalConfig,
                  progress: bool = True) -> dict:
    """TOFU-R2 / R4 for one model: half B's per-item answer probabilities before and after each relearning run."""
    from peft import set_peft_model_state_dict

    from ..attacks.relearn import relearn

    learn, scored = halves(data)
    train = [it for it in data.forget_train if it.author in set(learn)]
    items = [it for it in data.forget_eval if it.author in set(scored)]
    if not train or not items:
        raise RecipeError("the relearning attack found no QA for one half of the forget authors")
    rows = [encode_qa(tokenizer, it.question, it.answer, eval_cfg.max_length) for it in train]
    pairs = [(it.question, it.answer) for it in items]

    def probs(m) -> list[float]:
        return [math.exp(-x) for x in answer_losses(m, tokenizer, pairs, eval_cfg)]

    out = {"relearned_authors": learn, "scored_authors": scored, "train_qa": len(train), "scored_qa": len(items),
           "before": probs(model), "runs": {}}
    for lr in cfg.learning_rates:
        peft_model, res = relearn(model, tokenizer, None, cfg.steps, lr, batch_size=cfg.batch_size,
                                  lora_r=cfg.lora_r, seed=cfg.seed, progress=progress, rows=rows)
        run = {"text_loss": {str(k): v for k, v in res.text_loss.items()}, "loss_curve": res.loss_curve, "after": {}}
        for n in res.steps:
            set_peft_model_state_dict(peft_model, res.snapshots[n])
            run["after"][str(n)] = probs(peft_model)
        del peft_model
        out["runs"][_lr_key(lr)] = run
    return out


def _lr_key(lr: float) -> str:
    return f"{lr:g}"


RELEARN_VERSION = 2


def cached_relearn(name: str, path: Path, stamp: str, out: Path, load, tokenizer, data: TofuData,
                   cfg: TofuRelearnConfig, eval_cfg: TofuEvalConfig, progress: bool = True) -> dict:
    """:func:`relearn_model` once per model: kept in ``out/relearn/<name>.json``, redone when the model folder,
    the attack's settings, the halves or the evaluation settings change, and when the attack itself changed
    (``RELEARN_VERSION``: 2 = the adapter's init from the seed, rule ATK-RL1). ``load(path)`` gives the model."""
    key = {"model": str(path), "stamp": stamp, "version": RELEARN_VERSION, "relearn": dataclasses.asdict(cfg),
           "eval": dataclasses.asdict(eval_cfg),
           "halves": list(halves(data)),
           "items": hashlib.sha256(json.dumps([it.question for it in data.forget_eval]).encode()).hexdigest()[:16]}

    def attack() -> dict:
        logger.info("relearning attack on %s (%s)", name, path)
        model = load(path)
        try:
            return relearn_model(model, tokenizer, data, cfg, eval_cfg, progress)
        finally:
            del model

    return cached_json(Path(out) / "relearn" / f"{name}.json", key, attack)


def recovery_rows(per_model: dict[str, dict], cfg: TofuRelearnConfig, n_boot: int = 1000) -> list[dict]:
    """TOFU-R3 / R4: one row per (rate, step, model) with half B's answer probability and its recovery between the
    relearned retain model (floor) and the relearned target model (ceiling). Step 0 is before relearning."""
    from ..attacks.metrics import recovery_ci

    if FLOOR not in per_model or CEILING not in per_model:
        raise RecipeError("the relearning attack needs the retain and target models relearned as floor and ceiling")
    def values(m: str, lr: float, step: int) -> list[float]:
        doc = per_model[m]
        return doc["before"] if step == 0 else doc["runs"][_lr_key(lr)]["after"][str(step)]

    rows = []
    for lr in cfg.learning_rates:
        for step in [0, *cfg.steps]:
            floor, ceiling = values(FLOOR, lr, step), values(CEILING, lr, step)
            for m in per_model:
                v = values(m, lr, step)
                ci = recovery_ci(v, floor, ceiling, n_boot=n_boot)
                rows.append({"lr": lr, "step": step, "model": m, "probability": float(np.mean(v)),
                             "recovery": ci.get("recovery"), "ci_low": ci.get("ci_low"), "ci_high": ci.get("ci_high"),
                             "n": len(v)})
    return rows


def _fmt(x, spec=".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def render_relearn(doc: dict) -> str:
    """The relearning table of ``results.md``: per model, half B's P(answer) and recovery at each rate and step."""
    rows, cfg = doc["rows"], doc["config"]
    steps = [0, *cfg["steps"]]
    models = list(dict.fromkeys(r["model"] for r in rows))
    head = "| model | " + " | ".join(
        ("before" if s == 0 else f"lr {_lr_key(lr)}, {s} steps") for lr in cfg["learning_rates"] for s in steps
        if not (s == 0 and lr != cfg["learning_rates"][0])) + " |"
    lines = [f"Relearning attack (TOFU-R1..R4): relearn on the QA of forget authors {doc['relearned_authors']} "
             f"({doc['train_qa']} QA, LoRA r {cfg['lora_r']}, batch {cfg['batch_size']}), score the "
             f"{doc['scored_qa']} QA of authors {doc['scored_authors']} that no step saw. Cells: P(answer) on the "
             "scored half, and recovery = (model - retain) / (target - retain) at the same rate and step, with its "
             "95% bootstrap interval (0 = as if never known, 1 = as if never unlearned).", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    by = {(r["lr"], r["step"], r["model"]): r for r in rows}
    for m in models:
        cells = []
        for lr in cfg["learning_rates"]:
            for s in steps:
                if s == 0 and lr != cfg["learning_rates"][0]:
                    continue
                r = by[(lr, s, m)]
                rec = "" if m in (FLOOR, CEILING) else (
                    f" ({_fmt(r['recovery'], '+.2f')} [{_fmt(r['ci_low'], '+.2f')}, {_fmt(r['ci_high'], '+.2f')}])")
                cells.append(f"{r['probability']:.3f}{rec}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_relearn(doc: dict, path: Path) -> None:
    """Half B's P(answer) against relearning steps, one panel per rate, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, rows = doc["config"], doc["rows"]
    rates = cfg["learning_rates"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    methods = [m for m in models if m not in (FLOOR, CEILING)]
    palette = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")  # one colour per model, up to 20
    colours = {m: palette(i % palette.N) for i, m in enumerate(methods)}
    style = {FLOOR: dict(color="green", linestyle="--"), CEILING: dict(color="black", linestyle="--")}
    fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates) + 2, 4.5), squeeze=False, sharey=True)
    for ax, lr in zip(axes[0], rates, strict=True):
        for m in models:
            pts = sorted((r["step"], r["probability"]) for r in rows if r["lr"] == lr and r["model"] == m)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m,
                    **style.get(m, {"color": colours.get(m)}))
        ax.set_title(f"relearn lr {_lr_key(lr)}")
        ax.set_xlabel("relearning steps on the other half's QA")
    axes[0][0].set_ylabel("P(answer), scored half of the forget authors")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the lines, not over them
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
