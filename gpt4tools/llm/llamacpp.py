"""llama.cpp through llama-cpp-python: a GGUF model, optionally a LoRA adapter in GGUF.

llama-cpp-python has no prebuilt wheel on PyPI (it compiles llama.cpp on install), so it
is an optional dependency: `pip install llama-cpp-python` (see README).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator, Sequence

from gpt4tools.llm import Generation, StopStream, cut_at_stop


def resolve_gguf(model: str) -> Path:
    from gpt4tools import weights

    if model == "default":
        from gpt4tools.llm import DEFAULT_MODEL

        model = DEFAULT_MODEL
    if model in weights.load_manifest():
        return weights.path(model) / "model.gguf"
    p = Path(model)
    if not p.is_file():
        raise FileNotFoundError(f"{model} is not a GGUF file or a manifest name")
    return p


class LlamaCppLM:
    def __init__(self, model: str, lora: str | None = None, n_ctx: int = 4096, n_threads: int | None = None,
                 n_gpu_layers: int = 0):
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ImportError("the llamacpp backend needs llama-cpp-python: pip install llama-cpp-python") from e
        path = resolve_gguf(model)
        if lora and Path(lora).is_dir():
            raise ValueError(f"{lora} is a peft adapter folder; llama.cpp needs its GGUF: "
                             f"python -m gpt4tools export --adapter {lora} --gguf {Path(lora) / 'adapter.gguf'}")
        self.llm = Llama(model_path=str(path), lora_path=lora, n_ctx=n_ctx, verbose=False,
                         n_threads=n_threads or os.cpu_count(), n_gpu_layers=n_gpu_layers)
        self.context_length = n_ctx
        self.adapter = lora
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
        return Generation(text, u.get("prompt_tokens", 0), u.get("completion_tokens", 0), which, time.perf_counter() - t0)

    def stream(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256) -> Iterator[str]:
        buf = StopStream(stop)
        for chunk in self.llm.create_completion(prompt, max_tokens=max_new_tokens, temperature=0.0,
                                                stop=list(stop), stream=True):
            out = buf.feed(chunk["choices"][0]["text"])
            if out:
                yield out
            if buf.stopped is not None:
                break
        tail = buf.flush()
        if tail:
            yield tail
