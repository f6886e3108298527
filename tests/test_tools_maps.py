"""Condition-map tools (tools/maps.py) through the real Tool.__call__ path with an ImageStore.

- Canny, the classical fallbacks (FastLineDetector, XDoG scribble, graph segmentation) and
  the pure decode/render helpers run everywhere.
- M-LSD and HED need `python -m gpt4tools weights fetch mlsd hed` and skip without them.
- SAM has no weights offline: a tiny random SAM built from a config checks the wiring only.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gpt4tools.images import ImageError
from gpt4tools.model_cache import CACHE
from gpt4tools.tool import ToolInputError, ToolUnavailable
from tools import maps
from tools.maps import (
    EdgeDetection,
    HedDetection,
    LineDetection,
    SegmentImage,
    SketchDetection,
    canny_map,
    color_segments,
    hed_input,
    masks_to_labels,
    mlsd_decode,
    rle_to_mask,
    scribble_from_edges,
    thin_edges,
)

from conftest import ASSETS, requires_weights

ALL_TOOLS = (EdgeDetection, LineDetection, HedDetection, SketchDetection, SegmentImage)


@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    """An empty checkpoints folder: every tool must use its classical path or refuse."""
    monkeypatch.setenv("GPT4TOOLS_CHECKPOINTS", str(tmp_path / "empty-checkpoints"))


def result(store, obs) -> np.ndarray:
    assert obs.image is not None, obs.text
    return np.asarray(Image.open(store.root / obs.image).convert("RGB"))


def assert_white_on_black(a: np.ndarray) -> None:
    """A ControlNet-style line map: grey (R=G=B), black background, only 0 and 255 values."""
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    assert set(np.unique(a)) <= {0, 255}
    assert (a == 0).mean() > 0.5  # mostly background


def gradient_magnitude(path) -> np.ndarray:
    import cv2

    g = np.asarray(Image.open(path).convert("L"), np.float32)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


# -- specs -------------------------------------------------------------------------------------
def test_specs_match_the_paper_names():
    names = {cls.spec.name: cls.spec.slug for cls in ALL_TOOLS}
    assert names == {
        "Edge Detection On Image": "edge",
        "Line Detection On Image": "line",
        "Hed Detection On Image": "hed",
        "Sketch Detection On Image": "scribble",
        "Segment the Image": "seg",
    }
    for cls in ALL_TOOLS:
        spec = cls.spec
        assert spec.seen and spec.output == "image" and spec.follows is None
        assert [a.kind for a in spec.args] == ["image"]
        assert spec.description.startswith("useful when") and "like:" in spec.description
        assert "input to this tool" not in spec.description  # generated from args
        assert len(spec.paraphrases) >= 2 and cls.model
        assert spec.prompt_line().endswith("representing the image_path.")


# -- edges -------------------------------------------------------------------------------------
def test_canny_on_astronaut_marks_the_gradients(store, upload):
    name = upload("astronaut.jpg")
    obs = EdgeDetection()(name, store)
    assert obs.ok and obs.text == f"Result saved as {obs.image}"
    assert "_edge_" in obs.image
    a = result(store, obs)
    assert a.shape == (512, 512, 3)
    assert_white_on_black(a)
    edges = a[..., 0] > 0
    assert 0.03 < edges.mean() < 0.2  # measured 0.083: a portrait, not noise and not empty
    grad = gradient_magnitude(store.root / name)
    assert grad[edges].mean() > 4 * grad[~edges].mean()  # edges sit where the image changes


def test_canny_finds_nothing_on_a_flat_image_and_the_square_on_a_square(store):
    flat = store.add_upload(Image.new("RGB", (200, 200), (90, 120, 200)))
    assert (result(store, EdgeDetection()(flat, store)) == 0).all()
    img = Image.new("RGB", (200, 200), "black")
    ImageDraw.Draw(img).rectangle((50, 50, 149, 149), fill="white")
    a = result(store, EdgeDetection()(store.add_upload(img), store))[..., 0] > 0
    ys, xs = np.nonzero(a)
    assert abs(xs.min() - 50) <= 1 and abs(xs.max() - 149) <= 1 and abs(ys.min() - 50) <= 1
    assert not a[60:140, 60:140].any()  # nothing inside the flat square


# -- straight lines ------------------------------------------------------------------------------
def test_mlsd_decode_keeps_local_maxima_above_threshold():
    scores = np.zeros((32, 32), np.float32)
    offsets = np.zeros((32, 32, 4), np.float32)
    scores[10, 8] = 0.9  # a line centred at (8, 10), from (8-6, 10) to (8+6, 10): 24 px at input scale
    offsets[10, 8] = (-6, 0, 6, 0)
    scores[10, 9] = 0.5  # its neighbour: not a local maximum
    offsets[10, 9] = (-6, 0, 6, 0)
    scores[20, 20] = 0.05  # below threshold
    offsets[20, 20] = (0, -8, 0, 8)
    scores[25, 5] = 0.8  # a maximum, but only 2*(2+2)=8 px long: dropped
    offsets[25, 5] = (-1, -1, 1, 1)
    lines = mlsd_decode(scores, offsets)
    np.testing.assert_allclose(lines, [[4.0, 20.0, 28.0, 20.0]])
    assert mlsd_decode(np.zeros((8, 8), np.float32), np.zeros((8, 8, 4), np.float32)).shape == (0, 4)
    with pytest.raises(ValueError):
        mlsd_decode(scores, offsets[..., :2])


def test_line_fallback_is_labelled_and_finds_the_towers(store, upload, no_weights):
    obs = LineDetection()(upload("rocket.jpg"), store)
    assert "FastLineDetector" in obs.text and "weights fetch mlsd" in obs.text
    a = result(store, obs)
    assert a.shape == (427, 640, 3)
    assert_white_on_black(a)
    assert len(maps.fld_lines(np.asarray(Image.open(ASSETS / "rocket.jpg").convert("RGB")))) >= 20


@requires_weights("mlsd")
def test_mlsd_finds_the_launch_towers(store, upload):
    tool = LineDetection()
    assert tool.backend() == "M-LSD"
    name = upload("rocket.jpg")
    obs = tool(name, store)
    assert obs.text == f"Result saved as {obs.image}"  # no fallback note
    a = result(store, obs)
    assert_white_on_black(a)
    session = CACHE.get("mlsd@cpu", lambda: maps._load_mlsd("cpu"))
    lines = maps.mlsd_lines(np.asarray(Image.open(store.root / name)), session)
    assert len(lines) >= 20  # measured 84-85
    # The towers are tall straight structures: many near-vertical long segments.
    dx, dy = lines[:, 2] - lines[:, 0], lines[:, 3] - lines[:, 1]
    assert ((np.abs(dy) > 3 * np.abs(dx)) & (np.hypot(dx, dy) > 60)).sum() >= 8
    # Most drawn pixels lie near real intensity edges (some "wireframe" lines in the sky are expected).
    import cv2

    grad = gradient_magnitude(store.root / name)
    near_edge = cv2.dilate((grad > 40).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    drawn = a[..., 0] > 0
    assert near_edge[drawn].mean() > 0.6


# -- HED ---------------------------------------------------------------------------------------
def test_hed_input_is_bgr_minus_caffe_mean():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    x = hed_input(rgb)
    assert x.shape == (1, 3, 2, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [-104.00699, -116.66877, 255 - 122.67892], rtol=1e-6)


def test_hed_without_weights_is_unavailable_with_the_fetch_command(store, upload, no_weights):
    with pytest.raises(ToolUnavailable, match="weights fetch hed"):
        HedDetection()(upload("rocket.jpg"), store)


@requires_weights("hed")
def test_hed_is_bright_on_boundaries_and_dark_in_the_sky(store, upload):
    name = upload("rocket.jpg")
    obs = HedDetection()(name, store)
    a = result(store, obs)
    assert a.shape == (427, 640, 3)
    assert (a[..., 0] == a[..., 2]).all()
    soft = maps.hed_map(np.asarray(Image.open(store.root / name)), CACHE.get("hed@cpu", lambda: maps._load_hed("cpu")))
    assert soft.dtype == np.float32 and soft.min() >= 0.0 and soft.max() <= 1.0
    assert soft.max() > 0.9  # confident boundaries exist
    sky = soft[20:110, 240:420]  # empty evening sky between the towers, above the rocket
    rocket_edges = soft[130:400, 300:340].max(axis=1)  # rows across the rocket's body: its outline
    assert sky.mean() < 0.1
    assert rocket_edges.mean() > 5 * sky.mean()


# -- scribbles ---------------------------------------------------------------------------------
def test_thin_edges_reduces_a_thick_stroke_to_its_ridge():
    # A soft vertical line ~10 px wide centred on x=30, fading slowly downwards (as real HED
    # ridges vary along their length; a perfectly flat band would tie along its direction).
    y, x = np.mgrid[0:60, 0:60]
    soft = (255 * np.exp(-((x - 30) ** 2) / (2 * 4.0**2)) * (1 - 0.004 * y)).astype(np.uint8)
    ridge = thin_edges(soft)
    assert set(np.unique(ridge)) == {0, 255}
    for row in (10, 30, 50):
        assert np.nonzero(ridge[row])[0].tolist() == [30]
    strokes = scribble_from_edges(soft)
    assert set(np.unique(strokes)) == {0, 255}
    assert not strokes[:, :10].any()  # far from the band stays empty


def test_sketch_fallback_xdog_outlines_the_astronaut(store, upload, no_weights):
    obs = SketchDetection()(upload("astronaut.jpg"), store)
    assert "XDoG" in obs.text and "weights fetch hed" in obs.text
    a = result(store, obs)
    assert_white_on_black(a)
    assert 0.1 < (a[..., 0] > 0).mean() < 0.5  # measured 0.33: strokes, not a filled image
    # The face outline (top centre) has strokes; the plain backdrop at the top right corner between
    # the flag and the shuttle model has none.
    assert (a[40:200, 150:300, 0] > 0).mean() > 0.1
    assert (a[5:60, 300:380, 0] > 0).mean() < 0.05


@requires_weights("hed")
def test_sketch_from_hed(store, upload):
    obs = SketchDetection()(upload("astronaut.jpg"), store)
    assert obs.text == f"Result saved as {obs.image}"
    a = result(store, obs)
    assert_white_on_black(a)
    assert 0.05 < (a[..., 0] > 0).mean() < 0.5
    assert (a[40:200, 150:300, 0] > 0).mean() > 0.1  # the face


# -- segmentation ------------------------------------------------------------------------------
def test_color_segments_is_flat_and_ordered_by_area():
    labels = np.zeros((10, 10), np.int32)
    labels[:, 7:] = 5
    labels[0, 0] = -1
    rgb = color_segments(labels)
    assert (rgb[0, 0] == 0).all()  # unassigned stays black
    assert len({tuple(rgb[5, 1]), tuple(rgb[5, 8])}) == 2
    assert (rgb[1:, :7] == rgb[5, 1]).all()
    again = color_segments(np.where(labels == 5, 0, np.where(labels == 0, 9, -1)))  # renumbered
    np.testing.assert_array_equal(rgb, again)  # colours follow area, not label numbers


def test_masks_to_labels_keeps_small_masks_on_top_and_rle_roundtrip():
    big = np.zeros((6, 8), bool)
    big[1:5, 1:7] = True
    small = np.zeros((6, 8), bool)
    small[2:4, 3:5] = True
    labels = masks_to_labels([small, big], (6, 8))
    assert labels[0, 0] == -1 and labels[1, 1] == 0 and labels[2, 3] == 1
    # COCO-style uncompressed RLE: column-major runs, starting with zeros.
    flat = big.T.ravel()
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    np.testing.assert_array_equal(rle_to_mask({"size": [6, 8], "counts": counts}), big)


def test_segment_fallback_gives_many_regions(store, upload, no_weights):
    name = upload("astronaut.jpg")
    obs = SegmentImage()(name, store)
    assert "over-segmentation" in obs.text and "weights fetch sam" in obs.text
    a = result(store, obs)
    assert a.shape == (512, 512, 3)
    colours, counts = np.unique(a.reshape(-1, 3), axis=0, return_counts=True)
    assert len(colours) >= 10  # measured 95
    assert counts.max() < 0.5 * a.shape[0] * a.shape[1]  # no single region swallows the photo
    assert not (colours == 0).all(axis=1).any()  # every pixel belongs to a segment
    # Regions follow the picture: the black helmet (bottom right) and the orange suit differ.
    assert tuple(a[450, 420]) != tuple(a[400, 100])
    # Deterministic: the same input gives the same map.
    np.testing.assert_array_equal(a, result(store, SegmentImage()(name, store)))


def test_segment_with_a_tiny_random_sam_plumbing(store, upload, monkeypatch, tmp_path):
    """Wiring only (weights are noise): folder -> pipeline -> masks -> colour map, on CPU."""
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from tiny_object_models import _sam

    torch.manual_seed(0)
    _sam(tmp_path / "sam")
    monkeypatch.setattr(maps, "sam_dir", lambda: tmp_path / "sam")
    monkeypatch.setattr(maps, "SAM_POINTS_PER_SIDE", {"cpu": 4, "cuda": 4})
    monkeypatch.setattr(SegmentImage, "sam_thresholds", {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0})
    tool = SegmentImage()
    assert tool.backend() == "SAM"
    try:
        obs = tool(upload("chelsea.jpg"), store)
        assert obs.text == f"Result saved as {obs.image}"  # SAM ran: no fallback note
        a = result(store, obs)
        assert a.shape == (300, 451, 3)
        assert len(np.unique(a.reshape(-1, 3), axis=0)) >= 2  # masks were decoded and painted
    finally:
        CACHE.unload("sam-mask-generation@")


# -- bad input through the real path -------------------------------------------------------------
@pytest.mark.parametrize("cls", [EdgeDetection, LineDetection, SketchDetection, SegmentImage])
def test_bad_input(cls, store, upload, no_weights):
    tool = cls()
    good = upload("chelsea.jpg")
    with pytest.raises(ImageError, match="does not exist"):
        tool("image/nosuchimg.png", store)
    with pytest.raises(ImageError, match="outside"):
        tool("../../etc/passwd", store)
    with pytest.raises(ToolInputError):
        tool(f"{good}, a cat", store)  # one image argument only
    with pytest.raises(ToolInputError):
        tool("", store)
    with pytest.raises(ToolInputError, match="limit"):
        tool("image/" + "a" * 2000 + ".png", store)
    (store.root / "image" / "notanimage.png").write_text("this is text, not a PNG")
    with pytest.raises(ImageError, match="not a readable image"):
        tool("image/notanimage.png", store)


def test_canny_map_accepts_rgb_arrays():
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[:, 20:, 0] = 200  # red half: an edge only in one channel (luma would still see it)
    rgb[:, 20:, 1] = 0
    edges = canny_map(rgb)
    assert edges.shape == (40, 40) and edges[:, 19:21].any() and not edges[:, :15].any()


# -- shared helpers (tools/_image.py) ----------------------------------------------------------
def test_draw_boxes_outlines_and_labels_each_box():
    from tools._image import draw_boxes, label_color

    img = Image.new("RGB", (300, 200), (128, 128, 128))
    out = draw_boxes(img, [("cat", (50, 60, 150, 180)), ("cup", (-20, -5, 400, 30))])
    a = np.asarray(out)
    assert out.size == img.size and np.asarray(img).mean() == 128  # a copy; the input is untouched
    cat = np.array(label_color("cat"))
    assert (a[120, 50] == cat).all() and (a[120, 150] == cat).all()  # left and right sides
    assert (a[120, 100] == 128).all()  # the inside stays clear
    tag = a[40:60, 50:80]  # the label tag sits above the box: box colour plus text pixels
    assert (tag == cat).all(axis=-1).mean() > 0.3 and not (tag == cat).all(axis=-1).all()
    assert label_color("cat") == label_color("cat") != label_color("cup")
    assert (a[15, 0] == np.array(label_color("cup"))).all()  # clipped into the image, still drawn
