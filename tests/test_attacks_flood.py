"""A flood of sessions over HTTP (issue 20, part 4): a real app on 127.0.0.1, gradio's REST API.

Every new session id makes gradio keep a record (~80 KB, up to 10,000 by default, evicting the
oldest, a held conversation included, without telling the app). The flood sends 1,000 empty
sessions and 150 new conversations from 10 loopback addresses (127.0.0.10-19: per-address
limits are per address as the server sees it) while Alice, whose conversation started first,
keeps chatting. Small limits stand in for the defaults so the bounds are reached in seconds.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from test_attacks_http import completed, text_of

from gpt4tools.ui import web
from gpt4tools.ui.webchat import ChatState, SessionLimits

from appserver import running_app
from fakes import EchoPlanLLM, Invert

gr = pytest.importorskip("gradio")

LIMITS = SessionLimits(max_sessions=30, per_client=10, max_states=300)
EMPTY = 1000
ADDRESSES = [f"127.0.0.{i}" for i in range(10, 20)]
NEW_PER_ADDRESS = 15


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from gpt4tools.agent import Agent
    from gpt4tools.registry import ToolRegistry

    agent = Agent(EchoPlanLLM(plan={"invert": "Invert The Image"}), ToolRegistry([Invert()]))
    with running_app(tmp_path_factory.mktemp("flood"), agent, limits=LIMITS) as running:
        yield running


def client(server, address: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=server.url.rstrip("/"), timeout=60,
                        transport=httpx.HTTPTransport(local_address=address))


def turn(http: httpx.Client, text: str, session: str) -> list[dict]:
    """One chat message in the session `session` (gradio keeps its state by this id)."""
    event = http.post("/gradio_api/call/chat", json={"data": [{"text": text, "files": []}], "session_hash": session})
    event.raise_for_status()
    return completed(http, event.json()["event_id"])


def records(server) -> dict:
    return server.app.blocks.state_holder.session_data


def held(server) -> list[ChatState]:
    return [v for r in list(records(server).values()) for v in list(r.state_data.values()) if isinstance(v, ChatState)]


def test_a_flood_of_sessions_is_bounded_and_alice_keeps_chatting(server):
    alice = client(server)
    assert text_of(turn(alice, "hello", "alice")[-1]) == "You said: hello"
    clients = {a: client(server, a) for a in ADDRESSES}
    # the new conversations are spread through the empty ones, so Alice's turn lands amid both
    tasks = [("   ", f"empty-{i}") for i in range(EMPTY)]
    for i in range(len(ADDRESSES) * NEW_PER_ADDRESS):
        tasks.insert(i * 7, ("hi", f"new-{i}"))
    done = threading.Semaphore(0)

    def send(i: int) -> tuple[str, str, list[dict]]:
        text, session = tasks[i]
        address = ADDRESSES[i % len(ADDRESSES)]
        try:
            return text, address, turn(clients[address], text, session)
        finally:
            done.release()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, i) for i in range(len(tasks))]
        for _ in range(len(tasks) // 2):
            assert done.acquire(timeout=60)
        during = turn(alice, "still there?", "alice")
        assert not all(f.done() for f in futures), "the flood ended before Alice's turn"
        results = [f.result() for f in futures]

    empties = [h for text, _, h in results if text != "hi"]
    news = [(a, h) for text, a, h in results if text == "hi"]
    assert text_of(during[-1]) == "You said: still there?"
    assert all(history == [] for history in empties)  # an empty submit makes no conversation
    answered = [(a, h) for a, h in news if text_of(h[-1]) == "You said: hi"]
    refused = [text_of(h[-1]) for _, h in news if text_of(h[-1]) != "You said: hi"]
    assert len(answered) == LIMITS.max_sessions - 1  # Alice holds the other place
    assert all(sum(a == address for a, _ in answered) <= LIMITS.per_client for address in ADDRESSES)
    assert refused and all("open conversations" in r or "as many conversations as it can" in r for r in refused)
    # bounded: conversations, their folders, and gradio's records (1,151 without the bound)
    assert len(server.app.chat.sessions) == LIMITS.max_sessions == len(held(server))
    assert len(records(server)) <= LIMITS.max_states
    assert len(list(server.app.guard.root().iterdir())) <= LIMITS.max_sessions
    sessions = server.root / "runs" / "sessions"
    assert len(list(sessions.iterdir()) if sessions.is_dir() else []) <= LIMITS.max_sessions
    # Alice was the oldest record of all, and her conversation goes on with its memory
    after = turn(alice, "and after?", "alice")
    assert text_of(after[-1]) == "You said: and after?"
    assert [text_of(m) for m in after if m["role"] == "user"] == ["hello", "still there?", "and after?"]


def test_the_record_bound_never_evicts_a_conversation(server):
    """Past max_states, the oldest record without a conversation goes, whatever its age; a
    held conversation stays even when it is the oldest of all."""
    http = client(server, "127.0.0.30")
    before = {id(s) for s in held(server)}
    assert len(records(server)) == LIMITS.max_states  # full since the flood: each new record evicts one
    newest = [f"more-empty-{i}" for i in range(60)]
    for session in newest:
        turn(http, "", session)
    assert len(records(server)) == LIMITS.max_states and set(newest) <= set(records(server))
    assert {id(s) for s in held(server)} == before and "alice" in records(server)


def test_session_limits_are_the_operators_to_set(monkeypatch, capsys):
    """Behind a reverse proxy every user has the proxy's address: per_client is a flag and a
    variable; the room for gradio's records grows with max_sessions."""
    assert web.session_limits() == SessionLimits()
    raised = web.session_limits(max_sessions=5000, per_client=500)
    assert raised.per_client == 500 and raised.max_states > raised.max_sessions == 5000
    assert web.main(["--sessions-per-client", "0"]) == 2 and "at least 1" in capsys.readouterr().err
    monkeypatch.setenv("GPT4TOOLS_MAX_SESSIONS", "0")
    assert web.main([]) == 2 and "at least 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_states"):
        SessionLimits(max_sessions=100, max_states=100)
