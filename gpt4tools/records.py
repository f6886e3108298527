"""GPT4Tools records: the schema, and THE JSONL reader and writer.

The bottom layer: only the standard library, so the data builder, training, the benchmark
and the teacher's reply cache all read and write JSONL the same way. Lines are split at
"\\n" only, never with str.splitlines(): text written with ensure_ascii=False keeps U+2028
and U+2029 raw inside JSON strings (real ShareGPT replies hold them), and splitlines()
would cut a record there. A file whose text starts with "[" is read as one JSON list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict


class Record(TypedDict, total=False):
    """One training/evaluation sample: an Alpaca-style prompt and one assistant message.

    `instruction` and `output` are all a reader may count on (the paper's own files have
    little else); the data builder (gpt4tools/data) writes every field below, and `asked`
    in chat records only."""

    instruction: str  # the full prompt: tool list, history, user message, scratchpad so far
    input: str  # "" in our data (Alpaca's field; bench appends it after a newline when set)
    output: str  # one assistant message: a tool call ending in "Observation:" or a final answer
    id: str  # stable, unique in a file
    tool: str | None  # the tool `output` calls; None for a final answer or a negative
    kind: str  # "positive", "context", "negative", "chat", "chat-negative"; dialogues.py: "multi-image",
    # "follow-up", "repair", "failure", "unavailable"
    teacher: str  # who wrote the user message: "template", an LLM's name, "sharegpt", ...
    source: str  # the image content ("synthetic:train-3", "photos:<sha>") or the negative's origin
    template: str  # the prompt template's name
    tools_offered: list[str]  # the tool names the prompt lists, in its order
    asked: str  # chat records: the tool the message asks for (its chain's first tool is the target)
    episode: str  # the id shared by the turns of one episode (a one-turn episode: the record's own id)
    turn: int  # 0-based index of this assistant turn in its episode


def episode_turn(record: Any) -> tuple[str, int] | None:
    """(episode, turn) when the record carries both (our builder's data), else None (foreign data)."""
    if not isinstance(record, dict):
        return None
    episode, turn = record.get("episode"), record.get("turn")
    if isinstance(episode, str) and episode and isinstance(turn, int) and not isinstance(turn, bool) and turn >= 0:
        return episode, turn
    return None


# -- reading -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BadLine:
    """A line that is not valid JSON: its 1-based number and the parser's message."""

    line: int
    error: str


@dataclass
class Items:
    """What a JSON or JSONL text held. `items` are (line number, parsed value); in a JSON list
    the 1-based position stands in for the line. `bad` lists the lines that did not parse.
    `list_error` is set when the text starts like a JSON list but does not parse as one; its
    lines were then read as JSONL (whether to accept that is the caller's choice)."""

    items: list[tuple[int, Any]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    list_error: str | None = None

    def values(self) -> list[Any]:
        return [value for _, value in self.items]


def parse_lines(text: str) -> Items:
    """JSONL: one value per line; blank lines are skipped, malformed ones listed in `bad`."""
    out = Items()
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 may sit in a string
        if not line.strip():
            continue
        try:
            out.items.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            out.bad.append(BadLine(number, str(e)))
    return out


def parse_jsonl(text: str, allow_list: bool = True) -> Items:
    """A JSON list (when `allow_list` and the text starts with "[") or JSONL."""
    if allow_list and text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            out = parse_lines(text)
            out.list_error = str(e)
            return out
        return Items(list(enumerate(values, start=1)))
    return parse_lines(text)


def read_jsonl(path: str | os.PathLike, allow_list: bool = True, errors: str = "strict") -> Items:
    """`parse_jsonl` of a UTF-8 file. OSError and (with errors="strict") UnicodeDecodeError propagate."""
    return parse_jsonl(Path(path).read_text(encoding="utf-8", errors=errors), allow_list)


# -- writing -------------------------------------------------------------------------------------
def jsonl_line(value: Any) -> str:
    """One JSONL line, newline included; non-ASCII text is kept as is (ensure_ascii=False)."""
    return json.dumps(value, ensure_ascii=False) + "\n"


def to_jsonl(values: Iterable[Any]) -> str:
    return "".join(jsonl_line(v) for v in values)


def append_jsonl(path: str | os.PathLike, values: Iterable[Any], fsync: bool = True) -> None:
    """Append lines in one write, flushed (and fsynced): a kill can cut only the last line."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(to_jsonl(values))
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def cut_partial_line(path: str | os.PathLike) -> bool:
    """Truncate a last line without its newline (left by a kill mid-append), so appending stays
    valid JSONL. True if something was cut; a missing file is left alone."""
    path = Path(path)
    if not path.is_file():
        return False
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is a cut line
    if end == len(data):
        return False
    with open(path, "r+b") as f:
        f.truncate(end)
    return True


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write to a temporary file, fsync, rename: readers (and a resumed run after a kill) see the
    old file or the whole new one, never a half-written one. `str` is written as UTF-8."""
    import tempfile

    path = Path(path)
    # A temporary name of its own: two writers of one file (every rank of a DDP run writes its
    # train_config.json) must not rename each other's half-written temporary away.
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False) as f:
        try:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
            os.chmod(f.name, 0o644)  # as open() would make it (mkstemp makes 0600)
        except BaseException:
            Path(f.name).unlink(missing_ok=True)
            raise
    os.replace(f.name, path)
