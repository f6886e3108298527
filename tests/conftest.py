"""Shared fixtures. Tests that need fetched weights skip with the fetch command as reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub from tests
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def requires_weights(*names: str):
    """Skip unless `python -m gpt4tools weights fetch NAMES` has been run."""
    from gpt4tools import weights

    missing = [n for n in names if not weights.status(n).ok]
    return pytest.mark.skipif(
        bool(missing), reason=f"weights not fetched: python -m gpt4tools weights fetch {' '.join(missing)}"
    )


@pytest.fixture
def store(tmp_path):
    from gpt4tools.images import ImageStore

    return ImageStore(tmp_path / "session")


@pytest.fixture
def upload(store):
    """Upload an asset into the session store; returns its image name."""

    def _upload(asset: str) -> str:
        return store.add_upload(ASSETS / asset)

    return _upload
