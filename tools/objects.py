"""Object tools: detect everything, detect / crop a named object.

Two detectors back them:
- MB3-CenterNet (COCO-80, ONNX, weights `centernet`): closed vocabulary, runs offline. A
  query is mapped onto the 80 COCO labels (exact label, plural, a small synonym table);
  anything else is reported as out of vocabulary, never guessed.
- OWL-ViT (weights `owlvit`, transformers): open vocabulary, used for named objects
  whenever its weights are present (a hub-only download).

`detect_objects` and `ground_object` are the reusable pieces: the mask tools, the
captioner and the pose tool build on them.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

from gpt4tools import weights
from gpt4tools.images import ImageStore
from gpt4tools.model_cache import CACHE
from gpt4tools.tool import Arg, Availability, Tool, ToolInputError, ToolResult, ToolSpec, ToolUnavailable, format_boxes
from tools._coco import coco_labels_for, sibling_group
from tools._image import Box, draw_boxes

CENTERNET = "MB3-CenterNet COCO-80 (ONNX)"
OWLVIT = "OWL-ViT (open vocabulary)"
MIN_SCORE = 0.25  # CenterNet's scores are low (a clear person scores ~0.6); below this it invents
QUERY_MIN_SCORE = 0.2  # a named class may score a little lower: the query is a prior
OWL_MIN_SCORE = 0.1  # OWL-ViT's usual threshold for text queries
NMS_IOU = 0.4
_INPUT_SIDE = 512  # CenterNet's fixed input
_OUTPUT = "tower_0/detections"  # [1, 100, 6]: x1, y1, x2, y2 (input pixels), score, class index


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: Box  # x1, y1, x2, y2 in the input image's pixels


# -- runtime helpers -------------------------------------------------------------------------
def ort_providers(device: str) -> list[Any]:
    """onnxruntime providers for a device string ("cpu", "cuda", "cuda:1")."""
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def nms(dets: list[Detection], iou: float = NMS_IOU) -> list[Detection]:
    """Class-agnostic non-maximum suppression (OpenCV's), best score first."""
    import cv2

    if not dets:
        return []
    xywh = [[d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]] for d in dets]
    keep = cv2.dnn.NMSBoxes(xywh, [d.score for d in dets], 0.0, iou)
    return sorted((dets[int(i)] for i in np.asarray(keep).reshape(-1)), key=lambda d: -d.score)


def _load_centernet(device: str) -> tuple[Any, list[str]]:
    import onnxruntime as ort

    root = weights.path("centernet")
    session = ort.InferenceSession(str(root / "centernet.onnx"), providers=ort_providers(device))
    labels = json.loads((root / "labels.json").read_text())
    return session, labels


def centernet_labels() -> list[str]:
    """The detector's 80 class names in index order (needs the `centernet` weights)."""
    return json.loads((weights.path("centernet") / "labels.json").read_text())


def _candidates(img: Image.Image, device: str, min_score: float) -> list[Detection]:
    """Every detection the network outputs above `min_score`, before NMS (several classes may
    share one box: CenterNet scores each class at each peak)."""
    session, names = CACHE.get(f"centernet@{device}", lambda: _load_centernet(device), 250)
    x = np.asarray(img.convert("RGB").resize((_INPUT_SIDE, _INPUT_SIDE), Image.Resampling.BILINEAR), np.float32)
    (raw,) = session.run([_OUTPUT], {session.get_inputs()[0].name: x[None]})
    sx, sy = img.width / _INPUT_SIDE, img.height / _INPUT_SIDE
    dets = []
    for x1, y1, x2, y2, score, cls in raw[0]:
        if score < min_score:
            continue
        label = names[int(cls)] if 0 <= int(cls) < len(names) else f"class {int(cls)}"
        box = tuple(float(v) for v in np.clip([x1 * sx, y1 * sy, x2 * sx, y2 * sy], 0, [img.width, img.height] * 2))
        if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
            dets.append(Detection(label, float(score), box))
    return dets


def detect_objects(
    img: Image.Image, device: str = "cpu", min_score: float = MIN_SCORE, labels: Collection[str] | None = None
) -> list[Detection]:
    """All COCO objects CenterNet finds, best first, after class-agnostic NMS.

    Args:
        img: RGB image, any size (it is resized to 512x512 for the network).
        device: "cpu" or "cuda[:n]".
        min_score: drop detections scoring below this.
        labels: keep only these class names (filtered *before* NMS, so a weaker box of a
            wanted class is not suppressed by a stronger box of another class).
    Raises:
        gpt4tools.weights.WeightsMissing: the `centernet` weights are not fetched.
    """
    return nms([d for d in _candidates(img, device, min_score) if labels is None or d.label in labels])


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# -- the object argument ---------------------------------------------------------------------
def clean_query(text: str) -> str:
    """The object argument, checked: what the model wrote must be a short object name."""
    query = text.strip().strip("\"'`.").strip()
    if not re.search(r"[A-Za-z]", query):
        raise ToolInputError(f"the object to look for must be a word such as 'cat' or 'red car'; got {text!r}")
    if re.search(r"\.(png|jpe?g|webp|bmp)\b|image/", query, re.IGNORECASE):
        raise ToolInputError(f"the second argument must name an object, not an image file; got {text!r}")
    if len(query) > 80:
        raise ToolInputError(f"the object name is {len(query)} characters long; name the object in a few words")
    return query


# -- grounding a query -------------------------------------------------------------------------
@dataclass
class Grounding:
    """Where a named object is: boxes best first, which detector, and what to tell the model."""

    query: str
    found: list[Detection] = field(default_factory=list)
    model: str = CENTERNET
    note: str = ""  # what the model must be told besides the boxes; empty when plain
    # "found": boxes of the asked class; "uncertain": boxes the detector labels mainly as a
    # confusable class (the note says which); "none": nothing scored; "unknown": the query is
    # outside the detector's vocabulary.
    status: Literal["found", "uncertain", "none", "unknown"] = "found"

    def summary(self) -> str:
        if not self.found:
            return self.note or f"No {self.query} found in the image ({self.model})."
        lines = format_boxes([(d.label, d.box) for d in self.found])
        return f"{self.note}\n{lines}" if self.note else lines


def _load_owlvit(device: str) -> tuple[Any, Any]:
    from transformers import OwlViTForObjectDetection, OwlViTProcessor

    root = weights.path("owlvit")
    processor = OwlViTProcessor.from_pretrained(root)
    model = OwlViTForObjectDetection.from_pretrained(root).to(device).eval()
    return processor, model


def detect_owlvit(
    img: Image.Image, query: str, device: str = "cpu", min_score: float = OWL_MIN_SCORE
) -> list[Detection]:
    """Boxes of a free-text query with OWL-ViT (needs the `owlvit` weights)."""
    import torch

    processor, model = CACHE.get(f"owlvit@{device}", lambda: _load_owlvit(device), 700)
    inputs = processor(text=[[f"a photo of {query}"]], images=img, return_tensors="pt").to(device)
    with torch.inference_mode():
        outputs = model(**inputs)
    (res,) = processor.post_process_grounded_object_detection(
        outputs, threshold=min_score, target_sizes=[(img.height, img.width)]
    )
    dets = []
    for score, box in zip(res["scores"].cpu().tolist(), res["boxes"].cpu().tolist()):
        x1, y1, x2, y2 = np.clip(box, 0, [img.width, img.height, img.width, img.height]).tolist()
        if x2 - x1 >= 2 and y2 - y1 >= 2:
            dets.append(Detection(query, float(score), (x1, y1, x2, y2)))
    return nms(dets)


def ground_object(img: Image.Image, query: str, device: str = "cpu") -> Grounding:
    """Find a named object: OWL-ViT when fetched, else CenterNet with the query mapped to COCO.

    Raises:
        ToolInputError: the query is not an object name.
        ToolUnavailable: neither detector's weights are present.
    """
    query = clean_query(query)
    if weights.status("owlvit").ok:
        found = detect_owlvit(img, query, device)
        return Grounding(query, found, OWLVIT, status="found" if found else "none")
    if not weights.status("centernet").ok:
        raise ToolUnavailable(weights.status("centernet").reason)
    wanted = coco_labels_for(query, centernet_labels())
    if not wanted:
        return Grounding(
            query,
            [],
            status="unknown",
            note=(
                f"I can only detect the 80 COCO object categories offline, and {query!r} is not one of them "
                "(an open-vocabulary detector would need: python -m gpt4tools weights fetch owlvit)."
            ),
        )
    return _ground_coco(img, query, wanted, device)


def _ground_coco(img: Image.Image, query: str, wanted: list[str], device: str) -> Grounding:
    """Boxes of the wanted COCO classes, judged against the other classes CenterNet scores there.

    A box of the asked class counts only if no other class scores higher on the same region.
    If a confusable class does (the cat photo: "dog" 0.46 over "cat" 0.22), the box is kept
    as "uncertain" and the note says so; if an unrelated class does, it is dropped. A class
    the detector did not score at all is never found, whatever else is there.
    """
    cands = _candidates(img, device, QUERY_MIN_SCORE)
    clean, contested = [], []
    for d in nms([c for c in cands if c.label in wanted]):
        rivals = [c for c in cands if c.label not in wanted and c.score > d.score and box_iou(c.box, d.box) > 0.6]
        if not rivals:
            clean.append(d)
        elif sibling_group(rivals[0].label) and sibling_group(rivals[0].label) == sibling_group(d.label):
            contested.append((d, max(rivals, key=lambda c: c.score)))
    if clean:
        return Grounding(query, clean)
    if contested:
        d, rival = contested[0]
        note = (
            f"Uncertain: the detector's top label for this region is '{rival.label}' ({rival.score:.2f}); it "
            f"scores '{d.label}' {d.score:.2f}. It often confuses similar {sibling_group(d.label)}, so this is "
            f"probably the {query}."
        )
        return Grounding(query, [d for d, _ in contested], status="uncertain", note=note)
    # Nothing of the asked class. Say what the detector did see there, without claiming it.
    seen = nms([c for c in cands if c.score >= MIN_SCORE])
    also = f" It found: {', '.join(f'{c.label} ({c.score:.2f})' for c in seen[:5])}." if seen else ""
    return Grounding(query, [], status="none", note=f"No {query} found in the image ({CENTERNET}).{also}")


# -- tools --------------------------------------------------------------------------------------
class ModeText:
    """A class attribute that says which backend is in use now (cheap: a marker check)."""

    def __init__(self, weight: str, when_present: str, otherwise: str) -> None:
        self.weight, self.when_present, self.otherwise = weight, when_present, otherwise

    def __get__(self, obj: object, owner: type | None = None) -> str:
        return self.when_present if weights.status(self.weight).ok else self.otherwise

    @property
    def doc(self) -> str:
        """Both modes, for docs/tools.md (which must not depend on what this machine has)."""
        return f"{self.when_present} when `{self.weight}` is fetched, else {self.otherwise}"


class QueryTool(Tool):
    """Base of the tools that take (image, object): available when either detector is."""

    weights = ("centernet", "owlvit")  # either one; see availability
    packages = ("onnxruntime", "cv2")
    learned = True
    memory_mb = 250

    def availability(self) -> Availability:
        missing = [p for p in self.packages if importlib.util.find_spec(p) is None]
        if missing:
            return Availability(False, f"missing Python package(s): {', '.join(missing)} (pip install them)")
        if self.device != "cpu" and any(weights.status(n).ok for n in ("owlvit", "sam")):
            from gpt4tools.hardware import device_problem  # the torch backends need a real device

            if problem := device_problem(self.device):
                return Availability(False, problem)
        if weights.status("owlvit").ok or weights.status("centernet").ok:
            return Availability(True)
        return Availability.of(weights.status("centernet"))


class ObjectDetection(Tool):
    spec = ToolSpec(
        name="Detection",
        description=(
            "useful when you want to detect all objects of the image, but not detect a certain object according to "
            "the text. like: detect all the objects in this image, or detect this image, or what objects are there"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="det",
        seen=False,
        aliases=("Detect All Objects", "Object Detection"),
        paraphrases=(
            "use this to find and box every object in a picture, "
            "like: find all objects here, or list what is in the photo",
            "helpful for locating all the things visible in an image, "
            "like: mark every object, or detect everything in this image",
        ),
    )
    model = CENTERNET
    learned = True
    weights = ("centernet",)
    packages = ("onnxruntime", "cv2")
    memory_mb = 250

    def run(self, store: ImageStore, image_path: Image.Image) -> ToolResult:
        dets = detect_objects(image_path, self.device)
        if not dets:
            return ToolResult(text=f"No objects of the 80 COCO categories were found (score >= {MIN_SCORE}).")
        drawn = draw_boxes(image_path, [(f"{d.label} {d.score:.2f}", d.box) for d in dets])
        return ToolResult(image=drawn, text=format_boxes([(d.label, d.box) for d in dets]))


class DetectGivenObject(QueryTool):
    spec = ToolSpec(
        name="Detect the Give Object",
        description=(
            "useful when you only want to detect or find out given objects in the picture, like: "
            "find the cat in this photo, or where is the cup, or show me the bicycles in the image"
        ),
        args=(Arg("image_path", "image"), Arg("object", max_chars=200)),
        output="image",
        slug="detect",
        aliases=("Detect the Given Object", "Detect The Given Object", "Detect Given Object"),
        paraphrases=(
            "use this to locate one kind of object named by the user and box it, like: locate the dog, or mark the car",
            "helpful for finding where a specific thing is in an image, like: where is the person, or box the bottle",
        ),
    )
    model = ModeText("owlvit", OWLVIT, f"{CENTERNET}, query mapped to the 80 COCO labels")

    def run(self, store: ImageStore, image_path: Image.Image, object: str) -> ToolResult:
        g = ground_object(image_path, object, self.device)
        if not g.found:
            return ToolResult(text=g.summary())
        drawn = draw_boxes(image_path, [(f"{d.label} {d.score:.2f}", d.box) for d in g.found])
        return ToolResult(image=drawn, text=g.summary())


class CropGivenObject(QueryTool):
    spec = ToolSpec(
        name="Crop the Given Object",
        description=(
            "useful when you want to crop a given object out of the picture and keep only that region, like: "
            "crop the dog from this image, or cut out the cup, or give me a close-up of the person"
        ),
        args=(Arg("image_path", "image"), Arg("object", max_chars=200)),
        output="image",
        slug="crop",
        photo_out=True,
        seen=False,
        aliases=("Crop The Given Object", "Crop Given Object"),
        paraphrases=(
            "use this to cut the region of one named object out of an image, "
            "like: crop the bicycle, or zoom in on the cat",
            "helpful for extracting a named thing as its own picture, like: crop out the person, or keep only the car",
        ),
    )
    model = ModeText("owlvit", OWLVIT, f"{CENTERNET}, query mapped to the 80 COCO labels")

    def run(self, store: ImageStore, image_path: Image.Image, object: str) -> ToolResult:
        g = ground_object(image_path, object, self.device)
        if not g.found:
            return ToolResult(text=g.summary())
        best = g.found[0]
        x1, y1 = int(np.floor(best.box[0])), int(np.floor(best.box[1]))
        x2, y2 = int(np.ceil(best.box[2])), int(np.ceil(best.box[3]))
        crop = image_path.crop((x1, y1, x2, y2))
        head = f"{g.note}\n" if g.note else ""
        return ToolResult(
            image=crop, text=f"{head}Cropped {best.label} [{x1}, {y1}, {x2}, {y2}] (score {best.score:.2f})"
        )
