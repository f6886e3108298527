"""The app's front door: which hosts and origins may talk to it, how big a request may be,
and the headers that keep the browser from loading anything else.

`SecurityMiddleware` wraps every HTTP and websocket request before Gradio sees it:

- **Host check** (DNS rebinding): a web page on evil.example whose name is re-pointed at
  127.0.0.1 reaches the app with `Host: evil.example`; only the names the app is served
  under pass (loopback names, the bound host, names the operator allows, the share domain).
- **Origin check** (cross-site requests): a state-changing request sent by a browser from
  another origin is refused. Clients that send no Origin (gradio_client, curl) are not
  browsers, so cannot be driven by a foreign page, and pass.
- **Size limit**: a body over the limit is refused with 413 before it is read, whether it
  announces its length or streams it; uploads get the room of a few photos, other
  requests (chat messages, forms) far less.
- **Headers**: a Content-Security-Policy that allows nothing but the app's own origin
  (Gradio's page needs inline scripts and styles, and blob:/data: images), nosniff, no
  referrer, and a sandboxing policy on served files.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
SHARE_DOMAIN = ".gradio.live"  # where gradio's --share tunnel publishes the app
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MiB = 1024 * 1024
BODY_LIMIT = 1 * MiB  # a chat message of 100k characters is ~0.1-0.6 MB of JSON
UPLOAD_LIMIT = 64 * MiB  # one upload request: a few photos (each also under ImageLimits.max_bytes)
UPLOAD_PATH_SUFFIX = "/upload"  # gradio's /gradio_api/upload

# Gradio's page: inline bootstrap scripts and styles, its own bundle, blob:/data: previews and
# workers, fetch/SSE to itself. Nothing remote: a model-written <img src=https://...> or a
# CSS url() that slipped through rendering still cannot call out.
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "media-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "frame-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'self'",
])
# A served file opened on its own (an upload named .html, say) runs nothing and loads nothing.
FILE_CSP = "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox"
FILE_ROUTE = "/file="


def host_name(value: str) -> str | None:
    """The name part of a Host header or an Origin's netloc ("[::1]:7860" -> "::1"), lowercased;
    None when it cannot be read."""
    try:
        return urlsplit(f"//{value}").hostname
    except ValueError:
        return None


@dataclass(frozen=True)
class HostPolicy:
    """The names the app answers to, and whether the share domain is one of them."""

    names: frozenset[str] = LOOPBACK_NAMES
    share: bool = False
    operator_names: frozenset[str] = frozenset()  # --allow-host / GPT4TOOLS_ALLOWED_HOSTS

    def allows(self, name: str | None) -> bool:
        if not name:
            return False
        name = name.rstrip(".")  # "localhost." is the same name
        return name in self.names or self._public(name)

    def vouches_for_origin(self, name: str | None) -> bool:
        """An origin named by the operator (or the share page) may post even when a proxy or the
        share tunnel rewrote the Host header; loopback names never do (any local port is one)."""
        return bool(name) and self._public(name.rstrip("."))

    def _public(self, name: str) -> bool:
        return name in self.operator_names or (self.share and name.endswith(SHARE_DOMAIN))


def host_policy(bound: str = "127.0.0.1", extra: list[str] | tuple[str, ...] = (), share: bool = False) -> HostPolicy:
    """Loopback names, the bound host, and `extra` names (from --allow-host or
    GPT4TOOLS_ALLOWED_HOSTS). Bound to every interface, the machine's own name and
    addresses count too (anything else must be allowed by the operator)."""
    env = os.environ.get("GPT4TOOLS_ALLOWED_HOSTS", "").split(",")
    operator = {n.strip().lower().rstrip(".") for n in [*extra, *env] if n.strip()}
    names = set(LOOPBACK_NAMES) | operator
    if bound in WILDCARD_HOSTS:
        names |= _own_names()
    else:
        names.add(host_name(bound) or bound.strip("[]").lower())
    return HostPolicy(frozenset(names), share, frozenset(operator))


def _own_names() -> set[str]:
    hostname = socket.gethostname()
    names = {hostname.lower(), socket.getfqdn().lower()}
    try:
        names |= set(socket.gethostbyname_ex(hostname)[2])
    except OSError:  # a host without a resolvable name still serves its loopback names
        pass
    return names


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES


TEMP_PREFIX = "gpt4tools-gradio-"
OWNER_FILE = ".gpt4tools-app"  # the pid of the app using a private upload folder


def private_temp_dir() -> Path:
    """Gradio's upload cache, readable only by us (0700): a fresh private folder unless
    GRADIO_TEMP_DIR names one. Call before the app is built (examples are cached at build)."""
    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix=TEMP_PREFIX)  # mkdtemp: 0700
        (Path(os.environ["GRADIO_TEMP_DIR"]) / OWNER_FILE).write_text(str(os.getpid()))
    folder = Path(os.environ["GRADIO_TEMP_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def cleanup_orphan_temp_dirs(max_age_s: float, parent: Path | None = None) -> int:
    """Delete the private upload folders (`private_temp_dir`) of apps that are gone, a killed app
    cannot delete its own: ours (same user), named as we name them, not the current one, whose
    app process no longer runs (a folder without its owner file counts as gone) and untouched
    for `max_age_s`. A folder that vanishes or cannot be read is passed over. Returns how many went."""
    from gpt4tools.session import remove_idle_folders

    current = os.path.realpath(os.environ.get("GRADIO_TEMP_DIR") or "/nonexistent")

    def spare(folder: Path) -> bool:
        return (folder.is_symlink() or not folder.is_dir() or os.path.realpath(folder) == current
                or folder.stat().st_uid != os.getuid() or _app_alive(folder / OWNER_FILE))

    return remove_idle_folders(Path(parent or tempfile.gettempdir()).glob(TEMP_PREFIX + "*"), max_age_s, spare)


def _app_alive(owner_file: Path) -> bool:
    """Whether the process named in an owner file runs. A reused pid reads as alive: the folder
    is kept, the safe mistake."""
    try:
        pid = int(owner_file.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@dataclass
class Limits:
    body: int = BODY_LIMIT
    upload: int = UPLOAD_LIMIT

    def for_path(self, path: str) -> int:
        return self.upload if path.rstrip("/").endswith(UPLOAD_PATH_SUFFIX) else self.body


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"Request body too large: the limit is {limit:,} bytes.")


@dataclass
class SecurityMiddleware:
    """ASGI middleware: Host and Origin checks, a body-size limit and security headers (see the module doc)."""

    app: object
    hosts: HostPolicy = field(default_factory=HostPolicy)
    limits: Limits = field(default_factory=Limits)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            if scope["type"] == "websocket":  # close before accepting: the handshake fails
                return await send({"type": "websocket.close", "code": 1008})
            return await self._with_headers(refusal, scope)(scope, receive, send)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        limit = self.limits.for_path(scope["path"])
        return await self._serve_bounded(scope, receive, send, limit)

    def _refusal(self, scope, headers: Headers) -> PlainTextResponse | None:
        host = headers.get("host", "")
        if not self.hosts.allows(host_name(host)):
            # 421: this server is not the one the name is meant for (DNS rebinding, a stray proxy)
            return PlainTextResponse("Misdirected request: this app does not answer to that host name.", 421)
        origin = headers.get("origin")
        state_changing = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        if origin is not None and state_changing and not self._same_origin(origin, host):
            return PlainTextResponse("Forbidden: cross-site request.", 403)
        if _deep_link(scope):
            # gradio snapshots any session's component values (the chat, OCR'd text) into a shareable
            # link for whoever sends its session hash; the app offers no deep links, so none are made
            return PlainTextResponse("Not found: this app has no deep links.", 404)
        length = headers.get("content-length")
        limit = self.limits.for_path(scope["path"])
        if length is not None and (not length.isdigit() or int(length) > limit):
            return PlainTextResponse(f"Request body too large: the limit is {limit:,} bytes.", 413)
        return None

    def _same_origin(self, origin: str, host: str) -> bool:
        """A browser's Origin must be the host it is talking to, port included (a page on another
        local port is another site), or a public name the operator gave us."""
        if origin == "null":  # sandboxed frames, file:// pages, some redirects
            return False
        netloc = urlsplit(origin).netloc.lower()
        name = host_name(netloc)
        return (netloc == host.lower() and self.hosts.allows(name)) or self.hosts.vouches_for_origin(name)

    async def _serve_bounded(self, scope, receive, send, limit: int):
        """Serve, counting body bytes as they arrive: a streamed (chunked) body over the limit
        is cut off with 413 however it is sent."""
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_secured(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self._add_headers(MutableHeaders(scope=message), scope)
            await send(message)

        try:
            await self.app(scope, counted_receive, send_secured)
        except BodyTooLarge as e:  # raised inside a route that did not turn it into a response
            if started:
                raise
            await self._with_headers(PlainTextResponse(e.detail, 413), scope)(scope, receive, send)

    def _with_headers(self, response: PlainTextResponse, scope) -> PlainTextResponse:
        self._add_headers(response.headers, scope)
        return response

    @staticmethod
    def _add_headers(headers: MutableHeaders, scope) -> None:
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Content-Security-Policy"] = FILE_CSP if FILE_ROUTE in scope["path"] else CSP


def _deep_link(scope) -> bool:
    """A request that makes or loads a gradio deep link (the route, or the page's ?deep_link=)."""
    if scope["path"].rstrip("/").endswith("/deep_link"):
        return True
    query = scope.get("query_string", b"").decode("latin-1")
    return any(key == "deep_link" for key, _ in parse_qsl(query, keep_blank_values=True))
