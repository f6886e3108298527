"""Which tools to offer the LLM for a message: the k closest by meaning, plus their chains.

The paper's prompts offer 2 to 5 tools; the app has 18 available here and 31 with the hub
weights. With the first adapter a small model picked far worse among 17 than among 5
(docs/benchmark.md, the chat split with all tools offered against the top 5); with the current
default adapter, on the conversation benchmark, every tool in a fixed order scores as well as
the 5 closest, and a fixed list lets every turn and session reuse the prompt's head (its
keys/values are computed once), so the agent offers every tool by default
(`AgentConfig.offer_tools = 0`) and retrieval serves `--offer-tools k`, e.g. for the 31-tool
registry, whose full list costs ~3,000 prompt tokens. The retriever offers the k tools whose
own words are closest to the user's message: each tool is represented by its name, description,
paraphrases and aliases (all from its ToolSpec: nothing is written here), embedded with
all-MiniLM-L6-v2, and scored by its best cosine with the message. A conditioned-generation tool
brings the tool it follows (Canny generation needs edge detection first). The LLM still decides
whether to use a tool, which one, and with what input; the retriever only shortens the list.
"""

from __future__ import annotations

from typing import Sequence

from gpt4tools.tool import ToolSpec

DEFAULT_K = 5  # the paper's largest offer


def tool_texts(spec: ToolSpec) -> list[str]:
    """What a tool is matched on: its own words."""
    return list(dict.fromkeys([spec.name, spec.description, *spec.paraphrases, *spec.aliases]))


class ToolRetriever:
    def __init__(self, specs: Sequence[ToolSpec], embed=None):
        """`embed(texts) -> unit vectors`; default: gpt4tools.embed.embed (loaded on first use)."""
        if embed is None:
            from gpt4tools.embed import embed
        self.specs = list(specs)
        self._embed = embed
        self._owners: list[int] = []
        self._matrix = None

    def _tool_matrix(self):
        if self._matrix is None:
            texts = []
            for i, spec in enumerate(self.specs):
                for text in tool_texts(spec):
                    texts.append(text)
                    self._owners.append(i)
            self._matrix = self._embed(texts)
        return self._matrix

    def scores(self, message: str) -> list[float]:
        """Each tool's best cosine with the message, in the order of `specs`."""
        sims = self._tool_matrix() @ self._embed([message])[0]
        best = [-1.0] * len(self.specs)
        for owner, sim in zip(self._owners, sims.tolist()):
            best[owner] = max(best[owner], sim)
        return best

    def select(self, message: str, k: int = DEFAULT_K) -> list[ToolSpec]:
        """The k best tools for `message`, best first, each preceded by the tool it follows
        when that one is available (so a chain may make the list longer than k).
        k <= 0 or k >= the number of tools: every tool, in their own order."""
        if k <= 0 or k >= len(self.specs) or not message.strip():
            return list(self.specs)
        scores = self.scores(message)
        ranked = sorted(range(len(self.specs)), key=lambda i: -scores[i])[:k]
        by_name = {s.name: s for s in self.specs}
        out: list[ToolSpec] = []
        for i in ranked:
            spec = self.specs[i]
            first = by_name.get(spec.follows) if spec.follows else None
            for s in (first, spec):
                if s is not None and s not in out:
                    out.append(s)
        return out
