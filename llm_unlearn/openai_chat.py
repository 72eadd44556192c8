"""One request to an OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Ollama ...): the optional
LLM judge of evaluation and the optional chat substitute writer of the anchors stage both use it.

Trust rules (a recipe or a run directory is a file people share; it must not send the runner's key anywhere):

T1a. The endpoint (scheme, host, port) is chosen by the person running, outside the recipe: ``$LLM_UNLEARN_JUDGE_URL``
     / ``--judge-url`` for the judge, ``$LLM_UNLEARN_CHAT_URL`` / ``--chat-url`` for the substitute writer (a
     ``--judge openai:URL`` flag of ``eval`` counts too). A recipe may name a model and leave the endpoint out
     (``openai``); a recipe that names an endpoint the person did not allow is refused before any request.
T1b. The key comes only from ``$OPENAI_API_KEY`` and is sent only to an allowed endpoint; redirects are not
     followed (urllib would resend the key to wherever a redirect points). Only http and https.

Temperature 0; errors are raised as the caller's typed error with the caller's advice, since both uses are optional
and the fix is to turn them off."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request

ENDPOINT_ENV = {"judge": "LLM_UNLEARN_JUDGE_URL", "chat": "LLM_UNLEARN_CHAT_URL"}
FLAG = {"judge": "--judge-url", "chat": "--chat-url"}
_GIVEN: dict[str, str] = {}  # use -> endpoint given on the command line by the person running (rule T1a)


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL; None for anything else."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def allow_endpoint(use: str, url: str, error: type[Exception]) -> None:
    """Rule T1a: the person running names the endpoint for ``use`` ('judge' or 'chat') on the command line."""
    if origin(url) is None:
        raise error(f"{FLAG[use]} must be an http:// or https:// URL (got {url!r})")
    _GIVEN[use] = url


def person_endpoint(use: str) -> str | None:
    """The endpoint the person running chose for ``use``: the command-line flag, else the environment variable."""
    return _GIVEN.get(use) or os.environ.get(ENDPOINT_ENV[use]) or None


def _allowed_origins() -> set:
    urls = [*_GIVEN.values(), *(os.environ.get(v) for v in ENDPOINT_ENV.values())]
    return {origin(u) for u in urls if u and origin(u)}


def choose_endpoint(use: str, named: str | None, error: type[Exception], setting: str) -> str:
    """Rule T1a: the endpoint to ask. ``named`` is what a recipe (``setting``) says: None / empty takes the person's
    endpoint; an endpoint is used only when the person allowed its scheme, host and port outside the recipe."""
    env, flag = ENDPOINT_ENV[use], FLAG[use]
    mine = person_endpoint(use)
    if not named:
        if not mine:
            raise error(f"{setting} names no endpoint: set {env}=URL (or pass {flag} URL) to the "
                        "OpenAI-compatible server you want to use")
        if origin(mine) is None:
            raise error(f"{env} must be an http:// or https:// URL (got {mine!r})")
        return mine
    if origin(named) is None:
        raise error(f"{setting}: the endpoint must be an http:// or https:// URL (got {named!r})")
    if origin(named) not in _allowed_origins():
        raise error(f"{setting} sends requests (and your OPENAI_API_KEY, when set) to {named}, an endpoint you have "
                    f"not allowed: a recipe may name a model, not where requests go. Write '{setting.split('.')[-1]}:"
                    f" openai' and set {env}=URL (or pass {flag} URL); to use this one, set {env}={named}")
    return named


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Rule T1b: a redirect is an error, never a second request (which would carry the key elsewhere)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)


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
    if origin(url) is None:
        raise error(f"{what} {url}: only http:// and https:// endpoints are used")
    if key and origin(url) in _allowed_origins():  # rule T1b
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
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
