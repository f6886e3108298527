"""Image generation: Stable Diffusion 1.5 from text, and the seven ControlNet 1.0 tools that
generate from a condition map (canny, HED, scribble, pose, segmentation, depth, normal).

All eight share one copy of the SD 1.5 components (UNet, VAE, text encoder) through the
model cache (`sd15@<device>`); each ControlNet adds only its own small network
(`controlnet-<kind>@<device>`). Each call assembles a pipeline object around the shared
modules (see `assemble`).

As in the original GPT4Tools/TaskMatrix, prompts get a quality suffix and a fixed negative
prompt; unlike them, generation is seeded, so the same call gives the same image.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from PIL import Image

from gpt4tools.hardware import tool_dtype
from gpt4tools.images import ImageStore
from gpt4tools.tool import Arg, ToolResult, ToolSpec
from tools._torch import TorchTool, cached, checkpoint, seeded

PROMPT_SUFFIX = "best quality, extremely detailed"  # appended to every prompt, as the original did
NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, "
    "cropped, worst quality, low quality"
)
SD_FP32_MB = 5500  # UNet 3.4 GB + text encoder 0.5 + VAE 0.3 + safety checker 1.2 (float32)
CONTROLNET_FP32_MB = 1450  # 361M parameters
SD_PACKAGES = ("torch", "diffusers", "transformers")


def default_steps() -> int:
    """Denoising steps: 20 (the original's ControlNet setting); override with
    GPT4TOOLS_DIFFUSION_STEPS, e.g. fewer on CPU where each step of SD 1.5 takes seconds."""
    return int(os.environ.get("GPT4TOOLS_DIFFUSION_STEPS", "20"))


def working_size(width: int, height: int, long_side: int = 512, multiple: int = 64) -> tuple[int, int]:
    """The size SD 1.5 works at for an input of (width, height): the long side scaled to
    `long_side` (its training resolution), both sides rounded to a multiple of 64 so every
    UNet level divides evenly, aspect ratio kept as closely as that allows."""
    scale = long_side / max(width, height)
    w = max(multiple, round(width * scale / multiple) * multiple)
    h = max(multiple, round(height * scale / multiple) * multiple)
    return w, h


def sd_base(device: str) -> Any:
    """The shared SD 1.5 text-to-image pipeline from checkpoints/sd15 (loaded once per device)."""

    def load() -> Any:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(
            checkpoint("sd15"), dtype=tool_dtype(device), local_files_only=True
        )
        return pipe.to(device)

    return cached("sd15", device, load, SD_FP32_MB)


def controlnet(name: str, device: str) -> Any:
    """A ControlNetModel from checkpoints/<name> (loaded once per device)."""

    def load() -> Any:
        from diffusers import ControlNetModel

        model = ControlNetModel.from_pretrained(checkpoint(name), dtype=tool_dtype(device), local_files_only=True)
        return model.to(device)

    return cached(name, device, load, CONTROLNET_FP32_MB)


def assemble(cls: Any, base: Any, scheduler_cls: Any = None, **extra: Any) -> Any:
    """A `cls` pipeline around `base`'s loaded modules (nothing is copied) with a new scheduler
    (of `scheduler_cls`, default the checkpoint's own): schedulers keep per-run state, and
    two sessions may generate at once."""
    scheduler = (scheduler_cls or type(base.scheduler)).from_config(base.scheduler.config)
    pipe = cls(**{**base.components, "scheduler": scheduler}, **extra, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def finish(output: Any, size: tuple[int, int]) -> ToolResult:
    """The pipeline's first image at `size`, unless the checkpoint's safety checker flagged it
    (it then returns a black image, which we do not pass off as a result)."""
    flagged = getattr(output, "nsfw_content_detected", None)
    if flagged and flagged[0]:
        return ToolResult(
            text="The safety checker flagged the generated image, so it was withheld. Try another description."
        )
    image = output.images[0].convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return ToolResult(image=image)


class DiffusionTool(TorchTool):
    """Shared settings of the Stable Diffusion tools; instances may change them."""

    learned = True
    packages = SD_PACKAGES
    guidance_scale: ClassVar[float] = 7.5
    seed: ClassVar[int] = 42
    resolution: ClassVar[int] = 512  # working long side (SD 1.5 was trained at 512x512)

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self.steps = default_steps()

    def prompt(self, text: str) -> str:
        return f"{text}, {PROMPT_SUFFIX}"



# "make a pic of a castle", "generate a new image from this pose": a request for a new picture
# (not "draw a box around the dog", "make a sketch of this": those are other tools' work)
MAKE_NEW = (r"\b(?:generate|create|draw|paint|render|imagine|make|produce|design)\s+(?:me\s+)?"
            r"(?:a|an|some|another)\s+(?:(?:new|brand[- ]new|realistic|real|photorealistic|similar)\s+)*"
            r"(?:pic|picture|image|photo|drawing|painting|illustration|artwork|render|scene)s?\s+"
            r"(?:of|with|showing|where|from|based on|using)\b")

class Text2Image(DiffusionTool):
    spec = ToolSpec(
        name="Generate Image From User Input Text",
        description=(
            "useful when you want to create a new image from a text description alone, with no input image. "
            "like: generate an image of an object or a scene, or draw a picture of a dog playing on the beach"
        ),
        args=(Arg("text"),),
        output="image",
        slug="gen",
        photo_out=True,
        asked_as=(MAKE_NEW,),
        aliases=("Generate Image From Text", "Text to Image"),
        paraphrases=(
            (
                "use this to paint a brand-new picture from what the user describes, like: make a picture of "
                "a red car, or create an image of a mountain lake at sunset"
            ),
            (
                "helpful for turning a written description into a generated image, like: show me a cat wearing a hat, "
                "or generate a photo of a city street at night"
            ),
        ),
    )
    model = "Stable Diffusion 1.5 (diffusers)"
    weights = ("sd15",)
    memory_mb = SD_FP32_MB

    def run(self, store: ImageStore, text: str) -> ToolResult:
        from diffusers import StableDiffusionPipeline

        pipe = assemble(StableDiffusionPipeline, sd_base(self.device))
        size = (self.resolution, self.resolution)
        out = pipe(
            self.prompt(text),
            negative_prompt=NEGATIVE_PROMPT,
            height=size[1],
            width=size[0],
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            generator=seeded(self.seed),
        )
        return finish(out, size)


class ControlNetTool(DiffusionTool):
    """Generate from a condition map plus a description. Subclasses name their ControlNet;
    the result has the condition image's size (generated at `working_size`, then resized)."""

    controlnet: ClassVar[str]  # manifest name of the ControlNet weights
    guidance_scale = 9.0  # the original's ControlNet setting
    memory_mb = SD_FP32_MB + CONTROLNET_FP32_MB

    def run(self, store: ImageStore, image_path: Image.Image, text: str) -> ToolResult:
        from diffusers import StableDiffusionControlNetPipeline, UniPCMultistepScheduler

        net = controlnet(self.controlnet, self.device)
        pipe = assemble(
            StableDiffusionControlNetPipeline, sd_base(self.device), UniPCMultistepScheduler, controlnet=net
        )
        w, h = working_size(*image_path.size, self.resolution)
        out = pipe(
            self.prompt(text),
            image=image_path.resize((w, h), Image.Resampling.BICUBIC),
            height=h,
            width=w,
            negative_prompt=NEGATIVE_PROMPT,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            generator=seeded(self.seed),
        )
        return finish(out, image_path.size)


def _cn_spec(name: str, slug: str, follows: str, what: str, like: str, paraphrases: tuple[str, ...]) -> ToolSpec:
    """The spec of a ControlNet tool: all seven share the argument list and the description's shape."""
    return ToolSpec(
        name=name,
        description=(
            f"useful when you want to generate a new real image from both the user description and {what}. like: {like}"
        ),
        args=(Arg("image_path", "image"), Arg("text")),
        output="image",
        slug=slug,
        follows=follows,
        photo_out=True,
        asked_as=(MAKE_NEW,),
        paraphrases=paraphrases,
    )


class Canny2Image(ControlNetTool):
    spec = _cn_spec(
        "Generate Image Condition On Canny Image",
        "canny2image",
        "Edge Detection On Image",
        "a canny edge image",
        "generate a real image of an object or something from this canny image, "
        "or generate a new realistic picture of something from this edge image",
        (
            (
                "use this to paint a realistic picture that follows the outlines of a canny edge map and the "
                "user's words, "
                "like: turn this edge image into a photo of a house"
            ),
            "helpful for creating a new image shaped by an edge drawing, like: make a real cat from these canny edges",
        ),
    )
    controlnet = "controlnet-canny"
    model = "Stable Diffusion 1.5 + ControlNet 1.0 canny (diffusers)"
    weights = ("sd15", "controlnet-canny")


class Hed2Image(ControlNetTool):
    spec = _cn_spec(
        "Generate Image Condition On Soft Hed Boundary Image",
        "hed2image",
        "Hed Detection On Image",
        "a soft HED boundary image",
        "generate a real image of an object or something from this soft hed boundary image, "
        "or create a new realistic picture of something from this hed boundary map",
        (
            (
                "use this to render a realistic picture that keeps the soft boundaries of a HED image and matches the "
                "user's words, like: make a painting of a bird from this hed image"
            ),
            (
                "helpful for generating a new image guided by a soft edge map, like: turn this boundary image into a "
                "photo of a sports car"
            ),
        ),
    )
    controlnet = "controlnet-hed"
    model = "Stable Diffusion 1.5 + ControlNet 1.0 HED (diffusers)"
    weights = ("sd15", "controlnet-hed")


class Scribble2Image(ControlNetTool):
    spec = _cn_spec(
        "Generate Image Condition On Sketch Image",
        "scribble2image",
        "Sketch Detection On Image",
        "a scribble or sketch image",
        "generate a real image of an object or something from this sketch, "
        "or generate a new realistic picture of something from this scribble",
        (
            (
                "use this to turn a rough sketch into a finished realistic image that matches the user's words, like: "
                "make this doodle into a photo of a teapot"
            ),
            (
                "helpful for drawing a real picture that follows the strokes of a scribble, like: create a castle from "
                "this sketch image"
            ),
        ),
    )
    controlnet = "controlnet-scribble"
    model = "Stable Diffusion 1.5 + ControlNet 1.0 scribble (diffusers)"
    weights = ("sd15", "controlnet-scribble")


class Pose2Image(ControlNetTool):
    spec = _cn_spec(
        "Generate Image Condition On Pose Image",
        "pose2image",
        "Pose Detection On Image",
        "a human pose (skeleton) image",
        "generate a real image of a person from this pose image, "
        "or generate a new picture of someone doing something in this pose",
        (
            (
                "use this to create a picture of people standing or moving exactly like the skeleton in a pose image, "
                "like: make an astronaut in this pose"
            ),
            (
                "helpful for generating a human figure that copies a given body pose, like: draw a dancer with this "
                "skeleton, or a knight in this pose"
            ),
        ),
    )
    controlnet = "controlnet-openpose"
    model = "Stable Diffusion 1.5 + ControlNet 1.0 OpenPose (diffusers)"
    weights = ("sd15", "controlnet-openpose")


class Seg2Image(ControlNetTool):
    spec = _cn_spec(
        "Generate Image Condition On Segmentations",
        "seg2image",
        "Segment the Image",
        "a segmentation map",
        "generate a real image of an object or something from this segmentation image, "
        "or generate a new realistic picture of a scene laid out like these segments",
        (
            (
                "use this to paint a realistic scene whose regions follow a segmentation map and the user's words, "
                "like: make a living room from this segmentation"
            ),
            (
                "helpful for generating an image with the same layout of regions as a segmented image, like: create a "
                "street scene from these segments"
            ),
        ),
    )
    controlnet = "controlnet-seg"
    model = "Stable Diffusion 1.5 + ControlNet 1.0 segmentation (ADE20K colours; diffusers)"
    weights = ("sd15", "controlnet-seg")


class Depth2Image(ControlNetTool):
    spec = _cn_spec(
        "Generate Image Condition On Depth",
        "depth2image",
        "Predict Depth On Image",
        "a depth map",
        "generate a real image of an object or something from this depth image, "
        "or generate a new realistic picture of something with the depth of this depth map",
        (
            (
                "use this to create a realistic picture with the same 3D layout as a depth map and the user's words, "
                "like: make a forest scene with this depth"
            ),
            (
                "helpful for generating a new image whose near and far parts follow a depth image, like: turn "
                "this depth map into a photo of a robot"
            ),
        ),
    )
    controlnet = "controlnet-depth"
    model = "Stable Diffusion 1.5 + ControlNet 1.0 depth (diffusers)"
    weights = ("sd15", "controlnet-depth")


class Normal2Image(ControlNetTool):
    spec = _cn_spec(
        "Generate Image Condition On Normal Map",
        "normal2image",
        "Predict Normal Map On Image",
        "a normal map",
        "generate a real image of an object or something from this normal map, "
        "or generate a new realistic picture of something with the surfaces of this normal map",
        (
            (
                "use this to render a realistic picture whose surfaces face the way a normal map says, matching the "
                "user's words, like: make a marble statue from this normal map"
            ),
            (
                "helpful for generating a new image shaped by the surface directions of a normal map, like: create a "
                "wooden toy from this normal image"
            ),
        ),
    )
    controlnet = "controlnet-normal"
    model = "Stable Diffusion 1.5 + ControlNet 1.0 normal (diffusers)"
    weights = ("sd15", "controlnet-normal")


CONTROLNET_TOOLS: tuple[type[ControlNetTool], ...] = (
    Canny2Image,
    Hed2Image,
    Scribble2Image,
    Pose2Image,
    Seg2Image,
    Depth2Image,
    Normal2Image,
)
