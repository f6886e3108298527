"""Greedy decoding on a llama_cpp.Llama that reuses computed prompts and drafts copied tokens.

llama-cpp-python's own loop (`create_completion`) decodes one token per forward pass. Most of
what the agent writes is copied: "Thought: Do I need to use a tool? Yes", a tool name from the
prompt's tool list, an image name from the history, the observation's words in the answer; and
under a grammar whole stretches are forced ("Action Input: " after a tool name). This loop
guesses such continuations and checks them in one forward pass:

- drafts: the tokens the grammar forces next (llguidance's fast-forward tokens), then
  prompt lookup: the tokens that followed the last occurrence of the newest n-gram
  (3 tokens, else 2) in the prompt and the text written so far;
- verification: the pending token and its drafts are decoded as one batch with logits at every
  position; a draft is kept while it is what greedy decoding (under the grammar's mask) would
  have picked there, and the first mismatch is that position's own pick, so the output is the
  same as one-token-at-a-time greedy decoding, up to the batch's floating-point rounding;
- a batch of k+1 tokens costs little more than one token on a CPU (decoding is bound by
  reading the weights; scripts/bench_turns.py measures it);
- prompt reuse: the context keeps the keys/values of the last prompt and its continuation; a new
  prompt decodes only what follows their longest common prefix (the agent's next step, the next
  turn of the same conversation, and the shared head of any other prompt). A context about to be
  cut back is saved first (gpt4tools/llm/states.py: the sequence's keys/values, LRU, bounded), and
  a prompt that shares more with a saved state than with the context starts from that state (the
  next turn of a conversation after another conversation's turn).

Only the last position's logits of a prompt are computed (the lm head is a quarter of this
model's weights). The Llama's own bookkeeping (`input_ids`, `n_tokens`) is kept up to date, so
its own `create_completion` still works and reuses the same cache.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from gpt4tools.llm.states import PromptStates, common_prefix

NGRAMS = (3, 2)  # n-gram sizes tried for prompt lookup, longest first


def prompt_lookup(tokens: np.ndarray, k: int, ngrams: Sequence[int] = NGRAMS) -> list[int]:
    """Up to `k` tokens that followed the latest earlier occurrence of the last n tokens of
    `tokens` (the longest n of `ngrams` that occurs), or [] when none occurs."""
    for n in ngrams:
        if len(tokens) <= n:
            continue
        tail = tokens[-n:]
        windows = np.lib.stride_tricks.sliding_window_view(tokens[:-1], n)  # excludes the tail itself
        hits = np.flatnonzero((windows == tail).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return tokens[start:start + k].tolist()
    return []


@dataclass
class DecodeStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose keys/values the context already held
    completion_tokens: int = 0
    forward_passes: int = 0  # decodes after the prompt (a batch of drafts counts once)
    drafted: int = 0
    accepted: int = 0
    finish: str = "length"  # "eos", "grammar" (the grammar is complete) or "length"


class LlamaDecoder:
    """Greedy decoding of one llama_cpp.Llama, one generation at a time (the caller locks)."""

    def __init__(self, llama, draft_tokens: int = 8, states: PromptStates | None = None):
        self.llama = llama
        self.draft_tokens = draft_tokens  # 0: one token per forward pass (still reusing prompts)
        self.states = states  # None: the context alone is reused
        self.n_vocab = llama.n_vocab()
        self._eog = _eog_check(llama)

    def tokenize(self, prompt: str) -> list[int]:
        """The prompt's tokens as llama-cpp-python's create_completion makes them (BOS where the model wants one)."""
        return self.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)

    def _prefill(self, tokens: list[int], stats: DecodeStats) -> np.ndarray:
        """Decode the prompt after what the context (or a saved state) already holds; the last position's logits."""
        llama = self.llama
        llama._requires_eval = True  # llama-cpp-python's own loop must not sample from our logits
        held = llama.input_ids[: llama.n_tokens]
        shared = common_prefix(held, tokens)
        if self.states is not None:
            shared = self._from_saved(held, tokens, shared)
        reuse = min(shared, len(tokens) - 1)  # the last token is decoded again for its logits
        llama.n_tokens = reuse  # eval() drops the context's cells from here on
        llama.eval(tokens[reuse:])
        stats.prompt_tokens, stats.cached_tokens = len(tokens), reuse
        return self._logits(-1)

    def _from_saved(self, held: np.ndarray, tokens: list[int], shared: int) -> int:
        """Save the context if the prompt would cut off much of it; start from a saved state that
        shares more of the prompt than the context does. The tokens the context now shares."""
        found = self.states.reuse(held, tokens, shared, self._save_sequence)
        if found is None:
            return shared
        state, key, length = found
        self._load_sequence(state)
        self.llama.input_ids[: len(key)] = key
        self.llama.n_tokens = len(key)
        return length

    def _save_sequence(self) -> tuple[object, int]:
        """The context's keys/values (sequence 0) as a ctypes byte array, and its size."""
        import ctypes

        import llama_cpp

        ctx = self.llama._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        if written != size:
            raise RuntimeError(f"llama.cpp saved {written} of {size} bytes of the context")
        return buf, size

    def _load_sequence(self, buf) -> None:
        """Replace the context (sequence 0) by saved keys/values."""
        import llama_cpp

        ctx = self.llama._ctx.ctx
        self.llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        if llama_cpp.llama_state_seq_set_data(ctx, buf, len(buf), 0) != len(buf):
            self.llama.n_tokens = 0
            raise RuntimeError("llama.cpp could not restore a saved context")

    def prefill(self, prompt: str) -> DecodeStats:
        """Encode `prompt` after the longest prefix the context holds, and stop there."""
        stats = DecodeStats()
        tokens = self.tokenize(prompt)
        if tokens:
            self._prefill(tokens, stats)
        return stats

    def _logits(self, row: int) -> np.ndarray:
        ptr = self.llama._ctx.get_logits_ith(row)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _decode_batch(self, batch: list[int]) -> list[np.ndarray]:
        """Decode `batch` after the context, with logits at every position (views of the
        context's output buffer: valid until the next decode)."""
        llama = self.llama
        n_past = llama.n_tokens
        llama._ctx.kv_cache_seq_rm(-1, n_past, -1)
        llama._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
        llama._ctx.decode(llama._batch)
        llama.input_ids[n_past:n_past + len(batch)] = batch
        llama.n_tokens = n_past + len(batch)
        return [self._logits(i) for i in range(len(batch))]

    def _rewind(self, n_tokens: int) -> None:
        """Forget the context after `n_tokens` (rejected drafts)."""
        if self.llama.n_tokens > n_tokens:
            self.llama._ctx.kv_cache_seq_rm(-1, n_tokens, -1)
            self.llama.n_tokens = n_tokens

    def tokens(self, prompt: str, max_new_tokens: int, mask=None, stats: DecodeStats | None = None) -> Iterator[int]:
        """The greedy continuation of `prompt`, token by token, until an end token, the end of
        the grammar (`mask`: a grammar.TokenMask) or `max_new_tokens`. Closing the iterator stops."""
        stats = stats if stats is not None else DecodeStats()
        llama = self.llama
        prompt_tokens = self.tokenize(prompt)
        if not prompt_tokens:
            raise ValueError("the prompt is empty")
        room = llama.n_ctx() - len(prompt_tokens)
        if room <= 0:
            raise ValueError(f"the prompt has {len(prompt_tokens)} tokens; the context holds {llama.n_ctx()}")
        max_new_tokens = min(max_new_tokens, room)
        if max_new_tokens <= 0:
            return
        written = _Written(prompt_tokens, max_new_tokens, mask, stats)
        pick = self._picker(mask)
        token = pick(self._prefill(prompt_tokens, stats))
        while True:
            if token is None or self._eog(token):
                stats.finish = "grammar" if token is None else "eos"
                return
            written.add(token)
            yield token
            if written.full():
                return
            drafts = self._drafts(written.tokens(), mask, max_new_tokens - stats.completion_tokens - 1)
            base = llama.n_tokens
            rows = self._decode_batch([token, *drafts])
            stats.forward_passes += 1
            stats.drafted += len(drafts)
            kept = 0
            token = pick(rows[0])
            for draft, row in zip(drafts, rows[1:]):
                if token != draft or self._eog(token):
                    break
                written.add(token)
                kept += 1
                yield token
                if written.full():
                    self._rewind(base + 1 + kept)
                    return
                token = pick(row)
            stats.accepted += kept
            self._rewind(base + 1 + kept)

    def _drafts(self, history: np.ndarray, mask, room: int) -> list[int]:
        k = min(self.draft_tokens, room)
        if k <= 0:
            return []
        forced = mask.forced()[:k] if mask is not None else []
        if len(forced) < k:
            guess = np.concatenate([history, np.asarray(forced, dtype=history.dtype)]) if forced else history
            forced = forced + prompt_lookup(guess, k - len(forced))
        return forced

    def _picker(self, mask):
        def pick(logits: np.ndarray) -> int | None:
            if mask is None:
                return int(np.argmax(logits))
            blocked = mask.blocked(len(logits))
            if blocked.all():
                return None
            return int(np.argmax(np.where(blocked, -np.inf, logits)))

        return pick

    def text(self, token_iter: Iterator[int]) -> Iterator[str]:
        """Text pieces of the tokens, whole UTF-8 characters only."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for token in token_iter:
            piece = decoder.decode(self.llama.detokenize([token], special=False))
            if piece:
                yield piece
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


class _Written:
    """The prompt and the tokens written so far (what prompt lookup searches), with the counts."""

    def __init__(self, prompt_tokens: list[int], max_new_tokens: int, mask, stats: DecodeStats):
        self._all = np.zeros(len(prompt_tokens) + max_new_tokens, dtype=np.int64)
        self._all[: len(prompt_tokens)] = prompt_tokens
        self.n, self.max_new_tokens, self.mask, self.stats = len(prompt_tokens), max_new_tokens, mask, stats

    def add(self, token: int) -> None:
        if self.mask is not None:
            self.mask.consume(token)
        self._all[self.n] = token
        self.n += 1
        self.stats.completion_tokens += 1

    def tokens(self) -> np.ndarray:
        return self._all[: self.n]

    def full(self) -> bool:
        """The token limit is reached, or the grammar cannot go on."""
        if self.stats.completion_tokens >= self.max_new_tokens:
            return True
        if self.mask is not None and self.mask.done():
            self.stats.finish = "grammar"
            return True
        return False


def _eog_check(llama):
    import llama_cpp

    vocab = llama._model.vocab
    return lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, int(token)))
