"""Latency and memory of every tool, for the targets "each offline tool <= 2 s on a 512x512
photo, all offline tools loaded <= 4 GB", and the table tool -> backing model ->
learned/classical/unavailable -> latency.

The tools come from `build_registry()` (all 31). Unavailable ones are listed with the reason.
Each available tool runs in a fresh process, so its peak RSS is its own (the same pattern as
bench_objects.py / bench_maps.py / bench_people.py): one warm-up call through the real path
(ImageStore upload of a packaged photo resized to 512x512, then `tool(raw_input, store)`),
then the median of N timed calls. One more process then loads and calls every available tool
in turn and reports its RSS with all of them loaded.

Prints one JSON line per tool, then a Markdown table and the all-loaded line.

    python scripts/bench_tools.py                          # every tool
    python scripts/bench_tools.py Detection "Detect Face"  # some (names, aliases or class names)
    python scripts/bench_tools.py --calls 3 --out runs/bench_tools.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import time_calls  # scripts/benchlib.py (this folder is on sys.path)

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 2.0  # per offline tool, median call
TARGET_ALL_MB = 4 * 1024  # all offline tools loaded

# tool name -> (asset in assets/ or None for text-only tools, text argument(s) or None).
# Each photo has something for the tool to find, so the timing is of real work.
INPUTS: dict[str, tuple[str | None, str | None]] = {
    "Get Photo Description": ("coffee_sign.jpg", None),
    "Answer Question About The Image": ("astronaut.jpg", "how many people are there?"),
    "Detect the Give Object": ("coffee.jpg", "cup"),
    "Segment the Image": ("astronaut.jpg", None),
    "Segment the given object": ("coffee.jpg", "cup"),
    "Remove Something From The Photo": ("coffee.jpg", "cup"),
    "Replace Something From The Photo": ("chelsea.jpg", "cat, a small dog"),
    "Generate Image From User Input Text": (None, "a red bicycle leaning on a wall"),
    "Instruct Image Using Text": ("chelsea.jpg", "make it look like a watercolor painting"),
    "Edge Detection On Image": ("astronaut.jpg", None),
    "Generate Image Condition On Canny Image": ("astronaut.jpg", "a robot in a space suit"),
    "Line Detection On Image": ("rocket.jpg", None),
    "Hed Detection On Image": ("rocket.jpg", None),
    "Generate Image Condition On Soft Hed Boundary Image": ("rocket.jpg", "a rocket at dawn"),
    "Sketch Detection On Image": ("astronaut.jpg", None),
    "Generate Image Condition On Sketch Image": ("astronaut.jpg", "a robot in a space suit"),
    "Pose Detection On Image": ("astronaut.jpg", None),
    "Generate Image Condition On Pose Image": ("astronaut.jpg", "a robot in a space suit"),
    "Generate Image Condition On Segmentations": ("astronaut.jpg", "a robot in a space suit"),
    "Predict Depth On Image": ("astronaut.jpg", None),
    "Generate Image Condition On Depth": ("astronaut.jpg", "a robot in a space suit"),
    "Predict Normal Map On Image": ("astronaut.jpg", None),
    "Generate Image Condition On Normal Map": ("astronaut.jpg", "a robot in a space suit"),
    "Text Detection On Image": ("coffee_sign.jpg", None),
    "Detection": ("astronaut.jpg", None),
    "Detect Face": ("astronaut.jpg", None),
    "Recognize Face": ("astronaut.jpg", None),
    "Assess the Image Quality": ("astronaut.jpg", None),
    "Image Super-Resolution": ("astronaut.jpg", None),
    "Crop the Given Object": ("coffee.jpg", "cup"),
    "Generate 3D Asset From User Input Text": (None, "a wooden chair"),
}


def _rss() -> dict:
    import psutil

    rss = psutil.Process().memory_info().rss / 2**20
    # ru_maxrss (KiB on Linux) is the process's high-water mark, loading included; the kernel
    # updates it lazily, so it can trail the current RSS by a little: take the larger.
    peak = max(rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"rss_mb": round(rss), "peak_rss_mb": round(peak)}


def _prepare(names: list[str], device: str, tmp: Path):
    """Tools through the real `--load` path, plus one store holding each tool's input."""
    from PIL import Image

    from gpt4tools.images import ImageStore
    from gpt4tools.registry import build_registry

    registry = build_registry(",".join(f"{n}_{device}" for n in names))
    if "Recognize Face" in registry:  # a one-person gallery (not the user's), so matching does real work
        from tools.faces import FaceGallery, enroll

        enroll("Eileen Collins", Image.open(REPO / "assets" / "astronaut.jpg").convert("RGB"), root=tmp / "faces")
        registry["Recognize Face"].gallery = FaceGallery(tmp / "faces", device)
    store = ImageStore(tmp / "session")
    raws = {}
    for name in names:
        asset, text = INPUTS[name]
        parts = []
        if asset:
            img = Image.open(REPO / "assets" / asset).convert("RGB").resize((512, 512), Image.Resampling.LANCZOS)
            parts.append(store.add_upload(img))
        if text:
            parts.append(text)
        raws[name] = ", ".join(parts)
    return registry, store, raws


def bench_one(name: str, calls: int, device: str) -> dict:
    """Run in a fresh process: warm-up call, then the median of `calls` timed calls.

    Also the CPU seconds of each call (all threads of this process) and the machine's 1-minute
    load average (this run's threads included): when other jobs share the cores, the wall time
    grows much more than the CPU time, so a run on a busy machine can still be judged."""
    cpu: list[float] = []

    def call():
        c0 = time.process_time()
        obs = tool(raw, store)
        cpu.append(time.process_time() - c0)
        return obs

    with tempfile.TemporaryDirectory() as tmp:
        registry, store, raws = _prepare([name], device, Path(tmp))
        tool, raw = registry[name], raws[name]
        load_before = os.getloadavg()[0]
        obs, first_s, times = time_calls(call, calls)  # the first call loads the models
    asset, text = INPUTS[name]
    return {
        "tool": name,
        "input": (f"{asset} resized to 512x512" if asset else "text") + (f", {text}" if text else ""),
        "device": device,
        "first_call_s": round(first_s, 2),
        "median_ms": round(1000 * statistics.median(times), 1),
        "median_cpu_ms": round(1000 * statistics.median(cpu[1:] or cpu), 1),
        "loadavg_1m": round(max(load_before, os.getloadavg()[0]), 2),  # this run's own threads count too
        "calls": calls,
        **_rss(),
        "observation": obs.text.replace("\n", " | ")[:160],
    }


def bench_all(names: list[str], device: str) -> dict:
    """Run in a fresh process: load and call every tool in turn; RSS with all of them loaded."""
    from gpt4tools.model_cache import CACHE

    # The cache drops least-recently-used models over its budget (from rough memory_mb
    # hints); lift it so "all loaded" really means all loaded, and report the hints.
    default_budget = CACHE.budget_mb
    CACHE.budget_mb = 10**7
    errors = {}
    with tempfile.TemporaryDirectory() as tmp:
        registry, store, raws = _prepare(names, device, Path(tmp))
        t0 = time.perf_counter()
        for name in names:
            try:
                registry[name](raws[name], store)
            except Exception as e:  # one broken tool should not hide the figure for the rest
                errors[name] = f"{type(e).__name__}: {e}"[:300]
        load_s = time.perf_counter() - t0
    return {
        "all_loaded": len(names) - len(errors),
        "tools": names,
        "errors": errors,
        "device": device,
        "load_and_call_s": round(load_s, 1),
        **_rss(),
        "cache_models": CACHE.keys(),
        "cache_hint_mb": CACHE.used_mb(),
        "cache_default_budget_mb": default_budget,
    }


def _child(args: list[str], timeout: int) -> dict:
    """Run this script with `args` in a fresh interpreter; its last JSON line, or the error."""
    try:
        out = subprocess.run([sys.executable, __file__, *args], cwd=REPO, capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {"error": (out.stderr.strip() or out.stdout.strip())[-500:] or f"exit code {out.returncode}"}


def _kind(row: dict) -> str:
    if not row["available"]:
        return "unavailable"
    return "learned" if row["learned"] else "classical"


def markdown(rows: list[dict], all_loaded: dict | None) -> str:
    out = ["| tool | backing model | learned/classical/unavailable | median ms | first call s | peak RSS MB |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        b = r.get("bench") or {}
        if "error" in b:
            cells = ["error", "error", "error"]
        else:
            cells = [str(b.get(k, "-")) for k in ("median_ms", "first_call_s", "peak_rss_mb")]
        out.append(f"| {r['name']} | {r['model']} | {_kind(r)} | {' | '.join(cells)} |")
    timed = [r for r in rows if "median_ms" in (r.get("bench") or {})]
    slow = [r["name"] for r in timed if r["bench"]["median_ms"] > 1000 * TARGET_S]
    out += ["", f"Median call <= {TARGET_S:g} s: {len(timed) - len(slow)} of {len(timed)} timed tools"
            + (f"; over: {', '.join(slow)}" if slow else "")]
    failed = [r["name"] for r in rows if "error" in (r.get("bench") or {})]
    if failed:
        out.append(f"Failed: {', '.join(failed)}")
    if all_loaded is not None:
        if "error" in all_loaded:
            out.append(f"All loaded: error: {all_loaded['error']}")
        else:
            ok = all_loaded["peak_rss_mb"] <= TARGET_ALL_MB
            out.append(f"All loaded ({all_loaded['all_loaded']} tools): RSS {all_loaded['rss_mb']} MB, "
                       f"peak RSS {all_loaded['peak_rss_mb']} MB "
                       f"({'meets' if ok else 'over'} the {TARGET_ALL_MB} MB target)"
                       + (f"; errors: {all_loaded['errors']}" if all_loaded["errors"] else ""))
    return "\n".join(out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tools", nargs="*", metavar="TOOL", help="tool names, aliases or class names (default: all)")
    ap.add_argument("--calls", type=int, default=5, help="timed calls after the warm-up call (default 5)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, help="also write everything as JSON to this file")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per child process (default 1800)")
    ap.add_argument("--no-all", action="store_true", help="skip the all-loaded process")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: bench this tool in this process
    ap.add_argument("--all-loaded", nargs="+", help=argparse.SUPPRESS)  # internal: the all-loaded process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(bench_one(args.one, args.calls, args.device)), flush=True)
        return 0
    if args.all_loaded:
        print(json.dumps(bench_all(args.all_loaded, args.device)), flush=True)
        return 0

    from gpt4tools.inventory import describe
    from gpt4tools.registry import UnknownToolError, build_registry

    # The parent only builds the registry and checks availability (no weights loaded), so it
    # stays small: children inherit nothing heavy that would count in their own peak RSS.
    registry = build_registry()
    try:
        chosen = [registry.resolve(t).spec.name for t in args.tools] if args.tools else list(registry)
    except UnknownToolError as e:
        ap.error(str(e))
    rows = [{k: d[k] for k in ("name", "available", "reason", "model", "learned")}
            for d in describe(registry) if d["name"] in chosen]
    common = ["--calls", str(args.calls), "--device", args.device]
    for row in rows:
        if row["available"]:
            row["bench"] = _child(["--one", row["name"], *common], args.timeout)
        print(json.dumps(row), flush=True)
    loadable = [r["name"] for r in rows if r["available"]]
    all_loaded = None
    if loadable and not args.no_all:
        all_loaded = _child(["--all-loaded", *loadable, *common], args.timeout)
        print(json.dumps({"all_loaded": all_loaded}), flush=True)
    print()
    print(markdown(rows, all_loaded))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "argv": argv,
                                        "calls": args.calls, "device": args.device, "tools": rows,
                                        "all_loaded": all_loaded}, indent=2) + "\n")
    failed = any("error" in (r.get("bench") or {}) for r in rows) or (all_loaded or {}).get("error")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main(sys.argv[1:]))
