"""Progress events from a long command (bench, data, train) to whoever started it.

A job runner (the web app's, `gpt4tools.ui.jobs`) names a JSON-lines file in
`$GPT4TOOLS_JOB_EVENTS`; the command appends one event per line through `reporter()`, which
does nothing when the command runs in a terminal. This module is the command's side only,
so pipelines report progress without knowing anything of the UI.

Event lines are plain objects. A line with "total" and "done" (or "step") is progress;
its numeric fields are metrics (a loss curve is the "loss" of successive lines).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

EVENTS_ENV = "GPT4TOOLS_JOB_EVENTS"


class Reporter:
    """Appends event lines to the file named by $GPT4TOOLS_JOB_EVENTS (no-op without it)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None

    def __bool__(self) -> bool:
        return self.path is not None

    def write(self, **event) -> None:
        if self.path is None:
            return
        event.setdefault("time", round(time.time(), 3))
        with self.path.open("a", encoding="utf-8") as f:  # one short append per event: safe to tail
            f.write(json.dumps(event, ensure_ascii=False) + "\n")

    def progress(self, done: int, total: int, **extra) -> None:
        self.write(done=done, total=total, **extra)


def reporter() -> Reporter:
    return Reporter(os.environ.get(EVENTS_ENV))


def progress_callback() -> Callable[[int, int], None] | None:
    """A `(done, total)` callback for `run_bench(progress_callback=...)`, or None outside a job."""
    r = reporter()
    return r.progress if r else None
