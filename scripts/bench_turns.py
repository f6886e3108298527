"""How fast a chat turn is, before and after a change, on the conversation benchmark's own turns.

    .venv/bin/python scripts/bench_turns.py [--limit 20] [--configs library,lookup] [--out DIR]

Each configuration is the default model on llama.cpp (the app's backend on a CPU) with its own
context, behind its own agent; the tools are shared. The conversations of
data/conversations.jsonl are replayed through the real Session/Agent/tools (chatbench.run_conversation),
every conversation once per configuration, the configurations taking turns (their order
alternates from one conversation to the next, so that a slower or busier stretch of the machine
does not fall on one of them). Reported per configuration, medians and p95 over the turns:
time to the first streamed token, to the first Action, the whole turn, the turn without its tools'
time (what the LLM and agent cost), and the same for one-tool turns; the ratio of each median to
the first configuration's; turn success; and how many turns wrote exactly what the first
configuration wrote (same actions, same answer) — the check that a speed-up changed nothing.

Configurations (`--configs`, the first is the reference), a decoding loop and the tools offered:
- before:      llama-cpp-python's own loop (create_completion), the 5 tools closest to the message
- lookup-5:    our loop (gpt4tools/llm/llama_decode.py) with drafted tokens (prompt lookup + the
               grammar's forced tokens checked in one pass), the 5 closest tools
- library-all: llama-cpp-python's loop, every available tool in a fixed order (a prompt head that
               every turn and session shares, so its keys/values are reused)
- after:       our loop with drafts, every tool in a fixed order, nothing encoded between turns
- prepared:    as after, and between turns (and after each upload) the next prompt is encoded up to
               the human's message in the background (Agent.prepare), and contexts that another
               prompt would cut back are saved (gpt4tools/llm/states.py): what the app does now
- one-context: as prepared without saved states: only the context itself is reused (the app
               before session 37)
- greedy-all:  our loop one token per pass, every tool (the drafts' own share)
A config may name the GGUF it runs on after an @ (gguf.GGUF_FORMS): `prepared@q4_0,prepared@q8_0`;
without one it gets what the app would ("auto": bf16 where the CPU has fast bf16, else q8_0).

`--sessions N` replays N conversations at once on each configuration's agent, taking turns (one
turn of each in order, as people chatting with one app at the same time): what saved states are
for. The default 1 replays one conversation after the other.

`--typing S` waits S seconds before each message (the human typing; not counted in any figure), so
that what an agent does between turns has time to run, as in a real chat. The default 0 sends each
message as soon as the last turn ended.

The first conversation is replayed once per configuration before timing (loads the tools and
warms the contexts) and left out of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import cpu_model  # noqa: E402  scripts/benchlib.py (this folder is on sys.path)

from gpt4tools import agent as A  # noqa: E402
from gpt4tools import chatbench  # noqa: E402
from gpt4tools.hardware import ISA_ENV  # noqa: E402
from gpt4tools.llm.states import DEFAULT_CAPACITY_MB  # noqa: E402

CONFIGS = {  # name: (decoding, tools offered per turn (0 = every available tool, in a fixed order), prepare,
    #                 MB of saved prompt states)
    "before": ("library", 5, False, 0),  # llama-cpp-python's loop, the 5 closest tools
    "lookup-5": ("lookup", 5, False, 0),
    "library-all": ("library", 0, False, 0),
    "after": ("lookup", 0, False, 0),
    "prepared": ("lookup", 0, True, DEFAULT_CAPACITY_MB),  # the app now (AgentConfig's and LlamaCppLM's defaults)
    "one-context": ("lookup", 0, True, 0),
    "greedy-all": ("greedy", 0, False, 0),
}
KEYS = ("first_token_s", "first_action_s", "turn_s", "turn_without_tools_s")


def build_agents(names: list[str], threads: int | None) -> dict[str, A.Agent]:
    from gpt4tools.llm import load_llm
    from gpt4tools.prompt import template_for
    from gpt4tools.registry import build_registry

    tools = build_registry().available()
    agents = {}
    for name in names:
        config, _, form = name.partition("@")
        decoding, offer, prepare, states_mb = CONFIGS[config]
        llm = load_llm("default", backend="llamacpp", decoding=decoding, n_threads=threads, gguf=form or "auto",
                       states_mb=states_mb)
        agents[name] = A.Agent(llm, tools, template_for(llm.adapter),
                               A.AgentConfig(offer_tools=offer, prepare_next=prepare))
        agents[name].warm_up()
    return agents


def interleaved(agent: A.Agent, convs: list[dict], photos: Path, typing_s: float) -> list[dict]:
    """Replay `convs` on one agent at once: a turn of each in order, until all have ended."""
    pending = [chatbench.conversation_turns(agent, c, photos, typing_s) for c in convs]
    rows = []
    while pending:
        for turns in list(pending):
            row = next(turns, None)
            if row is None:
                pending.remove(turns)
            else:
                rows.append(row)
    return rows


def outputs(turns: list[dict]) -> list[str]:
    """What each turn wrote (actions and answer), with the session's random image names replaced
    by their order of appearance in the conversation, so that two runs can be compared."""
    names: dict[tuple[str, str], str] = {}
    out = []
    for t in turns:
        text = json.dumps([[(x["tool"], x["input"]) for x in t["turn"]["actions"]], t["turn"]["answer"]])

        def number(m, conv=t["conversation"]):
            return names.setdefault((conv, m.group(0)), f"<image {len(names) + 1}>")

        out.append(re.sub(r"image/[\w.-]+?\.png", number, text))
    return out


def summarize(rows: dict[str, list[dict]], reference: str) -> dict:
    out = {}
    wanted = outputs(rows[reference])
    for name, turns in rows.items():
        recorded = [t["turn"] for t in turns]
        out[name] = {
            **chatbench.latencies(recorded),
            "one_tool_turn_without_tools_s":
                chatbench.latencies([t for t in recorded if len(t["actions"]) == 1])["turn_without_tools_s"],
            # a conversation's later turns: its history is what a context (or a saved state) spares
            "later_turns": chatbench.latencies([t["turn"] for t in turns if t["index"] > 0]),
            "later_count": sum(t["index"] > 0 for t in turns),
            "turn_success": sum(t["score"]["success"] for t in turns) / len(turns),
            "same_output_as_reference": sum(a == b for a, b in zip(outputs(turns), wanted)),
            "turns": len(turns),
        }
    for name in out:
        for k in (*KEYS, "one_tool_turn_without_tools_s"):
            ref, mine = out[reference][k]["median"], out[name][k]["median"]
            out[name][k]["ratio"] = round(mine / ref, 3) if ref and mine is not None else None
    return out


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"{meta['turns']} turns of {meta['conversations']} conversations "
             f"({meta.get('sessions', 1)} at a time), {meta['machine']}, "
             f"{meta['threads']} threads, llama-cpp-python {meta['llama_cpp']}, {meta.get('typing_s', 0)} s of typing "
             f"before each message; `{meta['command']}`", "",
             "| config | first token | first Action | whole turn | turn without tools | one-tool turn without tools "
             "| turn success | same output as " + meta["reference"] + " |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in summary.items():
        cells = [f"{s[k]['median']} / {s[k]['p95']} ({s[k]['ratio']}x)" if s[k]["median"] is not None else "–"
                 for k in (*KEYS, "one_tool_turn_without_tools_s")]
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {100 * s['turn_success']:.1f} % | {s['same_output_as_reference']}/{s['turns']} |")
    lines += ["", "Seconds, median / p95 over the turns (ratio of the median to the first row's).", "",
              "A conversation's later turns only (not its first):", "",
              "| config | turns | first token | first Action | turn without tools |", "|---|---:|---:|---:|---:|"]
    for name, s in summary.items():
        later = s["later_turns"]
        cells = [f"{later[k]['median']} / {later[k]['p95']}" if later[k]["median"] is not None else "–"
                 for k in ("first_token_s", "first_action_s", "turn_without_tools_s")]
        lines.append(f"| {name} | {s['later_count']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=chatbench.DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=20, help="conversations timed (after the warm-up one)")
    ap.add_argument("--configs", default="before,lookup-5,library-all,after",
                    help=f"comma-separated, of {', '.join(CONFIGS)}")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: every core)")
    ap.add_argument("--sessions", type=int, default=1, help="conversations replayed at once, taking turns")
    ap.add_argument("--typing", type=float, default=0.0, help="seconds the human types before each message")
    ap.add_argument("--out", default=None, help="folder for turns.jsonl, summary.json, summary.md")
    args = ap.parse_args(argv)
    names = args.configs.split(",")
    from gpt4tools.llm.gguf import GGUF_FORMS

    unknown = [n for n in names if n.partition("@")[0] not in CONFIGS or n.partition("@")[2] not in ("", *GGUF_FORMS)]
    if unknown or len(set(names)) < len(names):
        ap.error(f"unknown or repeated configs {unknown or names}; choose from {', '.join(CONFIGS)}, "
                 f"each optionally @ one of {', '.join(GGUF_FORMS)}")
    if args.sessions < 1:
        ap.error("--sessions must be at least 1")
    convs = chatbench.load_conversations(args.data)
    warm, timed = convs[0], convs[1: 1 + args.limit]
    agents = build_agents(names, args.threads)
    rows: dict[str, list[dict]] = {n: [] for n in names}
    out = Path(args.out or REPO / "runs" / "bench_turns" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-turns-") as photos:
        for name in names:
            chatbench.run_conversation(agents[name], warm, Path(photos), args.typing)
        groups = [timed[i: i + args.sessions] for i in range(0, len(timed), args.sessions)]
        for i, group in enumerate(groups):
            for name in (names if i % 2 == 0 else names[::-1]):
                got = interleaved(agents[name], group, Path(photos), args.typing)
                rows[name] += got
                with (out / "turns.jsonl").open("a", encoding="utf-8") as f:
                    f.writelines(json.dumps({"config": name, **r}) + "\n" for r in got)
            print(f"{i + 1}/{len(groups)} {' '.join(c['id'] for c in group)}", file=sys.stderr, flush=True)
    import llama_cpp

    emulated = os.environ.get(ISA_ENV)  # scripts/avx2_only.sh
    meta = {"machine": cpu_model() + (f", emulating {emulated} only (scripts/avx2_only.sh)" if emulated else ""),
            "llama_cpp_lib": os.environ.get("LLAMA_CPP_LIB_PATH", "llama-cpp-python's own"),
            "threads": args.threads or "all", "llama_cpp": llama_cpp.__version__,
            "typing_s": args.typing, "sessions": args.sessions,
            "reference": names[0], "conversations": len(timed), "turns": len(rows[names[0]]),
            "command": "python scripts/bench_turns.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    summary = summarize(rows, names[0])
    (out / "summary.json").write_text(json.dumps({"meta": meta, "configs": summary}, indent=2) + "\n")
    text = markdown(summary, meta)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
