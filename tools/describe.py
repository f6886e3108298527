"""Describe an image, and answer questions about it.

With BLIP weights (`blip-caption`, `blip-vqa`; hub-only downloads) these are the paper's
BLIP captioner and VQA model. Without them they run in *grounded* mode: the description
and the answers are built only from what the offline detectors report (CenterNet objects,
faces, OCR text), they say so, and a question the detectors cannot settle is answered
with "I cannot tell", never with a guess.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import cached_property
from typing import Any

from PIL import Image

from gpt4tools import weights
from gpt4tools.images import ImageStore
from gpt4tools.tool import Arg, Availability, Tool, ToolResult, ToolSpec, ToolUnavailable
from tools._coco import sibling_group
from tools._image import Box
from tools.objects import MIN_SCORE, Detection, Grounding, ModeText, coco_labels_for, detect_objects, ground_object

_IRREGULAR = {
    "person": "people",
    "mouse": "mice",
    "knife": "knives",
    "sheep": "sheep",
    "skis": "skis",
    "scissors": "scissors",
    "bus": "buses",
    "couch": "couches",
    "sandwich": "sandwiches",
    "bench": "benches",
    "wine glass": "wine glasses",
}
UNSURE_BELOW = 0.5  # CenterNet's scores for clear objects are ~0.5-0.7; the cat photo's "dog" is 0.46
_TEXT_Q = re.compile(r"\b(written|writing|text|say|says|read|words?|letters|sign|label|caption|title)\b", re.IGNORECASE)
_FACE_Q = re.compile(r"\bfaces?\b", re.IGNORECASE)


def plural(label: str, n: int) -> str:
    return label if n == 1 else _IRREGULAR.get(label, label + "s")


def position(box: Box, size: tuple[int, int]) -> str:
    """Where a box's centre lies on a 3x3 grid: "top left", "center", "bottom", ..."""
    cx, cy = (box[0] + box[2]) / 2 / size[0], (box[1] + box[3]) / 2 / size[1]
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    return f"{row} {col}".strip() or "center"


# -- what the offline detectors see ---------------------------------------------------------
class Evidence:
    """Objects, faces and text in one image, each computed on first use by its detector.

    A detector that is not installed gives None (and is named in `missing`), not an empty list.
    """

    def __init__(self, img: Image.Image, device: str = "cpu") -> None:
        self.img, self.device, self.size = img, device, img.size

    @cached_property
    def objects(self) -> list[Detection] | None:
        return detect_objects(self.img, self.device, MIN_SCORE) if weights.status("centernet").ok else None

    @cached_property
    def faces(self) -> list[Any] | None:
        try:
            from tools.faces import detect_faces

            return detect_faces(self.img, self.device)
        except ImportError:  # the faces family (or mediapipe) is not installed
            return None

    @cached_property
    def text(self) -> list[Any] | None:
        try:
            from tools.ocr import read_text

            return read_text(self.img, self.device)
        except ImportError:  # the OCR family (or rapidocr) is not installed
            return None

    def _kinds(self) -> dict[str, list[Any] | None]:
        return {"object detection": self.objects, "face detection": self.faces, "OCR": self.text}

    @property
    def sources(self) -> list[str]:
        return [k for k, v in self._kinds().items() if v is not None]

    @property
    def missing(self) -> list[str]:
        hint = {"object detection": "object detection (python -m gpt4tools weights fetch centernet)"}
        return [hint.get(k, k) for k, v in self._kinds().items() if v is None]

    def basis(self) -> str:
        return "Based on " + _join(self.sources) + " (no captioning model is installed)"

    def objects_phrase(self) -> str:
        by_label: dict[str, list[Detection]] = defaultdict(list)
        for d in self.objects:
            by_label[d.label].append(d)
        parts = []
        for label, dets in sorted(by_label.items(), key=lambda kv: -max(d.score for d in kv[1])):
            where = ", ".join(dict.fromkeys(position(d.box, self.size) for d in dets))
            conf = (
                f"{dets[0].score:.2f}"
                if len(dets) == 1
                else f"{min(d.score for d in dets):.2f}-{max(d.score for d in dets):.2f}"
            )
            name = plural(label, len(dets))
            group = sibling_group(label)
            if group and max(d.score for d in dets) < UNSURE_BELOW:  # the detector mixes these up
                name += f" (or similar {group})"
            parts.append(f"{len(dets)} {name} ({where}; confidence {conf})")
        return _join(parts)

    def describe(self) -> str:
        if not self.sources:
            raise ToolUnavailable("no detector is installed to describe the image: " + "; ".join(self.missing))
        found = []
        if self.objects:
            found.append("the object detector found " + self.objects_phrase())
        if self.faces:
            found.append(
                f"{len(self.faces)} {plural('face', len(self.faces))} {'is' if len(self.faces) == 1 else 'are'} visible"
            )
        if self.text:
            found.append("the image contains the text " + ", ".join(f'"{t.text}"' for t in self.text))
        if not found:
            seen = "none of the 80 COCO object categories, no face and no text" if len(self.sources) == 3 else "nothing"
            return f"{self.basis()}: {seen} were found, so I cannot describe this image further."
        note = f" (not installed: {_join(self.missing)})" if self.missing else ""
        return f"{self.basis()}: " + "; ".join(found) + "." + note


def _join(items: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# -- grounded question answering --------------------------------------------------------------
_COUNT = re.compile(
    r"\bhow many\s+(.+?)(?:\s+(?:are|is|can|could|do|does|did|were|in|on|at|there)\b|[?.!]|$)", re.IGNORECASE
)
_WHERE = re.compile(r"\bwhere\s+(?:is|are)\s+(.+?)[?.!]*$", re.IGNORECASE)
_PRESENT = re.compile(
    r"^(?:is there|are there|is this|is it|does (?:the|this) (?:image|picture|photo) (?:contain|show|have)|"
    r"(?:do|can) you see|is an?|are any)\s+(.+?)[?.!]*$",
    re.IGNORECASE,
)
_WHAT_IN = re.compile(
    r"\b(what(?:'s| is| are)? (?:in|on) (?:the|this)|what objects|describe|what can you see|what do you see)\b",
    re.IGNORECASE,
)


def answer_grounded(img: Image.Image, question: str, device: str = "cpu") -> str:
    """Answer from detector evidence only; say "I cannot tell" when it cannot settle the question."""
    q = question.strip()
    if m := _COUNT.search(q):
        return _count(img, m.group(1), device)
    if _TEXT_Q.search(q) and not _FACE_Q.search(q):
        lines = Evidence(img, device).text
        if lines is None:
            return "I cannot tell: no text recogniser (OCR) is installed."
        if not lines:
            return "I found no readable text in the image (OCR)."
        return "The text in the image reads: " + " / ".join(t.text for t in lines) + " (OCR)."
    if m := _WHERE.search(q):
        g = _ground(img, m.group(1), device)
        if isinstance(g, str) or not g.found:
            return g if isinstance(g, str) else g.summary()  # not found, or outside the vocabulary
        wheres = _join(list(dict.fromkeys(position(d.box, img.size) for d in g.found)))
        return f"{g.note + ' ' if g.note else ''}At the {wheres} of the image (object detector)."
    if m := _PRESENT.search(q):
        if _FACE_Q.search(m.group(1)):
            faces = Evidence(img, device).faces
            if faces is None:
                return "I cannot tell: no face detector is installed."
            return f"{'Yes' if faces else 'No'}: face detection found {len(faces)} {plural('face', len(faces))}."
        g = _ground(img, m.group(1), device)
        if isinstance(g, str):
            return g
        if g.status == "found":
            return f"Yes: the object detector found {len(g.found)} {plural(g.found[0].label, len(g.found))}."
        if g.status == "uncertain":
            return f"Probably yes. {g.note}"
        return f"No: {g.summary()}" if g.status == "none" else f"I cannot tell: {g.note}"
    if _WHAT_IN.search(q):
        return Evidence(img, device).describe()
    ev = Evidence(img, device)
    return (
        f"I cannot tell from the available tools ({_join(ev.sources)}); no visual question answering model is "
        f"installed (python -m gpt4tools weights fetch blip-vqa). What they found: {ev.describe()}"
    )


def _ground(img: Image.Image, target: str, device: str) -> Grounding | str:
    target = re.sub(r"^(?:an?|the|any|some)\s+", "", target.strip(), flags=re.IGNORECASE)
    target = re.sub(
        r"\s+(?:in|on|inside)\s+(?:the|this)\s+(?:image|picture|photo|figure)$", "", target, flags=re.IGNORECASE
    )
    try:
        return ground_object(img, target, device)
    except ToolUnavailable as e:
        return f"I cannot tell: the object detector is not installed ({e})."


def _count(img: Image.Image, target: str, device: str) -> str:
    if _FACE_Q.search(target):
        faces = Evidence(img, device).faces
        if faces is None:
            return "I cannot count faces: no face detector is installed."
        return f"{len(faces)} (face detection found {len(faces)} {plural('face', len(faces))})."
    g = _ground(img, target, device)
    if isinstance(g, str):
        return g
    if g.status == "unknown":
        return f"I cannot count that: {g.note}"
    if g.status == "none":
        return f"0 ({g.summary()})"
    if g.status == "uncertain":
        return f"{len(g.found)} ({g.note})"
    labels = coco_labels_for(target, [d.label for d in g.found]) or [g.found[0].label]
    n = len(g.found)
    return f"{n} (the object detector found {n} {plural(labels[0], n)})."


# -- tools ------------------------------------------------------------------------------------
def _load_blip(name: str, cls_name: str, device: str) -> tuple[Any, Any]:
    import transformers

    root = weights.path(name)
    processor = transformers.BlipProcessor.from_pretrained(root)
    return processor, getattr(transformers, cls_name).from_pretrained(root).to(device).eval()


def blip_generate(name: str, cls_name: str, img: Image.Image, device: str, text: str | None = None) -> str:
    """Run a BLIP checkpoint (captioning, or VQA with a question) and decode its answer."""
    import torch

    from gpt4tools.model_cache import CACHE

    processor, model = CACHE.get(f"{name}@{device}", lambda: _load_blip(name, cls_name, device), 1000)
    inputs = processor(images=img, text=text, return_tensors="pt").to(device)
    with torch.inference_mode():
        ids = model.generate(**inputs, max_new_tokens=30, num_beams=1, do_sample=False)
    return processor.decode(ids[0], skip_special_tokens=True).strip()


class _GroundedFallback(Tool):
    """BLIP when fetched; otherwise grounded on the detectors (always available)."""

    blip: str = ""
    learned = True
    packages = ()
    memory_mb = 1000

    def availability(self) -> Availability:
        if weights.status(self.blip).ok:
            from gpt4tools.hardware import device_problem

            problem = device_problem(self.device)
            return Availability(False, problem) if problem else Availability(True)
        return Availability(True)

    @property
    def grounded(self) -> bool:
        return not weights.status(self.blip).ok


class PhotoDescription(_GroundedFallback):
    spec = ToolSpec(
        name="Get Photo Description",
        description=(
            "useful when you want to know what is inside the photo, like: describe this image, or what is in this "
            "picture, or tell me about this photo"
        ),
        args=(Arg("image_path", "image"),),
        output="text",
        slug="caption",
        aliases=("Get Photo Caption", "Image Captioning"),
        paraphrases=(
            "use this to get a short description of a picture's content, like: what does this photo show",
            "helpful for understanding what an image contains, like: caption this image, or summarise the picture",
        ),
    )
    blip = "blip-caption"
    weights = ("blip-caption", "centernet")
    model = ModeText("blip-caption", "BLIP captioning", "grounded: CenterNet objects + face detection + OCR")

    def run(self, store: ImageStore, image_path: Image.Image) -> ToolResult:
        if self.grounded:
            return ToolResult(text=Evidence(image_path, self.device).describe())
        return ToolResult(text=blip_generate(self.blip, "BlipForConditionalGeneration", image_path, self.device))


class VisualQuestionAnswering(_GroundedFallback):
    spec = ToolSpec(
        name="Answer Question About The Image",
        description=(
            "useful when you need an answer for a question based on an image, like: what is the background color of "
            "this image, or how many cats are in this figure, or what is written on the sign"
        ),
        args=(Arg("image_path", "image"), Arg("question")),
        output="text",
        slug="vqa",
        aliases=("Answer Question About the Image", "Visual Question Answering"),
        paraphrases=(
            "use this to ask a question about a picture and get a short answer, like: how many people are there",
            "helpful for finding out a specific fact about an image, like: is there a dog, or what does the text say",
        ),
    )
    blip = "blip-vqa"
    weights = ("blip-vqa", "centernet")
    model = ModeText("blip-vqa", "BLIP VQA", "grounded: answers from CenterNet objects + face detection + OCR")

    def run(self, store: ImageStore, image_path: Image.Image, question: str) -> ToolResult:
        if self.grounded:
            return ToolResult(text=answer_grounded(image_path, question, self.device))
        return ToolResult(text=blip_generate(self.blip, "BlipForQuestionAnswering", image_path, self.device, question))
