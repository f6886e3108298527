"""The GPT4Tools web app: chat with images through the agent, plus Tools, Benchmark, Data and Train tabs.

    python app.py [--host 127.0.0.1] [--port 7860] [--share] [--load TOOLS] [--model ...]
    python -m gpt4tools app ...   (the same)

Served beyond loopback (--host 0.0.0.0, --share) it needs a login (--auth USER:PASSWORD or
GPT4TOOLS_AUTH) and hides the job tabs unless --jobs; it answers only to its own host names
(--allow-host NAME or GPT4TOOLS_ALLOWED_HOSTS=a,b for a name it is reached by), see ui/guard.py.

The layout and serving are here; the chat logic (step rendering, per-session state, the file
guard) is in ui/webchat.py, the other tabs in ui/tabs.py, long jobs in ui/jobs.py. The app
starts and serves even when the LLM or the tools cannot load: the reason is shown instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, Collection

import gradio as gr
from starlette.middleware import Middleware

from gpt4tools.images import ImageLimits
from gpt4tools.paths import assets_dir
from gpt4tools.session import cleanup_sessions
from gpt4tools.ui.guard import (
    HostPolicy,
    SecurityMiddleware,
    cleanup_orphan_temp_dirs,
    host_policy,
    is_loopback,
    private_temp_dir,
)
from gpt4tools.ui.webchat import (
    PRIVATE,
    AgentSource,
    ChatApp,
    FileGuard,
    OwnerMiddleware,
    SessionLimits,
    close_state,
    hold_conversations,
)

log = logging.getLogger("gpt4tools.app")

SESSION_TTL_S = 6 * 3600  # a session idle this long is dropped (its files with it)
# gradio's cache (uploads never sent, outputs it copied): checked every 30 min, files older than a session go
DELETE_CACHE = (1800, SESSION_TTL_S)
CHAT_CONCURRENCY = 8  # chat turns served at once; tools and the LLM serialise internally where needed
EXAMPLES = [
    {"text": "What is in this photo?", "files": ["chelsea.jpg"]},
    {"text": "Detect the edges of this image", "files": ["rocket.jpg"]},
    {"text": "What does the sign say?", "files": ["coffee_sign.jpg"]},
    {"text": "Find the face in this photo", "files": ["astronaut.jpg"]},
    {"text": "Segment the cup in this picture", "files": ["coffee.jpg"]},
    {"text": "Generate an image of a red bicycle by the sea", "files": []},
]


# -- layout ---------------------------------------------------------------------------------
def _chat_tab(chat: ChatApp, examples: list[dict]) -> gr.Markdown:
    status = gr.Markdown(elem_id="status_line")
    chatbot = gr.Chatbot(elem_id="chatbot", height="66vh", min_height=420, show_label=False, buttons=["copy"],
                         placeholder="Upload a photo and ask for an edit, a description, a detection…")
    chat_input = gr.MultimodalTextbox(elem_id="chat_input", file_types=["image"], file_count="multiple",
                                      sources=["upload"], show_label=False,
                                      placeholder="Type a message, attach one or more images…")
    with gr.Row():
        undo_btn = gr.Button("↩️ Undo", elem_id="undo_btn", size="sm")
        clear_btn = gr.Button("🗑️ Clear", elem_id="clear_btn", size="sm")
    state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=close_state)
    if examples:
        assets = assets_dir()
        gr.Examples([{"text": e["text"], "files": [str(assets / f) for f in e["files"]]} for e in examples],
                    inputs=chat_input, label="Examples")
    chat.kept_files = chat_input.keep_in_cache  # the examples' cached photos: never deleted after a turn
    ev = chat_input.submit(chat.respond, [chat_input, state], [chatbot, chat_input, state], api_name="chat",
                           concurrency_limit=CHAT_CONCURRENCY, concurrency_id="chat")
    # after a turn the status line is redrawn too: the prompt cache's figures changed
    ev.then(lambda: (gr.MultimodalTextbox(interactive=True), chat.status()), None, [chat_input, status],
            api_visibility="private")
    undo_btn.click(chat.undo, state, [chatbot, state], api_name="undo", concurrency_limit=CHAT_CONCURRENCY)
    clear_btn.click(chat.clear, state, [chatbot, state], api_name="clear", concurrency_limit=CHAT_CONCURRENCY)
    chatbot.clear(chat.clear, state, [chatbot, state], api_visibility="private")  # the chatbot's own 🗑
    return status


def _model_switch(chat: ChatApp, switcher, train_root) -> dict | None:
    """Model, adapter and backend pickers; disabled with a note unless the operator allows switching.
    Returns what build_app wires to the status line (None when switching is off)."""
    from gpt4tools.llm import BACKENDS
    from gpt4tools.ui import modelswitch

    allowed = switcher is not None
    with gr.Accordion("Model, adapter and backend", open=False, elem_id="model_switch"):
        if not allowed:
            gr.Markdown(modelswitch.OFF_NOTE, elem_id="model_switch_off")
        with gr.Row():
            model = gr.Dropdown(modelswitch.model_choices(), value="default", label="Model", allow_custom_value=True,
                                interactive=allowed, elem_id="switch_model", scale=2)
            adapter = gr.Dropdown(modelswitch.adapter_choices(train_root), value=modelswitch.DEFAULT_ADAPTER,
                                  label="Adapter (committed, or a finished training run)", interactive=allowed,
                                  elem_id="switch_adapter", scale=3)
            backend = gr.Dropdown(list(BACKENDS), value="auto", label="Backend", interactive=allowed,
                                  elem_id="switch_backend", scale=1)
        button = gr.Button("Switch for every session", interactive=allowed, elem_id="switch_button")
    if not allowed:
        return None

    def switch(model_name, adapter_dir, backend_name):
        try:
            picked = modelswitch.checked(model_name, adapter_dir, backend_name)
            chat.holder.switch(lambda: switcher(*picked), modelswitch.describe(*picked))
        except (ValueError, RuntimeError) as e:  # Refused is a ValueError
            raise gr.Error(str(e)) from None
        return chat.status(), gr.Timer(active=True)

    def preselect_base(adapter_dir):
        base = modelswitch.base_model_of(adapter_dir)
        return gr.Dropdown(value=base) if base else gr.skip()

    adapter.change(preselect_base, adapter, model, api_visibility="private")
    return {"switch": switch, "inputs": [model, adapter, backend], "button": button, "adapter": adapter,
            "adapters": lambda: gr.Dropdown(choices=modelswitch.adapter_choices(train_root))}


@dataclass
class WebApp:
    """The built app: its Gradio blocks, the chat behind them and the guard of its files."""

    blocks: gr.Blocks
    chat: ChatApp
    guard: FileGuard


def build_app(agent: AgentSource, *, registry=None, runner=None, jobs: bool = True,
              examples: list[dict] | None = None, title: str = "GPT4Tools", switcher=None,
              limits: SessionLimits | None = None) -> WebApp:
    """The whole app, not launched. `agent` is an Agent or a factory (called
    lazily; if it raises, the chat shows why). `registry` (all tools, available or not) feeds
    the Tools tab; `runner` (a `jobs.JobRunner`) the Benchmark, Data and Train tabs, which
    `jobs=False` hides (for a public app). `switcher(model, adapter, backend)` builds another
    agent: given, the Chat tab may switch the model of every session (ui/modelswitch.py).
    `limits`: conversations held at once, in all and per client address (SessionLimits)."""
    from gpt4tools.paths import runs_dir
    from gpt4tools.ui import tabs

    guard = FileGuard()
    chat = ChatApp(agent, guard, len(registry) if registry is not None else None, limits=limits or SessionLimits())
    train_root = runner.kind_dir("train") if runner is not None else runs_dir() / "train"
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(f"## {title}: chat with images through tools")
        with gr.Tab("Chat", id="chat") as chat_tab:
            status = _chat_tab(chat, EXAMPLES if examples is None else examples)
            switch = _model_switch(chat, switcher, train_root)
        with gr.Tab("Tools", id="tools"):
            tabs.tools_tab(registry if registry is not None else getattr(chat.holder.agent, "tools", None))
        with gr.Tab("Benchmark", id="bench") as bench_tab:
            bench_files = tabs.bench_tab(demo, runner, jobs)
        if bench_files is not None:  # files a Data build wrote since the page loaded
            bench_tab.select(bench_files[0], None, bench_files[1], api_visibility="private")
        with gr.Tab("Data", id="data"):
            tabs.data_tab(demo, runner, jobs)
        with gr.Tab("Train", id="train"):
            tabs.train_tab(demo, runner, jobs)
        # The model may still be loading: refresh the status line until it is ready (or failed).
        poll = gr.Timer(2.0)
        refresh = lambda: (chat.status(), gr.Timer(active=chat.holder.loading))  # noqa: E731
        demo.load(refresh, None, [status, poll], api_visibility="private")
        poll.tick(refresh, None, [status, poll], api_visibility="private")
        if switch is not None:  # a switch restarts the status line's polling until it has loaded
            switch["button"].click(switch["switch"], switch["inputs"], [status, poll], concurrency_limit=1,
                                   api_visibility="private")
            for event in (demo.load, chat_tab.select):  # training runs finished since
                event(switch["adapters"], None, switch["adapter"], api_visibility="private")
    return WebApp(demo, chat, guard)


def cached_examples(app: WebApp) -> set[str]:
    """The files gradio keeps in its cache for the layout (the examples' copies)."""
    return {f for block in list(app.blocks.blocks.values()) for f in list(getattr(block, "keep_in_cache", ()))}


# -- serving --------------------------------------------------------------------------------
def cleanup_round(max_age_s: float, kept: Collection[str] = ()) -> int:
    """One round of deleting what the app made and no one uses any more, each part on its own (one
    failing never stops the others): idle session folders and their served copies, files in
    gradio's upload cache gradio does not know (uploads never sent, left by an earlier app using
    the same GRADIO_TEMP_DIR; `kept`: the examples' cached copies), and the private upload folders
    of apps that were killed. Job folders (runs/bench, runs/data, runs/train) and the project's
    data are never looked at. Returns how many folders and files went."""
    from gpt4tools.session import cleanup_files

    parts = [lambda: cleanup_sessions(max_age_s), lambda: cleanup_sessions(max_age_s, root=FileGuard.root()),
             lambda: cleanup_files(FileGuard.root().parent, max_age_s, keep=kept, skip={PRIVATE}),
             lambda: cleanup_orphan_temp_dirs(max_age_s)]
    gone = 0
    for part in parts:
        try:
            gone += part()
        except Exception:  # logged; the next part and the next round still run
            log.exception("a cleanup step failed")
    return gone


def start_cleanup(max_age_s: float = 24 * 3600, every_s: float = 1800,
                  kept: Callable[[], Collection[str]] = frozenset, stop: threading.Event | None = None
                  ) -> threading.Thread:
    """`cleanup_round` now and every `every_s` until `stop` is set; `kept()` is asked each round."""
    stop = stop or threading.Event()

    def loop():
        while True:
            try:
                gone = cleanup_round(max_age_s, kept())
                if gone:
                    log.info("removed %d stale session folders and cached files", gone)
            except Exception:
                log.exception("cleanup round failed")
            if stop.wait(every_s):
                return

    thread = threading.Thread(target=loop, name="session-cleanup", daemon=True)
    thread.start()
    return thread


CSS = "#chatbot img { max-height: 320px; width: auto; object-fit: contain; }"  # room for the steps around images


def launch(app: WebApp, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           hosts: HostPolicy | None = None, **kwargs):
    """Launch behind the security middleware (host, origin, size, headers) and the file guard,
    with offline settings and upload limits. `hosts`: the names the app answers to (default:
    loopback and `host`). Returns as `Blocks.launch`."""
    private_temp_dir()  # 0700, before the first upload lands there
    hosts = hosts or host_policy(host, share=share)
    app.blocks.queue(default_concurrency_limit=2, max_size=256)
    middleware = [Middleware(SecurityMiddleware, hosts=hosts), Middleware(OwnerMiddleware, guard=app.guard)]
    block = not kwargs.pop("prevent_thread_lock", False)
    launched = app.blocks.launch(
        server_name=host, server_port=port, share=share, ssr_mode=False, show_error=True,
        max_file_size=ImageLimits().max_bytes, allowed_paths=[str(assets_dir())],  # examples only: public photos
        app_kwargs={"middleware": middleware},
        footer_links=["api", "settings"], run_history=False, enable_monitoring=False, css=CSS,
        prevent_thread_lock=True, **kwargs,
    )
    # gradio makes its session records' holder with the server, so the bound goes in after
    # launch and before this thread blocks (the CLI) or returns (tests)
    hold_conversations(app.blocks.state_holder, app.chat.sessions.limits.max_states)
    if block:
        app.blocks.block_thread()
    return launched


def login(value: str | None) -> tuple[str, str] | None:
    """USER:PASSWORD (from --auth or GPT4TOOLS_AUTH) as gradio's `auth`; None when not given."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth / GPT4TOOLS_AUTH must be USER:PASSWORD")
    return user, password


def required_login(value: str | None, public: bool) -> tuple[str, str] | None:
    """The login to require: served beyond loopback (or shared), anyone who reaches the port
    could run the model, upload and start jobs, so there must be one."""
    auth = login(value)
    if public and auth is None:
        raise ValueError("serving beyond 127.0.0.1 (or with --share) needs a login: --auth USER:PASSWORD "
                         "or GPT4TOOLS_AUTH")
    return auth


def session_limits(max_sessions: int | None = None, per_client: int | None = None) -> SessionLimits:
    """The operator's limits (None: the default). Room for gradio's session records grows with
    max_sessions, so raising it never leaves held conversations without room."""
    default = SessionLimits()
    total = default.max_sessions if max_sessions is None else max_sessions
    return SessionLimits(max_sessions=total, per_client=default.per_client if per_client is None else per_client,
                         max_states=max(default.max_states, 2 * total))


def main(argv: list[str] | None = None) -> int:
    import sys

    from gpt4tools.options import add_model_args, build_agent
    from gpt4tools.registry import UnknownToolError, build_registry
    from gpt4tools.ui.jobs import JobRunner

    ap = argparse.ArgumentParser(prog="python app.py", description="The GPT4Tools web app.")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    ap.add_argument("--jobs", action=argparse.BooleanOptionalAction, default=None,
                    help="show the Benchmark/Data/Train tabs (default: only when serving 127.0.0.1 without --share)")
    ap.add_argument("--auth", default=os.environ.get("GPT4TOOLS_AUTH"), metavar="USER:PASSWORD",
                    help="require this login (required beyond loopback or with --share; "
                         "prefer GPT4TOOLS_AUTH, which other users cannot see in the process list)")
    ap.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="a host name the app is reached by, besides loopback and --host (repeatable; "
                         "also GPT4TOOLS_ALLOWED_HOSTS=a,b)")
    ap.add_argument("--sessions-per-client", type=int, default=os.environ.get("GPT4TOOLS_SESSIONS_PER_CLIENT"),
                    metavar="N", help=f"conversations one client address may hold at once (default "
                    f"{SessionLimits.per_client}; also GPT4TOOLS_SESSIONS_PER_CLIENT). Behind a reverse proxy "
                    "every user has the proxy's address: raise it there")
    ap.add_argument("--max-sessions", type=int, default=os.environ.get("GPT4TOOLS_MAX_SESSIONS"), metavar="N",
                    help=f"conversations held at once in all (default {SessionLimits.max_sessions}; "
                         "also GPT4TOOLS_MAX_SESSIONS)")
    ap.add_argument("--allow-model-switch", action="store_true",
                    help="let the Chat tab switch model, adapter and backend; the switch applies to every session")
    add_model_args(ap)
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("GPT4TOOLS_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    try:
        auth = required_login(args.auth, public=not is_loopback(args.host) or args.share)
        limits = session_limits(args.max_sessions, args.sessions_per_client)
        registry = build_registry(args.load)
    except (ValueError, UnknownToolError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    local = is_loopback(args.host) and not args.share
    private_temp_dir()  # before build_app: the examples are cached while it builds
    app = build_app(lambda: build_agent(args), registry=registry, runner=JobRunner(),
                    jobs=local if args.jobs is None else args.jobs,
                    switcher=_switcher(args) if args.allow_model_switch else None, limits=limits)
    app.chat.holder.load_in_background()  # serve at once; the status line says when it is ready
    start_cleanup(kept=lambda: cached_examples(app))
    launch(app, args.host, args.port, args.share, hosts=host_policy(args.host, args.allow_host, args.share),
           auth=auth)
    return 0


def _switcher(args: argparse.Namespace):
    """The Chat tab's switch: the app's own options with another model, adapter and backend."""
    from gpt4tools.options import build_agent

    def switch(model: str, adapter: str | None, backend: str):
        return build_agent(argparse.Namespace(**{**vars(args), "model": model, "adapter": adapter, "backend": backend}))

    return switch
