"""Latency and memory of the object tools: detection, detect/crop/segment/remove a named
object, photo description and question answering.

Each tool runs in a fresh process (so its RSS is its own): one warm-up call through the
real tool path (ImageStore upload, `tool(raw_input, store)`), then the median of N timed
calls on a 512x512 image (`median_ms`). Prints one JSON line per tool.

    python scripts/bench_objects.py               # all seven
    python scripts/bench_objects.py det remove    # some
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import time_calls  # scripts/benchlib.py (this folder is on sys.path)

REPO = Path(__file__).resolve().parent.parent
# key -> (module, class, asset, text argument or None)
TOOLS = {
    "det": ("tools.objects", "ObjectDetection", "astronaut.jpg", None),
    "detect": ("tools.objects", "DetectGivenObject", "coffee.jpg", "cup"),
    "crop": ("tools.objects", "CropGivenObject", "coffee.jpg", "cup"),
    "segobj": ("tools.masks", "SegmentGivenObject", "coffee.jpg", "cup"),
    "remove": ("tools.masks", "RemoveObject", "coffee.jpg", "cup"),
    "caption": ("tools.describe", "PhotoDescription", "coffee_sign.jpg", None),
    "vqa": ("tools.describe", "VisualQuestionAnswering", "astronaut.jpg", "how many people are there?"),
}


def bench_one(key: str, calls: int = 5, device: str = "cpu") -> dict:
    import importlib

    import psutil
    from PIL import Image

    from gpt4tools.images import ImageStore

    module, cls_name, asset, text = TOOLS[key]
    rss0 = psutil.Process().memory_info().rss
    cls = getattr(importlib.import_module(module), cls_name)
    tool = cls(device=device)
    with tempfile.TemporaryDirectory() as tmp:
        store = ImageStore(Path(tmp) / "session")
        img = Image.open(REPO / "assets" / asset).convert("RGB").resize((512, 512), Image.Resampling.LANCZOS)
        raw = store.add_upload(img) + (f", {text}" if text else "")
        obs, first_s, times = time_calls(lambda: tool(raw, store), calls)
    return {
        "tool": cls.spec.name,
        "model": tool.model,
        "input": f"{asset} resized to 512x512" + (f", {text}" if text else ""),
        "first_call_s": round(first_s, 2),
        "median_ms": round(1000 * statistics.median(times), 1),
        "calls": calls,
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20),
        "rss_growth_mb": round((psutil.Process().memory_info().rss - rss0) / 2**20),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "observation": obs.text.replace("\n", " | ")[:200],
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        print(json.dumps(bench_one(argv[1])), flush=True)
        return 0
    for key in argv or list(TOOLS):
        if key not in TOOLS:
            print(f"unknown tool {key!r}; choose from {', '.join(TOOLS)}", file=sys.stderr)
            return 2
        out = subprocess.run(
            [sys.executable, __file__, "--one", key], cwd=REPO, capture_output=True, text=True, check=False
        )
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        print(
            lines[-1]
            if out.returncode == 0 and lines
            else json.dumps({"tool": key, "error": out.stderr.strip()[-500:]})
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main(sys.argv[1:]))
