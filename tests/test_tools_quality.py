"""Assess the Image Quality (tools/quality.py) through the real Tool.__call__ path.

Degraded copies of the committed photos (blurred, noisy, darkened, JPEG-crushed) must move
the matching measure the right way and change the verdict.
"""

from __future__ import annotations

import importlib.util
import io
import re

import numpy as np
import pytest
from PIL import Image, ImageFilter

from gpt4tools.images import ImageError
from gpt4tools.tool import ToolInputError
from tools.quality import AssessImageQuality, assess

HAVE_BRISQUE = all(importlib.util.find_spec(p) for p in ("brisque", "libsvm"))


def photo(name: str = "astronaut.jpg") -> Image.Image:
    from conftest import ASSETS

    return Image.open(ASSETS / name).convert("RGB")


def noisy(img: Image.Image, sigma: float = 10.0) -> Image.Image:
    a = np.asarray(img).astype(np.float32)
    rng = np.random.default_rng(0)
    return Image.fromarray(np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8))


def number(text: str, label: str) -> float:
    m = re.search(re.escape(label) + r"[^:]*: ([0-9.]+)", text)
    assert m, f"{label!r} not in:\n{text}"
    return float(m.group(1))


def test_spec_is_the_unseen_quality_tool():
    spec = AssessImageQuality.spec
    assert spec.name == "Assess the Image Quality" and spec.slug == "quality"
    assert spec.seen is False and spec.output == "text"
    assert [a.kind for a in spec.args] == ["image"]
    assert spec.description.startswith("useful when") and "like:" in spec.description


def test_original_photo_reads_good_with_every_measure_named(store, upload):
    obs = AssessImageQuality()(upload("astronaut.jpg"), store)
    assert obs.image is None
    text = obs.text
    assert text.startswith("Overall image quality: good")
    for label in ("Sharpness (variance of Laplacian)", "Noise (estimated sigma", "mean brightness",
                  "Contrast (RMS)", "Colourfulness (Hasler-Suesstrunk)"):
        assert label in text
    assert number(text, "Sharpness") > 500  # measured 920
    assert number(text, "Noise") < 2.5  # measured 0.9
    if HAVE_BRISQUE:
        assert number(text, "BRISQUE") < 30  # measured 13.3


@pytest.mark.parametrize("asset", ["astronaut.jpg", "chelsea.jpg", "rocket.jpg"])
def test_blur_lowers_sharpness_and_noise_raises_sigma(store, asset):
    original = store.add_upload(photo(asset))
    blurred = store.add_upload(photo(asset).filter(ImageFilter.GaussianBlur(2)))
    grainy = store.add_upload(noisy(photo(asset)))
    tool = AssessImageQuality()
    t0, tb, tn = (tool(n, store).text for n in (original, blurred, grainy))
    assert number(tb, "Sharpness") < 0.1 * number(t0, "Sharpness")
    assert number(tn, "Noise") > 5 * number(t0, "Noise")
    assert "blurry" in tb.splitlines()[0] and tb.startswith("Overall image quality: poor")
    assert "very noisy" in tn.splitlines()[0] and tn.startswith("Overall image quality: poor")


def test_dark_copy_is_underexposed_but_not_called_blurry():
    dark = Image.fromarray((np.asarray(photo("chelsea.jpg")) * 0.25).astype(np.uint8))
    rep = assess(dark)
    assert "underexposed" in rep.problems and "low contrast" in rep.problems
    assert "blurry" not in rep.problems  # sharpness is measured after contrast stretching
    assert rep.brightness < 45


def test_overexposed_copy():
    bright = Image.fromarray(np.clip(np.asarray(photo("coffee.jpg")).astype(np.int32) * 3, 0, 255).astype(np.uint8))
    rep = assess(bright)
    assert "overexposed" in rep.problems and rep.bright_share > 0.2


@pytest.mark.skipif(not HAVE_BRISQUE, reason="pip install brisque==0.2.0 libsvm-official==3.37.0")
def test_brisque_catches_jpeg_blocking_the_statistics_miss():
    buf = io.BytesIO()
    photo("coffee.jpg").save(buf, "JPEG", quality=5)
    crushed = assess(Image.open(buf).convert("RGB"))
    clean = assess(photo("coffee.jpg"))
    assert clean.brisque is not None and crushed.brisque is not None
    assert crushed.brisque > clean.brisque + 40  # measured 7 vs 94
    assert crushed.verdict == "poor" and clean.verdict == "good"


def test_grey_image_has_no_colour():
    grey = photo("page.png").convert("L").convert("RGB")
    assert assess(grey).colourfulness < 1.0
    assert assess(photo("astronaut.jpg")).colourfulness > 33


def test_bad_input(store, upload):
    tool = AssessImageQuality()
    with pytest.raises(ImageError, match="does not exist"):
        tool("image/missing1.png", store)
    with pytest.raises(ImageError, match="outside"):
        tool("../secret.png", store)
    with pytest.raises(ToolInputError):
        tool(f"{upload('chelsea.jpg')}, how sharp", store)
    with pytest.raises(ToolInputError):
        tool("   ", store)
    (store.root / "image" / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageError, match="not a readable image"):
        tool("image/fake.png", store)
