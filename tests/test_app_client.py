"""The app's programmatic API, as a user would call it with gradio_client: upload a photo,
ask for an edit, get the result image back; sessions cannot read each other's files."""

from __future__ import annotations

import os
import time

import httpx
import pytest
from PIL import Image, ImageOps

from appserver import ASSETS, server  # noqa: F401 (fixture)

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # gradio_client otherwise calls the hub
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402


def file_parts(history: list[dict], role: str = "assistant") -> list[dict]:
    return [p for m in history if m["role"] == role for p in m["content"] if p.get("type") == "file"]


def text_of(history: list[dict]) -> str:
    return "\n".join(p["text"] for m in history for p in m["content"] if p.get("type") == "text")


@pytest.fixture
def client(server):  # noqa: F811
    return Client(server.url, verbose=False)


def test_chat_endpoint_returns_the_edited_image(client):
    history, box = client.predict({"text": "invert this photo", "files": [handle_file(ASSETS / "chelsea.jpg")]},
                                  api_name="/chat")
    [result] = file_parts(history)
    assert result["alt_text"].startswith("image/") and "_invert_" in result["alt_text"]
    got = Image.open(result["file"]).convert("RGB")  # downloaded by the client, with its session cookie
    want = ImageOps.invert(Image.open(ASSETS / "chelsea.jpg").convert("RGB"))
    assert got.size == want.size and list(got.getdata()) == list(want.getdata())
    assert "🛠️ Invert The Image" in [m["metadata"].get("title") for m in history]
    assert box["value"] == {"text": "", "files": []} and box["interactive"] is False  # cleared, locked

    # the same client is the same session: the next turn edits the previous result
    history, _ = client.predict({"text": "invert it again", "files": []}, api_name="/chat")
    again = Image.open(file_parts(history)[-1]["file"]).convert("RGB")
    assert list(again.getdata()) == list(Image.open(ASSETS / "chelsea.jpg").convert("RGB").getdata())
    assert result["alt_text"] in text_of(history)  # the second call named the first result


def test_streaming_updates_arrive_before_the_end(client):
    job = client.submit({"text": "invert this", "files": [handle_file(ASSETS / "rocket.jpg")]}, api_name="/chat")
    updates = [history for history, _box in job]
    statuses = [m["metadata"].get("status") for h in updates for m in h
                if m["metadata"].get("title", "").startswith("🛠️")]
    assert "pending" in statuses and statuses[-1] == "done"  # the tool step was shown while it ran
    assert len(file_parts(updates[-1])) == 1 and len(updates) >= 3


def test_another_session_cannot_fetch_my_results(server):  # noqa: F811
    alice = Client(server.url, verbose=False, download_files=False)
    history, _ = alice.predict({"text": "invert this", "files": [handle_file(ASSETS / "astronaut.jpg")]},
                               api_name="/chat")
    url = file_parts(history)[-1]["file"]["url"]
    assert httpx.get(url, cookies=alice.cookies).status_code == 200
    bob = Client(server.url, verbose=False, download_files=False)
    assert bob.cookies and bob.cookies != alice.cookies
    assert httpx.get(url, cookies=bob.cookies).status_code == 403
    assert httpx.get(url).status_code == 403  # no cookie at all
    history, _ = bob.predict({"text": "hello", "files": []}, api_name="/chat")
    assert file_parts(history) == [] and "astronaut" not in str(history)  # bob's chat never lists them


def test_bad_upload_over_the_api_is_a_message(client, tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 100)
    history, _ = client.predict({"text": "invert this", "files": [handle_file(fake)]}, api_name="/chat")
    refused = [m for m in history if m["metadata"].get("title") == "💥 Upload refused"]
    assert refused and "not a readable image" in text_of(refused)


def test_benchmark_job_reports_progress_over_the_api(server):  # noqa: F811
    c = Client(server.url, verbose=False)
    status = c.predict(str(server.bench_file), None, True, "default", "", "transformers", "cpu", "", 0,
                       api_name="/bench_start")
    assert "started" in status and "--baseline no-tool" in status
    job = c.submit(api_name="/bench_watch")
    while not job.done():
        time.sleep(0.2)
    status, _log, overall, _per_tool, _chart, heading = job.result()
    assert status.startswith("✅ bench: finished 10/10")
    row = dict(zip(overall["headers"], overall["data"][0]))
    assert row["SR %"] == 40.0 and row["n"] == 10
    assert row["Run"].endswith("(this run)") and "on `" in heading and "tiny.jsonl" in heading  # beside earlier runs
