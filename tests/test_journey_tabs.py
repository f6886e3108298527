"""The pipeline journey's views without a server (issue 23): the Benchmark tab's earlier runs on
the same data, the Data tab's counts, drop reasons, verdict and records, the Train tab's estimate,
ETA and finished adapters, and the Chat tab's model switch."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")
from gpt4tools import paths  # noqa: E402
from gpt4tools.ui import benchruns, databuild, modelswitch, trainplan  # noqa: E402
from gpt4tools.ui import tabs as webtabs  # noqa: E402
from gpt4tools.ui import web as app  # noqa: E402
from gpt4tools.ui import webchat as W  # noqa: E402
from gpt4tools.ui.jobs import JobRunner  # noqa: E402

from fakes import EchoPlanLLM, bench_records, scripted_agent  # noqa: E402


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GPT4TOOLS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    (tmp_path / "runs" / "data").mkdir(parents=True)
    return tmp_path / "runs"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- Benchmark -----------------------------------------------------------------------------------
def test_committed_splits_come_first_and_val_is_preselected():
    files = webtabs.annotation_files()
    labels = [label for label, _ in files]
    assert labels[:len(benchruns.COMMITTED_SPLITS)] == list(benchruns.COMMITTED_SPLITS)
    assert benchruns.default_data(files) == str(paths.REPO / "data" / "val.jsonl")
    assert "data/stats.json" not in labels  # a build's counts are no benchmark file


def test_committed_runs_are_shown_for_their_data_without_compare():
    heading, overall, _detail, chart = webtabs.bench_views(str(paths.REPO / "data" / "val.jsonl"))
    assert "docs/val10_tuned" in set(overall["Run"]) and "docs/val10_no-tool" in set(overall["Run"])
    assert "data/val.jsonl" in heading and chart is not None
    heading, overall, detail, _ = webtabs.bench_views(str(paths.REPO / "data" / "conversations.jsonl"))
    assert "Turn success %" in overall.columns and "Category" in detail.columns  # bench-chat's own schema
    assert any(label.startswith("docs/") for label, _ in webtabs.bench_runs())  # Compare lists them too


def test_a_finished_run_is_shown_beside_earlier_runs_on_the_same_records(runs):
    from gpt4tools import bench

    data = write_jsonl(runs / "data" / "tiny.jsonl", bench_records())
    other = write_jsonl(runs / "data" / "other.jsonl", bench_records(2, 2))
    bench.run_bench(data, runs / "bench" / "earlier", baseline="no-tool")
    bench.run_bench(other, runs / "bench" / "elsewhere", baseline="no-tool")
    heading, overall, _, _ = webtabs.bench_views(str(data))
    assert list(overall["Run"]) == ["bench/earlier"] and "1 run(s)" in heading
    bench.run_bench(data, runs / "bench" / "mine", baseline="no-tool", limit=5)
    snap = type("Snap", (), {"running": False, "run_dir": runs / "bench" / "mine",
                             "argv": ["bench", "--data", str(data), "--baseline", "no-tool"]})()
    heading, overall, detail, chart = webtabs.bench_views(None, snap)  # the job's --data wins over the form's
    assert list(overall["Run"]) == ["mine (this run)", "bench/earlier"]
    assert overall.set_index("Run").loc["mine (this run)", "n"] == 5 and "this run first" in heading
    assert len(chart.axes[0].containers) == 2  # per-tool bars, one colour per run
    fresh = write_jsonl(runs / "data" / "fresh.jsonl", bench_records())
    assert "will be the first" in webtabs.bench_views(str(fresh))[0]


def test_a_missing_benchmark_file_is_a_clear_error(runs):
    with pytest.raises(gr.Error, match="does not exist"):
        webtabs.require_files("--data", ["--data", str(runs / "data" / "gone.jsonl"), "--limit", "2"])


# -- Data ----------------------------------------------------------------------------------------
RECORD = {"id": "r1", "kind": "positive", "tool": "Invert The Image", "teacher": "llm", "source": "photos:x",
          "template": "default", "instruction": "Human: invert <b>this</b>\nAI:", "input": "",
          "output": "Thought: Do I need to use a tool? Yes\nAction: Invert The Image\nAction Input: image/a.png\n"
                    "Observation: <script>x</script>"}


def build_folder(root: Path, records: list[dict], dropped: dict[str, int]) -> Path:
    folder = root / "data" / "20250101-000000_build-train"
    write_jsonl(folder / "train.jsonl", records)
    stats = {"train": {"records": len(records), "by_kind": {"positive": len(records)} if records else {},
                       "by_tool": {"Invert The Image": len(records)} if records else {},
                       "by_teacher": {"llm": len(records)} if records else {}, "by_origin": {},
                       "dropped": dropped, "file": "train.jsonl", "sha256": "ab" * 32}}
    (folder / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    return folder


def test_a_build_shows_counts_drop_reasons_and_records(runs):
    folder = build_folder(runs, [RECORD, {**RECORD, "id": "r2"}], {"filter: exact duplicate": 3, "too long": 7})
    assert databuild.build_folders(runs / "data")[0] == ("data/20250101-000000_build-train", str(folder))
    summary, counts, drops, files, record = webtabs.data_views(str(folder))
    assert "2 records kept, 10 dropped; teacher: llm 2" in summary and "sha256 `abababababab`" in summary
    assert {"kind", "tool", "teacher"} <= set(counts["By"])
    assert list(drops["Reason"]) == ["too long", "filter: exact duplicate"]  # the largest first
    assert files.value == str(folder / "train.jsonl")
    assert "**Record 1 of 2**" in record and "<details><summary>Prompt (" in record
    assert "<script>" not in record and "\\<script\\>" in record  # escaped: teacher text is untrusted
    assert "**Action Input:** image/a.png" in record and "**Observation:**" in record  # the ReAct markers stand out
    index, second = webtabs.step_record(files.value, 0, 1)
    assert index == 1 and "r2" in second and webtabs.step_record(files.value, 1, 5)[0] == 1  # stays in the file


def test_a_build_that_kept_nothing_fails_with_its_main_drop_reason(runs):
    folder = build_folder(runs, [], {"teacher: unreadable reply": 40, "filter: exact duplicate": 2})
    summary = webtabs.data_views(str(folder), "finished")[0]
    assert summary.startswith("💥 The build wrote 0 records; the main drop reason: teacher: unreadable reply (40")
    assert databuild.verdict("finished", {}).startswith("💥 The build finished but wrote no stats.json")
    assert databuild.verdict("running", {}) is None


def live_snapshot(folder: Path, records: int = 37, images: int = 12) -> None:
    """live.json as the builder writes it mid-build (data.output.LiveCounts)."""
    from collections import Counter

    from gpt4tools.data.output import LiveCounts

    live = LiveCounts(folder)
    live.begin("train")
    live.add([{**RECORD, "id": f"r{i}", "teacher": "template"} for i in range(records)])
    live.write(images, Counter({"filter: exact duplicate": 9, "quota: tool already full": 2}))


def test_live_counts_load_only_from_a_whole_snapshot(runs):
    folder = runs / "data" / "20250101-000000_build-train"
    folder.mkdir(parents=True)
    assert databuild.load_live(folder) is None and databuild.load_live(None) is None  # missing
    live_snapshot(folder)
    whole = (folder / "live.json").read_bytes()
    loaded = databuild.load_live(folder)
    assert loaded["split"] == "train" and loaded["splits"]["train"]["records_so_far"] == 37
    assert loaded["splits"]["train"]["by_tool"] == {"Invert The Image": 37}
    for bad in (whole[: len(whole) // 2], b"\xff\xfe\x00garbage", b"[]", b'{"splits": []}', b'{"splits": {"t": 3}}',
                b"[" * 100000, b" " * (databuild.LIVE_MAX_BYTES + 1)):
        (folder / "live.json").write_bytes(bad)
        assert databuild.load_live(folder) is None, bad[:20]
    # Fields of another shape are left out, never passed on to the tables.
    odd = {"time": 1e300, "split": ["train"], "splits": {"train": {"records_so_far": 5, "by_tool": ["x"],
                                                                  "dropped": {"a": "many", "b": 2}}}}
    (folder / "live.json").write_text(json.dumps(odd), encoding="utf-8")
    loaded = databuild.load_live(folder)
    assert loaded["split"] == "train" and loaded["time"] is None
    assert loaded["splits"]["train"]["by_tool"] == {} and loaded["splits"]["train"]["dropped"] == {"b": 2}
    assert "5 records so far" in databuild.live_summary(loaded)


def test_a_running_build_shows_its_counts_so_far_until_stats_json_exists(runs):
    folder = runs / "data" / "20250101-000000_build-train"
    assert "writes its counts when it ends" in webtabs.data_views(str(folder), "running")[0]  # nothing yet
    live_snapshot(folder)
    summary, counts, drops, files, record = webtabs.data_views(str(folder), "running")
    assert summary.startswith("⏳ running: 37 records so far from 12 images (train); "
                              "top drop reason: filter: exact duplicate (9 dropped)")
    assert "- **train**: 37 records so far, 11 dropped; teacher: template 37" in summary
    rows = counts.set_index(["By", "Value"])["Records"]
    assert rows["tool", "Invert The Image"] == 37 and rows["teacher", "template"] == 37
    assert list(drops["Reason"]) == ["filter: exact duplicate", "quota: tool already full"]
    assert files.choices == [] and "No record to show" in record  # the record files come at the end
    # The watcher resends the tables only when the builder wrote a new snapshot.
    shown, seen = webtabs.data_live_views(str(folder), None)
    assert shown[0] == summary and webtabs.data_live_views(str(folder), seen) == (None, seen)
    # A build that died keeps its last counts in view; a finished one's stats.json wins.
    assert "The build ended (failed) before its stats.json" in webtabs.data_views(str(folder), "failed")[0]
    build_folder(runs, [RECORD], {})
    summary, counts, *_ = webtabs.data_views(str(folder), "running")
    assert "1 records kept" in summary and "so far" not in summary and counts["Records"].max() == 1
    assert not [path for _, path in webtabs.annotation_files() if path.endswith("live.json")]  # no benchmark


# -- Train ---------------------------------------------------------------------------------------
def finished_run(root: Path, name: str, base: str = "tiny-base", seconds: float = 120.0) -> Path:
    folder = root / "train" / name
    folder.mkdir(parents=True)
    (folder / trainplan.ADAPTER_FILE).write_bytes(b"weights")
    (folder / "adapter_config.json").write_text("{}")
    (folder / trainplan.CONFIG_FILE).write_text(json.dumps({
        "base_model": base, "records": 12, "total_steps": 3, "train_seconds": seconds, "train_tokens": 6000,
        "data_sha256": "cd" * 32, "command": "python -m gpt4tools train --max-steps 3"}))
    return folder


def test_the_size_estimate_before_start(runs):
    rows = [{**RECORD, "id": f"r{i}", "episode": f"e{i}", "turn": 1, "instruction": "x" * 440} for i in range(10)]
    data = write_jsonl(runs / "data" / "train.jsonl", rows)
    text = webtabs.estimate_text(JobRunner(runs), "default", str(data), 0, 2.0, 3e-4, 1, 4, "cpu", "")
    assert "10 records in 10 sequences" in text and "**4 steps**" in text  # 10 // 4 = 2 steps per epoch, 2 epochs
    committed = json.loads((paths.REPO / "adapters" / "default" / "train_config.json").read_text())
    prior = round(committed["train_tokens"] / committed["train_seconds"])  # the committed adapter's own speed
    assert f"at {prior} tokens/s (the speed of adapters/default" in text and "a prior" in text
    finished_run(runs, "20250101_mine", base="default", seconds=60.0)  # 100 tokens/s measured here
    text = webtabs.estimate_text(JobRunner(runs), "default", str(data), 3, 1.0, 3e-4, 1, 4, "cpu", "")
    assert "**3 steps**" in text and "at 100 tokens/s (the speed of" in text and "20250101_mine" in text
    with pytest.raises(gr.Error, match="does not exist"):
        webtabs.estimate_text(JobRunner(runs), "default", str(runs / "data" / "nope.jsonl"), 0, 1, 3e-4, 1, 4, "cpu",
                              "")
    with pytest.raises(gr.Error, match="--epochs"):
        webtabs.estimate_text(JobRunner(runs), "default", str(data), 0, 500, 3e-4, 1, 4, "cpu", "")


def test_the_eta_comes_from_measured_steps_and_restarts_with_a_resume():
    assert "Waiting for the first logged step" in trainplan.eta_text([], running=True)
    lines = [{"step": s, "total": 10, "loss": 1.0, "tokens_per_s": 100.0, "elapsed_s": 30.0 + 10 * s}
             for s in (1, 2, 3)]
    text = trainplan.eta_text(lines, running=True)
    assert "**Step 3/10**" in text and "10.0 s/step" in text and "**ETA 1.2 min**" in text  # 7 steps x 10 s
    resumed = lines + [{"step": 4, "total": 10, "tokens_per_s": 50.0, "elapsed_s": 5.0},
                       {"step": 5, "total": 10, "tokens_per_s": 50.0, "elapsed_s": 25.0}]
    assert "20.0 s/step" in trainplan.eta_text(resumed, running=True)  # only this start's steps count
    assert "ETA" not in trainplan.eta_text(lines, running=False)


def test_a_stopped_run_says_how_to_go_on_and_stop_waits_for_its_step():
    lines = [{"step": s, "total": 10, "loss": 1.0, "tokens_per_s": 100.0, "elapsed_s": 30.0 + 10 * s}
             for s in (1, 2, 3)]
    stopped = trainplan.eta_text(lines, running=False, state="stopped")
    assert "**Step 3/10**" in stopped and "press Resume" in stopped and "ETA" not in stopped
    assert "Resume continues from its last checkpoint" in trainplan.eta_text(lines, running=False, state="failed")
    assert "Resume" not in trainplan.eta_text(lines, running=False, state="finished")
    assert "Resume starts it from the beginning" in trainplan.eta_text([], running=False, state="stopped")
    assert "the log says why" in trainplan.eta_text([], running=False, state="failed")
    # Stop's wait covers the slowest step measured (the first: 40 s with the warm-up) twice, plus the save
    assert trainplan.stop_grace_s(lines) == 2 * 40 + 30
    assert trainplan.stop_grace_s([]) == 120 and trainplan.stop_grace_s([{**lines[0], "elapsed_s": 1e6}]) == 900


def test_the_curves_are_drawn_on_the_server_with_each_resume_marked():
    assert trainplan.curves_figure([]) is None  # before the first logged step
    lines = [{"step": s, "total": 4, "loss": 2.0 - s / 10, "tokens_per_s": 90.0, "elapsed_s": 5.0 * s}
             for s in (1, 2)]
    resumed = [{"step": s, "total": 4, "loss": 2.0 - s / 10, "tokens_per_s": 80.0, "elapsed_s": 5.0 * (s - 2)}
               for s in (3, 4)]
    assert [len(start) for start in trainplan.starts(lines + resumed)] == [2, 2]
    loss, speed = trainplan.curves_figure(lines + resumed).axes
    assert list(loss.lines[0].get_xdata()) == [1, 2, 3, 4] and list(speed.lines[0].get_ydata()) == [90, 90, 80, 80]
    assert [line.get_xdata()[0] for line in loss.lines[1:]] == [2.5]  # the dotted line where the resume began
    assert "resumed" in loss.get_title()


def test_finished_adapters_are_listed_with_command_checksum_and_time(runs):
    finished_run(runs, "20250101_done")
    unfinished = runs / "train" / "20250102_killed"
    unfinished.mkdir(parents=True)
    (unfinished / trainplan.CONFIG_FILE).write_text(json.dumps({"base_model": "x", "total_steps": 9}))
    table = trainplan.adapters_table(runs / "train")
    row = table.iloc[0]
    assert row["Adapter"].endswith("20250101_done") and row["Data sha256"] == "cd" * 8 and row["Minutes"] == 2.0
    assert row["Command"].startswith("python -m gpt4tools train") and row["Tokens/s"] == 50
    assert "adapters/default" in set(table["Adapter"]) and not any("killed" in a for a in table["Adapter"])
    # A resumed run: train_config.json times its last start (120 s), metrics.jsonl has the first one's 60 s.
    (runs / "train" / "20250101_done" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "total": 3, "elapsed_s": e}) + "\n" for s, e in ((1, 30.0), (2, 60.0), (3, 40.0))))
    assert trainplan.adapters_table(runs / "train").iloc[0]["Minutes"] == 3.0


# -- Chat: the model switch ----------------------------------------------------------------------
class NamedLLM(EchoPlanLLM):
    def __init__(self, name: str):
        super().__init__()
        self.name = name


def named_agent(name: str):
    agent = scripted_agent()
    agent.llm = NamedLLM(name)
    return agent


def test_a_switch_loads_in_the_background_and_serves_every_session():
    chat = W.ChatApp(named_agent("first"))
    history, state, _ = app_turn(chat, "hello")
    release = threading.Event()

    def slow():
        release.wait(5)
        return named_agent("second")

    thread = chat.holder.switch(slow, "second with no adapter (auto)")
    assert chat.holder.loading and chat.status().startswith("⏳ Loading second with no adapter")
    assert "`first`" in chat.status()  # what serves meanwhile
    with pytest.raises(RuntimeError, match="still loading"):
        chat.holder.switch(slow, "third")
    history, state, _ = app_turn(chat, "still there?", state)
    assert history[-1].content == "You said: still there?"  # the old model answers while the new one loads
    release.set()
    thread.join(5)
    assert "`second`" in chat.status() and "🔁 Switched to second" in chat.status() and not chat.holder.loading
    history, state, _ = app_turn(chat, "hi again", state)
    assert any((m.metadata or {}).get("title") == "🔁 Model switched" for m in history)
    assert state.session.agent is chat.holder.agent and history[-1].content == "You said: hi again"


def test_a_failed_switch_keeps_the_current_model():
    chat = W.ChatApp(named_agent("first"))

    def broken():
        raise FileNotFoundError("no adapter_model.safetensors")

    chat.holder.switch(broken, "x").join(5)
    assert "`first`" in chat.status() and "⚠️ Switching to x failed (FileNotFoundError" in chat.status()


def test_switch_picks_go_through_the_allow_lists(runs):
    adapter = finished_run(runs, "20250101_done", base="smollm2-135m")
    choices = dict((v, k) for k, v in modelswitch.adapter_choices(runs / "train"))
    assert str(adapter) in choices and str(paths.REPO / "adapters" / "default") in choices
    assert modelswitch.base_model_of(str(adapter)) == "smollm2-135m"
    assert modelswitch.checked("default", str(adapter), "auto") == ("default", str(adapter.resolve()), "auto")
    assert modelswitch.checked("default", "", "auto") == ("default", None, "auto")
    for model, adapter_dir, backend, refusal in [("/etc", "", "auto", "--model"), ("default", "/tmp", "auto",
                                                 "--adapter"), ("default", "", "shell", "--backend"),
                                                 ("default", str(runs / "data"), "auto", "not a LoRA adapter")]:
        with pytest.raises(ValueError, match=refusal):
            modelswitch.checked(model, adapter_dir, backend)


def test_switch_controls_exist_only_where_the_operator_allows(runs):
    off = app.build_app(scripted_agent(), runner=JobRunner(runs), jobs=False)
    assert modelswitch.OFF_NOTE in [getattr(b, "value", None) for b in off.blocks.blocks.values()]
    buttons = [b for b in off.blocks.blocks.values() if getattr(b, "elem_id", None) == "switch_button"]
    assert buttons and buttons[0].interactive is False
    on = app.build_app(scripted_agent(), runner=JobRunner(runs), jobs=False,
                       switcher=lambda m, a, b: named_agent(m))
    assert modelswitch.OFF_NOTE not in [getattr(b, "value", None) for b in on.blocks.blocks.values()]


def app_turn(chat: W.ChatApp, text: str, state=None):
    outputs = list(chat.respond({"text": text, "files": []}, state))
    history, _, state = outputs[-1]
    return history, state, outputs
