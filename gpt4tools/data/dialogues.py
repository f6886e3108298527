"""Conversation-shaped training records (issue 19, part 4): what the app's chats look like.

The instruction records of samples.py hold one image and one request about it. In the app a
user uploads several photos, refers back to one ("the first photo", "the one with the dog"),
follows up on a tool's result ("now remove the cup from it"), and meets tools that fail or are
not there. This module writes records of five kinds (the record schema of gpt4tools/records.py):

- "multi-image": two or three uploads; the request means one that is not the last announced
  (by ordinal, by what its description shows, or by its exact name), or the newest upload is
  named in the new input and the message is vague ("what about this one").
- "follow-up": a tool result from an earlier turn is in the history; the request ("segment it")
  means that result, not the upload.
- "repair": a wrong call (an image name that does not exist, a wrong argument count, a tool
  name that does not exist) and the observation the agent really writes for it, then the
  corrected call. The wrong call is context only: its own turn is never a training target.
- "failure": a call whose observation is an error (a crash, missing weights) or finds nothing
  ("No cat found ..."), then an answer that says what failed and names no image.
- "unavailable": a request no offered tool can serve, answered without a call.
- "original": tools already made results from an upload, and the request goes back to the upload
  ("now the edges of the original"): the newest image is a result, but the upload is meant.
- "served" (opt-in: not in the default kinds): the "unavailable" kind's requests for pictures, depth and
  normal maps with the tool that serves them offered, and its call: the declines' contrast, so that what
  decides is the offered tools, not the wording.
- "loose": one photo and a request in everyday wording that does not name it ("can u box the dog
  lol"), from phrasings_loose.json (written apart from the conversation benchmark).

Prompts are rendered the way the served agent renders them (agent.py, session.py): each upload
announced in the history (`Conversation.add_image`), earlier exchanges stored with the message
as the agent saw it (`PromptTemplate.new_input`: the uploads of a message named at its end),
steps written with `react.render_*`, and observations produced by the agent's own call path
(`Agent.observe` on a real ImageStore holding the conversation's file names, and the real tool
contract), so that no error text is restated here. A dialogue is plain data (`Dialogue`), so
tests can rebuild the same conversation and compare with what `Agent.prompt` renders.

User wording comes from phrasings_dialogue.json and the template teacher's phrasings. Messages
that come close (ROUGE-L >= 0.7) to a message of the conversation benchmark
(data/conversations.jsonl) are dropped: the benchmark must stay out of training.

    python -m gpt4tools.data.dialogues --records 20 --out data/dialogues_sample.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from PIL import Image

from gpt4tools import react
from gpt4tools.agent import Agent
from gpt4tools.data.content import ImageContent
from gpt4tools.data.instructions import IMAGE, Instruction, TemplateTeacher, _slots, phrasings
from gpt4tools.data.samples import Episode, RecordMaker, Step, episode, record_id
from gpt4tools.data.synthetic import coco_categories, rng_for, synthetic_content
from gpt4tools.history import Conversation
from gpt4tools.images import NAME_RE, ImageStore, random_name
from gpt4tools.paths import REPO
from gpt4tools.prompt import random_template
from gpt4tools.react import FinalAnswer, ToolCall
from gpt4tools.records import read_jsonl, to_jsonl
from gpt4tools.registry import ToolRegistry, UnknownToolError
from gpt4tools.tool import Availability, Tool, ToolSpec

KINDS = ("multi-image", "follow-up", "repair", "failure", "unavailable", "original", "loose")
ALL_KINDS = (*KINDS, "served")  # the default stays KINDS: data built before "served" rebuilds the same
# The capabilities of phrasings_dialogue.json that one seen tool serves from the request alone
SERVED = {"create new images from a description": "Generate Image From User Input Text",
          "estimate depth": "Predict Depth On Image", "compute surface normals": "Predict Normal Map On Image"}
TEACHER = "dialogue"  # who wrote the user messages: this module's rules and phrasings
BENCHMARK = REPO / "data" / "conversations.jsonl"
ROUGE_THRESHOLD = 0.7
_PHRASES = Path(__file__).resolve().parent / "phrasings_dialogue.json"
_LOOSE = Path(__file__).resolve().parent / "phrasings_loose.json"

# Tools by role (exact names; the catalog and phrasings.json use the same ones).
DESCRIBE = "Get Photo Description"
# Results that are still photos, so that any image tool makes sense on them in a follow-up.
PHOTO_RESULTS = ("Remove Something From The Photo", "Replace Something From The Photo", "Instruct Image Using Text",
                 "Generate Image From User Input Text")
# Tools that report "nothing found" for an object the image does not hold (tools/objects.py Grounding).
FINDS_OBJECTS = ("Detect the Give Object", "Segment the given object", "Remove Something From The Photo")


@lru_cache(maxsize=1)
def dialogue_phrases() -> dict:
    return json.loads(_PHRASES.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def loose_phrases() -> dict:
    """Requests in everyday wording per tool, without naming the image (the "loose" kind)."""
    return json.loads(_LOOSE.read_text(encoding="utf-8"))


# -- a dialogue: plain data ------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    name: str  # as the app names it: image/<8 letters>.png
    content: ImageContent


@dataclass
class PastTurn:
    """An earlier exchange: the photos uploaded with the message, the message, the final answer."""

    uploads: list[Upload]
    message: str
    answer: str
    results: list[str] = field(default_factory=list)  # images its tools made, oldest first
    tool: str | None = None  # the tool the message asked for


@dataclass
class Dialogue:
    """A conversation up to the current turn, and the assistant steps of that turn."""

    kind: str
    index: int  # n-th dialogue of its kind: with the seed and split, what makes its ids
    past: list[PastTurn]
    uploads: list[Upload]  # uploaded with the current message
    message: str
    steps: list[Step]
    final: str | None
    source: str  # the content of the image meant (or "dialogue:<kind>")
    meant: str | None = None  # the image the request means
    ref: str = ""  # how the message names it: ordinal, before-last, other, content, name, newest, result
    first_target: int = 0  # steps before it are context only (repair: the wrong call)
    excluded: frozenset[str] = frozenset()  # tools the prompt must not offer (unavailable)
    how: str = ""  # repair: what was wrong; failure: none-found, crash or unavailable

    def all_uploads(self) -> list[Upload]:
        return [u for t in self.past for u in t.uploads] + self.uploads

    def images(self) -> list[str]:
        """Every image in the session when the turn starts, oldest first (uploads and results)."""
        names = [n for t in self.past for n in [u.name for u in t.uploads] + t.results]
        return names + [u.name for u in self.uploads]

    def messages(self) -> list[str]:
        return [t.message for t in self.past] + [self.message]

    def needed(self, known: Sequence[str]) -> list[str]:
        """The tools the prompt must offer: those the steps call (a misnamed tool is no tool)."""
        return list(dict.fromkeys(st.call.tool for st in self.steps if st.call.tool in known))


# -- observations from the agent's own call path ----------------------------------------------------
class _NoModel:
    """The Agent needs an LLM; computing an observation never asks it for text."""

    name = "none"
    context_length = 10**9

    def stream(self, prompt: str, **kwargs) -> Iterator[str]:
        raise RuntimeError("dialogues.py never decodes")

    def count_tokens(self, text: str) -> int:
        return len(text) // 3


@contextmanager
def session_folder(names: Sequence[str]) -> Iterator[ImageStore]:
    """A real ImageStore holding `names` (tiny valid PNGs), oldest first: the store's own errors
    then list the same "Images in this conversation" as the app's would."""
    with tempfile.TemporaryDirectory(prefix="dialogue-") as root:
        store = ImageStore(root)
        tile = Image.new("RGB", (32, 32), "gray")
        for i, name in enumerate(names):
            path = store.root / name
            tile.save(path, format="PNG")
            stamp = 1_700_000_000_000_000_000 + i * 1_000_000_000  # the store orders by mtime: make it exact
            os.utime(path, ns=(stamp, stamp))
        yield store


def observe(call: ToolCall, store: ImageStore, tools: ToolRegistry) -> tuple[str, bool]:
    """(observation, ok) exactly as the agent writes it for `call` (Agent.observe is where a tool's
    exceptions become text). Only calls that fail before a model would run are passed here, or
    tools whose `run` is replaced (`broken_tool`)."""
    logger = logging.getLogger("gpt4tools.agent")
    quiet, logger.disabled = logger.disabled, True  # a replaced run() crashes on purpose: no traceback
    try:
        text, ok, _ = Agent(_NoModel(), tools).observe(call, store)
    finally:
        logger.disabled = quiet
    return text, ok


def broken_tool(cls: type[Tool], crash: BaseException | None = None, missing: str | None = None) -> Tool:
    """The real tool class with its model replaced: its weights `missing`, or its run raising `crash`."""

    def availability(self) -> Availability:
        return Availability(False, missing) if missing else Availability(True)

    def run(self, store, **values):
        raise crash or RuntimeError("unreachable")

    return type(cls.__name__, (cls,), {"availability": availability, "run": run})()


class WouldRun(RuntimeError):
    """Raised instead of running a model: the call got past every input check."""


def missing_weights(name: str) -> str:
    """Why a tool is unavailable, in the words of weights.status for weights not fetched yet."""
    return f"weights '{name}' are not ready (not fetched); run: python -m gpt4tools weights fetch {name}"


# -- benchmark messages stay out -------------------------------------------------------------------
def benchmark_messages(path: Path = BENCHMARK) -> list[str]:
    """The user messages of the conversation benchmark (none when the file is absent)."""
    if not path.is_file():
        return []
    return [t["user"] for conv in read_jsonl(path, allow_list=False).values() for t in conv.get("turns", [])]


class NearDuplicates:
    """Whether a message is a near-duplicate (ROUGE-L F >= threshold) of one of `messages`.
    2 * LCS / (m + n) <= 2 * shared tokens / (m + n): pairs below the threshold by that bound are skipped."""

    def __init__(self, messages: Sequence[str], threshold: float = ROUGE_THRESHOLD):
        from rouge_score import rouge_scorer, tokenize

        self.tokenize = lambda text: tokenize.tokenize(text, None)
        self.scorer = rouge_scorer.RougeScorer(["rougeL"])
        self.threshold = threshold
        self.messages = list(messages)
        self.tokens = [Counter(self.tokenize(m)) for m in self.messages]

    def __call__(self, text: str) -> bool:
        toks = Counter(self.tokenize(text))
        m = sum(toks.values())
        for other, other_toks in zip(self.messages, self.tokens):
            shared = sum((toks & other_toks).values())
            if not shared or 2 * shared / (m + sum(other_toks.values())) < self.threshold:
                continue
            if self.scorer.score(other, text)["rougeL"].fmeasure >= self.threshold:
                return True
        return False


# -- wording -----------------------------------------------------------------------------------------
def casual(text: str, rng, keep: Sequence[str] = ()) -> str:
    """How people type: sometimes a swapped letter, no final punctuation, no capital. Never inside
    `keep` (image names and arguments: what the call copies from the message must stay exact)."""
    protected = [(m.start(), m.end()) for k in keep if k for m in re.finditer(re.escape(k), text)]

    def free(start: int, end: int) -> bool:
        return all(end <= a or start >= b for a, b in protected)

    if rng.random() < 0.25:
        words = [m for m in re.finditer(r"[A-Za-z]{5,}", text) if free(m.start(), m.end())]
        if words:
            w = rng.choice(words)
            i = rng.randrange(w.start() + 1, w.end() - 2)
            text = text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if rng.random() < 0.3 and text[-1:] in ".?!" and free(len(text) - 1, len(text)):
        text = text[:-1]
    if rng.random() < 0.3 and free(0, 1):
        text = text[:1].lower() + text[1:]
    return text


def upload_name(content: ImageContent, seed: int) -> str:
    """The name an image gets (as samples.episode names it): fixed by the content and seed."""
    return f"image/{random_name(rng=rng_for('image', seed, content.id))}.png"


def distinct_label(uploads: Sequence[Upload], target: int) -> str | None:
    """An object the target's description mentions and no other upload shows or mentions, so
    "the one with the <label>" can mean only the target."""
    mine = uploads[target].content
    others = [u.content for i, u in enumerate(uploads) if i != target]
    said = mine.announcement().lower()
    for label in mine.labels():
        if label in said and all(label not in o.announcement().lower() and label not in o.labels() for o in others):
            return label
    return None


# -- the generator -----------------------------------------------------------------------------------
class DialogueBuilder:
    """Dialogues of each kind, and their records. Deterministic given (seed, split, the tool pool)."""

    def __init__(self, registry: ToolRegistry, seed: int = 0, split: str = "train",
                 pool: Sequence[ToolSpec] | None = None, maker: RecordMaker | None = None,
                 contents: Sequence[ImageContent] = (), forbidden: Sequence[str] | None = None,
                 n_contents: int = 400):
        self.registry, self.seed, self.split = registry, seed, split
        specs = sorted(registry.specs(), key=lambda s: s.name)  # the catalog's order must not change the data
        self.pool = list(pool) if pool is not None else [s for s in specs if s.seen]
        self.by_name = {s.name: s for s in specs}
        self.maker = maker or RecordMaker(specs, self.pool, seed, split)
        names = {s.name for s in self.pool}
        self.tools = registry.subset([n for n in registry if n in names])  # what an unknown name is told to try
        # The same tools with their models replaced: a wrong call must fail in the contract's checks,
        # and one that would get past them shows the sentinel instead of loading a model.
        self.checking = ToolRegistry(broken_tool(type(t), crash=WouldRun()) for t in self.tools.values())
        self.contents = list(contents) + [synthetic_content(seed, f"dialogue-{split}", n) for n in range(n_contents)]
        self.guard = NearDuplicates(benchmark_messages() if forbidden is None else forbidden)
        self.teacher = TemplateTeacher(seed)
        self.image_tools = [s for s in self.pool if s.needs_image and s.name in dialogue_phrases()["ops"]]

    # -- pieces ---------------------------------------------------------------------------------
    def _uploads(self, rng, k: int) -> list[Upload]:
        picked = rng.sample(self.contents, k)
        ups = [Upload(upload_name(c, self.seed), c) for c in picked]
        return ups if len({u.name for u in ups}) == k else ups[:1]

    def _request(self, spec: ToolSpec, content: ImageContent, image: str, ref: str, rng,
                 lead: str = "", ops: dict | None = None) -> tuple[Episode, dict] | None:
        """A request for `spec` that names the image as `ref`, and the episode that serves it on `image`.
        `ops`: the requests per tool to draw from (phrasings_dialogue.json's by default)."""
        slots = _slots(content, spec, rng)
        if slots is None:
            return None
        args = tuple(a.format(**slots) for a in phrasings()[spec.name]["args"])
        ops = dialogue_phrases()["ops"] if ops is None else ops
        text = lead + rng.choice(ops[spec.name]).format(ref=ref, **slots)
        text = casual(text, rng, keep=[image, ref, *(a for a in args if a != IMAGE)])  # names and arguments stay exact
        ins = Instruction(content.id, spec.name, text, args, TEACHER, slots.get("answer"))
        return episode(ins, content, self.by_name, self.seed, image=image), slots

    def _past(self, upload: Upload, rng, tools: Sequence[ToolSpec] | None = None) -> PastTurn | None:
        """A finished exchange about `upload`: a template-teacher request or one of ours, and the
        answer its episode ends with (naming what its tools made)."""
        tools = list(tools or self.image_tools)
        for _ in range(10):
            spec = rng.choice(tools)
            if rng.random() < 0.5:
                ins = self.teacher.instruction(upload.content, spec, variant=rng.randrange(10**6))
                ep = episode(ins, upload.content, self.by_name, self.seed, image=upload.name) if ins else None
            else:
                made = self._request(spec, upload.content, upload.name, rng.choice(dialogue_phrases()["refs_new"]), rng)
                ep = made[0] if made else None
            if ep is not None and ep.final is not None:
                return PastTurn([upload], ep.user, ep.final, [st.image for st in ep.steps if st.image], spec.name)
        return None

    def _pasts(self, uploads: Sequence[Upload], rng) -> list[PastTurn] | None:
        turns = [self._past(u, rng) for u in uploads]
        return None if any(t is None for t in turns) else turns

    def _supported(self, content: ImageContent, tools: Sequence[ToolSpec], rng) -> list[ToolSpec]:
        return [s for s in tools if _slots(content, s, rng) is not None]

    def _ref(self, target: int, ups: Sequence[Upload], rng, talked_about_last: bool) -> tuple[str, str]:
        """(phrase, how) naming upload `target` among `ups` (the last one only by its position,
        "the second one" of two or "the last pic", its content or its name)."""
        p = dialogue_phrases()
        m = len(ups)
        options = [("ordinal", rng.choice(p["refs_ordinal"][target]))]
        if target == m - 1:
            options.append(("last", rng.choice(p["refs_last"])))
        if m == 3 and target == 1:
            options.append(("ordinal", rng.choice(p["refs_middle"])))
        if target == m - 2 and talked_about_last:
            options.append(("before-last", rng.choice(p["refs_before_last"])))
        if m == 2 and talked_about_last:
            options.append(("other", rng.choice(p["refs_other"])))
        label = distinct_label(ups, target)
        if label:
            options += [("content", rng.choice(p["refs_content"]).format(label=label))] * 2
        options.append(("name", ups[target].name))
        how, phrase = rng.choice(options)
        return phrase, how

    # -- kinds ------------------------------------------------------------------------------------
    def multi_image(self, index: int, rng) -> Dialogue | None:
        ups = self._uploads(rng, rng.choice((2, 2, 3)))
        if len(ups) < 2:
            return None
        shape = rng.choice(("earlier", "earlier", "earlier", "newest-again", "newest-op", "last-named"))
        if shape in ("earlier", "last-named"):
            return self._earlier_upload(index, ups, rng, last=shape == "last-named")
        past = self._pasts(ups[:-1], rng)
        newest = ups[-1]
        if past is None:
            return None
        if shape == "newest-again":  # "what about this one": the last request's tool, on the newest upload
            spec = self.by_name[past[-1].tool]
            if len(spec.args) > 1 or spec.follows or _slots(newest.content, spec, rng) is None:
                return None
            text = casual(rng.choice(dialogue_phrases()["again_newest"]), rng)
            ins = Instruction(newest.content.id, spec.name, text, (IMAGE,), TEACHER)
            ep = episode(ins, newest.content, self.by_name, self.seed, image=newest.name)
        else:  # "describe this": an operation on the newest upload, named only by the agent's suffix
            tools = self._supported(newest.content, self.image_tools, rng)
            made = self._request(rng.choice(tools), newest.content, newest.name,
                                 rng.choice(dialogue_phrases()["refs_new"]), rng) if tools else None
            if made is None:
                return None
            ep = made[0]
        return Dialogue("multi-image", index, past, [newest], ep.user, ep.steps, ep.final, newest.content.id,
                        meant=newest.name, ref="newest")

    def _earlier_upload(self, index: int, ups: list[Upload], rng, last: bool = False) -> Dialogue | None:
        """Some photos uploaded in earlier turns (each with a request), the rest with this message,
        which means one that is not the last; or (`last`) means the last one but names it ("describe
        the 2nd one" of two sent together), so that a position word is read, not guessed."""
        m = len(ups)
        before = rng.randint(0, m - 1 if last else m)
        past = self._pasts(ups[:before], rng)
        if past is None:
            return None
        target = m - 1 if last else rng.randrange(m - 1)
        ref, how = self._ref(target, ups, rng, talked_about_last=before == m)
        tools = self._supported(ups[target].content, self.image_tools, rng)
        if not tools:
            return None
        lead = rng.choice(dialogue_phrases()["lead_several"]).format(n=m - before) if m - before >= 2 else ""
        made = self._request(rng.choice(tools), ups[target].content, ups[target].name, ref, rng, lead)
        if made is None:
            return None
        ep = made[0]
        return Dialogue("multi-image", index, past, ups[before:], ep.user, ep.steps, ep.final, ups[target].content.id,
                        meant=ups[target].name, ref=how)

    def follow_up(self, index: int, rng) -> Dialogue | None:
        """A photo-like result made in the last turn; the request ("segment it") means that result."""
        ups = self._uploads(rng, rng.choice((1, 1, 2)))
        past = self._pasts(ups[:-1], rng)
        upload = ups[-1]
        firsts = [s for s in self.pool if s.name in PHOTO_RESULTS]
        if past is None or not firsts:
            return None
        first = rng.choice(firsts)
        if first.needs_image:
            made = self._request(first, upload.content, upload.name, rng.choice(dialogue_phrases()["refs_new"]), rng)
        else:  # a generated picture: no upload needed
            ins = self.teacher.instruction(upload.content, first, variant=rng.randrange(10**6))
            made = (episode(ins, upload.content, self.by_name, self.seed), {}) if ins else None
        if made is None or made[0].final is None or not made[0].steps[-1].image:
            return None
        ep, slots = made
        result = ep.steps[-1].image
        past.append(PastTurn([upload] if first.needs_image else [], ep.user, ep.final,
                             [st.image for st in ep.steps if st.image], first.name))
        after = result_content(upload.content, first.name, slots)
        tools = [s for s in self._supported(after, self.image_tools, rng) if not s.follows]
        p = dialogue_phrases()
        lead, ref = rng.choice(p["lead_follow"]), rng.choice(p["refs_result"])
        made = self._request(rng.choice(tools), after, result, ref, rng, lead) if tools else None
        if made is None:
            return None
        ep = made[0]
        steps, final = ep.steps, ep.final
        if ep.instruction.tool == DESCRIBE:  # what the captioner says about an edited photo is not known
            steps, final = [replace(steps[0], observation=None)], None
        return Dialogue("follow-up", index, past, [], ep.user, steps, final, upload.content.id, meant=result,
                        ref="result")

    def single(self, index: int, rng) -> Dialogue | None:
        """One upload, with the message or before it: the base of repair and failure dialogues."""
        (upload,) = self._uploads(rng, 1)
        tools = [s for s in self._supported(upload.content, self.image_tools, rng) if not s.follows]
        with_message = rng.random() < 0.6
        ref = rng.choice(dialogue_phrases()["refs_new"]) if with_message or rng.random() < 0.5 else upload.name
        made = self._request(rng.choice(tools), upload.content, upload.name, ref, rng) if tools else None
        if made is None:
            return None
        return self._sent_alone("single", index, upload, made[0], with_message, rng)

    def original(self, index: int, rng) -> Dialogue | None:
        """Tools already made results from an upload; the request goes back to the upload itself
        ("now the pose of the original"; of two uploads "the first photo" or its content): the
        newest image is a result or the other upload, never the one meant."""
        ups = self._uploads(rng, rng.choice((1, 1, 2)))
        target = rng.randrange(len(ups))
        past: list[PastTurn] = []
        for i, upload in enumerate(ups):
            for k in range(rng.choice((1, 1, 2)) if i == target else 1):  # each leaving a result
                turn = self._past(upload, rng)
                if turn is None or (i == target and not turn.results):
                    return None
                past.append(replace(turn, uploads=[upload] if k == 0 else []))
        p = dialogue_phrases()
        if len(ups) == 1:  # "my photo" is the upload only when there is one
            options = [rng.choice(p["refs_original"])] * 2 + [rng.choice(p["refs_sent"])]
        else:
            options = [rng.choice(p["refs_ordinal"][target])]
            label = distinct_label(ups, target)
            if label:
                options.append(rng.choice(p["refs_content"]).format(label=label))
        ref = rng.choice(options)
        upload = ups[target]
        done = {t.tool for t in past[-2:]}
        tools = [s for s in self._supported(upload.content, self.image_tools, rng) if s.name not in done]
        made = self._request(rng.choice(tools), upload.content, upload.name, ref, rng,
                             rng.choice(p["lead_follow"])) if tools else None
        if made is None:
            return None
        ep = made[0]
        return Dialogue("original", index, past, [], ep.user, ep.steps, ep.final, upload.content.id,
                        meant=upload.name, ref="original")

    def loose(self, index: int, rng) -> Dialogue | None:
        """A request in everyday wording (phrasings_loose.json) that does not name the image: the
        photo sent with it, or the only one sent just before."""
        ops = loose_phrases()["ops"]
        (upload,) = self._uploads(rng, 1)
        tools = [s for s in self._supported(upload.content, self.pool, rng) if s.name in ops and s.needs_image]
        made = self._request(rng.choice(tools), upload.content, upload.name, "", rng, ops=ops) if tools else None
        if made is None:
            return None
        return self._sent_alone("loose", index, upload, made[0], rng.random() < 0.7, rng)

    def _sent_alone(self, kind: str, index: int, upload: Upload, ep: Episode, with_message: bool,
                    rng) -> Dialogue:
        """The dialogue of a request about one upload, sent with the message or, with a greeting
        that asks for nothing yet, just before it."""
        past = [] if with_message else [PastTurn([upload], *self._greeting(rng))]
        return Dialogue(kind, index, past, [upload] if with_message else [], ep.user, ep.steps, ep.final,
                        upload.content.id, meant=upload.name, ref="newest" if with_message else "only")

    @staticmethod
    def _greeting(rng) -> tuple[str, str]:
        """An upload sent before the request, with a message that asks for nothing yet."""
        return rng.choice([("got a photo for you", "Thanks! What would you like me to do with it?"),
                           ("here's one from last week", "Received. What should I do with it?"),
                           ("uploading a pic first", "Got it. Tell me what you need.")])

    def repair(self, index: int, rng) -> Dialogue | None:
        """A base dialogue whose first call goes wrong first: the agent's error, then the right call."""
        base = rng.choice((self.multi_image, self.follow_up, self.single, self.single))(index, rng)
        if base is None or not base.steps:
            return None
        right = base.steps[0].call
        spec = self.by_name[right.tool]
        how = rng.choice(["missing-image", "missing-image", "arg-count", "unknown-tool"] if spec.needs_image
                         else ["unknown-tool"])
        wrong = wrong_call(right, spec, how, base.images(), self.tools, rng)
        if wrong is None:
            return None
        with session_folder(base.images()) as store:
            text, ok = observe(wrong, store, self.checking)
        if ok or WouldRun.__name__ in text:
            return None
        return replace(base, kind="repair", steps=[Step(wrong, text), *base.steps], first_target=1, how=how)

    def failure(self, index: int, rng) -> Dialogue | None:
        """A right call that fails (a crash, missing weights) or finds nothing, then an honest answer."""
        base = self.single(index, rng)
        if base is None:
            return None
        how = rng.choice(("none-found", "crash", "unavailable"))
        if how == "none-found":
            return self._none_found(base, rng)
        spec = self.by_name[base.steps[0].call.tool]
        cls = type(self.registry[spec.name])
        if how == "unavailable" and not cls.weights:
            how = "crash"
        if how == "crash":
            kind, message = rng.choice(dialogue_phrases()["crashes"])
            tool = broken_tool(cls, crash=_exception(kind, message))
        else:
            tool = broken_tool(cls, missing=missing_weights(rng.choice(cls.weights)))
        call = base.steps[0].call
        with session_folder(base.images()) as store:
            text, ok = observe(call, store, ToolRegistry([tool]))
        if ok:
            return None
        detail = text.removeprefix("Error:").strip().rstrip(".")
        result = phrasings()[spec.name].get("result", "the result")
        slots = {"object": _arg(call, spec, 1), "new_object": _arg(call, spec, -1), "prompt": _arg(call, spec, -1)}
        final = rng.choice(dialogue_phrases()["answers_error"]).format(result=result.format(**slots), detail=detail)
        if NAME_RE.search(final):
            return None
        return replace(base, kind="failure", steps=[Step(call, text)], final=final, how=how)

    def _none_found(self, base: Dialogue, rng) -> Dialogue | None:
        """The user asks for an object the photo does not hold: the tool's "No <object> found"."""
        from tools.objects import OWLVIT, Grounding

        upload = base.all_uploads()[-1]
        said = upload.content.announcement().lower()
        absent = [c for c in coco_categories() if c not in upload.content.labels() and c not in said]
        finders = [s for s in self.pool if s.name in FINDS_OBJECTS]
        if not absent or not finders:
            return None
        spec = rng.choice(finders)
        thing = rng.choice(absent)
        ref = rng.choice(dialogue_phrases()["refs_new"]) if base.uploads else upload.name
        text = rng.choice(dialogue_phrases()["ops"][spec.name]).format(ref=ref, object=thing)
        text = casual(text, rng, keep=[ref, thing])
        call = ToolCall(spec.name, spec.join_input([upload.name, thing]))
        observation = Grounding(thing, [], OWLVIT, status="none").summary()  # the tool's own words
        effect = dialogue_phrases()["none_effect"][spec.name]
        final = rng.choice(dialogue_phrases()["answers_none"]).format(object=thing, effect=effect)
        return replace(base, kind="failure", message=text, steps=[Step(call, observation)], final=final,
                       how="none-found")

    def unavailable(self, index: int, rng) -> Dialogue | None:
        """A request that no offered tool can serve: an answer that says so, without a call."""
        cap = rng.choice(dialogue_phrases()["capabilities"])
        (upload,) = self._uploads(rng, 1)
        labels = upload.content.labels()
        if cap.get("object") and not labels:
            return None
        edit = rng.choice(phrasings()["_edits"])
        slots = {"object": rng.choice(labels) if labels else "", "edit": edit, "edit_cap": edit[:1].upper() + edit[1:],
                 "new_object": rng.choice(phrasings()["_generic_replacements"]),
                 "prompt": rng.choice(phrasings()["_prompts"]), "thing": rng.choice(dialogue_phrases()["things"])}
        text = casual(rng.choice(cap["messages"]).format(**slots), rng, keep=[slots["object"], slots["new_object"]])
        excluded = set(cap.get("exclude", []))
        if cap.get("exclude_prefix"):
            excluded |= {s.name for s in self.pool if s.name.startswith(cap["exclude_prefix"])}
        final = rng.choice(dialogue_phrases()["answers_unavailable"]).format(cap=cap["cap"])
        uploads, past = [], []
        if cap["upload"]:
            if rng.random() < 0.6:
                uploads = [upload]
            else:  # an earlier exchange, with a tool that stays offered: one used then exists now
                turn = self._past(upload, rng, [s for s in self.image_tools if s.name not in excluded])
                if turn is None:
                    return None
                past = [turn]
        return Dialogue("unavailable", index, past, uploads, text, [], final, f"dialogue:unavailable-{index}",
                        meant=None, ref="", excluded=frozenset(excluded), how=cap["cap"])

    def served(self, index: int, rng) -> Dialogue | None:
        """An "unavailable" request with the tool that serves it offered: the call. Trained on the
        declines alone, the model declined 4 of 5 seen text-to-image requests of val5 (session 33)."""
        cap = rng.choice([c for c in dialogue_phrases()["capabilities"] if c["cap"] in SERVED])
        spec = self.by_name.get(SERVED[cap["cap"]])
        if spec is None or spec not in self.pool:
            return None
        (upload,) = self._uploads(rng, 1)
        labels = upload.content.labels()
        slots = {"object": rng.choice(labels) if labels else "thing", "prompt": rng.choice(phrasings()["_prompts"]),
                 "thing": rng.choice(dialogue_phrases()["things"])}
        text = casual(rng.choice(cap["messages"]).format(**slots), rng, keep=[slots["prompt"]])
        args = (IMAGE,) if spec.needs_image else (slots["prompt"],)  # a picture's prompt: the request's phrase
        ins = Instruction(upload.content.id, spec.name, text, args, TEACHER, None)
        ep = episode(ins, upload.content, self.by_name, self.seed, image=upload.name)
        if spec.needs_image:
            return self._sent_alone("served", index, upload, ep, rng.random() < 0.7, rng)
        return Dialogue("served", index, [], [], ep.user, ep.steps, ep.final, f"dialogue:served-{index}")

    # -- records ----------------------------------------------------------------------------------
    def dialogue(self, kind: str, index: int) -> Dialogue | None:
        rng = rng_for("dialogue", self.seed, self.split, kind, index)
        make = {"multi-image": self.multi_image, "follow-up": self.follow_up, "repair": self.repair,
                "failure": self.failure, "unavailable": self.unavailable, "original": self.original,
                "loose": self.loose, "served": self.served}[kind]
        return make(index, rng)

    def offer(self, d: Dialogue, rng) -> list[ToolSpec]:
        """The tools the prompt lists, as RecordMaker offers them; never an excluded one."""
        if not d.excluded:
            return self.maker._offer(d.needed(self.by_name), rng, d.message)
        pool = [s for s in self.pool if s.name not in d.excluded]
        maker = RecordMaker(list(self.by_name.values()), pool, self.seed, self.split)
        return maker._offer(d.needed(self.by_name), rng, d.message)

    def records(self, d: Dialogue) -> list[dict]:
        """One record per assistant turn from `d.first_target` on, rendered as the agent renders them."""
        rng = rng_for("dialogue-records", self.seed, self.split, d.kind, d.index)
        template = random_template(rng)
        history = conversation(template, d)
        user_input = template.new_input(d.message, [u.name for u in d.uploads])
        offered = self.offer(d, rng)
        descriptions = RecordMaker._descriptions(rng, offered)
        targets = [st.call for st in d.steps] + ([FinalAnswer(d.final)] if d.final else [])
        episode_key = record_id(self.seed, d.source, None, d.kind, "episode", self.split, d.index)
        out = []
        for t in range(d.first_target, len(targets)):
            target = targets[t]
            scratch = react.render_trajectory([(st.call, st.observation or "") for st in d.steps[:t]])
            is_call = isinstance(target, ToolCall)
            tool = target.tool if is_call else None
            out.append({
                "instruction": template.render(offered, history.render(), user_input, scratch, descriptions),
                "input": "",
                "output": react.render_call(target) if is_call else react.render_final(target, template.ai_prefix),
                "id": record_id(self.seed, d.source, tool, d.kind, self.split, d.index, t),
                "tool": tool, "kind": d.kind, "teacher": TEACHER, "source": d.source, "template": template.name,
                "tools_offered": [s.name for s in offered], "episode": episode_key, "turn": t,
            })
        return out

    def dialogues(self, total_records: int, kinds: Sequence[str] = KINDS,
                  dropped: Counter | None = None) -> Iterator[tuple[Dialogue, list[dict]]]:
        """Dialogues of `kinds` in turn, with their records, until `total_records` are made."""
        dropped = Counter() if dropped is None else dropped
        made, n = 0, 0
        while made < total_records and n < 50 * total_records + 50:
            kind, index = kinds[n % len(kinds)], n // len(kinds)
            n += 1
            d = self.dialogue(kind, index)
            if d is None:
                dropped[f"dialogues: {kind}: no usable dialogue for this draw"] += 1
                continue
            if any(self.guard(m) for m in d.messages()):
                dropped["dialogues: near-duplicate of a conversation-benchmark message"] += 1
                continue
            records = self.records(d)
            made += len(records)
            yield d, records

    def build(self, total_records: int, kinds: Sequence[str] = KINDS, dropped: Counter | None = None) -> list[dict]:
        return [r for _, recs in self.dialogues(total_records, kinds, dropped) for r in recs]


def conversation(template, d: Dialogue) -> Conversation:
    """The history as the app builds it: each upload announced when it arrives (Session.add_image),
    each exchange stored with the message as the agent saw it (Agent.run: new_input)."""
    history = Conversation(template)
    for turn in d.past:
        for u in turn.uploads:
            history.add_image(u.name, u.content.announcement())
        history.add_exchange(template.new_input(turn.message, [u.name for u in turn.uploads]), turn.answer)
    for u in d.uploads:
        history.add_image(u.name, u.content.announcement())
    return history


def result_content(content: ImageContent, tool: str, slots: dict) -> ImageContent:
    """What a photo-like result shows, as far as the content tells: the objects left after a
    removal or replacement (the new object's boxes are unknown), none for a generated picture."""
    gone = slots.get("object") if tool in PHOTO_RESULTS[:2] else None
    if tool == "Generate Image From User Input Text":
        return ImageContent(f"{content.id}~generated", 512, 512, [slots.get("prompt") or "a generated picture"])
    objects = [(lab, box) for lab, box in content.objects if lab != gone]
    faces = [] if gone == "person" else content.faces
    return replace(content, id=f"{content.id}~{tool}", objects=objects, faces=faces, ocr=content.ocr)


def wrong_call(right: ToolCall, spec: ToolSpec, how: str, images: Sequence[str], tools: ToolRegistry,
               rng) -> ToolCall | None:
    """A plausible mistake on the way to `right`: an image name that does not exist, an argument
    too many or too few, or a tool name the registry does not know."""
    parts = [p.strip() for p in right.tool_input.split(",", len(spec.args) - 1)]
    if how == "missing-image":
        name = misspelled_image(parts[0], rng)
        if name in images:
            return None
        return ToolCall(right.tool, spec.join_input([name, *parts[1:]]))
    if how == "arg-count":
        if len(spec.args) == 1:  # an image-only tool given a text argument too
            extra = rng.choice(["all of it", "please", "the whole image", "high quality"])
            return ToolCall(right.tool, spec.join_input([parts[0], extra]))
        return ToolCall(right.tool, spec.join_input(parts[: rng.randrange(1, len(spec.args))]))
    for _ in range(5):
        name = misnamed_tool(spec.name, rng)
        try:
            tools.resolve(name)
        except UnknownToolError:
            return ToolCall(name, right.tool_input)
    return None


def misspelled_image(name: str, rng) -> str:
    """An image name that looks like `name` but is not it: a letter changed, the folder or the
    extension wrong, or a name made up."""
    stem = name.removeprefix("image/").removesuffix(".png")
    how = rng.choice(("letter", "letter", "folder", "extension", "made-up"))
    if how == "letter":
        i = rng.randrange(min(len(stem), 8))
        letter = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz" if c != stem[i]])
        return f"image/{stem[:i]}{letter}{stem[i + 1:]}.png"
    if how == "folder":
        return f"{stem}.png"
    if how == "extension":
        return f"image/{stem}.jpg"
    return f"image/{random_name(rng=rng)}.png"


def misnamed_tool(name: str, rng) -> str:
    """A tool name a model might write: words dropped, or a made-up name for the same job."""
    words = name.split()
    how = rng.choice(("drop-tail", "drop-head", "made-up"))
    if how == "drop-tail" and len(words) > 2:
        return " ".join(words[: rng.randrange(2, len(words))])
    if how == "drop-head" and len(words) > 2:
        return " ".join(words[1:])
    return rng.choice(["Image Tool", "Photo Editor", "Vision Tool", "Analyze Image", "Image Processing"])


def _exception(kind: str, message: str) -> BaseException:
    classes = {"RuntimeError": RuntimeError, "MemoryError": MemoryError, "OSError": OSError,
               "ValueError": ValueError, "TimeoutError": TimeoutError}
    return classes[kind](message)


def _arg(call: ToolCall, spec: ToolSpec, i: int) -> str:
    parts = [p.strip() for p in call.tool_input.split(",", len(spec.args) - 1)]
    return parts[i] if -len(parts) <= i < len(parts) else ""


# -- command line ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpt4tools.data.dialogues",
                                 description="Write conversation-shaped training records to inspect.")
    ap.add_argument("--records", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train")
    ap.add_argument("--kinds", nargs="*", choices=ALL_KINDS, default=list(KINDS))
    ap.add_argument("--out", type=Path, default=Path("data/dialogues_sample.jsonl"))
    args = ap.parse_args(argv)
    from gpt4tools.registry import build_registry

    dropped: Counter = Counter()
    records = DialogueBuilder(build_registry(), args.seed, args.split).build(args.records, args.kinds, dropped)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_jsonl(records), encoding="utf-8")
    print(f"{len(records)} records -> {args.out}; kinds {json.dumps(dict(Counter(r['kind'] for r in records)))}")
    for reason, n in sorted(dropped.items()):
        print(f"  dropped {n}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
