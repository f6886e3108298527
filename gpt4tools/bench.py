"""The benchmark: generate predictions for an annotation file, then score them (REFERENCE.md §6-7).

Commands (wired in `python -m gpt4tools`):

    score --data ANNOTATIONS --pred PREDICTIONS.jsonl [--out DIR]
    bench --data ANNOTATIONS --model default|PATH|HUB_ID [--adapter PATH] [--backend ...]
          [--limit N] [--out DIR] [--max-new-tokens 256] [--baseline no-tool]

Files. Annotations are GPT4Tools records, `{"instruction", "input", "output", "id"}`, as a
JSON list or JSONL. Predictions are JSONL, one `{"id", "output"}` per line; `output` is the
model's continuation of the prompt. For predictions from the original code, an `output`
that is a list counts by its first item, and one that starts with the record's
instruction is cut after it. Ids are compared as strings.

Generation protocol (`bench`):
- prompt: the record's `instruction`, plus "\\n" and its `input` when that is not empty;
  no chat wrapper is added (the original inference.py fed the instruction as is);
- greedy decoding (the backends decode greedily), `--batch-size` prompts at a time where the
  backend batches (transformers: left-padded; identical to one by one in fp32, while in
  bf16 a row may round differently and flip a token), at most `--max-new-tokens` (256) new
  tokens, stopping at the first of `react.STOP` ("Observation:" and the start of a next
  turn), exactly as the agent does in the app;
- `output` holds the continuation as produced, without the stop string. References are
  one assistant step ending in "Observation:", and the scorer reads only the Thought /
  Action / Action Input / AI lines, so the cut changes no metric for a model that stops
  where it should. (The original ran without stop strings up to 512 tokens; a model
  that runs on and imagines further steps was penalised there and is not here.)
- one line per record is appended to `DIR/predictions.jsonl` and flushed, so a killed
  run resumes by skipping ids already there; `DIR/run.json` records the settings, and a
  resume with other settings is refused rather than mixing two models in one file.
- `--baseline no-tool` writes "Thought: Do I need to use a tool? No / AI: ..." for every
  record without a model: the paper's always-no-tool baseline.

Scoring (`score`, and `bench` after generating) writes `scores.json`, `scores.md` and
`scores.png`. As in the paper, SR and the other metrics are over the samples that have
a prediction; annotations without one are counted (`problems.missing_predictions`) and
reported as `coverage`, not scored as failures. Bad input never crashes the scorer:
unknown ids, duplicates (the first is kept), malformed lines and empty outputs are
counted with examples; the exit code is non-zero only when nothing could be scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt4tools import metrics, paths, progress, react
from gpt4tools.llm import LLM, generate_many
from gpt4tools.prompt import record_prompt

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (done, total); raise from it to stop the run
BASELINE_ANSWER = "(always-no-tool baseline)"
_EXAMPLES = 10  # examples kept per problem kind
_SETTINGS_CHECKED = ("generator", "model", "adapter", "backend", "max_new_tokens", "per_tool", "seed")


class BenchError(Exception):
    """Input that cannot be benchmarked at all (the message says what to change)."""


# -- reading inputs ----------------------------------------------------------------------
@dataclass
class Problems:
    """Counts and a few examples of each kind of bad input, for scores.json."""

    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, kind: str, example: Any, note: str = "") -> None:
        entry = self.kinds.setdefault(kind, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < _EXAMPLES:
            entry["examples"].append(example)
        if note:
            entry["note"] = note


def _read_items(path: Path, kind: str, problems: Problems) -> list[tuple[int, Any]]:
    """(line number, parsed item) from a JSON list or JSONL file; bad lines are counted."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"cannot read {kind} file {path}: {e}") from e
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise BenchError(f"{path} starts like a JSON list but does not parse: {e}") from e
        return list(enumerate(items, start=1))  # position in the list stands in for the line
    out = []
    for number, line in enumerate(text.split("\n"), start=1):  # U+2028 may sit in a string
        if not line.strip():
            continue
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError:
            problems.add(f"malformed_{kind}_lines", number, "not valid JSON; skipped")
    return out


def _keyed(items: list[tuple[int, Any]], kind: str, problems: Problems, fields: Sequence[str],
           text: bool) -> dict[str, dict]:
    """Items by str(id), the first one kept; items without an id or the fields (as str if `text`) are counted."""
    out: dict[str, dict] = {}
    for number, item in items:
        usable = isinstance(item, dict) and "id" in item and all(
            k in item and (isinstance(item[k], str) or not text) for k in fields)
        if not usable:
            problems.add(f"invalid_{kind}", number, f"not an object with id and {', '.join(fields)}; skipped")
            continue
        key = str(item["id"])
        if key in out:
            problems.add(f"duplicate_{kind}_ids", key, "the first one is kept")
            continue
        out[key] = item
    return out


def load_annotations(path: str | Path, problems: Problems, need_instruction: bool = False) -> dict[str, dict]:
    fields = ("output", "instruction") if need_instruction else ("output",)
    return _keyed(_read_items(Path(path), "annotation", problems), "annotation", problems, fields, text=True)


def load_predictions(path: str | Path, problems: Problems) -> dict[str, dict]:
    # not text=True: the original code's outputs may be [text] (see prediction_text)
    return _keyed(_read_items(Path(path), "prediction", problems), "prediction", problems, ("output",), text=False)


def prediction_text(pred: dict, record: dict) -> str | None:
    """The continuation in a prediction line (see the module docstring), or None if unusable."""
    out = pred.get("output")
    if isinstance(out, list):  # the original inference wrote [text]
        out = out[0] if out else ""
    if not isinstance(out, str):
        return None
    instruction = record.get("instruction")
    if isinstance(instruction, str) and instruction and out.startswith(instruction):
        out = out[len(instruction):]  # a decoder that returned prompt + continuation
    return out


# -- scoring -----------------------------------------------------------------------------
def score_records(records: dict[str, dict], predictions: dict[str, dict], problems: Problems) -> dict:
    """Score every prediction that has an annotation; returns the scores.json dict."""
    scores, keys = [], []
    for pid, pred in predictions.items():
        record = records.get(pid)
        if record is None:
            problems.add("unknown_prediction_ids", pid, "no annotation with this id; not scored")
            continue
        text = prediction_text(pred, record)
        if text is None:
            problems.add("invalid_prediction", pid, "output is not text; not scored")
            continue
        if not text.strip():
            problems.add("empty_outputs", pid, "scored: an empty output fails")
        scores.append(metrics.score_sample(record["output"], text))
        keys.append(metrics.reference_tool(record["output"]))
    for rid in records:
        if rid not in predictions:
            problems.add("missing_predictions", rid, "not scored (as in the paper); see coverage")
    report = metrics.summarize(scores, keys)
    report["coverage"] = len(scores) / len(records) if records else 0.0
    report["n_annotations"] = len(records)
    report["problems"] = problems.kinds
    return report


def write_report(report: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "scores.json", out / "scores.md"]
    written[0].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written[1].write_text(markdown(report), encoding="utf-8")
    if report["n"]:
        written.append(plot(report, out / "scores.png"))
    return written


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown(report: dict) -> str:
    cols = ("SR_t", "SR_act", "SR_args", "SR", "IoU")
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


def score_files(data: str | Path, pred: str | Path, out: str | Path | None = None, *,
                per_tool: int | None = None, seed: int = 0) -> dict:
    """Score a predictions file against annotations and write the reports. Raises BenchError.
    `per_tool`/`seed`: score only bench's stratified subset (`select_per_tool`), e.g. the
    records of a smaller run within the predictions of a larger one."""
    problems = Problems()
    records = load_annotations(data, problems)
    if per_tool is not None:
        if per_tool < 1:
            raise BenchError(f"--per-tool must be 1 or more, not {per_tool}")
        records = select_per_tool(records, per_tool, seed)
    predictions = load_predictions(pred, problems)
    if per_tool is not None:  # predictions outside the subset are expected, not a problem
        predictions = {k: v for k, v in predictions.items() if k in records}
    report = score_records(records, predictions, problems)
    report.update(data=str(data), predictions=str(pred))
    if per_tool is not None:
        report.update(per_tool_subset=per_tool, seed=seed)
    report["files"] = [str(p) for p in write_report(report, Path(out) if out else Path(pred).parent)]
    return report


# -- generating ----------------------------------------------------------------------------
build_prompt = record_prompt  # one definition, shared with training (gpt4tools/prompt.py)


def baseline_output() -> str:
    return react.render_final(react.FinalAnswer(BASELINE_ANSWER))


def _done_ids(path: Path) -> set[str]:
    """Ids already predicted. A line cut short by a kill is removed so appending stays valid."""
    if not path.exists():
        return set()
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        keep = raw[: raw.rfind(b"\n") + 1]
        log.warning("%s: removing a partial last line left by an interrupted run", path)
        path.write_bytes(keep)
        raw = keep
    done = set()
    for line in raw.decode("utf-8", errors="replace").split("\n"):
        try:
            done.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # left for the scorer to report
    return done


def _check_settings(out: Path, settings: dict) -> None:
    path = out / "run.json"
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise BenchError(f"{path} is unreadable ({e}); delete it or use another --out") from e
        diff = [k for k in _SETTINGS_CHECKED if old.get(k) != settings.get(k)]
        if diff:
            raise BenchError(
                f"{out} holds predictions made with other settings ({', '.join(diff)}: "
                f"{[old.get(k) for k in diff]} != {[settings.get(k) for k in diff]}); use another --out"
            )
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def select_per_tool(records: dict[str, dict], per_tool: int, seed: int = 0) -> dict[str, dict]:
    """A stratified subset: `per_tool` records for each reference tool (and for "no tool"),
    drawn with a seeded shuffle, kept in file order. Cheap runs that still cover every tool."""
    import random

    ids = list(records)
    random.Random(seed).shuffle(ids)
    taken: dict[str, int] = {}
    chosen = set()
    for rid in ids:
        key = metrics.reference_tool(records[rid]["output"])
        if taken.get(key, 0) < per_tool:
            taken[key] = taken.get(key, 0) + 1
            chosen.add(rid)
    return {rid: rec for rid, rec in records.items() if rid in chosen}


def run_bench(
    data: str | Path,
    out: str | Path,
    *,
    llm: LLM | None = None,
    baseline: str | None = None,
    limit: int | None = None,
    per_tool: int | None = None,
    seed: int = 0,
    max_new_tokens: int = 256,
    batch_size: int = 1,
    settings: dict | None = None,
    progress_callback: ProgressCallback | None = None,
) -> dict:
    """Generate the missing predictions into out/predictions.jsonl, then score them.

    Args:
        data: the annotation file.
        out: the run folder (created; resumed when it exists).
        llm: a `gpt4tools.llm.LLM`; not needed with baseline="no-tool".
        baseline: "no-tool" for the always-no-tool baseline.
        limit: only the first `limit` annotation records are generated for.
        per_tool: only a seeded, stratified subset of this many records per reference tool
            (`select_per_tool`); the report covers that subset.
        batch_size: prompts per batched generate call (backends without batching go one by one).
        settings: extra settings saved to run.json (model, adapter, backend as asked).
        progress_callback: called with (done, total) after each record.

    Returns:
        The scores.json dict. Raises BenchError for unusable input or settings.
    """
    from tqdm import tqdm

    if baseline not in (None, "no-tool"):
        raise BenchError(f"unknown baseline {baseline!r}; the one baseline is 'no-tool'")
    if llm is None and baseline is None:
        raise BenchError("give a model (llm) or baseline='no-tool'")
    if limit is not None and limit < 0:
        raise BenchError(f"--limit must be 0 or more, not {limit}")
    problems = Problems()
    records = load_annotations(data, problems, need_instruction=True)
    if not records:
        raise BenchError(f"no usable records in {data}: {json.dumps(problems.kinds)}")
    if per_tool is not None:
        if per_tool < 1:
            raise BenchError(f"--per-tool must be 1 or more, not {per_tool}")
        records = select_per_tool(records, per_tool, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    generator = f"baseline:{baseline}" if baseline else getattr(llm, "name", type(llm).__name__)
    _check_settings(out, {**(settings or {}), "generator": generator, "max_new_tokens": max_new_tokens,
                          "data": str(data), "stop": list(react.STOP), "per_tool": per_tool,
                          "seed": seed if per_tool else None})
    pred_path = out / "predictions.jsonl"
    todo_all = list(records.items())[:limit]  # limit None: all
    done = _done_ids(pred_path)
    todo = [(rid, rec) for rid, rec in todo_all if rid not in done]
    total, finished = len(todo_all), len(todo_all) - len(todo)
    if progress_callback:
        progress_callback(finished, total)
    # The file is keyed by id, so the order is free: batches take similar lengths (less padding);
    # one at a time, prompts go in text order, so each shares the longest possible prefix with
    # the one before and the backend's prefix cache (llama.cpp's, HFCausalLM.prefix) skips it.
    todo.sort(key=lambda item: len(build_prompt(item[1])) if batch_size > 1 else build_prompt(item[1]))
    with pred_path.open("a", encoding="utf-8") as f, tqdm(total=total, initial=finished, file=sys.stderr,
                                                          desc="bench", unit="sample") as bar:
        for i in range(0, len(todo), max(1, batch_size)):
            chunk = [rec for _, rec in todo[i:i + max(1, batch_size)]]
            for line in _predict(chunk, llm, baseline, max_new_tokens, batch_size):
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
            f.flush()  # finished records survive a kill
            finished += len(chunk)
            bar.update(len(chunk))
            if progress_callback:
                progress_callback(finished, total)
    report = score_records(records, load_predictions(pred_path, problems), problems)
    report.update(data=str(data), predictions=str(pred_path), generator=generator)
    report["files"] = [str(p) for p in write_report(report, out)]
    return report


def _predict(records: list[dict], llm: LLM | None, baseline: str | None, max_new_tokens: int,
             batch_size: int) -> list[dict]:
    if baseline:
        return [{"id": r["id"], "output": baseline_output()} for r in records]
    gens = generate_many(llm, [build_prompt(r) for r in records], stop=react.STOP,
                         max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [{"id": r["id"], "output": g.text, "stop": g.stop, "completion_tokens": g.completion_tokens,
             "seconds": round(g.seconds, 3)} for r, g in zip(records, gens)]


AMX_BATCH = 16  # scripts/bench_runner_speed.sh: 8 and 16 measured 2.1x and 2.3x llama.cpp's records/s


def pick_runner(backend: str, model: str, device: str, batch_size: int | None) -> tuple[str, int]:
    """The backend and batch size of a run. `auto` follows gpt4tools.llm.resolve_backend (llama.cpp
    on a CPU: one prompt at a time, each prefill reusing its neighbour's prefix), except on CPUs
    with AMX: there torch's bf16 matmuls prefill a batch of prompts faster than llama.cpp does
    one (llama.cpp's own AMX kernels crash, see gpt4tools/llm/llamacpp.py), so the benchmark
    runs batched transformers. Only the benchmark: the agent decodes one prompt, where
    llama.cpp's faster decoding wins."""
    from gpt4tools.llm import resolve_backend
    from gpt4tools.llm.hf import cpu_has_amx

    if backend == "auto" and device == "cpu" and cpu_has_amx():
        return "transformers", batch_size or AMX_BATCH
    return resolve_backend(backend, model, device), batch_size or 1


def load_model(model: str, adapter: str | None, backend: str, device: str, dtype: str = "auto",
               gguf: str = "auto") -> LLM:
    """The one place the benchmark loads an LLM (gpt4tools.llm.load_llm)."""
    from gpt4tools.llm import load_llm

    return load_llm(model=model, adapter=adapter, backend=backend, device=device, dtype=dtype, gguf=gguf)


# -- command line ------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).name or text).strip("-") or "model"


def _summary_line(report: dict) -> str:
    return (f"SR {_pct(report['SR'])} %  SR_t {_pct(report['SR_t'])}  SR_act {_pct(report['SR_act'])}  "
            f"SR_args {_pct(report['SR_args'])}  IoU {_pct(report['IoU'])}  "
            f"(n={report['n']}, coverage {_pct(report['coverage'])} %)")


def _finish(report: dict) -> int:
    for kind, entry in report["problems"].items():
        print(f"warning: {kind}: {entry['count']} ({entry.get('note', '')})", file=sys.stderr)
    if not report["n"]:
        print("error: nothing could be scored (no prediction matches an annotation); see scores.json",
              file=sys.stderr)
        return 1
    print(_summary_line(report))
    print("wrote " + ", ".join(report["files"]))
    return 0


def score_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpt4tools score", description="Score predictions with the paper's metric.")
    p.add_argument("--data", required=True, help="annotations: JSON list or JSONL of GPT4Tools records")
    p.add_argument("--pred", required=True, help="predictions JSONL: {id, output} per line")
    p.add_argument("--out", help="report folder (default: beside --pred)")
    p.add_argument("--per-tool", type=int, help="score only bench's stratified subset of N records per reference tool")
    p.add_argument("--seed", type=int, default=0, help="seed of the --per-tool draw (as given to bench)")
    args = p.parse_args(argv)
    try:
        return _finish(score_files(args.data, args.pred, args.out, per_tool=args.per_tool, seed=args.seed))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def bench_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpt4tools bench", description="Generate predictions and score them.")
    p.add_argument("--data", required=True, help="annotations: JSON list or JSONL of GPT4Tools records")
    p.add_argument("--model", default="default", help="'default', a manifest name, a local dir or GGUF, a hub id")
    p.add_argument("--adapter", help="LoRA adapter folder ('none' disables the default adapter)")
    p.add_argument("--backend", default="auto", choices=("auto", "transformers", "llamacpp", "openai"),
                   help="auto: llama.cpp where installed and the model has a GGUF, else transformers")
    p.add_argument("--gguf", default="auto", choices=("auto", "lora", "bf16", "f16", "q8_0"),
                   help="llama.cpp: how the adapter is applied (gpt4tools/llm/llamacpp.py)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--limit", type=int, help="only the first N records")
    p.add_argument("--per-tool", type=int, help="only N records per reference tool (seeded, stratified subset)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --per-tool draw")
    p.add_argument("--out", help="run folder (default: runs/bench/<data>_<model>); an existing one is resumed")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int,
                   help="prompts decoded together (transformers backend, left-padded): 8-32 on a GPU. "
                        "Default: 16 where --backend auto picks batched transformers (CPUs with AMX), else 1")
    p.add_argument("--baseline", choices=("no-tool",), help="write the always-no-tool answer, no model")
    p.add_argument("--dtype", default="auto", help="transformers backend: auto (bf16 where native, else fp32), fp32, bf16")
    args = p.parse_args(argv)
    name = f"baseline-{args.baseline}" if args.baseline else _slug(args.model)
    name += f"+{_slug(args.adapter)}" if args.adapter and not args.baseline else ""
    out = Path(args.out) if args.out else paths.runs_dir() / "bench" / f"{Path(args.data).stem}_{name}"
    try:
        backend, args.batch_size = pick_runner(args.backend, args.model, args.device, args.batch_size)
        llm = None if args.baseline else load_model(args.model, args.adapter, backend, args.device, args.dtype, args.gguf)
    except (OSError, ValueError, ImportError) as e:  # absent weights, unknown backend, missing package
        print(f"error: cannot load the model {args.model!r}: {e}", file=sys.stderr)
        return 2
    try:
        settings = {"model": None if args.baseline else args.model, "adapter": args.adapter,
                    "backend": None if args.baseline else backend,
                    "dtype": None if args.baseline else args.dtype if backend == "transformers" else args.gguf,
                    "batch_size": None if args.baseline else args.batch_size, "command": " ".join(["python -m gpt4tools bench", *(sys.argv[2:] if argv is None else argv)])}
        report = run_bench(args.data, out, llm=llm, baseline=args.baseline, limit=args.limit,
                           per_tool=args.per_tool, seed=args.seed,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, settings=settings,
                           progress_callback=progress.progress_callback())  # the app's job runner follows it
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _finish(report)


def main(argv: Sequence[str] | None = None) -> int:
    """`score ...` or `bench ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"score": score_main, "bench": bench_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m gpt4tools.bench {score,bench} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
