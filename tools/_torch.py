"""Shared plumbing for the torch-backed tools (diffusers / transformers checkpoints).

Weights always come from `checkpoints/<name>/` (a `from_pretrained`-able folder that
`python -m gpt4tools weights fetch NAME` fills); nothing here ever reaches for a hub. The dtype
(hardware.tool_dtype) and whether a device exists (hardware.device_problem) are gpt4tools.hardware.
"""

from __future__ import annotations

from typing import Any

from gpt4tools import weights
from gpt4tools.hardware import device_problem
from gpt4tools.model_cache import CACHE
from gpt4tools.tool import Availability, Tool


def seeded(seed: int) -> Any:
    """A CPU generator: diffusers draws the noise on it and moves it to the model's device,
    so a seed gives the same image on CPU and GPU."""
    import torch

    return torch.Generator(device="cpu").manual_seed(seed)


def mb(fp32_mb: int, device: str) -> int:
    """Rough resident size of a model on `device` (half precision on CUDA halves it)."""
    return fp32_mb // 2 if device.startswith("cuda") else fp32_mb


def cached(name: str, device: str, loader: Any, fp32_mb: int) -> Any:
    """Load `name` for `device` once per process, shared by every tool that uses it."""
    return CACHE.get(f"{name}@{device}", loader, mb(fp32_mb, device))


def checkpoint(name: str) -> str:
    """The local folder of fetched weights `name`, as a string for `from_pretrained`."""
    return str(weights.path(name))


class TorchTool(Tool):
    """A tool backed by torch weights: availability also checks that the device exists."""

    packages = ("torch",)

    def availability(self) -> Availability:
        base = super().availability()
        if not base.ok:
            return base
        problem = device_problem(self.device)
        return Availability(False, problem) if problem else base
