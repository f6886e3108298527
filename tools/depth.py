"""Monocular depth and the normal map derived from it, both from one depth model
(`dpt-depth`: a transformers depth-estimation checkpoint such as DPT/MiDaS; loaded through
the Auto classes, so a Depth-Anything folder works too).

The depth map is relative inverse depth ("disparity", near = bright), min-max scaled to
0..255, which is what the depth ControlNet was trained on. The normal map follows the
annotator that ControlNet 1.0 and GPT4Tools used with DPT: Sobel gradients of the raw
prediction give the surface's x/y slope, a constant z (2*pi) sets how strongly slopes tilt
the normal, pixels in the far background (normalised depth < 0.4) are treated as flat, and
the unit vector is stored as RGB = normal * 127.5 + 127.5 (flat = (127, 127, 255)).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from gpt4tools.hardware import tool_dtype
from gpt4tools.images import ImageStore
from gpt4tools.tool import Arg, ToolResult, ToolSpec
from tools._image import from_np, resize_to
from tools._torch import TorchTool, cached, checkpoint

DEPTH_FP32_MB = 500  # DPT-Hybrid MiDaS (123M parameters); DPT-Large would be ~1400
BACKGROUND = 0.4  # normalised depth below which the original annotator zeroed the gradients
NORMAL_Z = 2 * np.pi  # constant z component: larger = flatter-looking normals (as the original)


def _depth_model(device: str) -> tuple[Any, Any]:
    """(image processor, depth model) from checkpoints/dpt-depth, loaded once per device."""

    def load() -> tuple[Any, Any]:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        path = checkpoint("dpt-depth")
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        model = AutoModelForDepthEstimation.from_pretrained(path, dtype=tool_dtype(device), local_files_only=True)
        return processor, model.to(device).eval()

    return cached("dpt-depth", device, load, DEPTH_FP32_MB)


def predict_depth(img: Image.Image, device: str) -> np.ndarray:
    """Raw relative inverse depth (HxW float32) at the model's output resolution."""
    import torch

    processor, model = _depth_model(device)
    inputs = processor(images=img, return_tensors="pt").to(device)
    with torch.inference_mode():
        depth = model(pixel_values=inputs["pixel_values"].to(model.dtype)).predicted_depth
    return depth[0].float().cpu().numpy()


def normalise(depth: np.ndarray) -> np.ndarray:
    """Depth scaled to 0..1 (a constant map becomes all zeros rather than NaN)."""
    lo, hi = float(depth.min()), float(depth.max())
    return (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth, dtype=np.float32)


def depth_to_image(depth: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A grey RGB depth map of `size` (width, height): near = white."""
    scaled = resize_to(depth.astype(np.float32), size)  # bilinear: depth is smooth
    return from_np((normalise(scaled) * 255.0 + 0.5).astype(np.uint8))


def depth_to_normal(depth: np.ndarray, background: float = BACKGROUND, z: float = NORMAL_Z) -> np.ndarray:
    """Normal map (HxWx3 uint8) of a relative inverse depth map, as ControlNet's DPT annotator.

    The gradients are taken on the raw prediction (not the 0..1 copy), so their scale is the
    model's: with MiDaS-style outputs that makes object surfaces clearly tilted while the
    far background, masked out, stays flat.
    """
    import cv2

    d = depth.astype(np.float32)
    gx = cv2.Sobel(d, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(d, cv2.CV_32F, 0, 1, ksize=3)
    far = normalise(d) < background
    gx[far] = 0.0
    gy[far] = 0.0
    normal = np.stack([gx, gy, np.full_like(gx, z)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    return np.clip(normal * 127.5 + 127.5, 0, 255).astype(np.uint8)


class DepthTool(TorchTool):
    """Shared backing of the depth and normal tools."""

    model = "DPT / MiDaS monocular depth (transformers)"
    learned = True
    weights = ("dpt-depth",)
    packages = ("torch", "transformers")
    memory_mb = DEPTH_FP32_MB


class Image2Depth(DepthTool):
    spec = ToolSpec(
        name="Predict Depth On Image",
        description=(
            "useful when you want to estimate the depth of the image, that is, how far each part of the scene is "
            "from the camera, and get a depth map. like: generate the depth from this image, or detect the depth map "
            "of this image, or predict the depth for this image"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="depth",
        asked_as=(r"(?<![-\w])depth\b(?!\s+of\s+field)", r"\b(?:near|close)(?:er)?\b.{0,25}\bfar(?:ther)?\b",
                  r"\bhow\s+far\s+(?:away\s+)?(?:is|are)\b", r"\bdistances?\s+(?:from|to)\s+the\s+camera\b"),
        aliases=("Predict Depth", "Depth Estimation On Image"),
        paraphrases=(
            (
                "use this to get a depth map showing what is near and what is far in a picture, like: estimate depth "
                "here, or make a depth image of this photo"
            ),
            (
                "helpful for measuring the relative distance of every pixel from the camera, like: how deep is this "
                "scene, or compute the depth of this image"
            ),
        ),
    )

    def run(self, store: ImageStore, image_path: Image.Image) -> ToolResult:
        return ToolResult(image=depth_to_image(predict_depth(image_path, self.device), image_path.size))


class Image2Normal(DepthTool):
    spec = ToolSpec(
        name="Predict Normal Map On Image",
        description=(
            "useful when you want to estimate the surface normals of the image, that is, which way each surface "
            "faces, and get a normal map. like: generate the normal map from this image, or predict normals of this "
            "image"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="normal",
        asked_as=(r"\bnormal\s*maps?\b", r"\bsurface\s+normals?\b"),
        aliases=("Predict Normal Map", "Normal Map On Image"),
        paraphrases=(
            (
                "use this to compute a normal map that shows the orientation of the surfaces in a picture, like: get "
                "the normals of this photo"
            ),
            (
                "helpful for turning a photo into a map of surface directions, like: make a normal map of this image, "
                "or show the surface normals"
            ),
        ),
    )
    model = "DPT / MiDaS depth (transformers) + Sobel normals (ControlNet annotator)"

    def run(self, store: ImageStore, image_path: Image.Image) -> ToolResult:
        normal = depth_to_normal(predict_depth(image_path, self.device))
        return ToolResult(image=from_np(resize_to(normal, image_path.size)))
