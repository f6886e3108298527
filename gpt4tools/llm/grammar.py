"""Grammar-constrained decoding for the local backends, through llguidance.

A grammar is GBNF (llama.cpp's format, as react.step_grammar writes it); llguidance converts it
to its Lark dialect once and then gives, for each decoding step, the bitmask of the tokens that
continue it. The backends turn that into -inf on every other token's logit: hf.py as a
transformers logits processor, llamacpp.py as a llama-cpp-python one (`LlamaLogits`).

Why llguidance (scripts/bench_constrained.py: the default model, an agent prompt of ~780 tokens,
1 thread of an AMD EPYC, medians of 3; ratios of CPU time against unconstrained in the same run):
- transformers: ~0.6-0.8 ms per token to compute and apply the mask, xgrammar the same within
  noise, against ~160 ms per decoded token: a step's ratio is 0.93-1.12 for both (noise). But
  xgrammar takes 9-58 ms to compile each new grammar (llguidance ~2-3 ms), and the agent's grammar
  changes with every image a tool makes; and llguidance is one 3 MB wheel without dependencies,
  where xgrammar pulls ~1 GB (triton, apache-tvm-ffi) onto a CPU install. Both read GBNF.
- llama.cpp: its own grammar sampler checks every one of the vocabulary's 152k tokens at each
  step: a warm step took 1.26x (tool call) and 1.51x (answer) the unconstrained time, a cold one
  1.05-1.07x; through llguidance 0.93-0.99x (a constrained tool step also ends 3 tokens sooner,
  at the end token instead of writing "Observation:").
- both local backends then enforce the same grammar with the same engine.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence


class Grammars:
    """llguidance over one model's vocabulary: GBNF grammars in, token masks out. Building the
    vocabulary's tables takes ~1 s (once per model); a grammar's conversion is kept (LRU) and a
    matcher for it takes ~1 ms."""

    cache_size = 8

    def __init__(self, tokenizer, vocab_size: int, eos: Sequence[int]):
        """`tokenizer`: an llguidance LLTokenizer; `vocab_size`: the logits' width; `eos`: the
        end tokens a finished grammar lets through (and decoding stops on)."""
        import llguidance
        import numpy as np

        self.llg = llguidance
        self.tokenizer, self.vocab_size, self.eos = tokenizer, int(vocab_size), sorted(set(eos))
        self._lark: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        # byte -> its 8 bits, True where a token is NOT allowed (llguidance writes bits little-endian)
        self._blocked = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little") == 0

    @classmethod
    def for_hf(cls, tokenizer, model) -> Grammars:
        """For a transformers model and its (fast) tokenizer. ImportError without llguidance."""
        import llguidance.hf

        config = getattr(model, "generation_config", None)
        ids = config.eos_token_id if config is not None else None
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        eos = sorted({*ids, tokenizer.eos_token_id} - {None})
        vocab = max(int(model.config.vocab_size), len(tokenizer))
        return cls(llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=eos), vocab, eos)

    @classmethod
    def for_llama(cls, llama) -> Grammars:
        """For a llama_cpp.Llama. ImportError without llguidance."""
        import llguidance.llamacpp

        eos = [llama.token_eos()]
        vocab = llama.n_vocab()
        return cls(llguidance.llamacpp.lltokenizer_from_vocab(llama._model.vocab, n_vocab=vocab, eos_token=eos),
                   vocab, eos)

    def matcher(self, grammar: str):
        """A fresh llguidance matcher at the start of `grammar` (GBNF). ValueError if it does not parse."""
        with self._lock:
            lark = self._lark.get(grammar)
            if lark is not None:
                self._lark.move_to_end(grammar)
        if lark is None:
            lark = self.llg.grammar_from("gbnf", grammar)  # ValueError where the conversion fails
            with self._lock:
                self._lark[grammar] = lark
                while len(self._lark) > self.cache_size:
                    self._lark.popitem(last=False)
        m = self.llg.LLMatcher(self.tokenizer, lark, log_level=0)
        if m.is_error():
            raise ValueError(f"llguidance cannot use this grammar: {m.get_error()}\n{grammar[:2000]}")
        return m

    def new_bitmask(self, rows: int = 1):
        """A token bitmask to fill: one row of 32-bit words per sequence."""
        import numpy as np

        return np.full((rows, (self.vocab_size + 31) // 32), -1, dtype=np.int32)

    def blocked(self, matcher, bitmask, row: int = 0, width: int | None = None):
        """Fill `bitmask[row]` for the matcher's next token; return a bool array over the first
        `width` tokens (default: the vocabulary), True where a token may NOT come next."""
        words = bitmask[row]
        matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        return self._blocked[words.view("uint8")].reshape(-1)[: width or self.vocab_size]

    def consume(self, matcher, token: int) -> None:
        """Advance past a decoded token (one the mask allowed: anything else is our bug)."""
        if not matcher.consume_token(int(token)):
            raise RuntimeError(f"the grammar matcher refused token {token}: {matcher.get_error()}")


class LlamaLogits:
    """A llama-cpp-python logits processor for one completion: the next token must continue the
    grammar. Its first call sees the evaluated prompt; each later call, one more token."""

    def __init__(self, grammars: Grammars, grammar: str):
        self.mask = TokenMask(grammars, grammar)
        self.seen: int | None = None  # tokens of input_ids already accounted for

    def __call__(self, input_ids, scores):
        import numpy as np

        if self.seen is not None:
            for token in input_ids[self.seen:]:
                self.mask.consume(token)
        self.seen = len(input_ids)
        scores[self.mask.blocked(len(scores))] = -np.inf
        return scores


class TokenMask:
    """One completion's grammar state for a decoding loop of our own (llama_decode.py): which
    tokens may come next, which the grammar forces, whether it is finished."""

    def __init__(self, grammars: Grammars, grammar: str):
        self.g, self.matcher = grammars, grammars.matcher(grammar)
        self.bitmask = grammars.new_bitmask()

    def blocked(self, width: int):
        """True where a token may NOT come next (over the first `width` tokens)."""
        return self.g.blocked(self.matcher, self.bitmask, width=width)

    def consume(self, token: int) -> None:
        self.g.consume(self.matcher, token)

    def forced(self) -> list[int]:
        """The tokens the grammar forces next (none where it leaves a choice)."""
        return list(self.matcher.compute_ff_tokens())

    def done(self) -> bool:
        """Nothing can follow: the grammar is complete and admits no continuation."""
        return bool(self.matcher.is_stopped())
