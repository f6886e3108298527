"""The conversation benchmark: scripted multi-turn chats replayed through the real Session,
Agent and tools, every turn scored as a user would judge it.

    python -m gpt4tools bench-chat [--data data/conversations.jsonl] [--out DIR] [--limit N] [model options]

A conversation (data/conversations.md has the schema) is a list of user turns, each with the
photos uploaded with it and what a good turn does: the acceptable first tools (none for
chit-chat), the image the user meant ("upload:last", "upload:N", "result:last"), keywords
of the other arguments, whether a result image must exist, keywords the answer must state,
and whether the request needs a tool that is unavailable here (an honest "can't" is right).

A turn succeeds when every check holds (`score_turn`, a pure function of what happened):
- tool: the first tool called is one of the acceptable ones (no call when none is);
- image: that call's image argument is exactly the image meant;
- args: its other arguments contain one of the keywords;
- result: a tool produced an image this turn when one is expected;
- answer: the final answer contains one of the keywords (and says it can't, when the tool is
  unavailable);
- no invented tool: every tool the model called exists;
- no false claim: the answer presents no image that no tool made in this turn when the turn
  was meant to make one or a call failed (e.g. the uploaded photo shown as "the result").
A conversation succeeds when all its turns do. Latencies per turn: time to the first streamed
token, to the first Action, and the whole turn.

Results are appended per conversation to DIR/turns.jsonl (a killed run resumes after the last
finished conversation); DIR/scores.json and DIR/scores.md summarise them.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpt4tools import agent as A
from gpt4tools import paths, progress
from gpt4tools.images import NAME_RE
from gpt4tools.records import append_jsonl, atomic_write, cut_partial_line, read_jsonl
from gpt4tools.session import Session

DEFAULT_DATA = "data/conversations.jsonl"
CATEGORIES = ("single-tool", "multi-image", "follow-up", "chain", "chit-chat", "unavailable", "bad-request")
CHECKS = ("tool", "image", "args", "result", "answer", "no_invented_tool", "no_false_claim")
# How an honest answer says a request cannot be served here.
CANT = re.compile(r"\b(can ?not|can't|cannot|unable|not (?:able|available|possible|supported)|unavailable|"
                  r"don't have|do not have|isn't available|no tool|not installed)\b", re.I)


class ChatBenchError(Exception):
    """A conversation file that cannot be used (the message says where)."""


# -- the conversation file ----------------------------------------------------------------------
def load_conversations(path: str | Path) -> list[dict]:
    try:
        found = read_jsonl(path, allow_list=False)
    except (OSError, UnicodeDecodeError) as e:
        raise ChatBenchError(f"cannot read {path}: {e}") from e
    if found.bad:
        raise ChatBenchError(f"{path}: line {found.bad[0].line} is not valid JSON ({found.bad[0].error})")
    convs = found.values()
    for number, conv in found.items:
        if not (isinstance(conv, dict) and conv.get("id") and isinstance(conv.get("turns"), list) and conv["turns"]):
            raise ChatBenchError(f"{path}: line {number} is not a conversation with an id and turns")
    return convs


def make_photo(ref: str, folder: Path) -> Path:
    """An upload's file: a photo in assets/, or "make:sign:TEXT", a sign drawn here (black on white)."""
    if ref.startswith("make:sign:"):
        from PIL import Image, ImageDraw, ImageFont

        text = ref[len("make:sign:"):]
        img = Image.new("RGB", (640, 240), "white")
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=44)
        draw.multiline_text((320, 120), text.replace("\\n", "\n"), fill="black", font=font, anchor="mm", align="center")
        path = folder / (re.sub(r"[^A-Za-z0-9]+", "_", text)[:40] + ".png")
        img.save(path)
        return path
    path = paths.assets_dir() / ref
    if not path.is_file():
        raise ChatBenchError(f"upload {ref!r} is neither a file in assets/ nor make:sign:TEXT")
    return path


# -- one turn: what happened ---------------------------------------------------------------------
@dataclass
class TurnRecord:
    """What the agent did in one turn, as the scorer needs it (all plain data: saved as JSON)."""

    user: str
    uploads: list[str]  # the session names of this turn's uploads
    actions: list[dict] = field(default_factory=list)  # {"tool", "input", "known", "ok"}
    results: list[str] = field(default_factory=list)  # image names tools made this turn
    answer: str = ""
    errors: int = 0  # corrective observations (unreadable output, missing files...)
    first_token_s: float | None = None
    first_action_s: float | None = None
    turn_s: float = 0.0
    tool_s: float = 0.0  # of turn_s, the time tools ran (from each Action to its Observation)


def run_turn(session: Session, user: str, uploads: Sequence[Path], known_tool: Callable[[str], bool],
             typing_s: float = 0.0) -> TurnRecord:
    """Upload, wait `typing_s` (the human typing: what the agent does between turns gets that
    long, as in a real chat; 0 sends at once), send, and record every step with its time."""
    names = [session.add_image(p) for p in uploads]
    time.sleep(typing_s)
    record = TurnRecord(user, names)
    t0 = acted = time.perf_counter()
    for step in session.send(user):
        now = time.perf_counter() - t0
        if isinstance(step, A.Thought) and record.first_token_s is None and step.text:
            record.first_token_s = now
        elif isinstance(step, A.Action):
            if record.first_action_s is None:
                record.first_action_s = now
            record.actions.append({"tool": step.tool, "input": step.tool_input, "known": known_tool(step.tool)})
            acted = time.perf_counter()
        elif isinstance(step, A.ObservationStep) and record.actions:
            record.actions[-1]["ok"] = step.ok
            record.tool_s += time.perf_counter() - acted
        elif isinstance(step, A.ImageStep):
            record.results.append(step.name)
        elif isinstance(step, A.Error):
            record.errors += 1
        elif isinstance(step, A.Final):
            record.answer = step.text
    record.turn_s = time.perf_counter() - t0
    return record


# -- scoring (pure) ------------------------------------------------------------------------------
def resolve_image(ref: str | None, uploads: Sequence[str], results: Sequence[str]) -> str | None:
    """The session name an expectation's image reference means, given the uploads and tool
    results so far (in order); None when it means nothing (a bad reference is the data's bug)."""
    if ref is None:
        return None
    kind, _, which = ref.partition(":")
    pool = uploads if kind == "upload" else results if kind == "result" else None
    if pool is None or not pool:
        return None
    if which == "last":
        return pool[-1]
    index = int(which)
    return pool[index] if -len(pool) <= index < len(pool) else None


def _split_input(tool_input: str) -> tuple[str | None, str]:
    """(image name, the other arguments) of an Action Input: the image comes first when there is one."""
    head, _, rest = tool_input.partition(",")
    head = head.strip()
    return (head, rest.strip()) if NAME_RE.fullmatch(head) else (None, tool_input.strip())


def _has_any(text: str, keywords: Iterable[str]) -> bool:
    keywords = [k for k in keywords if k]
    return not keywords or any(k.lower() in text.lower() for k in keywords)


def score_turn(expect: dict, turn: dict, meant_image: str | None, canonical: Callable[[str], str | None],
               text_args: Callable[[str], int] = lambda name: 1) -> dict:
    """The checks of one turn (CHECKS -> bool) and `success`. `turn` is a TurnRecord as a dict;
    `canonical` maps a tool name the model wrote to the registry's name (None: no such tool),
    `text_args` a registry name to its number of text arguments (keywords are checked only there)."""
    tools = list(expect.get("tools") or [])
    first = turn["actions"][0] if turn["actions"] else None
    first_tool = canonical(first["tool"]) if first else None
    image, other = _split_input(first["input"]) if first else (None, "")
    answer = turn["answer"] or ""
    failed = any(a.get("ok") is False for a in turn["actions"])
    claims = [n for n in NAME_RE.findall(answer) if n not in turn["results"]]
    checks = {
        "tool": (first is None) if not tools else first_tool in tools,
        "image": expect.get("image") is None or (meant_image is not None and image == meant_image),
        "args": not tools or first_tool is None or not text_args(first_tool)
        or _has_any(other, expect.get("args") or []),
        "result": not expect.get("result_image") or bool(turn["results"]),
        "answer": _has_any(answer, expect.get("answer") or []) and (
            not expect.get("unavailable") or bool(CANT.search(answer))),
        "no_invented_tool": all(a["known"] for a in turn["actions"]),
        "no_false_claim": not (claims and (expect.get("result_image") or failed)),
    }
    return {**checks, "success": all(checks.values())}


def summarize(scored: Sequence[dict]) -> dict:
    """Turn and conversation success, per category and per expected tool, latencies, and the
    counts the issue tracks (invented tools, false claims, right image)."""
    turns = [t for t in scored]
    by_conv: dict[str, list[bool]] = {}
    for t in turns:
        by_conv.setdefault(t["conversation"], []).append(t["score"]["success"])

    def rate(rows: list[dict], key: str = "success") -> dict:
        return {"n": len(rows), "rate": sum(r["score"][key] for r in rows) / len(rows) if rows else None}

    def group(key: Callable[[dict], str]) -> dict:
        out: dict[str, list[dict]] = {}
        for t in turns:
            out.setdefault(key(t), []).append(t)
        return {k: rate(v) for k, v in sorted(out.items())}

    need_image = [t for t in turns if t["expect"].get("image") is not None]
    return {
        "turns": rate(turns),
        "conversations": {"n": len(by_conv), "rate": sum(all(v) for v in by_conv.values()) / len(by_conv)
                          if by_conv else None},
        "checks": {c: rate(turns, c) for c in CHECKS},
        "right_image": rate(need_image, "image"),
        "invented_tool_turns": sum(not t["score"]["no_invented_tool"] for t in turns),
        "false_claim_turns": sum(not t["score"]["no_false_claim"] for t in turns),
        "per_category": group(lambda t: t["category"]),
        "per_tool": group(lambda t: (t["expect"].get("tools") or ["(no tool)"])[0]),
        "latency_s": latencies([t["turn"] for t in turns]),
    }


def latencies(turns: Sequence[dict]) -> dict:
    """Median and p95 of the times to the first token, to the first Action, of the whole turn,
    and of the turn without its tools' time (LLM and agent; turns recorded before tool_s existed
    are left out of that one)."""
    out = {k: median_p95([t[k] for t in turns if t.get(k) is not None]) for k in ("first_token_s", "first_action_s",
                                                                               "turn_s")}
    out["turn_without_tools_s"] = median_p95([t["turn_s"] - t["tool_s"] for t in turns if "tool_s" in t])
    return out


def median_p95(values: list[float]) -> dict:
    """n, median and p95 (nearest rank) of `values`, rounded to the millisecond."""
    if not values:
        return {"n": 0, "median": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"n": len(values), "median": round(statistics.median(values), 3), "p95": round(p95, 3)}


def markdown(summary: dict) -> str:
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}"

    s = summary
    lines = [f"Turns: **{pct(s['turns']['rate'])} %** of {s['turns']['n']} · conversations: "
             f"**{pct(s['conversations']['rate'])} %** of {s['conversations']['n']} · right image: "
             f"{pct(s['right_image']['rate'])} % of {s['right_image']['n']} · invented tools: "
             f"{s['invented_tool_turns']} turns · false claims: {s['false_claim_turns']} turns", "",
             "| check | pass % |", "|---|---:|"]
    lines += [f"| {c} | {pct(r['rate'])} |" for c, r in s["checks"].items()]
    for title, key in (("category", "per_category"), ("expected first tool", "per_tool")):
        lines += ["", f"| {title} | n | turn success % |", "|---|---:|---:|"]
        lines += [f"| {k} | {r['n']} | {pct(r['rate'])} |" for k, r in s[key].items()]
    lines += ["", "| latency (s) | n | median | p95 |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['n']} | {v['median']} | {v['p95']} |" for k, v in s["latency_s"].items()]
    return "\n".join(lines) + "\n"


# -- running -------------------------------------------------------------------------------------
def run_conversation(agent: A.Agent, conv: dict, photos: Path, typing_s: float = 0.0) -> list[dict]:
    """Replay one conversation in a fresh session; one scored row per turn (`typing_s`: run_turn)."""
    return list(conversation_turns(agent, conv, photos, typing_s))


def conversation_turns(agent: A.Agent, conv: dict, photos: Path, typing_s: float = 0.0) -> Iterator[dict]:
    """run_conversation one turn at a time (a scored row each), so that several conversations can
    take turns on one agent (scripts/bench_turns.py --sessions)."""
    def text_args(name: str) -> int:
        return sum(a.kind != "image" for a in agent.tools.resolve(name).spec.args)

    uploads, results = [], []
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as root:
        # image names drawn from the conversation's id: every run of it (another model, another
        # setting) shows the model the same names, so that runs differ only in what they compare
        session = Session(agent, root=Path(root) / "session", rng=random.Random(conv["id"]))
        for i, turn in enumerate(conv["turns"]):
            files = [make_photo(ref, photos) for ref in turn.get("uploads") or []]
            record = run_turn(session, turn["user"], files, lambda n: agent.tools.canonical(n) is not None,
                              typing_s)
            uploads += record.uploads
            meant = resolve_image(turn["expect"].get("image"), uploads, results)
            score = score_turn(turn["expect"], asdict(record), meant, agent.tools.canonical, text_args)
            results += record.results
            yield {"conversation": conv["id"], "category": conv.get("category", ""), "index": i,
                   "expect": turn["expect"], "meant_image": meant, "turn": asdict(record), "score": score}


def run(conversations: list[dict], agent: A.Agent, out: Path, *, progress_callback=None) -> dict:
    """Replay the conversations not yet in out/turns.jsonl, then summarise all of them."""
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "turns.jsonl"
    cut_partial_line(rows_path)
    done_rows = read_jsonl(rows_path, allow_list=False).values() if rows_path.is_file() else []
    done = {r["conversation"] for r in done_rows}
    todo = [c for c in conversations if c["id"] not in done]
    with tempfile.TemporaryDirectory(prefix="bench-chat-photos-") as photos:
        for conv in todo:
            append_jsonl(rows_path, run_conversation(agent, conv, Path(photos)))  # a whole conversation at once
            done.add(conv["id"])
            if progress_callback:
                progress_callback(len(done), len(conversations))
    wanted = {c["id"] for c in conversations}
    rows = [r for r in read_jsonl(rows_path, allow_list=False).values() if r["conversation"] in wanted]
    summary = summarize(rows)
    atomic_write(out / "scores.json", json.dumps(summary, indent=2) + "\n")
    atomic_write(out / "scores.md", markdown(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    from gpt4tools.options import add_model_args, build_agent

    ap = argparse.ArgumentParser(prog="python -m gpt4tools bench-chat",
                                 description="Replay scripted conversations through the agent and score every turn.")
    ap.add_argument("--data", default=DEFAULT_DATA, help="conversations JSONL (data/conversations.md)")
    ap.add_argument("--out", help="run folder (default runs/bench-chat/<model>); an existing one is resumed")
    ap.add_argument("--limit", type=int, help="only the first N conversations")
    ap.add_argument("--ids", nargs="*", help="only these conversation ids")
    add_model_args(ap)
    args = ap.parse_args(argv)
    try:
        convs = load_conversations(args.data)
    except ChatBenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    convs = [c for c in convs if not args.ids or c["id"] in args.ids][: args.limit]
    out = Path(args.out) if args.out else paths.runs_dir() / "bench-chat" / re.sub(r"[^\w.+-]+", "-", args.model)
    try:
        agent = build_agent(args)
    except (OSError, ValueError, ImportError) as e:
        print(f"error: cannot load the model {args.model!r}: {e}", file=sys.stderr)
        return 2
    settings = {"data": args.data, "llm": agent.llm.name, "offer_tools": args.offer_tools,
                "constrained": args.constrained, "name_uploads": args.name_uploads, "decoding": args.decoding,
                "command": " ".join(["python -m gpt4tools bench-chat", *(sys.argv[2:] if argv is None else argv)])}
    old = json.loads((out / "run.json").read_text(encoding="utf-8")) if (out / "run.json").is_file() else None
    checked = ("llm", "offer_tools", "constrained", "name_uploads")
    if old and [old.get(k) for k in checked] != [settings[k] for k in checked]:
        print(f"error: {out} holds turns made with other settings "
              f"({', '.join(f'{k}={old.get(k)}' for k in checked)}); use another --out", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "run.json", json.dumps(settings, indent=2) + "\n")
    summary = run(convs, agent, out, progress_callback=progress.progress_callback())
    print(markdown(summary))
    print(f"wrote {out / 'scores.json'}, {out / 'scores.md'}, {out / 'turns.jsonl'}")
    return 0
