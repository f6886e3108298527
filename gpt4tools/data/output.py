"""Files the builder writes: a resumable work file, final files written atomically,
a progress log the app's Data tab tails, and stats.

Resuming: records are appended to `<split>-<settings hash>.partial.jsonl` in batches (write, flush,
fsync). A kill can only cut the last line; on restart that partial line is truncated
away and the ids already written are not appended again. The final `<name>.jsonl` (and
`--json` list), the records as this run made them, is written to a temporary file and
renamed into place.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

from gpt4tools.records import append_jsonl, atomic_write, cut_partial_line, read_jsonl

NO_TOOL = "(no tool: final answer or negative)"  # how stats name a record without a tool call


class RecordWriter:
    """Append-only JSONL of finished records that survives kill -9 at any point."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, dict] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            self._recover()

    def _recover(self) -> None:
        cut_partial_line(self.path)  # everything after the last newline is a cut line
        # A malformed line cannot remain after the cut, unless the disk lied: its id is redone.
        for rec in read_jsonl(self.path, allow_list=False).values():
            self.done[rec["id"]] = rec

    def write(self, records: Iterable[dict]) -> int:
        """Append the records not yet written; returns how many were new."""
        fresh = [r for r in records if r["id"] not in self.done]
        if not fresh:
            return 0
        append_jsonl(self.path, fresh)
        for r in fresh:
            self.done[r["id"]] = r
        return len(fresh)


class Progress:
    """`{"done": i, "total": n, "stage": ...}` per line, flushed at once, to the work dir's
    progress.jsonl and, when the app runs the build as a job, to $GPT4TOOLS_JOB_EVENTS."""

    def __init__(self, path: Path | None, split: str, echo: Callable[[str], None] | None = None):
        from gpt4tools.progress import reporter

        self.path, self.split, self.echo = path, split, echo
        self.reporter = reporter()
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and done not in (0, total) and now - self._last < 0.5:
            return  # at most two lines a second, plus every stage's start and end
        self._last = now
        line = {"done": done, "total": total, "stage": stage, "split": self.split, "time": round(time.time(), 1)}
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
                f.flush()
        if self.reporter:
            self.reporter.progress(done, total, stage=stage, split=self.split)
        if self.echo is not None:
            self.echo(f"[{self.split}] {stage}: {done}/{total}")


class LiveCounts:
    """`<out>/live.json`: a build's counts so far, for the app's Data tab while the build runs
    (stats.json comes only at the end, and a teacher run can take hours). One entry per split:
    {"time", "split": the current one, "splits": {split: {"records_so_far", "images_used",
    "by_kind", "by_tool", "by_teacher", "dropped", "done"}}}. Written atomically (the app reads it
    meanwhile), at most every `every` seconds; the build deletes it once stats.json is written, so
    what it leaves is the last view of a build that did not end. Nothing here touches a record."""

    NAME = "live.json"
    GROUPS = ("by_kind", "by_tool", "by_teacher")

    def __init__(self, out: Path, every: float = 2.0):
        self.path, self.every = out / self.NAME, every
        self.splits: dict[str, dict] = {}
        self._last = float("-inf")
        self.begin("")

    def begin(self, split: str) -> None:
        """Start counting a split from zero (a resumed build counts again from its cached replies)."""
        self.split, self.records = split, 0
        self.counts = {g: Counter() for g in self.GROUPS}

    def add(self, records: Iterable[dict]) -> None:
        for r in records:
            self.records += 1
            self.counts["by_kind"][r["kind"]] += 1
            self.counts["by_tool"][r["tool"] or NO_TOOL] += 1
            self.counts["by_teacher"][r["teacher"]] += 1

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every

    def write(self, images_used: int, dropped: Counter, done: bool = False) -> None:
        """Write the snapshot now (callers ask `due()` first, except at a stage's end)."""
        self._last = time.monotonic()
        self.splits[self.split] = {
            "records_so_far": self.records, "images_used": images_used,
            "by_kind": dict(self.counts["by_kind"].most_common()),  # ordered as split_stats orders them
            "by_tool": dict(sorted(self.counts["by_tool"].items())),
            "by_teacher": dict(self.counts["by_teacher"].most_common()),
            "dropped": dict(sorted(dropped.items())), "done": done}
        blob = {"time": round(time.time(), 1), "split": self.split, "splits": self.splits}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(blob, ensure_ascii=False) + "\n")

    def end(self, split: str, records: Sequence[dict], images_used: int, dropped: Counter) -> None:
        """A split's final counts: the records it keeps (after selection, negatives and the cutoff)."""
        self.begin(split)
        self.add(records)
        self.write(images_used, dropped, done=True)

    def close(self) -> None:
        """stats.json is written: it alone tells the counts from now on."""
        self.path.unlink(missing_ok=True)


def percentiles(values: Sequence[int], qs: Sequence[int] = (5, 50, 95, 100)) -> dict[str, int]:
    if not values:
        return {}
    ordered = sorted(values)
    return {f"p{q}": ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] for q in qs}


def split_stats(records: Sequence[dict], dropped: Counter, extra: dict,
                count_tokens: Callable[[str], int] | None = None) -> dict:
    """Counts per kind, tool, origin and teacher; dropped per reason; lengths in chars (and tokens)."""
    lengths = [len(r["instruction"]) + len(r["output"]) for r in records]
    stats = {
        "records": len(records),
        "by_kind": dict(Counter(r["kind"] for r in records).most_common()),
        "by_tool": dict(sorted(Counter(r["tool"] or NO_TOOL for r in records).items())),
        "by_origin": dict(Counter(r["source"].split(":", 1)[0] for r in records).most_common()),
        "by_teacher": dict(Counter(r["teacher"] for r in records).most_common()),
        "by_template": dict(Counter(r["template"] for r in records).most_common()),
        "chars": {"prompt+output": percentiles(lengths), "output": percentiles([len(r["output"]) for r in records])},
        "dropped": dict(sorted(dropped.items())),
        **extra,
    }
    if count_tokens is not None:
        stats["tokens"] = {
            "prompt+output": percentiles([count_tokens(r["instruction"] + r["output"]) for r in records])}
    return stats


def _table(title: str, counts: dict) -> list[str]:
    rows = [f"### {title}", "", "| | count |", "|---|---:|"]
    rows += [f"| {k} | {v} |" for k, v in counts.items()]
    return rows + [""]


def stats_markdown(all_stats: dict) -> str:
    out = ["# Dataset statistics", "",
           "Generated by `python -m gpt4tools data build`; see stats.json for the same numbers.", ""]
    for name, st in all_stats.items():
        out += [f"## {name}: {st['records']} records", ""]
        if st.get("file"):
            out += [f"File `{st['file']}` ({st.get('bytes', 0):,} bytes, sha256 `{st.get('sha256', '')}`).", ""]
        for key in ("by_kind", "by_origin", "by_teacher", "by_template", "by_tool"):
            out += _table(key.replace("by_", "by "), st[key])
        lengths = st["chars"]["prompt+output"]
        out += ["### lengths", "", f"- characters (prompt + output): {lengths}"]
        if "tokens" in st:
            out.append(f"- tokens (prompt + output): {st['tokens']['prompt+output']}")
        out += [""] + _table("dropped (reason)", st["dropped"] or {"(none)": 0})
    return "\n".join(out)
