"""The embedded default (small LLM + the committed LoRA adapter) on real turns, through the CLI.

These load the real model, so they skip until `python -m gpt4tools weights fetch` has run
and the default adapter is committed under adapters/default/.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ASSETS, requires_weights
from gpt4tools.llm import DEFAULT_ADAPTER_DIR, DEFAULT_MODEL

REPO = Path(__file__).resolve().parent.parent
pytestmark = [
    requires_weights(DEFAULT_MODEL, "centernet"),
    pytest.mark.skipif(not (REPO / DEFAULT_ADAPTER_DIR / "adapter_config.json").is_file(), reason="no default adapter yet"),
]


def chat(message: str, *images: str) -> dict:
    cmd = [sys.executable, "-m", "gpt4tools", "chat", "--message", message, "--json"]
    for img in images:
        cmd += ["--image", str(ASSETS / img)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


@pytest.mark.xfail(strict=False, reason=(
    "known weakness of the default adapter (issue 5; docs/benchmark.md): it now calls 'Detect the Give "
    "Object' with the right image (transformers, merged bf16 GGUF) but without the object name, and does not "
    "repair the call after the agent's corrective observation; the merged q8_0 GGUF picks 'Detection'"))
def test_detect_the_cat_calls_detection_with_image_and_object():
    out = chat("detect the cat in this image", "chelsea.jpg")
    name = out["uploads"][0]
    actions = [s for s in out["steps"] if s["type"] == "action"]
    assert actions, out["steps"]
    first = actions[0]
    assert first["tool"] in ("Detect the Give Object", "Detection")
    assert name in first["tool_input"] and "cat" in first["tool_input"].lower()
    images = [s for s in out["steps"] if s["type"] == "image"]
    assert images and Path(images[0]["path"]).is_file()
    assert out["steps"][-1]["type"] == "final"


def test_arithmetic_needs_no_tool():
    out = chat("what is 2+2?")
    assert not [s for s in out["steps"] if s["type"] == "action"]
    assert out["steps"][-1]["type"] == "final" and out["steps"][-1]["text"]
