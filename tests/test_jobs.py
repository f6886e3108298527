"""gpt4tools.ui.jobs (and gpt4tools.progress, the command's side): real `python -m gpt4tools bench` subprocesses,
followed, finished and stopped."""

from __future__ import annotations

import json
import time

import pytest

from gpt4tools import progress
from gpt4tools.ui import jobs
from gpt4tools.ui.jobs import JobError, JobRunner

from fakes import bench_records, serve_fake_openai


@pytest.fixture
def records(tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in bench_records(n_tool=6, n_plain=4)))
    return path


def test_reporter_writes_only_inside_a_job(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.EVENTS_ENV, raising=False)
    assert not progress.reporter() and progress.progress_callback() is None
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv(progress.EVENTS_ENV, str(events))
    progress.progress_callback()(3, 10)
    progress.reporter().write(step=1, loss=2.5)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines[0]["done"] == 3 and lines[0]["total"] == 10 and lines[1]["loss"] == 2.5


def test_tail_keeps_the_last_state_of_progress_bars(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("start\nbench:  10%|#\rbench:  50%|###\rbench: 100%|#####\r\ndone\n")
    assert jobs.tail(log) == "start\nbench: 100%|#####\ndone"


def test_bench_job_reports_progress_and_scores(tmp_path, records):
    runner = JobRunner(tmp_path / "runs")
    job = runner.start("bench", "bench", ["--data", str(records), "--baseline", "no-tool"], name="baseline",
                       out_flag="--out")
    snap = job.wait(timeout_s=120)
    assert snap.state == "finished" and snap.returncode == 0, snap.log_tail
    assert (snap.done, snap.total) == (10, 10) and snap.fraction == 1.0
    assert [e["done"] for e in snap.events][0] == 0  # progress from the start, not only at the end
    scores = json.loads((snap.run_dir / "scores.json").read_text())
    assert scores["n"] == 10 and scores["SR"] == pytest.approx(0.4)  # 4 of 10 records need no tool
    assert "SR 40.0 %" in snap.log_tail and snap.run_dir.parent == tmp_path / "runs" / "bench"


def test_stop_ends_a_running_job(tmp_path, records):
    url, shutdown = serve_fake_openai("Thought: Do I need to use a tool? No\nAI: ok", delay_s=30)
    try:
        runner = JobRunner(tmp_path / "runs")
        job = runner.start("bench", "bench", ["--data", str(records), "--model", "fake", "--backend", "openai"],
                           out_flag="--out", env={"OPENAI_BASE_URL": url})
        with pytest.raises(JobError, match="another job is running"):  # one heavy job at a time
            runner.start("train", "bench", ["--data", str(records), "--baseline", "no-tool"], out_flag="--out")
        deadline = time.time() + 60
        while job.poll().total is None and time.time() < deadline:  # wait until it is generating
            time.sleep(0.2)
        t0 = time.time()
        job.stop()
        snap = job.poll()
        assert snap.state == "stopped" and snap.returncode != 0 and time.time() - t0 < 10
        assert (snap.done, snap.total) == (0, 10)
    finally:
        shutdown()


def test_unknown_command_is_refused(tmp_path):
    with pytest.raises(JobError, match="does not exist"):
        JobRunner(tmp_path).start("data", "no-such-command", [])


@pytest.mark.slow  # ~30 s: the job imports torch, transformers and peft
def test_train_job_streams_the_loss_curve(tmp_path):
    """The Train tab's wiring: a real few-step LoRA run whose metrics.jsonl is the events file."""
    test_train = pytest.importorskip("test_train")  # its tiny model and records
    model = test_train.make_tiny_model(tmp_path / "tiny")
    data = test_train.write_data(tmp_path, test_train.RECORDS)
    runner = JobRunner(tmp_path / "runs")
    job = runner.start("train", "train", ["--base-model", model, "--data", data, "--max-steps", "6",
                                          "--gradient-accumulation", "1", "--device", "cpu", "--save-steps", "100"],
                       out_flag="--out-dir", events="metrics.jsonl")
    snap = job.wait(timeout_s=300)
    assert snap.state == "finished", snap.log_tail
    assert (snap.done, snap.total) == (6, 6)
    loss = snap.metric("loss")
    assert [step for step, _ in loss] == [1, 2, 3, 4, 5, 6] and all(v > 0 for _, v in loss)
    assert any(snap.run_dir.rglob("adapter_config.json"))  # the adapter landed in the run folder


def test_data_job_writes_records_into_the_run_folder(tmp_path):
    """The Data tab's wiring: `data build` with the form's options, the run folder as --out."""
    from gpt4tools.ui.tabs import data_args

    args = data_args("train", 20, "template", "openai", "default", "", "--no-photos --no-sharegpt --val-per-tool 1 "
                     "--val-finals 1 --val-negatives 1")
    runner = JobRunner(tmp_path / "runs")
    job = runner.start("data", "data", args + ["--work", str(tmp_path / "work")], out_flag="--out")
    snap = job.wait(timeout_s=300)
    assert snap.state == "finished", snap.log_tail
    records = [json.loads(line) for line in (snap.run_dir / "train.jsonl").read_text().splitlines()]
    assert records and all({"instruction", "output", "id"} <= set(r) for r in records)
    assert {e.get("stage") for e in snap.events} >= {"done"} and snap.done == snap.total
