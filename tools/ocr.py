"""Text detection and recognition (OCR) with RapidOCR's bundled PP-OCRv6 models.

`read_text` is the reusable function (captioning uses it too); `TextDetection` is the
GPT4Tools tool "Text Detection On Image". The models ship inside the `rapidocr` wheel, and
they are passed by explicit path so RapidOCR never tries to download anything.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from gpt4tools import weights
from gpt4tools.images import ImageStore
from gpt4tools.model_cache import CACHE
from gpt4tools.tool import Arg, Tool, ToolResult, ToolSpec, format_boxes

Box = tuple[float, float, float, float]

# Measured on the assets and on group photos: true lines score 0.97-1.0; below 0.8 came a
# garbled line of page.png (0.58) and a "0" read in the cat's face (0.77).
MIN_SCORE = 0.8
_MEMORY_MB = 450  # process RSS grew 0.42-0.51 GB with the three sessions loaded


@dataclass(frozen=True)
class TextLine:
    text: str
    score: float
    box: Box  # x1, y1, x2, y2 in pixels (the axis-aligned hull of RapidOCR's quadrilateral)


def _model_paths() -> dict[str, Path]:
    models = weights.path("rapidocr") / "models"  # a `bundled` entry: the rapidocr package folder
    return {
        "Det": models / "PP-OCRv6_det_small.onnx",
        "Cls": models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        "Rec": models / "PP-OCRv6_rec_small.onnx",
    }


def _cuda_index(device: str) -> int | None:
    """0 for "cuda", 1 for "cuda:1", None for anything that is not CUDA."""
    if not device.startswith("cuda"):
        return None
    _, _, idx = device.partition(":")
    return int(idx) if idx.isdigit() else 0


def _load_engine(device: str) -> tuple[Any, threading.Lock]:
    from rapidocr import RapidOCR

    params: dict[str, Any] = {"Global.log_level": "error", "Global.text_score": 0.0}
    for section, file in _model_paths().items():  # explicit paths: RapidOCR never downloads
        params[f"{section}.model_path"] = str(file)
    gpu = _cuda_index(device)
    if gpu is not None:  # RapidOCR falls back to CPU itself when onnxruntime has no CUDA
        params["EngineConfig.onnxruntime.use_cuda"] = True
        params["EngineConfig.onnxruntime.cuda_ep_cfg.device_id"] = gpu
    # One engine is shared by every session; its sessions are loaded lazily, so serialise calls.
    return RapidOCR(params=params), threading.Lock()


def _has_word(text: str) -> bool:
    # Lines of pure punctuation ("***" on the stars of a flag scored 0.93) are not text.
    return any(ch.isalnum() for ch in text)


def read_text(img: Image.Image, device: str = "cpu", min_score: float = MIN_SCORE) -> list[TextLine]:
    """Lines of text, in RapidOCR's reading order (top to bottom, then left to right)."""
    engine, lock = CACHE.get(f"rapidocr@{device}", lambda: _load_engine(device), _MEMORY_MB)
    with lock:
        out = engine(img.convert("RGB"))
    lines = []
    for quad, text, score in zip(out.boxes if out.boxes is not None else [], out.txts or (), out.scores or ()):
        text = text.strip()
        if score < min_score or not _has_word(text):
            continue
        xs = [float(p[0]) for p in quad]
        ys = [float(p[1]) for p in quad]
        box = (max(0.0, min(xs)), max(0.0, min(ys)), min(float(img.width), max(xs)), min(float(img.height), max(ys)))
        lines.append(TextLine(text, float(score), box))
    return lines


NO_TEXT = "No text found"  # the observation when there is none (the data builder writes the same)


class TextDetection(Tool):
    spec = ToolSpec(
        name="Text Detection On Image",
        description=(
            "useful when you want to read or find the text written in an image, like: what does "
            "the sign say, read the text in this photo, recognize the words on the page"
        ),
        args=(Arg("image_path", "image"),),
        output="text",
        slug="ocr",
        seen=False,
        aliases=("Text Detection", "OCR", "Recognize Text On Image"),
        paraphrases=(
            "useful when you need the words that appear in a picture, like: transcribe the "
            "label, what is written on the board, read the scanned page",
            "useful for optical character recognition on a photo or document, like: extract the "
            "text from this image, which price is shown on the menu",
        ),
    )
    model = "RapidOCR 3.10 (PP-OCRv6 small text detector + recogniser, ONNX)"
    learned = True
    weights = ("rapidocr",)
    packages = ("rapidocr", "onnxruntime")
    memory_mb = _MEMORY_MB

    def run(self, store: ImageStore, image_path: Image.Image, **_: Any) -> ToolResult:
        lines = read_text(image_path, self.device)
        if not lines:
            return ToolResult(text=NO_TEXT)
        return ToolResult(text=format_boxes([(line.text, line.box) for line in lines]))
