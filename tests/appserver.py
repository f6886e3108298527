"""The web app with the scripted agent (tests/fakes.py), served in-process on a free port.

Imported by the client and browser tests (`from appserver import server  # noqa: F401`).
Everything the app writes (session folders, Gradio's cache, job runs) goes to a temporary
folder; runs/data/tiny.jsonl there is a small benchmark file the Benchmark tab lists.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")  # module, not session: the environment it sets ends with the module
def server(tmp_path_factory):
    from fakes import Ask, Crash, Invert, Missing, bench_records, scripted_agent

    root = tmp_path_factory.mktemp("app")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT4TOOLS_RUNS", str(root / "runs"))
        mp.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))
        data = root / "runs" / "data" / "tiny.jsonl"
        data.parent.mkdir(parents=True)
        data.write_text("".join(json.dumps(r) + "\n" for r in bench_records()))

        from gpt4tools.registry import ToolRegistry
        from gpt4tools.ui import web
        from gpt4tools.ui.jobs import JobRunner

        registry = ToolRegistry([Invert(), Ask(), Crash(), Missing()])  # the Tools tab shows one unavailable
        app = web.build_app(scripted_agent(delay_s=0.002), registry=registry, runner=JobRunner(root / "runs"))
        port = free_port()
        web.launch(app, port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield Server(f"http://127.0.0.1:{port}/", app, root)
        finally:
            app.blocks.close()
