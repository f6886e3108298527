"""The web app's Tools, Benchmark, Data and Train tabs (the Chat tab is in ui/web.py and ui/webchat.py).

The three job tabs run `python -m gpt4tools <command>` through `gpt4tools.ui.jobs`, so a long
job is another process: the chat keeps serving, and a job survives a closed browser tab
(reopen the tab and press "Watch" to follow it again). Which options each tab passes is
written down in the tab's `*_args` function; the commands themselves own their defaults. Every
value a form sends is checked by `gpt4tools.ui.jobargs` (an allow-list of options with bounded
values, paths inside data/, runs/ and assets/) before a job starts: a form is not the operator.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import pandas as pd

from gpt4tools import metrics, paths
from gpt4tools.model_cache import CACHE
from gpt4tools.ui import benchruns, databuild, jobargs, trainplan
from gpt4tools.ui.jobargs import Refused, check_url, check_value
from gpt4tools.ui.jobs import JobError, JobRunner, Snapshot

METRICS = tuple(metrics.METRICS)
POLL_S = 0.5  # how often a watched job's files are read
HEAVY = "heavy"  # concurrency id of events that load models in the app process
WATCH = {"concurrency_limit": 8, "concurrency_id": "watch"}  # watchers only poll files; several browsers may follow


# -- Tools ----------------------------------------------------------------------------------
def _describe(registry) -> list[dict]:
    """registry.describe, but one tool whose availability check raises shows as unavailable
    (with the error) instead of taking the tab down."""
    from gpt4tools.inventory import describe

    try:
        return describe(registry)
    except Exception:
        rows = []
        for name in registry:
            try:
                rows += describe(registry.subset([name]))
            except Exception as e:
                tool = registry[name]
                rows.append({"name": name, "available": False, "reason": f"availability check failed: {e}",
                             "model": tool.model, "learned": tool.learned, "device": tool.device,
                             "seen": tool.spec.seen, "follows": tool.spec.follows})
        return rows


def _tool_rows(registry) -> pd.DataFrame:
    rows = [{"Tool": r["name"], "Available": "✅" if r["available"] else "❌", "Why not / how to enable": r["reason"],
             "Backing model": r["model"], "Kind": "learned" if r["learned"] else "classical", "Device": r["device"],
             "Seen in training": "yes" if r["seen"] else "no (zero-shot)", "Chained after": r["follows"] or ""}
            for r in _describe(registry)]
    return pd.DataFrame(rows, columns=["Tool", "Available", "Why not / how to enable", "Backing model", "Kind",
                                       "Device", "Seen in training", "Chained after"])


def _cache_text() -> str:
    keys = CACHE.keys()
    loaded = ", ".join(f"`{k}`" for k in keys) or "none"
    return f"**Loaded models** ({CACHE.used_mb()} of {CACHE.budget_mb} MB budget): {loaded}"


def warm_up(registry, name: str) -> str:
    """Load a tool's models by running it once on an example photo (the cache keeps them)."""
    from gpt4tools.images import ImageStore

    if not name:
        return "Choose a tool first."
    tool = registry[name]
    avail = registry.availability(name, refresh=True)
    if not avail.ok:
        return f"💥 {name} is unavailable: {avail.reason}"
    with tempfile.TemporaryDirectory(prefix="gpt4tools-warmup-") as tmp:
        store = ImageStore(tmp)
        parts = [store.add_upload(paths.assets_dir() / "chelsea.jpg") if a.kind == "image"
                 else "what is in the image?" if a.name == "question" else "a cat" for a in tool.spec.args]
        t0 = time.perf_counter()
        try:
            tool(tool.spec.join_input(parts), store)
        except Exception as e:  # shown, not raised: a broken tool must not break the tab
            return f"💥 {name} failed: {type(e).__name__}: {e}"
    return f"{name} ran in {time.perf_counter() - t0:.1f} s; its models stay loaded. " + _cache_text()


def _unloaded(gone: list[str]) -> tuple:
    """The cache line and the refreshed "Loaded model" list after an unload."""
    note = f" (unloaded {', '.join(gone)})" if gone else ""
    return _cache_text() + note, gr.Dropdown(choices=CACHE.keys(), value=None)


def unload_all() -> tuple:
    """The Tools tab's "Unload all": every cached model (the empty prefix matches every key)."""
    return _unloaded(CACHE.unload(""))


def tools_tab(registry) -> None:
    if registry is None:
        gr.Markdown("No tool registry: the agent could not be built (see the status line in Chat).")
        return
    names = list(registry)
    table = gr.Dataframe(_tool_rows(registry), interactive=False, wrap=True, elem_id="tools_table",
                         label=f"{len(names)} tools", max_height=900,
                         column_widths=["19%", "7%", "27%", "17%", "8%", "6%", "8%", "8%"])
    cache_md = gr.Markdown(_cache_text(), elem_id="cache_status")
    with gr.Row():
        pick = gr.Dropdown(names, label="Tool", value=None, scale=3)
        load_btn = gr.Button("Load (runs it once)", scale=1)
    with gr.Row():
        loaded = gr.Dropdown(CACHE.keys(), label="Loaded model", value=None, scale=3)
        unload_btn = gr.Button("Unload", scale=1)
        unload_all_btn = gr.Button("Unload all", scale=1)
    refresh_btn = gr.Button("Re-check availability", size="sm")

    def refresh(note: str = ""):
        for n in names:
            registry.availability(n, refresh=True)
        return _tool_rows(registry), note or _cache_text(), gr.Dropdown(choices=CACHE.keys(), value=None)

    def unload(key: str | None):
        return _unloaded(CACHE.unload(key) if key else [])  # no key chosen: unload nothing

    load_btn.click(lambda n: refresh(warm_up(registry, n)), pick, [table, cache_md, loaded],
                   concurrency_limit=1, concurrency_id=HEAVY, api_visibility="private")
    unload_btn.click(unload, loaded, [cache_md, loaded], api_visibility="private")
    unload_all_btn.click(unload_all, None, [cache_md, loaded], api_visibility="private")
    refresh_btn.click(refresh, None, [table, cache_md, loaded], api_visibility="private")


# -- shared job controls --------------------------------------------------------------------
def _jobs_disabled(runner: JobRunner | None, enabled: bool) -> bool:
    if runner is None or not enabled:
        gr.Markdown("Jobs are disabled in this app (it is public, or started without a job runner). "
                    "Run `python app.py --jobs` on a trusted machine to use this tab.")
        return True
    return False


def _watch(runner: JobRunner, kind: str, progress: gr.Progress) -> Iterator[Snapshot | None]:
    """Follow the current job of `kind` until it ends, moving the progress bar."""
    job = runner.current(kind)
    if job is None:
        yield None
        return
    while True:
        snap = job.poll()
        if snap.total:
            stage = (snap.events[-1].get("stage") if snap.events else None) or kind  # data build names its stages
            progress((min(snap.done or 0, snap.total), snap.total), desc=str(stage), unit="steps")
        else:
            progress(None, desc=f"{kind}: {snap.state}")
        yield snap
        if not snap.running:
            return
        time.sleep(POLL_S)


def _status(snap: Snapshot | None) -> str:
    if snap is None:
        return "No job started in this app yet."
    icon = {"running": "⏳", "finished": "✅", "failed": "💥", "stopped": "⏹️"}[snap.state]
    return f"{icon} {snap.summary()}"


@contextmanager
def _refused_as_errors():
    """A refused form value or job start becomes the message the browser shows."""
    try:
        yield
    except (Refused, JobError) as e:
        raise gr.Error(str(e)) from None


def _start(runner: JobRunner, kind: str, command: str, args: list[str], **kw) -> str:
    with _refused_as_errors():
        job = runner.start(kind, command, args, **kw)
    return f"⏳ started: `python -m gpt4tools {command} {shlex.join(job.argv[4:])}`"


def resume_choices(runner: JobRunner, kind: str) -> list[tuple[str, str]]:
    return [(p.name, str(p)) for p in runner.resumable(kind)]


def resume(runner: JobRunner, kind: str, run_dir: str | None) -> str:
    """Start a run folder's job again with its recorded options, checked again as a form's would be."""
    if not run_dir:
        raise gr.Error("Choose a run to resume first.")
    with _refused_as_errors():
        saved = runner.saved(kind, run_dir)
        words = saved["args"][1:] if saved["command"] == "data" else saved["args"]  # data: after "build"
        jobargs.parse_options(saved["command"], shlex.join(words))
        job = runner.resume(kind, run_dir, saved)
    return f"⏳ resumed in {job.run_dir}: `python -m gpt4tools {saved['command']} {shlex.join(job.argv[4:])}`"


def _resume_controls(demo: gr.Blocks, runner: JobRunner, kind: str) -> tuple[gr.Dropdown, gr.Button]:
    """A list of this kind's earlier run folders and a button that continues the chosen one."""
    with gr.Row():
        pick = gr.Dropdown(resume_choices(runner, kind), value=None, scale=4, elem_id=f"{kind}_resume_pick",
                           label="Earlier runs (resume: same options, same folder; it continues where it stopped)")
        button = gr.Button("Resume", scale=1, elem_id=f"{kind}_resume")
    demo.load(lambda: gr.Dropdown(choices=resume_choices(runner, kind)), None, pick, api_visibility="private")
    return pick, button


def _wire_resume(runner: JobRunner, kind: str, controls: tuple, status, start_button: gr.Button, watch, outputs,
                 show_progress_on, stopped) -> None:
    """Resume starts the chosen run and follows it like Start; either refreshes the list of runs, and
    so does the end of a Stop (`stopped`, its event): the list leaves out the running job, and the run
    just stopped is the one a user wants to resume, without reloading the page."""
    pick, button = controls
    refresh = lambda: gr.Dropdown(choices=resume_choices(runner, kind))  # noqa: E731
    button.click(lambda run_dir: resume(runner, kind, run_dir), pick, status, concurrency_limit=1,
                 api_visibility="private").success(
        watch, None, outputs, api_visibility="private", show_progress_on=show_progress_on, **WATCH)
    for b in (button, start_button):
        b.click(refresh, None, pick, api_visibility="private")
    stopped.then(refresh, None, pick, api_visibility="private")


def _stop(runner: JobRunner, kind: str, grace_s: float = 10.0) -> str:
    job = runner.current(kind)
    if job is None:
        return "No job to stop."
    job.stop(grace_s)
    return _status(job.poll())


def _stop_training(runner: JobRunner) -> Iterator[str]:
    """Stop a training run without losing its steps: it saves at the end of the step in progress,
    which on a CPU can take minutes, so the wait is sized from its measured steps (and said)."""
    job = runner.current("train")
    snap = job.poll() if job else None
    if snap is None or not snap.running:
        yield _status(snap)
        return
    grace = trainplan.stop_grace_s(snap.events)
    yield (f"⏹️ Stopping: the run saves a checkpoint when its step in progress ends (waiting up to "
           f"{grace / 60:.1f} min before it is killed)…")
    yield _stop(runner, "train", grace)


# -- Benchmark ------------------------------------------------------------------------------
def _usable(path: Path) -> bool:
    try:
        jobargs.path_inside("--data", str(path))
    except Refused:
        return False
    return True


# What builds, jobs and runs write beside their data: never a benchmark file.
_NOT_BENCHMARKS = {"stats.json", "live.json", "job.json", "run.json", "scores.json", "events.jsonl", "metrics.jsonl",
                   "progress.jsonl"}


def annotation_files() -> list[tuple[str, str]]:
    """Benchmark-shaped files under data/ and runs/data/ (label relative to the repo); not a
    symlink that leads out of the job folders (a job would refuse it)."""
    found = []
    for root in (paths.REPO / "data", paths.runs_dir() / "data"):
        if root.is_dir():
            found += [p for p in root.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file()
                      and p.name not in _NOT_BENCHMARKS and _usable(p)]
    committed = [str(paths.REPO / s) for s in benchruns.COMMITTED_SPLITS]
    # The committed splits first, in their order: what a new user runs; then the rest by name.
    ordered = sorted(found, key=lambda p: (committed.index(str(p)) if str(p) in committed else len(committed), p))
    label = lambda p: str(p.relative_to(paths.REPO)) if paths.REPO in p.parents else str(p)  # noqa: E731
    return [(label(p), str(p)) for p in ordered[:500]]


def is_conversations(path: str | Path) -> bool:
    """Whether a benchmark file holds conversations (bench-chat) rather than annotations (bench):
    its first line is an object with "turns"."""
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline() or "null")
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and isinstance(first.get("turns"), list)


def bench_runs() -> list[tuple[str, str]]:
    """Finished runs of both benchmarks: local (runs/bench*/*, newest first), then committed (docs/results/*)."""
    return benchruns.run_choices()


def is_chat_report(report: dict) -> bool:
    return "turns" in report and "per_category" in report


def chat_tables(reports: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """bench-chat summaries: (overall: one row per run, per category: one row per run and category)."""
    def row(run: str, r: dict) -> dict:
        lat = r["latency_s"]
        return {"Run": run, "Turns": r["turns"]["n"], "Turn success %": _pct(r["turns"]["rate"]),
                "Conversation success %": _pct(r["conversations"]["rate"]),
                "Right image %": _pct(r["right_image"]["rate"]),
                "Invented tools": r["invented_tool_turns"], "False claims": r["false_claim_turns"],
                "First token s (median)": lat["first_token_s"]["median"], "Turn s (median)": lat["turn_s"]["median"],
                "Turn s (p95)": lat["turn_s"]["p95"]}

    overall = [row(run, r) for run, r in reports.items()]
    per_cat = [{"Run": run, "Category": c, "n": v["n"], "Turn success %": _pct(v["rate"])}
               for run, r in reports.items() for c, v in r["per_category"].items()]
    return pd.DataFrame(overall), pd.DataFrame(per_cat, columns=["Run", "Category", "n", "Turn success %"])


def chat_chart(reports: dict[str, dict]):
    """Grouped horizontal bars: turn success per category (and overall), one colour per run."""
    as_sr = {run: {"SR": r["turns"]["rate"], "per_tool": {c: {"SR": v["rate"]} for c, v in r["per_category"].items()}}
             for run, r in reports.items()}
    fig = sr_chart(as_sr)
    fig.axes[0].set_xlabel("turn success (%)")
    return fig


def report_views(reports: dict[str, dict]) -> tuple:
    """(overall table, detail table, chart) for runs of one benchmark (the chat kind when any is)."""
    chat = {k: v for k, v in reports.items() if is_chat_report(v)}
    if chat:
        return (*chat_tables(chat), chat_chart(chat))
    if not reports:
        return None, None, None
    return (*scores_tables(reports), sr_chart(reports))


def _pct(x) -> float | None:
    return None if x is None else round(100 * x, 1)


def scores_tables(reports: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(overall: one row per run, per tool: one row per run and tool), metrics in %."""
    overall = [{"Run": run, "n": r["n"], "Coverage %": _pct(r.get("coverage")),
                **{f"{m} %": _pct(r[m]) for m in METRICS}} for run, r in reports.items()]
    per_tool = [{"Run": run, "Tool": tool, "n": t["n"], **{f"{m} %": _pct(t[m]) for m in METRICS}}
                for run, r in reports.items() for tool, t in r["per_tool"].items()]
    cols = [f"{m} %" for m in METRICS]
    return (pd.DataFrame(overall, columns=["Run", "n", "Coverage %", *cols]),
            pd.DataFrame(per_tool, columns=["Run", "Tool", "n", *cols]))


def sr_chart(reports: dict[str, dict]):
    """Grouped horizontal bars: SR per tool (and overall), one colour per run."""
    from matplotlib.figure import Figure  # no pyplot: no global state in a server

    tools = ["all"] + sorted({t for r in reports.values() for t in r["per_tool"]})
    fig = Figure(figsize=(8, 1.5 + 0.35 * len(tools) * max(1, len(reports)) ** 0.5), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / max(1, len(reports))
    for i, (run, r) in enumerate(reports.items()):
        values = [100 * (r["SR"] if t == "all" else (r["per_tool"].get(t) or {}).get("SR") or 0) for t in tools]
        ys = [k + i * height for k in range(len(tools))]
        bars = ax.barh(ys, values, height=height, label=run)
        ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=7)
    ax.set_yticks([k + 0.4 - height / 2 for k in range(len(tools))], tools, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("success rate SR (%)")
    if len(reports) > 1:
        ax.legend(fontsize=7, loc="lower right")
    return fig


def bench_views(data: str | None, snap: Snapshot | None = None) -> tuple:
    """(heading, overall, detail, chart): a finished job's run (its --data wins over the form's)
    beside the earlier runs, committed and local, that scored the same file."""
    this_run: dict[str, dict] = {}
    if snap is not None:
        data = benchruns.data_of_argv(snap.argv) or data
        if not snap.running:
            this_run = {f"{snap.run_dir.name} (this run)": r for r in _load_reports([str(snap.run_dir)]).values()}
    if not data:
        return "Choose a data file to see the earlier runs on it.", *report_views({})
    earlier = benchruns.runs_on(data, exclude=snap.run_dir if snap else None)
    reports = {**this_run, **benchruns.reports_of(earlier)}
    label = benchruns.data_label(data)
    if not reports:
        return f"No run has scored `{label}` yet: this will be the first.", *report_views({})
    shown = dict(list(reports.items())[: benchruns.CHART_RUNS])
    overall, detail, _ = report_views(reports)
    heading = (f"**{len(reports)} run(s) on `{label}`** ({'this run first, ' if this_run else ''}local runs, "
               f"then committed ones under docs/results/; the chart shows the first {len(shown)})")
    return heading, overall, detail, report_views(shown)[2]


def _load_reports(run_dirs: list[str]) -> dict[str, dict]:
    """Run folder name -> its scores.json (folders without a readable one are left out)."""
    return benchruns.reports_of([benchruns.BenchRun(Path(d).name, Path(d), None) for d in run_dirs or []])


def keep_upload(upload: str) -> str:
    """An uploaded benchmark file, copied under runs/data/uploads/: inside the folders a job may
    read, and listed by the file dropdown later. Only gradio's own upload copies are taken."""
    from gradio.utils import get_upload_folder

    source = Path(upload).resolve()
    if not source.is_relative_to(Path(get_upload_folder()).resolve()) or not source.is_file():
        raise Refused(f"{upload!r} is not a file uploaded to this app")
    if source.suffix.lower() not in (".json", ".jsonl"):
        raise Refused(f"{source.name}: a benchmark file is .json or .jsonl")
    folder = paths.runs_dir() / "data" / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"{time.strftime('%Y%m%d-%H%M%S')}_{uuid.uuid4().hex[:8]}{source.suffix.lower()}"
    shutil.copyfile(source, kept)
    return str(kept)


def bench_args(data: str, baseline: bool, model: str, adapter: str, backend: str, device: str,
               limit: float) -> list[str]:
    """The options of `bench` (an annotation file) or `bench-chat` (a conversations file: `limit`
    counts conversations). Raises Refused for a value no job may run with."""
    if not data:
        raise gr.Error("Choose or upload an annotation file first.")
    data = check_value("bench", "--data", data)  # before is_conversations opens it
    command = "bench-chat" if is_conversations(data) else "bench"
    limit_args = ["--limit", check_value(command, "--limit", limit)] if limit else []
    if baseline and command == "bench-chat":
        raise gr.Error("The always-no-tool baseline scores annotation files; a conversations file needs a model.")
    if baseline:
        return ["--data", data, "--baseline", "no-tool", *limit_args]
    args = ["--data", data, "--backend", check_value(command, "--backend", backend),
            "--model", check_value(command, "--model", model.strip() or "default", served=backend == "openai"),
            "--device", check_value(command, "--device", device.strip() or "cpu")]
    if adapter.strip():
        args += ["--adapter", check_value(command, "--adapter", adapter.strip())]
    return args + limit_args


def _bench_form(demo: gr.Blocks, runner: JobRunner) -> dict:
    """The Benchmark tab's components, by name."""
    from gpt4tools.llm import BACKENDS

    with gr.Row():
        with gr.Column(scale=1):
            files = annotation_files()
            data = gr.Dropdown(files, elem_id="bench_data", value=benchruns.default_data(files),
                               label="Annotation file (data/, runs/data/); conversations.jsonl runs bench-chat")
            upload = gr.File(label="…or upload one (.json / .jsonl)", file_types=[".json", ".jsonl"], type="filepath")
            baseline = gr.Checkbox(label="Always-no-tool baseline (no model)", elem_id="bench_baseline")
            model = gr.Textbox("default", label="Model: default, a local path, a hub id, or the served model name",
                               elem_id="bench_model")
            adapter = gr.Textbox("", label="Adapter folder (blank: the model's default; none: base model only)")
            with gr.Row():
                backend = gr.Dropdown(list(BACKENDS), value="auto", label="Backend", elem_id="bench_backend")
                device = gr.Textbox("cpu", label="Device")
            base_url = gr.Textbox("", label="Server URL (openai backend; default $OPENAI_BASE_URL)",
                                  elem_id="bench_url")
            limit = gr.Number(0, precision=0, minimum=0, label="Only the first N records (0: all)")
            with gr.Row():
                run_btn = gr.Button("Run benchmark", variant="primary", elem_id="bench_run")
                stop_btn = gr.Button("Stop", elem_id="bench_stop")
                watch_btn = gr.Button("Watch", elem_id="bench_watch")
            resume = _resume_controls(demo, runner, "bench")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="bench_status")
            log_box = gr.Textbox(label="Log", lines=8, max_lines=8, autoscroll=True, elem_id="bench_log")
            heading = gr.Markdown(elem_id="bench_heading")
            empty = scores_tables({})
            overall = gr.Dataframe(empty[0], label="Overall", elem_id="bench_overall", interactive=False)
            per_tool = gr.Dataframe(empty[1], label="Per tool (bench) or per category (bench-chat)",
                                    interactive=False, wrap=True, elem_id="bench_detail", max_height=400)
            chart = gr.Plot(label="Success rate per tool", elem_id="bench_chart")
    with gr.Accordion("Compare any runs (runs/bench*/*, docs/results/*)", open=False):
        with gr.Row():
            runs = gr.Dropdown(bench_runs(), multiselect=True, label="Runs", scale=4)
            refresh_runs = gr.Button("Refresh list", scale=1)
        cmp_table = gr.Dataframe(scores_tables({})[0], label="Overall", interactive=False)
        cmp_chart = gr.Plot(label="SR per tool")
    return dict(locals())


def bench_tab(demo: gr.Blocks, runner: JobRunner | None, enabled: bool) -> tuple | None:
    """The tab; returns (refresh, file dropdown) for the app to re-list the files when the tab is
    shown again (a Data build may have written new ones meanwhile)."""
    if _jobs_disabled(runner, enabled):
        return None
    f = _bench_form(demo, runner)

    def start(data, upload, baseline, model, adapter, backend, device, base_url, limit):
        with _refused_as_errors():
            source = keep_upload(upload) if upload else data
            url = check_url("Server URL", base_url) if backend == "openai" and base_url.strip() else ""
            args = bench_args(source, baseline, model, adapter, backend, device, limit)
        require_files("--data", args)
        # The URL travels as OPENAI_BASE_URL; the runner decides whether the API key goes with it.
        env = {"OPENAI_BASE_URL": url} if url else None
        name = f"{Path(source or 'data').stem}_{'baseline' if baseline else Path(model or 'default').name}"
        command = "bench-chat" if is_conversations(args[1]) else "bench"
        return _start(runner, "bench", command, args, name=name, out_flag="--out", env=env)

    def watch(data=None, progress=gr.Progress()):
        shown = False
        for snap in _watch(runner, "bench", progress):
            # The tables are read once while the job runs (earlier runs) and once at its end (this run too).
            if snap is None or not snap.running or not shown:
                (heading, *tables), shown = bench_views(data, snap), True
            else:
                heading, tables = gr.skip(), (gr.skip(),) * 3
            yield (_status(snap), snap.log_tail if snap else "", *tables, heading)

    def compare(selected):
        overall, _, chart = report_views(benchruns.reports_of_folders(selected))
        return overall, chart

    status, log_box = f["status"], f["log_box"]
    # The heading goes last: /bench_watch's first five outputs stay what API clients already read.
    outputs = [status, log_box, f["overall"], f["per_tool"], f["chart"], f["heading"]]
    views = [f["heading"], f["overall"], f["per_tool"], f["chart"]]
    inputs = [f[k] for k in ("data", "upload", "baseline", "model", "adapter", "backend", "device", "base_url",
                             "limit")]
    f["run_btn"].click(start, inputs, status, concurrency_limit=1, api_name="bench_start").success(
        watch, None, outputs, api_name="bench_watch", show_progress_on=log_box, **WATCH)
    f["watch_btn"].click(watch, f["data"], outputs, api_visibility="private", show_progress_on=log_box, **WATCH)
    f["data"].change(bench_views, f["data"], views, api_visibility="private")
    demo.load(bench_views, f["data"], views, api_visibility="private")
    stopped = f["stop_btn"].click(lambda: _stop(runner, "bench"), None, status, api_name="bench_stop")
    f["refresh_runs"].click(lambda: gr.Dropdown(choices=bench_runs()), None, f["runs"], api_visibility="private")
    f["runs"].change(compare, f["runs"], [f["cmp_table"], f["cmp_chart"]], api_visibility="private")
    _wire_resume(runner, "bench", f["resume"], status, f["run_btn"], watch, outputs, log_box, stopped)
    demo.load(lambda: _status(runner.current("bench") and runner.current("bench").poll()), None, status,
              api_visibility="private")
    return lambda: gr.Dropdown(choices=annotation_files()), f["data"]


# -- Data and Train -------------------------------------------------------------------------
def data_args(split: str, records: float, teacher: str, backend: str, model: str, base_url: str,
              extra: str) -> list[str]:
    """`data build` options from the form; the run folder becomes --out (see JobRunner.start).
    Raises Refused for a value or an option no job may run with."""
    def field(option: str, value, **kw) -> list[str]:
        return [option, check_value("data", option, value, **kw)]

    args = ["build", *field("--split", split), *field("--teacher", teacher)]
    if split == "train" and records:
        args += field("--train-records", records)
    if teacher != "template":  # the LLM teacher and the paraphrasing route need a model
        served = backend == "openai"  # the model is a name sent to the server, not a file
        args += [*field("--backend", backend), *field("--model", model.strip() or "default", served=served)]
        # --base-url: the runner sees it and keeps the API key only for the operator's server.
        args += ["--base-url", check_url("--base-url", base_url)] if base_url.strip() else []
    taken = [a for a in args if a.startswith("--")]
    return args + jobargs.parse_options("data", extra or "", taken)


def data_views(folder: str | None, state: str = "finished") -> tuple:
    """(summary, counts, drop reasons, record-file choices, first record) of a build's output folder:
    its stats.json, or before there is one, the counts so far of its live.json (a running build's,
    or the last ones of a build that died)."""
    stats = databuild.load_stats(folder)
    failure = databuild.verdict(state, stats)
    lines = [failure] if failure else []
    live = None if stats else databuild.load_live(folder)
    if live:
        text, counts, drops = databuild.live_views(live, state)
        lines.append(text)
    else:
        lines.append(databuild.summary(stats) or ("The build writes its counts when it ends." if state == "running"
                                                  else "No stats.json in this folder."))
        counts, drops = databuild.counts_table(stats), databuild.drops_table(stats)
    files = databuild.record_files(folder)
    first = files[0][1] if files else None
    return ("\n\n".join(lines), counts, drops, gr.Dropdown(choices=files, value=first), show_record(first, 0))


def data_live_views(folder: str | None, seen: float | None) -> tuple[tuple | None, float | None]:
    """While a build runs: (summary, counts, drop reasons, and no change to the record browser) from
    its live.json, and the snapshot's time; None when there is none or it is the one `seen` already
    (the watcher polls twice a second, the builder writes every few seconds: no table is resent idle)."""
    live = databuild.load_live(folder)
    if live is None or (live["time"] is not None and live["time"] == seen):
        return None, seen
    return (*databuild.live_views(live), gr.skip(), gr.skip()), live["time"]


def show_record(path: str | None, index: float | None) -> str:
    if not path:
        return databuild.record_markdown(None, 0, 0)
    record, total = databuild.read_record(path, max(0, int(index or 0)))
    return databuild.record_markdown(record, max(0, int(index or 0)), total)


def step_record(path: str | None, index: float | None, delta: int) -> tuple[int, str]:
    """The record `delta` away from `index`, kept within the file."""
    if not path:
        return 0, show_record(None, 0)
    _, total = databuild.read_record(path, -1)
    index = min(max(0, int(index or 0) + delta), max(0, total - 1))
    return index, show_record(path, index)


def _data_form() -> dict:
    """The Data tab's build form (left column), by name."""
    from gpt4tools.data.build import SPLITS, TEACHERS, BuildConfig
    from gpt4tools.llm import NAMED_BACKENDS

    defaults = BuildConfig()
    with gr.Row():
        split = gr.Dropdown(list(SPLITS), value=defaults.split, elem_id="data_split",
                            label="Split (test: the 8 unseen tools; chat: held-out chat messages)")
        records = gr.Number(defaults.train_records, precision=0, minimum=0, label="Training records",
                            elem_id="data_records")
    teacher = gr.Dropdown(list(TEACHERS), value=defaults.teacher, label="Teacher (template: no model)",
                          elem_id="data_teacher")
    with gr.Row():
        backend = gr.Dropdown(list(NAMED_BACKENDS), value="openai", label="Teacher backend")
        model = gr.Textbox("default", label="Teacher model")
    base_url = gr.Textbox("", label="Teacher server URL (openai; default $OPENAI_BASE_URL)")
    extra = gr.Textbox("", label="More options (e.g. --no-sharegpt --seed 1; paths inside data/, runs/, "
                                 "assets/)", elem_id="data_extra")
    with gr.Row():
        run_btn = gr.Button("Start", variant="primary", elem_id="data_run")
        stop_btn = gr.Button("Stop")
        watch_btn = gr.Button("Watch")
    return dict(locals())


def _data_output(runner: JobRunner) -> dict:
    """The Data tab's view of a build's output folder (right column), by name."""
    folders = databuild.build_folders(runner.kind_dir("data"))
    folder = gr.Dropdown(folders, value=folders[0][1] if folders else None, elem_id="data_folder",
                         label="Build output (a finished job's run folder is chosen for you; data/: the committed one)")
    summary = gr.Markdown(elem_id="data_summary")
    with gr.Tab("Counts"):
        counts = gr.Dataframe(databuild.counts_table({}), interactive=False, elem_id="data_counts", max_height=360)
    with gr.Tab("Drop reasons"):
        drops = gr.Dataframe(databuild.drops_table({}), interactive=False, wrap=True, elem_id="data_drops",
                             max_height=360)
    with gr.Tab("Records"):
        with gr.Row():
            record_file = gr.Dropdown([], label="File", scale=3, elem_id="data_record_file")
            index = gr.Number(0, precision=0, minimum=0, label="Record # (from 0)", scale=1, elem_id="data_index")
            prev_btn = gr.Button("◀", scale=0, min_width=40)
            next_btn = gr.Button("▶", scale=0, min_width=40, elem_id="data_next")
        record = gr.Markdown(elem_id="data_record")  # gr.HTML evaluates templates, which the CSP forbids
    return dict(locals())


def data_tab(demo: gr.Blocks, runner: JobRunner | None, enabled: bool) -> None:
    if _jobs_disabled(runner, enabled):
        return
    gr.Markdown("Generate GPT4Tools records by self-instruction (`python -m gpt4tools data build`): image content "
                "→ teacher → filtered train/val records, the unseen-tool test set, or the chat evaluation set "
                "(this machine's tools, held-out chat messages). The files land in the run "
                "folder under runs/data/, where the Benchmark and Train tabs find them.")
    with gr.Row():
        with gr.Column(scale=1):
            f = _data_form()
            resume_controls = _resume_controls(demo, runner, "data")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="data_status")
            log_box = gr.Textbox(label="Log", lines=10, max_lines=10, autoscroll=True, elem_id="data_log")
            out = _data_output(runner)
    views = [out[k] for k in ("summary", "counts", "drops", "record_file", "record")]

    def watch(progress=gr.Progress()):
        seen = None  # the time of the live snapshot last shown
        for snap in _watch(runner, "data", progress):
            if snap is None:
                yield _status(snap), "", gr.skip(), *(gr.skip(),) * len(views)
                continue
            ended = not snap.running
            # The builder writes stats.json and the record files at its end: read them then (and once before);
            # meanwhile its live.json has the counts so far.
            if ended or snap.done in (None, 0):
                shown = data_views(str(snap.run_dir), snap.state)
            else:
                shown, seen = data_live_views(str(snap.run_dir), seen)
            status = shown[0].split("\n")[0] if shown and shown[0].startswith("💥") else _status(snap)
            folder = gr.Dropdown(choices=databuild.build_folders(runner.kind_dir("data")), value=str(snap.run_dir))
            yield (status, snap.log_tail, folder if ended else gr.skip(),
                   *(shown if shown else (gr.skip(),) * len(views)))

    def start(*values):
        with _refused_as_errors():
            args = data_args(*values)
        return _start(runner, "data", "data", args, name=f"build-{values[0]}", out_flag="--out")

    outputs = [status, log_box, out["folder"], *views]
    inputs = [f[k] for k in ("split", "records", "teacher", "backend", "model", "base_url", "extra")]
    f["run_btn"].click(start, inputs, status, concurrency_limit=1, api_visibility="private").success(
        watch, None, outputs, api_visibility="private", show_progress_on=log_box, **WATCH)
    f["watch_btn"].click(watch, None, outputs, api_visibility="private", show_progress_on=log_box, **WATCH)
    stopped = f["stop_btn"].click(lambda: _stop(runner, "data"), None, status, api_visibility="private")
    _wire_resume(runner, "data", resume_controls, status, f["run_btn"], watch, outputs, log_box, stopped)
    out["folder"].change(data_views, out["folder"], views, api_visibility="private")
    demo.load(data_views, out["folder"], views, api_visibility="private")
    out["record_file"].change(lambda path: (0, show_record(path, 0)), out["record_file"],
                              [out["index"], out["record"]], api_visibility="private")
    out["index"].submit(show_record, [out["record_file"], out["index"]], out["record"], api_visibility="private")
    for button, delta in ((out["prev_btn"], -1), (out["next_btn"], 1)):
        button.click(lambda path, i, d=delta: step_record(path, i, d), [out["record_file"], out["index"]],
                     [out["index"], out["record"]], api_visibility="private")


def train_args(base_model: str, data: str, max_steps: float, epochs: float, lr: float, micro_batch: float,
               grad_accum: float, device: str, extra: str) -> list[str]:
    """`train` options from the form; a blank field means TrainConfig's default."""
    from gpt4tools.train import TrainConfig

    defaults = TrainConfig()

    def field(option: str, value) -> list[str]:
        return [option, check_value("train", option, value)]

    records = jobargs.parse_options("train", shlex.join(["--data", *(shlex.split(data or "") or defaults.data)]))
    args = [*field("--base-model", base_model.strip() or defaults.base_model), *records,
            *field("--epochs", epochs), *field("--learning-rate", lr), *field("--micro-batch-size", micro_batch),
            *field("--gradient-accumulation", grad_accum), *field("--device", device.strip() or defaults.device)]
    if max_steps:
        args += field("--max-steps", max_steps)
    taken = [a for a in args if a.startswith("--")]
    return args + jobargs.parse_options("train", extra or "", taken)


def require_files(option: str, args: list[str]) -> None:
    """Every value of `option` in checked `args` must be an existing file (a form may name any path)."""
    if option not in args:
        return
    for value in args[args.index(option) + 1:]:
        if value.startswith("--"):
            break
        if not Path(value).is_file():
            raise gr.Error(f"{option}: {value} does not exist (choose a file under data/ or runs/)")


def train_config(args: list[str]):
    """The TrainConfig a checked `train` command line means, parsed by the trainer's own parser."""
    from gpt4tools.train import TrainConfig, parser

    try:
        return TrainConfig(**vars(parser().parse_args(args)))
    except (ValueError, SystemExit) as e:  # argparse exits on a value it cannot read
        raise gr.Error(f"These training options do not parse: {e}") from None


def train_tab(demo: gr.Blocks, runner: JobRunner | None, enabled: bool) -> None:
    if _jobs_disabled(runner, enabled):
        return
    f = _train_form(demo, runner)

    def watch(progress=gr.Progress()):
        drawn = None  # how many metric lines the curves show: redrawn only when a step was logged
        for snap in _watch(runner, "train", progress):
            running = bool(snap and snap.running)
            eta = trainplan.eta_text(snap.events, running, snap.state) if snap else ""
            table = gr.skip() if running else trainplan.adapters_table(runner.kind_dir("train"))
            stopping = running and runner.current("train").stopped  # Stop's own message says how long
            events = snap.events if snap else []
            curves = gr.skip() if len(events) == drawn else trainplan.curves_figure(events)
            drawn = len(events)
            yield (gr.skip() if stopping else _status(snap), eta, curves, snap.log_tail if snap else "", table)

    def stop():  # a generator function, so that gradio streams its first message
        yield from _stop_training(runner)

    def start(*values):
        with _refused_as_errors():
            args = train_args(*values)
        require_files("--data", args)
        size = trainplan.estimate(train_config(args), _prior(runner, args))
        name = Path(values[1].split()[0] if values[1].strip() else "train").stem
        started = _start(runner, "train", "train", args, name=name, out_flag="--out-dir", events="metrics.jsonl")
        return started, size.text()

    inputs = [f[k] for k in ("base_model", "data", "max_steps", "epochs", "lr", "micro_batch", "grad_accum",
                             "device", "extra")]
    outputs = [f[k] for k in ("status", "eta", "curves", "log_box", "adapters")]
    status, log_box = f["status"], f["log_box"]
    f["run_btn"].click(start, inputs, [status, f["estimate"]], concurrency_limit=1, api_visibility="private").success(
        watch, None, outputs, api_visibility="private", show_progress_on=log_box, **WATCH)
    f["watch_btn"].click(watch, None, outputs, api_visibility="private", show_progress_on=log_box, **WATCH)
    stopped = f["stop_btn"].click(stop, None, status, api_visibility="private")
    f["estimate_btn"].click(lambda *v: estimate_text(runner, *v), inputs, f["estimate"], api_visibility="private",
                            concurrency_limit=1, concurrency_id=HEAVY)
    demo.load(lambda *v: _quiet(estimate_text, runner, *v), inputs, f["estimate"], api_visibility="private")
    _wire_resume(runner, "train", f["resume"], status, f["run_btn"], watch, outputs, log_box, stopped)


def _quiet(fn, *args) -> str:
    """A page load shows a form's problem as text; a toast before the user did anything would confuse."""
    try:
        return fn(*args)
    except gr.Error as e:
        return f"⚠️ {e.message}"


def _prior(runner: JobRunner, args: list[str]):
    return trainplan.speed_prior(args[args.index("--base-model") + 1], runner.kind_dir("train"))


def estimate_text(runner: JobRunner, *values) -> str:
    """The size estimate of the form's run; bad values are an error message, as Start would give."""
    with _refused_as_errors():
        args = train_args(*values)
    require_files("--data", args)
    try:
        return trainplan.estimate(train_config(args), _prior(runner, args)).text()
    except ValueError as e:
        raise gr.Error(str(e)) from None


def _train_form(demo: gr.Blocks, runner: JobRunner) -> dict:
    """The Train tab's components, by name."""
    from gpt4tools.train import TrainConfig

    defaults = TrainConfig()
    gr.Markdown("LoRA-tune the LLM on GPT4Tools records: `python -m gpt4tools train` (paper settings by default). "
                "The adapter, its prompt template and `metrics.jsonl` land in the run folder; a finished run's "
                "adapter can serve the chat (Chat tab, where the operator allows switching).")
    with gr.Row():
        with gr.Column(scale=1):
            base_model = gr.Textbox(defaults.base_model, label="Base model", elem_id="train_base_model")
            data = gr.Textbox(" ".join(defaults.data), label="Training records (space-separated paths)",
                              elem_id="train_data")
            with gr.Row():
                max_steps = gr.Number(defaults.max_steps, precision=0, minimum=0, label="Max steps (0: from epochs)",
                                      elem_id="train_max_steps")
                epochs = gr.Number(defaults.epochs, minimum=0, label="Epochs")
            with gr.Row():
                lr = gr.Number(defaults.learning_rate, label="Learning rate")
                device = gr.Textbox(defaults.device, label="Device")
            with gr.Row():
                micro_batch = gr.Number(defaults.micro_batch_size, precision=0, minimum=1, label="Micro batch")
                grad_accum = gr.Number(defaults.gradient_accumulation, precision=0, minimum=1,
                                       label="Gradient accumulation", elem_id="train_grad_accum")
            extra = gr.Textbox("", label="More options (e.g. --cutoff-len 1024 --lora-r 8)", elem_id="train_extra")
            estimate_btn = gr.Button("Estimate size and time", elem_id="train_estimate_btn")
            with gr.Row():
                run_btn = gr.Button("Start training", variant="primary", elem_id="train_run")
                stop_btn = gr.Button("Stop", elem_id="train_stop")
                watch_btn = gr.Button("Watch", elem_id="train_watch")
            resume = _resume_controls(demo, runner, "train")
        with gr.Column(scale=2):
            estimate = gr.Markdown(elem_id="train_estimate")
            status = gr.Markdown(elem_id="train_status")
            eta = gr.Markdown(elem_id="train_eta")
            curves = gr.Plot(label="Loss and tokens/s per step", show_label=False, elem_id="train_curves")
            log_box = gr.Textbox(label="Log", lines=8, max_lines=8, autoscroll=True, elem_id="train_log")
    with gr.Accordion("Finished adapters (runs/train/*, adapters/*): command, data checksum, time", open=True):
        # Widths that keep the checksum, the time and the command in view (a run folder's path wraps).
        adapters = gr.Dataframe(trainplan.adapters_table(runner.kind_dir("train")), interactive=False, wrap=True,
                                elem_id="train_adapters", max_height=300,
                                column_widths=["20%", "9%", "6%", "5%", "6%", "6%", "10%", "9%", "29%"])
    demo.load(lambda: trainplan.adapters_table(runner.kind_dir("train")), None, adapters, api_visibility="private")
    return dict(locals())
