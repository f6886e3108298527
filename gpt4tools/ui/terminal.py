"""python -m gpt4tools chat: talk to the agent in a terminal, or run one turn as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from gpt4tools import agent as A
from gpt4tools.images import ImageError
from gpt4tools.options import add_model_args, build_agent


def step_json(step: A.Step) -> dict:
    kind = {A.Thought: "thought", A.Action: "action", A.ObservationStep: "observation", A.ImageStep: "image",
            A.Final: "final", A.Error: "error"}[type(step)]
    return {"type": kind, **step.__dict__}


def render_text(step: A.Step) -> str | None:
    if isinstance(step, A.Action):
        return f"  -> {step.tool}: {step.tool_input}"
    if isinstance(step, A.ObservationStep):
        return "  <- " + step.text.replace("\n", "\n     ")
    if isinstance(step, A.ImageStep):
        return f"  [image] {step.path}"
    if isinstance(step, A.Error):
        return f"  !! {step.message}"
    if isinstance(step, A.Final):
        return f"AI: {step.text}"
    return None


def run_turn(session, message: str, as_json: bool) -> list[dict]:
    steps = []
    last_thought = None
    for step in session.send(message):
        if isinstance(step, A.Thought):
            last_thought = step
            continue
        if last_thought is not None:  # keep only each step's complete model text
            steps.append(step_json(last_thought))
            last_thought = None
        steps.append(step_json(step))
        if not as_json and (line := render_text(step)):
            print(line, flush=True)
    return steps


def main(argv: list[str]) -> int:
    from gpt4tools.session import Session

    ap = argparse.ArgumentParser(prog="python -m gpt4tools chat",
                                 description="Chat with images in the terminal. With --message, run one turn and exit.")
    ap.add_argument("--image", action="append", default=[], help="an image to upload first (repeatable)")
    ap.add_argument("--message", help="run this one message and exit")
    ap.add_argument("--json", action="store_true", help="print the turn's steps as JSON (with --message)")
    add_model_args(ap)
    args = ap.parse_args(argv)

    session = Session(build_agent(args))
    uploads = []
    for path in args.image:
        try:
            uploads.append(session.add_image(path))
        except ImageError as e:
            print(f"error: cannot use {path}: {e}", file=sys.stderr)
            return 2
    if args.message is not None:
        steps = run_turn(session, args.message, args.json)
        if args.json:
            print(json.dumps({"uploads": uploads, "folder": str(session.store.root), "steps": steps}, indent=2))
        return 0
    for name in uploads:
        print(f"uploaded as {name}")
    print(f"model: {session.agent.llm.name}; tools: {len(session.agent.tools)}; /image PATH to upload, /quit to leave")
    while True:
        try:
            line = input("Human: ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line in ("/quit", "/exit"):
            return 0
        if line.startswith("/image "):
            try:
                print(f"uploaded as {session.add_image(line[7:].strip())}")
            except ImageError as e:
                print(f"error: {e}")
            continue
        run_turn(session, line, as_json=False)
