"""Latency and memory of the people and text tools: pose, face detection and recognition, OCR.

Each tool runs in a fresh process (so RSS is its own): one warm-up call through the real
tool path (ImageStore upload, `tool(raw_input, store)`), then the median of N timed calls
on a 512x512 image (`median_ms`), and of N calls of `run` alone (`run_only_ms`: no PNG
decoding, drawing or saving). Prints one JSON line per tool.

    python scripts/bench_people.py            # all four
    python scripts/bench_people.py ocr pose   # some
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import time_calls  # scripts/benchlib.py (this folder is on sys.path)

REPO = Path(__file__).resolve().parent.parent
# tool key -> (module, class, asset the tool has something to find in)
TOOLS = {
    "pose": ("tools.pose", "PoseDetection", "astronaut.jpg"),
    "face": ("tools.faces", "DetectFace", "astronaut.jpg"),
    "faceid": ("tools.faces", "RecognizeFace", "astronaut.jpg"),
    "ocr": ("tools.ocr", "TextDetection", "coffee_sign.jpg"),
}


def bench_one(key: str, calls: int = 5, device: str = "cpu") -> dict:
    import importlib

    import psutil
    from PIL import Image

    from gpt4tools.images import ImageStore

    module, cls_name, asset = TOOLS[key]
    rss0 = psutil.Process().memory_info().rss
    cls = getattr(importlib.import_module(module), cls_name)
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = {}
        if key == "faceid":  # a gallery with one person, so matching does real work
            from tools.faces import enroll

            enroll("Eileen Collins", Image.open(REPO / "assets" / asset).convert("RGB"), root=Path(tmp) / "faces")
            kwargs["gallery"] = Path(tmp) / "faces"
        tool = cls(device=device, **kwargs)
        store = ImageStore(Path(tmp) / "session")
        img = Image.open(REPO / "assets" / asset).convert("RGB").resize((512, 512), Image.Resampling.LANCZOS)
        name = store.add_upload(img)
        first, first_s, times = time_calls(lambda: tool(name, store), calls)
        obs = first
        # The model alone, without decoding the upload, drawing and saving the result PNG.
        core = []
        for _ in range(calls):
            t0 = time.perf_counter()
            tool.run(store, image_path=img)
            core.append(time.perf_counter() - t0)
    return {
        "tool": cls.spec.name,
        "model": cls.model,
        "image": f"{asset} resized to 512x512",
        "first_call_s": round(first_s, 2),
        "median_ms": round(1000 * statistics.median(times), 1),
        "run_only_ms": round(1000 * statistics.median(core), 1),
        "calls": calls,
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20),
        "rss_growth_mb": round((psutil.Process().memory_info().rss - rss0) / 2**20),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "observation": obs.text.replace("\n", " | ")[:160] if first else "",
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
        print(lines[-1] if out.returncode == 0 and lines
              else json.dumps({"tool": key, "error": out.stderr.strip()[-500:]}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main(sys.argv[1:]))
