"""The command line: `python -m gpt4tools <command> [...]`, one entry point, an explicit table of commands.

Each command is a `main(argv) -> int` function in its own module, imported only when
called, so `python -m gpt4tools --help` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

# command -> (module:function, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "weights": ("gpt4tools.inventory:weights_main", "list, fetch and verify model weights (checkpoints/)"),
    "tools": ("gpt4tools.inventory:tools_main", "list the 31 tools: availability, backing model, device"),
    "chat": ("gpt4tools.ui.terminal:main", "chat in the terminal, or run one turn (--message, --json)"),
    "data": ("gpt4tools.data.cli:main", "self-instruct data generation: image content -> teacher -> GPT4Tools records"),
    "train": ("gpt4tools.train:main", "LoRA-tune an LLM on GPT4Tools records (paper defaults; CPU or GPUs)"),
    "export": ("gpt4tools.export:main", "export an adapter: merged HF model, GGUF (LoRA or merged), model card"),
    "bench": ("gpt4tools.bench:bench_main", "run a model on a benchmark file, then score it"),
    "score": ("gpt4tools.bench:score_main", "score predictions against annotations (the paper's metric)"),
    "bench-chat": ("gpt4tools.chatbench:main", "replay scripted chats through the agent and tools; score each turn"),
    "app": ("gpt4tools.ui.web:main", "start the Gradio web app (same as python app.py)"),
    "serve": ("gpt4tools.ui.web:main", "alias of app"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: python -m gpt4tools <command> [--help]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=os.environ.get("GPT4TOOLS_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    module, func = COMMANDS[name][0].split(":")
    return int(getattr(importlib.import_module(module), func)(rest) or 0)

