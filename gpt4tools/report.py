"""A benchmark report rendered: scores.json, scores.md (a table per tool) and scores.png (SR bars).

The numbers come from gpt4tools.metrics (through bench.score_records); this module only
writes them down, in the metrics' own order (metrics.METRICS).
"""

from __future__ import annotations

import json
from pathlib import Path

from gpt4tools.metrics import METRICS
from gpt4tools.records import atomic_write


def write_report(report: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "scores.json", out / "scores.md"]
    atomic_write(written[0], json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write(written[1], markdown(report))
    if report["n"]:
        written.append(plot(report, out / "scores.png"))
    return written


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown(report: dict) -> str:
    cols = tuple(METRICS)
    lines = ["| Tool | n | " + " | ".join(f"{c} %" for c in cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    rows = [("**all**", report), *report["per_tool"].items()]
    lines += [f"| {name} | {r['n']} | " + " | ".join(_pct(r[c]) for c in cols) + " |" for name, r in rows]
    lines.append("")
    lines.append(f"Coverage: {report['n']} of {report['n_annotations']} annotations scored "
                 f"({_pct(report['coverage'])} %).")
    for kind, entry in report["problems"].items():
        shown = ", ".join(str(e) for e in entry["examples"])
        lines.append(f"- {kind}: {entry['count']} ({entry.get('note', '')}; e.g. {shown})")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """A horizontal bar chart of SR per tool (tool names are long)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas

    names = [f"all (n={report['n']})", *(f"{t} (n={r['n']})" for t, r in report["per_tool"].items())]
    values = [100 * report["SR"], *(100 * r["SR"] for r in report["per_tool"].values())]
    fig = Figure(figsize=(8, 1.2 + 0.32 * len(names)), layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(names[::-1], values[::-1], color=["#4c72b0"] * (len(names) - 1) + ["#dd8452"])
    ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    ax.set_xlim(0, 112)  # room for the "100.0" labels
    ax.set_xlabel("success rate SR (%)")
    ax.set_title("GPT4Tools benchmark: success rate per reference tool")
    ax.tick_params(axis="y", labelsize=8)
    fig.savefig(path, dpi=120)
    return path


def summary_line(report: dict) -> str:
    """One line for a terminal: SR first, then the other metrics, the sample count and coverage."""
    others = "  ".join(f"{k} {_pct(report[k])}" for k in METRICS if k != "SR")
    return f"SR {_pct(report['SR'])} %  {others}  (n={report['n']}, coverage {_pct(report['coverage'])} %)"
