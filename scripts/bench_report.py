"""Compare benchmark runs side by side: overall metrics, then SR per reference tool.

    python scripts/bench_report.py runs/bench/val_baseline runs/bench/val_base runs/bench/val_tuned \
        --names "always no tool" "SmolLM2 untuned" "SmolLM2 + adapter" > docs/benchmark-val.md

Each run folder is the output of `python -m gpt4tools bench` (run.json + scores.json). The
command that made each run is printed under the tables, so the report can be reproduced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gpt4tools.metrics import METRICS  # noqa: E402

COLS = tuple(METRICS)


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def record_seconds(predictions: Path) -> list[float]:
    """Seconds each prediction took (the runner's per-record timing; none for baselines and for
    folders made by `gpt4tools score`, which only scores)."""
    if not predictions.is_file():
        return []
    rows = (json.loads(x) for x in predictions.read_text(encoding="utf-8").split("\n") if x.strip())
    return [row["seconds"] for row in rows if row.get("seconds") is not None]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="bench run folders")
    ap.add_argument("--names", nargs="*", help="a display name per run (default: folder names)")
    args = ap.parse_args()
    names = args.names or [Path(r).name for r in args.runs]
    if len(names) != len(args.runs):
        ap.error("give one --names entry per run")
    scores = [json.loads((Path(r) / "scores.json").read_text()) for r in args.runs]
    settings = [json.loads((Path(r) / "run.json").read_text()) if (Path(r) / "run.json").is_file() else {}
                for r in args.runs]

    out = ["| run | n | " + " | ".join(f"{c} %" for c in COLS) + " | s/record | generation s |",
           "|---|---:|" + "---:|" * (len(COLS) + 2)]
    for name, s, r in zip(names, scores, args.runs):
        secs = sorted(record_seconds(Path(r) / "predictions.jsonl"))
        med, total = (f"{secs[len(secs) // 2]:.2f}", f"{sum(secs):.0f}") if secs else ("–", "–")
        out.append(f"| {name} | {s['n']} | " + " | ".join(pct(s[c]) for c in COLS) + f" | {med} | {total} |")
    tools = list(dict.fromkeys(t for s in scores for t in s["per_tool"]))
    out += ["", "SR % per reference tool (n in brackets):", "",
            "| tool | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for t in tools:
        cells = []
        for s in scores:
            row = s["per_tool"].get(t)
            cells.append(f"{pct(row['SR'])} ({row['n']})" if row else "–")
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    out += ["", "Commands:", "", "```bash"]
    out += [st.get("command", f"# {r}: scored by `gpt4tools score` (see scripts/eval_default.sh)")
            for st, r in zip(settings, args.runs)]
    out += ["```", ""]
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
