"""One conversation: its own image folder, its memory, and the agent that serves it.

The app creates one per browser session and the CLI one per run; sessions share the
agent (and so the loaded LLM and tool models) but never each other's folders.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import time
from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator

from gpt4tools.agent import Agent, Step
from gpt4tools.history import Conversation
from gpt4tools.images import ImageStore
from gpt4tools.paths import runs_dir
from tools.describe import PhotoDescription

log = logging.getLogger(__name__)
DESCRIBE_TOOL = PhotoDescription.spec.name  # announces each upload with a caption, as the paper did


def sessions_dir() -> Path:
    return runs_dir() / "sessions"


class Session:
    def __init__(self, agent: Agent, root: Path | None = None, rng: random.Random | None = None):
        """`rng`: draws the session's image names (seeded: a replay names them the same way)."""
        self.id = secrets.token_hex(8)
        self.agent = agent
        self.store = ImageStore(root or sessions_dir() / self.id, rng=rng)
        self.conversation = Conversation(agent.template)
        self.new_uploads: list[str] = []  # uploaded since the last message: what it is about
        self.last_used = time.time()

    def add_image(self, src) -> str:
        """Store an upload (path or PIL image), announce it with a description; return its name."""
        name = self.store.add_upload(src)
        self.conversation.add_image(name, self.describe(name))
        self.new_uploads.append(name)
        self.agent.prepare(self.conversation)  # encode the announcement while the human types
        self.last_used = time.time()
        return name

    def describe(self, name: str) -> str:
        """The upload's description, from the captioning tool when it can run (as the paper did)."""
        tool = self.agent.tools.get(DESCRIBE_TOOL)
        if tool is None:
            return "an image uploaded by the user"
        try:
            return tool(name, self.store).text.replace("\n", " ")
        except Exception:  # a description is a nicety; the upload must still succeed
            log.exception("describing %s failed", name)
            return "an image uploaded by the user"

    def send(self, message: str) -> Iterator[Step]:
        self.last_used = time.time()
        uploads, self.new_uploads = self.new_uploads, []
        yield from self.agent.run(message, self.conversation, self.store, uploads)

    def clear(self) -> None:
        self.conversation.clear()
        self.store.clear()
        self.new_uploads.clear()

    def checkpoint(self) -> int:
        """A mark of the memory so far, for `rewind` (the number of memory turns)."""
        return len(self.conversation.turns)

    def rewind(self, mark: int) -> None:
        """Forget everything after `checkpoint()` returned `mark` (the app's Undo); files stay."""
        del self.conversation.turns[mark:]
        self.new_uploads.clear()

    def image_path(self, name: str) -> Path:
        """The file of one of this session's images; raises ImageError for any other name."""
        return self.store.resolve(name)

    def close(self) -> None:
        """Delete this session's folder (when it lives under the sessions folder, as the app's do)."""
        if sessions_dir().resolve() in self.store.root.resolve().parents:
            shutil.rmtree(self.store.root, ignore_errors=True)


def cleanup_sessions(max_age_s: float = 24 * 3600, root: Path | None = None) -> int:
    """Delete session folders untouched for `max_age_s`. Returns how many went."""
    root = root or sessions_dir()
    if not root.is_dir():
        return 0
    return remove_idle_folders(root.iterdir(), max_age_s, spare=lambda d: not d.is_dir())


def remove_idle_folders(folders: Iterable[Path], max_age_s: float,
                        spare: Callable[[Path], bool] = lambda d: False) -> int:
    """Delete each of `folders` that nothing in has touched for `max_age_s`, unless `spare(folder)`.
    A folder or file that vanishes or cannot be read mid-scan (a session closing) is passed over,
    so one never stops the round. Returns how many went."""
    gone = 0
    now = time.time()
    for d in folders:
        try:
            if spare(d) or now - _newest_mtime(d) <= max_age_s:
                continue
            shutil.rmtree(d, ignore_errors=True)
            gone += 1
        except OSError:
            continue
    return gone


def _newest_mtime(folder: Path) -> float:
    """The newest modification time in a folder (its own when empty); files gone meanwhile are skipped."""
    newest = folder.stat().st_mtime
    for p in folder.rglob("*"):
        try:
            newest = max(newest, p.stat().st_mtime)
        except OSError:
            continue
    return newest


def cleanup_files(root: Path, max_age_s: float, keep: Collection[str] = (), skip: Collection[str] = ()) -> int:
    """Delete the files under `root` neither modified nor created (mtime, ctime: a copy keeps its
    source's old mtime) for `max_age_s`, then the folders left empty and as old. Symlinks are
    removed as links, never followed; `keep`: paths never deleted; `skip`: folder names not
    entered. A file that vanishes or cannot be removed is passed over. Returns how many went."""
    root = Path(os.path.realpath(root))
    if not root.is_dir():
        return 0
    keep = {os.path.realpath(k) for k in keep}
    cutoff = time.time() - max_age_s
    gone = 0
    folders = []

    def old(path: str) -> bool:
        st = os.lstat(path)
        return max(st.st_mtime, st.st_ctime) < cutoff

    for folder, subfolders, files in os.walk(root, onerror=lambda e: None):  # never follows links
        subfolders[:] = [d for d in subfolders if d not in skip]
        try:  # judged before its files go (deleting them makes it look new)
            if folder != str(root) and old(folder):
                folders.append(folder)
        except OSError:
            pass
        for name in files:
            path = os.path.join(folder, name)
            try:
                if path not in keep and old(path):
                    os.unlink(path)
                    gone += 1
            except OSError:  # gone meanwhile, or not ours to remove: the round goes on
                continue
    for folder in reversed(folders):  # deepest first, so a parent can empty in the same round
        try:
            os.rmdir(folder)  # only when empty
        except OSError:
            continue
    return gone
