"""Stale outputs cleaned on a schedule (issue 20, part 4): what the app made and no one uses any
more goes (idle session folders, their served copies, uploads never sent, the upload folders of
killed apps); job folders, training runs and the project's data are never touched, however old;
a file that vanishes or cannot be removed never stops a round, and a failing round never stops
the schedule."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from gpt4tools import session as S
from gpt4tools.ui import web
from gpt4tools.ui.guard import OWNER_FILE, TEMP_PREFIX
from gpt4tools.ui.webchat import PRIVATE

AGE = 2.0  # seconds stand in for the app's 24 hours; files made before the pause are "old"


def put(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def roots(tmp_path, monkeypatch):
    runs, cache, tmp = tmp_path / "runs", tmp_path / "gradio", tmp_path / "tmp"
    for d in (runs, cache, tmp):
        d.mkdir()
    monkeypatch.setenv("GPT4TOOLS_RUNS", str(runs))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # where the killed apps' folders are looked for
    return runs, cache, tmp


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_app_outputs_go_and_nothing_else(roots):
    runs, cache, tmp = roots
    old = {
        "session": put(runs / "sessions" / "a1b2" / "image" / "cat.png"),
        "served copy": put(cache / PRIVATE / "f00d" / "cat.png"),
        "upload never sent": put(cache / "3f9a" / "photo.jpg"),
        "link in the cache": cache / "linkdir" / "to-data.jsonl",
        "killed app's uploads": put(tmp / f"{TEMP_PREFIX}dead" / "77aa" / "photo.jpg"),
        "unmarked old app folder": put(tmp / f"{TEMP_PREFIX}unmarked" / "x.png"),
    }
    (tmp / f"{TEMP_PREFIX}dead" / OWNER_FILE).write_text(str(dead_pid()))
    never = {  # old too, but not the app's leftovers
        "training run": put(runs / "train" / "r1" / "checkpoint-5" / "adapter_model.safetensors"),
        "training metrics": put(runs / "train" / "r1" / "metrics.jsonl"),
        "built data": put(runs / "data" / "train.jsonl"),
        "benchmark upload": put(runs / "data" / "uploads" / "20250101_bench.jsonl"),
        "benchmark scores": put(runs / "bench" / "b1" / "scores.json"),
        "example in the cache": put(cache / "9e9e" / "chelsea.jpg"),
        "running app's folder": put(tmp / f"{TEMP_PREFIX}live" / "aa" / "photo.jpg"),
        "someone else's temp folder": put(tmp / "other-app" / "x.png"),
    }
    (runs / "train" / "r1" / "checkpoint").symlink_to("checkpoint-5")
    (tmp / f"{TEMP_PREFIX}live" / OWNER_FILE).write_text(str(os.getpid()))
    old["link in the cache"].parent.mkdir()
    old["link in the cache"].symlink_to(never["built data"])
    time.sleep(AGE + 0.5)
    fresh = {
        "session in use": put(runs / "sessions" / "c3d4" / "image" / "dog.png"),
        "served copy in use": put(cache / PRIVATE / "beef" / "dog.png"),
        "upload in flight": put(cache / "4e4e" / "new.png"),
        "fresh unmarked folder": put(tmp / f"{TEMP_PREFIX}starting" / "x.png"),
    }

    gone = web.cleanup_round(AGE, kept=[str(never["example in the cache"])])

    assert [k for k, p in old.items() if os.path.lexists(p)] == []
    assert [k for k, p in {**never, **fresh}.items() if not p.exists()] == []
    assert (runs / "train" / "r1" / "checkpoint").resolve().name == "checkpoint-5"  # a link in runs/ is not followed
    assert not (runs / "sessions" / "a1b2").exists() and not (cache / "3f9a").exists()  # emptied folders go too
    assert not (tmp / f"{TEMP_PREFIX}dead").exists() and (tmp / f"{TEMP_PREFIX}live" / OWNER_FILE).exists()
    assert gone >= len(old) - 1  # the link's folder, the two sessions and files, the orphans


def test_the_app_marks_its_private_upload_folder(monkeypatch, tmp_path):
    from gpt4tools.ui.guard import private_temp_dir

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = private_temp_dir()
    assert folder.name.startswith(TEMP_PREFIX) and (folder / OWNER_FILE).read_text() == str(os.getpid())
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_vanishing_or_unremovable_file_never_stops_the_round(roots, monkeypatch):
    runs, cache, _ = roots
    files = [put(cache / f"u{i}" / "photo.png") for i in range(6)]
    time.sleep(AGE + 0.5)
    real_lstat, real_unlink = os.lstat, os.unlink

    def lstat(path, *a, **k):  # another process deletes u1 just before it is looked at
        if str(path).endswith("u1/photo.png"):
            try:
                real_unlink(path)
            except FileNotFoundError:
                pass
        return real_lstat(path, *a, **k)

    def unlink(path, *a, **k):
        if str(path).endswith("u3/photo.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *a, **k)

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "unlink", unlink)
    assert S.cleanup_files(cache, AGE) == 4
    assert [p.parent.name for p in files if p.exists()] == ["u3"]

    def broken(*a, **k):
        raise RuntimeError("a bug in one step")

    monkeypatch.setattr(web, "cleanup_sessions", broken)  # the first two steps fail outright
    put(cache / "u9" / "late.png")
    os.utime(cache / "u9" / "late.png", (0, 0))
    assert web.cleanup_round(0.0) >= 1 and not (cache / "u9" / "late.png").exists()  # the later steps ran


def test_the_schedule_survives_a_failing_round(roots, monkeypatch):
    calls = []

    def round_(max_age_s, kept):
        calls.append(sorted(kept))
        if len(calls) == 1:
            raise OSError("disk went away")
        return 0

    monkeypatch.setattr(web, "cleanup_round", round_)
    stop = threading.Event()
    thread = web.start_cleanup(max_age_s=AGE, every_s=0.05, kept=lambda: {"example.jpg"}, stop=stop)
    deadline = time.time() + 10
    while len(calls) < 3 and time.time() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=5)
    assert len(calls) >= 3 and calls[-1] == ["example.jpg"] and not thread.is_alive()
