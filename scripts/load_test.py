"""Load test: N concurrent gradio_client sessions, each a few chat turns with tools.

    python scripts/load_test.py                      # starts the app with the scripted agent
    python scripts/load_test.py --url http://127.0.0.1:7860/ --no-check   # a running app

Each session is one `gradio_client.Client` (its own cookie, so its own app session). Turn 1
uploads a photo and asks to invert it; the next turns alternate "invert it again" (an edit
of the previous result) and "how big is it" (a text tool). With the scripted agent
(tests/fakes.py: EchoPlanLLM + small real tools) every turn is checked: an edit must return
an image, a size question the tool's answer. Reports errors and turn latency (median, p95).
Without --url the app runs in a child process (`--serve PORT`), so client threads and the
server do not share one interpreter; its peak RSS is reported too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # gradio_client calls the hub otherwise
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def serve(port: int, delay_s: float) -> None:
    """The app with the scripted agent, for load testing without model weights."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from gpt4tools.ui import web

    from fakes import scripted_agent

    web.launch(web.build_app(scripted_agent(delay_s=delay_s), jobs=False), port=port, quiet=True)


def turns(n: int) -> list[tuple[str, bool]]:
    """(message, expects an image) per turn."""
    out = [("invert this photo", True)]
    for i in range(1, n):
        out.append(("invert it again", True) if i % 2 else ("how big is it? what size?", False))
    return out


def session(url: str, image: Path, n_turns: int, check: bool) -> tuple[list[float], list[str]]:
    from gradio_client import Client, handle_file

    latencies, errors = [], []
    try:
        client = Client(url, verbose=False, download_files=False)
    except Exception as e:
        return latencies, [f"connect: {e}"]
    for i, (text, wants_image) in enumerate(turns(n_turns)):
        files = [handle_file(image)] if i == 0 else []
        t0 = time.perf_counter()
        try:
            history, _ = client.predict({"text": text, "files": files}, api_name="/chat")
        except Exception as e:
            errors.append(f"turn {i + 1}: {type(e).__name__}: {e}")
            continue
        latencies.append(time.perf_counter() - t0)
        if not check:
            continue
        last = [m for m in history if m["role"] == "user"][-1]
        reply = history[history.index(last) + 1:]
        images = [p for m in reply for p in m["content"] if p.get("type") == "file"]
        texts = " ".join(p.get("text", "") for m in reply for p in m["content"])
        if wants_image and not images:
            errors.append(f"turn {i + 1}: no result image ({texts[:120]!r})")
        elif not wants_image and "pixels" not in texts:
            errors.append(f"turn {i + 1}: no size answer ({texts[:120]!r})")
        if any(m["metadata"].get("title", "").startswith("💥") for m in reply):
            errors.append(f"turn {i + 1}: error message in the chat ({texts[:120]!r})")
    return latencies, errors


def wait_up(url: str, proc: subprocess.Popen | None, timeout_s: float = 90) -> None:
    import httpx

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode}")
        try:
            if httpx.get(url + "config", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the app did not come up at {url} in {timeout_s:.0f} s")


def watch_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    import psutil

    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], proc.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.2)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running app (default: start one with the scripted agent)")
    ap.add_argument("--sessions", type=int, default=20, help="concurrent sessions (default 20)")
    ap.add_argument("--turns", type=int, default=3, help="chat turns per session (default 3)")
    ap.add_argument("--image", type=Path, default=REPO / "assets" / "chelsea.jpg")
    ap.add_argument("--delay", type=float, default=0.0, help="scripted agent: seconds between streamed pieces")
    ap.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                    help="check each turn's content (default: on for the scripted app)")
    ap.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve, args.delay)
        return 0

    proc, tmp = None, None
    url = args.url
    if url is None:
        sys.path.insert(0, str(REPO / "tests"))
        from appserver import free_port

        port = free_port()
        tmp = tempfile.TemporaryDirectory(prefix="gpt4tools-load-")
        env = {**os.environ, "GPT4TOOLS_RUNS": f"{tmp.name}/runs", "GRADIO_TEMP_DIR": f"{tmp.name}/gradio",
               "GPT4TOOLS_LOG": "WARNING"}
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--delay", str(args.delay)], env=env)
        url = f"http://127.0.0.1:{port}/"
    url = url if url.endswith("/") else url + "/"
    check = args.check if args.check is not None else args.url is None
    stop, peak = threading.Event(), [0]
    try:
        wait_up(url, proc)
        if proc is not None:
            threading.Thread(target=watch_rss, args=(proc.pid, stop, peak), daemon=True).start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.sessions) as pool:
            results = list(pool.map(lambda _: session(url, args.image, args.turns, check), range(args.sessions)))
        wall = time.perf_counter() - t0
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        stop.set()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if tmp is not None:
            tmp.cleanup()

    latencies = [x for lat, _ in results for x in lat]
    errors = [e for _, errs in results for e in errs]
    total = args.sessions * args.turns
    print(f"{args.sessions} sessions x {args.turns} turns = {total} turns in {wall:.1f} s "
          f"({len(latencies) / wall:.2f} turns/s); errors: {len(errors)}")
    if latencies:
        print(f"turn latency: median {statistics.median(latencies):.2f} s, p95 {pct(latencies, 0.95):.2f} s, "
              f"max {max(latencies):.2f} s")
    if peak[0]:
        print(f"app peak RSS: {peak[0] / 2**20:.0f} MiB")
    for e in errors[:10]:
        print("  " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
