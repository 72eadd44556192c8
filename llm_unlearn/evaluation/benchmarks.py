"""Retained ability: built-in zero-shot multiple-choice scorer for six lm-eval benchmarks.

Reads the bundled files (``llm_unlearn/data/benchmarks``, formats in the data README) and rebuilds exactly the prompts
lm-evaluation-harness uses for the same tasks (task YAMLs of lm-eval 0.4.x), so that numbers are comparable:

============= ========================================================= =================================
task          lm-eval context                                           continuations (target delimiter " ")
============= ========================================================= =================================
arc_easy      ``Question: {question}\\nAnswer:``                          `` {choice}``
arc_challenge same                                                      same
piqa          ``Question: {goal}\\nAnswer:``                              `` {sol}``
boolq         ``{passage}\\nQuestion: {question}?\\nAnswer:``              `` no`` / `` yes``
winogrande    sentence up to the blank, with each option (one per choice) `` {rest of the sentence}``
hellaswag     ``preprocess({activity_label}: {ctx})``                   `` preprocess({ending})``
============= ========================================================= =================================

The llm-foundry conversions hold ``Question: ...`` (ARC, PIQA) and ``Passage: ...\\nQuestion: ...?`` (BoolQ)
without the ``\\nAnswer:`` cue; it is added here (and ``Passage: `` removed) to match lm-eval.

Metrics as lm-eval computes them: ``acc`` (argmax of summed log-likelihood), ``acc_norm`` (argmax of
log-likelihood divided by the continuation's length in *characters*, without the delimiter; lm-eval reports it
for ARC, PIQA and HellaSwag only), standard errors as the sample standard deviation over sqrt(n).
``limit`` takes the first N items, in file order, like ``lm_eval --limit``.
"""

from __future__ import annotations

import bz2
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import EvalError
from .scoring import score_items

BENCHMARK_FILES = {
    "arc_easy": "arc_easy.jsonl",
    "arc_challenge": "arc_challenge.jsonl",
    "boolq": "boolq.jsonl",
    "piqa": "piqa.jsonl",
    "winogrande": "winogrande.jsonl",
    "hellaswag": "hellaswag_val.txt.bz2",
}
# Metrics lm-eval reports for each task (we compute both, and report these).
LM_EVAL_METRICS = {
    "arc_easy": ("acc", "acc_norm"), "arc_challenge": ("acc", "acc_norm"), "piqa": ("acc", "acc_norm"),
    "hellaswag": ("acc", "acc_norm"), "boolq": ("acc",), "winogrande": ("acc",),
}


@dataclass
class MCItem:
    """One multiple-choice item, already in lm-eval's request form."""

    contexts: list[str]  # one per choice (equal for all but WinoGrande)
    continuations: list[str]  # one per choice, delimiter included
    gold: int
    norm_lengths: list[float]  # lm-eval's acc_norm denominators (len of each choice string)

    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.contexts, self.continuations, strict=True))


def _answer_cue(query: str) -> str:
    q = query.rstrip("\n")
    return q if q.rstrip().endswith("Answer:") else q + "\nAnswer:"


def _choice_item(query: str, choices: list[str], gold: int) -> MCItem:
    ctx = _answer_cue(query)
    return MCItem([ctx] * len(choices), [" " + c for c in choices], gold, [float(len(c)) for c in choices])


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag text cleanup (WikiHow artifacts)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _check(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise EvalError(f"{where}: {what}")


def _parse_jsonl(path: Path, limit: int | None, parse: Callable[[dict, str], MCItem]) -> list[MCItem]:
    items = []
    with path.open(encoding="utf-8") as fh:
        for no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if limit is not None and len(items) >= limit:
                break
            where = f"{path}:{no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalError(f"{where}: not valid JSON ({exc.msg})") from exc
            _check(isinstance(obj, dict), where, "each line must be a JSON object")
            items.append(parse(obj, where))
    return items


def _parse_query_choices(obj: dict, where: str) -> tuple[str, list[str], int]:
    query, choices, gold = obj.get("query"), obj.get("choices"), obj.get("gold")
    _check(isinstance(query, str) and query.strip() != "", where, "'query' must be a non-empty string")
    _check(isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) for c in choices), where,
           "'choices' must be a list of at least two strings")
    _check(isinstance(gold, int) and 0 <= gold < len(choices), where, f"'gold' must be an index into choices, got {gold!r}")
    return query, choices, gold


def parse_arc(obj: dict, where: str) -> MCItem:
    return _choice_item(*_parse_query_choices(obj, where))


parse_piqa = parse_arc


def parse_boolq(obj: dict, where: str) -> MCItem:
    query, choices, gold = _parse_query_choices(obj, where)
    if query.startswith("Passage: "):  # lm-eval's prompt starts with the bare passage
        query = query[len("Passage: "):]
    return _choice_item(query, choices, gold)


def parse_winogrande(obj: dict, where: str) -> MCItem:
    ctxs, cont, gold = obj.get("context_options"), obj.get("continuation"), obj.get("gold")
    _check(isinstance(ctxs, list) and len(ctxs) >= 2 and all(isinstance(c, str) and c for c in ctxs), where,
           "'context_options' must be a list of at least two non-empty strings")
    _check(isinstance(cont, str) and cont.strip() != "", where, "'continuation' must be a non-empty string")
    _check(isinstance(gold, int) and 0 <= gold < len(ctxs), where, f"'gold' must be an index into context_options, got {gold!r}")
    # lm-eval: the target is the rest of the sentence, stripped, after the " " delimiter ("partial evaluation")
    return MCItem(list(ctxs), [" " + cont.strip()] * len(ctxs), gold, [float(len(c)) for c in ctxs])


def read_hellaswag(path: Path, limit: int | None = None) -> list[MCItem]:
    """bzip2 text, 6 lines an item: context, gold index, 4 endings."""
    try:
        with bz2.open(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except OSError as exc:
        raise EvalError(f"{path}: cannot read as bzip2 text ({exc})") from exc
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise EvalError(f"{path}: {len(lines)} lines is not a multiple of 6 (context, gold, 4 endings per item)")
    items = []
    for k in range(0, len(lines), 6):
        if limit is not None and len(items) >= limit:
            break
        ctx, gold_s, endings = lines[k], lines[k + 1], lines[k + 2:k + 6]
        where = f"{path}:{k + 1}"
        _check(gold_s.strip() in ("0", "1", "2", "3"), where, f"line {k + 2} must be the gold index 0-3, got {gold_s!r}")
        _check(ctx.strip() != "" and all(e.strip() for e in endings), where, "empty context or ending")
        ctx_p = hellaswag_preprocess(ctx)
        ends = [hellaswag_preprocess(e) for e in endings]
        items.append(MCItem([ctx_p] * 4, [" " + e for e in ends], int(gold_s), [float(len(e)) for e in ends]))
    return items


_PARSERS = {"arc_easy": parse_arc, "arc_challenge": parse_arc, "piqa": parse_piqa, "boolq": parse_boolq,
            "winogrande": parse_winogrande}


def parse_benchmark_list(spec: str | list | None) -> list[str]:
    """``"arc_easy,piqa"`` / ``"all"`` / a list -> validated task names."""
    if not spec:
        return []
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip().lower().replace("-", "_") for n in names if n and n.strip()]
    if names == ["all"]:
        return list(BENCHMARK_FILES)
    unknown = [n for n in names if n not in BENCHMARK_FILES]
    if unknown:
        raise EvalError(f"unknown benchmark(s) {', '.join(unknown)}; built-in: {', '.join(BENCHMARK_FILES)} (or 'all'). "
                        "For other lm-eval tasks use --lm-eval-tasks (needs the network).")
    return list(dict.fromkeys(names))


def load_benchmark(name: str, data_dir: str | Path, limit: int | None = None) -> list[MCItem]:
    """Items of one benchmark from ``data_dir``; an :class:`EvalError` says which file is missing and why."""
    if name not in BENCHMARK_FILES:
        parse_benchmark_list([name])
    folder = Path(data_dir).expanduser()
    path = folder / BENCHMARK_FILES[name]
    if not path.is_file():
        hint = "" if folder.is_dir() else f" (the folder {folder} does not exist)"
        raise EvalError(f"benchmark '{name}' needs {path}{hint}. Point --benchmark-dir (eval.benchmark_dir) at a "
                        f"folder with {', '.join(BENCHMARK_FILES.values())}; see llm_unlearn/data/README.md for formats")
    if limit is not None and limit < 1:
        raise EvalError(f"limit must be >= 1, got {limit}")
    items = read_hellaswag(path, limit) if name == "hellaswag" else _parse_jsonl(path, limit, _PARSERS[name])
    if not items:
        raise EvalError(f"{path}: no items")
    return items


def _stderr(values: list[float]) -> float:
    """lm-eval's ``mean_stderr``: sample standard deviation (ddof=1) / sqrt(n)."""
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1) / n)


def _argmax(xs: list[float]) -> int:
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def score_benchmark(model, tokenizer, name: str, items: list[MCItem], batch_size: int = 16,
                    progress: bool = True, return_logprobs: bool = False) -> dict:
    """acc / acc_norm with standard errors, and per-item correctness for paired comparisons (and, when asked,
    every choice's log-likelihood)."""
    scored = score_items(model, tokenizer, [it.pairs() for it in items], batch_size=batch_size, desc=name,
                         progress=progress)
    acc, acc_norm, preds = [], [], []
    for it, choices in zip(items, scored, strict=True):
        lls = [c.logprob for c in choices]
        pred = _argmax(lls)
        pred_norm = _argmax([ll / max(n, 1.0) for ll, n in zip(lls, it.norm_lengths, strict=True)])
        acc.append(float(pred == it.gold))
        acc_norm.append(float(pred_norm == it.gold))
        preds.append(pred)
    result = {"n": len(items), "metrics": list(LM_EVAL_METRICS[name]),
              "acc": sum(acc) / len(acc), "acc_stderr": _stderr(acc)}
    if "acc_norm" in LM_EVAL_METRICS[name]:
        result.update(acc_norm=sum(acc_norm) / len(acc_norm), acc_norm_stderr=_stderr(acc_norm))
    result["correct"] = [int(a) for a in acc]
    if "acc_norm" in LM_EVAL_METRICS[name]:
        result["correct_norm"] = [int(a) for a in acc_norm]
    result["pred"] = preds
    if return_logprobs:
        result["logprobs"] = [[c.logprob for c in choices] for choices in scored]
    return result
