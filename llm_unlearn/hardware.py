"""Compute settings for the machine a run is on: bf16 where the processor has it, and CPU threads.

Rules (tests cite them by ID):

- **H1 compute dtype.** ``dtype: auto`` computes in bfloat16 where the hardware does so natively: CUDA GPUs that
  support bf16, and CPUs with bf16 instructions (x86 ``avx512_bf16`` or ``amx_bf16``, Arm ``bf16``). Elsewhere
  float32. An explicit dtype (``float32``, ``bfloat16``, ``float16``) always wins; ``LLM_UNLEARN_CPU_BF16=0`` (or
  ``1``) overrides the CPU detection.
- **H2 what stays float32.** Evaluation loads the weights in the compute dtype. Training stages on CPU keep float32
  master weights and optimizer state and compute the forward and backward passes under bf16 autocast
  (``mixed_precision: auto`` -> ``bf16``), as mixed precision does on GPUs. The labels stage keeps float32 weights
  on CPU: ``alpha`` multiplies the rounding error of ``v_r - v_b``, and with bf16 forward passes only 79-92% of the
  labels matched float32 (bench/cpu_speed.py; the goal was 99%). Everywhere the label formula, the losses and
  log-probabilities are computed on logits cast to float32.
- **H3 threads.** Torch's intra-op threads default to the physical cores this process may use; an explicit
  ``torch.set_num_threads`` / ``OMP_NUM_THREADS`` wins.
- **H4 sharing the machine: nothing automatic.** Measured (bench/cpu_speed.py, docs/performance.md): with one
  competing busy process a training step takes ~2.4-2.9x as long whether OpenMP waits passively or spins, and
  passive waiting costs 18% on an idle machine, so the package sets no wait policy; ``OMP_NUM_THREADS=1`` remains
  the advice for a machine shared with other torch jobs.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

CPU_BF16_ENV = "LLM_UNLEARN_CPU_BF16"
_X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features"):  # x86 | arm
            return set(line.split(":", 1)[1].split())
    return set()


@functools.lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """H1: True when this CPU computes bf16 in hardware (not emulated)."""
    forced = os.environ.get(CPU_BF16_ENV)
    if forced is not None and forced.strip() != "":
        return forced.strip().lower() not in ("0", "false", "no", "off")
    flags = cpu_flags()
    if any(f in flags for f in _X86_BF16_FLAGS):
        return True
    if platform.machine().lower() in ("aarch64", "arm64"):
        if "bf16" in flags:
            return True
        if platform.system() == "Darwin":  # Apple M2 and later have bf16; M1 does not
            try:
                out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                     timeout=5).stdout.strip()
                return out == "1"
            except (OSError, subprocess.SubprocessError):
                return False
    return False


def _is_cuda(device) -> bool:
    return str(device or "").startswith("cuda")


def inference_dtype(setting, device: str):
    """H1/H2: the torch dtype to load weights in for inference (labels, evaluation, ``info``)."""
    import torch

    if setting is not None and setting != "auto":
        return _named_dtype(setting)
    if _is_cuda(device):
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    if str(device or "cpu").startswith("cpu") and cpu_bf16_native():
        return torch.bfloat16
    return torch.float32


def training_weights_dtype(setting, device: str):
    """H2: master-weight dtype of a training stage. On CPU ``auto`` keeps float32 weights (bf16 comes from
    autocast, :func:`resolve_mixed_precision`); on GPUs ``auto`` keeps the historical bf16 weights."""
    import torch

    if setting is not None and setting != "auto":
        return _named_dtype(setting)
    if _is_cuda(device):
        return inference_dtype("auto", device)
    return torch.float32


def resolve_mixed_precision(setting: str, device: str, dtype_setting="auto") -> str:
    """H2: ``auto`` -> ``bf16`` autocast on a CPU with native bf16 when the model dtype is ``auto`` too, else
    ``no`` (an explicit model dtype means: compute in it). Explicit ``no`` / ``bf16`` / ``fp16`` are returned
    unchanged."""
    if setting != "auto":
        return setting
    if _is_cuda(device):
        return "no"  # auto weights are already bf16 on such GPUs
    if dtype_setting not in (None, "auto"):
        return "no"
    return "bf16" if cpu_bf16_native() else "no"


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def _named_dtype(setting):
    import torch

    if isinstance(setting, torch.dtype):
        return setting
    if setting not in _DTYPES:
        from .errors import ModelLoadError

        raise ModelLoadError(f"unknown dtype '{setting}'; use one of auto, {', '.join(_DTYPES)}")
    return getattr(torch, _DTYPES[setting])


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo / "physical_package_id").read_text().strip() + ":" + (topo / "core_id").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def configure_threads() -> int:
    """H3: intra-op threads = physical cores, unless set by the user (``OMP_NUM_THREADS``). Returns the count."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    n = physical_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def describe_compute(device: str | None = None, dtype_setting="auto") -> dict:
    """What a run on this machine computes in, for logs and ``llm-unlearn info``."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    weights = training_weights_dtype(dtype_setting, device)
    return {
        "compute_dtype": str(inference_dtype(dtype_setting, device)).replace("torch.", ""),
        "training": f"{str(weights).replace('torch.', '')} weights, mixed precision "
                    f"{resolve_mixed_precision('auto', device, dtype_setting)}",
        "cpu_bf16_native": cpu_bf16_native(),
        "threads": torch.get_num_threads(),
    }
