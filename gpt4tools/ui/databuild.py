"""The Data tab's view of a build: what `data build` wrote into its output folder (stats.json, the
record files; see gpt4tools/data/output.py), as tables of counts and drop reasons, a verdict (a
build that kept no record failed, whatever its exit code), and one record at a time with its
prompt folded and its ReAct output highlighted. While a build runs, the same tables come from its
live.json (output.LiveCounts), the counts so far; stats.json wins once it exists.

Only the builder's files are read; nothing is counted or filtered again here.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path

import pandas as pd

from gpt4tools import paths, react

GROUPS = ("by_kind", "by_tool", "by_teacher", "by_origin")  # the stats.json counts the tab shows
COUNT_COLUMNS = ["Split", "By", "Value", "Records"]
DROP_COLUMNS = ["Split", "Reason", "Dropped"]
LIVE_FILE = "live.json"  # output.LiveCounts.NAME (not imported: the app need not load the builder)
LIVE_MAX_BYTES = 1 << 20  # a snapshot is a few kB; anything larger is not one, and is not read
# ReAct line starts, longest first so "Action Input:" is not read as "Action:".
_MARKERS = sorted((react.THOUGHT_LABEL, react.ACTION_INPUT, react.ACTION, react.OBSERVATION,
                   f"{react.AI_PREFIX}:", f"{react.HUMAN_PREFIX}:"), key=len, reverse=True)
_MARKER_RE = re.compile(r"^(" + "|".join(re.escape(m) for m in _MARKERS) + r")", re.MULTILINE)


def committed_folder() -> Path:
    return paths.REPO / "data"


def build_folders(runs_root: Path) -> list[tuple[str, str]]:
    """Output folders that hold a stats.json: the builds under `runs_root` (newest first), then data/."""
    found = sorted((p.parent for p in runs_root.glob("*/stats.json")), key=lambda p: p.stat().st_mtime, reverse=True)
    choices = [(f"{p.parent.name}/{p.name}", str(p)) for p in found]
    if (committed_folder() / "stats.json").is_file():
        choices.append(("data (committed)", str(committed_folder())))
    return choices


def load_stats(folder: str | Path | None) -> dict[str, dict]:
    """stats.json of a build folder: {split: stats}; {} when there is none (yet) or it is unreadable."""
    if not folder:
        return {}
    try:
        stats = json.loads((Path(folder) / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in stats.items() if isinstance(v, dict) and "records" in v} if isinstance(stats, dict) else {}


def _counts(value) -> dict[str, int]:
    """A {name: count} map as the builder writes it; entries of any other shape are left out."""
    if not isinstance(value, dict):
        return {}
    return {str(k): n for k, n in value.items() if isinstance(n, int) and not isinstance(n, bool)}


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _live_split(value) -> dict | None:
    if not isinstance(value, dict) or _count(value.get("records_so_far")) is None:
        return None
    return {"records_so_far": value["records_so_far"], "images_used": _count(value.get("images_used")) or 0,
            **{g: _counts(value.get(g)) for g in ("by_kind", "by_tool", "by_teacher", "dropped")},
            "done": value.get("done") is True}


def load_live(folder: str | Path | None) -> dict | None:
    """A build's live.json, checked field by field: {"time", "split", "splits": {split: counts}}, or
    None when there is none, or it is unreadable or of another shape. The builder rewrites it while
    the app reads (atomically, but a reader must still never raise on what it finds)."""
    if not folder:
        return None
    path = Path(folder) / LIVE_FILE
    try:
        if path.stat().st_size > LIVE_MAX_BYTES:
            return None
        blob = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(blob, dict) or not isinstance(blob.get("splits"), dict):
        return None
    splits = {str(k): v for k, v in ((k, _live_split(v)) for k, v in blob["splits"].items()) if v}
    if not splits:
        return None
    stamp, current = blob.get("time"), blob.get("split")
    # A clock reading the view can print (NaN, inf or 1e300 would make time.localtime raise).
    usable_time = isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and 0 <= stamp < 1e11
    return {"time": stamp if usable_time else None,
            "split": current if isinstance(current, str) and current in splits else next(reversed(splits)),
            "splits": splits}


def live_summary(live: dict, state: str = "running") -> str:
    """A headline for the current split's counts so far, then one line per split."""
    st = live["splits"][live["split"]]
    label = "⏳ running" if state == "running" else f"The build ended ({state}) before its stats.json; its last counts"
    head = (f"{label}: {st['records_so_far']} records {'kept' if st['done'] else 'so far'} from "
            f"{st['images_used']} images ({live['split']})")
    reason = main_drop_reason(live["splits"])
    head += f"; top drop reason: {reason}" if reason else "; nothing dropped yet"
    if live["time"] is not None:
        head += f" · as of {time.strftime('%H:%M:%S', time.localtime(live['time']))}"
    lines = []
    for split, s in live["splits"].items():
        kept = "records kept" if s["done"] else "records so far"
        teacher = ", ".join(f"{k} {v}" for k, v in s["by_teacher"].items()) or "none"
        lines.append(f"- **{split}**{' (done)' if s['done'] else ''}: {s['records_so_far']} {kept}, "
                     f"{sum(s['dropped'].values())} dropped; teacher: {teacher}")
    return head + "\n\n" + "\n".join(lines)


def live_views(live: dict, state: str = "running") -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """(summary, counts, drop reasons) of a live snapshot, in the finished view's tables."""
    return live_summary(live, state), counts_table(live["splits"]), drops_table(live["splits"])


def counts_table(stats: dict[str, dict]) -> pd.DataFrame:
    rows = [{"Split": split, "By": group.removeprefix("by_"), "Value": value, "Records": n}
            for split, st in stats.items() for group in GROUPS for value, n in (st.get(group) or {}).items()]
    return pd.DataFrame(rows, columns=COUNT_COLUMNS)


def drops_table(stats: dict[str, dict]) -> pd.DataFrame:
    """Drop reasons, the largest first within each split."""
    rows = [{"Split": split, "Reason": reason, "Dropped": n} for split, st in stats.items()
            for reason, n in sorted((st.get("dropped") or {}).items(), key=lambda kv: -kv[1])]
    return pd.DataFrame(rows, columns=DROP_COLUMNS)


def main_drop_reason(stats: dict[str, dict]) -> str | None:
    totals: dict[str, int] = {}
    for st in stats.values():
        for reason, n in (st.get("dropped") or {}).items():
            totals[reason] = totals.get(reason, 0) + n
    if not totals:
        return None
    reason = max(totals, key=totals.get)
    return f"{reason} ({totals[reason]} dropped)"


def summary(stats: dict[str, dict]) -> str:
    """One line per split: records kept, dropped, file and checksum."""
    lines = []
    for split, st in stats.items():
        dropped = sum((st.get("dropped") or {}).values())
        teacher = ", ".join(f"{k} {v}" for k, v in (st.get("by_teacher") or {}).items()) or "none"
        file = f" → `{st['file']}` (sha256 `{st.get('sha256', '')[:12]}`)" if st.get("file") else ""
        lines.append(f"- **{split}**: {st['records']} records kept, {dropped} dropped; teacher: {teacher}{file}")
    return "\n".join(lines)


def verdict(state: str, stats: dict[str, dict]) -> str | None:
    """A failure message for a build that ended without records, None otherwise. A build can exit
    0 and write empty files (an LLM teacher whose every reply was filtered): that is no success."""
    if state != "finished":
        return None
    if not stats:
        return "💥 The build finished but wrote no stats.json: no records came out (see the log)."
    if any(st["records"] for st in stats.values()):
        return None
    reason = main_drop_reason(stats)
    return "💥 The build wrote 0 records" + (f"; the main drop reason: {reason}." if reason else ".")


def record_files(folder: str | Path | None) -> list[tuple[str, str]]:
    """The record files a build's stats.json names (one per split), where they exist."""
    if not folder:
        return []
    names = dict.fromkeys(st["file"] for st in load_stats(folder).values() if isinstance(st.get("file"), str))
    files = [Path(folder) / name for name in names]
    return [(p.name, str(p)) for p in files if p.is_file() and p.resolve().parent == Path(folder).resolve()]


def read_record(path: str | Path, index: int) -> tuple[dict | None, int]:
    """(the record on line `index`, the number of lines); a record file is read line by line, never whole."""
    record, n = None, 0
    try:
        with (gzip.open if str(path).endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if n - 1 == index:
                    record = json.loads(line)
    except (OSError, ValueError):
        return None, n
    return (record if isinstance(record, dict) else None), n


def highlight_react(text: str) -> str:
    """Model output as Markdown, one line per line: each ReAct marker at a line start in bold, the
    rest literal (escaped: a teacher's reply is untrusted text)."""
    from gpt4tools.ui.webchat import untrusted

    def line(text_line: str) -> str:
        match = _MARKER_RE.match(text_line)
        if not match:
            return untrusted(text_line) or "&nbsp;"
        return f"**{match.group(1)}**{untrusted(text_line[match.end():])}"

    return "  \n".join(line(x) for x in text.split("\n"))


def record_markdown(record: dict | None, index: int, total: int) -> str:
    """One record as Markdown: its metadata, the prompt folded, the output with its ReAct markers in bold.
    (Markdown, not gr.HTML: the latter evaluates templates, which the app's CSP forbids.)"""
    from gpt4tools.ui.webchat import fence, untrusted

    if record is None:
        return "No record to show." if not total else f"Record {index + 1} of {total} is not readable."
    meta = " · ".join(f"**{k}**: {untrusted(str(record.get(k)))}"
                      for k in ("id", "kind", "tool", "teacher", "source", "template") if record.get(k) is not None)
    prompt = str(record.get("instruction", "")) + (f"\n{record['input']}" if record.get("input") else "")
    return (f"**Record {index + 1} of {total}** · {meta}\n\n"
            f"<details><summary>Prompt ({len(prompt):,} characters)</summary>\n\n{fence(prompt)}\n\n</details>\n\n"
            f"**Output** (ReAct):\n\n{highlight_react(str(record.get('output', '')))}\n")
