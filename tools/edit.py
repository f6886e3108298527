"""Editing a photo with diffusion: InstructPix2Pix (follow a written instruction) and
replacing one object (segment it, then Stable Diffusion inpainting inside its mask).

Both work at SD 1.5's resolution (long side 512) and return an image of the input's size.
The replaced image is pasted back through a feathered mask, so pixels away from the object
keep their exact original values (the VAE round trip would otherwise soften the whole photo).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from gpt4tools.hardware import tool_dtype
from gpt4tools.images import ImageStore
from gpt4tools.tool import Arg, Availability, ToolResult, ToolSpec
from tools._torch import cached, checkpoint, seeded
from tools.generate import NEGATIVE_PROMPT, SD_FP32_MB, DiffusionTool, assemble, finish, working_size


def _load_pipeline(cls_name: str, name: str, device: str) -> Any:
    """A diffusers pipeline class (by name) from checkpoints/<name>, loaded once per device."""

    def load() -> Any:
        import diffusers

        cls = getattr(diffusers, cls_name)
        pipe = cls.from_pretrained(checkpoint(name), dtype=tool_dtype(device), local_files_only=True)
        return pipe.to(device)

    return cached(name, device, load, SD_FP32_MB)


class InstructPix2Pix(DiffusionTool):
    spec = ToolSpec(
        name="Instruct Image Using Text",
        description=(
            "useful when you want the style of the image to be like the text, or want to change the image as a "
            "written instruction says. like: make it look like a painting, or make it winter, or turn the sky into "
            "a sunset"
        ),
        args=(Arg("image_path", "image"), Arg("text")),
        output="image",
        slug="pix2pix",
        photo_out=True,
        asked_as=(
            r"\b(?:make|turn|convert|render|redo|restyle|change|transform|paint|draw|give)\b[^.?!]{0,40}\b(?:anime|"
            r"cartoon|comic[- ]book|watercolou?r|oil[- ]painting|pixel[- ]art|van gogh|ghibli|pixar|impressionist|"
            r"cyberpunk|pencil drawing)\b",
            r"\b(?:anime|cartoon|comic[- ]book|watercolou?r|pixel[- ]art|ghibli|pixar|cyberpunk)[- ]"
            r"(?:style|version|look|filter|effect)\b",
            r"\b(?:photo|pic|picture|image|it|this)\b[^.?!]{0,30}\bin\s+(?:the\s+)?style\s+of\b",
            r"\b(?:make|turn|change|convert)\s+(?:it|this|(?:the|my|this|that)\s+(?:photo|pic|picture|image))"
            r"\s+(?:look\s+like|into)\s+(?:a|an)\b",
            r"\bmake\s+(?:it|this|that|(?:the|this|that|my)\s+\w+)\s+(?:look\s+)?(?:snowy|wintery|winter|rainy|"
            r"sunnier|at night|older|younger|vintage|retro|brighter|darker|warmer|colder|more colou?rful)\b",
            r"\b(?:make|turn|convert|change)\b[^.?!]{0,30}\b(?:black\s*(?:and|&|n)\s*white|gr[ae]yscale|sepia)\b",
            r"\bcolou?ri[sz]e\b",
            r"\b(?:add|put)\s+(?:a|an|some)\s+[a-z]+(?:\s+[a-z]+)?\s+(?:to|on|onto|into)\s+(?:the|this|that|her|his|"
            r"my|its|it)\b",
        ),
        aliases=("Instruct Pix2Pix", "Edit Image Using Text"),
        paraphrases=(
            (
                "use this to edit a picture by following a written instruction, like: make it snowy, "
                "or turn this photo into a watercolor"
            ),
            (
                "helpful for restyling or changing an image the way the user tells it to, like: make the cat "
                "look like a tiger, or add fireworks to the sky"
            ),
        ),
    )
    model = "InstructPix2Pix (Stable Diffusion 1.5 fine-tune; diffusers)"
    weights = ("instruct-pix2pix",)
    memory_mb = SD_FP32_MB
    image_guidance_scale = 1.2  # how closely to keep the input image; the original's setting

    def run(self, store: ImageStore, image_path: Image.Image, text: str) -> ToolResult:
        from diffusers import EulerAncestralDiscreteScheduler

        base = _load_pipeline("StableDiffusionInstructPix2PixPipeline", "instruct-pix2pix", self.device)
        pipe = assemble(type(base), base, EulerAncestralDiscreteScheduler)  # the original's scheduler
        w, h = working_size(*image_path.size, self.resolution)
        out = pipe(
            text,
            image=image_path.resize((w, h), Image.Resampling.LANCZOS),
            num_inference_steps=self.steps,
            image_guidance_scale=self.image_guidance_scale,
            guidance_scale=self.guidance_scale,
            generator=seeded(self.seed),
        )
        return finish(out, image_path.size)


def segmenter_availability() -> Availability:
    """Whether `find_mask` can run: it needs what the object-query tools need (a detector)."""
    from tools.objects import QueryTool

    return QueryTool().availability()


def find_mask(img: Image.Image, query: str, device: str) -> np.ndarray | None:
    """Bool HxW mask of `query` in `img`, from the object family's segmenter (detector box ->
    SAM / ISNet / GrabCut), or None when it is not there. Its ToolInputError (not an object
    name) and ToolUnavailable (no detector weights) reach the model unchanged."""
    from tools.masks import segment_object

    mask = segment_object(img, query, device)
    return None if mask is None or not np.any(mask) else np.asarray(mask, dtype=bool)


def grow(mask: np.ndarray, fraction: float = 0.02) -> np.ndarray:
    """The mask dilated by `fraction` of the image's short side: the new object may be a bit
    larger than the old one, and the inpainter needs some surrounding context to blend."""
    from tools.masks import dilate

    return dilate(mask, max(1, round(fraction * min(mask.shape))))


def paste(original: Image.Image, generated: Image.Image, mask: np.ndarray, feather: int) -> Image.Image:
    """`generated` inside `mask`, `original` outside, blended over `feather` pixels at the edge.
    Pixels more than `feather` away from the mask keep their original values exactly."""
    import cv2

    alpha = mask.astype(np.float32)
    if feather > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=feather / 3)  # ~0 beyond 3 sigma
        alpha[alpha < 1e-3] = 0.0
        alpha = np.maximum(alpha, mask)  # the object itself is fully replaced
    a = alpha[..., None]
    out = np.asarray(generated, np.float32) * a + np.asarray(original, np.float32) * (1 - a)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


class ReplaceObject(DiffusionTool):
    spec = ToolSpec(
        name="Replace Something From The Photo",
        description=(
            "useful when you want to replace an object in the photo with another object. like: replace the cat "
            "with a dog, or change the cup into a vase, or swap the car for a bicycle"
        ),
        args=(Arg("image_path", "image"), Arg("object", max_chars=200), Arg("new_object", max_chars=200)),
        output="image",
        slug="replace",
        photo_out=True,
        asked_as=(
            r"\b(?:swap|replace|substitute|exchange)\b.{0,60}?\b(?:for|with|by)\b",
            r"\b(?:change|turn)\s+(?:the|that|this|his|her|my)\s+(?!(?:photo|pic|picture|image|whole|entire)\b)"
            r"[a-z]+(?:\s+[a-z]+)?\s+(?:in)?to\s+(?:a|an|some)\b",
        ),
        aliases=("Replace Something From the Photo", "Replace Object"),
        paraphrases=(
            (
                "use this to swap one thing in a picture for something else, like: put a teddy bear where the cat is, "
                "or turn the mug into a glass"
            ),
            (
                "helpful for exchanging an object of the image with a new one the user names, like: replace the bench "
                "with a sofa"
            ),
        ),
    )
    model = "object mask (tools.masks) + Stable Diffusion inpainting (diffusers)"
    weights = ("sd-inpaint",)
    memory_mb = SD_FP32_MB

    def availability(self) -> Availability:
        own = super().availability()
        return own if not own.ok else segmenter_availability()

    def run(self, store: ImageStore, image_path: Image.Image, object: str, new_object: str) -> ToolResult:
        mask = find_mask(image_path, object, self.device)
        if mask is None:
            return ToolResult(text=f"No {object} was found in the image, so nothing was replaced.")
        region = grow(mask)
        base = _load_pipeline("StableDiffusionInpaintPipeline", "sd-inpaint", self.device)
        pipe = assemble(type(base), base)
        w, h = working_size(*image_path.size, self.resolution)
        mask_img = Image.fromarray(region.astype(np.uint8) * 255, "L")
        out = pipe(
            self.prompt(new_object),
            image=image_path.resize((w, h), Image.Resampling.LANCZOS),
            mask_image=mask_img.resize((w, h), Image.Resampling.NEAREST),
            height=h,
            width=w,
            negative_prompt=NEGATIVE_PROMPT,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            generator=seeded(self.seed),
        )
        result = finish(out, image_path.size)
        if result.image is not None:
            result.image = paste(image_path, result.image, region, feather=max(2, min(image_path.size) // 100))
        return result
