"""Instructions (what a user asks, which tool solves it, with which arguments) and the
template teacher that writes them offline from image content.

As in the paper, the teacher sees the image as `example.jpg`; the sample builder renames
it to a random `image/<8 letters>.png` afterwards. The template teacher fills per-tool
phrasings (phrasings.json, keyed by exact tool name) with what the content really holds:
objects for object arguments, captions for generation prompts, and questions whose
answers follow from the content (counts, presence, position, text).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from gpt4tools.data.content import Box, ImageContent
from gpt4tools.data.synthetic import article, coco_categories, counted, plural, rng_for
from gpt4tools.tool import ToolSpec
from tools.describe import VisualQuestionAnswering

IMAGE = "example.jpg"  # the image's name in teacher prompts and replies (the paper's)
_PHRASINGS = Path(__file__).resolve().parent / "phrasings.json"


@dataclass(frozen=True)
class Instruction:
    content_id: str
    tool: str  # exact tool name
    text: str  # the user's words; IMAGE stands for the image
    args: tuple[str, ...]  # the Action Input parts; IMAGE stands for the image
    teacher: str  # "template" or the LLM's name
    answer: str | None = None  # a text answer grounded in the content (questions), if known

    def to_json(self) -> dict:
        return {"content_id": self.content_id, "tool": self.tool, "text": self.text, "args": list(self.args),
                "teacher": self.teacher, "answer": self.answer}

    @classmethod
    def from_json(cls, d: dict) -> "Instruction":
        return cls(d["content_id"], d["tool"], d["text"], tuple(d["args"]), d["teacher"], d.get("answer"))


@lru_cache(maxsize=1)
def phrasings() -> dict:
    return json.loads(_PHRASINGS.read_text(encoding="utf-8"))


def position(box: Box, width: int, height: int) -> str:
    """Where a box's centre lies on a 3x3 grid: "top left", "center", "bottom", ..."""
    cx, cy = (box[0] + box[2]) / 2 / width, (box[1] + box[3]) / 2 / height
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    return f"{row} {col}".strip() or "center"


def grounded_questions(content: ImageContent, rng: random.Random) -> list[tuple[str, str]]:
    """(question, answer) pairs whose answers follow from the content alone."""
    out = []
    for label in content.labels():
        n = content.count(label)
        many = plural(label)
        out.append((f"How many {many} are there?", f"There {'is' if n == 1 else 'are'} {counted(label, n)}."))
        out.append((f"Is there {article(label)} {label} in the image?", f"Yes, there is {counted(label, n)}."))
        if n == 1:
            box = next(b for lab, b in content.objects if lab == label)
            out.append((f"Where is the {label}?",
                        f"The {label} is in the {position(box, content.width, content.height)} of the image."))
    absent = [c for c in coco_categories() if c not in content.labels()]
    if absent:
        label = rng.choice(absent)
        out.append((f"Is there {article(label)} {label} in the picture?", f"No, there is no {label} in the image."))
    if content.ocr:
        words = ", ".join(f'"{t}"' for t, _ in content.ocr)
        out.append(("What is written in the image?", f"The image shows the text {words}."))
    if content.faces:
        n = len(content.faces)
        out.append(("How many faces can you see?", f"I can see {counted('face', n)}."))
    return out


def _noun_phrase(caption: str) -> str | None:
    """A caption as the object of a sentence ("two dogs in a park"), if it reads as one."""
    text = caption.strip().rstrip(".")
    if len(text) > 90 or re.match(r"(there (is|are)|a view of|based on)\b", text, re.I) or re.search(r"[:;]", text):
        return None
    return text[0].lower() + text[1:]


def supports(content: ImageContent, spec: ToolSpec) -> bool:
    """Can a request for this tool be written about this content (phrasings.json "requires": an
    object to name, a person, faces)? Tools without an entry need nothing."""
    need = phrasings().get(spec.name, {}).get("requires")
    return not (need == "object" and not content.labels() or need == "person" and "person" not in content.labels()
                or need == "faces" and not content.faces)


def _slots(content: ImageContent, spec: ToolSpec, rng: random.Random) -> dict[str, str] | None:
    """Values for every slot a phrasing of this tool may use; None if the content cannot support it."""
    data = phrasings()
    labels = content.labels()
    if not supports(content, spec):
        return None
    scenes = [p for p in map(_noun_phrase, content.captions) if p]
    obj = rng.choice(labels) if labels else "object"
    new = [r for r in data["_replacements"].get(obj, []) + data["_generic_replacements"] if obj not in r]
    scene = rng.choice(scenes) if scenes else None
    prompt = rng.choice(data["_prompts"])
    if scene and rng.random() < 0.5:
        prompt = scene + rng.choice(data["_styles"])
    edit = rng.choice(data["_edits"])
    slots = {"image": IMAGE, "object": obj, "new_object": rng.choice(new), "prompt": prompt, "edit": edit,
             "edit_cap": edit[0].upper() + edit[1:], "scene_lc": (scene + ".") if scene else ""}
    if spec.name == VisualQuestionAnswering.spec.name:
        qa = grounded_questions(content, rng)
        if not qa:
            return None
        slots["question"], slots["answer"] = rng.choice(qa)
        slots["question_lc"] = slots["question"][0].lower() + slots["question"][1:]
    return slots


class TemplateTeacher:
    """Offline teacher: per-tool phrasings filled from the image content (recorded as teacher "template")."""

    name = "template"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def instruction(self, content: ImageContent, spec: ToolSpec, variant: int = 0) -> Instruction | None:
        entry = phrasings().get(spec.name)
        if entry is None:
            return None
        rng = rng_for("template", self.seed, content.id, spec.name, variant)
        slots = _slots(content, spec, rng)
        if slots is None:
            return None
        usable = [p for p in entry["phrasings"] if "{scene_lc}" not in p or slots["scene_lc"]]
        text = rng.choice(usable).format(**slots)
        args = tuple(a.format(**slots) for a in entry["args"])
        return Instruction(content.id, spec.name, text, args, self.name, slots.get("answer"))

    def instructions(self, content: ImageContent, specs: Sequence[ToolSpec]) -> list[Instruction]:
        """One instruction per tool the content supports."""
        return [i for i in (self.instruction(content, s) for s in specs) if i is not None]
