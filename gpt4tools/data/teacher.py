"""The LLM teacher: a prompt generated from the registry, a tolerant reply parser, and
strict validation (REFERENCE.md §4).

The teacher reads the image content (named `example.jpg`, as in the paper) and the tool
list, and writes one instruction per tool, one per line:

    Instruction: <request> | Tool: <tool name> | Input: <arguments> [| Answer: <answer>]

Replies are parsed leniently (numbering, bold, newlines between fields) and validated
strictly: an unknown tool, a tool not offered, a wrong argument count or an image argument
that is not the image is dropped and counted. Requests are retried a bounded number of
times, run concurrently in a thread pool, and every raw reply is cached (append + fsync)
so an interrupted build never asks twice.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

from gpt4tools.data.content import ImageContent
from gpt4tools.data.instructions import IMAGE, Instruction
from gpt4tools.llm import LLM
from gpt4tools.records import append_jsonl, cut_partial_line, read_jsonl
from gpt4tools.registry import ToolRegistry, UnknownToolError
from gpt4tools.tool import ToolInputError, ToolSpec
from tools.describe import VisualQuestionAnswering

log = logging.getLogger(__name__)
QA_TOOL = VisualQuestionAnswering.spec.name

_FIELD_SEP = r"\s*(?:\||;|\t|\n)\s*(?:[-*•]\s*)?"
_TEXT = r"instruction\s*:\s*(?P<text>[^\n|]+?)"
_TOOL = r"tool(?:\s*name)?\s*:\s*(?P<tool>[^\n|;]+?)"
_ARGS_ANSWER = (r"(?:action\s+)?(?:input|arguments?)\s*:\s*(?P<args>[^\n|]*?)"
                + r"(?:" + _FIELD_SEP + r"answer\s*:\s*(?P<answer>[^\n|]*?))?[ \t]*$")
# The prompt asks for "Tool | Instruction | Input"; "Instruction | Tool | Input" is read too.
_ARGS_SEP = r"(?:" + _FIELD_SEP + r"|(?<=[.?!])\s+)"  # small teachers write "... photo. Input: x"
_REPLY_RES = (re.compile(_TOOL + _FIELD_SEP + _TEXT + _ARGS_SEP + _ARGS_ANSWER, re.I | re.M),
              re.compile(_TEXT + _FIELD_SEP + _TOOL + _ARGS_SEP + _ARGS_ANSWER, re.I | re.M))
_START_RE = re.compile(r"(?im)^[\W\d_]*(?:instruction|tool(?:\s*name)?)\s*:")
# The image as a teacher may write it: example.jpg, "example.png", image/example.jpg, <example.jpg>
_PLACEHOLDER_RE = re.compile(r"<[a-z _]+>|\((?:input|arguments?)\s*:", re.I)  # "<text>", "(Input: ..."
_NAMED_IMAGE_RE = re.compile(r"\bexample\.(?:jpe?g|png)\b", re.I)  # an image name inside a text argument
_IMAGE_RE = re.compile(r"[\"'`<(\[]*(?:\w+/)?example(?:\.(?:jpe?g|png))?[\"'`>)\]]*", re.I)


def _arg_phrase(spec: ToolSpec) -> str:
    return ", ".join(IMAGE if a.kind == "image" else f"<{a.name.replace('_', ' ')}>" for a in spec.args)


def teacher_prompt(content: ImageContent, specs: Sequence[ToolSpec], attempt: int = 0) -> str:
    """The instruction-writing prompt, generated from the tool specs and the content.

    No worked example: small teachers copy an example's tool into every line. Instead the
    prompt ends with the first line started for them, the first tool already named.
    """
    tools = "\n".join(f"{i}. {s.name}: {s.description} (Input: {_arg_phrase(s)})" for i, s in enumerate(specs, 1))
    lines = [
        f"An image named {IMAGE} has this content:",
        content.teacher_text(),
        "",
        "An AI assistant can use these tools:",
        tools,
        "",
        f"Write one instruction for each tool, in the order listed: a request a user could make about {IMAGE} "
        "(for tools that take only text, a request for something new) that the tool solves. Use the objects and "
        "details of the content above, vary the wording, and give the tool's exact name and its arguments "
        f"separated by \", \", writing {IMAGE} for the image.",
    ]
    if any(s.name == QA_TOOL for s in specs):
        lines.append(f"For \"{QA_TOOL}\" add \" | Answer: <the answer>\", taken from the content.")
    lines.append(f"Write exactly {len(specs)} lines, one per tool, and nothing else, each in this format:")
    lines.append("Tool: <tool name> | Instruction: <the user's request> | Input: <arguments>")
    if attempt:
        lines.append("Follow the format exactly: one line per tool, fields separated by \" | \".")
    return "\n".join(lines) + "\n\n" + primer(specs)


def primer(specs: Sequence[ToolSpec]) -> str:
    """The start of the first line, written for the teacher (the prompt ends with it)."""
    return f"Tool: {specs[0].name} | Instruction:"


def _clean(value: str) -> str:
    return value.strip().strip("*_`\"' ").strip()


def parse_reply(reply: str, content_id: str, registry: ToolRegistry, allowed: Sequence[str], teacher: str,
                dropped: Counter) -> list[Instruction]:
    """Instructions from a teacher reply; each rejected line is counted in `dropped` by reason."""
    text = reply.replace("**", "").replace("__", "")
    out: list[Instruction] = []
    matches = sorted((m for rx in _REPLY_RES for m in rx.finditer(text)), key=lambda m: m.start())
    matches = [m for i, m in enumerate(matches) if i == 0 or m.start() >= matches[i - 1].end()]  # no overlaps
    # A line that starts a record but lies in no match is one the teacher got wrong.
    unparsed = sum(not any(m.start() <= st.end() <= m.end() for m in matches) for st in _START_RE.finditer(text))
    if unparsed > 0:
        dropped["teacher: unparsable line"] += unparsed
    if not matches and unparsed <= 0:
        dropped["teacher: no instruction in the reply"] += 1
    for m in matches:
        instruction = _validate(m, content_id, registry, allowed, teacher, dropped)
        if instruction is not None:
            out.append(instruction)
    return out


def _validate(m: re.Match, content_id: str, registry: ToolRegistry, allowed: Sequence[str], teacher: str,
              dropped: Counter) -> Instruction | None:
    words = _clean(m["text"])
    if len(words) < 3:
        dropped["teacher: empty instruction"] += 1
        return None
    try:
        spec = registry.resolve(_clean(m["tool"]).rstrip(".")).spec
    except UnknownToolError:
        dropped["teacher: unknown tool"] += 1
        return None
    if spec.name not in allowed:
        dropped["teacher: tool not offered"] += 1
        return None
    if _PLACEHOLDER_RE.search(words) or _PLACEHOLDER_RE.search(m["args"]):
        dropped["teacher: placeholder or format text left in"] += 1
        return None
    if _copies(words, spec):
        dropped["teacher: copied the tool description"] += 1
        return None
    try:
        parts = spec.split_input(_clean(m["args"]))
    except ToolInputError:
        dropped["teacher: wrong argument count"] += 1
        return None
    parts = [_clean(p) for p in parts]
    for i, arg in enumerate(spec.args):
        if arg.kind == "image" and not _IMAGE_RE.fullmatch(parts[i]):
            dropped["teacher: missing image reference"] += 1
            return None
        if arg.kind == "image":
            parts[i] = IMAGE
        elif _NAMED_IMAGE_RE.search(parts[i]) or not parts[i]:
            dropped["teacher: image name in a text argument"] += 1
            return None
    answer = _clean(m["answer"] or "") or None
    words = _IMAGE_RE.sub(lambda mm: IMAGE if "example" in mm.group(0).lower() else mm.group(0), words)
    return Instruction(content_id, spec.name, words, tuple(parts), teacher, answer if spec.name == QA_TOOL else None)


def _copies(text: str, spec: ToolSpec) -> bool:
    """A small teacher often returns the tool's own description as the user's request."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return any(scorer.score(d, text)["rougeL"].precision >= 0.8 for d in (spec.description, *spec.paraphrases))


class ReplyCache:
    """Raw teacher replies, one JSON line each, appended and fsynced (thread safe)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.replies: dict[str, str] = {}
        if path.is_file():
            cut_partial_line(path)  # a line cut by a kill: that request is asked again, and the next reply
            for d in read_jsonl(path, allow_list=False).values():  # is not glued onto it
                try:
                    self.replies[d["key"]] = d["reply"]
                except (KeyError, TypeError):
                    continue  # not a cache line: that request is simply asked again

    def get(self, key: str) -> str | None:
        return self.replies.get(key)

    def put(self, key: str, reply: str) -> None:
        with self.lock:
            self.replies[key] = reply
            append_jsonl(self.path, [{"key": key, "reply": reply}])


class LLMTeacher:
    """Asks an LLM backend (`gpt4tools.llm.load_llm`) for instructions, one request per image."""

    def __init__(self, llm: LLM, registry: ToolRegistry, cache: ReplyCache | None = None, retries: int = 2,
                 max_new_tokens: int = 2048, workers: int = 1):
        self.llm, self.registry, self.cache = llm, registry, cache
        self.retries, self.max_new_tokens, self.workers = max(0, retries), max_new_tokens, max(1, workers)
        self.name = getattr(llm, "name", "llm")

    def _key(self, prompt: str) -> str:
        """Cache key: the teacher and the exact prompt (a changed prompt is asked again)."""
        return hashlib.sha256(f"{self.name}|{prompt}".encode()).hexdigest()[:24]

    def instructions(self, content: ImageContent, specs: Sequence[ToolSpec], dropped: Counter) -> list[Instruction]:
        """Instructions for `content` (at most 1 + retries requests; errors are counted, never raised)."""
        allowed = [s.name for s in specs]
        for attempt in range(1 + self.retries):
            prompt = teacher_prompt(content, specs, attempt)
            key = self._key(prompt)
            reply = self.cache.get(key) if self.cache else None
            if reply is None:
                try:
                    # ~60 tokens a line is plenty; a bound keeps a looping model from running on.
                    budget = min(self.max_new_tokens, 64 * len(specs) + 32)
                    reply = self.llm.generate(prompt, max_new_tokens=budget).text
                    if not reply.lstrip().lower().startswith("tool"):  # a completion continues the primer
                        reply = primer(specs) + reply
                except Exception as e:  # endpoint down, timeout, backend error: count, retry, move on
                    log.warning("teacher request for %s failed: %s", content.id, e)
                    dropped[f"teacher: request failed ({type(e).__name__})"] += 1
                    continue
                if self.cache:
                    self.cache.put(key, reply)
            found = parse_reply(reply, content.id, self.registry, allowed, self.name, dropped)
            if found:
                return found
        return []

    def run(self, jobs: Sequence[tuple[ImageContent, Sequence[ToolSpec]]],
            dropped: Counter) -> Iterator[list[Instruction]]:
        """Instructions per job, in job order; `workers` requests in flight at once."""
        if self.workers == 1:
            for content, specs in jobs:
                yield self.instructions(content, specs, dropped)
            return
        with ThreadPoolExecutor(self.workers) as pool:
            # Counter updates from threads: each job counts into its own Counter, merged here.
            def one(job: tuple[ImageContent, Sequence[ToolSpec]]) -> tuple[list[Instruction], Counter]:
                local: Counter = Counter()
                return self.instructions(job[0], job[1], local), local

            for found, local in pool.map(one, jobs):
                dropped.update(local)
                yield found
