"""Saved prompt states: the keys/values of sequences a model decoded before, kept for prompts that
begin the same way (issue 21).

A model's context holds one sequence. The agent's next step and the next turn of the same
conversation extend it, so they encode only what is new. But where several conversations take
turns (people chatting with one app), each turn would overwrite the last conversation's
context, and that conversation's next turn would encode its whole history again (~1 s per 1,000
tokens on 2 cores). So before a context is cut back, what would be lost is saved here, and a
prompt that shares more with a saved state than with the context starts from that state.

Bounded by bytes, least recently used first out; a state is only ever reused for the same
tokens it was computed from, so a changed template or tool list simply shares fewer tokens, and
a reloaded model or another adapter has a store of its own (one per loaded model).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

DEFAULT_CAPACITY_MB = 256  # ~20 conversations of ~1,000 tokens for Qwen2.5-0.5B (12 KB a token in f16)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


@dataclass(frozen=True)
class StatesReport:
    entries: int
    bytes: int
    capacity_bytes: int
    saved: int  # states saved since the model loaded
    restored: int  # prompts that started from a saved state
    tokens_restored: int  # prompt tokens those did not encode again
    evicted: int

    def line(self) -> str:
        """In words, for the app's status line."""
        mb = lambda n: f"{n / 2**20:.0f} MB"  # noqa: E731
        return (f"{self.entries} saved prompt states ({mb(self.bytes)} of {mb(self.capacity_bytes)}), "
                f"{self.restored} reused ({self.tokens_restored:,} tokens not encoded again)")


def store_of(megabytes: float) -> PromptStates | None:
    """A store of `megabytes` for a backend, or None for 0 (only the context itself is reused)."""
    if not megabytes >= 0:  # also NaN
        raise ValueError(f"the memory for saved prompt states must be >= 0 MB, not {megabytes}")
    return PromptStates(megabytes) if megabytes > 0 else None


class PromptStates:
    """An LRU store of (tokens, state) bounded by the states' bytes. Thread-safe; the backend
    decides what a state is (llama.cpp: a sequence's bytes; transformers: a cache object)."""

    def __init__(self, capacity_mb: float = DEFAULT_CAPACITY_MB, min_tokens: int = 64):
        self.capacity_bytes = int(capacity_mb * 2**20)
        self.min_tokens = min_tokens  # fewer tokens are cheaper to encode again than to keep
        self._items: OrderedDict[tuple[int, ...], tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._saved = self._restored = self._tokens_restored = self._evicted = 0

    def worth_saving(self, held: int, kept: int) -> bool:
        """Whether a context of `held` tokens, about to be cut back to `kept`, should be saved first."""
        return self.capacity_bytes > 0 and held - kept >= self.min_tokens

    def reuse(self, held: Sequence[int], tokens: Sequence[int], shared: int,
              snapshot: Callable[[], tuple[Any, int]] | None) -> tuple[Any, tuple[int, ...], int] | None:
        """A backend's prefill asks here before it encodes `tokens` into a context that holds `held`,
        of which it would keep `shared`. Where that cuts much of the context off, the context is
        saved first (`snapshot()`: its state and bytes; None: it cannot be saved). Then the saved
        state sharing the longest prefix with `tokens`, where it shares at least `min_tokens` more
        than the context: (that state, its tokens, the length shared); else None."""
        if snapshot is not None and self.worth_saving(len(held), shared) and not self.holds(held):
            self.save(held, *snapshot())  # first: saving may evict what best() would pick
        key, length = self.best(tokens)
        if key is None or length < shared + self.min_tokens:
            return None
        return self.get(key, length), key, length

    def best(self, tokens: Sequence[int]) -> tuple[tuple[int, ...] | None, int]:
        """The saved tokens sharing the longest prefix with `tokens`, and that length (None, 0: none)."""
        with self._lock:
            found, length = None, 0
            for key in self._items:
                n = common_prefix(key, tokens)
                if n > length:
                    found, length = key, n
            return found, length

    def get(self, key: tuple[int, ...], reused: int) -> Any:
        """The state saved for `key` (now the most recently used); `reused`: the prompt tokens it spares."""
        with self._lock:
            self._items.move_to_end(key)
            self._restored += 1
            self._tokens_restored += reused
            return self._items[key][0]

    def save(self, tokens: Sequence[int], state: Any, nbytes: int) -> None:
        """Keep `state` (the keys/values of `tokens`); drop what it makes redundant and the least
        recently used beyond the capacity. A state larger than the whole store is not kept."""
        key = tuple(int(t) for t in tokens)
        with self._lock:
            if nbytes > self.capacity_bytes:
                return
            for other in [k for k in self._items if len(k) <= len(key) and key[: len(k)] == k]:
                del self._items[other]  # a prefix of the new one: the new one serves every prompt it did
            self._items[key] = (state, nbytes)
            self._saved += 1
            while sum(b for _, b in self._items.values()) > self.capacity_bytes:
                self._items.popitem(last=False)
                self._evicted += 1

    def holds(self, tokens: Sequence[int]) -> bool:
        """Whether `tokens` (or a longer sequence that begins with them) is saved already."""
        key = tuple(int(t) for t in tokens)
        with self._lock:
            return any(k[: len(key)] == key for k in self._items if len(k) >= len(key))

    def report(self) -> StatesReport:
        with self._lock:
            return StatesReport(len(self._items), sum(b for _, b in self._items.values()), self.capacity_bytes,
                                self._saved, self._restored, self._tokens_restored, self._evicted)
