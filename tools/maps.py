"""Condition-map tools: edges, straight lines, soft HED boundaries, scribbles, segments.

Each result looks like the matching ControlNet annotator's output (white strokes on black,
or a flat colour-coded segment map), because the "Generate Image Condition On ..." tools
consume these maps. All maps have the input image's size.

Backends, learned first, with an honestly labelled classical fallback where one exists:
- edges: OpenCV Canny (classical, like ControlNet's canny annotator);
- lines: M-LSD large 512 (ONNX, weights `mlsd`); without them OpenCV FastLineDetector;
- HED: VGG16 HED (ONNX, weights `hed`); no classical stand-in (Sobel is not HED);
- scribble: HED map thinned and thresholded as ControlNet's fake-scribble does; without
  `hed`, XDoG line extraction;
- segments: SAM automatic masks (transformers, weights `sam`); without them Felzenszwalb
  graph over-segmentation (OpenCV), which is over-segmentation, not object masks.
When a fallback computes the map, the observation says so after the image name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from gpt4tools import weights
from gpt4tools.images import ImageStore
from gpt4tools.model_cache import CACHE
from gpt4tools.tool import Arg, Availability, Tool, ToolResult, ToolSpec
from tools._image import from_np, resize_to, stretch_contrast, to_gray, to_np

# -- shared runtime helpers ------------------------------------------------------------------


def _ort_session(path: Path, device: str) -> Any:
    """An onnxruntime session on the requested device (CUDA only when the build has it)."""
    import onnxruntime as ort

    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)}))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the exported graphs carry unused initialisers: warnings only
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def _weights_ok(name: str) -> bool:
    return weights.status(name).ok


def _fit_side(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(w, h) scaled down so the longer side is at most max_side (never up)."""
    w, h = size
    scale = min(1.0, max_side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _fallback_note(what: str, weight: str) -> str:
    return (f"Note: computed with {what}, because the '{weight}' weights are not fetched "
            f"(python -m gpt4tools weights fetch {weight}).")


class FallbackTool(Tool):
    """A tool whose `weights` are preferred, not required: without them a classical method
    computes the map (and the observation says so). Available whenever its packages are."""

    def availability(self) -> Availability:
        missing = [p for p in self.packages if importlib.util.find_spec(p) is None]
        if missing:
            return Availability(False, f"missing Python package(s): {', '.join(missing)} (pip install them)")
        return Availability(True)

    def backend(self) -> str:
        raise NotImplementedError

    def learned_now(self) -> bool:
        return self.backend() in LEARNED_BACKENDS


LEARNED_BACKENDS = {"M-LSD", "HED", "SAM"}  # what backend() names when the weights are there


# -- edges ----------------------------------------------------------------------------------

CANNY_LOW, CANNY_HIGH = 100, 200  # ControlNet's canny annotator defaults


def canny_map(rgb: np.ndarray, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> np.ndarray:
    """Binary edge map (0/255). Canny on the colour image, as ControlNet does: OpenCV takes
    the strongest gradient over the channels, so edges between equally bright colours survive."""
    import cv2

    return cv2.Canny(np.ascontiguousarray(rgb), low, high)


class EdgeDetection(Tool):
    spec = ToolSpec(
        name="Edge Detection On Image",
        description=(
            "useful when you want to find the edges of an image, e.g. as a canny map for generating a new image. "
            "like: detect the edges of this image, or canny detection on image, "
            "or perform edge detection on this image, or get the canny edge map of this picture"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="edge",
        aliases=("Canny Edge Detection", "Canny Detection On Image", "Edge Detection"),
        paraphrases=(
            "useful for turning a photo into a canny edge map of white outlines on black. "
            "like: show me the outlines in this picture, or run canny on this image",
            "useful when the user wants the contours or edges of a picture extracted. "
            "like: extract the edges of the image, or make an edge map of this photo",
            "useful to get the canny edges of an image before drawing a new picture from them. "
            "like: what are the edges of this image, or canny this photo",
        ),
    )
    model = "OpenCV Canny (classical; thresholds 100/200 as ControlNet)"
    learned = False
    packages = ("cv2",)
    memory_mb = 20

    def run(self, store: ImageStore, image_path: Image.Image) -> ToolResult:
        return ToolResult(image=from_np(canny_map(to_np(image_path))))


# -- straight lines --------------------------------------------------------------------------

MLSD_FILE = "mlsd_512x512_large.onnx"  # the tiny 320 model is 5x faster but misses more lines
MLSD_SCORE = 0.1  # ControlNet's default value threshold
MLSD_MIN_LEN = 20.0  # in model-input pixels (ControlNet's default distance threshold)


def mlsd_input(rgb: np.ndarray, side: int) -> np.ndarray:
    """[1, side, side, 4] float32: RGB 0..255 resized to a square, plus a channel of ones
    (the exported graph expects RGBA; it does its own normalisation)."""
    import cv2

    img = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    ones = np.ones((side, side, 1), np.float32)
    return np.concatenate([img, ones], axis=-1)[None]


def mlsd_decode(scores: np.ndarray, offsets: np.ndarray, score_thr: float = MLSD_SCORE,
                min_len: float = MLSD_MIN_LEN) -> np.ndarray:
    """Line segments (K, 4) as x1, y1, x2, y2 in model-input pixels.

    `scores` (h, w) is the line-centre heat map at half the input resolution; `offsets`
    (h, w, 4) holds, per centre, the displacements to both end points. Keep centres that are
    3x3 local maxima above `score_thr`, then drop segments shorter than `min_len`.
    """
    import cv2

    scores = np.asarray(scores, np.float32)
    offsets = np.asarray(offsets, np.float32)
    if scores.ndim != 2 or offsets.shape != scores.shape + (4,):
        raise ValueError(f"expected scores (h, w) and offsets (h, w, 4); got {scores.shape} and {offsets.shape}")
    peaks = cv2.dilate(scores, np.ones((3, 3), np.uint8))  # 3x3 max filter
    ys, xs = np.nonzero((scores >= peaks) & (scores >= score_thr))
    if len(xs) == 0:
        return np.zeros((0, 4), np.float32)
    d = offsets[ys, xs]  # (K, 4): dx1, dy1, dx2, dy2
    lines = np.stack([xs + d[:, 0], ys + d[:, 1], xs + d[:, 2], ys + d[:, 3]], axis=1) * 2.0
    length = np.hypot(lines[:, 2] - lines[:, 0], lines[:, 3] - lines[:, 1])
    order = np.argsort(-scores[ys, xs], kind="stable")  # strongest first, for stable output
    lines = lines[order][length[order] >= min_len]
    return lines.astype(np.float32)


def draw_lines(size: tuple[int, int], lines: np.ndarray) -> np.ndarray:
    """White anti-aliasing-free segments on black, as ControlNet's M-LSD map (HxW uint8)."""
    import cv2

    w, h = size
    canvas = np.zeros((h, w), np.uint8)
    thickness = max(1, round(max(w, h) / 512))
    for x1, y1, x2, y2 in np.round(lines).astype(int):
        cv2.line(canvas, (x1, y1), (x2, y2), 255, thickness)
    return canvas


def _load_mlsd(device: str) -> Any:
    return _ort_session(weights.path("mlsd") / MLSD_FILE, device)


def mlsd_lines(rgb: np.ndarray, session: Any) -> np.ndarray:
    """M-LSD segments in the image's own pixel coordinates."""
    inp = session.get_inputs()[0]
    side = int(inp.shape[1])
    outputs = {o.name: o for o in session.get_outputs()}
    score_name = next(n for n in outputs if "score" in n)
    offset_name = next(n for n in outputs if "offset" in n)
    scores, offsets = session.run([score_name, offset_name], {inp.name: mlsd_input(rgb, side)})
    lines = mlsd_decode(scores[0, :, :, 0], offsets[0])
    h, w = rgb.shape[:2]
    return lines * np.array([w / side, h / side, w / side, h / side], np.float32)


def fld_lines(rgb: np.ndarray) -> np.ndarray:
    """Classical segments from OpenCV's FastLineDetector (ximgproc), min length 20 px."""
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    fld = cv2.ximgproc.createFastLineDetector(length_threshold=int(MLSD_MIN_LEN), do_merge=True)
    found = fld.detect(gray)
    return np.zeros((0, 4), np.float32) if found is None else found.reshape(-1, 4)


class LineDetection(FallbackTool):
    spec = ToolSpec(
        name="Line Detection On Image",
        description=(
            "useful when you want to find the straight lines of an image, "
            "e.g. as a line map for generating a new image. "
            "like: detect the straight lines of this image, or straight line detection on image, "
            "or perform straight line detection on this image, or get the line map of this picture"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="line",
        aliases=("Straight Line Detection On Image", "MLSD Detection On Image", "Line Detection"),
        paraphrases=(
            "useful for extracting the straight line segments of a picture, such as building edges or wireframes. "
            "like: find the straight lines in this photo, or draw the line segments of this image",
            "useful when the user asks for an M-LSD style map of the straight lines in an image. "
            "like: detect lines in this picture, or mlsd this image",
        ),
    )
    model = "M-LSD large 512 (ONNX, weights 'mlsd'); without them OpenCV FastLineDetector (classical)"
    learned = True
    weights = ("mlsd",)  # preferred, not required: see FallbackTool
    packages = ("cv2", "onnxruntime")
    memory_mb = 300  # measured: +426 MB process RSS including onnxruntime itself

    def backend(self) -> str:
        return "M-LSD" if _weights_ok("mlsd") else "FastLineDetector"

    def run(self, store: ImageStore, image_path: Image.Image) -> ToolResult:
        rgb = to_np(image_path)
        if self.backend() == "M-LSD":
            session = CACHE.get(f"mlsd@{self.device}", lambda: _load_mlsd(self.device), self.memory_mb)
            return ToolResult(image=from_np(draw_lines(image_path.size, mlsd_lines(rgb, session))))
        lines = fld_lines(rgb)
        return ToolResult(image=from_np(draw_lines(image_path.size, lines)),
                          text=_fallback_note("OpenCV FastLineDetector (classical) instead of M-LSD", "mlsd"))


# -- HED soft boundaries -----------------------------------------------------------------------

HED_MEAN_BGR = np.array([104.00699, 116.66877, 122.67892], np.float32)  # Caffe BSDS training mean
HED_SIDE = 512  # HED costs ~1.5 s at 512x512 on 2 CPU cores and grows with pixels; maps are upscaled


def hed_input(rgb: np.ndarray) -> np.ndarray:
    """[1, 3, H, W] float32: BGR minus the Caffe mean, as the original HED was trained."""
    bgr = rgb[:, :, ::-1].astype(np.float32) - HED_MEAN_BGR
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])


def _load_hed(device: str) -> Any:
    return _ort_session(weights.path("hed") / "hed.onnx", device)


def hed_map(rgb: np.ndarray, session: Any, side: int = HED_SIDE) -> np.ndarray:
    """Soft boundary probabilities in [0, 1], float32 HxW at the image's size."""
    h, w = rgb.shape[:2]
    small = resize_to(rgb, _fit_side((w, h), side))
    inp = session.get_inputs()[0].name
    (edges,) = session.run(None, {inp: hed_input(small)})
    soft = np.clip(edges[0, 0], 0.0, 1.0).astype(np.float32)
    return np.clip(resize_to(soft, (w, h)), 0.0, 1.0)


class HedDetection(Tool):
    spec = ToolSpec(
        name="Hed Detection On Image",
        description=(
            "useful when you want to find the soft HED boundaries of an image, "
            "e.g. as a boundary map for generating a new image. "
            "like: detect the soft hed boundary of this image, or hed boundary detection on image, "
            "or perform hed boundary detection on this image, or get the soft hed boundary image of this picture"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="hed",
        aliases=("HED Detection On Image", "Soft Hed Boundary Detection On Image", "HED Boundary Detection"),
        paraphrases=(
            "useful for getting a soft boundary map (holistically-nested edge detection) of a picture. "
            "like: show the hed edges of this photo, or make a soft edge map of this image",
            "useful when the user wants the main object outlines of an image as soft white lines on black. "
            "like: hed this image, or find the soft boundaries in this picture",
        ),
    )
    model = "HED, VGG16 trained on BSDS500 (ONNX, weights 'hed')"
    learned = True
    weights = ("hed",)
    packages = ("onnxruntime", "cv2")
    memory_mb = 450

    def run(self, store: ImageStore, image_path: Image.Image) -> ToolResult:
        session = CACHE.get(f"hed@{self.device}", lambda: _load_hed(self.device), self.memory_mb)
        return ToolResult(image=from_np(hed_map(to_np(image_path), session)))


# -- scribbles -------------------------------------------------------------------------------


def thin_edges(soft: np.ndarray, threshold: int = 127, sigma: float = 3.0) -> np.ndarray:
    """Binary 0/255 ridges of a soft edge map (uint8), as ControlNet's scribble annotator
    thins HED: blur, keep pixels that are the maximum along at least one of four directions
    (a loose non-maximum suppression: ties along a perfectly uniform line all survive), and
    keep those brighter than `threshold`."""
    import cv2

    blurred = cv2.GaussianBlur(soft.astype(np.float32), (0, 0), sigma)
    kernels = [  # horizontal, vertical and both diagonal neighbourhoods
        np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], np.uint8),
        np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], np.uint8),
        np.eye(3, dtype=np.uint8),
        np.fliplr(np.eye(3, dtype=np.uint8)).copy(),
    ]
    ridge = np.zeros_like(blurred, dtype=bool)
    for k in kernels:
        ridge |= cv2.dilate(blurred, k) == blurred
    return np.where(ridge & (blurred > threshold), 255, 0).astype(np.uint8)


def drop_specks(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Remove 8-connected components smaller than min_pixels from a 0/255 mask."""
    import cv2

    if min_pixels <= 0:
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False  # background
    return np.where(keep[labels], 255, 0).astype(np.uint8)


def scribble_from_edges(soft: np.ndarray, sigma: float = 3.0, min_stroke: int = 0) -> np.ndarray:
    """ControlNet's "fake scribble" recipe: thin ridges, then blur and binarise generously,
    which turns them into even, hand-drawn-looking strokes (white on black, 0/255).
    `sigma` suits HED's thick soft lines; thinner, busier inputs (XDoG) need less smoothing
    and dropping ridges shorter than `min_stroke` pixels, or the scribble turns to clutter."""
    import cv2

    ridges = drop_specks(thin_edges(soft, sigma=sigma), min_stroke)
    strokes = cv2.GaussianBlur(ridges, (0, 0), 3.0)
    return np.where(strokes > 4, 255, 0).astype(np.uint8)


def xdog(gray: np.ndarray, sigma: float = 1.5, k: float = 1.6, gamma: float = 0.98, phi: float = 200.0,
         eps: float = -0.005) -> np.ndarray:
    """Extended difference of Gaussians (Winnemoeller et al. 2012): line drawing as 0..255,
    strong lines bright (inverted from the paper's dark-on-white so it reads like HED)."""
    import cv2

    g = gray.astype(np.float32) / 255.0  # eps and phi are on this 0..1 scale
    g1 = cv2.GaussianBlur(g, (0, 0), sigma)
    g2 = cv2.GaussianBlur(g, (0, 0), sigma * k)
    d = g1 - gamma * g2
    white = np.where(d >= eps, 1.0, 1.0 + np.tanh(phi * (d - eps)))  # 1 = paper, toward 0 = ink
    return ((1.0 - np.clip(white, 0.0, 1.0)) * 255.0).astype(np.uint8)


XDOG_RIDGE_SIGMA = 1.5  # XDoG lines are ~3 px wide: HED's sigma 3 would smooth them away
XDOG_MIN_STROKE = 60  # px; XDoG also outlines texture, which would fill the scribble with specks


class SketchDetection(FallbackTool):
    spec = ToolSpec(
        name="Sketch Detection On Image",
        description=(
            "useful when you want to turn an image into a scribble or sketch, "
            "e.g. as a sketch for generating a new image. "
            "like: generate a scribble of this image, or generate a sketch from this image, "
            "or detect the sketch from this image, or draw this picture as a sketch"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="scribble",
        asked_as=(r"\b(?:sketch|scribble)",),
        aliases=("Scribble Detection On Image", "Sketch Detection", "Scribble Detection"),
        paraphrases=(
            "useful for making a rough hand-drawn scribble out of a photo. "
            "like: make a scribble of this photo, or turn this picture into a doodle",
            "useful when the user wants a simple white-on-black sketch of the main shapes of an image. "
            "like: sketch this image, or extract a scribble from this picture",
        ),
    )
    model = "HED (ONNX, weights 'hed') thinned into a scribble as ControlNet; without them XDoG (classical)"
    learned = True
    weights = ("hed",)  # preferred, not required: see FallbackTool
    packages = ("cv2", "onnxruntime")
    memory_mb = 450

    def backend(self) -> str:
        return "HED" if _weights_ok("hed") else "XDoG"

    def run(self, store: ImageStore, image_path: Image.Image) -> ToolResult:
        rgb = to_np(image_path)
        if self.backend() == "HED":
            session = CACHE.get(f"hed@{self.device}", lambda: _load_hed(self.device), self.memory_mb)
            soft = (hed_map(rgb, session) * 255.0).astype(np.uint8)
            return ToolResult(image=from_np(scribble_from_edges(soft)))
        soft = xdog(stretch_contrast(to_gray(image_path)))  # XDoG's thresholds are absolute
        return ToolResult(image=from_np(scribble_from_edges(soft, sigma=XDOG_RIDGE_SIGMA, min_stroke=XDOG_MIN_STROKE)),
                          text=_fallback_note("XDoG line extraction (classical) instead of HED", "hed"))


# -- segment everything ------------------------------------------------------------------------

SEG_SIDE = 768  # graph segmentation runs at most at this size; labels are upscaled (nearest)
SAM_POINTS_PER_BATCH = 64  # prompts per decoder pass: bounded memory on CPU
# SAM's automatic generator prompts a 32x32 point grid; its mask post-processing alone takes
# ~25 s on 2 CPU cores, so on CPU a 16x16 grid (4x fewer prompts, small parts may be missed).
SAM_POINTS_PER_SIDE = {"cpu": 16, "cuda": 32}


def palette(n: int, seed: int = 0) -> np.ndarray:
    """n distinct-looking, fixed colours (n, 3) uint8: golden-ratio hues, varied value.

    Black is never used: it means "no segment" in the map."""
    import colorsys

    rng = np.random.default_rng(seed)
    hues = (np.arange(n) * 0.618033988749895 + rng.random()) % 1.0
    values = 0.65 + 0.35 * ((np.arange(n) * 7) % 5) / 4
    rgb = [colorsys.hsv_to_rgb(h, 0.75, v) for h, v in zip(hues, values)]
    return (np.asarray(rgb).reshape(n, 3) * 255).astype(np.uint8)


def color_segments(labels: np.ndarray) -> np.ndarray:
    """HxWx3 colour-coded map: each label one flat colour, the largest segment first in the
    palette so a map's colours depend on the content, not on label numbering. Labels < 0
    (unassigned) stay black."""
    flat = labels.ravel()
    valid = flat >= 0
    ids, inverse, counts = np.unique(flat[valid], return_inverse=True, return_counts=True)
    rank = np.empty(len(ids), np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(ids))
    colors = palette(max(1, len(ids)))
    out = np.zeros((flat.size, 3), np.uint8)
    out[valid] = colors[rank[inverse.ravel()]]
    return out.reshape(labels.shape + (3,))


def masks_to_labels(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Label image from overlapping masks: paint the largest first so smaller parts (a face
    on a body) stay visible on top; pixels no mask covers get -1."""
    labels = np.full(shape, -1, np.int32)
    order = sorted(range(len(masks)), key=lambda i: -int(np.count_nonzero(masks[i])))
    for label, i in enumerate(order):
        labels[np.asarray(masks[i], bool)] = label
    return labels


def graph_segments(rgb: np.ndarray) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph segmentation (OpenCV ximgproc): int32 labels HxW.
    The scale k and min size grow with the image so a photo gives tens to ~200 regions."""
    import cv2

    h, w = rgb.shape[:2]
    small = resize_to(rgb, _fit_side((w, h), SEG_SIDE))
    area = small.shape[0] * small.shape[1]
    seg = cv2.ximgproc.segmentation.createGraphSegmentation(sigma=0.8, k=300.0, min_size=max(50, area // 1000))
    labels = seg.processImage(cv2.cvtColor(small, cv2.COLOR_RGB2BGR)).astype(np.int32)
    return resize_to(labels, (w, h), nearest=True) if labels.shape != (h, w) else labels


def sam_dir() -> Path | None:
    """checkpoints/sam/ when its weights are fetched (a transformers SAM folder), else None."""
    return weights.path("sam") if _weights_ok("sam") else None


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode an uncompressed COCO-style RLE (column-major runs, starting with zeros)."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], np.int64)
    values = np.arange(len(counts)) % 2 == 1  # runs alternate 0, 1, 0, ...
    return np.repeat(values, counts).reshape(w, h).T


def _load_sam(path: Path, device: str) -> Any:
    """transformers' automatic mask generation pipeline, with its last step (non-maximum
    suppression between masks) done by OpenCV: the stock step needs torchvision, whose
    PyPI wheels only load next to a CUDA build of torch."""
    import cv2
    import torch
    from transformers import MaskGenerationPipeline, pipeline

    class OpenCvNmsMaskGeneration(MaskGenerationPipeline):
        def postprocess(self, model_outputs: list[dict[str, Any]], crops_nms_thresh: float = 0.7,
                        **_: Any) -> dict[str, Any]:
            rles = [rle for out in model_outputs for rle in out["masks"]]
            if not rles:
                return {"masks": [], "scores": np.zeros(0, np.float32)}
            scores = torch.cat([out["iou_scores"] for out in model_outputs]).float().cpu().numpy()
            boxes = torch.cat([out["boxes"] for out in model_outputs]).float().cpu().numpy()
            xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).tolist()
            keep = np.asarray(cv2.dnn.NMSBoxes(xywh, scores.tolist(), 0.0, crops_nms_thresh), np.int64).reshape(-1)
            return {"masks": [rle_to_mask(rles[i]) for i in keep], "scores": scores[keep]}

    return pipeline("mask-generation", model=str(path), device=device, pipeline_class=OpenCvNmsMaskGeneration)


def sam_masks(generator: Any, image: Image.Image, points_per_side: int, **thresholds: float) -> list[np.ndarray]:
    """SAM masks prompted by a points_per_side^2 grid; `thresholds` (pred_iou_thresh,
    stability_score_thresh) default to SAM's 0.88 / 0.95."""
    out = generator(image, points_per_batch=SAM_POINTS_PER_BATCH, points_per_crop=points_per_side, **thresholds)
    return [np.asarray(m, bool) for m in out["masks"]]


class SegmentImage(FallbackTool):
    spec = ToolSpec(
        name="Segment the Image",
        description=(
            "useful when you want to segment every part of an image, not one given object, "
            "e.g. as a segmentation map for generating a new image. like: segment all the objects in this image, "
            "or generate segmentations on this image, or segment the image, or perform segmentation on this image"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="seg",
        aliases=("Segment The Image", "Segment Everything", "Segment Anything On Image", "Image Segmentation"),
        paraphrases=(
            "useful for splitting a whole picture into regions, each painted in its own colour. "
            "like: give me the segmentation map of this photo, or segment everything in this picture",
            "useful when the user wants all regions of an image segmented at once, not a single named object. "
            "like: segment this photo, or show the segments of this image",
        ),
    )
    model = ("SAM automatic masks (transformers, weights 'sam'); "
             "without them Felzenszwalb graph over-segmentation (OpenCV, classical)")
    learned = True
    weights = ("sam",)  # preferred, not required: see FallbackTool
    packages = ("cv2",)
    memory_mb = 1500  # SAM ViT-B with its mask decoder batches; the classical path needs ~50 MB
    sam_thresholds: ClassVar[dict[str, float]] = {}  # SAM's own defaults (predicted IoU 0.88, stability 0.95)

    def backend(self) -> str:
        have_stack = all(importlib.util.find_spec(p) for p in ("torch", "transformers"))
        return "SAM" if have_stack and sam_dir() is not None else "graph"

    def availability(self) -> Availability:
        base = super().availability()
        if base.ok and self.device != "cpu" and self.backend() == "SAM":
            from gpt4tools.hardware import device_problem  # SAM runs on torch: the device must exist

            if problem := device_problem(self.device):
                return Availability(False, problem)
        return base

    def run(self, store: ImageStore, image_path: Image.Image) -> ToolResult:
        h, w = image_path.height, image_path.width
        if self.backend() == "SAM":
            path = sam_dir()
            assert path is not None  # backend() checked it
            # Not "sam@device": tools/masks.py caches SAM's (processor, model) under that key.
            generator = CACHE.get(f"sam-mask-generation@{self.device}", lambda: _load_sam(path, self.device),
                                  self.memory_mb)
            grid = SAM_POINTS_PER_SIDE["cpu" if self.device == "cpu" else "cuda"]
            masks = sam_masks(generator, image_path, grid, **self.sam_thresholds)
            if masks:
                return ToolResult(image=from_np(color_segments(masks_to_labels(masks, (h, w)))))
            # SAM found nothing worth keeping (e.g. a blank image): say so rather than draw a black map.
            return ToolResult(text="The segmentation model found no regions in this image.")
        labels = graph_segments(to_np(image_path))
        return ToolResult(image=from_np(color_segments(labels)),
                          text=_fallback_note("classical graph over-segmentation (regions, not objects) instead of SAM",
                                              "sam"))


__all__ = ["EdgeDetection", "LineDetection", "HedDetection", "SketchDetection", "SegmentImage"]
