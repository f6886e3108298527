"""The web app with the scripted agent (tests/fakes.py), served in-process on a free port.

Imported by the client and browser tests (`from appserver import server  # noqa: F401`).
Everything the app writes (session folders, Gradio's cache, job runs) goes to a temporary
folder; runs/data/tiny.jsonl there is a small benchmark file the Benchmark tab lists.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets"


@dataclass
class Server:
    url: str
    app: object  # gpt4tools.ui.web.WebApp
    root: Path  # the temporary folder holding runs/ and gradio/

    @property
    def bench_file(self) -> Path:
        return self.root / "runs" / "data" / "tiny.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(root: Path, agent, registry=None, runner=None, limits=None):
    """Serve the app on a free 127.0.0.1 port, with everything it writes under `root`; yields a Server.
    `limits`: the app's SessionLimits (default: the app's own)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT4TOOLS_RUNS", str(root / "runs"))
        mp.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))
        from gpt4tools.ui import web

        app = web.build_app(agent, registry=registry, runner=runner,
                            **({} if limits is None else {"limits": limits}))
        port = free_port()
        web.launch(app, port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield Server(f"http://127.0.0.1:{port}/", app, root)
        finally:
            app.blocks.close()


@pytest.fixture(scope="module")  # module, not session: the environment it sets ends with the module
def server(tmp_path_factory):
    from gpt4tools.registry import ToolRegistry
    from gpt4tools.ui.jobs import JobRunner

    from fakes import Ask, Crash, Invert, Missing, bench_records, scripted_agent

    root = tmp_path_factory.mktemp("app")
    data = root / "runs" / "data" / "tiny.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in bench_records()))
    registry = ToolRegistry([Invert(), Ask(), Crash(), Missing()])  # the Tools tab shows one unavailable
    with running_app(root, scripted_agent(delay_s=0.002), registry, JobRunner(root / "runs")) as running:
        yield running
