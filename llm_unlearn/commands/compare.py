"""`llm-unlearn compare RUN_A RUN_B ...`: put evaluation results side by side.

Each argument is an ``eval.json`` file, a folder holding one, or a run folder holding ``eval/eval.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EvalError


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="compare the eval.json of several runs side by side")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder, eval folder, or eval.json file")
    p.add_argument("--out", metavar="FILE", help="also write the table (markdown) to FILE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out FILE")
    p.add_argument("--json", action="store_true", help="print the flat summaries as JSON instead")
    p.set_defaults(func=run)


def find_eval_json(path: str | Path) -> Path:
    p = Path(path).expanduser()
    candidates = [p] if p.is_file() else [p / "eval.json", p / "eval" / "eval.json"]
    for c in candidates:
        if c.is_file():
            return c
    raise EvalError(f"no eval.json in {p} (looked for {', '.join(str(c) for c in candidates)}); "
                    "run `llm-unlearn eval` first")


def load_eval(path: str | Path) -> dict:
    f = find_eval_json(path)
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvalError(f"{f}: not a valid eval.json ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict) or not all(
            isinstance(m, dict) for m in doc["models"].values()):
        raise EvalError(f"{f}: not an llm-unlearn eval.json ('models' must map each model to its results)")
    return doc


def check_out(out: str, overwrite: bool) -> Path:
    """``--out FILE``: not an existing file unless ``--overwrite``, never a folder, in a folder that exists."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise EvalError(f"--out {path} is a folder: name a file, e.g. {path / 'compare.md'}")
    if path.exists() and not overwrite:
        raise EvalError(f"--out {path} exists: pass --overwrite to replace it, or choose another file")
    if not path.parent.is_dir():
        raise EvalError(f"--out {path}: the folder {path.parent} does not exist (or is a file); create it first")
    return path


def _run_name(path: str, taken: set[str]) -> str:
    p = Path(path).expanduser().resolve()
    if p.is_file():
        p = p.parent
    name = p.parent.name if p.name == "eval" else p.name
    base, k = name or str(path), 2
    while name in taken:
        name, k = f"{base}#{k}", k + 1
    taken.add(name)
    return name


def run(args) -> int:
    from ..evaluation.report import flat_summary, render_compare
    from ..runio import atomic_write_text

    out = check_out(args.out, args.overwrite) if args.out else None  # before any work
    taken: set[str] = set()
    docs = [(_run_name(r, taken), load_eval(r)) for r in args.runs]
    if args.json:
        print(json.dumps({name: flat_summary(doc) for name, doc in docs}, indent=2))
        return 0
    try:
        table = render_compare(docs)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise EvalError(f"an eval.json given to compare is not one llm-unlearn wrote ({type(exc).__name__}: "
                        f"{exc}); compare the eval.json files that `llm-unlearn eval` or `run` wrote") from exc
    print(table)
    if out is not None:
        try:
            atomic_write_text(out, "# Comparison\n\n" + table + "\n")
        except OSError as exc:
            raise EvalError(f"cannot write --out {out}: {exc.strerror or exc}") from exc
    return 0
