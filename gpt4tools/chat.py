"""python -m gpt4tools chat: talk to the agent in a terminal, or run one turn as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from gpt4tools import agent as A
from gpt4tools.images import ImageError


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """Model options shared by chat, the app and the benchmark."""
    ap.add_argument("--model", default="default", help="'default' (embedded), a manifest name, a local dir or GGUF, a hub id, or the served model's name")
    ap.add_argument("--adapter", default=None, help="LoRA adapter dir ('none' to run the base model alone)")
    ap.add_argument("--backend", default="auto", choices=["auto", "transformers", "llamacpp", "openai"],
                    help="auto: llama.cpp where it is installed and the model has a GGUF, else transformers")
    ap.add_argument("--gguf", default="auto", choices=["auto", "lora", "bf16", "f16", "q8_0"],
                    help="llama.cpp: the adapter merged into a GGUF of this type (auto: bf16 on CPUs with native "
                         "bf16, else q8_0; made once into the cache), or 'lora' on the shipped 4-bit base")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (for the LLM)")
    ap.add_argument("--base-url", default=None, help="openai backend: server URL (default $OPENAI_BASE_URL or http://127.0.0.1:8000/v1)")
    ap.add_argument("--load", default=None, help='tools and devices, e.g. "Detection_cpu,Edge Detection On Image_cuda:0" (default: every available tool, cpu)')
    ap.add_argument("--offer-tools", type=int, default=A.AgentConfig.offer_tools,
                    help="tools offered per turn, the closest to the message (0: every available tool)")


def build_agent(args: argparse.Namespace) -> A.Agent:
    from gpt4tools.llm import load_llm
    from gpt4tools.prompt import PromptTemplate
    from gpt4tools.registry import build_registry

    extra = {"base_url": args.base_url} if args.backend == "openai" and args.base_url else {}
    llm = load_llm(args.model, adapter=args.adapter, backend=args.backend, device=args.device, gguf=args.gguf, **extra)
    template = template_for(llm)
    tools = build_registry(args.load).available()
    agent = A.Agent(llm, tools, template, A.AgentConfig(offer_tools=args.offer_tools))
    agent.warm_up()
    return agent


def template_for(llm) -> "PromptTemplate":
    """The template saved beside the model's adapter (what it was trained with), else the default."""
    from pathlib import Path

    from gpt4tools.prompt import TEMPLATE_FILE, PromptTemplate

    adapter = getattr(llm, "adapter", None)
    if adapter and (Path(adapter).parent if Path(adapter).is_file() else Path(adapter)).joinpath(TEMPLATE_FILE).is_file():
        return PromptTemplate.load(Path(adapter).parent if Path(adapter).is_file() else Path(adapter))
    return PromptTemplate.load()


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

    ap = argparse.ArgumentParser(prog="python -m gpt4tools chat", description="Chat with images in the terminal. With --message, run one turn and exit.")
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
