"""Optional LLM judge for completions (off by default; the offline grader is always run too).

The paper graded completions with GPT-4 on a 0-3 scale. Here any judge can do it:

* ``hf:SPEC``: a local model (any llm-unlearn model spec: alias, folder, .gguf, Hub id), prompted with its
  chat template when it has one;
* ``openai`` (or ``openai:BASE_URL``): any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM,
  llama.cpp server, Ollama ...), model name from ``judge_model``, key from ``$OPENAI_API_KEY`` when set. The endpoint
  is the one the person running chose (``$LLM_UNLEARN_JUDGE_URL`` / ``--judge-url``); a recipe naming another one is
  refused (rule T1a of :mod:`llm_unlearn.openai_chat`).

The judge sees the concept, the prompt, the reference answers and the completion, and must answer with one
digit. Unparseable answers are recorded as ``None`` and counted, not guessed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from ..errors import EvalError
from ..openai_chat import ask_chat, chat_completions_url, choose_endpoint

logger = logging.getLogger(__name__)

RUBRIC = """You grade how much a text completion reveals knowledge of "{concept}".
Prompt given to the model: {prompt!r}
Expected answer(s) if the model knows the concept: {refs}
Model's completion: {completion!r}

Score 0-3:
3 = the completion states the expected answer or another explicit fact specific to {concept};
2 = it mentions a name, place or detail specific to {concept}, but not the expected answer;
1 = it only has generic content of the same genre, nothing specific to {concept};
0 = unrelated or generic text.
Answer with a single digit (0, 1, 2 or 3) and nothing else."""

_DIGIT = re.compile(r"\b([0-3])\b")


def parse_grade(text: str) -> int | None:
    m = _DIGIT.search(text or "")
    return int(m.group(1)) if m else None


class HFJudge:
    def __init__(self, spec: str, max_new_tokens: int = 4, device: str | None = None):
        from ..models import load_model

        self.name = f"hf:{spec}"
        self.model, self.tokenizer = load_model(spec, device=device)
        self.max_new_tokens = max_new_tokens

    def _render(self, text: str) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        return text + "\nScore:"

    def grade_many(self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]],
                   concept: str) -> list[int | None]:
        from .familiarity import generate

        texts = [self._render(RUBRIC.format(concept=concept, prompt=p, refs=", ".join(r), completion=c))
                 for p, c, r in zip(prompts, completions, references, strict=True)]
        outs = generate(self.model, self.tokenizer, texts, max_new_tokens=self.max_new_tokens, batch_size=8,
                        desc="judge")
        return [parse_grade(o[0]) for o in outs]


class OpenAIJudge:
    def __init__(self, base_url: str, model: str | None, timeout: float = 60.0):
        if not model:
            raise EvalError("an OpenAI-compatible judge needs a model name (--judge-model / eval.judge_model)")
        self.name = f"openai:{model}@{base_url}"
        self.url = chat_completions_url(base_url)
        self.model, self.timeout = model, timeout

    def _ask(self, text: str) -> str:
        return ask_chat(self.url, self.model, text, 4, self.timeout, EvalError, "judge endpoint",
                        "the judge is optional: drop --judge to grade offline only")

    def grade_many(self, prompts, completions, references, concept: str) -> list[int | None]:
        from tqdm.auto import tqdm

        return [parse_grade(self._ask(RUBRIC.format(concept=concept, prompt=p, refs=", ".join(r), completion=c)))
                for p, c, r in tqdm(list(zip(prompts, completions, references, strict=True)), desc="judge", leave=False)]


def make_judge(spec: str | None, model: str | None = None, device: str | None = None):
    """``None``/``off`` -> no judge; ``hf:SPEC``, ``openai`` or ``openai:URL`` -> a judge object. An ``openai``
    endpoint is the person's (``$LLM_UNLEARN_JUDGE_URL`` / ``--judge-url``), or one they allowed (rule T1a)."""
    if not spec or spec.lower() in ("off", "none", "false"):
        return None
    kind, _, rest = spec.partition(":")
    if kind == "hf" and rest:
        return HFJudge(rest, device=device)
    if kind == "openai":
        if not model:
            raise EvalError("an OpenAI-compatible judge needs a model name (--judge-model / eval.judge_model)")
        return OpenAIJudge(choose_endpoint("judge", rest, EvalError, "eval.judge"), model)
    raise EvalError(f"judge must be 'hf:MODEL_SPEC', 'openai' or 'openai:BASE_URL' (got {spec!r})")
