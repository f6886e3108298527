"""The Data tab's view of a build: what `data build` wrote into its output folder (stats.json, the
record files; see gpt4tools/data/output.py), as tables of counts and drop reasons, a verdict (a
build that kept no record failed, whatever its exit code), and one record at a time with its
prompt folded and its ReAct output highlighted.

Only the builder's files are read; nothing is counted or filtered again here.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pandas as pd

from gpt4tools import paths, react

GROUPS = ("by_kind", "by_tool", "by_teacher", "by_origin")  # the stats.json counts the tab shows
COUNT_COLUMNS = ["Split", "By", "Value", "Records"]
DROP_COLUMNS = ["Split", "Reason", "Dropped"]
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
