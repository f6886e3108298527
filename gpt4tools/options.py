"""Model and tool options shared by the terminal chat, the web app and the conversation benchmark,
and the agent they build."""

from __future__ import annotations

import argparse

from gpt4tools import agent as A
from gpt4tools.llm import BACKENDS, DECODINGS
from gpt4tools.llm.gguf import GGUF_FORMS
from gpt4tools.llm.states import DEFAULT_CAPACITY_MB


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """Model options shared by chat, the app and the benchmark."""
    ap.add_argument("--model", default="default",
                    help="'default' (embedded), a manifest name, a local dir or GGUF, a hub id, "
                         "or the served model's name")
    ap.add_argument("--adapter", default=None, help="LoRA adapter dir ('none' to run the base model alone)")
    ap.add_argument("--backend", default="auto", choices=BACKENDS,
                    help="auto: llama.cpp where it is installed and the model has a GGUF, else transformers")
    ap.add_argument("--gguf", default="auto", choices=GGUF_FORMS,
                    help="llama.cpp: the adapter merged into a GGUF of this type (auto: bf16 on CPUs with native "
                         "bf16, else q8_0; made once into the cache; q4_0: 5-18 %% faster turns on AVX2, further "
                         "from the trained weights), or 'lora' on the shipped 4-bit base")
    ap.add_argument("--decoding", default=DECODINGS[0], choices=DECODINGS,
                    help="llama.cpp: lookup (drafts copied and forced tokens, checked in one pass: the same text, "
                         "faster), greedy (one token per pass), library (llama-cpp-python's own loop)")
    ap.add_argument("--prompt-cache-mb", type=_megabytes, default=DEFAULT_CAPACITY_MB,
                    help="llama.cpp and transformers: memory for saved prompt states, so that a conversation's "
                         "next turn after another conversation's turn does not encode its history again "
                         "(least recently used out; 0: only the last prompt is reused)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (for the LLM)")
    ap.add_argument("--base-url", default=None,
                    help="openai backend: server URL (default $OPENAI_BASE_URL or http://127.0.0.1:8000/v1)")
    ap.add_argument("--load", default=None,
                    help='tools and devices, e.g. "Detection_cpu,Edge Detection On Image_cuda:0" '
                         '(default: every available tool, cpu)')
    ap.add_argument("--offer-tools", type=int, default=A.AgentConfig.offer_tools,
                    help="tools offered per turn, the closest to the message (0: every available tool)")
    ap.add_argument("--constrained", action=argparse.BooleanOptionalAction, default=A.AgentConfig.constrained,
                    help="decode each step under the grammar of valid steps: only offered tools, existing image "
                         "names, each tool's argument count (llama.cpp grammars, llguidance for transformers, "
                         "the request's grammar field for servers)")
    ap.add_argument("--name-uploads", action=argparse.BooleanOptionalAction, default=A.AgentConfig.name_uploads,
                    help="name the images uploaded with a message in the message the model reads, so 'this' "
                         "means the newest upload")


def _megabytes(text: str) -> float:
    try:
        mb = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of MB: {text!r}") from None
    if not mb >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be >= 0 MB, not {text}")
    return mb


def build_agent(args: argparse.Namespace) -> A.Agent:
    from gpt4tools.llm import load_llm
    from gpt4tools.prompt import template_for
    from gpt4tools.registry import build_registry

    extra = {"base_url": args.base_url} if args.backend == "openai" and args.base_url else {}
    llm = load_llm(args.model, adapter=args.adapter, backend=args.backend, device=args.device, gguf=args.gguf,
                   decoding=getattr(args, "decoding", DECODINGS[0]),
                   states_mb=getattr(args, "prompt_cache_mb", DEFAULT_CAPACITY_MB), **extra)
    template = template_for(getattr(llm, "adapter", None))
    registry = build_registry(args.load)
    tools = registry.available()
    config = A.AgentConfig(offer_tools=args.offer_tools, constrained=getattr(args, "constrained", True),
                           name_uploads=getattr(args, "name_uploads", True))
    agent = A.Agent(llm, tools, template, config, unavailable=registry.unavailable())
    agent.warm_up()
    return agent
