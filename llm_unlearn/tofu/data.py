"""TOFU data (Maini et al. 2024): loading every file of the shared folder and building a configuration.

File formats the loader reads (rule TOFU-D1): a file holds one or more JSON values, each an array of records or a
single record, separated by whitespace, newlines or commas. The shared export has both kinds: ``full.json`` and
``retain*.json`` hold several arrays (one per line), the ``*_perturbed.json`` files one array. JSON-lines files of
single objects read the same way.

Record kinds (rule TOFU-D2):
* plain QA (``full``, ``retainXX``, ``holdoutXX``): ``question``, ``answer``;
* perturbed QA (``forgetXX_perturbed``, ``retain_perturbed``): plus ``paraphrased_answer`` and a list
  ``perturbed_answer``;
* multiple choice (``real_authors``, ``world_facts``): ``question``, ``option1..4`` and ``answer`` (one of the
  options); their ``*_perturbed`` files give ``answer`` and the wrong options as ``perturbed_answer``.

TOFU's structure (rule TOFU-D3): ``full`` is 200 fictitious authors x 20 QA, in author order; ``forgetXX`` are the
QA of the LAST XX% of the authors, ``retain{100-XX}`` the rest, ``retain_perturbed`` the first 20 authors' QA
with paraphrased/perturbed answers (the retain evaluation set).

Configurations (rule TOFU-D4): ``authors=None`` is TOFU itself (target trained on ``full``, retain model on
``retain{100-XX}``, evaluation on ``forgetXX_perturbed``, ``retain_perturbed``, real authors, world facts). An
integer ``authors=N`` keeps this structure on a subset: the forget authors are the last
``F = max(1, round(N * XX / 100))`` authors of TOFU, or ``forget_authors=F`` (so their perturbed answers are the
matching last rows of ``forgetXX_perturbed.json``) and the retain authors the first ``N - F`` authors (whose evaluation rows come from
``retain_perturbed.json``); the forget authors are the last authors of the subset, as in TOFU.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import EvalError

QA_PER_AUTHOR = 20
TOFU_AUTHORS = 200
FORGET_PERCENTS = (1, 5, 10)


class TofuDataError(EvalError):
    """A TOFU file is missing, malformed, or does not have TOFU's structure."""


@dataclass(frozen=True)
class QAItem:
    question: str
    answer: str
    paraphrased_answer: Optional[str] = None
    perturbed_answers: tuple = ()
    author: Optional[int] = None  # index of the fictitious author in full.json (None: real authors, world facts)


def read_records(path: str | Path) -> list[dict]:
    """Every record of a TOFU JSON file, whatever the layout (rule TOFU-D1)."""
    path = Path(path)
    if not path.is_file():
        raise TofuDataError(f"TOFU file not found: {path}")
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    records: list[dict] = []
    pos = 0
    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] == ","):
            pos += 1
        if pos >= len(text):
            break
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise TofuDataError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
        for rec in value if isinstance(value, list) else [value]:
            if not isinstance(rec, dict):
                raise TofuDataError(f"{path}: expected JSON objects (records), found {type(rec).__name__}")
            records.append(rec)
    if not records:
        raise TofuDataError(f"{path}: no records")
    return records


def _text(rec: dict, key: str, path: Path, i: int) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TofuDataError(f"{path}: record {i} has no text field '{key}' (keys: {sorted(rec)})")
    return value


def record_to_item(rec: dict, path: Path, i: int, author: Optional[int] = None) -> QAItem:
    """One record of any kind (rule TOFU-D2) as a :class:`QAItem`."""
    question, answer = _text(rec, "question", path, i), _text(rec, "answer", path, i)
    perturbed = rec.get("perturbed_answer")
    if perturbed is None and any(k.startswith("option") for k in rec):
        # multiple choice without a perturbed file: the wrong options are the perturbed answers
        options = [rec[k] for k in sorted(rec) if re.fullmatch(r"option\d+", k)]
        if answer not in options:
            raise TofuDataError(f"{path}: record {i}: answer {answer!r} is not among its options {options}")
        perturbed = [o for o in options if o != answer]
    if perturbed is not None:
        if isinstance(perturbed, str):
            perturbed = [perturbed]
        if not isinstance(perturbed, list) or not all(isinstance(p, str) for p in perturbed) or not perturbed:
            raise TofuDataError(f"{path}: record {i}: 'perturbed_answer' must be a non-empty list of strings")
    return QAItem(question=question, answer=answer, paraphrased_answer=rec.get("paraphrased_answer"),
                  perturbed_answers=tuple(perturbed or ()), author=author)


def split_file(data_dir: str | Path, name: str) -> Path:
    """The file of a split name: ``forget10`` and ``real_authors`` mean their ``*_perturbed`` files when present
    (that is what TOFU evaluates on); any other name is the file of that name."""
    data_dir = Path(data_dir)
    if not name.endswith("_perturbed") and (data_dir / f"{name}_perturbed.json").is_file() \
            and (name.startswith("forget") or name in ("real_authors", "world_facts")):
        return data_dir / f"{name}_perturbed.json"
    path = data_dir / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in data_dir.glob("*.json")) if data_dir.is_dir() else []
        raise TofuDataError(f"no TOFU split '{name}' in {data_dir} (files: {', '.join(known) or 'none'})")
    return path


def load_split(data_dir: str | Path, name: str) -> list[QAItem]:
    """Load one split by name (``full``, ``retain90``, ``forget05``, ``holdout10``, ``retain_perturbed``,
    ``real_authors``, ``world_facts``, ... or an explicit ``*_perturbed`` name)."""
    path = split_file(data_dir, name)
    items = [record_to_item(rec, path, i) for i, rec in enumerate(read_records(path))]
    if name == "full":  # rule TOFU-D3: authors in order, 20 QA each
        items = [QAItem(it.question, it.answer, it.paraphrased_answer, it.perturbed_answers, i // QA_PER_AUTHOR)
                 for i, it in enumerate(items)]
    return items


def forget_percent(split: str) -> int:
    m = re.fullmatch(r"forget(\d+)", split)
    if not m or int(m.group(1)) not in FORGET_PERCENTS:
        raise TofuDataError(f"unknown TOFU split '{split}'; use one of "
                            f"{', '.join(f'forget{p:02d}' for p in FORGET_PERCENTS)}")
    return int(m.group(1))


def _spread(items: list, limit: Optional[int]) -> list:
    """At most ``limit`` items, evenly spaced over the list (so every author / topic is represented)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise TofuDataError(f"an evaluation item limit must be >= 1 (got {limit})")
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


@dataclass
class TofuData:
    """A TOFU configuration: training sets of the target and retain models and the four evaluation sets."""

    split: str
    forget_authors: list[int]
    retain_authors: list[int]
    target_train: list[QAItem]
    retain_train: list[QAItem]
    forget_eval: list[QAItem]
    retain_eval: list[QAItem]
    real_authors: list[QAItem]
    world_facts: list[QAItem]
    source: str = ""
    notes: list = field(default_factory=list)

    @property
    def forget_train(self) -> list[QAItem]:
        forget = set(self.forget_authors)
        return [it for it in self.target_train if it.author in forget]

    def eval_sets(self) -> dict[str, list[QAItem]]:
        return {"forget": self.forget_eval, "retain": self.retain_eval, "real_authors": self.real_authors,
                "world_facts": self.world_facts}

    def describe(self) -> dict:
        return {"split": self.split, "forget_authors": len(self.forget_authors),
                "retain_authors": len(self.retain_authors), "target_train_qa": len(self.target_train),
                "retain_train_qa": len(self.retain_train),
                **{f"eval_{k}": len(v) for k, v in self.eval_sets().items()}}


def build_tofu_data(data_dir: str | Path, split: str = "forget10", authors: Optional[int] = None,
                    eval_retain_items: Optional[int] = None, eval_general_items: Optional[int] = None,
                    eval_forget_items: Optional[int] = None, forget_authors: Optional[int] = None) -> TofuData:
    """Build the full TOFU configuration (``authors=None``) or a subset keeping its structure (rule TOFU-D4)."""
    data_dir = Path(data_dir)
    pct = forget_percent(split)
    full = load_split(data_dir, "full")
    n_authors_full = len(full) // QA_PER_AUTHOR
    if len(full) % QA_PER_AUTHOR:
        raise TofuDataError(f"{data_dir}/full.json has {len(full)} QA, not a multiple of {QA_PER_AUTHOR} per author")
    forget_rows = load_split(data_dir, split)
    if len(forget_rows) % QA_PER_AUTHOR or not all(it.paraphrased_answer and it.perturbed_answers
                                                  for it in forget_rows):
        raise TofuDataError(f"{split_file(data_dir, split)}: expected {QA_PER_AUTHOR} QA per author, each with "
                            "'paraphrased_answer' and 'perturbed_answer'")
    n_forget_full = len(forget_rows) // QA_PER_AUTHOR
    author_of = {(it.question, it.answer): it.author for it in full}  # one question text occurs twice in TOFU
    if authors is None:
        n_forget = n_forget_full
        retain_ids = list(range(n_authors_full - n_forget))
    else:
        if authors < 2:
            raise TofuDataError(f"a TOFU subset needs at least 2 authors (got {authors})")
        n_forget = forget_authors if forget_authors is not None else max(1, round(authors * pct / 100))
        if not 1 <= n_forget < authors:
            raise TofuDataError(f"forget_authors must be between 1 and authors - 1 (got {n_forget} of {authors})")
        if n_forget > n_forget_full or authors > n_authors_full:
            raise TofuDataError(f"authors={authors} needs {n_forget} forget authors but {split} has "
                                f"{n_forget_full} (and TOFU {n_authors_full} authors); use fewer authors")
        retain_ids = list(range(authors - n_forget))
    forget_ids = list(range(n_authors_full - n_forget, n_authors_full))
    forget_eval = forget_rows[len(forget_rows) - n_forget * QA_PER_AUTHOR:]
    forget_eval = [QAItem(it.question, it.answer, it.paraphrased_answer, it.perturbed_answers,
                          author_of.get((it.question, it.answer))) for it in forget_eval]
    if any(it.author not in forget_ids for it in forget_eval):
        raise TofuDataError(f"{split}: its rows are not the QA of the last {n_forget} authors of full.json; "
                            "the files do not have TOFU's structure")
    chosen = set(retain_ids) | set(forget_ids)
    target_train = [it for it in full if it.author in chosen]
    notes = []
    if authors is None:
        retain_file = f"retain{100 - pct}"
        retain_train = [QAItem(it.question, it.answer, author=author_of.get((it.question, it.answer)))
                        for it in load_split(data_dir, retain_file)]
        if {it.author for it in retain_train} & set(forget_ids):
            raise TofuDataError(f"{retain_file}.json holds QA of forget authors; the files do not match")
        notes.append(f"retain model trained on {retain_file}.json")
    else:
        retain_train = [it for it in full if it.author in set(retain_ids)]
    retain_rows = load_split(data_dir, "retain_perturbed")
    retain_eval = [QAItem(it.question, it.answer, it.paraphrased_answer, it.perturbed_answers,
                          author_of.get((it.question, it.answer))) for it in retain_rows]
    retain_eval = [it for it in retain_eval if it.author in set(retain_ids)]
    if not retain_eval:
        raise TofuDataError("no retain_perturbed rows belong to the retain authors of this configuration")
    general = {name: _spread(load_split(data_dir, name), eval_general_items) for name in ("real_authors", "world_facts")}
    return TofuData(split=split, forget_authors=forget_ids, retain_authors=retain_ids, target_train=target_train,
                    retain_train=retain_train, forget_eval=_spread(forget_eval, eval_forget_items),
                    retain_eval=_spread(retain_eval, eval_retain_items), real_authors=general["real_authors"],
                    world_facts=general["world_facts"], source=str(data_dir), notes=notes)
