"""Detect Face (MediaPipe) and Recognize Face (FaceRes + gallery) through the real tool path."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from gpt4tools.images import ImageError
from gpt4tools.tool import ToolInputError, ToolUnavailable

from conftest import ASSETS, requires_weights

pytest.importorskip("mediapipe")

from tools import faces  # noqa: E402
from tools.faces import (  # noqa: E402
    MATCH_THRESHOLD,
    DetectFace,
    FaceBox,
    FaceGallery,
    GalleryError,
    RecognizeFace,
    detect_faces,
    embed_faces,
)

LINE = re.compile(r"^(?P<label>.+) \[(\d+), (\d+), (\d+), (\d+)\]$")
NAME = "Eileen Collins"  # the astronaut


def _asset(name: str) -> Image.Image:
    return Image.open(ASSETS / name).convert("RGB")


def _altered_astronaut() -> Image.Image:
    """The astronaut scaled to 60%, mirrored and brightened: same face, different pixels."""
    a = _asset("astronaut.jpg")
    a = ImageOps.mirror(a.resize((307, 307), Image.Resampling.LANCZOS))
    return ImageEnhance.Brightness(a).enhance(1.3)


def _parse(text: str) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, f"not a 'label [x1, y1, x2, y2]' line: {line!r}"
        out.append((m["label"], tuple(int(v) for v in m.groups()[1:])))
    return out


# -- detection -------------------------------------------------------------------------------
def test_one_face_on_the_astronaut_where_her_face_is():
    (face,) = detect_faces(_asset("astronaut.jpg"))
    assert isinstance(face, FaceBox) and face.score > 0.8
    x1, y1, x2, y2 = face.box
    assert 150 < x1 < 210 and 250 < x2 < 300 and 40 < y1 < 100 and 150 < y2 < 200  # her face: x~175-280, y~60-180
    right_eye, left_eye = face.keypoints[:2]
    assert x1 < right_eye[0] < left_eye[0] < x2  # her right eye is on the image's left


@pytest.mark.parametrize("asset", ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "page.png"])
def test_no_face_where_there_is_none(asset):
    assert detect_faces(_asset(asset)) == []


def test_detect_face_tool(store, upload):
    name = upload("astronaut.jpg")
    obs = DetectFace()(name, store)
    assert obs.image and "_face_" in obs.image
    (line,) = _parse(obs.text.split("\n", 1)[1])
    assert line[0] == "face"
    drawn, src = np.asarray(store.open(obs.image)), np.asarray(store.open(name))
    assert drawn.shape == src.shape
    x1, y1, x2, y2 = line[1]
    changed = np.any(drawn != src, axis=2)
    # the box is drawn, the rest untouched
    assert changed[y1:y2 + 1, x1:x2 + 1].any() and not changed[y2 + 20:, :].any()
    assert DetectFace()(upload("chelsea.jpg"), store).text == "No face found"


# -- recognition -----------------------------------------------------------------------------
@requires_weights("faceres")
def test_descriptor_separates_people():
    same = detect_faces(_asset("astronaut.jpg")), detect_faces(_altered_astronaut())
    a = embed_faces(_asset("astronaut.jpg"), same[0])[0]
    b = embed_faces(_altered_astronaut(), same[1])[0]
    hopper = _asset("hopper.jpg")
    c = embed_faces(hopper, detect_faces(hopper))[0]
    assert a.shape == (1024,) and abs(float(np.linalg.norm(a)) - 1) < 1e-5
    assert float(a @ b) > MATCH_THRESHOLD + 0.1  # measured 0.87
    assert float(a @ c) < MATCH_THRESHOLD - 0.15  # measured 0.40


@requires_weights("faceres")
def test_recognize_enrolled_person(store, tmp_path):
    gallery = tmp_path / "faces"
    faces.enroll(NAME, _asset("astronaut.jpg"), root=gallery)
    assert faces.list_people(root=gallery) == [NAME]
    tool = RecognizeFace(gallery=gallery)

    obs = tool(store.add_upload(_altered_astronaut()), store)
    assert obs.image and "_faceid_" in obs.image
    assert [label for label, _ in _parse(obs.text.split("\n", 1)[1])] == [NAME]

    obs = tool(store.add_upload(_asset("hopper.jpg")), store)
    assert [label for label, _ in _parse(obs.text.split("\n", 1)[1])] == ["unknown"]

    assert tool(store.add_upload(_asset("chelsea.jpg")), store).text == "No face found"

    assert faces.forget(NAME, root=gallery) == 1
    assert faces.list_people(root=gallery) == []
    obs = tool(store.add_upload(_altered_astronaut()), store)
    assert obs.text.splitlines()[1].startswith("unknown [")
    assert "gallery is empty" in obs.text


@requires_weights("faceres")
def test_gallery_caches_descriptors_and_sees_new_photos(tmp_path, monkeypatch):
    gallery = FaceGallery(tmp_path / "g")
    gallery.enroll(NAME, _asset("astronaut.jpg"))
    names, vecs = gallery.embeddings()
    assert names == [NAME] and vecs.shape == (1, 1024)
    assert (tmp_path / "g" / ".embeddings.npz").is_file()

    fresh = FaceGallery(tmp_path / "g")
    calls = []
    real = FaceGallery._describe
    monkeypatch.setattr(FaceGallery, "_describe", lambda self, p: calls.append(p) or real(self, p))
    assert np.allclose(fresh.embeddings()[1], vecs) and calls == []  # served from the cache file
    fresh.enroll("Grace Hopper", _asset("hopper.jpg"))
    names, _ = fresh.embeddings()
    assert sorted(names) == ["Eileen Collins", "Grace Hopper"] and len(calls) == 1  # only the new photo
    (match,) = fresh.match(embed_faces(_asset("hopper.jpg"), detect_faces(_asset("hopper.jpg"))))
    assert match[0] == "Grace Hopper" and match[1] > 0.99


def test_gallery_refuses_bad_names_and_faceless_photos(tmp_path):
    gallery = FaceGallery(tmp_path)
    for bad in ("../evil", "a/b", "", ".hidden", "unknown", "x" * 65):
        with pytest.raises(GalleryError):
            gallery.enroll(bad, _asset("astronaut.jpg"))
    with pytest.raises(GalleryError, match="no face"):
        gallery.enroll("Chelsea", _asset("chelsea.jpg"))
    with pytest.raises(GalleryError, match="not in the face gallery"):
        gallery.forget("Nobody")
    assert gallery.people() == [] and not any(tmp_path.iterdir())


def test_cli_enroll_list_forget(tmp_path, capsys):
    g = str(tmp_path / "g")
    assert faces.main(["--gallery", g, "enroll", NAME, str(ASSETS / "astronaut.jpg")]) == 0
    assert faces.main(["--gallery", g, "list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == NAME
    assert faces.main(["--gallery", g, "forget", NAME]) == 0
    with pytest.raises(SystemExit):
        faces.main(["--gallery", g, "enroll", "Cat", str(ASSETS / "chelsea.jpg")])
    assert "no face" in capsys.readouterr().err


def test_recognize_is_unavailable_without_weights(store, upload, tmp_path, monkeypatch):
    monkeypatch.setenv("GPT4TOOLS_CHECKPOINTS", str(tmp_path / "empty"))
    with pytest.raises(ToolUnavailable, match="faceres"):
        RecognizeFace(gallery=tmp_path / "g")(upload("astronaut.jpg"), store)


@pytest.mark.parametrize("tool_cls", [DetectFace, RecognizeFace])
def test_bad_input(tool_cls, store, upload, tmp_path):
    tool = tool_cls()
    upload("astronaut.jpg")
    with pytest.raises(ImageError, match="does not exist"):
        tool("image/nobody.png", store)
    with pytest.raises(ImageError, match="outside"):
        tool("/etc/hostname", store)
    with pytest.raises(ToolInputError, match="takes 1"):
        tool("image/a.png, Eileen", store)
    (store.root / "image" / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="not a readable image"):
        tool("image/empty.png", store)
