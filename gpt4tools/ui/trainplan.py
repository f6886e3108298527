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
        speed = (f"**~{self.minutes:.0f} min** at {self.prior.tokens_per_s:.0f} tokens/s (the speed of "
                 f"{self.prior.source}; a prior, replaced by the measured speed after the first steps)"
                 if self.prior else "no finished run to time it by yet")
        return (f"**Estimate:** {self.records:,} records in {self.sequences:,} sequences, "
                f"~{self.tokens_per_epoch:,} tokens per epoch (≈{CHARS_PER_TOKEN} characters per token), "
                f"**{self.steps:,} steps**, ~{self.tokens_to_train:,} tokens to train: {speed}.")


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
                                       f"{tokens:,} tokens in {seconds / 60:.0f} min)")

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
        rows.append({"Adapter": _label(folder), "Base model": c.get("base_model"), "Records": c.get("records"),
                     "Steps": c.get("total_steps"), "Minutes": round(seconds / 60, 1) if seconds else None,
                     "Tokens/s": round(tokens / seconds) if seconds and tokens else None,
                     "Data sha256": (c.get("data_sha256") or "")[:16],
                     "Finished": time.strftime("%Y-%m-%d %H:%M",
                                               time.localtime((folder / ADAPTER_FILE).stat().st_mtime)),
                     "Command": c.get("command") or ""})
    return pd.DataFrame(rows, columns=ADAPTER_COLUMNS)


# -- a running job ---------------------------------------------------------------------------
def _this_run(events: list[dict]) -> list[dict]:
    """The metric lines of the latest start: a resumed run restarts elapsed_s while steps go on."""
    lines = [e for e in events if isinstance(e.get("step"), (int, float)) and isinstance(e.get("elapsed_s"),
                                                                                        (int, float))]
    start = 0
    for i in range(1, len(lines)):
        if lines[i]["elapsed_s"] < lines[i - 1]["elapsed_s"] or lines[i]["step"] <= lines[i - 1]["step"]:
            start = i
    return lines[start:]


def eta_text(events: list[dict], running: bool) -> str:
    """Measured speed and the expected end, from metrics.jsonl lines ({"step", "total", "elapsed_s",
    "tokens_per_s"}); the time per step is measured between logged steps, so loading the model and
    the first step's warm-up do not count."""
    lines = _this_run(events)
    if not lines:
        return "Waiting for the first logged step (metrics.jsonl)…" if running else ""
    last = lines[-1]
    total = last.get("total") or last["step"]
    recent = [e["tokens_per_s"] for e in lines[-5:] if isinstance(e.get("tokens_per_s"), (int, float))]
    speed = f"{sum(recent) / len(recent):.0f} tokens/s (mean of the last {len(recent)} logged steps)" if recent else ""
    head = f"**Step {last['step']}/{total}** · {speed}"
    if not running:
        return head
    if len(lines) < 2:
        return head + " · ETA after the next logged step"
    per_step = (last["elapsed_s"] - lines[0]["elapsed_s"]) / (last["step"] - lines[0]["step"])
    left = max(0.0, (total - last["step"]) * per_step)
    end = time.strftime("%H:%M", time.localtime(time.time() + left))
    return head + f" · {per_step:.1f} s/step · **ETA {left / 60:.1f} min** (about {end})"
