"""The chat tab's logic, separate from the layout: rendering agent steps as chat messages,
one state per browser session, and the guard that serves each session's images only to it.

The agent yields typed steps and `TurnView` only renders them; nothing here edits agent
memory (beyond `Session`'s own clear/rewind) or parses model text. Images are shown from a
per-session folder inside Gradio's cache, and `OwnerMiddleware` serves that folder only to
the browser (cookie) that owns the session, so one user can never fetch another's images,
even with the URL.

Model, tool and OCR text is untrusted: it is shown through `untrusted`, which leaves it no
Markdown or HTML to load a remote image or make a link with; the only images shown are this
session's own files. User text is cleaned of NUL and lone surrogates before anything sees it,
and uploads are bounded per message and per session (`UploadQuota`); gradio's raw copy of an
upload is deleted once read.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import gradio as gr
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from gpt4tools import agent as A
from gpt4tools.images import ImageError
from gpt4tools.session import Session

log = logging.getLogger(__name__)

COOKIE = "gpt4tools_owner"  # identifies a browser (or a gradio_client) to the file guard
PRIVATE = "gpt4tools-private"  # folder in Gradio's cache holding the images each session shows
AgentSource = Union[A.Agent, Callable[[], A.Agent]]


# -- untrusted text ------------------------------------------------------------------------
# Markdown that can fetch or link: images and links need "[" and "]", raw HTML and autolinks
# need "<"; a backslash could undo our escapes. Escaped, each shows as itself.
_MARKUP = re.compile(r"([\\\[\]<>])")
# Bare URLs become links in GFM; an escaped "/" or "." keeps them text (no link to click).
_BARE_URL = re.compile(r"(?i)(://|\bwww\.)")


def untrusted(text: str) -> str:
    """Text from the model, a tool or OCR, as Markdown that renders it literally: no image,
    no link, no HTML can come out of it (CommonMark shows an escaped punctuation mark as itself)."""
    text = _MARKUP.sub(r"\\\1", clean_text(text))
    return _BARE_URL.sub(lambda m: ":\\/\\/" if m.group(1) == "://" else m.group(1)[:3] + "\\.", text)


def clean_text(text: str) -> str:
    """Text safe to store, send and serialise: lone surrogates (valid in JSON, not in UTF-8)
    become U+FFFD, NUL and other C0 controls except tab and newline are dropped."""
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)


# -- steps -> chat messages ----------------------------------------------------------------
def fence(text: str) -> str:
    """Model text shown verbatim: a code fence longer than any backtick run inside it."""
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}text\n{text}\n{ticks}"


def _code(text: str) -> str:
    """Inline code for a one-line value, a fenced block (on its own line) otherwise."""
    return f"`{text}`" if "`" not in text and "\n" not in text else "\n" + fence(text)


def _headline(text: str, limit: int = 80) -> str:
    first = text.strip().split("\n")[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


class TurnView:
    """Renders one turn's steps as chat messages, in place, as they stream in.

    The model's raw text streams into a pending "💭" message; a tool call replaces it with a
    collapsible "🛠️ <tool>" message (input, then observation), a result image becomes an
    image message, an error a "💥" message, and the final answer a normal message.
    `publish(name)` returns the file to show for an image name (None if it cannot be shown).
    """

    def __init__(self, publish: Callable[[str], str | None]):
        self.publish = publish
        self.messages: list[gr.ChatMessage] = []
        self._thinking: gr.ChatMessage | None = None
        self._tool: gr.ChatMessage | None = None
        self._tool_t0 = 0.0
        self._shown: set[str] = set()

    def add(self, step: A.Step) -> None:
        if isinstance(step, A.Thought):
            if self._thinking is None:
                self._thinking = gr.ChatMessage("", metadata={"title": "💭 Thinking…", "status": "pending"})
                self.messages.append(self._thinking)
            self._thinking.content = fence(step.text)
            return
        thinking, self._thinking = self._thinking, None
        if isinstance(step, A.Error):  # keep the unusable output, folded, above what the model was told
            if thinking is not None:
                thinking.metadata = {"title": "💭 Model output", "status": "done"}
            message = untrusted(step.message)  # may quote the model's output
            self.messages.append(gr.ChatMessage(message, metadata={"title": f"💥 {_headline(message)}",
                                                                   "status": "done"}))
            return
        if thinking is not None:  # a tool call or an answer says the same, parsed
            self.messages.remove(thinking)
        if isinstance(step, A.Action):
            self._tool = gr.ChatMessage(f"**Input:** {_code(step.tool_input)}",
                                        metadata={"title": f"🛠️ Running {untrusted(step.tool)}…", "status": "pending"})
            self._tool_t0 = time.perf_counter()
            self.messages.append(self._tool)
        elif isinstance(step, A.ObservationStep):
            self._observe(step)
        elif isinstance(step, A.ImageStep):
            self._image(step.name)
        elif isinstance(step, A.Final):
            self.messages.append(gr.ChatMessage(untrusted(step.text)))
            for name in step.images:  # an answer that names an earlier result shows it again
                self._image(name)

    def _observe(self, step: A.ObservationStep) -> None:
        msg, self._tool = self._tool, None
        if msg is None:  # an observation without its action (not produced by Agent, but be total)
            msg = gr.ChatMessage("", metadata={"title": f"🛠️ {untrusted(step.tool)}"})
            self.messages.append(msg)
        msg.content += f"\n\n**Observation:** {untrusted(step.text)}"  # OCR and captions are untrusted too
        msg.metadata = {"title": f"{'🛠️' if step.ok else '💥'} {untrusted(step.tool)}", "status": "done",
                        "duration": round(time.perf_counter() - self._tool_t0, 2)}

    def _image(self, name: str) -> None:
        if name in self._shown:
            return
        path = self.publish(name)
        if path is not None:
            self._shown.add(name)
            self.messages.append(gr.ChatMessage({"path": path, "alt_text": name}))

    def fail(self, exc: BaseException) -> None:
        """The backend failed (not a model mistake): say so, keep what was shown."""
        if self._thinking is not None:
            self._thinking.metadata = {"title": "💭 Model output", "status": "done"}
            self._thinking = None
        self.messages.append(gr.ChatMessage(untrusted(f"{type(exc).__name__}: {exc}"),
                                            metadata={"title": "💥 The model failed"}))


# -- who may fetch which file ----------------------------------------------------------------
class FileGuard:
    """Maps each session's serving folder to the owner token of the browser that created it."""

    def __init__(self) -> None:
        self._owners: dict[str, str | None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def root() -> Path:
        from gradio.utils import get_upload_folder  # GRADIO_TEMP_DIR, read when used

        return Path(get_upload_folder()).resolve() / PRIVATE

    def register(self, folder_id: str, owner: str | None) -> Path:
        with self._lock:
            self._owners[folder_id] = owner
        folder = self.root() / folder_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def forget(self, folder_id: str) -> None:
        with self._lock:
            self._owners.pop(folder_id, None)
        shutil.rmtree(self.root() / folder_id, ignore_errors=True)

    def allows(self, path: str, owner: str | None) -> bool:
        """May a request with this owner cookie fetch this URL path? Only if it names a
        registered folder whose owner matches; any oddity in the path is a refusal."""
        match = re.search(rf"/{PRIVATE}/([A-Za-z0-9_-]+)/", os.path.normpath(path).replace("\\", "/") + "/")
        if match is None or owner is None:
            return False
        with self._lock:
            expected = self._owners.get(match.group(1))
        return expected is not None and hmac.compare_digest(expected, owner)


class OwnerMiddleware:
    """Gives every browser an owner cookie, and refuses private files to anyone else."""

    def __init__(self, app, guard: FileGuard):
        self.app = app
        self.guard = guard

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        owner = request.cookies.get(COOKIE)
        if PRIVATE in scope["path"] and not self.guard.allows(scope["path"], owner):
            refusal = PlainTextResponse("Forbidden: this file belongs to another session.", 403)
            return await refusal(scope, receive, send)
        if owner is not None:
            return await self.app(scope, receive, send)
        token = secrets.token_urlsafe(24)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("set-cookie", f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax")
            await send(message)

        return await self.app(scope, receive, send_with_cookie)


# -- the agent, loaded once, possibly failing ---------------------------------------------
class AgentHolder:
    """The shared agent. A factory that fails (no weights yet) leaves the reason to show; the
    next chat turn tries again after `retry_s`. `switch` loads another agent in the background
    while the current one keeps serving (the app's model switch)."""

    def __init__(self, source: AgentSource, retry_s: float = 60.0):
        self._factory = source if callable(source) and not isinstance(source, A.Agent) else None
        self.agent: A.Agent | None = source if isinstance(source, A.Agent) else None
        self.error = ""
        self.retry_s = retry_s
        self._failed_at = 0.0
        self._lock = threading.Lock()
        self.switching = ""  # what a switch is loading, while it loads
        self.switch_note = ""  # how the last switch ended
        self._switch_lock = threading.Lock()

    def switch(self, factory: Callable[[], A.Agent], description: str) -> threading.Thread:
        """Load `factory()` in a thread and serve it once loaded; until then (and if it fails) the
        current agent serves. RuntimeError while another switch loads (two loads could exhaust memory)."""
        with self._switch_lock:
            if self.switching:
                raise RuntimeError(f"{self.switching} is still loading; wait for it before switching again")
            self.switching, self.switch_note = description, ""
        thread = threading.Thread(target=self._load_switch, args=(factory, description), name="switch-agent",
                                  daemon=True)
        thread.start()
        return thread

    def _load_switch(self, factory: Callable[[], A.Agent], description: str) -> None:
        try:
            agent = factory()
        except Exception as e:  # a missing adapter, a backend down: shown, and the old model keeps serving
            log.exception("switching the model failed")
            self.switch_note = f"⚠️ Switching to {description} failed ({type(e).__name__}: {e}); the model above serves."
        else:
            with self._lock:
                self.agent, self._factory, self.error = agent, factory, ""
            self.switch_note = f"🔁 Switched to {description}."
        finally:
            with self._switch_lock:
                self.switching = ""

    def get(self) -> A.Agent | None:
        if self.agent is not None or self._factory is None:
            return self.agent
        with self._lock:
            due = not self._failed_at or time.monotonic() - self._failed_at >= self.retry_s
            if self.agent is None and due:
                try:
                    self.agent = self._factory()
                    self.error = ""
                except Exception as e:  # missing weights, bad flags, backend down: shown, not fatal
                    log.exception("loading the agent failed")
                    self.error = f"{type(e).__name__}: {e}"
                    self._failed_at = time.monotonic()
        return self.agent

    @property
    def loading(self) -> bool:
        """Whether the status line will change by itself (a first load or a switch in progress)."""
        return bool(self.switching) or (self.agent is None and not self.error and self._factory is not None)

    def load_in_background(self) -> None:
        threading.Thread(target=self.get, name="load-agent", daemon=True).start()

    def status(self, n_tools_total: int | None = None) -> str:
        if self.switching:
            return f"⏳ Loading {self.switching} for every session; meanwhile: " + self._serving(n_tools_total)
        return self._serving(n_tools_total) + (f"  \n{self.switch_note}" if self.switch_note else "")

    def _serving(self, n_tools_total: int | None) -> str:
        if self.agent is None:
            if self.error:
                return f"⚠️ **The model could not be loaded** — {self.error}"
            return "⏳ Loading the model…"
        llm, tools = self.agent.llm, self.agent.tools
        adapter = getattr(llm, "adapter", None)
        of = f" of {n_tools_total}" if n_tools_total is not None else ""
        k = self.agent.config.offer_tools
        offer = f", the {k} closest offered per message" if 0 < k < len(tools) else ""
        note = getattr(llm, "backend_note", None)
        backend = f" · **Backend:** {note}" if note else ""
        report = getattr(llm, "states_report", lambda: None)()
        states = f" · **Prompt cache:** {report.line()}" if report is not None else ""
        return (f"**Model:** `{llm.name}` · **Adapter:** `{Path(adapter).name if adapter else 'none'}`{backend} · "
                f"**Tools:** {len(tools)}{of} available{offer}{states}")


# -- one browser session --------------------------------------------------------------------
@dataclass(frozen=True)
class UploadQuota:
    """How much one browser session may upload (each file is also bounded by ImageLimits)."""

    files_per_message: int = 8
    bytes_per_session: int = 256 * 2**20  # raw bytes received, over the session's life
    echo_chars: int = 2000  # a longer user message is shown cut (the agent refuses it anyway)


@dataclass(frozen=True)
class SessionLimits:
    """How many conversations the app holds at once, in all and per client address. A session
    starts with its first message and ends when gradio drops it (tab closed, SESSION_TTL_S idle).

    `per_client` counts addresses as the server sees them: behind a reverse proxy every user has
    the proxy's address, so raise it there (--sessions-per-client). `max_states` bounds gradio's
    own per-session records, which every new session id creates, empty or refused ones too
    (~80 KB each, as many as 10,000 by default): `hold_conversations` keeps at most this many and
    evicts the oldest that holds no conversation, never a held one."""

    max_sessions: int = 200
    per_client: int = 20
    max_states: int = 2000

    def __post_init__(self):
        if min(self.max_sessions, self.per_client) < 1:
            raise ValueError("session limits must be at least 1")
        if self.max_states <= self.max_sessions:  # room for every held conversation plus new arrivals
            raise ValueError(f"max_states ({self.max_states}) must exceed max_sessions ({self.max_sessions})")


class SessionCount:
    """The live conversations, by client address (thread-safe)."""

    def __init__(self, limits: SessionLimits):
        self.limits = limits
        self._by_client: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, client: str) -> str | None:
        """Count a new session for `client`, or say why not."""
        with self._lock:
            if sum(self._by_client.values()) >= self.limits.max_sessions:
                return (f"The app is holding as many conversations as it can ({self.limits.max_sessions}). "
                        "Please try again later.")
            if self._by_client.get(client, 0) >= self.limits.per_client:
                return (f"Your address already has {self.limits.per_client} open conversations. Close a tab "
                        "(its conversation ends after a while) and try again.")
            self._by_client[client] = self._by_client.get(client, 0) + 1
            return None

    def release(self, client: str) -> None:
        with self._lock:
            left = self._by_client.get(client, 0) - 1
            if left > 0:
                self._by_client[client] = left
            else:
                self._by_client.pop(client, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(self._by_client.values())


def hold_conversations(holder, capacity: int) -> None:
    """Bound gradio's session records (its `StateHolder`) to `capacity`, evicting the oldest that
    holds no conversation. Gradio's own LRU evicts whatever is oldest, a held conversation
    included, and without its delete callback (so its place in `SessionCount` and its files would
    never be freed): a flood of new session ids (each is a record, ~80 KB) could push everyone out."""
    holder.capacity = capacity

    def holds(record) -> bool:
        return any(isinstance(v, ChatState) for v in list(getattr(record, "state_data", {}).values()))

    def update(session_id: str) -> None:
        evicted = []
        with holder.lock:
            data = holder.session_data
            if session_id in data:
                data.move_to_end(session_id)
            while len(data) > holder.capacity:
                victim = next((k for k, r in data.items() if k != session_id and not holds(r)), None)
                if victim is None:  # only held conversations left (max_states <= max_sessions): the oldest
                    victim = next(iter(data))
                evicted.append(data.pop(victim))
                holder.time_last_used.pop(victim, None)
        for record in evicted:  # outside the lock: closing deletes files
            for value in list(record.state_data.values()):
                if isinstance(value, ChatState):
                    value.close()

    holder.update = update


class ChatState:
    """A browser session's conversation: its `Session`, what the chat shows, undo marks."""

    def __init__(self, guard: FileGuard, owner: str | None, on_close: Callable[[], None] | None = None):
        self.guard = guard
        self.on_close = on_close  # the app's session count is told when gradio drops this session
        self.folder_id = secrets.token_hex(12)
        self.folder = guard.register(self.folder_id, owner)
        self.session: Session | None = None
        self.history: list[gr.ChatMessage] = []
        self.marks: list[tuple[int, int]] = []  # per user turn: (chat messages, memory turns) before it
        self.uploaded_bytes = 0  # never reset (not by clear nor undo): the quota is per session
        self.lock = threading.Lock()

    def ensure_session(self, agent: A.Agent) -> Session:
        if self.session is None:
            self.session = Session(agent)
        return self.session

    def follow(self, agent: A.Agent) -> bool:
        """After a model switch, end the conversation held with the old agent (its prompt template and
        memory belong to that model); the next turn starts a new one. True when it did."""
        if self.session is None or self.session.agent is agent:
            return False
        self.session.close()
        self.session = None
        self.marks.clear()  # undo cannot go back into the old conversation
        return True

    def publish(self, name: str) -> str | None:
        """Copy a session image into the served folder; return that path."""
        try:
            src = self.session.image_path(name)
            dst = self.folder / src.name
            if not dst.exists():
                shutil.copyfile(src, dst)
        except (ImageError, AttributeError, OSError):  # not ours, no session yet, a file gone or a full disk
            return None
        return str(dst)

    def mark(self) -> None:
        self.marks.append((len(self.history), self.session.checkpoint() if self.session else 0))

    def undo(self) -> None:
        if not self.marks:
            return
        n_messages, n_turns = self.marks.pop()
        del self.history[n_messages:]
        if self.session is not None:
            self.session.rewind(n_turns)

    def clear(self) -> None:
        self.history.clear()
        self.marks.clear()
        if self.session is not None:
            self.session.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Gradio dropped the session (tab closed, expired): delete its files."""
        self.guard.forget(self.folder_id)
        if self.session is not None:
            self.session.close()
        if self.on_close is not None:
            self.on_close, release = None, self.on_close  # once, however often gradio calls
            release()


def close_state(state: ChatState | None) -> None:
    if state is not None:
        state.close()


class ChatApp:
    """The chat tab's logic, independent of the layout (tests call it without a server)."""

    def __init__(self, agent: AgentSource, guard: FileGuard | None = None, n_tools_total: int | None = None,
                 quota: UploadQuota = UploadQuota(), limits: SessionLimits = SessionLimits()):
        self.holder = AgentHolder(agent)
        self.sessions = SessionCount(limits)
        self.guard = guard or FileGuard()
        self.n_tools_total = n_tools_total
        self.quota = quota
        self.kept_files: set[str] = set()  # files in gradio's cache never deleted after a turn (the examples)

    def status(self) -> str:
        return self.holder.status(self.n_tools_total)

    def new_state(self, request: gr.Request | None) -> ChatState | str:
        """A new session's state, or why there is none (SessionLimits)."""
        cookies = getattr(request, "cookies", None) or {}
        client = getattr(getattr(request, "client", None), "host", None) or "unknown"
        refusal = self.sessions.admit(client)
        if refusal:
            log.warning("new session refused for %s: %d live", client, len(self.sessions))
            return refusal
        return ChatState(self.guard, cookies.get(COOKIE), on_close=lambda: self.sessions.release(client))

    def respond(self, message: dict | None, state: ChatState | None, request: gr.Request | None = None
                ) -> Iterator[tuple[list, Any, ChatState]]:
        """One user turn: store the uploads, run the agent, stream the rendered steps.

        Yields (chat messages, textbox update, state); the textbox is cleared and locked
        while the turn runs (the event's `.then` unlocks it)."""
        message = message or {}
        if not clean_text(message.get("text") or "").strip() and not message.get("files"):
            # nothing sent: nothing to run, and no session made for it (an empty submit costs nothing)
            yield (state.history if state is not None else []), gr.skip(), state
            return
        if state is None:
            state = self.new_state(request)
            if isinstance(state, str):
                yield [gr.ChatMessage(state, metadata={"title": "💥 Busy"})], gr.skip(), None
                return
        busy = gr.MultimodalTextbox(value=None, interactive=False)
        if not state.lock.acquire(blocking=False):  # a second submit from the same session (API)
            yield state.history + [gr.ChatMessage("Please wait: the previous message is still running.",
                                                  metadata={"title": "💥 Busy"})], gr.skip(), state
            return
        try:
            yield from self._turn(message, state, busy)
        finally:
            state.lock.release()

    def _turn(self, message: dict, state: ChatState, busy) -> Iterator[tuple[list, Any, ChatState]]:
        text = clean_text(message.get("text") or "").strip()
        files = [f if isinstance(f, str) else f.get("path", "") for f in message.get("files") or []]
        try:
            yield from self._turn_with(text, files, state, busy)
        finally:  # whatever happened, gradio's raw copies go: we keep our own re-encoded ones
            for path in files:
                self._discard_raw(path)

    def _turn_with(self, text: str, files: list[str], state: ChatState, busy) -> Iterator[tuple[list, Any, ChatState]]:
        if self.holder.agent is None:  # the first turn may have to wait for the model to load
            yield state.history + [gr.ChatMessage("This turn starts as soon as the model is ready.",
                                                  metadata={"title": "⏳ Loading the model", "status": "pending"})
                                   ], busy, state
        agent = self.holder.get()
        if agent is not None and state.follow(agent):
            state.history.append(gr.ChatMessage(
                f"The chat is now served by {untrusted(agent.llm.name)}: a new conversation starts "
                "(the model does not see the messages and images above).", metadata={"title": "🔁 Model switched"}))
        state.mark()
        if agent is None:
            state.history += [gr.ChatMessage(self._echo(text) or f"({len(files)} image(s))", role="user"),
                              gr.ChatMessage(self.status(), metadata={"title": "💥 No model"})]
            yield state.history, busy, state
            return
        session = state.ensure_session(agent)
        taken, extra = files[: self.quota.files_per_message], files[self.quota.files_per_message:]
        for path in taken:
            state.history.extend(self._upload(state, session, path, acknowledge=not text))
            yield state.history, busy, state
        if extra:
            state.history.append(gr.ChatMessage(
                f"{len(extra)} more image(s) were not read: at most {self.quota.files_per_message} per message.",
                metadata={"title": "💥 Upload refused"}))
        if not text:
            return
        state.history.append(gr.ChatMessage(self._echo(text), role="user"))
        view = TurnView(state.publish)
        base = len(state.history)
        last = 0.0
        try:
            for step in session.send(text):
                view.add(step)
                now = time.perf_counter()
                if not isinstance(step, A.Thought) or now - last > 0.05:  # streamed tokens: ~20 updates/s
                    state.history[base:] = view.messages
                    last = now
                    yield state.history, busy, state
        except Exception as e:  # the LLM backend failed: show it, keep serving
            log.exception("turn failed")
            view.fail(e)
        state.history[base:] = view.messages
        yield state.history, busy, state

    def _echo(self, text: str) -> str:
        """The user's text as the chat shows it: literal, and cut when it is far too long to run."""
        limit = self.quota.echo_chars
        shown = text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"
        return untrusted(shown)

    def _upload(self, state: ChatState, session: Session, path: str, acknowledge: bool) -> list[gr.ChatMessage]:
        """Store one upload; any failure is a message, never a failed turn."""
        shown = untrusted(clean_text(Path(path).name)) or "upload"

        def refused(why: str) -> list[gr.ChatMessage]:
            return [gr.ChatMessage(f"{shown}: {why}", metadata={"title": "💥 Upload refused"})]

        try:
            if PRIVATE in Path(path).resolve().parts:  # gradio accepts any file in its cache; not these
                return refused("not an upload.")
            size = Path(path).stat().st_size
            if state.uploaded_bytes + size > self.quota.bytes_per_session:
                return refused(f"this session has uploaded its {self.quota.bytes_per_session / 2**20:.0f} MiB; "
                               "start a new session (reload the page) to upload more.")
            state.uploaded_bytes += size
            name = session.add_image(path)
            shown_upload = gr.ChatMessage({"path": state.publish(name), "alt_text": name}, role="user")
        except ImageError as e:  # wrong type, too many bytes or pixels, too small: say which
            return refused(untrusted(str(e)))
        except Exception as e:  # a vanished file, a full disk, a failing captioner: the turn goes on
            log.exception("storing an upload failed")
            return refused(untrusted(f"could not be stored ({type(e).__name__})."))
        return [shown_upload, gr.ChatMessage(f"Received `{name}`.")] if acknowledge else [shown_upload]

    def _discard_raw(self, path: str) -> None:
        """Delete gradio's raw copy of an upload (it is served to anyone with its URL, and
        we keep a re-encoded copy). Only files in gradio's cache, never our served copies
        nor the examples; a file already gone is fine."""
        try:
            raw = Path(path).resolve()
            cache = self.guard.root().parent
            if cache not in raw.parents or PRIVATE in raw.parts or {path, str(raw)} & self.kept_files:
                return
            raw.unlink(missing_ok=True)
            if raw.parent != cache:
                raw.parent.rmdir()  # gradio's per-upload folder, when now empty
        except OSError:
            pass

    def clear(self, state: ChatState | None) -> tuple[list, ChatState | None]:
        if state is not None:
            with state.lock:  # after a running turn, never under it
                state.clear()
        return [], state

    def undo(self, state: ChatState | None) -> tuple[list, ChatState | None]:
        if state is None:
            return [], state
        with state.lock:
            state.undo()
        return state.history, state
