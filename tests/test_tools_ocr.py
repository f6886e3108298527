"""Text Detection On Image (RapidOCR, bundled PP-OCRv6) through the real tool path."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from gpt4tools.images import ImageError
from gpt4tools.tool import ToolInputError

from conftest import ASSETS, requires_weights

pytest.importorskip("rapidocr")

from tools.ocr import TextDetection, TextLine, read_text  # noqa: E402

LINE = re.compile(r"^(?P<text>.+) \[(\d+), (\d+), (\d+), (\d+)\]$")
pytestmark = requires_weights("rapidocr")


def _lines(text: str) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, f"not a 'text [x1, y1, x2, y2]' line: {line!r}"
        out.append((m["text"], tuple(int(v) for v in m.groups()[1:])))
    return out


def test_sign_text_is_read_exactly_with_boxes(store, upload):
    name = upload("coffee_sign.jpg")
    obs = TextDetection()(name, store)
    assert obs.image is None  # a text tool: nothing saved
    lines = dict(_lines(obs.text))
    assert "OPEN DAILY 7-19" in lines and "Espresso $2.50" in lines
    w, h = store.open(name).size
    top, bottom = lines["OPEN DAILY 7-19"], lines["Espresso $2.50"]
    for x1, y1, x2, y2 in (top, bottom):
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert top[1] < bottom[1]  # the first line is above the second
    assert top[2] - top[0] > 200  # a whole line, not a single word


def test_read_text_returns_lines_in_reading_order():
    page = Image.open(ASSETS / "page.png").convert("RGB")
    lines = read_text(page)
    assert all(isinstance(t, TextLine) and t.score >= 0.8 for t in lines)
    texts = [t.text for t in lines]
    assert len(texts) >= 5
    assert texts[0] == "Region-based segmentation"
    assert any("histogram of grey values" in t for t in texts)
    tops = [t.box[1] for t in lines]
    assert tops == sorted(tops)


def test_no_text_in_a_photo_without_text(store, upload):
    # The recogniser reads a "0" in the cat's face at 0.77: below the threshold on purpose.
    assert TextDetection()(upload("chelsea.jpg"), store).text == "No text found"
    assert read_text(Image.open(ASSETS / "chelsea.jpg").convert("RGB"), min_score=0.0)  # it is there, just weak


def test_punctuation_only_lines_are_dropped():
    # Grace Hopper's portrait: the flag's stars read as "***" with a high score; her name tag is real text.
    texts = [t.text for t in read_text(Image.open(ASSETS / "hopper.jpg").convert("RGB"))]
    assert "COMO HOPPER" in texts
    assert all(any(c.isalnum() for c in t) for t in texts)


def test_bad_input(store, upload):
    tool = TextDetection()
    upload("coffee_sign.jpg")
    with pytest.raises(ImageError, match="does not exist"):
        tool("image/nothere.png", store)
    with pytest.raises(ImageError, match="outside"):
        tool("../../etc/passwd", store)
    with pytest.raises(ToolInputError, match="takes 1"):
        tool("image/a.png, read it", store)
    with pytest.raises(ToolInputError):
        tool("   ", store)
    (store.root / "image" / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        tool("image/notes.png", store)
