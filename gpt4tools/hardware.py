"""What this machine computes with: CPU features, devices, and the torch dtypes chosen for them.

Imports nothing from gpt4tools, and torch only inside the functions that need it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

# The dtype names a user may give (--dtype); "auto" picks one for the device (resolve_dtype).
DTYPES = ("auto", "fp32", "bf16", "fp16")
# Every dtype name understood, the long torch spellings included -> the torch attribute.
_TORCH_NAMES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
                "fp16": "float16", "float16": "float16"}


# GPT4TOOLS_CPU_ISA=avx2 makes gpt4tools choose as on a CPU without AVX-512 and AMX (fp32 torch, a q8_0
# GGUF, llama.cpp for the benchmark): scripts/avx2_only.sh measures that path on a newer CPU.
ISA_ENV = "GPT4TOOLS_CPU_ISA"
_NEWER_THAN_AVX2 = ("avx512", "amx", "avx_vnni")


@functools.cache
def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, read once; None where there is none (not Linux)."""
    try:
        text = open("/proc/cpuinfo", encoding="ascii", errors="ignore").read()
    except OSError:
        return None
    return flags_of(text, os.environ.get(ISA_ENV, ""))


def flags_of(cpuinfo: str, isa: str = "") -> set[str]:
    """The first CPU's flags in /proc/cpuinfo's text; with isa="avx2", those newer than AVX2 left out."""
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    isa = isa.strip().lower()
    if isa == "avx2":
        return {f for f in flags if not f.startswith(_NEWER_THAN_AVX2)}
    if isa:
        raise ValueError(f"{ISA_ENV}={isa!r}: the only value understood is avx2 (or leave it unset)")
    return flags


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX). Elsewhere (AVX2 only)
    torch emulates bf16, which measured 3x slower than fp32 here: auto picks fp32 there."""
    flags = _cpu_flags()
    if flags is None:  # not Linux: ask torch what it dispatches to
        import torch

        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Sapphire Rapids and later Xeons): torch's bf16 matmuls
    use them (a 705-token prefill measured 3.2x faster than llama.cpp there, scripts/bench_llm.py)."""
    return "amx_bf16" in (_cpu_flags() or set())


def named_dtype(name: str) -> Any:
    """The torch dtype of a name (fp32, bf16, fp16, or torch's float32, bfloat16, float16)."""
    import torch

    try:
        return getattr(torch, _TORCH_NAMES[name])
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use auto, fp32, bf16 or fp16") from None


def resolve_dtype(dtype: str, device: str) -> Any:
    """The torch dtype for an LLM: `dtype` by name, or for "auto" what runs best on `device`."""
    if dtype != "auto":
        return named_dtype(dtype)
    import torch

    # bf16 halves memory and is faster on CPUs with AVX-512 BF16 and on recent GPUs;
    # fp16 would overflow on CPU.
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def tool_dtype(device: str) -> Any:
    """The tools' torch dtype: half precision on CUDA (how SD-class models are meant to run there),
    float32 elsewhere: CPU half-precision kernels are slow or missing for several ops."""
    return named_dtype("fp16" if device.startswith("cuda") else "fp32")


def device_problem(device: str) -> str | None:
    """Why `device` cannot be used by torch on this machine, or None if it can."""
    if device == "cpu":
        return None
    if importlib.util.find_spec("torch") is None:
        return None  # reported as a missing package instead
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"device {device!r} was requested but torch sees no CUDA GPU (use _cpu in --load)"
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return f"device {device!r} does not exist (torch sees {torch.cuda.device_count()} GPU(s))"
        return None
    if device == "mps":
        return None if torch.backends.mps.is_available() else "device 'mps' was requested but is not available"
    return f"unknown device {device!r} (use cpu, cuda, cuda:N or mps)"
