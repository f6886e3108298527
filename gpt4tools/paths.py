"""Where things live. Every location can be moved with an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def checkpoints_dir() -> Path:
    """Weights the tools and the LLM load from (git-ignored, but for the manifest)."""
    return Path(os.environ.get("GPT4TOOLS_CHECKPOINTS", REPO / "checkpoints"))


def cache_dir() -> Path:
    """Downloads and conversions, shared by every clone on this machine."""
    return Path(os.environ.get("GPT4TOOLS_CACHE", Path.home() / ".cache" / "gpt4tools"))


def runs_dir() -> Path:
    """Session image folders, data-generation, training and benchmark outputs."""
    return Path(os.environ.get("GPT4TOOLS_RUNS", REPO / "runs"))


def assets_dir() -> Path:
    return REPO / "assets"
