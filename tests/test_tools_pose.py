"""Pose Detection On Image (MediaPipe Pose -> OpenPose map) through the real tool path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from gpt4tools.images import ImageError
from gpt4tools.tool import ToolInputError
from gpt4tools.weights import WeightsMissing

from conftest import ASSETS, requires_weights

pytest.importorskip("mediapipe")

from tools import pose  # noqa: E402
from tools.pose import COLORS, PoseDetection, Skeleton, draw_openpose, estimate_poses  # noqa: E402

NOSE, NECK, R_SHOULDER, R_ELBOW, L_SHOULDER, R_EYE, L_EYE, R_EAR, L_EAR = 0, 1, 2, 3, 5, 14, 15, 16, 17


def _astronaut() -> Image.Image:
    return Image.open(ASSETS / "astronaut.jpg").convert("RGB")


def test_astronaut_pose_map(store, upload):
    name = upload("astronaut.jpg")
    obs = PoseDetection()(name, store)
    assert obs.image and "_pose_" in obs.image
    assert obs.text.splitlines()[1].startswith("Found 1 person (")
    src, out = store.open(name), np.asarray(store.open(obs.image))
    assert out.shape[:2] == (src.height, src.width)
    black = (out.max(axis=2) == 0).mean()
    assert 0.9 < black < 0.999  # a skeleton on a black background, not the photo
    present = {tuple(int(v) for v in c) for c in np.unique(out.reshape(-1, 3), axis=0)}
    for k in (NOSE, R_EYE, L_EYE, R_SHOULDER, L_SHOULDER):  # keypoint discs keep their exact colour somewhere
        assert COLORS[k] in present, f"no pixel of keypoint {k}'s colour"


def test_astronaut_keypoints_are_where_her_body_is():
    (person,) = estimate_poses(_astronaut())
    kp = person.keypoints
    # Head and shoulders are in view; her left elbow is hidden behind the helmet, hips and
    # legs are outside the frame: 9 keypoints is the honest count.
    assert person.visible >= 9
    for k in (NOSE, NECK, R_SHOULDER, L_SHOULDER, R_EYE, L_EYE, R_EAR, L_EAR):
        assert kp[k] is not None, k
    assert kp[R_SHOULDER][0] < kp[NECK][0] < kp[L_SHOULDER][0]  # she faces the camera: her right is image left
    assert kp[R_EYE][1] < kp[NOSE][1] < kp[NECK][1]  # eyes above the nose above the neck
    assert 180 < kp[NOSE][0] < 270 and 100 < kp[NOSE][1] < 170  # the face is at x~225, y~135 of 512
    assert kp[R_ELBOW] is not None and kp[R_ELBOW][1] > kp[R_SHOULDER][1]


def test_openpose_rendering_colours():
    # A neck and a right shoulder: limb 0 (neck -> right shoulder) is red blended at 60%
    # over black, the two discs keep their own colours.
    pts: list = [None] * 18
    pts[NECK], pts[R_SHOULDER] = (20.0, 50.0), (80.0, 50.0)
    img = np.asarray(draw_openpose((100, 100), [Skeleton(tuple(pts))]))
    assert tuple(img[50, 50]) == (153, 0, 0)
    assert tuple(img[50, 20]) != (0, 0, 0) and tuple(img[50, 80]) != (0, 0, 0)
    assert tuple(img[10, 10]) == (0, 0, 0) and tuple(img[90, 50]) == (0, 0, 0)
    lone: list = [None] * 18
    lone[NOSE] = (50.0, 50.0)  # no limb: the disc keeps the exact keypoint colour
    assert tuple(np.asarray(draw_openpose((100, 100), [Skeleton(tuple(lone))]))[50, 50]) == COLORS[NOSE]


def test_no_person_on_the_cat(store, upload):
    obs = PoseDetection()(upload("chelsea.jpg"), store)
    assert obs.text == "No person found" and obs.image is None


def test_whole_image_fallback_without_detector(monkeypatch):
    import tools.objects

    def missing(*a, **k):
        raise WeightsMissing("weights 'centernet' are not in checkpoints/")

    monkeypatch.setattr(tools.objects, "detect_objects", missing)
    assert pose._person_boxes(_astronaut(), "cpu") is None
    (person,) = estimate_poses(_astronaut())
    assert person.visible >= 9


@requires_weights("centernet")
def test_two_people_side_by_side(store):
    # The astronaut and her mirror image on a grey 4:3 canvas: the detector finds two person
    # boxes (scores ~0.5) and MediaPipe one skeleton in each.
    a = _astronaut()
    pair = Image.new("RGB", (2 * a.width, a.height + 256), (128, 128, 128))
    pair.paste(a, (0, 128))
    pair.paste(ImageOps.mirror(a), (a.width, 128))
    people = estimate_poses(pair)
    assert len(people) == 2 and all(p.visible >= 9 for p in people)
    noses = sorted(p.keypoints[NOSE][0] for p in people)
    assert noses[0] < a.width < noses[1]  # one on each half
    obs = PoseDetection()(store.add_upload(pair), store)
    assert "Found 2 people" in obs.text


def test_bad_input(store, upload):
    tool = PoseDetection()
    upload("astronaut.jpg")
    with pytest.raises(ImageError, match="does not exist"):
        tool("image/nothere.png", store)
    with pytest.raises(ImageError, match="outside"):
        tool("../secret.png", store)
    with pytest.raises(ToolInputError, match="takes 1"):
        tool("image/a.png, a dancer", store)
    with pytest.raises(ToolInputError):
        tool("", store)
    (store.root / "image" / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageError, match="not a readable image"):
        tool("image/fake.png", store)
