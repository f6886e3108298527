"""The backends' contract: text in, text out, with stop strings; and the helpers they share.

The GPT4Tools prompt is a single completion prompt, so a backend needs no chat roles:
`generate` returns the continuation (stop string excluded) and token counts, `stream`
yields pieces of it as they are decoded.

`grammar` (optional, both calls): a GBNF grammar (llama.cpp's format, as react.step_grammar
writes it) the continuation must match; decoding ends where the grammar is complete. Backends
that cannot enforce it may ignore it: the agent validates what comes back either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

# llama.cpp's decoding loops (gpt4tools/llm/llamacpp.py), the default first: "lookup", our greedy
# loop with drafted tokens checked in one pass (llama_decode.py); "greedy", the same loop one token
# per pass; "library", llama-cpp-python's create_completion (the reference of scripts/bench_turns.py).
DECODINGS = ("lookup", "greedy", "library")


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

    def generate(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256,
                 grammar: str | None = None) -> Generation: ...

    def stream(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256,
               grammar: str | None = None) -> Iterator[str]: ...

    def count_tokens(self, text: str) -> int: ...

    # Optional: `warm(prompt) -> None` encodes a prompt into the backend's cache ahead of time
    # (the agent warms the head every turn shares); backends without a cache leave it out.


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


def stream_until_stop(pieces: Iterable[str], stop: Sequence[str]) -> Iterator[str]:
    """A backend's `stream`: the decoded `pieces` as safe-to-show text (StopStream), ending at
    the first stop string, which is not shown. There `pieces` is closed if it has a close()
    (a generator; hf.py's streamer drains itself), so that decoding ends too. At the end of
    the pieces, text held back because it might have begun a stop string is shown."""
    buf = StopStream(stop)
    for piece in pieces:
        out = buf.feed(piece)
        if out:
            yield out
        if buf.stopped is not None:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
            break
    tail = buf.flush()
    if tail:
        yield tail


def generate_many(llm: LLM, prompts: Sequence[str], *, stop: Sequence[str] = (), max_new_tokens: int = 256,
                  batch_size: int = 1, grammars: Sequence[str | None] | None = None) -> list[Generation]:
    """Continuations of several prompts: batched where the backend can (`generate_batch`),
    one by one otherwise. Results are in the order of `prompts`. `grammars`: one per prompt
    (None: that prompt is decoded freely); a batch with grammars goes to a `generate_batch`
    that takes them (per row), else its prompts go one by one."""
    grammars = list(grammars) if grammars is not None else [None] * len(prompts)
    if len(grammars) != len(prompts):
        raise ValueError(f"{len(grammars)} grammars for {len(prompts)} prompts")

    def one(prompt: str, grammar: str | None) -> Generation:
        extra = {"grammar": grammar} if grammar is not None else {}  # a backend without the keyword still works
        return llm.generate(prompt, stop=stop, max_new_tokens=max_new_tokens, **extra)

    batch = getattr(llm, "generate_batch", None)
    if batch is None or batch_size <= 1:
        return [one(p, g) for p, g in zip(prompts, grammars)]
    per_row = getattr(llm, "batch_grammars", False)
    out: list[Generation] = []
    for i in range(0, len(prompts), batch_size):
        chunk, rows = prompts[i:i + batch_size], grammars[i:i + batch_size]
        if all(g is None for g in rows):
            out += batch(chunk, stop=stop, max_new_tokens=max_new_tokens)
        elif per_row:
            out += batch(chunk, stop=stop, max_new_tokens=max_new_tokens, grammars=rows)
        else:
            out += [one(p, g) for p, g in zip(chunk, rows)]
    return out


class ScriptedLLM:
    """Replays canned completions in order (tests, demos). Raises when it runs out."""

    name = "scripted"
    context_length = 100_000

    def __init__(self, completions: Sequence[str]):
        self.completions = list(completions)
        self.prompts: list[str] = []
        self.grammars: list[str | None] = []  # the grammar passed with each prompt (not enforced)

    def generate(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256,
                 grammar: str | None = None) -> Generation:
        self.prompts.append(prompt)
        self.grammars.append(grammar)
        if not self.completions:
            raise RuntimeError("ScriptedLLM has no completions left")
        text, which = cut_at_stop(self.completions.pop(0), stop)
        return Generation(text, self.count_tokens(prompt), self.count_tokens(text), which)

    def stream(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256,
               grammar: str | None = None) -> Iterator[str]:
        yield self.generate(prompt, stop=stop, max_new_tokens=max_new_tokens, grammar=grammar).text

    def count_tokens(self, text: str) -> int:
        return len(text.split())
