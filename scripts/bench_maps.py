"""Latency and memory of the condition-map and quality tools (tools/maps.py, tools/quality.py).

Each tool runs in a fresh process, so the RSS it reports is its own: one warm-up call
through the real path (ImageStore upload, `tool(raw_input, store)`), then the median of
N timed calls on a 512x512 image. Tools with a classical fallback report which backend
ran (the learned one when its weights are fetched). One JSON line per tool.

    python scripts/bench_maps.py                 # all six
    python scripts/bench_maps.py line hed        # some
    python scripts/bench_maps.py --device cuda   # on a GPU
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
# key -> (module, class, asset)
TOOLS = {
    "edge": ("tools.maps", "EdgeDetection", "astronaut.jpg"),
    "line": ("tools.maps", "LineDetection", "rocket.jpg"),
    "hed": ("tools.maps", "HedDetection", "rocket.jpg"),
    "scribble": ("tools.maps", "SketchDetection", "astronaut.jpg"),
    "seg": ("tools.maps", "SegmentImage", "astronaut.jpg"),
    "quality": ("tools.quality", "AssessImageQuality", "astronaut.jpg"),
}


def bench_one(key: str, calls: int = 5, device: str = "cpu") -> dict:
    import importlib

    import psutil
    from PIL import Image

    from gpt4tools.images import ImageStore

    module, cls_name, asset = TOOLS[key]
    rss0 = psutil.Process().memory_info().rss
    cls = getattr(importlib.import_module(module), cls_name)
    tool = cls(device=device)
    avail = tool.availability()
    if not avail.ok:
        return {"tool": cls.spec.name, "unavailable": avail.reason}
    with tempfile.TemporaryDirectory() as tmp:
        store = ImageStore(Path(tmp) / "session")
        img = Image.open(REPO / "assets" / asset).convert("RGB").resize((512, 512), Image.Resampling.LANCZOS)
        raw = store.add_upload(img)
        obs, first_s, times = time_calls(lambda: tool(raw, store), calls)
    backend = getattr(tool, "backend", None)
    return {
        "tool": cls.spec.name,
        "backend": backend() if backend else tool.model,
        "device": device,
        "input": f"{asset} resized to 512x512",
        "first_call_s": round(first_s, 2),
        "median_ms": round(1000 * statistics.median(times), 1),
        "calls": calls,
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20),
        "rss_growth_mb": round((psutil.Process().memory_info().rss - rss0) / 2**20),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "observation": obs.text.replace("\n", " | ")[:160],
    }


def main(argv: list[str]) -> int:
    device = "cpu"
    if "--device" in argv:
        i = argv.index("--device")
        device = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if argv[:1] == ["--one"]:
        print(json.dumps(bench_one(argv[1], device=device)), flush=True)
        return 0
    for key in argv or list(TOOLS):
        if key not in TOOLS:
            print(f"unknown tool {key!r}; choose from {', '.join(TOOLS)}", file=sys.stderr)
            return 2
        # A fresh interpreter per tool: RSS and the model cache are then the tool's own.
        out = subprocess.run([sys.executable, __file__, "--one", key, "--device", device], cwd=REPO,
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(json.dumps({"tool": key, "error": out.stderr.strip().splitlines()[-1:]}), flush=True)
            continue
        print(out.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main(sys.argv[1:]))
