"""The Benchmark tab's earlier runs: the committed ones under docs/results/ and the local ones
under runs/bench*/, and which data file each scored (its run.json), so a new run is shown beside
the earlier runs on the same records without opening "Compare".

Only what the benchmarks wrote is read (scores.json, run.json); nothing is scored here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gpt4tools import paths

# The splits the repo ships, in the order a new user most likely wants them.
COMMITTED_SPLITS = ("data/val.jsonl", "data/test_unseen.jsonl", "data/test_invented.jsonl", "data/chat_eval.jsonl",
                    "data/conversations.jsonl")
CHART_RUNS = 6  # more bars per tool than this are unreadable


@dataclass(frozen=True)
class BenchRun:
    label: str  # "docs/val10_tuned" (committed) or "bench/<run folder>" (local)
    folder: Path
    data: Path | None  # the scored file, resolved; None when run.json does not say

    def report(self) -> dict | None:
        try:
            return json.loads((self.folder / "scores.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # a run being written, or a broken file: not shown
            return None


def resolve_data(value: str | Path | None) -> Path | None:
    """A data path as run.json or a form gives it (relative paths are relative to the repo), resolved."""
    if not value:
        return None
    path = Path(value)
    try:
        return (path if path.is_absolute() else paths.REPO / path).resolve()
    except (OSError, RuntimeError):
        return None


def _data_of(folder: Path) -> Path | None:
    try:
        settings = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return resolve_data(settings.get("data")) if isinstance(settings, dict) else None


def committed_runs() -> list[BenchRun]:
    root = paths.REPO / "docs" / "results"
    return [BenchRun(f"docs/{p.parent.name}", p.parent, _data_of(p.parent))
            for p in sorted(root.glob("*/scores.json"))]


def local_runs() -> list[BenchRun]:
    """runs/bench/*, runs/bench-chat/* and other runs/bench*/ folders (scripts write bench_<model>/), newest first."""
    found = [p for p in paths.runs_dir().glob("bench*/*/scores.json") if p.is_file()]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [BenchRun(f"{p.parent.parent.name}/{p.parent.name}", p.parent, _data_of(p.parent)) for p in found]


def all_runs() -> list[BenchRun]:
    """Local runs (newest first), then the committed ones."""
    return local_runs() + committed_runs()


def run_choices() -> list[tuple[str, str]]:
    return [(r.label, str(r.folder)) for r in all_runs()]


def runs_on(data: str | Path | None, exclude: Path | None = None) -> list[BenchRun]:
    """The runs that scored `data` (local first), without the run folder `exclude`."""
    target = resolve_data(data)
    if target is None:
        return []
    skip = exclude.resolve() if exclude else None
    return [r for r in all_runs() if r.data == target and r.folder.resolve() != skip]


def reports_of(runs: list[BenchRun]) -> dict[str, dict]:
    out = {}
    for run in runs:
        report = run.report()
        if report is not None:
            out[run.label] = report
    return out


def reports_of_folders(folders: list[str]) -> dict[str, dict]:
    """Reports of the folders the Compare list sent (labelled as in that list)."""
    labels = {str(r.folder): r for r in all_runs()}
    return reports_of([labels[f] for f in folders or [] if f in labels])


def default_data(choices: list[tuple[str, str]]) -> str | None:
    """The first committed split among the file choices (their values), so the tab starts ready to run."""
    values = {value for _, value in choices}
    for split in COMMITTED_SPLITS:
        path = str(paths.REPO / split)
        if path in values:
            return path
    return None


def data_label(data: str | Path | None) -> str:
    path = resolve_data(data)
    if path is None:
        return ""
    return str(path.relative_to(paths.REPO)) if path.is_relative_to(paths.REPO) else str(path)


def data_of_argv(argv: list[str]) -> str | None:
    """The --data value of a job's command line (Snapshot.argv)."""
    for i, word in enumerate(argv[:-1]):
        if word == "--data":
            return argv[i + 1]
    return None
