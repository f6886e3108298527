"""The LLM teacher: prompts generated from the registry, replies held to a grammar, a
tolerant parser, and strict validation (REFERENCE.md §4).

Small local teachers (Qwen2.5-Coder 0.5B/1.5B) fail at the paper's one-reply-for-every-tool
prompt: they copy the tool list back. So each request asks for one tool: the image content
(named `example.jpg`, as in the paper), the tool's name, purpose and input, a style to write
in, and two worked examples for *other* tools (teacher_shots.json); the reply continues

    Instruction: <the user's request> | Input: <arguments> [| Answer: <answer>]

and, where the backend enforces grammars (llama.cpp, transformers), is held to that shape
with the image argument written for it. A second route, `Paraphraser`, rewrites the template
teacher's requests in another style (an easier task for a small model).

Replies are parsed leniently and validated strictly: an unknown tool, a tool not offered, a
wrong argument count, an image argument that is not the image, a text argument that is not a
phrase of the request (REFERENCE.md §1b), a copied tool description, or a reply cut short is
dropped and counted by reason. Every raw reply is cached (append + fsync) under a key of the
teacher's name and the exact prompt, and prompts are drawn from the seed, so a rebuild asks
nothing twice and gives the same records, and an interrupted build resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

from gpt4tools.data.content import ImageContent
from gpt4tools.data.filters import ToolFit
from gpt4tools.data.instructions import IMAGE, Instruction, supports
from gpt4tools.data.synthetic import counted, rng_for
from gpt4tools.llm import LLM
from gpt4tools.react import gbnf_literal
from gpt4tools.records import append_jsonl, cut_partial_line, read_jsonl
from gpt4tools.registry import ToolRegistry, UnknownToolError
from gpt4tools.tool import ToolInputError, ToolSpec
from tools.describe import VisualQuestionAnswering

log = logging.getLogger(__name__)
QA_TOOL = VisualQuestionAnswering.spec.name
_SHOTS = Path(__file__).resolve().parent / "teacher_shots.json"

_FIELD_SEP = r"\s*(?:\||;|\t|\n)\s*(?:[-*•]\s*)?"
_TEXT = r"instruction\s*:\s*(?P<text>[^\n|]+?)"
_TOOL = r"tool(?:\s*name)?\s*:\s*(?P<tool>[^\n|;]+?)"
_ARGS_ANSWER = (r"(?:action\s+)?(?:input|arguments?)\s*:\s*(?P<args>[^\n|]*?)"
                + r"(?:" + _FIELD_SEP + r"answer\s*:\s*(?P<answer>[^\n|]*?))?[ \t]*$")
# Replies are read as "Tool: X | Instruction: ... | Input: ..." (the teacher writes from "Instruction:" on
# and the tool asked is put in front); "Instruction | Tool | Input" is read too.
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


@lru_cache(maxsize=1)
def shots() -> dict:
    return json.loads(_SHOTS.read_text(encoding="utf-8"))


def content_line(content: ImageContent) -> str:
    """The image content in one line, as a small teacher reads it best: two captions, the objects
    counted, the text and the faces (the boxes of `ImageContent.teacher_text` only distract it)."""
    captions = list(dict.fromkeys([content.announcement(), *content.captions]))[:2]
    parts = [" ".join(c.strip().rstrip(".") + "." for c in captions if c.strip())]
    if content.objects:
        parts.append("Objects: " + ", ".join(counted(label, content.count(label)) for label in content.labels()) + ".")
    if content.ocr:
        parts.append("Text: " + ", ".join(f'"{t}"' for t, _ in content.ocr) + ".")
    if content.faces:
        parts.append(f"Faces: {len(content.faces)}.")
    return " ".join(p for p in parts if p).replace("\n", " ")


def _purpose(spec: ToolSpec) -> str:
    """The description without its "like: ..." examples (a small teacher copies them)."""
    return re.split(r",?\s*(?:\blike\b|\be\.g\.|\bsuch as\b)", spec.description, maxsplit=1)[0].strip().rstrip(".,")


def _tool_line(spec: ToolSpec) -> str:
    return f"Tool: {spec.name} ({_purpose(spec)}). Input: {_arg_phrase(spec)}"


def _shot_block(shot: dict, specs: dict[str, ToolSpec]) -> str:
    answer = f" | Answer: {shot['answer']}" if shot.get("answer") else ""
    return (f"Image: {shot['image']}\n{_tool_line(specs[shot['tool']])}\nStyle: {shot['style']}\n"
            f"Instruction: {shot['instruction']} | Input: {shot['input']}{answer}")


def write_prompt(content: ImageContent, spec: ToolSpec, examples: Sequence[dict], style: str,
                 specs: dict[str, ToolSpec]) -> str:
    """The request for one instruction: header, worked examples, then this image and tool. The part
    before the tool is mostly the same for every tool of one image (LLMTeacher._examples), so a
    caching backend encodes it once."""
    head = ("Users send an AI assistant an image and a request, and the assistant answers it with a tool. "
            "For the image and tool given, write a request a user could send that this tool does, in the "
            "style given, about what the image shows, and the tool's input. A text input is the shortest "
            f"phrase of the request that names the thing; write {IMAGE} for the image.")
    if spec.name == QA_TOOL:
        head += " For a question, add the answer the image content gives."
    blocks = [head, *(_shot_block(s, specs) for s in examples)]
    blocks.append(f"Image: {content_line(content)}\n{_tool_line(spec)}\nStyle: {style}\nInstruction:")
    return "\n\n".join(blocks)


# One sentence: small instruct models, completing raw text, run on past the request ("... I'm not
# sure if it's in the foreground..."); ending it at its first . ? or ! (the image name aside) makes the
# rest of the line forced. A cut-off reply fails the grammar and is dropped as unparsable.
_SENTENCE = ["sentence ::= piece+ [.?!]?", "piece ::= [^\\n|.?!] | " + gbnf_literal(IMAGE)]


def write_grammar(spec: ToolSpec) -> str:
    """GBNF for the reply after "Instruction:": the request (one sentence), the input (the image
    argument written for the model) and, for the question tool, the answer; one line."""
    qa = spec.name == QA_TOOL  # its question is a sentence, so that " | Answer: " follows it
    parts = []
    for i, a in enumerate(spec.args):
        last = i == len(spec.args) - 1
        parts.append(gbnf_literal(IMAGE) if a.kind == "image" else ("sentence" if qa else "last") if last else "part")
    rules = [
        "root ::= \" \" sentence " + gbnf_literal(" | Input: ") + " " + ' ", " '.join(parts)
        + (" " + gbnf_literal(" | Answer: ") + " sentence" if qa else "") + ' "\\n"',
        *_SENTENCE,
        "part ::= [^\\n|, ] [^\\n|,]*",
        "last ::= [^\\n| ] [^\\n|]*",
    ]
    return "\n".join(rules) + "\n"


def paraphrase_prompt(text: str, examples: Sequence[dict], style: str) -> str:
    head = ("Rewrite each request a user sent to an AI assistant about an image in other words, in the style given. "
            f"Keep what it asks for, the thing it names and the image name {IMAGE} if it has one.")
    blocks = [head, *(f"Request: {e['request']}\nStyle: {e['style']}\nRewritten: {e['rewritten']}" for e in examples)]
    blocks.append(f"Request: {text}\nStyle: {style}\nRewritten:")
    return "\n\n".join(blocks)


PARAPHRASE_GRAMMAR = "\n".join(['root ::= " " sentence "\\n"', *_SENTENCE]) + "\n"


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
    if repeats(words) or leaks_style(words):
        dropped["teacher: repeats itself or the style"] += 1
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
    if any(a.kind == "text" and _runs_on(p, words) for a, p in zip(spec.args, parts)):
        dropped["teacher: text input runs on"] += 1
        return None
    if any(a.kind == "text" and not grounded(p, words) for a, p in zip(spec.args, parts)):
        dropped["teacher: text input not a phrase of the request"] += 1
        return None
    answer = _clean(m["answer"] or "") or None
    if spec.name == QA_TOOL and not answer:
        dropped["teacher: question without an answer"] += 1
        return None
    words = _IMAGE_RE.sub(lambda mm: IMAGE if "example" in mm.group(0).lower() else mm.group(0), words)
    return Instruction(content_id, spec.name, words, tuple(parts), teacher, answer if spec.name == QA_TOOL else None)


_WORD_RE = re.compile(r"[a-z0-9']+")
_FILLER = {"the", "a", "an", "of", "in", "on", "to", "and", "it", "this", "that", "with", "for", "me", "my", "is",
           "make", "please", "image", "photo", "picture"}


def grounded(arg: str, request: str) -> bool:
    """Is a text argument a phrase of the request (REFERENCE.md §1b: the shortest phrase that names
    the thing)? Its words, fillers aside, must nearly all be the request's: all of a short one (an
    object name), at least 70 % of a longer one (a question, a scene description)."""
    said = set(_WORD_RE.findall(request.lower()))
    said |= {w.rstrip("s") for w in said}  # "dogs" in the request names "dog"
    words = [w for w in _WORD_RE.findall(arg.lower()) if w not in _FILLER] or _WORD_RE.findall(arg.lower())
    if not words:
        return False
    found = sum(w in said or w.rstrip("s") in said for w in words)
    return found == len(words) if len(words) <= 3 else found >= 0.7 * len(words)


def repeats(text: str) -> bool:
    """A small model looping: some three words in a row come back three times."""
    words = _WORD_RE.findall(text.lower())
    return max(Counter(zip(words, words[1:], words[2:])).values(), default=0) >= 3


def leaks_style(text: str) -> bool:
    """The style the prompt asked for, written into the request ("..., terse, no greeting")."""
    return any(style.lower() in text.lower() for style in shots()["styles"])


def _runs_on(arg: str, request: str) -> bool:
    """A text input longer than the request, or one word three times ("savanna elephant savanna ...")."""
    words = _WORD_RE.findall(arg.lower())
    return len(words) > len(_WORD_RE.findall(request.lower())) or max(Counter(words).values(), default=0) >= 3


def _copies(text: str, spec: ToolSpec) -> bool:
    """A small teacher often returns the tool's own description as the user's request: 80 % of the
    request's words, and at least six, in the description's order. (A short request such as "what is
    in the photo?" shares most of its few words with any description and is not a copy.)"""
    n = len(_WORD_RE.findall(text.lower()))
    return n >= 6 and any(_rouge().score(d, text)["rougeL"].precision >= 0.8
                          for d in (spec.description, *spec.paraphrases))


@lru_cache(maxsize=1)
def _rouge():
    """One ROUGE-L scorer for every check here (it is stateless; made once, not per reply)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


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
    """Asks an LLM backend (`gpt4tools.llm.load_llm`) for instructions, one request per image and tool."""

    def __init__(self, llm: LLM, registry: ToolRegistry, cache: ReplyCache | None = None, retries: int = 2,
                 max_new_tokens: int = 96, workers: int = 1, seed: int = 0, fit: ToolFit | None = None):
        """`fit`: checks that a request fits its tool (filters.ToolFit); a misfit is asked again in
        another style, like an unusable reply."""
        self.llm, self.registry, self.cache, self.fit = llm, registry, cache, fit
        self.retries, self.max_new_tokens, self.workers = max(0, retries), max_new_tokens, max(1, workers)
        self.seed = seed
        self.name = getattr(llm, "name", "llm")
        self.specs = {s.name: s for s in registry.specs()}
        self.asked = 0  # requests sent (cache misses), for the yield and throughput report

    def _key(self, prompt: str) -> str:
        """Cache key: the teacher and the exact prompt (a changed prompt is asked again; the grammar
        follows from the tool the prompt names)."""
        return hashlib.sha256(f"{self.name}|{prompt}".encode()).hexdigest()[:24]

    def _complete(self, prompt: str, grammar: str, what: str, dropped: Counter) -> str | None:
        """The reply to `prompt` from the cache or the model; None (counted) when the request fails."""
        key = self._key(prompt)
        reply = self.cache.get(key) if self.cache else None
        if reply is not None:
            return reply
        try:
            self.asked += 1
            # Backends that enforce grammars stop where the line ends; the rest stop at the newline.
            reply = self.llm.generate(prompt, stop=["\n"], max_new_tokens=self.max_new_tokens, grammar=grammar).text
        except Exception as e:  # endpoint down, timeout, backend error: count, retry, move on
            log.warning("teacher request for %s failed: %s", what, e)
            dropped[f"teacher: request failed ({type(e).__name__})"] += 1
            return None
        if self.cache:
            self.cache.put(key, reply)
        return reply

    def _examples(self, content: ImageContent, spec: ToolSpec) -> list[dict]:
        """Two worked examples per image (the same for each of its tools, so its prompt head is
        shared), never one for the tool asked: a small teacher would copy it."""
        usable = [s for s in shots()["write"] if s["tool"] in self.specs]
        order = rng_for("teacher-shots", self.seed, content.id).sample(usable, len(usable))
        return [s for s in order if s["tool"] != spec.name][:2]

    def instruction(self, content: ImageContent, spec: ToolSpec, dropped: Counter) -> Instruction | None:
        """One instruction for `spec` about `content` (at most 1 + retries requests, each in another
        style; errors are counted, never raised)."""
        styles = shots()["styles"]
        first = rng_for("teacher-style", self.seed, content.id, spec.name).randrange(len(styles))
        for attempt in range(1 + self.retries):
            style = styles[(first + attempt) % len(styles)]
            prompt = write_prompt(content, spec, self._examples(content, spec), style, self.specs)
            reply = self._complete(prompt, write_grammar(spec), f"{content.id} / {spec.name}", dropped)
            if reply is None:
                continue
            if not reply.strip():
                dropped["teacher: empty reply"] += 1
                continue
            body = reply.strip()
            if not body.lower().startswith("instruction"):  # a completion continues after "Instruction:"
                body = "Instruction: " + body
            found = parse_reply(f"Tool: {spec.name} | {body}", content.id, self.registry, [spec.name], self.name,
                                dropped)
            if found and (self.fit is None or self.fit.accept(found[0], dropped, "teacher: request does not fit")):
                return found[0]
        return None

    def instructions(self, content: ImageContent, specs: Sequence[ToolSpec], dropped: Counter) -> list[Instruction]:
        """An instruction for each tool in `specs` the content supports."""
        found = (self.instruction(content, s, dropped) for s in specs if supports(content, s))
        return [i for i in found if i is not None]

    def run(self, jobs: Sequence[tuple[ImageContent, Sequence[ToolSpec]]],
            dropped: Counter) -> Iterator[list[Instruction]]:
        """Instructions per job, in job order; `workers` images in flight at once (an HTTP teacher;
        a local model serves one request at a time anyway)."""
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


class Paraphraser(LLMTeacher):
    """The second route: another teacher's request (the template teacher's) rewritten by the LLM in
    another style; tool, arguments and answer stay. Recorded as teacher "<llm name>/paraphrase"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.label = f"{self.name}/paraphrase"

    def paraphrase(self, ins: Instruction, dropped: Counter) -> Instruction | None:
        styles = shots()["styles"]
        rng = rng_for("paraphrase", self.seed, ins.content_id, ins.tool, ins.text)
        examples = rng.sample(shots()["rewrite"], 2)
        first = rng.randrange(len(styles))
        spec = self.specs.get(ins.tool)
        for attempt in range(1 + self.retries):
            prompt = paraphrase_prompt(ins.text, examples, styles[(first + attempt) % len(styles)])
            reply = self._complete(prompt, PARAPHRASE_GRAMMAR, f"{ins.content_id} / {ins.tool}", dropped)
            if reply is None:
                continue
            text = _NAMED_IMAGE_RE.sub(IMAGE, _clean(reply.strip().split("\n")[0]))
            reason = self._check(ins, text, spec)
            if reason is None:
                out = Instruction(ins.content_id, ins.tool, text, ins.args, self.label, ins.answer)
                if self.fit is None or self.fit.accept(out, dropped, "paraphrase: request does not fit"):
                    return out
                continue
            dropped[f"paraphrase: {reason}"] += 1
        return None

    @staticmethod
    def _check(ins: Instruction, text: str, spec: ToolSpec | None) -> str | None:
        """Why a rewrite is unusable, or None."""
        if len(text.split()) < 3:
            return "empty or too short"
        if (re.search(r"\b(?:request|rewritten|style)\s*:", text, re.I) or _PLACEHOLDER_RE.search(text)
                or leaks_style(text)):
            return "format text left in"
        if repeats(text):
            return "repeats itself"
        if (IMAGE in ins.text) != bool(_NAMED_IMAGE_RE.search(text)):
            return "image name lost or added"
        kinds = [a.kind for a in spec.args] if spec else ["text"] * len(ins.args)
        if any(k == "text" and not grounded(a, text) for k, a in zip(kinds, ins.args)):
            return "text input no longer a phrase of the request"
        if _rouge_l(ins.text, text) >= 0.8:
            return "too close to the original"
        return None

    def run_on(self, found: Sequence[Instruction], dropped: Counter) -> list[Instruction]:
        out = (self.paraphrase(i, dropped) for i in found)
        return [i for i in out if i is not None]


def _rouge_l(a: str, b: str) -> float:
    return _rouge().score(a.lower(), b.lower())["rougeL"].fmeasure
