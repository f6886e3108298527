"""llama.cpp through llama-cpp-python: a GGUF model, optionally with a trained adapter.

An adapter reaches llama.cpp in one of two forms (`gguf`):
- "lora": the adapter as a LoRA GGUF (`export --gguf`, committed for the default adapter),
  applied on the shipped quantized base: the smallest, but prefill of a 4-bit base is slow
  on CPU (~210 tokens/s here) and the LoRA adds its own matmuls;
- "bf16" / "f16" / "q8_0" / "q4_0": base and adapter merged into one standalone GGUF of that type,
  made from the peft folder on first use by llama.cpp's own converter (q4_0: then by its quantizer;
  gpt4tools.llm.gguf) and kept in the cache with its sha256 (checked on every load). Merged bf16 prefills ~3x faster
  than the 4-bit base + LoRA here and is closer to what was trained (bf16 on the
  de-quantized base); "auto" picks it on CPUs with native bf16 and q8_0 elsewhere.

llama-cpp-python has no prebuilt wheel on PyPI (it compiles llama.cpp on install), so it
is an optional dependency: `bash run.sh setup` builds it once per CPU (see README).

llama.cpp's "extra buffer types" (weights repacked for the AMX and other CPU kernels) are
turned off on CPUs with AMX: with them, llama.cpp 0.3.36 (the wheel built natively on an
AMX Xeon) dies with a segmentation fault in the first decode of the shipped Q4_1 GGUF,
every time (tests/test_llm_llamacpp.py caught it). `extra_bufts=True` turns them back on.

Decoding (`decoding`, base.DECODINGS) goes through our own greedy loop by default
(llama_decode.py): it reuses the context's keys/values for the shared head of each new prompt and
checks drafted tokens (copies from the prompt, tokens the grammar forces) several per forward pass,
writing the same text as llama-cpp-python's create_completion ("library", kept as the reference)
faster (scripts/bench_turns.py). One completion at a time: a lock serialises concurrent sessions;
a context another session's prompt would cut back is saved first and restored for that session's
next prompt (gpt4tools/llm/states.py; `states_mb` bounds their memory, `states_report()` says it).

Grammars (`grammar=`, GBNF) are enforced by llguidance's token masks where it is installed
(`grammar_engine="auto"`, as transformers does: gpt4tools/llm/grammar.py), since
llama.cpp's own grammar sampler checks all 152k tokens of the default model's vocabulary at every
step (+26-58 % per warm step, against ~0 %). Without llguidance, or with
`grammar_engine="llama.cpp"`, they go to llama.cpp's sampler: llama-cpp-python hands the text to
llama.cpp only when sampling starts, where a grammar that does not parse gives a null sampler (a
crash), so each grammar is parsed here first, once, and kept (a small LRU: the agent decodes a
turn's steps under one or two grammars).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

from gpt4tools.hardware import cpu_has_amx, cpu_has_fast_bf16
from gpt4tools.llm.base import DECODINGS, Generation, cut_at_stop, stream_until_stop
from gpt4tools.llm.gguf import GGUF_FORMS, merged_gguf
from gpt4tools.llm.grammar import Grammars, LlamaLogits, TokenMask
from gpt4tools.llm.llama_decode import DecodeStats, LlamaDecoder
from gpt4tools.llm.states import DEFAULT_CAPACITY_MB, StatesReport, store_of
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
GRAMMAR_ENGINES = ("auto", "llguidance", "llama.cpp")
DRAFT_TOKENS = 8


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
                 n_gpu_layers: int = 0, gguf: str = "auto", extra_bufts: bool | None = None,
                 grammar_engine: str = "auto", decoding: str = "lookup", states_mb: float = DEFAULT_CAPACITY_MB):
        """`lora`: a LoRA GGUF file, or a peft adapter folder (merged or converted as `gguf` says).
        `extra_bufts`: llama.cpp's repacked weight buffers; None: off where the CPU has AMX (see above).
        `grammar_engine`: "llguidance", "llama.cpp", or "auto" (llguidance where installed).
        `decoding`: one of base.DECODINGS. `states_mb`: the memory for saved prompt states
        (gpt4tools/llm/states.py; 0: none, only the context itself is reused)."""
        states = store_of(states_mb)  # refuses a bad size before anything loads
        if decoding not in DECODINGS:
            raise ValueError(f"unknown decoding {decoding!r}: choose one of {', '.join(DECODINGS)}")
        if grammar_engine not in GRAMMAR_ENGINES:
            raise ValueError(f"unknown grammar engine {grammar_engine!r}: choose one of {', '.join(GRAMMAR_ENGINES)}")
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
        # A manifest model's file is always model.gguf: name it after the entry (the data teacher's
        # records and reply cache keep this name); a merged file's stem already names model and adapter.
        stem = (DEFAULT_MODEL if model == "default" else model) if path.name == "model.gguf" else path.stem
        self.name = stem + (f"+{Path(lora).stem}" if lora else "")
        self._grammars: OrderedDict[str, object] = OrderedDict()
        self._grammar_lock = threading.Lock()
        self.grammar_engine = grammar_engine
        self._llg: Grammars | None = None  # llguidance over this vocabulary, made on the first grammar (~1 s)
        self.decoding = decoding
        self.states = states if decoding != "library" else None  # llama-cpp-python's own loop keeps its own
        self._decoder = LlamaDecoder(self.llm, DRAFT_TOKENS if decoding == "lookup" else 0, self.states)
        self._decode_lock = threading.Lock()  # one completion at a time: the context holds one sequence
        self.last_stats: DecodeStats | None = None  # the last completion's counts (own loop only)

    grammar_cache_size = 8

    def states_report(self) -> StatesReport | None:
        """What the saved prompt states hold and spared (None: this model keeps none)."""
        return self.states.report() if self.states is not None else None

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False))

    def grammar(self, text: str):
        """The llama_cpp.LlamaGrammar for a GBNF text, parsed once by llama.cpp and kept (LRU).
        Raises ValueError for a grammar llama.cpp cannot parse."""
        from llama_cpp import LlamaGrammar

        with self._grammar_lock:
            found = self._grammars.get(text)
            if found is not None:
                self._grammars.move_to_end(text)
                return found
        _check_grammar(self.llm, text)
        grammar = LlamaGrammar.from_string(text, verbose=False)
        with self._grammar_lock:
            self._grammars[text] = grammar
            while len(self._grammars) > self.grammar_cache_size:
                self._grammars.popitem(last=False)
        return grammar

    def _llguidance(self) -> Grammars | None:
        """llguidance over this model's vocabulary, or None: llama.cpp's own grammar sampler."""
        if self.grammar_engine == "llama.cpp":
            return None
        with self._grammar_lock:
            if self._llg is None:
                try:
                    self._llg = Grammars.for_llama(self.llm)
                except ImportError:
                    if self.grammar_engine == "llguidance":
                        raise
                    self.grammar_engine = "llama.cpp"  # not installed: llama.cpp's sampler does it
            return self._llg

    def _sampling(self, stop: Sequence[str], max_new_tokens: int, grammar: str | None) -> dict:
        kw = dict(max_tokens=max_new_tokens, temperature=0.0, stop=list(stop))
        if grammar is not None:
            llg = self._llguidance()
            if llg is not None:
                from llama_cpp import LogitsProcessorList

                kw["logits_processor"] = LogitsProcessorList([LlamaLogits(llg, grammar)])
            else:
                kw["grammar"] = self.grammar(grammar)
        return kw

    def generate(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256,
                 grammar: str | None = None) -> Generation:
        t0 = time.perf_counter()
        if not self._own_loop(grammar):
            with self._decode_lock:
                out = self.llm.create_completion(prompt, **self._sampling(stop, max_new_tokens, grammar))
            text, which = cut_at_stop(out["choices"][0]["text"], stop)
            if which is None and out["choices"][0].get("finish_reason") == "stop" and stop:
                which = "stop"  # llama.cpp removed the stop string itself
            u = out.get("usage", {})
            return Generation(text, u.get("prompt_tokens", 0), u.get("completion_tokens", 0), which,
                              time.perf_counter() - t0)
        stats = DecodeStats()
        text, which = "", None
        pieces = self._pieces(prompt, max_new_tokens, grammar, stats)
        try:
            for piece in pieces:
                text += piece
                cut, which = cut_at_stop(text, stop)
                if which is not None:
                    text = cut
                    break
        finally:
            pieces.close()
        if which is None and stop and stats.finish != "length":
            which = "stop"  # as llama-cpp-python reports an end token: finish_reason "stop"
        return Generation(text, stats.prompt_tokens, stats.completion_tokens, which, time.perf_counter() - t0,
                          stats.cached_tokens)

    def stream(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256,
               grammar: str | None = None) -> Iterator[str]:
        if self._own_loop(grammar):
            yield from stream_until_stop(self._pieces(prompt, max_new_tokens, grammar, DecodeStats()), stop)
            return
        with self._decode_lock:
            chunks = self.llm.create_completion(prompt, stream=True, **self._sampling(stop, max_new_tokens, grammar))
            yield from stream_until_stop(_texts(chunks), stop)

    def warm(self, prompt: str) -> None:
        """Encode `prompt` into the context now, so that prompts that begin with it (the agent's
        shared head) are encoded from where it ends."""
        if self.decoding == "library":
            return
        with self._decode_lock:
            self._decoder.prefill(prompt)

    def _own_loop(self, grammar: str | None) -> bool:
        """Whether this completion goes through llama_decode (not for llama.cpp's grammar sampler)."""
        return self.decoding != "library" and (grammar is None or self._llguidance() is not None)

    def _pieces(self, prompt: str, max_new_tokens: int, grammar: str | None, stats: DecodeStats) -> Iterator[str]:
        mask = TokenMask(self._llguidance(), grammar) if grammar is not None else None
        with self._decode_lock:
            self.last_stats = stats
            tokens = self._decoder.tokens(prompt, max_new_tokens, mask, stats)
            try:
                yield from self._decoder.text(tokens)
            finally:
                tokens.close()


def _check_grammar(llm, text: str) -> None:
    """Parse a GBNF grammar with llama.cpp's own parser (as its sampler will); ValueError if it fails."""
    import llama_cpp.llama_cpp as lib

    sampler = lib.llama_sampler_init_grammar(llm._model.vocab, text.encode("utf-8"), b"root")
    if not sampler:
        raise ValueError(f"llama.cpp cannot parse this grammar:\n{text[:2000]}")
    lib.llama_sampler_free(sampler)


def _texts(chunks: Iterator[dict]) -> Iterator[str]:
    """The text pieces of llama-cpp-python's completion chunks; closed, it closes `chunks` (ends decoding)."""
    try:
        for chunk in chunks:
            yield chunk["choices"][0]["text"]
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
