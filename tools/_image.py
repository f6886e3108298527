"""Small pure image helpers shared by the tool families (no models, no I/O).

Conventions: PIL images are RGB; NumPy arrays are HxW (grey) or HxWx3 (RGB) uint8 unless a
function says otherwise. OpenCV wants BGR, so convert at the call site with `to_bgr`.
"""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


def to_np(img: Image.Image) -> np.ndarray:
    """RGB uint8 array (HxWx3) of a PIL image."""
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def to_bgr(img: Image.Image) -> np.ndarray:
    """BGR uint8 array for OpenCV (a contiguous copy: OpenCV refuses negative strides)."""
    return np.ascontiguousarray(to_np(img)[:, :, ::-1])


def to_gray(img: Image.Image) -> np.ndarray:
    """Luma (ITU-R 601, as PIL's "L" mode) as an HxW uint8 array."""
    return np.asarray(img.convert("L"), dtype=np.uint8)


def from_np(arr: np.ndarray) -> Image.Image:
    """PIL RGB image from an HxW or HxWx3 array; floats are read as 0..1 and clipped."""
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a, a, a], axis=-1)  # condition maps are stored as RGB, like ControlNet's
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected HxW or HxWx3, got shape {a.shape}")
    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def stretch_contrast(gray: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """Map the low..high percentile of a grey uint8 array to 0..255 (clipping the tails), so
    measures with absolute thresholds behave the same on dark or flat photos."""
    lo, hi = np.percentile(gray, (low_pct, high_pct))
    return np.clip((gray.astype(np.float32) - lo) * (255.0 / max(1.0, hi - lo)), 0, 255).astype(np.uint8)


def label_color(label: str) -> tuple[int, int, int]:
    """A stable, saturated colour per label, so the same class looks the same in every image."""
    hue = int(hashlib.md5(label.encode()).hexdigest()[:6], 16) / 0xFFFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow bundles a scalable default font (FreeType builds); no system font needed.
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # very old Pillow or no FreeType: fixed bitmap font
        return ImageFont.load_default()


def draw_boxes(img: Image.Image, boxes: list[tuple[str, Box]]) -> Image.Image:
    """A copy of `img` with each (label, (x1, y1, x2, y2)) drawn as a box with a readable tag.

    Line width and text size scale with the image; the tag sits above the box (inside it
    when the box touches the top edge) on a filled background in the box colour, with black
    or white text, whichever contrasts more.
    """
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    side = min(out.size)
    width = max(2, side // 200)
    font = _font(max(12, side // 32))
    for label, box in boxes:
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = sorted((max(0.0, x1), min(out.width - 1.0, x2)))
        y1, y2 = sorted((max(0.0, y1), min(out.height - 1.0, y2)))
        color = label_color(label)
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        if not label:
            continue
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left + 2 * width, bottom - top + 2 * width
        ty = y1 - th if y1 - th >= 0 else y1  # above the box, or inside when there is no room
        tx = min(x1, max(0.0, out.width - tw))
        draw.rectangle((tx, ty, tx + tw, ty + th), fill=color)
        luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        draw.text((tx + width - left, ty + width - top), label, fill=(0, 0, 0) if luma > 140 else (255, 255, 255),
                  font=font)
    return out


def resize_to(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize an array to (width, height) with OpenCV: area-averaging down, bilinear up."""
    import cv2  # late: keeps this module importable without OpenCV for box drawing

    w, h = size
    if arr.shape[1] == w and arr.shape[0] == h:
        return arr
    if nearest:
        interp = cv2.INTER_NEAREST
    elif w < arr.shape[1] and h < arr.shape[0]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    return cv2.resize(arr, (w, h), interpolation=interp)
