"""LLM backends behind one small interface: text in, text out, with stop strings.

The interface and the helpers the backends share are in base.py (re-exported here). Backends
are listed explicitly in BACKENDS and are imported, with their heavy dependencies, by load_llm
when chosen. Which model and adapter a name means is gpt4tools.models.
"""

from __future__ import annotations

from pathlib import Path

from gpt4tools.llm.base import (  # noqa: F401 - the interface, for `from gpt4tools.llm import ...`
    DECODINGS,
    LLM,
    Generation,
    ScriptedLLM,
    StopStream,
    cut_at_stop,
    generate_many,
    stream_until_stop,
)
from gpt4tools.models import DEFAULT_MODEL, default_adapter, resolve_model

BACKENDS = ("auto", "transformers", "llamacpp", "openai")
NAMED_BACKENDS = tuple(b for b in BACKENDS if b != "auto")  # the ones "auto" picks among; a teacher names one


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


def backend_note(backend: str, model: str, device: str = "cpu", chosen: str | None = None) -> str:
    """Which backend `load_llm` serves with and why, in words for the app's status line
    (`chosen`: what resolve_backend already picked, when the caller has it)."""
    chosen = chosen or resolve_backend(backend, model, device)
    if backend != "auto":
        return f"{chosen} (as asked)"
    if chosen == "llamacpp":
        return "llama.cpp (auto: the fastest on a CPU, scripts/bench_llm.py)"
    if device != "cpu":
        return f"transformers (auto: {device})"
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        if _llamacpp_build_running():
            return "transformers (auto: llama.cpp, ~6x faster, is being built in the background; next start uses it)"
        return "transformers (auto: llama.cpp is not installed; `bash run.sh setup` builds it, ~6x faster)"
    return "transformers (auto: this model has no GGUF for llama.cpp)"


def _llamacpp_build_running() -> bool:
    """Whether `bash run.sh`'s background build of llama.cpp holds its lock (flock(1) in run.sh)."""
    import fcntl

    from gpt4tools.paths import cache_dir

    lock = cache_dir() / "wheels" / "llama-cpp-build.lock"
    if not lock.is_file():
        return False
    with lock.open("rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


# Prompts per batch on AMX CPUs: scripts/bench_runner_speed.sh measured 8 and 16 at 2.1x and 2.3x llama.cpp's records/s.
AMX_BATCH = 16


def pick_runner(backend: str, model: str, device: str, batch_size: int | None) -> tuple[str, int]:
    """The backend and batch size for many independent prompts (the benchmark). `auto` follows
    resolve_backend (llama.cpp on a CPU: one prompt at a time, each prefill reusing its
    neighbour's prefix), except on CPUs with AMX: there torch's bf16 matmuls prefill a batch of
    prompts faster than llama.cpp does one (llama.cpp's own AMX kernels crash, see
    gpt4tools/llm/llamacpp.py), so the benchmark runs batched transformers. Only the
    benchmark: the agent decodes one prompt, where llama.cpp's faster decoding wins."""
    from gpt4tools.hardware import cpu_has_amx

    if backend == "auto" and device == "cpu" and cpu_has_amx():
        return "transformers", batch_size or AMX_BATCH
    return resolve_backend(backend, model, device), batch_size or 1


def load_llm(model: str = "default", adapter: str | None = None, backend: str = "auto",
             device: str = "cpu", dtype: str = "auto", gguf: str = "auto", decoding: str = DECODINGS[0],
             **kwargs) -> LLM:
    """Load a backend. `model`: 'default', a manifest name, a local dir/GGUF, a hub id, or
    (openai) the served model's name. `adapter='none'` disables the default adapter.
    `dtype` is for transformers (hardware.DTYPES), `gguf` and `decoding` for llama.cpp
    (gguf.GGUF_FORMS, DECODINGS)."""
    if decoding not in DECODINGS:
        raise ValueError(f"unknown decoding {decoding!r}: choose one of {', '.join(DECODINGS)}")
    chosen = resolve_backend(backend, model, device)
    note = backend_note(backend, model, device, chosen)  # before loading: a background build may end meanwhile
    if chosen == "llamacpp":
        kwargs["decoding"] = decoding
    if chosen == "openai":
        kwargs.pop("states_mb", None)  # the server keeps its own prompt cache
    llm = _load(chosen, model, adapter, device, dtype, gguf, **kwargs)
    llm.backend_note = note  # the status line says what serves and why
    return llm


def _load(backend: str, model: str, adapter: str | None, device: str, dtype: str, gguf: str, **kwargs) -> LLM:
    if backend == "transformers":
        from gpt4tools.llm.hf import HFCausalLM

        path, default = resolve_model(model)
        adapter = None if adapter == "none" else (adapter or default)
        name = DEFAULT_MODEL if model == "default" else Path(model).name if Path(model).exists() else model
        if adapter:
            name += f"+{Path(adapter).name}"
        kwargs.setdefault("name", name)
        return HFCausalLM(path, adapter=adapter, device=device, dtype=dtype, **kwargs)
    if backend == "llamacpp":
        from gpt4tools.llm.llamacpp import LlamaCppLM

        if adapter is None and model == "default":  # the committed adapter
            adapter = default_adapter()
        return LlamaCppLM(model, lora=None if adapter == "none" else adapter, gguf=gguf, **kwargs)
    if backend == "openai":
        from gpt4tools.llm.openai_api import OpenAICompatible

        return OpenAICompatible(model, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
