"""Mask tools: segment a named object, remove it from the photo.

A named object is first found as boxes (`tools.objects.ground_object`), then each box is
turned into a mask by the best segmenter present:
- SAM with a box prompt (weights `sam`, transformers; hub-only);
- ISNet salient-object net on the box crop (weights `isnet`, ONNX; AGPL, opt-in);
- OpenCV GrabCut initialised from the box (classical, always there).
Removal dilates the mask and fills it with PatchMatch (OpenCV Telea only if that fails).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from gpt4tools import weights
from gpt4tools.images import ImageStore
from gpt4tools.model_cache import CACHE
from gpt4tools.tool import Arg, ToolResult, ToolSpec
from tools._image import Box, from_np, label_color, to_np
from tools.objects import Grounding, QueryTool, ground_object, ort_providers

log = logging.getLogger(__name__)

SAM = "SAM (box prompt)"
ISNET = "ISNet salient-object net on the box crop"
GRABCUT = "OpenCV GrabCut from the box (classical)"
MAX_OBJECTS = 5  # masks per call: more boxes than this are almost always duplicates or noise
DILATE_PX = 15  # removal grows the mask so the object's halo and shadow edge go too
_ISNET_SIDE = 1024
_GRABCUT_SIDE = 384  # GrabCut costs ~pixels x iterations; the box crop is shrunk to this
# PatchMatch's cost grows with the pixels it searches (a 512x512 photo with a cup-sized hole took
# ~6 s on 2 cores): it works on the hole's surroundings only, shrunk to at most this side. Small
# holes in big photos keep full resolution; only large holes are filled at reduced detail.
_INPAINT_SIDE = 320
_INPAINT_CONTEXT = 0.5  # context kept around the hole, as a fraction of the hole's size


def segmenter_name() -> str:
    """Which segmenter `segment_object` uses now."""
    if weights.status("sam").ok:
        return SAM
    return ISNET if weights.status("isnet").ok else GRABCUT


# -- the three segmenters: (image, boxes) -> bool mask HxW -------------------------------------
def _load_sam(device: str) -> tuple[Any, Any]:
    from transformers import SamModel, SamProcessor

    root = weights.path("sam")
    return SamProcessor.from_pretrained(root), SamModel.from_pretrained(root).to(device).eval()


def _sam_mask(img: Image.Image, boxes: list[Box], device: str) -> np.ndarray:
    import torch

    processor, model = CACHE.get(f"sam@{device}", lambda: _load_sam(device), 1500)
    inputs = processor(images=img, input_boxes=[[list(b) for b in boxes]], return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model(**inputs, multimask_output=False)
    (masks,) = processor.image_processor.post_process_masks(
        out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
    )
    return masks.numpy().reshape(-1, img.height, img.width).any(axis=0)  # [boxes, 1, H, W] -> union


def _padded(box: Box, size: tuple[int, int], frac: float = 0.1) -> tuple[int, int, int, int]:
    """The box grown by `frac` of its size on each side, as integer pixels inside the image."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * frac, (y2 - y1) * frac
    return (
        max(0, int(x1 - dx)),
        max(0, int(y1 - dy)),
        min(size[0], int(np.ceil(x2 + dx))),
        min(size[1], int(np.ceil(y2 + dy))),
    )


def _load_isnet(device: str) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(weights.path("isnet") / "isnet.onnx"), providers=ort_providers(device))


def _isnet_mask(img: Image.Image, boxes: list[Box], device: str) -> np.ndarray:
    import cv2

    session = CACHE.get(f"isnet@{device}", lambda: _load_isnet(device), 1900)
    mask = np.zeros((img.height, img.width), bool)
    for box in boxes:
        x1, y1, x2, y2 = _padded(box, img.size)
        crop = to_np(img)[y1:y2, x1:x2]
        x = cv2.resize(crop, (_ISNET_SIDE, _ISNET_SIDE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        x = ((x - 128.0) / 256.0).transpose(2, 0, 1)[None]  # the net's own normalisation, NCHW
        (prob,) = session.run(["output"], {"input": x})  # the final map (the others are side outputs)
        prob = cv2.resize(prob[0, 0], (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        mask[y1:y2, x1:x2] |= prob > 0.5
    return mask


def _grabcut_mask(img: Image.Image, boxes: list[Box]) -> np.ndarray:
    import cv2

    rgb = to_np(img)
    mask = np.zeros((img.height, img.width), bool)
    for box in boxes:
        x1, y1, x2, y2 = _padded(box, img.size, 0.15)  # GrabCut learns the background from this margin
        crop = np.ascontiguousarray(rgb[y1:y2, x1:x2, ::-1])
        scale = min(1.0, _GRABCUT_SIDE / max(crop.shape[:2]))
        small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else crop
        h, w = small.shape[:2]
        # The rectangle must leave at least a 1-px background frame, even when the box fills the crop.
        rx1, ry1 = int(np.clip((box[0] - x1) * scale, 1, w - 3)), int(np.clip((box[1] - y1) * scale, 1, h - 3))
        rx2, ry2 = (
            int(np.clip((box[2] - x1) * scale, rx1 + 2, w - 1)),
            int(np.clip((box[3] - y1) * scale, ry1 + 2, h - 1)),
        )
        gc = np.zeros((h, w), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # GrabCut's GMM initialisation is random: keep results repeatable
        cv2.grabCut(small, gc, (rx1, ry1, rx2 - rx1, ry2 - ry1), bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
        fg = np.isin(gc, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
        fg = cv2.resize(fg, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
        mask[y1:y2, x1:x2] |= fg.astype(bool)
    return mask


# -- public helpers -----------------------------------------------------------------------------
@dataclass
class Segmentation:
    grounding: Grounding
    mask: np.ndarray | None  # bool HxW; None when the object was not found
    method: str


def segment_grounding(img: Image.Image, g: Grounding, device: str = "cpu") -> Segmentation:
    """Masks for the boxes a grounding found (their union), with the segmenter's name."""
    boxes = [d.box for d in g.found[:MAX_OBJECTS]]
    method = segmenter_name()
    if not boxes:
        return Segmentation(g, None, method)
    if method == SAM:
        mask = _sam_mask(img, boxes, device)
    elif method == ISNET:
        mask = _isnet_mask(img, boxes, device)
    else:
        mask = _grabcut_mask(img, boxes)
    return Segmentation(g, mask, method)


def segment_object(img: Image.Image, query: str, device: str = "cpu") -> np.ndarray | None:
    """Bool mask (HxW) of every instance of a named object, or None if none was found.

    Raises:
        gpt4tools.tool.ToolInputError: the query is not an object name.
        gpt4tools.tool.ToolUnavailable: no detector weights are present.
    """
    return segment_grounding(img, ground_object(img, query, device), device).mask


def overlay_mask(img: Image.Image, mask: np.ndarray, label: str) -> Image.Image:
    """The image with the mask tinted in the label's colour and outlined."""
    import cv2

    rgb = to_np(img).copy()
    color = np.array(label_color(label), np.float32)
    rgb[mask] = (0.45 * rgb[mask] + 0.55 * color).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(rgb, contours, -1, tuple(int(c) for c in color), max(2, min(img.size) // 250))
    return from_np(rgb)


def _context_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The hole's bounding box grown by _INPAINT_CONTEXT of its size (at least 16 px), clipped."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my, mx = max(16, int(_INPAINT_CONTEXT * (y1 - y0))), max(16, int(_INPAINT_CONTEXT * (x1 - x0)))
    return max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx)


def _patchmatch(rgb: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    """PatchMatch on the hole's surroundings, at most _INPAINT_SIDE px a side; full-size result
    whose context box is the fill (`inpaint` keeps only the hole's pixels of it)."""
    import cv2
    import patchmatch_cython

    y0, y1, x0, x1 = _context_box(mask)
    crop, hole = rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    scale = min(1.0, _INPAINT_SIDE / max(crop.shape[:2]))
    if scale < 1.0:
        size = (max(8, round(crop.shape[1] * scale)), max(8, round(crop.shape[0] * scale)))
        small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        # a small pixel is hole if any pixel it covers is: no object colour leaks into the fill
        small_hole = cv2.resize(hole.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        filled = patchmatch_cython.inpaint_pyramid(small, small_hole, seed=seed)
        filled = cv2.resize(filled, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_CUBIC)
    else:
        filled = patchmatch_cython.inpaint_pyramid(crop, hole, seed=seed)
    out = rgb.copy()
    out[y0:y1, x0:x1] = filled
    return out


def inpaint(img: Image.Image, mask: np.ndarray, seed: int = 0) -> tuple[Image.Image, str]:
    """Fill the masked pixels from the rest of the image; the others stay exactly as they were."""
    rgb = to_np(img)
    if not mask.any():
        return img, "nothing to fill"
    try:
        filled = _patchmatch(rgb, mask, seed)
        method = "PatchMatch"
    except Exception:
        import cv2

        log.warning("PatchMatch failed; falling back to OpenCV Telea", exc_info=True)
        filled = cv2.inpaint(np.ascontiguousarray(rgb[:, :, ::-1]), mask.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)[
            :, :, ::-1
        ]
        method = "OpenCV Telea"
    # PatchMatch's seam blending and the resize touch pixels around the hole: keep them original.
    return from_np(np.where(mask[..., None], filled, rgb)), method


def dilate(mask: np.ndarray, px: int = DILATE_PX) -> np.ndarray:
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


# -- tools --------------------------------------------------------------------------------------
class _ModelText:
    def __init__(self, then: str = ""):
        self.then = then  # what the tool does with the mask, if anything

    def __get__(self, obj: object, owner: type | None = None) -> str:
        detector = "OWL-ViT" if weights.status("owlvit").ok else "CenterNet COCO-80"
        return f"{detector} box -> {segmenter_name()}{self.then}"

    @property
    def doc(self) -> str:
        return f"OWL-ViT (else CenterNet COCO-80) box -> {SAM}, else {ISNET}, else {GRABCUT}{self.then}"


class SegmentGivenObject(QueryTool):
    spec = ToolSpec(
        name="Segment the given object",
        description=(
            "useful when you only want to segment a certain object in the picture according to the given text, "
            "like: segment the cat, or can you segment the person for me, or show the mask of the cup"
        ),
        args=(Arg("image_path", "image"), Arg("object", max_chars=200)),
        output="image",
        slug="segobj",
        aliases=("Segment the Given Object", "Segment The Given Object", "Segment Given Object"),
        paraphrases=(
            "use this to cut out the exact outline of one named object, like: mask the dog, or segment the car",
            "helpful for marking the pixels of a specific thing named by the user, like: highlight the person's shape",
        ),
    )
    model = _ModelText()
    weights = ("centernet", "owlvit", "sam", "isnet")  # a detector, plus the best segmenter present
    packages = ("onnxruntime", "cv2")
    memory_mb = 2100  # with ISNet (measured RSS 2.0 GB); GrabCut needs only the detector's ~250 MB

    def run(self, store: ImageStore, image_path: Image.Image, object: str) -> ToolResult:
        seg = segment_grounding(image_path, ground_object(image_path, object, self.device), self.device)
        if seg.mask is None or not seg.mask.any():
            return ToolResult(
                text=seg.grounding.summary() if seg.mask is None else f"{segmenter_name()} found no {object} pixels."
            )
        label = seg.grounding.found[0].label
        share = 100.0 * seg.mask.mean()
        text = f"{seg.grounding.summary()}\nMask by {seg.method}: {share:.1f}% of the image."
        return ToolResult(image=overlay_mask(image_path, seg.mask, label), text=text)


class RemoveObject(QueryTool):
    spec = ToolSpec(
        name="Remove Something From The Photo",
        description=(
            "useful when you want to remove an object or something from the photo from its description or location, "
            "like: remove the cat from this photo, or erase the cup, or get rid of the person in the image"
        ),
        args=(Arg("image_path", "image"), Arg("object", max_chars=200)),
        output="image",
        slug="remove",
        photo_out=True,
        aliases=("Remove Something From the Photo", "Remove Object"),
        paraphrases=(
            "use this to erase a named object and fill its place with the surrounding background, like: delete the dog",
            "helpful for making a thing disappear from a picture, like: take the bottle out of this image",
        ),
    )
    model = _ModelText(" -> PatchMatch fill of the grown mask (classical)")
    weights = ("centernet", "owlvit", "sam", "isnet")
    packages = ("onnxruntime", "cv2", "patchmatch_cython")
    memory_mb = 2100  # as SegmentGivenObject

    def run(self, store: ImageStore, image_path: Image.Image, object: str) -> ToolResult:
        seg = segment_grounding(image_path, ground_object(image_path, object, self.device), self.device)
        if seg.mask is None or not seg.mask.any():
            return ToolResult(
                text=seg.grounding.summary() if seg.mask is None else f"{segmenter_name()} found no {object} pixels."
            )
        hole = dilate(seg.mask)
        result, filler = inpaint(image_path, hole)
        text = f"{seg.grounding.summary()}\nRemoved: mask by {seg.method}, grown {DILATE_PX} px, filled by {filler}."
        return ToolResult(image=result, text=text)
