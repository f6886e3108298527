"""File helpers for fetching weights: hashing, atomic placement, readable disk errors.

Every write goes to a temporary name first and is renamed into place only once it is
whole (and, where a hash is known, checked), so an interrupted run never leaves a half
file under a name that a later run or a tool would trust.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class FetchError(RuntimeError):
    """Fetching or building weights failed; the message says what happened and what to do."""


@dataclass(frozen=True)
class FileSpec:
    """One file of a manifest entry, as its `files` table records it."""

    sha256: str
    size: int
    built: bool = False  # written by a converter: other library versions may write other bytes


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def tmp_name(path: Path) -> Path:
    """A sibling name for work in progress: same folder (so rename is atomic), never a final name."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def place(src: Path, dst: Path) -> bool:
    """Put `src` at `dst` atomically: a hard link when both are on one filesystem, else a copy.

    Returns True if the file was copied (the caller then re-checks its hash).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(dst)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        copied = False
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise
        shutil.copyfile(src, tmp)  # other filesystem, or links not allowed there
        copied = True
    os.replace(tmp, dst)
    return copied


def write_json(path: Path, data: Any) -> None:
    """Write JSON via a temporary file: a reader sees the old content or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None if it is missing or unreadable (treated as absent)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(parent: Path, pattern: str) -> None:
    """Delete leftovers of killed runs (`*.partial-PID`, `*.old-PID` whose PID no longer runs)."""
    if not parent.is_dir():
        return
    for p in parent.glob(pattern):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            remove(p)


def free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        if p.exists():
            return shutil.disk_usage(p).free
    return None


@contextlib.contextmanager
def disk_errors(where: Path) -> Iterator[None]:
    """Turn "No space left on device" (and quota errors) into a FetchError that says what to do."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        free = free_bytes(where)
        left = f" ({human_size(free)} free there now)" if free is not None else ""
        raise FetchError(
            f"the disk is full while writing under {where}{left}. Free some space, or point "
            f"GPT4TOOLS_CACHE / GPT4TOOLS_CHECKPOINTS at a larger disk, then run the same command "
            f"again: finished files are kept and unfinished ones are redone."
        ) from e
