"""Long jobs (benchmark, data generation, training) as subprocesses that a UI can watch and stop.

A job runs `python -m gpt4tools <command> <args...>` from the repo root, in its own process
group (so stopping it also stops any workers it started), with stdout and stderr in
`<run dir>/log.txt`. Its progress and metrics come from a JSON-lines file that the command
appends to: the runner passes the file's path in `$GPT4TOOLS_JOB_EVENTS`, and a command
writes through `gpt4tools.progress.reporter()`, which does nothing when the command runs in a terminal.

Jobs die with the app: each runs under `gpt4tools.ui.jobguard`, which stops the job's process
group when the app's end of a pipe closes, however the app ended. Each start gets its own run
folder, created exclusively, and `job.json` in it records how to start the job again (resume).

A job's environment is the app's, except that API keys and similar secrets are removed when a
form named an OpenAI-compatible server other than the one the operator configured at start
($OPENAI_BASE_URL then, or `JobRunner(trusted_url=...)`): the key goes to that server or to none.

Event lines are plain objects. A line with "total" and "done" (or "step") is progress;
its numeric fields are metrics (a loss curve is the "loss" of successive lines). The
trainer's `metrics.jsonl` ({"step", "total", "loss", ...}) already has this shape, so a
train job simply names that file as its events file.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from gpt4tools import paths
from gpt4tools.cli import COMMANDS
from gpt4tools.progress import EVENTS_ENV

LOG_NAME = "log.txt"
RECORD_NAME = "job.json"  # how the job was started: what `JobRunner.resume` starts again
URL_ENV = "OPENAI_BASE_URL"
# Environment variables a job loses when a form chose its server: the openai client sends
# OPENAI_API_KEY (and the organization/project ids) to that server; the rest are secrets a job
# started for an unknown server has no use for.
_SECRET_NAME = re.compile(r"^OPENAI_(?!BASE_URL$)|(^|_)(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)",
                          re.IGNORECASE)
_TAIL_BYTES = 16_384  # how much of the log end a snapshot shows


class JobError(RuntimeError):
    """A job that cannot start: unknown command, or the runner is busy."""


# -- the runner's side -------------------------------------------------------------------
@dataclass
class Snapshot:
    """What a UI shows about a job at one moment."""

    kind: str
    state: str  # "running", "finished", "failed" or "stopped"
    returncode: int | None
    done: int | None
    total: int | None
    events: list[dict]
    log_tail: str
    seconds: float
    run_dir: Path
    argv: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float | None:
        if self.done is None or not self.total:
            return None
        return min(1.0, self.done / self.total)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def metric(self, name: str) -> list[tuple[float, float]]:
        """(step, value) pairs of one numeric metric, for a plot."""
        out = []
        for i, e in enumerate(self.events):
            value = e.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append((e.get("step", e.get("done", i)), float(value)))
        return out

    def summary(self) -> str:
        progress = f" {self.done}/{self.total}" if self.total else ""
        code = f" (exit code {self.returncode})" if self.state == "failed" else ""
        return f"{self.kind}: {self.state}{progress}{code}, {self.seconds:.0f} s; run folder {self.run_dir}"


def tail(path: Path, max_bytes: int = _TAIL_BYTES, max_lines: int = 60) -> str:
    """The end of a log, with progress-bar redraws (carriage returns) reduced to their last state."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - max_bytes))
            raw = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in raw.split("\n")]
    return "\n".join(lines[-max_lines:]).strip("\n")


class Job:
    """One subprocess. Create through `JobRunner.start`."""

    def __init__(self, kind: str, command: str, args: list[str], run_dir: Path, events: Path,
                 env: dict[str, str] | None = None):
        self.kind = kind
        self.extra_env = dict(env or {})
        self.argv = [sys.executable, "-m", "gpt4tools", command, *args]
        self.run_dir = run_dir
        self.events_path = events
        self.log_path = run_dir / LOG_NAME
        self.proc: subprocess.Popen | None = None
        self.stopped = False
        self.started = self.ended = 0.0
        self._events: list[dict] = []
        self._offset = 0
        self._lock = threading.Lock()

    def start(self, keep_secrets: bool = True) -> Job:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.extra_env, EVENTS_ENV: str(self.events_path), "PYTHONUNBUFFERED": "1"}
        if not keep_secrets:
            env = without_secrets(env)
        lifeline = _lifeline()
        guarded = [sys.executable, "-m", "gpt4tools.ui.jobguard", str(lifeline), *self.argv]
        with self.log_path.open("ab") as log:
            log.write(("$ python " + " ".join(self.argv[1:]) + "\n").encode())
            log.flush()
            # A new session: the job and its children form one process group that stop() can end.
            self.proc = subprocess.Popen(guarded, cwd=paths.REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(lifeline,))
        self.started = time.time()
        return self

    def _read_events(self) -> None:
        try:
            with self.events_path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        for line in chunk[:end].splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                self._events.append(event)
        self._offset += end

    def poll(self) -> Snapshot:
        with self._lock:
            self._read_events()
            code = self.proc.poll() if self.proc else None
            if code is not None and not self.ended:
                self.ended = time.time()
            state = "running" if code is None else "stopped" if self.stopped else "finished" if code == 0 else "failed"
            last = next((e for e in reversed(self._events) if "total" in e), {})
            done = last.get("done", last.get("step"))
            return Snapshot(self.kind, state, code, done, last.get("total"), list(self._events),
                            tail(self.log_path), (self.ended or time.time()) - self.started, self.run_dir,
                            self.argv[3:])

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the whole group, then SIGKILL after `grace_s` (a resumable job saves on TERM)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.stopped = True
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass

    def wait(self, timeout_s: float | None = None) -> Snapshot:
        if self.proc is not None:
            self.proc.wait(timeout_s)
        return self.poll()


_LIFELINE: list[int] = []  # the read end of this process's lifeline pipe, once made
_LIFELINE_LOCK = threading.Lock()


def _lifeline() -> int:
    """The read end of a pipe whose write end only this process holds (pipe ends are not
    inherited by children), so a job's guard reads end-of-file exactly when the app is gone."""
    with _LIFELINE_LOCK:
        if not _LIFELINE:
            read_end, _write_end = os.pipe()  # the write end stays open, unused, until the process ends
            _LIFELINE.append(read_end)
        return _LIFELINE[0]


def without_secrets(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not _SECRET_NAME.search(k)}


def same_server(a: str | None, b: str | None) -> bool:
    """Whether two base URLs name the same endpoint (case of scheme and host, a trailing slash aside)."""
    if not a or not b:
        return False
    ua, ub = urlsplit(a.strip()), urlsplit(b.strip())
    return (ua.scheme.lower(), ua.netloc.lower(), ua.path.rstrip("/")) == \
        (ub.scheme.lower(), ub.netloc.lower(), ub.path.rstrip("/"))


def _urls_named(args: list[str], env: dict[str, str] | None) -> list[str]:
    """The server URLs a start names itself: OPENAI_BASE_URL in its extra environment, --base-url in its args."""
    named = [(env or {}).get(URL_ENV)]
    for i, arg in enumerate(args):
        if arg == "--base-url" and i + 1 < len(args):
            named.append(args[i + 1])
        elif arg.startswith("--base-url="):
            named.append(arg.partition("=")[2])
    return [u for u in named if u is not None]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


class JobRunner:
    """Starts jobs into `runs/<kind>/<time>_<name>/`, at most `limit` running at once.

    Heavy jobs compete for the same GPU or CPU cores, so the default limit is one job at
    a time across all kinds; a UI keeps serving chat meanwhile (the job is another process).
    """

    def __init__(self, root: Path | None = None, limit: int = 1, trusted_url: str | None = None):
        self.root = root
        self.limit = limit
        # The server the operator configured at start: the only one a job may send the API key to.
        self.trusted_url = trusted_url if trusted_url is not None else os.environ.get(URL_ENV)
        self.jobs: dict[str, Job] = {}  # the latest job of each kind
        self._lock = threading.Lock()
        atexit.register(self.stop_all)  # a clean exit gives jobs their grace; jobguard covers the rest

    def kind_dir(self, kind: str) -> Path:
        return (self.root or paths.runs_dir()) / kind

    def run_dir(self, kind: str, name: str) -> Path:
        """A new, empty run folder: `mkdir` without exist_ok is atomic, so two starts in the same
        second (in this app or another) get `<time>_<name>` and `<time>_<name>-2`."""
        parent = self.kind_dir(kind)
        parent.mkdir(parents=True, exist_ok=True)
        base = f"{time.strftime('%Y%m%d-%H%M%S')}_{_slug(name)}"
        for n in itertools.count(1):
            candidate = parent / (base if n == 1 else f"{base}-{n}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
        raise AssertionError("unreachable")

    def keeps_secrets(self, args: list[str], env: dict[str, str] | None) -> bool:
        """Whether a job may inherit API keys: every server URL it names is the operator's."""
        return all(same_server(url, self.trusted_url) for url in _urls_named(args, env))

    def start(self, kind: str, command: str, args: list[str], *, name: str = "", out_flag: str | None = None,
              events: str = "events.jsonl", run_dir: Path | None = None, env: dict[str, str] | None = None) -> Job:
        """Start `python -m gpt4tools command args`. With `out_flag`, the run folder is passed
        as that option (e.g. "--out"), so the command writes its outputs beside the log.
        `events` names the JSON-lines file to follow, inside the run folder; `env` adds
        environment variables (e.g. OPENAI_BASE_URL). `run_dir`: an existing run folder to
        continue in (see `resume`); by default a new one."""
        if command not in COMMANDS:
            raise JobError(f"`python -m gpt4tools {command}` does not exist in this version")
        with self._lock:
            busy = [j for j in self.jobs.values() if j.proc and j.proc.poll() is None]
            if len(busy) >= self.limit:
                raise JobError(f"another job is running ({', '.join(j.kind for j in busy)}); stop it or wait")
            run_dir = run_dir or self.run_dir(kind, name or command)
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_record(run_dir, dict(kind=kind, command=command, args=list(args), out_flag=out_flag,
                                        events=events, env=dict(env or {})))
            full_args = [*args, out_flag, str(run_dir)] if out_flag else list(args)
            job = Job(kind, command, full_args, run_dir, run_dir / events, env)
            job.start(keep_secrets=self.keeps_secrets(full_args, env))
            self.jobs[kind] = job
            return job

    # -- resuming ---------------------------------------------------------------------------
    def saved(self, kind: str, run_dir: str | Path) -> dict:
        """How the job in `run_dir` was started (its job.json), if `run_dir` is one of this
        runner's `kind` run folders; else JobError (a form may send any string)."""
        parent = self.kind_dir(kind).resolve()
        folder = Path(run_dir).resolve()
        record = folder / RECORD_NAME
        if folder.parent != parent or not record.is_file():
            raise JobError(f"{run_dir} is not a {kind} run folder of this app")
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved.get("kind") != kind:
            raise JobError(f"{run_dir} holds a {saved.get('kind')} job, not {kind}")
        return saved

    def resume(self, kind: str, run_dir: str | Path, saved: dict | None = None) -> Job:
        """Start the job of `run_dir` again, with the same options, in the same folder (bench,
        train and data build continue where they stopped)."""
        saved = saved or self.saved(kind, run_dir)
        return self.start(kind, saved["command"], saved["args"], out_flag=saved["out_flag"], events=saved["events"],
                          run_dir=Path(run_dir).resolve(), env=saved.get("env") or None)

    def resumable(self, kind: str, limit: int = 50) -> list[Path]:
        """Run folders of `kind` that recorded how they were started, newest first, but the one running."""
        running = self.jobs.get(kind)
        busy = running.run_dir.resolve() if running and running.proc and running.proc.poll() is None else None
        found = [p.parent for p in self.kind_dir(kind).glob(f"*/{RECORD_NAME}") if p.parent.resolve() != busy]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]

    def current(self, kind: str) -> Job | None:
        return self.jobs.get(kind)

    def stop_all(self) -> None:
        for job in list(self.jobs.values()):
            job.stop(grace_s=5.0)


def _write_record(run_dir: Path, record: dict) -> None:
    """job.json, written to a temporary name and renamed: a reader never sees half of it."""
    tmp = run_dir / f".{RECORD_NAME}.tmp"
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp, run_dir / RECORD_NAME)
