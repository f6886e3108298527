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
- `--constrained` (off by default: the paper's protocol decodes freely) decodes each record
  under the grammar of valid steps, as the app does (react.step_grammar): the tools its prompt
  offers (the names in the format line's "should be one of [...]", their argument kinds from
  the tool registry by name, one free-text argument for a name it does not know) and the image
  names its prompt mentions (images.NAME_RE). Saved in run.json; a resume cannot mix the two.

Scoring (`score`, and `bench` after generating) writes `scores.json`, `scores.md` and
`scores.png`. As in the paper, SR and the other metrics are over the samples that have
a prediction; annotations without one are counted (`problems.missing_predictions`) and
reported as `coverage`, not scored as failures. Bad input never crashes the scorer:
unknown ids, duplicates (the first is kept), malformed lines and empty outputs are
counted with examples; the exit code is non-zero only when nothing could be scored.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt4tools import metrics, paths, progress, react
from gpt4tools.images import NAME_RE
from gpt4tools.llm import BACKENDS, DECODINGS, LLM, generate_many, load_llm, pick_runner
from gpt4tools.llm.gguf import GGUF_FORMS
from gpt4tools.prompt import record_prompt
from gpt4tools.records import atomic_write, cut_partial_line, read_jsonl, to_jsonl
from gpt4tools.report import summary_line, write_report
from gpt4tools.tool import ToolSpec

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (done, total); raise from it to stop the run
BASELINE_ANSWER = "(always-no-tool baseline)"
_EXAMPLES = 10  # examples kept per problem kind
_SETTINGS_CHECKED = ("generator", "model", "adapter", "backend", "max_new_tokens", "per_tool", "seed", "constrained")
_SETTING_DEFAULTS = {"constrained": False}  # what a run.json written before the setting existed meant


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
        found = read_jsonl(path)
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"cannot read {kind} file {path}: {e}") from e
    if found.list_error is not None:
        raise BenchError(f"{path} starts like a JSON list but does not parse: {found.list_error}")
    for bad in found.bad:
        problems.add(f"malformed_{kind}_lines", bad.line, "not valid JSON; skipped")
    return found.items


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
    if cut_partial_line(path):
        log.warning("%s: removing a partial last line left by an interrupted run", path)
    done = set()
    for item in read_jsonl(path, allow_list=False, errors="replace").values():
        try:
            done.add(str(item["id"]))
        except (KeyError, TypeError):
            continue  # left for the scorer to report
    return done


def _check_settings(out: Path, settings: dict) -> None:
    path = out / "run.json"
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise BenchError(f"{path} is unreadable ({e}); delete it or use another --out") from e
        old = {**_SETTING_DEFAULTS, **old}
        settings_now = {**_SETTING_DEFAULTS, **settings}
        diff = [k for k in _SETTINGS_CHECKED if old.get(k) != settings_now.get(k)]
        if diff:
            raise BenchError(
                f"{out} holds predictions made with other settings ({', '.join(diff)}: "
                f"{[old.get(k) for k in diff]} != {[settings_now.get(k) for k in diff]}); use another --out"
            )
    atomic_write(path, json.dumps(settings, indent=2) + "\n")


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
    constrained: bool = False,
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
        constrained: decode each record under its prompt's step grammar (`record_grammar`).
        settings: extra settings saved to run.json (model, adapter, backend as asked).
        progress_callback: called with (done, total) after each record.

    Returns:
        The scores.json dict. Raises BenchError for unusable input or settings.
    """
    if baseline not in (None, "no-tool"):
        raise BenchError(f"unknown baseline {baseline!r}; the one baseline is 'no-tool'")
    if llm is None and baseline is None:
        raise BenchError("give a model (llm) or baseline='no-tool'")
    if limit is not None and limit < 0:
        raise BenchError(f"--limit must be 0 or more, not {limit}")
    problems = Problems()
    records = _bench_records(data, problems, per_tool, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    generator = f"baseline:{baseline}" if baseline else getattr(llm, "name", type(llm).__name__)
    constrained = bool(constrained and not baseline)
    _check_settings(out, {**(settings or {}), "generator": generator, "max_new_tokens": max_new_tokens,
                          "data": str(data), "stop": list(react.STOP), "per_tool": per_tool,
                          "seed": seed if per_tool else None, "constrained": constrained})
    pred_path = out / "predictions.jsonl"
    todo = list(records.values())[:limit]  # limit None: all
    _generate(todo, pred_path,
              lambda chunk: _predict(chunk, llm, baseline, max_new_tokens, batch_size, constrained),
              batch_size, progress_callback)
    report = score_records(records, load_predictions(pred_path, problems), problems)
    report.update(data=str(data), predictions=str(pred_path), generator=generator)
    report["files"] = [str(p) for p in write_report(report, out)]
    return report


def _bench_records(data: str | Path, problems: Problems, per_tool: int | None, seed: int) -> dict[str, dict]:
    """The annotation records a run generates for: all usable ones, or bench's stratified subset."""
    records = load_annotations(data, problems, need_instruction=True)
    if not records:
        raise BenchError(f"no usable records in {data}: {json.dumps(problems.kinds)}")
    if per_tool is not None:
        if per_tool < 1:
            raise BenchError(f"--per-tool must be 1 or more, not {per_tool}")
        records = select_per_tool(records, per_tool, seed)
    return records


def _generate(records: list[dict], pred_path: Path, predict: Callable[[list[dict]], list[dict]], batch_size: int,
              progress_callback: ProgressCallback | None) -> None:
    """Append a prediction line for each record not yet in `pred_path`, `batch_size` at a time."""
    from tqdm import tqdm

    done = _done_ids(pred_path)
    todo = [rec for rec in records if str(rec["id"]) not in done]
    total, finished = len(records), len(records) - len(todo)
    if progress_callback:
        progress_callback(finished, total)
    # The file is keyed by id, so the order is free: batches take similar lengths (less padding);
    # one at a time, prompts go in text order, so each shares the longest possible prefix with
    # the one before and the backend's prefix cache (llama.cpp's, HFCausalLM.prefix) skips it.
    todo.sort(key=lambda rec: len(build_prompt(rec)) if batch_size > 1 else build_prompt(rec))
    step = max(1, batch_size)
    with pred_path.open("a", encoding="utf-8") as f, tqdm(total=total, initial=finished, file=sys.stderr,
                                                          desc="bench", unit="sample") as bar:
        for i in range(0, len(todo), step):
            chunk = todo[i:i + step]
            f.write(to_jsonl(predict(chunk)))
            f.flush()  # finished records survive a kill
            finished += len(chunk)
            bar.update(len(chunk))
            if progress_callback:
                progress_callback(finished, total)


def _predict(records: list[dict], llm: LLM | None, baseline: str | None, max_new_tokens: int,
             batch_size: int, constrained: bool = False) -> list[dict]:
    if baseline:
        return [{"id": r["id"], "output": baseline_output()} for r in records]
    prompts = [build_prompt(r) for r in records]
    gens = generate_many(llm, prompts, stop=react.STOP, max_new_tokens=max_new_tokens, batch_size=batch_size,
                         grammars=[prompt_grammar(p) for p in prompts] if constrained else None)
    return [{"id": r["id"], "output": g.text, "stop": g.stop, "completion_tokens": g.completion_tokens,
             "seconds": round(g.seconds, 3)} for r, g in zip(records, gens)]


_OFFERED_RE = re.compile(r"should be one of \[([^\]\n]*)\]")
_AI_PREFIX_RE = re.compile(rf"{re.escape(react.THOUGHT)} No\n([^\n:]+): ")


def offered_tools(prompt: str) -> list[str]:
    """The tool names a benchmark prompt offers: its format line's "should be one of [A, B, C]"."""
    m = _OFFERED_RE.search(prompt)
    return [n.strip() for n in m.group(1).split(", ") if n.strip()] if m else []


def prompt_grammar(prompt: str) -> str:
    """The step grammar for a benchmark prompt, as the agent would build it in the app: the
    offered tools (argument kinds from the registry by name; for a name it does not know, such as an
    invented tool, from the input sentence of the tool's line, else one free-text argument), the
    image names in the prompt, the AI prefix of its format block."""
    tools = [(name, _arg_kinds(name) or _line_kinds(prompt, name)) for name in offered_tools(prompt)]
    images = list(dict.fromkeys(NAME_RE.findall(prompt)))
    m = _AI_PREFIX_RE.search(prompt)
    return react.step_grammar(tools, images, m.group(1) if m else react.AI_PREFIX)


def record_grammar(record: dict) -> str:
    return prompt_grammar(build_prompt(record))


@functools.lru_cache(maxsize=None)
def _arg_kinds(name: str) -> tuple[str, ...]:
    from gpt4tools.registry import UnknownToolError

    try:
        return tuple(a.kind for a in _registry().resolve(name).spec.args)
    except UnknownToolError:
        return ()


def _line_kinds(prompt: str, name: str) -> tuple[str, ...]:
    """Argument kinds from the tool's line in the prompt (its generated input sentence), else one text."""
    m = re.search(rf"^> {re.escape(name)}: .*$", prompt, re.M)
    return (ToolSpec.input_kinds(m.group(0)) if m else None) or ("text",)


@functools.lru_cache(maxsize=1)
def _registry():
    from gpt4tools.registry import build_registry

    return build_registry()  # every catalog tool, by name and alias; no weights are loaded


# -- command line ------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).name or text).strip("-") or "model"


def _finish(report: dict) -> int:
    for kind, entry in report["problems"].items():
        print(f"warning: {kind}: {entry['count']} ({entry.get('note', '')})", file=sys.stderr)
    if not report["n"]:
        print("error: nothing could be scored (no prediction matches an annotation); see scores.json",
              file=sys.stderr)
        return 1
    print(summary_line(report))
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
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto: llama.cpp where installed and the model has a GGUF, else transformers")
    p.add_argument("--gguf", default="auto", choices=GGUF_FORMS,
                   help="llama.cpp: how the adapter is applied (gpt4tools/llm/llamacpp.py)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--decoding", default=DECODINGS[0], choices=DECODINGS,
                   help="llama.cpp: lookup (drafted tokens checked in one pass), greedy, library (llama-cpp-python's)")
    p.add_argument("--limit", type=int, help="only the first N records")
    p.add_argument("--per-tool", type=int, help="only N records per reference tool (seeded, stratified subset)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --per-tool draw")
    p.add_argument("--out", help="run folder (default: runs/bench/<data>_<model>); an existing one is resumed")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int,
                   help="prompts decoded together (transformers backend, left-padded): 8-32 on a GPU. "
                        "Default: 16 where --backend auto picks batched transformers (CPUs with AMX), else 1")
    p.add_argument("--baseline", choices=("no-tool",), help="write the always-no-tool answer, no model")
    p.add_argument("--dtype", default="auto",
                   help="transformers backend: auto (bf16 where native, else fp32), fp32, bf16")
    p.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=False,
                   help="decode under the grammar of valid steps, as the app does (default: off, the paper's "
                        "protocol); the run folder records it")
    args = p.parse_args(argv)
    name = f"baseline-{args.baseline}" if args.baseline else _slug(args.model)
    name += f"+{_slug(args.adapter)}" if args.adapter and not args.baseline else ""
    name += "+constrained" if args.constrained and not args.baseline else ""
    out = Path(args.out) if args.out else paths.runs_dir() / "bench" / f"{Path(args.data).stem}_{name}"
    try:
        backend, args.batch_size = pick_runner(args.backend, args.model, args.device, args.batch_size)
        llm = None if args.baseline else load_llm(args.model, adapter=args.adapter, backend=backend, device=args.device,
                                                  dtype=args.dtype, gguf=args.gguf, decoding=args.decoding)
    except (OSError, ValueError, ImportError) as e:  # absent weights, unknown backend, missing package
        print(f"error: cannot load the model {args.model!r}: {e}", file=sys.stderr)
        return 2
    try:
        settings = {"model": None if args.baseline else args.model, "adapter": args.adapter,
                    "backend": None if args.baseline else backend,
                    "dtype": None if args.baseline else args.dtype if backend == "transformers" else args.gguf,
                    "batch_size": None if args.baseline else args.batch_size,
                    "command": " ".join(["python -m gpt4tools bench", *(sys.argv[2:] if argv is None else argv)])}
        report = run_bench(args.data, out, llm=llm, baseline=args.baseline, limit=args.limit,
                           per_tool=args.per_tool, seed=args.seed,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           constrained=args.constrained, settings=settings,
                           progress_callback=progress.progress_callback())  # the app's job runner follows it
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _finish(report)
