"""From instructions to training records (REFERENCE.md §4: Y_S+, Y_S-, Y_Sc).

An instruction becomes an *episode*: the image announced in "Previous conversation"
under a random `image/<8 letters>.png` name, the tool steps (a tool that `follows`
another first runs that one, e.g. Edge Detection before Canny generation), the
observations our tools really write, and a final answer that names the produced file.
Each assistant turn of an episode is one record: the first is a positive sample, later
turns (earlier steps and observations in the scratchpad) are context samples, and so are
episodes that continue an earlier exchange about the same image. Every record names its
episode (`episode`, shared by its turns) and its 0-based `turn` (gpt4tools/records.py), which
training uses to encode an episode once. Negatives put a real no-tool conversation turn in the
same layout (one-turn episodes: `episode` is the record's id).

All text goes through `react.render_*` and `PromptTemplate.render`; nothing here formats
the ReAct grammar by hand.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Sequence

from gpt4tools import react
from gpt4tools.data.content import ImageContent
from gpt4tools.data.instructions import IMAGE, Instruction, phrasings
from gpt4tools.data.negatives import Exchange
from gpt4tools.data.synthetic import counted, join, rng_for
from gpt4tools.history import Conversation
from gpt4tools.images import chained_name, random_name
from gpt4tools.prompt import random_template
from gpt4tools.react import FinalAnswer, ToolCall
from gpt4tools.tool import ToolSpec, format_boxes, result_saved
from tools.describe import PhotoDescription, VisualQuestionAnswering
from tools.faces import NO_FACE, DetectFace, RecognizeFace
from tools.objects import DetectGivenObject, ObjectDetection
from tools.ocr import NO_TEXT, TextDetection


def record_id(seed: int, source: str, tool: str | None, kind: str, *extra: object) -> str:
    """Deterministic id from (seed, source, tool, kind) plus what tells apart turns of one episode."""
    key = "|".join(map(str, (seed, source, tool, kind, *extra)))
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def episode_id(seed: int, source: str, tool: str, split: str, text: str, variant: str) -> str:
    """The id the turns of one episode share: the instruction's (tool, text) about one image,
    with or without an earlier exchange (`variant` "merged" / "single")."""
    return record_id(seed, source, tool, "episode", split, text, variant)


@dataclass
class Step:
    call: ToolCall
    observation: str | None  # None: what the tool would say cannot be known from the content
    image: str | None = None  # the file the step produced


@dataclass
class Episode:
    instruction: Instruction
    content: ImageContent
    image: str  # the announced image's name
    user: str  # the user's message, image renamed
    steps: list[Step] = field(default_factory=list)
    final: str | None = None  # the final answer; None when an observation is unknown


def _observe(spec: ToolSpec, ins: Instruction, content: ImageContent, source: str | None,
             rng: random.Random) -> tuple[str | None, str | None]:
    """(observation, produced image) as our tool would report them, from the content alone."""
    if spec.output == "image":
        extra = ""
        if spec.name == DetectFace.spec.name:
            if not content.faces:
                return NO_FACE, None
            extra = format_boxes([("face", b) for b in content.faces])
        elif spec.name == ObjectDetection.spec.name:
            if not content.objects:
                return None, None
            extra = format_boxes(content.objects)
        elif spec.name == DetectGivenObject.spec.name:
            boxes = [(lab, b) for lab, b in content.objects if lab == ins.args[1]]
            if not boxes:  # the real tool's answer for another object is not knowable here
                return None, None
            extra = format_boxes(boxes)
        elif spec.name == RecognizeFace.spec.name:
            return None, None  # names come from the user's gallery
        name = chained_name(source, spec.slug, rng)
        return result_saved(name, extra), name
    if spec.name == PhotoDescription.spec.name:
        return content.announcement(), None
    if spec.name == VisualQuestionAnswering.spec.name:
        return ins.answer, None
    if spec.name == TextDetection.spec.name:
        return (format_boxes(content.ocr) if content.ocr else NO_TEXT), None
    return None, None


def _final(spec: ToolSpec, ins: Instruction, steps: list[Step], content: ImageContent, rng: random.Random) -> str:
    """The answer after the last step: it relays what was observed and names the file made."""
    answers = phrasings()["_answers"]
    last = steps[-1]
    entry = phrasings().get(spec.name, {})
    slots = {"object": ins.args[1] if len(ins.args) > 1 else "", "new_object": ins.args[-1], "prompt": ins.args[-1]}
    if last.image:
        result = entry.get("result", "the result").format(**slots)
        text = rng.choice(answers["image"]).format(name=last.image, result=result,
                                                   result_cap=result[0].upper() + result[1:])
        if spec.name == ObjectDetection.spec.name:
            labels = list(dict.fromkeys(lab for lab, _ in content.objects))
            text += " I found " + join([counted(lab, content.count(lab)) for lab in labels]) + "."
        elif spec.name == DetectGivenObject.spec.name:
            text += f" I found {counted(ins.args[1], content.count(ins.args[1]))}."
        elif spec.name == DetectFace.spec.name:
            text += f" I found {counted('face', len(content.faces))}."
        return text
    obs = last.observation or ""
    if spec.name == TextDetection.spec.name:
        return ("The image contains the text " + ", ".join(f'"{t}"' for t, _ in content.ocr) + ".") if content.ocr \
            else "I could not find any text in the image."
    if spec.output == "image":  # an image tool that found nothing ("No face found")
        return rng.choice(answers["none"]).format(observation=obs, observation_lc=obs[0].lower() + obs[1:] + ".")
    return rng.choice(answers["text"]).format(observation=obs)


def episode(ins: Instruction, content: ImageContent, specs: dict[str, ToolSpec], seed: int,
            image: str | None = None) -> Episode:
    """The whole assistant turn for an instruction; the image name depends only on the content,
    unless `image` names it (a conversation's earlier upload or tool result: dialogues.py)."""
    image = image or f"image/{random_name(rng=rng_for('image', seed, content.id))}.png"
    rng = rng_for("episode", seed, content.id, ins.tool, ins.text)
    spec = specs[ins.tool]
    chain = [specs[spec.follows], spec] if spec.follows and spec.follows in specs else [spec]
    ep = Episode(ins, content, image, ins.text.replace(IMAGE, image))
    current: str | None = image
    for s in chain:
        if s is spec:
            values = [current if (a.kind == "image") else v for a, v in zip(s.args, ins.args)]
        else:
            values = [current]
        call = ToolCall(s.name, s.join_input([v.replace(IMAGE, image) for v in values]))
        obs, made = _observe(s, ins, content, current if s.needs_image else None, rng)
        ep.steps.append(Step(call, obs, made))
        if obs is None:
            return ep
        current = made or current
    ep.final = _final(spec, ins, ep.steps, content, rng)
    return ep


class RecordMaker:
    """Renders episodes and negatives into records: offered tools, template, history."""

    def __init__(self, specs: Sequence[ToolSpec], pool: Sequence[ToolSpec], seed: int, split: str,
                 tools_range: tuple[int, int] = (2, 5), many_tools_share: float = 0.0,
                 retrieved_share: float = 0.0, retriever=None):
        self.specs = {s.name: s for s in specs}
        self.pool = list(pool)  # where distractor tools come from
        self.seed, self.split, self.tools_range = seed, split, tools_range
        self.many_tools_share = many_tools_share
        self.retrieved_share = retrieved_share
        if retrieved_share and retriever is None:
            from gpt4tools.retrieval import ToolRetriever

            retriever = ToolRetriever(self.pool)  # over the pool: unseen tools stay out of train
        self.retriever = retriever

    def _offer(self, needed: list[str], rng: random.Random, message: str = "") -> list[ToolSpec]:
        """2-5 tools in random order, always including the needed ones; for a share of the
        records (`many_tools_share`) from 6 up to the whole pool, as the app can offer every
        available tool; for another (`retrieved_share`) the ones the agent would offer."""
        if self.retrieved_share and message.strip() and rng.random() < self.retrieved_share:
            return self._offer_retrieved(needed, rng, message)
        lo, hi = self.tools_range
        if self.many_tools_share and rng.random() < self.many_tools_share:
            lo, hi = hi + 1, len(self.pool)
        k = rng.randint(max(lo, len(needed)), max(hi, len(needed)))
        others = [s for s in self.pool if s.name not in needed]
        chosen = [self.specs[n] for n in needed] + rng.sample(others, min(len(others), k - len(needed)))
        rng.shuffle(chosen)
        return chosen

    def _offer_retrieved(self, needed: list[str], rng: random.Random, message: str) -> list[ToolSpec]:
        """As the agent offers tools (retrieval.py): the 2-5 closest to the message, best first,
        chains included. These distractors resemble the right tool (edges vs HED vs lines),
        which random ones rarely do. A needed tool the retriever missed replaces the last one."""
        offered = self.retriever.select(message.strip(), rng.randint(*self.tools_range))
        for name in needed:
            if self.specs[name] in offered:
                continue
            spare = [i for i, s in enumerate(offered) if s.name not in needed]
            if spare:
                offered[spare[-1]] = self.specs[name]
            else:
                offered.append(self.specs[name])
        return offered

    @staticmethod
    def _descriptions(rng: random.Random, offered: list[ToolSpec]) -> dict[str, str]:
        """One wording per offered tool, drawn once per episode: in the app the tool list does
        not change between the steps of a turn, and so each turn's prompt is the previous
        turn's prompt plus its step (which lets training encode an episode once: train.py)."""
        return {s.name: rng.choice([s.description, *s.paraphrases]) for s in offered}

    def episode_records(self, ep: Episode, earlier: Sequence[Episode] = ()) -> list[dict]:
        """One record per assistant turn of `ep`; `earlier` episodes (same image) become history."""
        ins = ep.instruction
        variant = "merged" if earlier else "single"
        rng = rng_for("records", self.seed, self.split, ep.content.id, ins.tool, ins.text, variant)
        template = random_template(rng)
        history = Conversation(template)
        if ins.args and (self.specs[ins.tool].needs_image or earlier or rng.random() < 0.6):
            history.add_image(ep.image, ep.content.announcement())
        for e in earlier:
            history.add_exchange(e.user, e.final or "")
        offered = self._offer(list(dict.fromkeys(st.call.tool for st in ep.steps)), rng, ep.user)
        names = [s.name for s in offered]
        descriptions = self._descriptions(rng, offered)
        turns = [st.call for st in ep.steps] + ([FinalAnswer(ep.final)] if ep.final else [])
        eid = episode_id(self.seed, ep.content.id, ins.tool, self.split, ins.text, variant)
        records = []
        for t, target in enumerate(turns):
            scratch = react.render_trajectory([(st.call, st.observation or "") for st in ep.steps[:t]])
            is_call = isinstance(target, ToolCall)
            output = react.render_call(target) if is_call else react.render_final(target, template.ai_prefix)
            kind = "positive" if t == 0 and not earlier else "context"
            tool = target.tool if is_call else None
            records.append({
                "instruction": template.render(offered, history.render(), ep.user, scratch, descriptions),
                "input": "", "output": output,
                "id": record_id(self.seed, ep.content.id, tool, kind, self.split, ins.tool, ins.text, variant, t),
                "tool": tool, "kind": kind, "teacher": ins.teacher, "source": ep.content.id,
                "template": template.name, "tools_offered": names, "episode": eid, "turn": t,
            })
        return records

    def negative_record(self, ex: Exchange, image_from: ImageContent | None) -> dict:
        """A no-tool turn in the same layout, sometimes with an image in the history."""
        rng = rng_for("negative", self.seed, self.split, ex.source)
        template = random_template(rng)
        history = Conversation(template)
        if image_from is not None and rng.random() < 0.5:
            history.add_image(f"image/{random_name(rng=rng)}.png", image_from.announcement())
        offered = self._offer([], rng, ex.prompt)
        rid = record_id(self.seed, ex.source, None, "negative", self.split)
        return {
            "instruction": template.render(offered, history.render(), ex.prompt.strip(), "",
                                           self._descriptions(rng, offered)), "input": "",
            "output": react.render_final(FinalAnswer(ex.reply), template.ai_prefix),
            "id": rid, "tool": None, "kind": "negative", "teacher": ex.source.split(":", 1)[0], "source": ex.source,
            "template": template.name, "tools_offered": [s.name for s in offered], "episode": rid, "turn": 0,
        }
