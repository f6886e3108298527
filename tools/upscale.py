"""Image super-resolution with Swin2SR (transformers), from checkpoints/swin2sr.

The input's long side is capped (shrunk first if larger): Swin2SR keeps full-resolution
feature maps (180 channels per input pixel) through all 36 transformer blocks, about 24
MFLOP per input pixel, so time and memory grow with the pixel count. Measured with the
classical x2 architecture on this project's 2-core CPU (busy machine, random weights):
64x64 in 16 s, 128x128 in 37 s, 192x192 in 88 s (1.3 GB peak); 512x512 had not finished
after 10 minutes. Hence 128 px on CPU and 512 px (a 1024 px result) on a GPU.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image

from gpt4tools.images import ImageStore
from gpt4tools.tool import Arg, ToolResult, ToolSpec
from tools._torch import TorchTool, cached, checkpoint, torch_dtype

SWIN2SR_FP32_MB = 300  # 12M parameters; activations come on top (see the module docstring)


def _sr_model(device: str) -> tuple[Any, Any]:
    """(image processor, Swin2SR model) from checkpoints/swin2sr, loaded once per device."""

    def load() -> tuple[Any, Any]:
        from transformers import AutoImageProcessor, Swin2SRForImageSuperResolution

        path = checkpoint("swin2sr")
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        model = Swin2SRForImageSuperResolution.from_pretrained(path, dtype=torch_dtype(device), local_files_only=True)
        return processor, model.to(device).eval()

    return cached("swin2sr", device, load, SWIN2SR_FP32_MB)


def cap_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` (width, height) shrunk so its long side is at most `max_side`, aspect kept."""
    w, h = size
    if max(w, h) <= max_side:
        return w, h
    scale = max_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


class SuperResolution(TorchTool):
    spec = ToolSpec(
        name="Image Super-Resolution",
        description=(
            "useful when you want to enlarge an image and make it sharper, increasing its resolution. like: "
            "upscale this image, or make this photo high resolution, or enhance the resolution of this picture"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="sr",
        seen=False,
        aliases=("Image Super Resolution", "Super-Resolution", "Upscale Image"),
        paraphrases=(
            (
                "use this to upscale a small or blurry picture to more pixels with restored detail, like: make this "
                "image bigger and clearer"
            ),
            "helpful for increasing the resolution of a photo, like: enhance this picture, or upsample this image",
        ),
    )
    model = "Swin2SR (transformers)"
    learned = True
    weights = ("swin2sr",)
    packages = ("torch", "transformers")
    memory_mb = SWIN2SR_FP32_MB
    max_input_side: ClassVar[int] = 512  # on a GPU
    max_input_side_cpu: ClassVar[int] = 128

    def input_cap(self) -> int:
        return self.max_input_side if self.device.startswith("cuda") else self.max_input_side_cpu

    def run(self, store: ImageStore, image_path: Image.Image) -> ToolResult:
        import torch

        processor, model = _sr_model(self.device)
        cap = self.input_cap()
        w, h = cap_size(image_path.size, cap)
        note = ""
        if (w, h) != image_path.size:
            was = f"{image_path.width}x{image_path.height}"
            note = f" (the input was first shrunk from {was}; the limit on {self.device} is {cap} px)"
        img = image_path.resize((w, h), Image.Resampling.LANCZOS) if note else image_path
        pixels = processor(img, return_tensors="pt")["pixel_values"].to(self.device, model.dtype)
        with torch.inference_mode():
            out = model(pixel_values=pixels).reconstruction
        scale = model.config.upscale
        # The processor pads to a multiple of the window size; cut the padding back off.
        arr = out[0, :, : h * scale, : w * scale].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        result = Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8), "RGB")
        return ToolResult(image=result, text=f"Upscaled x{scale} from {w}x{h} to {result.width}x{result.height}{note}.")
