"""Loaded models, shared by every tool and session: each loads lazily, once, and the
least recently used are dropped when the memory budget is exceeded.

Tools ask for a model by key (usually the weight name plus the device) and pass a loader;
two tools that use the same weights (say, detection and cropping) share one copy.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    value: Any
    memory_mb: int
    last_used: float


class ModelCache:
    def __init__(self, budget_mb: int | None = None) -> None:
        env = os.environ.get("GPT4TOOLS_MEMORY_BUDGET_MB")
        self.budget_mb = budget_mb if budget_mb is not None else int(env) if env else 8000
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, key: str, loader: Callable[[], Any], memory_mb: int = 100) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.last_used = time.monotonic()
                self._entries.move_to_end(key)
                return entry.value
            key_lock = self._loading.setdefault(key, threading.Lock())
        # Load outside the global lock so one slow model does not block the others,
        # but only once per key even if several sessions ask at the same time.
        with key_lock:
            with self._lock:
                if key in self._entries:
                    return self.get(key, loader, memory_mb)
            t0 = time.perf_counter()
            value = loader()
            log.info("loaded %s in %.1f s", key, time.perf_counter() - t0)
            with self._lock:
                self._entries[key] = _Entry(value, memory_mb, time.monotonic())
                self._evict(keep=key)
            return value

    def _evict(self, keep: str) -> None:
        while self.used_mb() > self.budget_mb and len(self._entries) > 1:
            oldest = next(k for k in self._entries if k != keep)
            log.info("unloading %s (memory budget %d MB)", oldest, self.budget_mb)
            del self._entries[oldest]
        gc.collect()

    def unload(self, prefix: str = "") -> list[str]:
        with self._lock:
            gone = [k for k in self._entries if k.startswith(prefix)]
            for k in gone:
                del self._entries[k]
        gc.collect()
        return gone

    def used_mb(self) -> int:
        return sum(e.memory_mb for e in self._entries.values())

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)


CACHE = ModelCache()  # the process-wide cache tools use
