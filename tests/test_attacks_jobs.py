"""Attacks on the job tabs (issue 20, parts 1, 2 and 6), each with its expected outcome.

A browser is not the operator: the Benchmark, Data and Train forms must not smuggle options,
read or write outside data/, runs/ and assets/, load arbitrary models, send the API key to a
server the form typed, share a run folder, or leave jobs running after the app is gone.
Jobs here are real subprocesses; the key leak is observed by a real HTTP listener.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import gradio as gr
import pytest

from gpt4tools import paths
from gpt4tools.ui import tabs
from gpt4tools.ui.jobargs import ANY_MODEL_ENV, Refused
from gpt4tools.ui.jobs import JobRunner, same_server, without_secrets

from fakes import bench_records, serve_fake_openai

SECRET = "sk-test-secret-0123456789"


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """A private runs/ (GPT4TOOLS_RUNS) with a benchmark file in runs/data/."""
    root = tmp_path / "runs"
    (root / "data").mkdir(parents=True)
    monkeypatch.setenv("GPT4TOOLS_RUNS", str(root))
    (root / "data" / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bench_records()))
    return root


def data_form(extra: str, **fields) -> list[str]:
    values = dict(split="train", records=20, teacher="template", backend="openai", model="default", base_url="")
    values.update(fields)
    return tabs.data_args(*values.values(), extra)


def train_form(extra: str = "", data: str = "data/train.jsonl", base_model: str = "default",
               device: str = "cpu", micro_batch: float = 1) -> list[str]:
    return tabs.train_args(base_model, data, 0, 1.0, 3e-4, micro_batch, 8, device, extra)


# -- 1. option smuggling -------------------------------------------------------------------------
SMUGGLED_DATA_OPTIONS = [
    ("--work /tmp/x", "--work: '/tmp/x' is outside"),  # write anywhere
    ("--work=/tmp/x", "--work: '/tmp/x' is outside"),
    ("--work data/", "--work: 'data/' is outside"),  # a job writes only under runs/
    ("--alpaca /etc/passwd", "--alpaca: '/etc/passwd' is outside"),  # read any file
    ("--photos /", "--photos: '/' is outside"),
    ("--coco-captions data/../../../../etc/passwd", "--coco-captions: .* is outside"),  # ../ escape
    ("--tokenizer /root", "--tokenizer: '/root' is outside"),
    ("--out /tmp/x", "--out is not allowed"),  # the run folder is the app's choice
    ("--base-url http://evil.example/v1", "--base-url is not allowed"),  # the URL field decides the key
    ("--wor /tmp/x", "--wor is not allowed"),  # argparse would expand the abbreviation to --work
    ("--no-such-option", "--no-such-option is not allowed"),
    ("-h", "'-h' is not an option"),
    ("--workers 100000", "--workers: 100000 is outside 1..[0-9]+"),  # bounded by the CPU count
    ("--val-per-tool 1000000000", "--val-per-tool: 1000000000 is outside"),
    ("--timeout inf", "--timeout: inf is outside"),
    ("--split test", "--split is given twice"),  # a field of the form already set it
    ("--no-photos=yes", "--no-photos takes no value"),
    ("--seed 1;touch /tmp/pwned", "--seed: '1;touch' is not a whole number"),  # shell metacharacters
    ("--seed $(touch /tmp/pwned)", r"--seed: '\$\(touch' is not a whole number"),
    ("--seed `id`", "--seed: '`id`' is not a whole number"),
    ("--seed 1 && rm -rf /", "'&&' is not an option"),
    ("--seed 1 | cat", "'\\|' is not an option"),
    ("--seed '1", "cannot split"),
    ("--seed 1\0", "NUL"),
    ("--load -h", "--load: '-h' is not a tool list"),
]


@pytest.mark.parametrize("extra,refusal", SMUGGLED_DATA_OPTIONS, ids=[repr(e) for e, _ in SMUGGLED_DATA_OPTIONS])
def test_data_more_options_are_refused(runs, extra, refusal):
    with pytest.raises(Refused, match=refusal):
        data_form(extra)


SMUGGLED_TRAIN = [
    (dict(data="/dev/zero"), "--data: '/dev/zero' is outside"),
    (dict(data="data/train.jsonl /etc/shadow"), "--data: '/etc/shadow' is outside"),
    (dict(data="../../etc/passwd"), "--data: .* is outside"),
    (dict(extra="--template /etc/passwd"), "--template: .* is neither a known prompt template"),
    (dict(extra="--out-dir /tmp/x"), "--out-dir is not allowed"),
    (dict(extra="--init-adapter /tmp"), "--init-adapter: .* is neither a known adapter"),
    (dict(extra="--threads 100000"), "--threads: 100000 is outside 0..[0-9]+"),
    (dict(micro_batch=1e9), "--micro-batch-size: 1000000000 is outside"),
    (dict(extra="--learning-rate nan"), "--learning-rate is given twice"),
    (dict(extra="--lora-r -1"), "--lora-r: -1 is outside"),
    (dict(base_model="/root/some-model"), "--base-model: '/root/some-model' is neither a known model"),
    (dict(base_model="attacker/backdoored-model"), "--base-model: .* is neither a known model"),  # a hub id
    (dict(device="cuda; reboot"), "--device: 'cuda; reboot' is not a device"),
]


@pytest.mark.parametrize("form,refusal", SMUGGLED_TRAIN, ids=[str(f) for f, _ in SMUGGLED_TRAIN])
def test_train_form_values_are_refused(runs, form, refusal):
    with pytest.raises(Refused, match=refusal):
        train_form(**form)


def test_symlinks_out_of_the_job_folders_are_refused(runs):
    (runs / "data" / "etc").symlink_to("/etc")
    (runs / "data" / "passwd.jsonl").symlink_to("/etc/passwd")
    with pytest.raises(Refused, match="--alpaca: .* is outside"):
        data_form(f"--alpaca {runs / 'data' / 'etc' / 'passwd'}")
    with pytest.raises(Refused, match="--data: .* is outside"):
        train_form(data=str(runs / "data" / "passwd.jsonl"))
    with pytest.raises(Refused, match="--data: .* is outside"):
        tabs.bench_args(str(runs / "data" / "passwd.jsonl"), True, "default", "", "auto", "cpu", 0)


def test_the_file_list_does_not_offer_symlinks_out_of_the_job_folders(runs):
    (runs / "data" / "leak.jsonl").symlink_to("/etc/passwd")
    listed = [path for _, path in tabs.annotation_files()]
    assert str(runs / "data" / "tiny.jsonl") in listed and str(runs / "data" / "leak.jsonl") not in listed


def test_only_real_uploads_are_kept_for_a_benchmark(runs, tmp_path, monkeypatch):
    """The upload field's path must be one of gradio's upload copies; it is copied under runs/data/."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    uploaded = tmp_path / "gradio" / "abc" / "mine.jsonl"
    uploaded.parent.mkdir(parents=True)
    uploaded.write_text((runs / "data" / "tiny.jsonl").read_text())
    kept = Path(tabs.keep_upload(str(uploaded)))
    assert kept.parent == runs / "data" / "uploads" and kept.read_text() == uploaded.read_text()
    for forged in ("/etc/passwd", str(tmp_path / "gradio" / ".." / "runs" / "data" / "tiny.jsonl")):
        with pytest.raises(Refused, match="is not a file uploaded to this app"):
            tabs.keep_upload(forged)
    (tmp_path / "gradio" / "abc" / "x.sh").write_text("echo")
    with pytest.raises(Refused, match="is .json or .jsonl"):
        tabs.keep_upload(str(tmp_path / "gradio" / "abc" / "x.sh"))


def test_bench_form_values_are_refused(runs):
    with pytest.raises(Refused, match="--data: '/dev/zero' is outside"):  # is_conversations would read it forever
        tabs.bench_args("/dev/zero", True, "default", "", "auto", "cpu", 0)
    data = str(runs / "data" / "tiny.jsonl")
    with pytest.raises(Refused, match="--model: '/etc' is neither a known model"):
        tabs.bench_args(data, False, "/etc", "", "auto", "cpu", 0)
    with pytest.raises(Refused, match="--adapter: '/tmp' is neither"):
        tabs.bench_args(data, False, "default", "/tmp", "auto", "cpu", 0)
    with pytest.raises(Refused, match="--limit: -5 is outside"):
        tabs.bench_args(data, True, "default", "", "auto", "cpu", -5)
    with pytest.raises(Refused, match="--backend: 'shell' is not one of"):
        tabs.bench_args(data, False, "default", "", "shell", "cpu", 0)


def test_what_the_forms_mean_still_runs(runs, monkeypatch):
    """Legitimate values pass, as absolute paths inside the job folders."""
    work = (runs / "data-work" / "mine").resolve()
    args = data_form(f"--no-photos --work {work} --alpaca data/train.jsonl --alpaca=data/val.jsonl --workers 1")
    expected = ["--no-photos", "--work", str(work), "--alpaca", str(paths.REPO / "data" / "train.jsonl"),
                "--alpaca", str(paths.REPO / "data" / "val.jsonl"), "--workers", "1"]
    assert args[-len(expected):] == expected
    expected = ["--target-modules", "q_proj", "v_proj", "--no-resume", "--threads", "1"]
    assert train_form(" ".join(expected))[-len(expected):] == expected
    adapter = paths.REPO / "adapters" / "default"
    assert tabs.bench_args("data/val.jsonl", False, "smollm2-135m", str(adapter), "auto", "cpu", 2) == \
        ["--data", str(paths.REPO / "data" / "val.jsonl"), "--backend", "auto", "--model", "smollm2-135m",
         "--device", "cpu", "--adapter", str(adapter), "--limit", "2"]
    # A served model's name is only sent to the server; the operator may allow any model.
    assert "org/served-model" in tabs.bench_args("data/val.jsonl", False, "org/served-model", "", "openai", "", 0)
    monkeypatch.setenv(ANY_MODEL_ENV, "1")
    assert "org/hub-model" in tabs.bench_args("data/val.jsonl", False, "org/hub-model", "", "auto", "", 0)


def test_form_sizes_are_bounded(runs):
    with pytest.raises(Refused, match="--train-records: 1000000000 is outside"):
        data_form("", records=1e9)
    with pytest.raises(Refused, match="--train-records: 'inf' is not a whole number"):
        data_form("", records=float("inf"))


def test_server_urls_must_be_http_without_credentials():
    for url in ("file:///etc/passwd", "http://user:pw@127.0.0.1/v1", "javascript:alert(1)", "http://[::1", "x"):
        with pytest.raises(Refused, match="is not an http"):
            data_form("", teacher="llm", base_url=url)


# -- 2. the API key goes only to the operator's server -------------------------------------------
def serve_recording_openai() -> tuple[str, list[str], callable]:
    """An OpenAI-compatible server on 127.0.0.1 that records each request's Authorization header.
    Returns (base_url, headers seen, shutdown)."""
    seen: list[str] = []
    url, shutdown = serve_fake_openai("Thought: Do I need to use a tool? No\nAI: ok", seen=seen)
    return url, seen, shutdown


def test_the_api_key_goes_only_to_the_operators_server(runs, monkeypatch):
    """Two real bench jobs, as the Benchmark tab starts them: the one sent to the operator's
    server (OPENAI_BASE_URL at app start) carries the key; the one sent to a typed URL does not."""
    trusted_url, trusted_seen, stop_trusted = serve_recording_openai()
    typed_url, typed_seen, stop_typed = serve_recording_openai()
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", trusted_url)
    try:
        runner = JobRunner(runs, limit=2)  # the app's start: it trusts $OPENAI_BASE_URL
        args = tabs.bench_args(str(runs / "data" / "tiny.jsonl"), False, "fake", "", "openai", "cpu", 1)
        to_typed = runner.start("bench", "bench", args, name="typed", out_flag="--out",
                                env={"OPENAI_BASE_URL": typed_url})
        to_trusted = runner.start("bench-ok", "bench", args, name="trusted", out_flag="--out",
                                  env={"OPENAI_BASE_URL": trusted_url + "/"})
        for job in (to_typed, to_trusted):
            assert job.wait(timeout_s=120).state == "finished", job.poll().log_tail
    finally:
        stop_trusted()
        stop_typed()
    assert typed_seen and not any(SECRET in h for h in typed_seen)  # asked, without the key
    assert trusted_seen and all(SECRET in h for h in trusted_seen)


def test_secrets_are_kept_only_when_every_named_url_is_trusted():
    runner = JobRunner(Path("/nonexistent"), trusted_url="http://127.0.0.1:8000/v1")
    assert runner.keeps_secrets(["--limit", "1"], None)  # no URL named: the operator's environment
    assert runner.keeps_secrets([], {"OPENAI_BASE_URL": "HTTP://127.0.0.1:8000/v1/"})
    assert not runner.keeps_secrets(["--base-url", "http://evil.example/v1"], None)  # data build's flag
    assert not runner.keeps_secrets(["--base-url=http://127.0.0.1:8001/v1"], None)
    assert not runner.keeps_secrets([], {"OPENAI_BASE_URL": "http://127.0.0.1:8000.evil.example/v1"})
    assert not JobRunner(Path("/nonexistent"), trusted_url="").keeps_secrets([], {"OPENAI_BASE_URL": "http://x"})
    assert not same_server(None, None)
    env = without_secrets({"OPENAI_API_KEY": "k", "OPENAI_ORG_ID": "o", "HF_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "s",
                           "OPENAI_BASE_URL": "u", "TOKENIZERS_PARALLELISM": "false", "PATH": "/bin"})
    assert env == {"OPENAI_BASE_URL": "u", "TOKENIZERS_PARALLELISM": "false", "PATH": "/bin"}


# -- 6. run folders, orphans, resume, unload ------------------------------------------------------
def test_two_starts_never_share_a_folder(tmp_path):
    first, second = JobRunner(tmp_path), JobRunner(tmp_path)  # two apps on one runs/
    made: list[Path] = []
    threads = [threading.Thread(target=lambda r=r: made.append(r.run_dir("bench", "same")))
               for r in (first, second) * 10]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 20 and len(set(made)) == 20 and all(p.is_dir() for p in made)


def test_two_jobs_started_in_one_second_get_two_folders(runs):
    runner = JobRunner(runs, limit=2)
    args = ["--data", str(runs / "data" / "tiny.jsonl"), "--baseline", "no-tool"]
    a = runner.start("bench", "bench", args, name="same", out_flag="--out")
    b = runner.start("bench", "bench", args, name="same", out_flag="--out")
    assert a.run_dir != b.run_dir and a.run_dir.parent == b.run_dir.parent
    assert a.wait(120).state == "finished" and b.wait(120).state == "finished"


def _group_size(pgid: int) -> int:
    """How many processes of the group are alive (zombies waiting for a reaper are dead)."""
    alive = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        alive += int(fields[2]) == pgid and fields[0] != "Z"
    return alive


def _group_alive(pgid: int) -> bool:
    return _group_size(pgid) > 0


FAKE_APP = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gpt4tools.ui.jobs import JobRunner

    runs, data, url, ending = sys.argv[1:]
    runner = JobRunner(Path(runs))
    job = runner.start("bench", "bench", ["--data", data, "--model", "fake", "--backend", "openai"],
                       out_flag="--out", env={"OPENAI_BASE_URL": url})
    deadline = time.time() + 60
    while job.poll().total is None and time.time() < deadline:  # until it waits on the slow server
        time.sleep(0.1)
    print(job.proc.pid, flush=True)
    sys.stdin.readline()  # the test says when to end
    if ending == "exit":
        sys.exit(0)
    time.sleep(60)
""")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc")
@pytest.mark.parametrize("ending", ["exit", "SIGTERM", "SIGKILL"])
def test_jobs_die_with_the_app(runs, ending):
    """A real app process starts a job that waits on a slow server, then ends (a clean exit,
    SIGTERM, or SIGKILL, where no handler runs): the job's whole process group must go too."""
    from fakes import serve_fake_openai

    url, shutdown = serve_fake_openai("AI: ok", delay_s=60)
    pgid = None
    app = subprocess.Popen([sys.executable, "-c", FAKE_APP, str(runs), str(runs / "data" / "tiny.jsonl"), url,
                            ending], cwd=paths.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pgid = int(app.stdout.readline())
        assert _group_size(pgid) >= 2  # the guard and the job, busy with a request
        if ending == "exit":
            app.stdin.write("\n")
            app.stdin.flush()
        else:
            app.send_signal(getattr(signal, ending))
        app.wait(30)
        deadline = time.time() + 20
        while _group_alive(pgid) and time.time() < deadline:
            time.sleep(0.1)
        assert not _group_alive(pgid), f"the job outlived the app ({ending})"
    finally:
        if app.poll() is None:
            app.kill()
        if pgid and _group_alive(pgid):  # the test failed: clean up after it
            os.killpg(pgid, signal.SIGKILL)
        shutdown()


def test_a_job_started_from_the_ui_resumes_from_the_ui(runs):
    runner = JobRunner(runs)
    args = tabs.bench_args(str(runs / "data" / "tiny.jsonl"), True, "default", "", "auto", "cpu", 4)
    first = runner.start("bench", "bench", args, name="resumable", out_flag="--out")
    assert first.wait(120).state == "finished"
    choices = tabs.resume_choices(runner, "bench")
    assert choices == [(first.run_dir.name, str(first.run_dir))]
    status = tabs.resume(runner, "bench", choices[0][1])
    again = runner.current("bench")
    assert "resumed" in status and again is not first and again.run_dir == first.run_dir.resolve()
    assert again.argv[:-1] == first.argv[:-1] and again.wait(120).state == "finished"
    assert again.log_path.read_text().count("$ python -m gpt4tools bench") == 2  # one folder, two runs
    assert json.loads((again.run_dir / "scores.json").read_text())["n"] == 4


def test_resume_refuses_other_folders_and_tampered_records(runs):
    runner = JobRunner(runs)
    for foreign in ("/tmp", str(runs / "data"), str(runs / "bench" / ".." / ".." / "..")):
        with pytest.raises(gr.Error, match="not a bench run folder"):
            tabs.resume(runner, "bench", foreign)
    with pytest.raises(gr.Error, match="Choose a run"):
        tabs.resume(runner, "bench", "")
    folder = runner.run_dir("data", "tampered")
    (folder / "job.json").write_text(json.dumps({"kind": "data", "command": "data", "out_flag": "--out",
                                                 "events": "events.jsonl", "env": {},
                                                 "args": ["build", "--work", "/tmp/x"]}))
    with pytest.raises(gr.Error, match="--work: '/tmp/x' is outside"):
        tabs.resume(runner, "data", str(folder))
    assert runner.current("data") is None


def test_unload_all_unloads_every_cached_model():
    from gpt4tools.model_cache import CACHE
    from gpt4tools.registry import ToolRegistry

    from fakes import Invert

    keys = ["attack-a@cpu", "attack-b@cpu", "attack-c@cuda"]
    for key in keys:
        CACHE.get(key, object, memory_mb=1)
    text, dropdown = tabs.unload_all()
    assert not set(keys) & set(CACHE.keys()) and CACHE.keys() == []
    assert all(key in text for key in keys) and dropdown.choices == []
    with gr.Blocks() as demo:
        tabs.tools_tab(ToolRegistry([Invert()]))
    assert any(f.fn is tabs.unload_all for f in demo.fns.values())  # the button runs it


def test_a_refused_form_is_a_clear_error_in_the_app(runs):
    """The Benchmark tab's public endpoint, through a real app: a path outside the job folders
    is refused with a message naming the option, and no job starts."""
    from gradio_client import Client

    from gpt4tools.ui import web

    from appserver import free_port
    from fakes import scripted_agent

    runner = JobRunner(runs)
    app = web.build_app(scripted_agent(), runner=runner)
    port = free_port()
    web.launch(app, port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        data = str(runs / "data" / "tiny.jsonl")
        with pytest.raises(Exception, match="--model: '/etc' is neither a known model"):
            client.predict(data, None, False, "/etc", "", "auto", "cpu", "", 0, api_name="/bench_start")
        with pytest.raises(Exception, match="Server URL: 'file:///etc/passwd' is not an http"):
            client.predict(data, None, False, "fake", "", "openai", "cpu", "file:///etc/passwd", 0,
                           api_name="/bench_start")
        assert runner.current("bench") is None
    finally:
        app.blocks.close()
