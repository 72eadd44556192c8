"""QA in the model's chat format (TOFU and any chat-formatted corpus), and the token spans the loss is taken on.

Rule TOFU-C1: a QA pair is the conversation [user: question, assistant: answer] rendered by
``tokenizer.apply_chat_template`` when the tokenizer has a chat template; otherwise the plain format
``"Question: {q}\\nAnswer: {a}" + eos``. The prompt is the same conversation without the answer, with the generation
prompt (what the model sees before it answers).
Rule TOFU-C2: the supervised / scored tokens are the answer's tokens and what the template appends after it up to
the end of the turn (the end-of-turn marker), as TOFU supervises the answer plus the EOS token; every token of the
question and the template before the answer gets label -100.
Rule TOFU-C4: unlearning trains on the same tokens: every baseline's forget loss on a chat-formatted row is taken on
the answer tokens and the end-of-turn marker only (:func:`answer_markers` gives the template's assistant header and
end-of-turn ids; :func:`llm_unlearn.losses.chat_answer_labels`, rule L1, masks the rest), as TOFU's and
open-unlearning's collators put -100 on the question, the template and the system prompt.
"""

from __future__ import annotations

import re

from .errors import EvalError

PLAIN_PROMPT = "Question: {question}\nAnswer:"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer, question: str) -> str:
    """TOFU-C1: what the model sees before it answers."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    return PLAIN_PROMPT.format(question=question)


def conversation_text(tokenizer, question: str, answer: str) -> tuple[str, int]:
    """TOFU-C1: the rendered QA and the character offset where the answer starts."""
    prompt = prompt_text(tokenizer, question)
    if has_chat_template(tokenizer):
        full = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer}], tokenize=False)
    else:
        full = prompt + " " + answer + (tokenizer.eos_token or "")
    if not full.startswith(prompt):
        raise EvalError("the chat template renders the question differently with and without an answer; TOFU "
                        "scoring needs the prompt to be a prefix of the full conversation")
    start = full.index(answer, len(prompt)) if answer in full[len(prompt):] else len(prompt)
    return full, start


def encode_qa(tokenizer, question: str, answer: str, max_length: int | None = None) -> dict:
    """``input_ids`` and ``labels`` (answer + end-of-turn tokens supervised, TOFU-C2)."""
    full, start = conversation_text(tokenizer, question, answer)
    enc = tokenizer(full, add_special_tokens=not has_chat_template(tokenizer), return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    # a token is the answer's when its text ends after the answer starts (special tokens have no span: (0, 0))
    labels = [tok if e > start and e > s else -100 for tok, (s, e) in zip(ids, offsets, strict=True)]
    # drop what the template puts after the end-of-turn marker (a newline): not part of the answer's turn
    while len(ids) > 2 and labels[-2] != -100 and full[offsets[-1][0]:].strip() == "":
        ids.pop(), labels.pop(), offsets.pop()
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    if all(x == -100 for x in labels):
        raise EvalError(f"no answer tokens left for question {question[:60]!r} (max_length {max_length} too small?)")
    return {"input_ids": ids, "labels": labels}


def chat_corpus_text(tokenizer, items) -> str:
    """The QA of some items as one text in the chat format (an unlearning corpus)."""
    return "".join(conversation_text(tokenizer, it.question, it.answer)[0] for it in items)


def template_terms(tokenizer) -> list[str]:
    """Words and capitalised phrases of the chat template's own text (e.g. a default system prompt naming the
    model and its maker), which every QA of a corpus repeats: they must not become WHP anchored terms (rule
    TOFU-C3), else unlearning the forget authors would rewrite the template the model answers in."""
    if not has_chat_template(tokenizer):
        return []
    text = conversation_text(tokenizer, "QQQ", "AAA")[0].replace("QQQ", " ").replace("AAA", " ")
    for special in getattr(tokenizer, "all_special_tokens", []) or []:
        text = text.replace(special, " ")
    text = re.sub(r"<[^<>\s]{1,40}>", " ", text)  # other markup tokens such as <start_of_turn>
    words = re.findall(r"[A-Za-z][A-Za-z0-9'\-]*", text)
    phrases = re.findall(r"[A-Z][\w'\-]*(?:\s+[A-Z][\w'\-]*)+", text)
    return list(dict.fromkeys(phrases + words))


def answer_markers(tokenizer) -> tuple[list[int], list[int]] | None:
    """TOFU-C4: (ids of the assistant header the template puts before an answer, ids of the end-of-turn marker after
    it), or None without a chat template (the plain format has no markers to find in a block)."""
    if not has_chat_template(tokenizer):
        return None
    msgs = [{"role": "user", "content": "QQQ"}]
    with_prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    if not with_prompt.startswith(without) or len(with_prompt) == len(without):
        return None
    header = with_prompt[len(without):]
    full, start = conversation_text(tokenizer, "QQQ", "AAA")
    after = full[start + len("AAA"):]
    end = after.rstrip()  # the end-of-turn marker (what follows the answer, without the trailing newline)
    enc = tokenizer(header, add_special_tokens=False)["input_ids"]
    end_ids = tokenizer(end, add_special_tokens=False)["input_ids"] if end else []
    if not enc or not end_ids:
        return None
    return list(enc), list(end_ids)


def _answer_labels(tokenizer, rows: list[dict]) -> list[list[int] | None] | None:
    """Rule L1 per row: the answer-only labels of a row holding a chat answer (None for a row without one), or None
    for all of them when the tokenizer has no chat markers."""
    from .losses import chat_answer_labels

    markers = answer_markers(tokenizer)
    if markers is None:
        return None
    return [chat_answer_labels(r["input_ids"], *markers) for r in rows]


def answer_only_rows(tokenizer, *row_lists: list[dict]) -> str | None:
    """TOFU-C4 / rule L1 on training rows: give each row holding a chat answer a ``labels`` column (answer and
    end-of-turn tokens; -100 elsewhere; a row without one keeps every token). Returns the label key to train on
    ("labels"), or None when no row holds a chat answer (nothing changes)."""
    rows = [r for rows in row_lists for r in rows]
    answers = _answer_labels(tokenizer, rows)
    if answers is None or all(a is None for a in answers):
        return None
    for r, answer in zip(rows, answers, strict=True):
        r["labels"] = answer if answer is not None else list(r["input_ids"])
    return "labels"


def mask_outside_answers(tokenizer, key: str, *row_lists: list[dict]) -> int:
    """Rule L1 for labels built elsewhere (WHP's generic labels, column ``key``): in every row holding a chat answer,
    the positions outside the answer and its end-of-turn marker get -100, so the loss is on the answer tokens only, as
    for every other method (TOFU-C4). Rows without one keep their labels. Returns how many rows were masked."""
    rows = [r for rows in row_lists for r in rows]
    masked = 0
    for r, answer in zip(rows, _answer_labels(tokenizer, rows) or [None] * len(rows), strict=True):
        if answer is None:
            continue
        r[key] = [lab if keep != -100 else -100 for lab, keep in zip(r[key], answer, strict=True)]
        masked += 1
    return masked
