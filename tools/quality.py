"""Assess the Image Quality: no-reference quality measures and a verdict, as text.

Every number is a standard measure computed by a library, reported with its name so the
user can check it:
- sharpness: variance of the Laplacian (OpenCV) of the contrast-stretched grey image;
- noise: wavelet-based estimate of the Gaussian noise sigma (scikit-image, Donoho's MAD);
- exposure: mean brightness and the share of pixels crushed to black / clipped to white;
- contrast: RMS contrast (standard deviation of brightness);
- colourfulness: Hasler and Suesstrunk (2003);
- BRISQUE (Mittal et al. 2012), computed by the `brisque` package: its natural-scene
  statistics features scored by the SVR trained on the LIVE database that ships inside the
  package (libsvm). Lower is better. Reported only when that package is installed.
  (OpenCV's cv2.quality BRISQUE needs model files that no package here ships.)

The thresholds were set on the committed example photos and blurred / noisy / darkened
copies of them (see tests/test_tools_quality.py); they are rules of thumb, not a learned
quality model, and the verdict lists the problems that drove it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from gpt4tools.images import ImageStore
from gpt4tools.model_cache import CACHE
from gpt4tools.tool import Arg, Tool, ToolResult, ToolSpec
from tools._image import stretch_contrast, to_gray, to_np

# Rules of thumb (8-bit images, ~300-800 px): see the module docstring.
BLURRY_BELOW = 40.0  # variance of Laplacian (contrast-stretched); a 2 px Gaussian blur of the examples gives 9-25
SOFT_BELOW = 120.0  # a 1 px blur gives 68-143 (574 on the text page); the sharp examples 920-6700
NOISY_ABOVE = 5.0  # sigma on the 0..255 scale; the clean examples give 0.5-1.5, +N(0,10) gives ~10
GRAINY_ABOVE = 2.5
DARK_BELOW = 45.0  # mean brightness 0..255; the darkest clean example (a night scene) is 61
BRIGHT_ABOVE = 210.0
CLIPPED_SHARE = 0.2  # a fifth of the pixels at the ends of the range
FLAT_BELOW = 20.0  # RMS contrast 0..255
BRISQUE_GOOD_BELOW = 30.0  # the examples give 3-19; 2 px blur 64-71, JPEG quality 5 62-96, noise 18-48
BRISQUE_POOR_ABOVE = 50.0
BRISQUE_PACKAGES = ("brisque", "libsvm")


@dataclass
class QualityReport:
    sharpness: float
    noise_sigma: float
    brightness: float
    dark_share: float
    bright_share: float
    contrast: float
    colourfulness: float
    brisque: float | None
    problems: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        serious = [p for p in self.problems if p.startswith(("blurry", "very noisy", "poor BRISQUE"))]
        if serious or len(self.problems) >= 3:
            return "poor"
        return "fair" if self.problems else "good"


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian of the contrast-stretched grey image: high-frequency
    energy, which falls fast with blur (and rises with noise). Stretching first keeps a dark
    but focused photo from reading as blurry (the variance scales with contrast squared)."""
    import cv2

    return float(cv2.Laplacian(stretch_contrast(gray), cv2.CV_64F).var())


def noise_sigma(rgb: np.ndarray) -> float:
    """Gaussian noise standard deviation on the 0..255 scale, averaged over the channels."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(rgb.astype(np.float64) / 255.0, channel_axis=-1, average_sigmas=True) * 255.0)


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk's metric on the opponent axes rg = R-G, yb = (R+G)/2 - B:
    about 0 for greys, ~15 slightly, ~33 moderately, ~59 quite, >82 extremely colourful."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _colour_word(c: float) -> str:
    for limit, word in ((3, "grey"), (15, "slightly colourful"), (33, "moderately colourful"),
                        (59, "quite colourful"), (82, "highly colourful")):
        if c < limit:
            return word
    return "extremely colourful"


def _load_brisque() -> Any:
    import warnings

    with warnings.catch_warnings():  # it imports the deprecated scipy.ndimage.filters namespace
        warnings.simplefilter("ignore", DeprecationWarning)
        from brisque import BRISQUE

        return BRISQUE()  # parses the packaged LIVE SVR model once


def brisque_score(rgb: np.ndarray) -> float | None:
    """BRISQUE score (0 best .. ~100 worst), or None when the package is not installed."""
    if any(importlib.util.find_spec(p) is None for p in BRISQUE_PACKAGES):
        return None
    model = CACHE.get("brisque@cpu", _load_brisque, 20)
    return float(model.score(rgb))


def assess(img: Image.Image) -> QualityReport:
    rgb, gray = to_np(img), to_gray(img)
    rep = QualityReport(
        sharpness=sharpness(gray),
        noise_sigma=noise_sigma(rgb),
        brightness=float(gray.mean()),
        dark_share=float((gray <= 2).mean()),
        bright_share=float((gray >= 253).mean()),
        contrast=float(gray.std()),
        colourfulness=colourfulness(rgb),
        brisque=brisque_score(rgb),
    )
    # Noise inflates the Laplacian, so only call an image sharp/blurry when it is not noisy.
    if rep.noise_sigma > NOISY_ABOVE:
        rep.problems.append("very noisy")
    elif rep.noise_sigma > GRAINY_ABOVE:
        rep.problems.append("slightly noisy")
    if rep.sharpness < BLURRY_BELOW:
        rep.problems.append("blurry")
    elif rep.sharpness < SOFT_BELOW:
        rep.problems.append("slightly soft")
    if rep.brightness < DARK_BELOW or rep.dark_share > CLIPPED_SHARE:
        rep.problems.append("underexposed")
    if rep.brightness > BRIGHT_ABOVE or rep.bright_share > CLIPPED_SHARE:
        rep.problems.append("overexposed")
    if rep.contrast < FLAT_BELOW:
        rep.problems.append("low contrast")
    if rep.brisque is not None and rep.brisque > BRISQUE_POOR_ABOVE:
        rep.problems.append("poor BRISQUE score")
    elif rep.brisque is not None and rep.brisque > BRISQUE_GOOD_BELOW:
        rep.problems.append("mediocre BRISQUE score")
    return rep


def describe(rep: QualityReport) -> str:
    """The observation text: verdict first, then each measure with its name and reading."""
    issues = ", ".join(rep.problems) if rep.problems else "no problems found"
    sharp = "blurry" if rep.sharpness < BLURRY_BELOW else "slightly soft" if rep.sharpness < SOFT_BELOW else "sharp"
    noise = "high" if rep.noise_sigma > NOISY_ABOVE else "some" if rep.noise_sigma > GRAINY_ABOVE else "low"
    expo = ("too dark" if "underexposed" in rep.problems else "too bright" if "overexposed" in rep.problems else "fine")
    lines = [
        f"Overall image quality: {rep.verdict} ({issues}).",
        f"Sharpness (variance of Laplacian): {rep.sharpness:.0f}, {sharp}.",
        f"Noise (estimated sigma, 0-255 scale): {rep.noise_sigma:.1f}, {noise}.",
        f"Exposure: mean brightness {rep.brightness:.0f}/255, {rep.dark_share:.1%} pixels black, "
        f"{rep.bright_share:.1%} clipped white, {expo}.",
        f"Contrast (RMS): {rep.contrast:.0f}/255, {'low' if rep.contrast < FLAT_BELOW else 'fine'}.",
        f"Colourfulness (Hasler-Suesstrunk): {rep.colourfulness:.0f}, {_colour_word(rep.colourfulness)}.",
    ]
    if rep.brisque is None:
        lines.append("BRISQUE: not computed (pip install brisque libsvm-official).")
    else:
        word = ("good" if rep.brisque <= BRISQUE_GOOD_BELOW
                else "poor" if rep.brisque > BRISQUE_POOR_ABOVE else "mediocre")
        lines.append(f"BRISQUE (0 best, 100 worst): {rep.brisque:.1f}, {word}.")
    return "\n".join(lines)


class AssessImageQuality(Tool):
    spec = ToolSpec(
        name="Assess the Image Quality",
        description=(
            "useful when you want to know how good the quality of an image is, such as whether it is blurry, "
            "noisy, too dark or too bright. like: assess the quality of this image, or is this photo blurry, "
            "or rate the image quality of this picture, or how good is the quality of this photo"
        ),
        args=(Arg("image_path", "image"),),
        output="text",
        slug="quality",
        seen=False,
        aliases=("Assess The Image Quality", "Image Quality Assessment", "Assess Image Quality"),
        paraphrases=(
            "useful for judging a photo's technical quality: sharpness, noise, exposure, contrast "
            "and an overall score. like: check the quality of this photo, or is this picture too noisy",
            "useful when the user asks whether an image is of good or bad quality. "
            "like: evaluate this image's quality, or does this photo look sharp",
        ),
    )
    model = "No-reference statistics (OpenCV, scikit-image) + BRISQUE (LIVE-trained SVR from the `brisque` package)"
    learned = False
    packages = ("cv2", "skimage", "pywt")  # pywt: scikit-image's noise estimator needs PyWavelets
    memory_mb = 30

    def run(self, store: ImageStore, image_path: Image.Image) -> ToolResult:
        return ToolResult(text=describe(assess(image_path)))


__all__ = ["AssessImageQuality", "assess", "describe", "QualityReport"]
