"""Bridges to lm-evaluation-harness.

* :func:`run_named_tasks`: run any named lm-eval tasks (``arc_easy``, ``mmlu`` ...) on a loaded model. lm-eval
  downloads its datasets from the Hugging Face Hub, so this needs the network (or a warm HF datasets cache);
  offline it fails with a clear :class:`EvalError` instead of a stack of retries.
* :func:`write_local_tasks`: make lm-eval evaluate the *shared local files* offline. Each item is converted
  back to the schema of the original Hub dataset, and a task YAML ``include``\\ s lm-eval's own task file
  (so lm-eval's own prompt templates, choices and metrics are used) and only swaps the dataset for a local
  JSON file. This is how ``eval/lm_eval_agreement.py`` checks the built-in scorer against lm-eval.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from ..errors import EvalError
from .benchmarks import BENCHMARK_FILES

logger = logging.getLogger(__name__)

LOCAL_PREFIX = "llmu_local_"


def lm_eval_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lm_eval") is not None


def _require_lm_eval():
    if not lm_eval_available():
        raise EvalError("lm-evaluation-harness is not installed: pip install 'lm-eval>=0.4.4' "
                        "(or pip install 'llm-unlearn[eval]')")


def _online(timeout: float = 3.0) -> bool:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "0") not in ("0", "", "false", "False"):
            return False
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo("huggingface.co", 443)
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def _lm(model, tokenizer, batch_size: int):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def summarize_results(results: dict) -> dict:
    """lm-eval's results -> {task: {metric: value, metric_stderr: value}} (filter suffix ``,none`` removed)."""
    out: dict[str, dict] = {}
    for task, metrics in (results.get("results") or {}).items():
        row = {}
        for key, value in metrics.items():
            if key == "alias" or not isinstance(value, (int, float)):
                continue
            name, _, filt = key.partition(",")
            row[name if filt in ("", "none") else f"{name},{filt}"] = value
        out[task] = row
    return out


def run_named_tasks(model, tokenizer, tasks: Sequence[str], limit: int | None = None, batch_size: int = 16,
                    num_fewshot: int | None = None) -> dict:
    """Run named lm-eval tasks on an already loaded model (needs the Hub for the datasets)."""
    _require_lm_eval()
    if not tasks:
        return {}
    if not _online():
        raise EvalError(f"lm-eval tasks {', '.join(tasks)} need the Hugging Face Hub for their datasets, which is not "
                        "reachable (offline, or HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set). Run them when online, or use "
                        f"the built-in offline scorer: --benchmarks {','.join(t for t in tasks if t in BENCHMARK_FILES) or 'arc_easy,...'}")
    from lm_eval import simple_evaluate

    try:
        res = simple_evaluate(model=_lm(model, tokenizer, batch_size), tasks=list(tasks), limit=limit,
                              num_fewshot=num_fewshot, log_samples=False)
    except (ConnectionError, OSError) as exc:
        raise EvalError(f"lm-eval could not fetch its task data: {exc}") from exc
    except KeyError as exc:
        raise EvalError(f"unknown lm-eval task {exc}; see `lm_eval ls tasks`") from exc
    return {"tasks": summarize_results(res), "limit": limit, "lm_eval_version": _version()}


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---- local-file tasks (offline lm-eval on the shared files) -------------------------------------------------

_OFFICIAL = {  # our name -> lm-eval task file (relative to lm_eval/tasks)
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "piqa": "piqa/piqa.yaml",
    "boolq": "super_glue/boolq/default.yaml",
    "winogrande": "winogrande/default.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
}


def _strip_prefix(text: str, prefix: str, where: str) -> str:
    if not text.startswith(prefix):
        raise EvalError(f"{where}: expected the query to start with {prefix!r}")
    return text[len(prefix):]


def to_original_schema(task: str, raw: dict | tuple, where: str = "") -> dict:
    """One shared-file item -> the fields of the original Hub dataset that lm-eval's task YAML reads."""
    if task in ("arc_easy", "arc_challenge"):
        labels = [chr(ord("A") + i) for i in range(len(raw["choices"]))]
        return {"question": _strip_prefix(raw["query"], "Question: ", where).rstrip("\n"),
                "choices": {"text": raw["choices"], "label": labels}, "answerKey": labels[raw["gold"]]}
    if task == "piqa":
        goal = _strip_prefix(raw["query"], "Question: ", where)
        goal = goal[:-1] if goal.endswith("\n") else goal
        return {"goal": goal, "sol1": raw["choices"][0], "sol2": raw["choices"][1], "label": raw["gold"]}
    if task == "boolq":
        q = _strip_prefix(raw["query"], "Passage: ", where)
        passage, sep, question = q.rpartition("\nQuestion: ")
        if not sep or not question.endswith("?"):
            raise EvalError(f"{where}: expected 'Passage: ...\\nQuestion: ...?'")
        return {"passage": passage, "question": question[:-1], "label": raw["gold"]}
    if task == "winogrande":
        a, b = raw["context_options"][:2]
        prefix = os.path.commonprefix([a, b])
        if "_" in prefix:
            raise EvalError(f"{where}: cannot rebuild the WinoGrande sentence (underscore in the shared prefix)")
        return {"sentence": prefix + "_ " + raw["continuation"], "option1": a[len(prefix):],
                "option2": b[len(prefix):], "answer": str(raw["gold"] + 1)}
    if task == "hellaswag":
        ctx, gold, endings = raw
        label, sep, rest = ctx.partition(": ")
        if not sep:
            label, rest = "", ctx
        # lm-eval builds preprocess(label + ": " + ctx_a + " " + ctx_b.capitalize()); with ctx_b empty this is
        # exactly preprocess of the shared context line.
        return {"activity_label": label, "ctx_a": rest, "ctx_b": "", "endings": list(endings), "label": str(gold)}
    raise EvalError(f"unknown task {task}")


def _raw_items(task: str, data_dir: Path, limit: int | None) -> list:
    path = data_dir / BENCHMARK_FILES[task]
    if not path.is_file():
        raise EvalError(f"benchmark file not found: {path}")
    if task == "hellaswag":
        import bz2

        lines = bz2.open(path, "rt", encoding="utf-8").read().split("\n")
        items = [(lines[k], int(lines[k + 1]), lines[k + 2:k + 6]) for k in range(0, len(lines) - 5, 6)]
    else:
        items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return items[:limit] if limit else items


def write_local_tasks(tasks: Sequence[str], data_dir: str | Path, out_dir: str | Path,
                      limits: dict[str, int | None] | int | None = None) -> list[str]:
    """Write converted data + task YAMLs under ``out_dir``; returns the local task names (for ``TaskManager(
    include_path=out_dir)``). The first ``limit`` items of each file are used, as the built-in scorer does."""
    _require_lm_eval()
    import lm_eval.tasks

    official_root = Path(lm_eval.tasks.__file__).parent
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for task in tasks:
        limit = limits.get(task) if isinstance(limits, dict) else limits
        raw = _raw_items(task, Path(data_dir), limit)
        data_path = out / f"{task}.jsonl"
        with data_path.open("w", encoding="utf-8") as fh:
            for i, item in enumerate(raw):
                fh.write(json.dumps(to_original_schema(task, item, f"{task} item {i}")) + "\n")
        name = LOCAL_PREFIX + task
        official = official_root / _OFFICIAL[task]
        if not official.is_file():
            raise EvalError(f"lm-eval task file {official} not found (lm-eval version {_version()})")
        cfg = (f"include: {official}\n"
               f"task: {name}\n"
               "tag: []\n"
               "dataset_path: json\n"
               "dataset_name: null\n"
               f"dataset_kwargs:\n  data_files:\n    test: {data_path}\n"
               "training_split: null\n"
               "validation_split: null\n"
               "test_split: test\n"
               "fewshot_split: null\n")
        (out / f"{name}.yaml").write_text(cfg, encoding="utf-8")
        names.append(name)
    return names


def lm_eval_requests(tasks: Sequence[str], data_dir: str | Path, limit: int | None, work_dir: str | Path) -> dict:
    """The (context, continuation) requests and gold index lm-eval itself builds for the first ``limit`` items
    of each shared file (no model needed). Used to check that the built-in scorer asks the same questions."""
    names = write_local_tasks(tasks, data_dir, work_dir, limit)
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(work_dir), include_defaults=False)
    loaded = _load_tasks(tm, names)
    out = {}
    for task, name in zip(tasks, names, strict=True):
        t = loaded[name]
        items = []
        for i, doc in enumerate(t.test_docs()):
            ctx = t.fewshot_context(doc, num_fewshot=0)
            reqs = t.construct_requests(doc=doc, ctx=ctx, metadata=(name, i, 1))
            reqs = reqs if isinstance(reqs, list) else [reqs]
            choices = t.doc_to_choice(doc)
            gold = t.doc_to_text(doc) if t.multiple_input else t.doc_to_target(doc)
            if isinstance(gold, str):
                gold = choices.index(gold)
            items.append({"pairs": [tuple(r.args) for r in reqs], "gold": int(gold)})
        out[task] = items
    return out


def _load_tasks(tm, names: list[str]) -> dict:
    """Task objects by name, across lm-eval 0.4.x API changes."""
    if hasattr(tm, "load"):
        try:
            loaded = tm.load(names)
            if isinstance(loaded, dict) and isinstance(loaded.get("tasks"), dict):
                flat = loaded["tasks"]
                if all(n in flat for n in names):
                    return flat
        except TypeError:
            pass
    import warnings

    from lm_eval.tasks import get_task_dict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _flatten_tasks(get_task_dict(names, tm))


def _flatten_tasks(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten_tasks(v))
        else:
            out[getattr(k, "group_name", k) if not isinstance(k, str) else k] = v
    return out
