"""Substitutes written by a chat model the user names (optional, off by default: ``anchors.substitutes: chat``).

The paper had GPT-4 write its dictionary. Here any chat model can: ``anchors.substitute_chat`` is ``hf:SPEC`` (a
local model, any llm-unlearn model spec, prompted with its chat template) or ``openai:BASE_URL`` (an
OpenAI-compatible ``/chat/completions`` endpoint; model name from ``anchors.substitute_chat_model``, key from
``$OPENAI_API_KEY`` when set). Rules:

C1. One request per term, in the paper's spirit: the term, what the text is ("target"), two sentences where the
    term occurs, and the request for generic alternatives of the same kind that fit those sentences and have
    nothing to do with the target, answered as a JSON list of strings.
C2. The answer is read as a JSON list, or else as one item per line / comma; every item passes the same shape
    and not-the-target filters as the base model's proposals (rules P4, P5 of :mod:`.proposals`).
C3. Terms the chat model gives nothing usable for fall back to the base model's proposals or Faker.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence

from ...errors import AnchorError
from ...openai_chat import ask_chat, chat_completions_url, choose_endpoint
from .proposals import _not_target, _shape_ok, find_contexts

logger = logging.getLogger(__name__)

PROMPT = """You help remove knowledge of "{target}" from a language model. The text about it uses the term "{term}".
Where it occurs:
{examples}

Give {n} generic alternatives for "{term}": each of the same kind (a person's name for a person, an animal for an
animal, a place for a place, an object for an object, an organisation for an organisation), shaped like it
({shape}), fitting the sentences above, and with no connection to "{target}".
Answer with a JSON list of {n} strings and nothing else."""


def _shape_words(term: str) -> str:
    n = len(term.split(" "))
    case = "capitalised" if term[:1].isupper() else "lower case"
    return f"{n} word{'s' if n > 1 else ''}, {case}"


def parse_list(text: str) -> list[str]:
    """Rule C2: a JSON list of strings, or one item per line / comma (bullets and numbering removed)."""
    text = (text or "").strip()
    m = re.search(r"\[.*?\]", text, re.S)
    if m:
        try:
            items = json.loads(m.group(0))
            if isinstance(items, list):
                return [str(i).strip() for i in items if isinstance(i, (str, int, float)) and str(i).strip()]
        except json.JSONDecodeError:
            pass
    parts = re.split(r"[\n,;]+", text)
    out = []
    for p in parts:
        p = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", p).strip().strip("\"'“”")
        if p:
            out.append(p)
    return out


class _OpenAIChat:
    def __init__(self, base_url: str, model: str | None, timeout: float = 60.0):
        if not model:
            raise AnchorError("an OpenAI-compatible substitute writer needs a model name "
                              "(anchors.substitute_chat_model)")
        self.url = chat_completions_url(base_url)
        self.model, self.timeout = model, timeout

    def ask_many(self, prompts: Sequence[str]) -> list[str]:
        return [self._ask(p) for p in prompts]

    def _ask(self, text: str) -> str:
        return ask_chat(self.url, self.model, text, 200, self.timeout, AnchorError, "substitute writer",
                        "it is optional: set anchors.substitutes to model or faker")


class _HFChat:
    def __init__(self, spec: str, max_new_tokens: int = 60):
        from ...models import load_model

        self.model, self.tokenizer = load_model(spec)
        self.max_new_tokens = max_new_tokens

    def ask_many(self, prompts: Sequence[str]) -> list[str]:
        from ...evaluation.familiarity import generate

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True) for p in prompts]
        else:
            texts = [p + "\nAnswer: [" for p in prompts]
        outs = generate(self.model, tok, texts, max_new_tokens=self.max_new_tokens, batch_size=8,
                        desc="anchors: chat substitutes")
        return [("[" if not getattr(tok, "chat_template", None) else "") + o[0] for o in outs]


def make_writer(spec: str, model: str | None = None):
    """``hf:SPEC`` or ``openai:BASE_URL`` -> an object with ``ask_many(prompts) -> answers``."""
    kind, _, rest = (spec or "").partition(":")
    if kind == "hf" and rest:
        return _HFChat(rest)
    if kind == "openai":  # the endpoint is the person's ($LLM_UNLEARN_CHAT_URL / --chat-url), rule T1a
        if not model:
            raise AnchorError("an OpenAI-compatible substitute writer needs a model name "
                              "(anchors.substitute_chat_model)")
        return _OpenAIChat(choose_endpoint("chat", rest, AnchorError, "anchors.substitute_chat"), model)
    raise AnchorError(f"anchors.substitute_chat must be 'hf:MODEL_SPEC' or 'openai:BASE_URL' (got {spec!r})")


def chat_substitutes(writer, texts: Sequence[str], keys: Sequence[str], target: str, n: int,
                     forbidden: Iterable[str], stop_words: Iterable[str] = (), titles: Iterable[str] = ()
                     ) -> dict[str, list[str]]:
    """Rules C1-C2: up to ``n`` substitutes per key written by ``writer``."""
    forbidden = {w.lower().replace("’", "'") for w in forbidden}
    stop, titles = {w.lower() for w in stop_words}, {w.lower() for w in titles}
    contexts: Mapping[str, list[tuple[str, str]]] = find_contexts(texts, keys, 2)
    asked = [k for k in keys if contexts.get(k)]
    prompts = []
    for k in asked:
        examples = "\n".join(f'- "...{left[-120:]} {k}{right[:60]}..."' for left, right in contexts[k])
        prompts.append(PROMPT.format(target=target or "the source text", term=k, examples=examples, n=n,
                                     shape=_shape_words(k)))
    answers = writer.ask_many(prompts) if prompts else []
    out: dict[str, list[str]] = {}
    for k, answer in zip(asked, answers, strict=True):
        good = []
        for item in parse_list(answer):
            item = re.sub(r"\s+", " ", item)
            if (item not in good and _shape_ok(item.split(" "), k.split(" "), stop, titles)
                    and _not_target(item, k, forbidden)):
                good.append(item)
        if good:
            out[k] = good[:n]
    logger.info("anchors: the chat model wrote usable substitutes for %d of %d keys", len(out), len(asked))
    return out
