"""llama.cpp through llama-cpp-python: a GGUF model, optionally with a trained adapter.

An adapter reaches llama.cpp in one of two forms (`gguf`):
- "lora": the adapter as a LoRA GGUF (`export --gguf`, committed for the default adapter),
  applied on the shipped quantized base: the smallest, but prefill of a 4-bit base is slow
  on CPU (~210 tokens/s here) and the LoRA adds its own matmuls;
- "bf16" / "f16" / "q8_0": base and adapter merged into one standalone GGUF of that type,
  made from the peft folder on first use by llama.cpp's own converter (gpt4tools.llm.gguf) and
  kept in the cache with its sha256 (checked on every load). Merged bf16 prefills ~3x faster
  than the 4-bit base + LoRA here and is closer to what was trained (bf16 on the
  de-quantized base); "auto" picks it on CPUs with native bf16 and q8_0 elsewhere.

llama-cpp-python has no prebuilt wheel on PyPI (it compiles llama.cpp on install), so it
is an optional dependency: `bash run.sh setup` builds it once per CPU (see README).

llama.cpp's "extra buffer types" (weights repacked for the AMX and other CPU kernels) are
turned off on CPUs with AMX: with them, llama.cpp 0.3.36 (the wheel built natively on an
AMX Xeon) dies with a segmentation fault in the first decode of the shipped Q4_1 GGUF,
every time (tests/test_llm_llamacpp.py caught it). `extra_bufts=True` turns them back on.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from gpt4tools.hardware import cpu_has_amx, cpu_has_fast_bf16
from gpt4tools.llm.base import Generation, cut_at_stop, stream_until_stop
from gpt4tools.llm.gguf import GGUF_FORMS, merged_gguf
from gpt4tools.models import DEFAULT_MODEL


def resolve_gguf(model: str) -> Path:
    from gpt4tools import weights

    if model == "default":
        model = DEFAULT_MODEL
    if model in weights.load_manifest():
        return weights.path(model) / "model.gguf"
    p = Path(model)
    if not p.is_file():
        raise FileNotFoundError(f"{model} is not a GGUF file or a manifest name")
    return p


def resolve_form(gguf: str) -> str:
    if gguf not in GGUF_FORMS:
        raise ValueError(f"unknown GGUF form {gguf!r}: choose one of {', '.join(GGUF_FORMS)}")
    if gguf != "auto":
        return gguf
    return "bf16" if cpu_has_fast_bf16() else "q8_0"


_params_lock = threading.Lock()


def _defaults_with(**fields):
    """llama_model_default_params, with some fields set."""
    import llama_cpp.llama_cpp as lib

    default = getattr(lib.llama_model_default_params, "_gpt4tools_original", lib.llama_model_default_params)

    def patched():
        params = default()
        for k, v in fields.items():
            setattr(params, k, v)
        return params

    patched._gpt4tools_original = default  # not __wrapped__: llama_cpp sets that to its Python stub
    return patched


@contextlib.contextmanager
def _model_params(**fields):
    """llama-cpp-python's Llama() takes no argument for some llama_model_params fields
    (use_extra_bufts): set them in the defaults it starts from, for one construction."""
    import llama_cpp.llama_cpp as lib

    with _params_lock:
        before = lib.llama_model_default_params
        lib.llama_model_default_params = _defaults_with(**fields)
        try:
            yield
        finally:
            lib.llama_model_default_params = before


def safe_process_defaults() -> None:
    """For a process that builds its own Llama (llama_cpp.server): the buffers LlamaCppLM
    would choose on this CPU, for every model the process loads."""
    import llama_cpp.llama_cpp as lib

    lib.llama_model_default_params = _defaults_with(use_extra_bufts=not cpu_has_amx())


class LlamaCppLM:
    def __init__(self, model: str, lora: str | None = None, n_ctx: int = 4096, n_threads: int | None = None,
                 n_gpu_layers: int = 0, gguf: str = "auto", extra_bufts: bool | None = None):
        """`lora`: a LoRA GGUF file, or a peft adapter folder (merged or converted as `gguf` says).
        `extra_bufts`: llama.cpp's repacked weight buffers; None: off where the CPU has AMX (see above)."""
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ImportError("the llamacpp backend needs llama-cpp-python: bash run.sh setup "
                              "(or pip install llama-cpp-python)") from e
        path = resolve_gguf(model)
        form = resolve_form(gguf)
        self.adapter = lora  # where the prompt template is found (chat.template_for)
        if lora and Path(lora).is_dir():
            if form == "lora":
                gguf_file = Path(lora) / "adapter.gguf"
                if not gguf_file.is_file():
                    raise ValueError(f"{lora} has no adapter.gguf; export it (python -m gpt4tools export "
                                     f"--adapter {lora} --gguf {gguf_file}) or use a merged form (--gguf auto)")
                lora = str(gguf_file)
            else:
                path, lora = merged_gguf(Path(lora), form), None
        self.extra_bufts = not cpu_has_amx() if extra_bufts is None else extra_bufts
        with _model_params(use_extra_bufts=self.extra_bufts):
            self.llm = Llama(model_path=str(path), lora_path=lora, n_ctx=n_ctx, verbose=False,
                             n_threads=n_threads or os.cpu_count(), n_gpu_layers=n_gpu_layers)
        self.context_length = n_ctx
        self.gguf = str(path)
        self.name = f"{path.stem}" + (f"+{Path(lora).stem}" if lora else "")

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False))

    def generate(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256) -> Generation:
        t0 = time.perf_counter()
        out = self.llm.create_completion(prompt, max_tokens=max_new_tokens, temperature=0.0, stop=list(stop))
        text, which = cut_at_stop(out["choices"][0]["text"], stop)
        if which is None and out["choices"][0].get("finish_reason") == "stop" and stop:
            which = "stop"  # llama.cpp removed the stop string itself
        u = out.get("usage", {})
        return Generation(text, u.get("prompt_tokens", 0), u.get("completion_tokens", 0), which,
                          time.perf_counter() - t0)

    def stream(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256) -> Iterator[str]:
        chunks = self.llm.create_completion(prompt, max_tokens=max_new_tokens, temperature=0.0, stop=list(stop),
                                            stream=True)
        yield from stream_until_stop(_texts(chunks), stop)


def _texts(chunks: Iterator[dict]) -> Iterator[str]:
    """The text pieces of llama-cpp-python's completion chunks; closed, it closes `chunks` (ends decoding)."""
    try:
        for chunk in chunks:
            yield chunk["choices"][0]["text"]
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
