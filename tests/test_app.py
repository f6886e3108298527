"""The web app without a server: Step -> chat message rendering, chat turns through
ChatApp with the scripted agent and real small tools, the file guard, and build_app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets"

gr = pytest.importorskip("gradio")
from gpt4tools.agent import Action, Agent, Error, Final, ImageStep, ObservationStep, Thought  # noqa: E402
from gpt4tools.registry import ToolRegistry  # noqa: E402
from gpt4tools.ui import web as app  # noqa: E402
from gpt4tools.ui import webchat as W  # noqa: E402

from fakes import Ask, Crash, EchoPlanLLM, Invert, Missing, scripted_agent  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Session folders and served copies go to a temporary folder."""
    monkeypatch.setenv("GPT4TOOLS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))


def run_turn(chat: W.ChatApp, text: str, files=(), state=None):
    outputs = list(chat.respond({"text": text, "files": [str(f) for f in files]}, state))
    history, _, state = outputs[-1]
    return history, state, outputs


def images(messages) -> list[dict]:
    return [m.content for m in messages if isinstance(m.content, dict) and "path" in m.content]


# -- pure rendering ------------------------------------------------------------------------
def test_turn_view_renders_every_step_kind():
    view = W.TurnView(publish=lambda name: f"/served/{name.split('/')[-1]}")
    view.add(Thought("Thought: Do I need"))
    view.add(Thought("Thought: Do I need to use a tool? Yes\nAction: Invert The Image"))
    assert len(view.messages) == 1  # streaming updates one pending message
    thinking = view.messages[0]
    assert thinking.metadata == {"title": "💭 Thinking…", "status": "pending"} and "Action: Invert" in thinking.content

    view.add(Action("Invert The Image", "image/abcdefgh.png"))
    assert thinking not in view.messages  # the parsed call replaces the raw text
    tool = view.messages[0]
    assert tool.metadata["title"] == "🛠️ Running Invert The Image…" and tool.metadata["status"] == "pending"
    assert tool.content == "**Input:** `image/abcdefgh.png`"

    view.add(ObservationStep("Invert The Image", "Result saved as image/x1_invert_abcdefgh_abcdefgh.png"))
    assert tool.metadata["status"] == "done" and tool.metadata["duration"] >= 0
    assert "**Observation:** Result saved as image/x1_invert" in tool.content

    view.add(ImageStep("image/x1_invert_abcdefgh_abcdefgh.png", "/sessions/s/image/x1.png"))
    assert view.messages[-1].content == {"path": "/served/x1_invert_abcdefgh_abcdefgh.png",
                                         "alt_text": "image/x1_invert_abcdefgh_abcdefgh.png"}

    view.add(Thought("Thought: Do I need to use a tool? No\nAI: done"))
    view.add(Final("Here it is: image/x1_invert_abcdefgh_abcdefgh.png", ["image/x1_invert_abcdefgh_abcdefgh.png"]))
    assert view.messages[-1].content.startswith("Here it is") and not view.messages[-1].metadata
    assert len(view.messages) == 3  # tool, image (not shown twice), answer; no leftover thinking


def test_turn_view_errors_are_boom_messages():
    view = W.TurnView(publish=lambda name: None)
    view.add(Thought("gibberish"))
    view.add(Error("Could not read your output. Use the format."))
    assert view.messages[0].metadata == {"title": "💭 Model output", "status": "done"}  # kept, folded
    assert view.messages[1].metadata["title"].startswith("💥 Could not read")
    view.add(Action("Crash", "now"))
    view.add(ObservationStep("Crash", "Error: Crash failed (ZeroDivisionError: boom)", ok=False))
    assert view.messages[-1].metadata["title"] == "💥 Crash" and "ZeroDivisionError" in view.messages[-1].content
    view.add(Thought("Thought:"))
    view.fail(ConnectionError("server down"))
    assert view.messages[-1].metadata["title"] == "💥 The model failed"
    assert view.messages[-1].content == "ConnectionError: server down"


def test_fence_outlasts_backticks_in_model_text():
    fenced = W.fence("run ```rm``` now")
    assert fenced.startswith("````text\n") and fenced.endswith("\n````")


# -- chat turns ----------------------------------------------------------------------------
def test_upload_and_edit_returns_the_real_result():
    chat = W.ChatApp(scripted_agent())
    history, state, outputs = run_turn(chat, "please invert this", [ASSETS / "chelsea.jpg"])
    assert outputs[0][1].interactive is False  # the textbox is locked while the turn runs
    user_img, bot_img = images(history)
    assert bot_img["alt_text"].startswith("image/") and "_invert_" in bot_img["alt_text"]
    upload = Image.open(user_img["path"]).convert("RGB")
    result = Image.open(bot_img["path"]).convert("RGB")
    assert list(result.getdata()) == list(ImageOps.invert(upload).getdata())
    # served copies live in this session's private folder, never in the session store
    assert Path(bot_img["path"]).parent == state.folder and W.PRIVATE in Path(bot_img["path"]).parts
    titles = [m.metadata.get("title") for m in history if m.metadata]
    assert titles == ["🛠️ Invert The Image"]
    assert history[-1].content == f"Result saved as {bot_img['alt_text']}"


def test_second_turn_edits_the_previous_result():
    chat = W.ChatApp(scripted_agent())
    history, state, _ = run_turn(chat, "invert this", [ASSETS / "coffee.jpg"])
    first = images(history)[-1]["alt_text"]
    history, state, _ = run_turn(chat, "now invert it again", state=state)
    tool = [m for m in history if m.metadata.get("title") == "🛠️ Invert The Image"][-1]
    assert first in tool.content  # the chain reuses the last result
    original = Image.open(ASSETS / "coffee.jpg").convert("RGB")
    twice = Image.open(images(history)[-1]["path"]).convert("RGB")
    assert list(twice.getdata()) == list(original.getdata())  # inverted twice = the photo


def test_bad_uploads_are_visible_messages(tmp_path):
    chat = W.ChatApp(scripted_agent())
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (4, 4)).save(tiny)
    history, state, _ = run_turn(chat, "invert this", [text_file, tiny])
    refusals = [m.content for m in history if m.metadata.get("title") == "💥 Upload refused"]
    assert "notes.png" in refusals[0] and "not a readable image" in refusals[0]
    assert "tiny.png" in refusals[1] and "at least 16" in refusals[1]
    assert state.session.store.names() == []
    assert history[-1].content == "Please upload an image first."  # the turn still ran


def test_upload_alone_is_acknowledged_and_remembered():
    chat = W.ChatApp(scripted_agent())
    history, state, _ = run_turn(chat, "", [ASSETS / "coffee_sign.jpg"])
    [name] = state.session.store.names()
    assert [m.role for m in history] == ["user", "assistant"] and history[1].content == f"Received `{name}`."
    assert ([t.image for t in state.session.conversation.turns if t.image and t.role == "human"] == [name]
            and state.session.agent.llm.prompts == [])
    history, state, _ = run_turn(chat, "what size is it", state=state)  # the next turn finds the upload
    assert history[-2].content.endswith("**Observation:** The image is 600x400 pixels.")
    assert history[-1].content == "The image is 600x400 pixels."


def test_first_turn_waits_visibly_for_the_model():
    import time

    def slow_factory():
        time.sleep(0.2)
        return scripted_agent()

    chat = W.ChatApp(slow_factory)
    assert chat.holder.loading and chat.status() == "⏳ Loading the model…"
    history, _, outputs = run_turn(chat, "hello")
    assert outputs[0][0][-1].metadata["title"] == "⏳ Loading the model"
    assert history[-1].content == "You said: hello" and not any("Loading" in str(m.metadata) for m in history)


def test_files_served_to_another_session_are_not_uploads():
    chat = W.ChatApp(scripted_agent())
    history, _, _ = run_turn(chat, "invert this", [ASSETS / "chelsea.jpg"])
    theirs = images(history)[-1]["path"]  # a path a malicious API client could name
    history, state, _ = run_turn(chat, "invert this", [theirs])
    assert any(m.metadata.get("title") == "💥 Upload refused" for m in history)
    assert state.session.store.names() == []


def test_undo_and_clear():
    chat = W.ChatApp(scripted_agent())
    history, state, _ = run_turn(chat, "invert this", [ASSETS / "chelsea.jpg"])
    n_messages, n_turns = len(history), len(state.session.conversation.turns)
    history, state, _ = run_turn(chat, "invert it again", state=state)
    assert len(state.session.conversation.turns) == n_turns + 2
    history, state = chat.undo(state)
    assert len(history) == n_messages and len(state.session.conversation.turns) == n_turns
    history, state = chat.clear(state)
    assert history == [] and state.session.conversation.turns == [] and state.session.store.names() == []
    assert list(state.folder.iterdir()) == []


def test_plain_question_gets_a_plain_answer():
    chat = W.ChatApp(scripted_agent())
    history, _, _ = run_turn(chat, "hello there")
    assert [m.role for m in history] == ["user", "assistant"] and history[-1].content == "You said: hello there"


def test_tool_crash_and_llm_failure_keep_serving():
    chat = W.ChatApp(scripted_agent())
    history, state, _ = run_turn(chat, "crash please")
    assert any(m.metadata.get("title") == "💥 Crash" and "ZeroDivisionError" in m.content for m in history)

    class Down(EchoPlanLLM):
        def stream(self, prompt, **kw):
            raise ConnectionError("the LLM server is down")
            yield  # a generator, like a real backend

    broken = W.ChatApp(Agent(Down(), ToolRegistry([Invert()])))
    history, state, _ = run_turn(broken, "invert this")
    assert history[-1].metadata["title"] == "💥 The model failed" and "server is down" in history[-1].content
    assert not state.lock.locked()


def test_missing_model_is_explained_not_fatal():
    def factory():
        raise FileNotFoundError("weights 'gemma-3-270m' are not in checkpoints/ "
                                "(run: python -m gpt4tools weights fetch)")

    chat = W.ChatApp(factory)
    history, _, _ = run_turn(chat, "hello")
    assert history[-1].metadata["title"] == "💥 No model" and "weights fetch" in history[-1].content
    assert "could not be loaded" in chat.status() and "gemma-3-270m" in chat.status()
    demo = app.build_app(factory, registry=ToolRegistry([Invert(), Missing()]))  # the app still builds
    assert isinstance(demo.blocks, gr.Blocks)


def test_status_line_names_model_and_tool_count():
    chat = W.ChatApp(scripted_agent(), n_tools_total=31)
    assert chat.status() == "**Model:** `echo-plan` · **Adapter:** `none` · **Tools:** 3 of 31 available"

    from gpt4tools.llm.states import PromptStates

    states = PromptStates(capacity_mb=256, min_tokens=1)
    states.save(range(100), "a model's keys/values", 3 * 2**20)
    chat.holder.agent.llm.states_report = states.report  # a backend that keeps saved prompt states says so
    assert chat.status().endswith("· **Prompt cache:** 1 saved prompt states (3 MB of 256 MB), "
                                  "0 reused (0 tokens not encoded again)")


# -- the file guard ------------------------------------------------------------------------
def test_file_guard_serves_only_the_owner(tmp_path):
    guard = W.FileGuard()
    folder = guard.register("abc123", "owner-token")
    url = f"/gradio_api/file={folder}/x.png"
    assert guard.allows(url, "owner-token")
    assert not guard.allows(url, "someone-else") and not guard.allows(url, None)
    assert not guard.allows(f"/gradio_api/file={folder.parent}/zzz999/x.png", "owner-token")  # unknown folder
    assert not guard.allows(f"/gradio_api/file={folder}/../zzz999/x.png", "owner-token")  # traversal
    guard.forget("abc123")
    assert not folder.exists() and not guard.allows(url, "owner-token")


def test_build_app_exposes_the_documented_endpoints():
    demo = app.build_app(scripted_agent(), registry=ToolRegistry([Invert(), Ask(), Crash(), Missing()]),
                          runner=None, jobs=False)
    names = {fn.api_name for fn in demo.blocks.fns.values()}
    assert {"chat", "undo", "clear"} <= names
    assert demo.chat.status().startswith("**Model:** `echo-plan`")


# -- the other tabs' logic -------------------------------------------------------------------
def test_tools_tab_rows_and_warm_up():
    from gpt4tools.model_cache import CACHE
    from gpt4tools.ui import tabs as webtabs

    registry = ToolRegistry([Invert(), Missing()])
    rows = webtabs._tool_rows(registry)
    assert list(rows["Tool"]) == ["Invert The Image", "Missing"] and list(rows["Available"]) == ["✅", "❌"]
    assert "no-such-weights" in rows["Why not / how to enable"][1]
    assert webtabs.warm_up(registry, "Invert The Image").startswith("Invert The Image ran in")
    assert webtabs.warm_up(registry, "Missing").startswith("💥 Missing is unavailable")
    CACHE.get("test-model@cpu", lambda: object(), memory_mb=1)
    assert "`test-model@cpu`" in webtabs._cache_text()
    CACHE.unload("test-model@cpu")
    assert "test-model@cpu" not in webtabs._cache_text()


def test_benchmark_tables_and_chart_from_real_scores(tmp_path):
    from gpt4tools import bench, paths
    from gpt4tools.ui import tabs as webtabs

    from fakes import bench_records

    data = tmp_path / "runs" / "data" / "tiny.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in bench_records()))
    bench.run_bench(data, tmp_path / "runs" / "bench" / "a", baseline="no-tool")
    bench.run_bench(data, tmp_path / "runs" / "bench" / "b", baseline="no-tool", limit=5)
    listed = dict((path, label) for label, path in webtabs.annotation_files())
    assert str(data) in listed  # labelled relative to the repo when inside it (TMPDIR may be), else by full path
    assert listed[str(data)] in (str(data),
                                 str(data.relative_to(paths.REPO)) if paths.REPO in data.parents else str(data))
    runs = [(label, path) for label, path in webtabs.bench_runs() if not label.startswith("docs/")]  # committed
    assert sorted(label for label, _ in runs) == ["bench/a", "bench/b"]
    reports = webtabs._load_reports([path for _, path in sorted(runs)])
    overall, per_tool = webtabs.scores_tables(reports)
    assert overall.set_index("Run").loc["a", "SR %"] == 40.0 and overall.set_index("Run").loc["b", "n"] == 5
    assert set(per_tool["Tool"]) == {"Invert The Image", "no tool"}
    fig = webtabs.sr_chart(reports)
    bars = fig.axes[0].containers
    assert len(bars) == 2 and [b.get_width() for b in bars[0]] == [40.0, 0.0, 100.0]  # all, Invert, no tool


def test_the_benchmark_tab_runs_and_shows_the_conversation_benchmark(tmp_path, monkeypatch):
    """A conversations file starts bench-chat; its runs are listed beside bench runs and shown as
    turn/conversation success per category."""
    from gpt4tools import chatbench as cb
    from gpt4tools.ui import tabs as webtabs

    from fakes import scripted_agent

    monkeypatch.setenv("GPT4TOOLS_RUNS", str(tmp_path / "runs"))
    convs = [{"id": "t1", "category": "follow-up", "turns": [
        {"user": "invert this pls", "uploads": ["chelsea.jpg"],
         "expect": {"tools": ["Invert The Image"], "image": "upload:last", "result_image": True}},
        {"user": "and the sign?", "uploads": ["make:sign:OPEN"],
         "expect": {"tools": ["Ask"], "image": "upload:last", "result_image": False}}]}]
    data = tmp_path / "runs" / "data" / "conversations.jsonl"  # inside runs/: a job may read it
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps(c) + "\n" for c in convs))
    assert webtabs.is_conversations(data) and not webtabs.is_conversations(tmp_path / "missing.jsonl")
    cb.run(convs, scripted_agent(), tmp_path / "runs" / "bench-chat" / "mine")
    runs = dict(webtabs.bench_runs())
    assert "bench-chat/mine" in runs
    overall, per_category, chart = webtabs.report_views(webtabs._load_reports([runs["bench-chat/mine"]]))
    row = overall.set_index("Run").loc["mine"]
    assert row["Turns"] == 2 and row["Turn success %"] == 50.0 and row["Invented tools"] == 0  # turn 2: no tool
    assert per_category.to_dict("records") == [{"Run": "mine", "Category": "follow-up", "n": 2, "Turn success %": 50.0}]
    assert [b.get_width() for b in chart.axes[0].containers[0]] == [50.0, 50.0]
    with pytest.raises(gr.Error, match="needs a model"):
        webtabs.bench_args(str(data), True, "m", "", "auto", "cpu", 0)
    assert webtabs.bench_args(str(data), False, "default", "", "auto", "cpu", 1)[-2:] == ["--limit", "1"]


def test_job_forms_build_the_documented_command_lines():
    """Form values become checked options: paths absolute inside data/, runs/ or assets/ (the
    attacks on these forms are in test_attacks_jobs.py)."""
    from gpt4tools import paths
    from gpt4tools.ui import tabs as webtabs

    d = str(paths.REPO / "data" / "val.jsonl")
    assert webtabs.bench_args("data/val.jsonl", True, "m", "", "transformers", "cpu", 5) == \
        ["--data", d, "--baseline", "no-tool", "--limit", "5"]
    assert webtabs.bench_args(d, False, "m", "none", "openai", "", 0) == \
        ["--data", d, "--backend", "openai", "--model", "m", "--device", "cpu", "--adapter", "none"]
    assert webtabs.data_args("test", 10, "llm", "openai", "qwen", "http://x/v1", "--seed 2") == \
        ["build", "--split", "test", "--teacher", "llm", "--backend", "openai", "--model", "qwen",
         "--base-url", "http://x/v1", "--seed", "2"]
    assert webtabs.data_args("train", 0, "paraphrase", "llamacpp", "qwen2.5-coder-1.5b", "", "") == \
        ["build", "--split", "train", "--teacher", "paraphrase", "--backend", "llamacpp", "--model",
         "qwen2.5-coder-1.5b"]
    args = webtabs.train_args("default", "data/train.jsonl data/val.jsonl", 10, 1.0, 3e-4, 1, 8, "auto", "--lora-r 8")
    assert args[args.index("--data") + 1: args.index("--data") + 3] == [str(paths.REPO / "data" / "train.jsonl"), d]
    assert args[-4:] == ["--max-steps", "10", "--lora-r", "8"]


# -- hardening (issue 20): untrusted text, upload bounds, who may serve --------------------------
def test_untrusted_text_has_no_markup_left():
    from markdown_it import MarkdownIt

    attack = "![p](http://e.x/t.png) <img src=x> [a](javascript:x) <http://e.x> www.e.x \\![b](http://e.x/b.png)"
    safe = W.untrusted(attack)
    html = MarkdownIt("commonmark").render(safe)
    assert "<img" not in html and "<a " not in html and "://" not in safe and "www.e" not in safe
    assert "![p](http://e.x/t.png)" in html.replace("\\", "")  # it reads as written
    assert W.untrusted("Result saved as image/ab_invert_cd.png") == "Result saved as image/ab_invert_cd.png"


def test_clean_text_drops_nul_and_replaces_lone_surrogates():
    assert W.clean_text("a\x00b\ud800c\udfffd\n\te") == "ab\ufffdc\ufffdd\n\te"
    assert W.clean_text("\U0001f600") == "\U0001f600"  # a real pair stays


def test_files_per_message_and_bytes_per_session_are_capped():
    photo = ASSETS / "chelsea.jpg"
    chat = W.ChatApp(scripted_agent(), quota=W.UploadQuota(files_per_message=2,
                                                            bytes_per_session=int(2.5 * photo.stat().st_size)))
    history, state, _ = run_turn(chat, "hello", [photo] * 3)
    assert len(state.session.store.names()) == 2
    assert "1 more image(s) were not read: at most 2 per message" in history[-3].content
    history, state, _ = run_turn(chat, "hello", [photo], state=state)  # a third photo: over the session's bytes
    assert "this session has uploaded its" in history[-3].content and len(state.session.store.names()) == 2
    chat.clear(state)  # clearing the chat does not refill the quota
    history, state, _ = run_turn(chat, "hello", [photo], state=state)
    assert state.session.store.names() == [] and history[-1].content == "You said: hello"


def test_any_upload_failure_is_a_message(tmp_path, monkeypatch):
    chat = W.ChatApp(scripted_agent())
    history, state, _ = run_turn(chat, "hello", [tmp_path / "vanished.png"])
    assert "vanished.png: could not be stored (FileNotFoundError)" in history[0].content
    assert history[-1].content == "You said: hello"  # the turn went on
    monkeypatch.setattr(type(state.session), "add_image", lambda self, path: 1 / 0)  # a failing captioner, say
    history, state, _ = run_turn(chat, "hello", [ASSETS / "chelsea.jpg"], state=state)
    assert "could not be stored (ZeroDivisionError)" in history[-3].content and history[-1].content == "You said: hello"


def test_raw_upload_copies_are_deleted_but_not_the_examples():
    chat = W.ChatApp(scripted_agent())
    cache = W.FileGuard.root().parent
    raw, example = cache / "h1" / "photo.jpg", cache / "h2" / "example.jpg"
    for path in (raw, example):
        path.parent.mkdir(parents=True)
        path.write_bytes((ASSETS / "chelsea.jpg").read_bytes())
    chat.kept_files = {str(example)}
    history, state, _ = run_turn(chat, "", [raw, example])
    assert len(state.session.store.names()) == 2
    assert not raw.exists() and not raw.parent.exists() and example.exists()
    run_turn(chat, "hello", [ASSETS / "rocket.jpg"], state=state)
    assert (ASSETS / "rocket.jpg").exists()  # files outside gradio's cache are never touched


def test_uploads_keep_pixels_only(tmp_path):
    from gpt4tools.images import ImageStore

    exif = Image.Exif()
    exif[0x010F] = "SpyCam"
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}
    path = tmp_path / "geo.jpg"
    Image.new("RGB", (64, 48), (10, 200, 10)).save(path, exif=exif, comment=b"secret")
    store = ImageStore(tmp_path / "store")
    stored = store.root / store.add_upload(path)
    with Image.open(stored) as im:
        assert not im.getexif() and not im.info.get("exif")
    assert b"SpyCam" not in stored.read_bytes() and b"secret" not in stored.read_bytes()


def test_public_serving_needs_a_login(capsys):
    assert app.main(["--host", "0.0.0.0"]) == 2 and "needs a login" in capsys.readouterr().err
    assert app.main(["--share"]) == 2
    assert app.main(["--host", "0.0.0.0", "--auth", "nopassword"]) == 2 and "USER:PASSWORD" in capsys.readouterr().err
    assert app.required_login("ann:s3cret:x", public=True) == ("ann", "s3cret:x")
    assert app.required_login(None, public=False) is None


def test_host_policy(monkeypatch):
    from gpt4tools.ui.guard import host_name, host_policy

    monkeypatch.setenv("GPT4TOOLS_ALLOWED_HOSTS", "app.lan, Box.Local")
    local = host_policy("127.0.0.1", ["gpu-box"])
    assert all(local.allows(host_name(h)) for h in ["127.0.0.1:7860", "[::1]:7860", "localhost", "gpu-box:80",
                                                     "app.lan", "box.local"])
    assert not any(local.allows(host_name(h)) for h in ["evil.example", "127.0.0.1.evil.example", "", "[::2]"])
    assert not local.allows("x.gradio.live") and host_policy(share=True).allows("x.gradio.live")
    import socket

    assert host_policy("0.0.0.0").allows(socket.gethostname().lower())  # bound everywhere: its own name too


def test_origins_from_a_rewriting_proxy_or_the_share_page_may_post():
    from gpt4tools.ui.guard import SecurityMiddleware, host_policy

    guard = SecurityMiddleware(app=None, hosts=host_policy("127.0.0.1", ["app.example.org"], share=True))
    assert guard._same_origin("https://app.example.org", "127.0.0.1:7860")  # a proxy that sets its own Host
    assert guard._same_origin("https://abc123.gradio.live", "127.0.0.1:7860")
    assert guard._same_origin("http://127.0.0.1:7860", "127.0.0.1:7860")
    assert not guard._same_origin("http://localhost:8000", "127.0.0.1:7860")  # another local site
    assert not guard._same_origin("http://127.0.0.1:8000", "127.0.0.1:7860")
    assert not guard._same_origin("null", "127.0.0.1:7860")


def test_a_flood_of_new_sessions_cannot_push_out_other_conversations():
    """New sessions are counted in all and per client address (SessionLimits): past the limits a
    message gets a clear refusal and no session, while conversations already held go on. Empty
    submits create nothing; a session gradio drops frees its place."""
    from types import SimpleNamespace

    chat = W.ChatApp(scripted_agent(), limits=W.SessionLimits(max_sessions=5, per_client=3))

    def req(host):
        return SimpleNamespace(client=SimpleNamespace(host=host), cookies={})

    def send(text, state=None, host="10.0.0.1"):
        return list(chat.respond({"text": text, "files": []}, state, req(host)))[-1]

    alice = send("hello")[2]
    assert isinstance(alice, W.ChatState) and len(chat.sessions) == 1
    for _ in range(100):  # empty submits from a script: no session, nothing stored
        assert send("   ", host="10.6.6.6")[2] is None
    flood = [send("hi", host="10.6.6.6") for _ in range(50)]
    held = [s for _, _, s in flood if s is not None]
    assert len(held) == 3 and "open conversations" in flood[-1][0][0].content
    assert send("hi", host="10.0.0.2")[2] is not None  # another address, within the total
    history, _, none = send("hi", host="10.0.0.3")  # the total (5) is reached
    assert none is None and "as many conversations as it can" in history[0].content
    history, _, alice = send("and again", alice)  # Alice's conversation is still served
    assert alice is not None and sum(m.role == "user" for m in history) == 2
    W.close_state(held[0])
    W.close_state(held[0])  # gradio may call twice: counted once
    assert len(chat.sessions) == 4
    assert send("hi", host="10.0.0.3")[2] is not None  # a place was freed
