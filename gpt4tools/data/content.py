"""Image content X_C: what the teacher (and the sample builder) knows about one image.

A content record holds an image's captions, its objects as `label [x1, y1, x2, y2]`,
optional OCR lines and face boxes. It comes from one of three places, named by the
prefix of its id (which every training record carries as `source`):

- `coco:<image id>`      COCO captions + instances JSON files the user has (`load_coco`);
- `photos:<sha256[:16]>` our own detectors run on a folder of photos (`photos.py`);
- `synthetic:<stream>-<n>` the offline scene generator (`synthetic.py`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field

from gpt4tools.tool import format_boxes

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


@dataclass
class ImageContent:
    id: str
    width: int
    height: int
    captions: list[str]
    objects: list[tuple[str, Box]] = field(default_factory=list)
    ocr: list[tuple[str, Box]] = field(default_factory=list)  # text lines with their boxes
    faces: list[Box] = field(default_factory=list)
    description: str | None = None  # what "Get Photo Description" said (photos); else the first caption

    @property
    def origin(self) -> str:
        """"synthetic", "coco" or "photos": the id's prefix."""
        return self.id.split(":", 1)[0]

    def labels(self) -> list[str]:
        """Distinct object labels, in order of first appearance."""
        return list(dict.fromkeys(label for label, _ in self.objects))

    def count(self, label: str) -> int:
        return sum(1 for lab, _ in self.objects if lab == label)

    def announcement(self) -> str:
        """The description the app would attach to the upload (the captioner's output)."""
        return (self.description or self.captions[0]).replace("\n", " ").strip()

    def teacher_text(self) -> str:
        """X_C as the teacher reads it: captions, then objects as `label [x1, y1, x2, y2]`."""
        lines = [f"Image size: {self.width}x{self.height} pixels", "Captions:"]
        lines += [f"- {c}" for c in self.captions]
        if self.objects:
            lines += ["Objects:", format_boxes(self.objects)]
        if self.ocr:
            lines += ["Text in the image:", format_boxes(self.ocr)]
        if self.faces:
            lines.append(f"Faces: {len(self.faces)}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ImageContent":
        d = dict(d)
        for key in ("objects", "ocr"):
            d[key] = [(str(lab), tuple(float(v) for v in box)) for lab, box in d.get(key, [])]
        d["faces"] = [tuple(float(v) for v in box) for box in d.get("faces", [])]
        return cls(**d)


# -- (a) COCO-format files ---------------------------------------------------------------------
def _load_json(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a COCO JSON object, got {type(data).__name__}")
    return data


def _coco_box(bbox: object) -> Box | None:
    """COCO's [x, y, w, h] as [x1, y1, x2, y2]; None if malformed or degenerate."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    if w < 1 or h < 1 or x < 0 or y < 0:
        return None
    return (x, y, x + w, y + h)


def load_coco(captions_path: str | os.PathLike, instances_path: str | os.PathLike | None,
              dropped: Counter) -> list[ImageContent]:
    """Contents from COCO `captions_*.json` (+ optional `instances_*.json`).

    Tolerant of partial files: every annotation or image that lacks a needed field is
    skipped and counted in `dropped` (reason -> count) rather than failing the build.
    """
    caps = _load_json(captions_path)
    inst = _load_json(instances_path) if instances_path else {}
    images: dict[object, dict] = {}
    for img in list(caps.get("images") or []) + list(inst.get("images") or []):
        if not isinstance(img, dict) or "id" not in img:
            dropped["coco: image entry without id"] += 1
            continue
        images.setdefault(img["id"], img)
    captions: dict[object, list[str]] = {}
    for ann in caps.get("annotations") or []:
        text = ann.get("caption") if isinstance(ann, dict) else None
        if not isinstance(text, str) or not text.strip() or "image_id" not in ann:
            dropped["coco: caption without text or image_id"] += 1
            continue
        captions.setdefault(ann["image_id"], []).append(" ".join(text.split()))
    names = {c.get("id"): c.get("name") for c in inst.get("categories") or [] if isinstance(c, dict)}
    objects: dict[object, list[tuple[str, Box]]] = {}
    for ann in inst.get("annotations") or []:
        if not isinstance(ann, dict) or "image_id" not in ann:
            dropped["coco: instance without image_id"] += 1
            continue
        label = names.get(ann.get("category_id"))
        box = _coco_box(ann.get("bbox"))
        if not label:
            dropped["coco: instance with unknown category"] += 1
        elif box is None:
            dropped["coco: instance with a malformed bbox"] += 1
        else:
            objects.setdefault(ann["image_id"], []).append((str(label), box))
    out = []
    for image_id in sorted(captions, key=str):
        meta = images.get(image_id, {})
        width, height = meta.get("width"), meta.get("height")
        boxes = objects.get(image_id, [])
        if not isinstance(width, int) or not isinstance(height, int):
            # Without a size the boxes cannot be checked; fall back to their extent.
            dropped["coco: image without width/height (size taken from its boxes)"] += 1
            width = int(max((b[2] for _, b in boxes), default=640))
            height = int(max((b[3] for _, b in boxes), default=480))
        out.append(ImageContent(f"coco:{image_id}", width, height, captions[image_id][:5], boxes))
    dropped["coco: images without captions"] += len(set(objects) - set(captions))
    return out

