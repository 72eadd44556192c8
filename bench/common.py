"""Shared set-up for the benchmark scripts: paths, machine description, the models and the Sherlock slice."""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from llm_unlearn.config.datadir import data_dir  # noqa: E402  (the bundled data folder, or $LLM_UNLEARN_DATA)

SHERLOCK = data_dir() / "corpora" / "sherlock_holmes_adventures.txt"
BENCHMARK_DIR = data_dir() / "benchmarks"
DEMO_RECIPE = REPO / "recipes" / "sherlock_smollm2.yaml"
RESULTS_DIR = REPO / "bench" / "results"

# The demo recipe's settings (recipes/sherlock_smollm2.yaml) that the micro-benchmarks reuse.
MODEL = "smollm2-135m"
BLOCK_SIZE = 256
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALPHAS = [2.5, 5.0, 10.0]


def proc_status(field: str) -> int:
    """A memory field of /proc/self/status in bytes (VmRSS = now, VmHWM = peak); 0 where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        have = {f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f} " in text or f" {f}\n" in text}
        flags = ",".join(sorted(have))
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "transformers", "peft", "accelerate", "datasets", "spacy", "lm_eval"):
        try:
            import importlib.metadata as md

            versions[mod] = md.version({"lm_eval": "lm_eval"}.get(mod, mod))
        except Exception:  # noqa: BLE001 - a missing optional package is reported as such
            versions[mod] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"cpu": cpu, "cpu_flags": flags, "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gib": round(mem / 2**30, 1), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions, "git_commit": commit}


CPU_TIMES: dict[str, list[float]] = {}  # process CPU seconds of the last interleaved() call, per function


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                log: Callable[[str], None] | None = None) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Time each function ``repeats`` times in the order A, B, C, A, B, C, ... after ``warmup`` untimed rounds,
    so that background load affects all of them alike. Returns wall seconds per function and each one's last
    result; the process CPU seconds of the same runs are left in ``CPU_TIMES`` (less sensitive to other jobs on a
    shared machine, which stretch wall time but not the CPU time this process gets)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    CPU_TIMES.clear()
    CPU_TIMES.update({k: [] for k in fns})
    last: dict[str, object] = {}
    for rnd in range(warmup + repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            last[name] = fn()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if rnd >= warmup:
                times[name].append(dt)
                CPU_TIMES[name].append(dc)
            if log:
                log(f"  {'warmup' if rnd < warmup else 'repeat ' + str(rnd - warmup + 1)} {name}: {dt:.2f}s "
                    f"(cpu {dc:.2f}s)")
    return times, last


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def load_base(threads: int | None = None, dtype: str = "float32"):
    """SmolLM2-135M with sdpa attention, float32 weights by default (the training stages' master weights; the
    bf16 side of a comparison is made by the caller, see bench/cpu_speed.py)."""
    import torch

    from llm_unlearn.models import load_model

    model, tok = load_model(MODEL, dtype=dtype)
    if threads:  # after load_model, which sets the default thread count (hardware rule H3)
        torch.set_num_threads(threads)
    return model, tok


def make_reinforced(base, seed: int = 0, scale: float = 0.1):
    """A stand-in for the reinforced model: a LoRA adapter with random NON-zero weights on a copy of the base
    (peft ``init_lora_weights=False``), so that v_r != v_b and the labels are not trivially the base argmax.
    ``scale`` shrinks the random B matrices so that the reinforced model stays a plausible language model."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS,
                     init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(base), cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(scale)
    return model


def sherlock_blocks(tokenizer, max_blocks: int | None = None):
    from llm_unlearn.corpus import load_blocks

    if not SHERLOCK.is_file():
        raise SystemExit(f"Sherlock corpus not found at {SHERLOCK} (point LLM_UNLEARN_DATA at a data folder holding it)")
    return load_blocks(str(SHERLOCK), tokenizer, BLOCK_SIZE, max_blocks=max_blocks)


class CachedLogits:
    """A LogitSource that runs the model once per distinct input and then returns the stored logits: timing label
    generation through it measures the labelling work alone (translation, masks, formula, suppression, argmax)."""

    def __init__(self, source):
        self.source, self.device = source, source.device
        self.cache: dict = {}

    @staticmethod
    def _key(kind, ids, att):
        return kind, tuple(ids.shape), ids.cpu().numpy().tobytes(), att.cpu().numpy().tobytes()

    def _get(self, kind, ids, att):
        key = self._key(kind, ids, att)
        if key not in self.cache:
            import torch

            with torch.inference_mode():
                fn = self.source.base if kind == "base" else self.source.reinforced_logits
                self.cache[key] = fn(ids, att)
        return self.cache[key]

    def base(self, ids, att):
        return self._get("base", ids, att)

    def reinforced_logits(self, ids, att):
        return self._get("reinforced", ids, att)


def run_eval_doc(run_dir: Path) -> tuple[Path, dict]:
    """(path, contents) of a finished run's ``eval/eval.json``; a run without one stops the script with the fix."""
    path = Path(run_dir) / "eval" / "eval.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist: finish the run's eval stage first "
                         f"(llm-unlearn run --out {run_dir})")
    return path, json.loads(path.read_text())


def labelled_runs(specs: list[str]) -> dict[str, Path]:
    """``label=run_dir`` arguments -> {label: run_dir}; a malformed one stops the script with the fix."""
    runs = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"error: {spec!r}: write each run as label=run_dir")
        runs[label] = Path(path)
    return runs
