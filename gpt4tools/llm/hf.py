"""transformers backend, with an optional peft LoRA adapter. CPU or CUDA, fp32 or bf16.

Grammars (`grammar=`, GBNF as react.step_grammar writes it) are enforced by llguidance
(gpt4tools/llm/grammar.py says why it), as a logits processor: at each decoding step every token
that does not continue a row's grammar gets -inf, and a finished grammar lets only the end token
through. Batches take one grammar per row (or none: a free row).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from gpt4tools.hardware import resolve_dtype
from gpt4tools.llm.base import Generation, cut_at_stop, stream_until_stop
from gpt4tools.llm.grammar import Grammars
from gpt4tools.llm.states import DEFAULT_CAPACITY_MB, PromptStates, StatesReport, common_prefix, store_of

log = logging.getLogger(__name__)


class PrefixCache:
    """The KV cache of the last sequence this model decoded, reused by the next prompt that
    starts with the same tokens: the agent's next step (same prompt + one more observation),
    another turn or session with the same tool list, or neighbouring benchmark prompts.
    Only the new tail is then encoded. With `states` (gpt4tools/llm/states.py), a cache about to
    be cut back is saved first, and a prompt that shares more with a saved one starts from a copy
    of it (another conversation's turn came between). The caller holds the model's lock."""

    min_reuse = 16  # shorter shared prefixes are not worth the bookkeeping

    def __init__(self, states: PromptStates | None = None):
        self.ids: list[int] = []  # the tokens whose keys/values `cache` holds
        self.cache = None
        self.states = states

    def take(self, ids: list[int], leave: int = 1):
        """A cache holding a prefix of `ids` (cropped to it), or None: start afresh.
        At least `leave` tokens are left to encode (generate needs one; warm none)."""
        cache, held_ids, self.cache = self.cache, self.ids, None  # generate mutates it: never hand it out twice
        n = common_prefix(held_ids, ids) if cache is not None else 0
        if self.states is not None:
            cache, n = self._from_saved(cache, held_ids, ids, n)
        if cache is None:
            return None
        n = min(n, len(ids) - leave)
        held = cache.get_seq_length()
        if n < self.min_reuse or held < n or not _croppable(cache):
            return None
        if held > n:
            cache.crop(n - held)  # a negative count: drop the tokens after the shared prefix
        return cache

    def _from_saved(self, cache, held_ids: list[int], ids: list[int], n: int) -> tuple:
        """(the cache to continue, the tokens of `ids` it holds): a copy of a saved cache where that
        shares more; the held cache saved first where `ids` would cut much of it off."""
        import copy

        # a copy is saved: the held cache goes on and is cropped; a sliding-window one cannot go back
        snapshot = (lambda: (copy.deepcopy(cache), _nbytes(cache))) if cache is not None and _croppable(cache) else None
        found = self.states.reuse(held_ids, ids, n, snapshot)
        if found is None:
            return cache, n
        state, _, length = found
        return copy.deepcopy(state), length  # generate mutates it: the saved one stays as it is

    def start(self, ids: list[int], config, leave: int = 1) -> tuple:
        """(a cache to encode `ids` into, how many of them it already holds): `take`'s, else a new one."""
        from transformers import DynamicCache

        cache = self.take(ids, leave)
        return (cache, cache.get_seq_length()) if cache is not None else (DynamicCache(config=config), 0)

    def keep(self, ids: list[int], cache) -> None:
        """After generating: `cache` holds keys/values for the first get_seq_length() of `ids`."""
        if cache is not None and cache.get_seq_length() <= len(ids):
            self.ids, self.cache = ids[: cache.get_seq_length()], cache


def _nbytes(cache) -> int:
    """The bytes of a transformers cache's key and value tensors."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None and hasattr(t, "nbytes"):
                total += t.nbytes
    return total


def pack_head_input(model):
    """Give the output layer its input in plain row-major strides.

    Only some positions' logits are asked for (generate: the last; training: the response's), so
    the lm head sees hidden[:, -k:, :]: a view whose batch stride still spans the whole sequence.
    torch (2.13, CPU) does not fold such a view into rows when the weight needs no grad (always
    here: frozen under LoRA, or inference); its matmul becomes a bmm that copies the whole
    (vocab x hidden) weight first: 0.6 s per prompt for Qwen2.5-0.5B, more than the other 24
    layers' matmuls together (scripts/bench_prefill.py), and a quarter of a CPU training step
    (docs/benchmark.md, "What a CPU step computes"). Copying the k rows instead costs microseconds."""
    import torch

    head = model.get_output_embeddings()
    if head is None:
        return None

    def packed(_module, args):
        return (args[0].clone(memory_format=torch.contiguous_format), *args[1:])

    return head.register_forward_pre_hook(packed)


def _croppable(cache) -> bool:
    # Sliding-window layers (Gemma 3) cannot go back once past their window: start afresh there.
    return all(getattr(layer, "is_croppable", False) and not getattr(layer, "is_sliding", False)
               for layer in getattr(cache, "layers", [None]))


class HFCausalLM:
    def __init__(self, model: str | Path, adapter: str | Path | None = None, device: str = "cpu",
                 dtype: str = "auto", max_context: int = 4096, name: str | None = None, merge_adapter: bool = True,
                 prefix_cache: bool = True, states_mb: float = DEFAULT_CAPACITY_MB):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device
        self.adapter = str(adapter) if adapter else None
        self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        self.model = AutoModelForCausalLM.from_pretrained(str(model), dtype=resolve_dtype(dtype, device))
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter))
            if merge_adapter:
                # Folding the LoRA into the weights removes its extra small matmuls per layer; the
                # outputs stay the same up to float rounding. (No speed-up was measured on CPU.)
                self.model = self.model.merge_and_unload()
        self.model.to(device).eval()
        self.head_packing = pack_head_input(self.model)  # a hook handle: .remove() undoes it
        cfg_ctx = getattr(self.model.config, "max_position_embeddings", None) or max_context
        self.context_length = min(int(cfg_ctx), max_context)
        self.name = name or (f"{Path(str(model)).name}+{Path(str(adapter)).name}" if adapter else Path(str(model)).name)
        self._lock = threading.Lock()  # one generate at a time: CPU threads are the bottleneck anyway
        # saved prompt states (gpt4tools/llm/states.py): `states_mb` of them; 0: the last sequence only
        states = store_of(states_mb)
        self.prefix = PrefixCache(states) if prefix_cache else None
        self._grammars: Grammars | None = None  # made on the first grammar (~1 s: the tokenizer's tables)
        self._grammars_missing = False  # llguidance is not installed: grammars are ignored
        self._grammar_setup = threading.Lock()

    batch_grammars = True  # generate_batch takes one grammar per row (generate_many)

    def states_report(self) -> StatesReport | None:
        """What the saved prompt states hold and spared (None: this model keeps none)."""
        states = self.prefix.states if self.prefix is not None else None
        return states.report() if states is not None else None

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _inputs(self, prompt: str):
        enc = self.tokenizer(prompt, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def _gen_kwargs(self, stop: Sequence[str], max_new_tokens: int, prompt_len: int,
                    grammars: Sequence[str | None] = ()) -> dict:
        kw = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                  pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        if stop:
            kw["stopping_criteria"] = [_StopOnStrings(self.tokenizer, stop, prompt_len)]
        if any(g is not None for g in grammars):
            grammar_set = self.grammars()
            if grammar_set is not None:
                kw["logits_processor"] = [GrammarMask(grammar_set, grammars)]
                kw["eos_token_id"] = grammar_set.eos  # where a row's grammar ends
        return kw

    def grammars(self) -> Grammars | None:
        """This model's grammar engine (llguidance over its tokenizer), or None where llguidance
        is not installed (then grammars are ignored, with one warning: the agent still validates)."""
        with self._grammar_setup:
            if self._grammars is None and not self._grammars_missing:
                try:
                    self._grammars = Grammars.for_hf(self.tokenizer, self.model)
                except ImportError as e:
                    log.warning("grammars are ignored (%s): pip install llguidance (requirements.txt)", e)
                    self._grammars_missing = True
            return self._grammars

    def _cached_generate(self, inputs: dict, **kw) -> tuple:
        """model.generate for one prompt, reusing the KV cache of a shared prefix; returns
        (output ids, prompt tokens that came from the cache). Call with the lock held."""
        ids = inputs["input_ids"][0].tolist()
        cache, reused = self.prefix.start(ids, self.model.config) if self.prefix is not None else (None, 0)
        out = self.model.generate(**inputs, cache=cache, **kw)
        if self.prefix is not None:
            # The cache now holds the prompt and all generated tokens but the last.
            self.prefix.keep(out[0].tolist(), cache)
        return out, reused

    def warm(self, prompt: str) -> None:
        """Encode `prompt` into the prefix cache now (the agent's next prompt head, between turns),
        so a prompt that begins with it encodes only what follows. Without a prefix cache: nothing."""
        if self.prefix is None:
            return
        ids = self._inputs(prompt)["input_ids"]
        with self._lock, _no_grad():
            cache, done = self.prefix.start(ids[0].tolist(), self.model.config, leave=0)
            if done < ids.shape[1]:
                self.model(input_ids=ids[:, done:], past_key_values=cache, use_cache=True, logits_to_keep=1)
            self.prefix.keep(ids[0].tolist(), cache)

    def generate(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256,
                 grammar: str | None = None) -> Generation:
        t0 = time.perf_counter()
        inputs = self._inputs(prompt)
        n_prompt = inputs["input_ids"].shape[1]
        kw = self._gen_kwargs(stop, max_new_tokens, n_prompt, [grammar])
        with self._lock, _no_grad():
            out, reused = self._cached_generate(inputs, **kw)
        new = out[0, n_prompt:]
        text, which = cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True), stop)
        return Generation(text, n_prompt, int(new.shape[0]), which, time.perf_counter() - t0, reused)

    def generate_batch(self, prompts: Sequence[str], *, stop: Sequence[str] = (),
                       max_new_tokens: int = 256, grammars: Sequence[str | None] | None = None) -> list[Generation]:
        """Greedy continuations of several prompts in one left-padded batch. On a CPU this is
        what makes a benchmark affordable: decoding one row is memory-bound, eight cost little more.
        `grammars`: one per prompt (None: that row decodes freely)."""
        grammars = list(grammars) if grammars is not None else [None] * len(prompts)
        if len(prompts) == 1:
            return [self.generate(prompts[0], stop=stop, max_new_tokens=max_new_tokens, grammar=grammars[0])]
        t0 = time.perf_counter()
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"  # the continuation must start at the same column
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        try:
            enc = tok(list(prompts), return_tensors="pt", padding=True) if tok.pad_token_id is not None else \
                _pad_left([tok(p).input_ids for p in prompts], pad)
        finally:
            tok.padding_side = side
        inputs = {k: v.to(self.device) for k, v in enc.items()}
        n_prompt = inputs["input_ids"].shape[1]
        kw = self._gen_kwargs(stop, max_new_tokens, n_prompt, grammars)
        with self._lock, _no_grad():
            out = self.model.generate(**inputs, **kw)
        seconds = (time.perf_counter() - t0) / len(prompts)  # per prompt, comparable with generate()
        gens = []
        ends_at = {pad, tok.eos_token_id, *kw.get("eos_token_id", ())}
        for row, mask in zip(out[:, n_prompt:], inputs["attention_mask"]):
            ids = row.tolist()
            ends = [i for i, t in enumerate(ids) if t in ends_at]
            ids = ids[: ends[0]] if ends else ids  # finished rows are padded on the right
            text, which = cut_at_stop(tok.decode(ids, skip_special_tokens=True), stop)
            gens.append(Generation(text, int(mask.sum()), len(ids), which, seconds))
        return gens

    def stream(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256,
               grammar: str | None = None) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        inputs = self._inputs(prompt)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []
        kw = self._gen_kwargs(stop, max_new_tokens, inputs["input_ids"].shape[1], [grammar])

        def work():
            try:
                with self._lock, _no_grad():
                    self._cached_generate(inputs, streamer=streamer, **kw)
            except BaseException as e:  # re-raised in the caller's thread below
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from stream_until_stop(_Drained(streamer), stop)
        thread.join()
        if errors:
            raise errors[0]


class GrammarMask:
    """A transformers logits processor: each row's next token must continue that row's grammar
    (a row without one decodes freely). The first call sees the prompt; every later call sees
    the token picked for each row the step before, which its matcher consumes first."""

    def __init__(self, grammars: Grammars, rows: Sequence[str | None]):
        self.g = grammars
        self.matchers = [None if r is None else grammars.matcher(r) for r in rows]
        self.ended = [m is None for m in self.matchers]  # rows that are free, or past their end token
        self.bitmask = grammars.new_bitmask(len(rows))
        self.started = False

    def __call__(self, input_ids, scores):
        import numpy as np
        import torch

        if self.started:
            for i, token in enumerate(input_ids[:, -1].tolist()):
                if self.ended[i]:
                    continue
                if token in self.g.eos:
                    self.ended[i] = True  # the row is finished: generate pads it from here on
                else:
                    self.g.consume(self.matchers[i], token)
        self.started = True
        rows = [i for i, done in enumerate(self.ended) if not done]
        if not rows:
            return scores
        width = scores.shape[1]
        blocked = np.ones((len(rows), width), dtype=bool)  # logits past the vocabulary: never allowed
        for k, i in enumerate(rows):
            row = self.g.blocked(self.matchers[i], self.bitmask, i, width)
            blocked[k, : len(row)] = row
        mask = torch.from_numpy(blocked).to(scores.device)
        if len(rows) == scores.shape[0]:
            return scores.masked_fill_(mask, float("-inf"))
        scores[rows] = scores[rows].masked_fill(mask, float("-inf"))
        return scores


class _Drained:
    """A streamer's pieces. Generation ends on its own at a stop string (stopping criteria);
    close() (stream_until_stop, there) reads what is left so the worker can finish. Only
    then: an exhausted streamer would block forever on a second pass."""

    def __init__(self, streamer):
        self.streamer = streamer

    def __iter__(self):
        return iter(self.streamer)

    def close(self) -> None:
        for _ in self.streamer:
            pass


def _pad_left(rows: list[list[int]], pad: int) -> dict:
    import torch

    n = max(map(len, rows))
    ids = torch.tensor([[pad] * (n - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows])
    return {"input_ids": ids, "attention_mask": mask}


def _no_grad():
    import torch

    return torch.inference_mode()


class _StopOnStrings:
    """Stop when the decoded continuation contains a stop string. Decoding (instead of
    matching token ids) works for every tokenizer, whatever way it splits the string."""

    def __init__(self, tokenizer, stop: Sequence[str], prompt_len: int):
        self.tokenizer, self.stop, self.prompt_len = tokenizer, [s for s in stop if s], prompt_len
        # Every token decodes to at least one character, so a stop string that just appeared lies
        # within the last len(stop) + 1 tokens: decoding only those keeps each step O(1).
        self.tail = max((len(s) for s in self.stop), default=0) + 2

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        start = max(self.prompt_len, input_ids.shape[1] - self.tail)
        done = [any(s in self.tokenizer.decode(row[start:], skip_special_tokens=True) for s in self.stop)
                for row in input_ids.tolist()]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
