"""Probe files a suite may hold beside its completion/probability prompts.

    chat.jsonl         {"id", "question", "answers": [...], "category"?}        asked in the chat template
    two_choice.jsonl   {"id", "question", "true", "false", "category"?}          true vs false answer
    passage.txt        a paragraph of target text (the in-context "passage" attack when no held-out text is given)

Per-language prompt files (``completion.fr.jsonl`` ...) are loaded by
:func:`llm_unlearn.evaluation.suites.load_suite` with ``language=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import EvalError
from ..evaluation.suites import _read_jsonl, _str_list


@dataclass
class ChatQuestion:
    id: str
    question: str
    answers: list[str]
    category: str = "general"


@dataclass
class TwoChoiceItem:
    id: str
    question: str
    true: str
    false: str
    category: str = "general"


def _text(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise EvalError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def _load_items(suite_dir: str | Path, filename: str, id_prefix: str, make) -> list:
    """Rows of a suite's JSONL probe file through ``make(qid, obj, where)`` ([] when the suite has no such file);
    ids default to ``<id_prefix><line>`` and must be unique."""
    path = Path(suite_dir) / filename
    if not path.is_file():
        return []
    out, seen = [], set()
    for no, obj in _read_jsonl(path):
        where = f"{path}:{no}"
        qid = str(obj.get("id") or f"{id_prefix}{no:04d}")
        if qid in seen:
            raise EvalError(f"{where}: duplicate id {qid!r}")
        seen.add(qid)
        out.append(make(qid, obj, where))
    return out


def _chat_question(qid: str, obj: dict, where: str) -> ChatQuestion:
    return ChatQuestion(qid, _text(obj, "question", where), _str_list(obj.get("answers"), where, "answers"),
                        str(obj.get("category") or "general"))


def _two_choice_item(qid: str, obj: dict, where: str) -> TwoChoiceItem:
    true, false = _text(obj, "true", where), _text(obj, "false", where)
    if true.casefold() == false.casefold():
        raise EvalError(f"{where}: the true and false answers are the same")
    return TwoChoiceItem(qid, _text(obj, "question", where), true, false, str(obj.get("category") or "general"))


def load_chat(suite_dir: str | Path) -> list[ChatQuestion]:
    """The suite's chat questions ([] when it has none)."""
    return _load_items(suite_dir, "chat.jsonl", "q", _chat_question)


def load_two_choice(suite_dir: str | Path) -> list[TwoChoiceItem]:
    """The suite's two-choice items ([] when it has none)."""
    return _load_items(suite_dir, "two_choice.jsonl", "t", _two_choice_item)


def load_passage(suite_dir: str | Path) -> str | None:
    path = Path(suite_dir) / "passage.txt"
    return path.read_text(encoding="utf-8").strip() or None if path.is_file() else None
