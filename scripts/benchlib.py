"""What the benchmark scripts share: timing a call the same way everywhere, naming the machine."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def time_calls(call: Callable[[], T], calls: int) -> tuple[T, float, list[float]]:
    """Run `call` once (that call loads the models: the first-call cost), then `calls` more
    times, timed. Returns (the first result, first-call seconds, the repeat times in seconds)."""
    t0 = time.perf_counter()
    first = call()
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return first, first_s, times


def cpu_model() -> str:
    """The CPU's model name, for the machine a figure was measured on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
