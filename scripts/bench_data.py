"""Data-generation throughput: records per minute with each teacher, on this machine.

    python scripts/bench_data.py                                   # template teacher + the local default LLM
    python scripts/bench_data.py --teachers template --records 400
    python scripts/bench_data.py --teachers llm:openai:qwen2.5:http://127.0.0.1:8000/v1

Each teacher runs the project's own command (`python -m gpt4tools data build`) into a fresh
folder, asking for `--records` training records (a small validation split comes with it),
and is timed from start to finish: image analysis of the photos, teacher replies, parsing,
filtering, negatives and writing. Reported: records written, wall seconds, records/minute,
and the teacher's kept/dropped counts from stats.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def teacher_args(spec: str) -> list[str]:
    """'template' | 'llm' (local default model) | 'llm:BACKEND:MODEL[:BASE_URL]'."""
    if spec == "template":
        return ["--teacher", "template"]
    parts = spec.split(":", 3)
    backend = parts[1] if len(parts) > 1 else "transformers"
    model = parts[2] if len(parts) > 2 else "default"
    args = ["--teacher", "llm", "--backend", backend, "--model", model]
    return args + (["--base-url", parts[3]] if len(parts) > 3 else [])


def run(spec: str, records: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "gpt4tools", "data", "build", "--out", tmp, "--train-records", str(records),
               "--val-per-tool", "1", "--val-finals", "2", "--val-negatives", "2", "--quiet",
               *teacher_args(spec), *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"teacher": spec, "error": proc.stderr[-1500:]}
        n = sum(len(p.read_text().splitlines()) for p in Path(tmp).glob("*.jsonl"))
        stats = json.loads((Path(tmp) / "stats.json").read_text()) if (Path(tmp) / "stats.json").is_file() else {}
    return {"teacher": spec, "records": n, "wall_s": round(wall, 1), "records_per_min": round(60 * n / wall, 1),
            "dropped": stats.get("train", {}).get("dropped", {}), "command": " ".join(cmd[1:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", nargs="+", default=["template", "llm"])
    ap.add_argument("--records", type=int, default=60, help="training records asked of each teacher")
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("extra", nargs="*", help="more `data build` options, after --")
    args = ap.parse_args()
    rows = []
    for spec in args.teachers:
        row = run(spec, args.records, args.extra)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| teacher | records | wall s | records/min |\n|---|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['teacher']} | failed | | |")
        else:
            print(f"| {r['teacher']} | {r['records']} | {r['wall_s']} | {r['records_per_min']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
