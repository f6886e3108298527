"""Attacks on the running app over HTTP (issue 20, parts 3-5): one real server on 127.0.0.1
with the scripted model, and for each attack its expected outcome. The app must keep
serving through all of it: the last test chats from a fresh session.

Raw HTTP (httpx, a socket) where the attack is the request itself (Host, Origin, sizes);
gradio's REST call API (/gradio_api/call/chat) where it is a chat message.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import zlib
from pathlib import Path

import httpx
import pytest
from markdown_it import MarkdownIt
from PIL import Image

from gpt4tools.tool import Arg, Tool, ToolResult, ToolSpec
from gpt4tools.ui.webchat import SessionLimits

from appserver import ASSETS, running_app
from fakes import EchoPlanLLM, Invert

gr = pytest.importorskip("gradio")

EVIL = "evil.example"
# What an attacker prints on a sign for OCR to read: a tracking pixel, raw HTML, a script link, bare URLs.
SIGN = ("SALE ![pixel](http://evil.example/t.png) <img src=http://evil.example/x.png> "
        "[win](javascript:alert(1)) <http://evil.example/a> http://evil.example/b www.evil.example/c "
        "![ref][r] [r]: http://evil.example/r.png \\![esc](http://evil.example/e.png)")


class ReadSign(Tool):
    """OCR as an attacker would like it: reads the attacker's text off any image."""

    spec = ToolSpec(name="Read Text On Image", description="useful to read the text in an image.",
                    args=(Arg("image_path", "image"),), output="text", slug="ocr")

    def run(self, store, image_path):
        return ToolResult(text=SIGN)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from gpt4tools.agent import Agent
    from gpt4tools.registry import ToolRegistry

    llm = EchoPlanLLM(plan={"invert": "Invert The Image", "read": "Read Text On Image"})
    agent = Agent(llm, ToolRegistry([Invert(), ReadSign()]))
    # every REST call without a session id is a new conversation from 127.0.0.1: room for all of
    # them, so a test added here never meets the per-address limit (test_attacks_flood tests it)
    limits = SessionLimits(max_sessions=200, per_client=200, max_states=2000)
    with running_app(tmp_path_factory.mktemp("attacks"), agent, limits=limits) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url.rstrip("/"), timeout=30) as client:
        client.get("/")  # the owner cookie, as a browser gets it
        yield client


# -- helpers ----------------------------------------------------------------------------------
def host_of(server) -> str:
    return server.url.split("//")[1].rstrip("/")


def upload(http, *files: tuple[str, bytes]) -> httpx.Response:
    return http.post("/gradio_api/upload", files=[("files", (name, data, "application/octet-stream"))
                                                 for name, data in files])


def chat(http, text: str, *files: tuple[str, bytes]) -> list[dict]:
    """One chat turn through gradio's REST API; returns the final chat history (raises on an error event)."""
    paths = upload(http, *files).json() if files else []
    file_data = [{"path": p, "orig_name": Path(p).name, "meta": {"_type": "gradio.FileData"}} for p in paths]
    event = http.post("/gradio_api/call/chat", json={"data": [{"text": text, "files": file_data}]})
    event.raise_for_status()
    return completed(http, event.json()["event_id"])


def completed(http, event_id: str) -> list[dict]:
    with http.stream("GET", f"/gradio_api/call/chat/{event_id}") as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: ") and kind in ("complete", "error"):
                if kind == "error":
                    raise AssertionError(f"the chat event failed: {line}")
                return json.loads(line[len("data: "):])[0]  # (history, textbox update, state)
    raise AssertionError("the stream ended without a result")


def text_of(message: dict) -> str:
    content = message["content"]
    parts = content if isinstance(content, list) else [content]
    return "\n".join(p["text"] if isinstance(p, dict) and "text" in p else str(p) for p in parts)


def refusals(history: list[dict]) -> list[str]:
    return [text_of(m) for m in history if (m.get("metadata") or {}).get("title") == "💥 Upload refused"]


def stored_images(server) -> list[Path]:
    return sorted((server.root / "runs").rglob("image/*.png"))


def png(size=(64, 48), color=(200, 30, 30), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG", **save)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height (a decompression bomb's header) with a tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def raw_request(server, head: str) -> tuple[int, str]:
    """Send a hand-written request head (no body) and return the status and the response head."""
    host, port = host_of(server).split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        reply = sock.recv(4096).decode("latin-1")
    return int(reply.split(" ", 2)[1]), reply


# -- DNS rebinding: the Host header ---------------------------------------------------------
@pytest.mark.parametrize("host", [EVIL, f"{EVIL}:7860", "127.0.0.1.evil.example", "localhost.evil.example",
                                  f"127.0.0.1@{EVIL}", "[::2]", "10.0.0.1", "0.0.0.0"])
def test_foreign_host_names_are_misdirected(http, host):
    for method, path in [("GET", "/"), ("GET", "/config"), ("POST", "/gradio_api/call/chat")]:
        reply = http.request(method, path, headers={"Host": host}, json={"data": [{"text": "hi", "files": []}]})
        assert reply.status_code == 421, (method, path, reply.status_code)
        assert "gradio_config" not in reply.text


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]", "localhost."])
def test_loopback_host_names_are_served(http, server, host):
    port = host_of(server).split(":")[1]
    assert http.get("/", headers={"Host": f"{host}:{port}"}).status_code == 200


def test_a_request_without_host_is_refused(server):
    status, _ = raw_request(server, "GET / HTTP/1.0\r\n\r\n")
    assert status in (400, 421)


# -- cross-site requests: the Origin header ---------------------------------------------------
@pytest.mark.parametrize("origin", [f"http://{EVIL}", "null", "http://localhost:1", "https://127.0.0.1.evil.example"])
def test_cross_site_posts_and_uploads_are_refused(http, origin):
    message = {"data": [{"text": "hi", "files": []}]}
    posted = http.post("/gradio_api/call/chat", headers={"Origin": origin}, json=message)
    uploaded = http.post("/gradio_api/upload", headers={"Origin": origin},
                         files=[("files", ("a.png", png(), "image/png"))])
    assert posted.status_code == 403 and uploaded.status_code == 403
    assert http.get("/config", headers={"Origin": origin}).status_code == 200  # reading is the browser's CORS call


def test_same_origin_post_passes(http, server):
    origin = server.url.rstrip("/")
    reply = http.post("/gradio_api/call/chat", headers={"Origin": origin}, json={"data": [{"text": "hi", "files": []}]})
    assert reply.status_code == 200 and completed(http, reply.json()["event_id"])


def test_cross_site_reads_get_no_cors_grant(http):
    reply = http.get("/config", headers={"Origin": f"http://{EVIL}"})
    assert reply.headers.get("access-control-allow-origin") in (None, "null")


# -- request sizes ------------------------------------------------------------------------------
def test_two_megabyte_body_is_refused(http):
    body = json.dumps({"data": [{"text": "x" * 2_000_000, "files": []}]})
    assert http.post("/gradio_api/call/chat", content=body, headers={"Content-Type": "application/json"}
                     ).status_code == 413


def test_two_megabyte_streamed_body_is_refused(http):
    def chunks():  # no Content-Length: chunked transfer, counted as it arrives
        yield b'{"data": [{"text": "'
        for _ in range(32):
            yield b"x" * 65536
        yield b'", "files": []}]}'

    assert http.post("/gradio_api/call/chat", content=chunks(), headers={"Content-Type": "application/json"}
                     ).status_code == 413


def test_announced_huge_upload_is_refused_unread(server):
    status, _ = raw_request(server, f"POST /gradio_api/upload HTTP/1.1\r\nHost: {host_of(server)}\r\n"
                                    "Content-Type: multipart/form-data; boundary=x\r\n"
                                    "Content-Length: 700000000\r\n\r\n")
    assert status == 413


def test_26_megabyte_file_is_refused(http):
    assert upload(http, ("big.png", png() + b"\0" * (26 * 2**20))).status_code == 413


def test_100k_character_message_is_refused_cleanly(http):
    history = chat(http, "a" * 100_000)
    assert "100,000 characters" in text_of(history[-1]) and "8,000" in text_of(history[-1])
    assert len(text_of(history[-2])) < 3000  # the echo is cut, not streamed back 100k at a time


def test_nul_and_lone_surrogates_are_handled(http):
    body = '{"data": [{"text": "hello\\u0000 there \\ud800 and \\udfff", "files": []}]}'
    event = http.post("/gradio_api/call/chat", content=body, headers={"Content-Type": "application/json"})
    history = completed(http, event.json()["event_id"])
    assert text_of(history[-1]) == "You said: hello there \ufffd and \ufffd"


# -- uploads --------------------------------------------------------------------------------------
def eps() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\nshowpage\n"


ACCEPTED = "accepted: PNG, JPEG, WebP, BMP, GIF, TIFF"  # no decoder outside this list is tried
BAD_UPLOADS = {
    "zero bytes": ("empty.png", b"", ACCEPTED),
    "text": ("notes.png", b"just some text\n" * 10, ACCEPTED),
    "truncated PNG": ("cut.png", png((400, 300), color=(1, 2, 3))[:300], "not a readable image"),
    "SVG": ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><image href="http://evil.example/x"/></svg>',
            ACCEPTED),
    "HTML named .png": ("page.png", b"<html><script>alert(1)</script></html>", ACCEPTED),
    "EPS named .png": ("print.png", eps(), ACCEPTED),
    "20000x20000 bomb": ("bomb.png", png_header_only(20000, 20000), "pixels"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS)
def test_bad_uploads_become_messages_and_the_turn_goes_on(http, server, case):
    name, data, reason = BAD_UPLOADS[case]
    before = stored_images(server)
    history = chat(http, "hello", (name, data))
    [refused] = refusals(history)
    assert reason in refused
    assert text_of(history[-1]) == "You said: hello"  # the turn went on
    assert stored_images(server) == before


def test_eps_would_be_decoded_without_the_format_list(tmp_path):
    """Why the explicit list matters: PIL identifies this file (and would run Ghostscript to load it)."""
    path = tmp_path / "print.png"
    path.write_bytes(eps())
    with Image.open(path) as im:
        assert im.format == "EPS"


def test_html_named_html_is_refused_by_gradio(http, server):
    [path] = upload(http, ("page.html", b"<html><script>alert(1)</script></html>")).json()
    data = {"data": [{"text": "hi", "files": [{"path": path, "meta": {"_type": "gradio.FileData"}}]}]}
    event = http.post("/gradio_api/call/chat", json=data)
    with pytest.raises(AssertionError, match="event failed"):  # gradio's file-type check: "Invalid file type"
        completed(http, event.json()["event_id"])
    served = http.get(f"/gradio_api/file={path}")  # the raw copy, if fetched, is never a page
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "text/html" not in served.headers.get("content-type", "") and "sandbox" in served.headers[
        "content-security-policy"]


def test_polyglot_is_stored_as_clean_pixels(http, server):
    polyglot = png() + b"<html><script>alert(document.cookie)</script></html>"
    history = chat(http, "invert this", ("photo.png", polyglot))
    assert refusals(history) == []
    files = [p for m in history for p in (m["content"] if isinstance(m["content"], list) else [])
             if isinstance(p, dict) and p.get("type") == "file"]
    for f in files:
        served = http.get(f["file"]["url"])
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        assert served.headers["x-content-type-options"] == "nosniff"
        assert b"<script" not in served.content
    assert all(b"<script" not in p.read_bytes() for p in stored_images(server))


def test_exif_and_gps_are_stripped_and_raw_copies_deleted(http, server):
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)}  # GPS IFD
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 10)).save(buf, format="JPEG", exif=exif)
    assert Image.open(io.BytesIO(buf.getvalue())).getexif()  # the upload carries it
    [raw] = upload(http, ("geo.jpg", buf.getvalue())).json()
    event = http.post("/gradio_api/call/chat", json={"data": [{"text": "", "files": [
        {"path": raw, "meta": {"_type": "gradio.FileData"}}]}]})
    history = completed(http, event.json()["event_id"])
    assert text_of(history[-1]).startswith("Received")
    newest = max(stored_images(server), key=lambda p: p.stat().st_mtime_ns)
    with Image.open(newest) as stored:
        assert not stored.getexif() and "exif" not in stored.info
    assert b"SpyCam" not in newest.read_bytes()
    assert not Path(raw).exists()  # gradio's raw copy, GPS and all, is gone


def test_too_many_files_in_one_message(http, server):
    paths = upload(http, *[(f"p{i}.png", png(color=(i, i, i))) for i in range(100)]).json()
    assert len(paths) == 100  # one upload request of 100 small files is within the size limit
    before = len(stored_images(server))
    data = [{"path": p, "meta": {"_type": "gradio.FileData"}} for p in paths]
    event = http.post("/gradio_api/call/chat", json={"data": [{"text": "hello", "files": data}]})
    history = completed(http, event.json()["event_id"])
    assert len(stored_images(server)) - before == 8
    assert any("92 more image(s) were not read" in r for r in refusals(history))
    assert text_of(history[-1]).startswith("You said: hello")  # the scripted model lists the 8 it saw
    assert not any(Path(p).exists() for p in paths)  # read or not, every raw copy is deleted


def test_upload_folder_is_private(server):
    folder = Path(os.environ.get("GRADIO_TEMP_DIR") or server.root / "gradio")
    assert folder.stat().st_mode & 0o777 == 0o700


# -- rendering: OCR and model text -----------------------------------------------------------------
def rendered(markdown: str) -> str:
    """HTML as a CommonMark renderer (raw HTML allowed) makes it; the browser's is marked, same rules."""
    return MarkdownIt("commonmark").render(markdown)


def test_markdown_injection_through_ocr_renders_as_text(http):
    history = chat(http, "read the sign", ("sign.png", png()))
    tool = next(m for m in history if "Read Text On Image" in (m.get("metadata") or {}).get("title", ""))
    answer = history[-1]
    for message in (tool, answer):
        html = rendered(text_of(message))
        assert "<img" not in html and "<a " not in html and "<http" not in html, html
        assert "evil.example" in html  # shown, as text
        assert "://" not in text_of(message) and "www.evil" not in text_of(message)  # GFM cannot linkify bare URLs
    assert "![pixel](http:" in rendered(text_of(answer)).replace("\\", "")  # the text reads as it was written


def test_deep_links_are_neither_made_nor_loaded(http):
    """gradio snapshots any session's chat into a shareable link for whoever sends its session hash
    (GET /gradio_api/deep_link, 200 without the guard) and loads one with /?deep_link= (the page);
    the app offers no deep links, so both are refused before gradio sees them."""
    made = http.get("/gradio_api/deep_link", params={"session_hash": "abcdefgh12"})
    assert made.status_code == 404 and "no deep links" in made.text
    loaded = http.get("/", params={"deep_link": "0123456789abcdef"})
    assert loaded.status_code == 404 and "no deep links" in loaded.text
    assert http.get("/", params={"view": "api"}).status_code == 200  # other queries pass


def test_security_headers_on_the_page(http):
    page = http.get("/")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "img-src 'self' data: blob:" in csp and "http" not in csp
    assert "connect-src 'self'" in csp and "object-src 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"


def test_security_headers_on_served_files(http):
    history = chat(http, "invert this", ("chelsea.jpg", (ASSETS / "chelsea.jpg").read_bytes()))
    url = next(p["file"]["url"] for m in history for p in (m["content"] if isinstance(m["content"], list) else [])
               if isinstance(p, dict) and p.get("type") == "file")
    served = http.get(url)
    assert served.status_code == 200 and served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]
    assert httpx.get(url).status_code == 403  # and still only to its owner


# -- and the app still serves ----------------------------------------------------------------------
def test_a_second_session_still_chats_after_the_attacks(server):
    with httpx.Client(base_url=server.url.rstrip("/"), timeout=30) as fresh:
        fresh.get("/")
        history = chat(fresh, "invert this", ("rocket.jpg", (ASSETS / "rocket.jpg").read_bytes()))
    assert "_invert_" in text_of(history[-1]) and refusals(history) == []
