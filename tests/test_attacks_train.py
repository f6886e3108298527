"""Training loses nothing (issue 20, part 6): kill -9 in the middle of a real run, then resume;
a kill at every point of a checkpoint save. (SIGTERM saving and exiting is held by
tests/test_train.py::test_sigterm_saves_then_resume_reaches_the_same_result; the data build's
SIGKILL and resume by tests/test_teacher.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import RECORDS, make_tiny_model, write_data

from gpt4tools import train as T

STEPS, SAVE_EVERY, KILL_AT = 24, 5, 13


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_kill_9_mid_run_then_resume_loses_and_repeats_no_step(tmp_path):
    """SIGKILL (no handler can run) three steps after a checkpoint: `checkpoint` is the last whole
    one, the same command resumes there, the log holds each step once (the three killed steps
    are logged again, not twice) and the adapter is the one an uninterrupted run makes."""
    tiny = make_tiny_model(tmp_path / "tiny")
    data = write_data(tmp_path, RECORDS)
    common = ["--base-model", tiny, "--data", data, "--max-steps", str(STEPS), "--gradient-accumulation", "2",
              "--learning-rate", "1e-2", "--warmup-steps", "0", "--save-steps", str(SAVE_EVERY), "--dtype", "fp32",
              "--lora-dropout", "0", "--threads", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "gpt4tools", "train", *common, "--out-dir", str(out)]

    subprocess.run(cmd(tmp_path / "straight"), check=True, capture_output=True, env=env, timeout=600)
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:
        if line.startswith(f"step {KILL_AT}/"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = (KILL_AT // SAVE_EVERY) * SAVE_EVERY
    assert torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=False)["state"]["step"] == saved
    assert steps_logged(out)[-1] >= KILL_AT  # the killed steps were logged before the kill
    assert not (out / "adapter_model.safetensors").exists()

    done = subprocess.run(cmd(out), capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and f"resumed at step {saved}" in done.stdout + done.stderr, done.stderr[-2000:]
    assert steps_logged(out) == list(range(1, STEPS + 1))

    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(out / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert sorted(p.name for p in out.glob("checkpoint*")) == ["checkpoint", f"checkpoint-{STEPS}"]


# -- a kill at every point of a checkpoint save ----------------------------------------------------
class Killed(BaseException):
    """Stands in for SIGKILL: raised before an operation, it leaves the files as a kill would."""


class Ops:
    """Counts the file operations of a save and "kills" the process before the `kill_at`-th."""

    def __init__(self, kill_at: int | None):
        self.kill_at, self.count = kill_at, 0

    def __call__(self) -> None:
        if self.count == self.kill_at:
            raise Killed()
        self.count += 1


class Accelerator:
    is_main_process = True

    @staticmethod
    def unwrap_model(model):
        return model


class Adapter:
    """Writes an adapter as peft does, one file after another, each a point a kill can fall."""

    def __init__(self, ops: Ops):
        self.ops, self.step = ops, 0

    def save_pretrained(self, folder):
        folder = Path(folder)
        self.ops()
        folder.mkdir(parents=True, exist_ok=True)
        self.ops()
        (folder / "adapter_config.json").write_text(json.dumps({"step": self.step}))
        self.ops()
        (folder / "adapter_model.safetensors").write_text(str(self.step))


def whole_checkpoint(ckpt: Path) -> int:
    """The step of the checkpoint `ckpt` names, asserting all of it is there and agrees."""
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)["state"]
    assert json.loads((ckpt / "adapter_config.json").read_text())["step"] == state["step"]
    assert (ckpt / "adapter_model.safetensors").read_text() == str(state["step"])
    return state["step"]


@pytest.fixture
def counted(monkeypatch):
    """Every file operation _save_checkpoint makes goes through the current Ops."""
    current = {"ops": Ops(None)}
    wraps = [(os, "replace"), (shutil, "rmtree"), (Path, "symlink_to"), (Path, "unlink"), (torch, "save")]
    for owner, name in wraps:
        real = getattr(owner, name)

        def op(*a, _real=real, **k):
            current["ops"]()
            return _real(*a, **k)

        monkeypatch.setattr(owner, name, op)
    return current


def test_a_kill_at_any_point_of_a_save_leaves_a_whole_checkpoint(tmp_path, counted):
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    def save(out: Path, step: int, kill_at: int | None) -> None:
        counted["ops"] = ops = Ops(kill_at)
        adapter = Adapter(ops)
        adapter.step = step
        T._save_checkpoint(Accelerator(), adapter, optimizer, scheduler, {"step": step, "micro": 2 * step},
                           out / "checkpoint")

    points = 0
    while True:
        out = tmp_path / f"kill-{points}"
        save(out, 5, None)
        try:
            save(out, 10, points)
        except Killed:
            pass
        else:
            break  # the save ran to its end: every point before it was tried
        ckpt = out / "checkpoint"
        assert whole_checkpoint(ckpt) in (5, 10), f"kill before operation {points}"
        save(out, whole_checkpoint(ckpt) + 5 if whole_checkpoint(ckpt) == 5 else 15, None)  # the resumed run saves
        assert whole_checkpoint(ckpt) in (10, 15)
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint", f"checkpoint-{whole_checkpoint(ckpt)}"]
        points += 1
    assert points >= 8  # each write, rename and removal of the save was a kill point
    assert whole_checkpoint(out / "checkpoint") == 10
