"""Any OpenAI-compatible HTTP server: vLLM, Ollama, llama.cpp's server, OpenAI itself.

Uses the completions endpoint by default (the GPT4Tools prompt is one completion
prompt); `chat=True` sends it as a single user message for chat-only servers.

A `grammar` (GBNF) goes in the request body where servers read one: `grammar` (llama.cpp's
server and llama-cpp-python's) and `structured_outputs.grammar` (vLLM, whose xgrammar reads
GBNF); servers ignore fields they do not know. One that refuses the request for them (OpenAI
itself: 400 "unrecognized argument") is asked again without, and not sent a grammar again; the
agent validates what any server returns.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Iterator, Sequence

from gpt4tools.llm.base import Generation, cut_at_stop, stream_until_stop

log = logging.getLogger(__name__)
# Words in a 400 answer that blame the grammar fields (not, say, a prompt that is too long).
_GRAMMAR_COMPLAINTS = ("grammar", "structured_outputs", "unrecognized", "extra")


class OpenAICompatible:
    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 chat: bool = False, context_length: int = 8192, timeout: float = 120.0, max_retries: int = 2):
        from openai import OpenAI

        self.model = model
        self.chat = chat
        self.context_length = context_length
        self.name = f"openai:{model}"
        self.send_grammar = True  # False once the server refused a request for its grammar fields
        self.client = OpenAI(
            base_url=base_url or os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
            api_key=api_key or os.environ.get("OPENAI_API_KEY", "none"),
            timeout=timeout, max_retries=max_retries,
        )

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)  # the server's tokenizer is unknown here; a safe estimate

    def _request(self, prompt: str, stop: Sequence[str], max_new_tokens: int, stream: bool,
                 grammar: str | None = None):
        import openai

        # Servers cap the number of stop strings (OpenAI: 4).
        common = dict(model=self.model, max_tokens=max_new_tokens, temperature=0.0, stop=list(stop)[:4] or None,
                      stream=stream)
        if grammar is not None and self.send_grammar:
            common["extra_body"] = {"grammar": grammar, "structured_outputs": {"grammar": grammar}}
        try:
            return self._create(prompt, common)
        except openai.BadRequestError as e:
            if "extra_body" not in common or not any(w in str(e).lower() for w in _GRAMMAR_COMPLAINTS):
                raise
            self.send_grammar = False
            log.warning("%s refused a request with a grammar (%s); sending none from now on", self.name, e)
            del common["extra_body"]
            return self._create(prompt, common)

    def _create(self, prompt: str, common: dict):
        if self.chat:
            return self.client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **common)
        return self.client.completions.create(prompt=prompt, **common)

    def generate(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256,
                 grammar: str | None = None) -> Generation:
        t0 = time.perf_counter()
        resp = self._request(prompt, stop, max_new_tokens, stream=False, grammar=grammar)
        raw = resp.choices[0].message.content if self.chat else resp.choices[0].text
        text, which = cut_at_stop(raw or "", stop)  # servers differ on honouring stop
        usage = getattr(resp, "usage", None)
        return Generation(text, getattr(usage, "prompt_tokens", 0) or 0,
                          getattr(usage, "completion_tokens", 0) or 0, which, time.perf_counter() - t0)

    def stream(self, prompt: str, *, stop: Sequence[str] = (), max_new_tokens: int = 256,
               grammar: str | None = None) -> Iterator[str]:
        chunks = self._request(prompt, stop, max_new_tokens, stream=True, grammar=grammar)
        yield from stream_until_stop(self._pieces(chunks), stop)

    def _pieces(self, chunks) -> Iterator[str]:
        """The text pieces of a streamed response (chunks without a choice carry none)."""
        for chunk in chunks:
            if not chunk.choices:
                continue
            c = chunk.choices[0]
            yield (c.delta.content if self.chat else c.text) or ""
