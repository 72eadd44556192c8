"""One request to an OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Ollama ...): the optional
LLM judge of evaluation and the optional chat substitute writer of the anchors stage both use it.

The key comes only from ``$OPENAI_API_KEY`` (never from a recipe); temperature 0; errors are raised as the caller's
typed error with the caller's advice, since both uses are optional and the fix is to turn them off."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request


def chat_completions_url(base_url: str) -> str:
    """``base_url`` with ``/chat/completions`` appended unless it already ends so."""
    base = base_url.rstrip("/")
    return base + ("" if base.endswith("/chat/completions") else "/chat/completions")


def ask_chat(url: str, model: str, text: str, max_tokens: int, timeout: float, error: type[Exception], what: str,
             if_unreachable: str) -> str:
    """The answer text of one user message; ``error(...)`` naming ``what`` on HTTP errors, an unreachable endpoint
    (with the advice ``if_unreachable``) or an answer without a message."""
    body = json.dumps({"model": model, "temperature": 0, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": text}]}).encode()
    headers = {"Content-Type": "application/json"}
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read().decode())
    except urllib.error.HTTPError as exc:
        raise error(f"{what} {url} answered HTTP {exc.code}: {exc.read()[:200]!r}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise error(f"{what} {url} is unreachable ({exc}); {if_unreachable}") from exc
    except json.JSONDecodeError as exc:
        raise error(f"{what} {url}: the answer is not JSON") from exc
    try:
        return data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise error(f"{what} {url}: unexpected answer {str(data)[:200]}") from exc
