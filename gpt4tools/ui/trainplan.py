"""The Train tab's numbers: how big a run will be before it starts (records, sequences, tokens,
steps, minutes), when it will end once it runs (from the steps its metrics.jsonl logged), and the
adapters that finished (their train_config.json).

The size comes from the trainer's own data functions (read_records, choose_groups: the same
episodes it will train on) and its step formula; tokens are estimated from characters, and the
minutes from the tokens/s of an earlier finished run on this machine (train_config.json's
train_tokens / train_seconds). Both are estimates and the tab says so.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gpt4tools import paths
from gpt4tools.records import parse_lines

# Characters per trained token, measured: adapters/default's 791 sequences of data/train.jsonl held
# 2.70 M characters and trained 609,720 tokens (Qwen2.5 tokenizer). The builder assumes 3; this is ours.
CHARS_PER_TOKEN = 4.4
ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "train_config.json"
ADAPTER_COLUMNS = ["Adapter", "Base model", "Records", "Steps", "Minutes", "Tokens/s", "Data sha256", "Finished",
                   "Command"]


@dataclass(frozen=True)
class Prior:
    """Training speed of an earlier finished run."""

    tokens_per_s: float
    source: str  # where it was measured, for the tab to say


@dataclass(frozen=True)
class SizeEstimate:
    records: int
    sequences: int  # episodes merged into one sequence each (TrainConfig.merge_turns)
    tokens_per_epoch: int
    steps: int
    tokens_to_train: int
    prior: Prior | None

    @property
    def minutes(self) -> float | None:
        return self.tokens_to_train / self.prior.tokens_per_s / 60 if self.prior else None

    def text(self) -> str:
        # "≈", not "~": Markdown strikes through the text between two tildes.
        speed = (f"**≈{duration(self.minutes * 60)}** at {self.prior.tokens_per_s:.0f} tokens/s (the speed of "
                 f"{self.prior.source}; a prior, replaced by the measured speed after the first steps)"
                 if self.minutes is not None else "no finished run to time it by yet")
        return (f"**Estimate:** {self.records:,} records in {self.sequences:,} sequences, "
                f"≈{self.tokens_per_epoch:,} tokens per epoch ({CHARS_PER_TOKEN} characters per token), "
                f"**{self.steps:,} steps**, ≈{self.tokens_to_train:,} tokens to train: {speed}.")


def duration(seconds: float) -> str:
    """A rounded duration: a few-step run is seconds, a real one minutes or hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _sequence_chars(records: list[dict], group: list[int]) -> int:
    """An episode's sequence is its last turn's prompt (which holds the earlier turns) and output."""
    last = records[group[-1]]
    return len(last["instruction"]) + len(last.get("input") or "") + len(last["output"])


def estimate(cfg, prior: Prior | None) -> SizeEstimate:
    """The size of a `train` run with TrainConfig `cfg`. Raises ValueError when no record is usable."""
    from gpt4tools.train import choose_groups, read_records

    records, _ = read_records(list(cfg.data))
    groups = choose_groups(records, cfg)
    if not groups:
        raise ValueError(f"no usable training records in {' '.join(cfg.data)}")
    tokens = [max(1, round(_sequence_chars(records, g) / CHARS_PER_TOKEN)) for g in groups]
    # The trainer's step count (train._prepare), on one process.
    steps_per_epoch = max(1, math.ceil(len(groups) / cfg.micro_batch_size) // cfg.gradient_accumulation)
    steps = cfg.max_steps or max(1, int(steps_per_epoch * cfg.epochs))
    per_sequence = sum(tokens) / len(tokens)
    to_train = round(steps * cfg.gradient_accumulation * cfg.micro_batch_size * per_sequence)
    return SizeEstimate(sum(len(g) for g in groups), len(groups), sum(tokens), steps, to_train, prior)


# -- finished runs ---------------------------------------------------------------------------
def read_config(folder: Path) -> dict | None:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def finished(folder: Path) -> bool:
    """A run that saved its final adapter: train_config.json then has its time (train._save_adapter)."""
    config = read_config(folder)
    return bool(config and config.get("train_seconds") and (folder / ADAPTER_FILE).is_file())


def committed_adapters() -> list[Path]:
    return sorted(p.parent for p in (paths.REPO / "adapters").glob(f"*/{ADAPTER_FILE}"))


def trained_adapters(train_root: Path) -> list[Path]:
    """Finished training runs under `train_root` (runs/train), newest first."""
    found = [p.parent for p in train_root.glob(f"*/{ADAPTER_FILE}") if finished(p.parent)]
    return sorted(found, key=lambda p: (p / ADAPTER_FILE).stat().st_mtime, reverse=True)


def speed_prior(base_model: str, train_root: Path) -> Prior | None:
    """tokens/s of the newest finished run of the same base model here, else of a committed adapter
    of it, else of any committed adapter (the default first)."""
    def prior(folder: Path, config: dict) -> Prior | None:
        seconds, tokens = config.get("train_seconds"), config.get("train_tokens")
        if not seconds or not tokens:
            return None
        return Prior(tokens / seconds, f"{_label(folder)} ({config.get('base_model')}, "
                                       f"{tokens:,} tokens in {duration(seconds)})")

    candidates = trained_adapters(train_root) + committed_adapters()
    configs = [(f, c) for f in candidates if (c := read_config(f))]
    same_model = [(f, c) for f, c in configs if c.get("base_model") == base_model]
    default_first = sorted(configs, key=lambda fc: fc[0].name != "default")
    for folder, config in same_model + default_first:
        found = prior(folder, config)
        if found:
            return found
    return None


def _label(folder: Path) -> str:
    return str(folder.relative_to(paths.REPO)) if folder.is_relative_to(paths.REPO) else str(folder)


def adapters_table(train_root: Path) -> pd.DataFrame:
    """Finished adapters (local runs newest first, then committed): command, data checksum, time."""
    rows = []
    for folder in trained_adapters(train_root) + committed_adapters():
        c = read_config(folder) or {}
        seconds, tokens = c.get("train_seconds"), c.get("train_tokens")
        total = training_seconds(folder, seconds)
        rows.append({"Adapter": _label(folder), "Base model": c.get("base_model"), "Records": c.get("records"),
                     "Steps": c.get("total_steps"), "Minutes": round(total / 60, 1) if total else None,
                     "Tokens/s": round(tokens / seconds) if seconds and tokens else None,  # of its last start
                     "Data sha256": (c.get("data_sha256") or "")[:16],
                     "Finished": time.strftime("%Y-%m-%d %H:%M",
                                               time.localtime((folder / ADAPTER_FILE).stat().st_mtime)),
                     "Command": c.get("command") or ""})
    return pd.DataFrame(rows, columns=ADAPTER_COLUMNS)


def read_metrics(folder: Path) -> list[dict]:
    """metrics.jsonl's lines (a half-written or foreign line is skipped)."""
    try:
        text = (folder / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return []
    return [event for event in parse_lines(text).values() if isinstance(event, dict)]


def training_seconds(folder: Path, last_start_s: float | None) -> float | None:
    """A run's time over all its starts: train_config.json's train_seconds times only the last start
    (a resumed run's); the earlier starts add theirs, up to their last logged step (metrics.jsonl)."""
    if not last_start_s:
        return None
    return last_start_s + sum(lines[-1]["elapsed_s"] for lines in starts(read_metrics(folder))[:-1])


# -- a running job ---------------------------------------------------------------------------
def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def starts(events: list[dict]) -> list[list[dict]]:
    """The metric lines of each start of a run, in order: a resumed run restarts elapsed_s while its
    steps go on (and a run resumed from an older checkpoint repeats steps)."""
    lines = [e for e in events if _number(e.get("step")) and _number(e.get("elapsed_s"))]
    found: list[list[dict]] = []
    for i, line in enumerate(lines):
        if i == 0 or line["elapsed_s"] < lines[i - 1]["elapsed_s"] or line["step"] <= lines[i - 1]["step"]:
            found.append([])
        found[-1].append(line)
    return found


def _this_run(events: list[dict]) -> list[dict]:
    """The metric lines of the latest start."""
    return (starts(events) or [[]])[-1]


def curves_figure(events: list[dict]):
    """Loss and tokens/s per logged step, a dotted line where a resumed start begins; None before the
    first logged step. Drawn here, not by gr.LinePlot: its Vega charts compile expressions with
    eval in the browser, which the app's Content-Security-Policy forbids, so they stayed blank."""
    runs = starts(events)
    if not runs:
        return None
    from matplotlib.figure import Figure  # no pyplot: no global state in a server

    fig = Figure(figsize=(9, 2.4), layout="constrained")
    for ax, key, title in zip(fig.subplots(1, 2), ("loss", "tokens_per_s"), ("Training loss", "Tokens/s")):
        points = [(e["step"], e[key]) for lines in runs for e in lines if _number(e.get(key))]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3)
        for lines in runs[1:]:
            ax.axvline(lines[0]["step"] - 0.5, linestyle=":", color="grey")
        ax.set_title(title + (" (dotted: resumed)" if len(runs) > 1 else ""), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return fig


def stop_grace_s(events: list[dict]) -> float:
    """How long Stop waits for a training run to save before it kills it. The trainer saves when the
    optimizer step in progress ends (train._stop_on_sigterm), so the wait covers twice the longest
    step measured in this run plus the checkpoint's write; a kill would lose every step since the
    last --save-steps checkpoint. Before any logged step the run is loading (SIGTERM ends it at once)
    or in its first step, whose time is unknown yet."""
    lines = _this_run(events)
    if not lines:
        return 120.0
    times = [lines[0]["elapsed_s"]]  # its first logged steps (one, by default): an upper bound is safe here
    times += [(b["elapsed_s"] - a["elapsed_s"]) / max(1, b["step"] - a["step"]) for a, b in zip(lines, lines[1:])]
    return min(900.0, max(30.0, 2 * max(times) + 30))


# What a run that ended early keeps: the trainer saves a checkpoint when SIGTERM (Stop) asks it to end,
# and every --save-steps otherwise; Resume starts it again in its folder, from that checkpoint.
ENDED_EARLY = {
    "stopped": "⏹️ stopped with a checkpoint of its steps: choose it under Earlier runs and press Resume to continue",
    "failed": "💥 failed (see the log): Resume continues from its last checkpoint (saved every --save-steps steps)",
}


def eta_text(events: list[dict], running: bool, state: str = "") -> str:
    """Measured speed and the expected end, from metrics.jsonl lines ({"step", "total", "elapsed_s",
    "tokens_per_s"}); the time per step is measured between logged steps, so loading the model and
    the first step's warm-up do not count. `state` (the job's, once it ended) adds how to go on
    from a run that stopped or failed before its last step."""
    lines = _this_run(events)
    if not lines:
        if running:
            return "Waiting for the first logged step (metrics.jsonl)…"
        if state == "stopped":
            return "⏹️ stopped before its first logged step: Resume starts it from the beginning."
        return "💥 failed before its first logged step: the log says why." if state == "failed" else ""
    last = lines[-1]
    total = last.get("total") or last["step"]
    recent = [e["tokens_per_s"] for e in lines[-5:] if isinstance(e.get("tokens_per_s"), (int, float))]
    speed = f"{sum(recent) / len(recent):.0f} tokens/s (mean of the last {len(recent)} logged steps)" if recent else ""
    head = f"**Step {last['step']}/{total}** · {speed}"
    if not running:
        early = ENDED_EARLY.get(state)
        return f"{head}  \n{early}" if early and last["step"] < total else head
    if len(lines) < 2:
        return head + " · ETA after the next logged step"
    per_step = (last["elapsed_s"] - lines[0]["elapsed_s"]) / (last["step"] - lines[0]["step"])
    left = max(0.0, (total - last["step"]) * per_step)
    end = time.strftime("%H:%M", time.localtime(time.time() + left))
    return head + f" · {per_step:.1f} s/step · **ETA {left / 60:.1f} min** (about {end})"
