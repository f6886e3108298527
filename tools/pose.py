"""Human pose: MediaPipe Pose keypoints drawn as an OpenPose skeleton map.

"Pose Detection On Image" feeds "Generate Image Condition On Pose Image", whose ControlNet
was trained on OpenPose maps: 18 COCO-order body keypoints, fixed limb colours, black
background. MediaPipe Pose (the `full` model bundled in mediapipe 0.10.21) finds one person
per call, so several people are handled by running it on each person box of the object
detector (when its weights are present) and mapping its 33 landmarks to OpenPose's 18.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from gpt4tools.images import ImageStore
from gpt4tools.model_cache import CACHE
from gpt4tools.tool import Arg, Tool, ToolResult, ToolSpec, ToolUnavailable
from gpt4tools.weights import WeightsMissing
from tools._image import Box, from_np, to_np

log = logging.getLogger(__name__)

Point = tuple[float, float]

# OpenPose COCO-18 order -> MediaPipe Pose landmark index (None: the neck, which MediaPipe
# lacks; it is the midpoint of the shoulders).
#   0 nose, 1 neck, 2-4 right shoulder/elbow/wrist, 5-7 left shoulder/elbow/wrist,
#   8-10 right hip/knee/ankle, 11-13 left hip/knee/ankle, 14/15 right/left eye, 16/17 right/left ear
_FROM_MEDIAPIPE: tuple[int | None, ...] = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
_NECK = 1
_SHOULDERS = (2, 5)

# The limbs and colours of OpenPose's body renderer, as ControlNet-openpose saw them in
# training (colours are RGB; limb i uses colour i, keypoint k colour k).
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
STICK_WIDTH = 4  # OpenPose / ControlNet annotator values
POINT_RADIUS = 4

MIN_VISIBILITY = 0.5  # MediaPipe's own default for "this landmark is in view"
MIN_KEYPOINTS = 4  # fewer visible keypoints is not a usable skeleton
PERSON_MIN_SCORE = 0.3  # person boxes from the detector (its scores are low; see tools/objects.py)
PAD = 0.10  # person boxes are padded so wrists and feet at the edge stay in the crop
MAX_PEOPLE = 12  # each person is one MediaPipe call (~30 ms)
_MEMORY_MB = 250


@dataclass(frozen=True)
class Skeleton:
    """One person: 18 OpenPose keypoints in image pixels, None where not visible."""

    keypoints: tuple[Point | None, ...]

    @property
    def visible(self) -> int:
        return sum(p is not None for p in self.keypoints)

    def bbox(self) -> Box:
        xs = [p[0] for p in self.keypoints if p]
        ys = [p[1] for p in self.keypoints if p]
        return min(xs), min(ys), max(xs), max(ys)


def _load_pose() -> tuple[Any, threading.Lock]:
    import mediapipe as mp

    # Only model_complexity=1 ("full") ships in the wheel; 0 and 2 would try to download.
    pose = mp.solutions.pose.Pose(
        static_image_mode=True, model_complexity=1, enable_segmentation=False, min_detection_confidence=0.5
    )
    return pose, threading.Lock()  # a MediaPipe graph is not safe to call from two threads


def _pose_in(img: Image.Image, crop: Box) -> Skeleton | None:
    """MediaPipe Pose on one crop; keypoints mapped back to `img` pixels."""
    # MediaPipe runs on the CPU in Python whatever the device, so one copy serves all.
    pose, lock = CACHE.get("mediapipe-pose", _load_pose, _MEMORY_MB)
    x1, y1, x2, y2 = (int(round(v)) for v in crop)
    if x2 - x1 < 16 or y2 - y1 < 16:
        return None
    patch = np.ascontiguousarray(to_np(img)[y1:y2, x1:x2])
    with lock:
        result = pose.process(patch)
    if result.pose_landmarks is None:
        return None
    marks = result.pose_landmarks.landmark
    w, h = x2 - x1, y2 - y1
    points: list[Point | None] = []
    for idx in _FROM_MEDIAPIPE:
        if idx is None:
            points.append(None)  # the neck, filled below
            continue
        m = marks[idx]
        inside = 0.0 <= m.x <= 1.0 and 0.0 <= m.y <= 1.0  # landmarks are also predicted off-crop
        points.append((x1 + m.x * w, y1 + m.y * h) if m.visibility >= MIN_VISIBILITY and inside else None)
    right, left = points[_SHOULDERS[0]], points[_SHOULDERS[1]]
    if right and left:
        points[_NECK] = ((right[0] + left[0]) / 2, (right[1] + left[1]) / 2)
    skeleton = Skeleton(tuple(points))
    return skeleton if skeleton.visible >= MIN_KEYPOINTS else None


def _person_boxes(img: Image.Image, device: str) -> list[Box] | None:
    """Padded person boxes from the object detector, or None when it cannot run."""
    try:
        from tools.objects import detect_objects
    except ImportError:  # the objects family is not installed
        return None
    try:
        people = detect_objects(img, device=device, min_score=PERSON_MIN_SCORE, labels={"person"})
    except (WeightsMissing, ToolUnavailable) as e:
        log.info("pose: no person detector (%s); using the whole image", e)
        return None
    boxes = []
    for det in people[:MAX_PEOPLE]:
        x1, y1, x2, y2 = det.box
        px, py = PAD * (x2 - x1), PAD * (y2 - y1)
        boxes.append((max(0.0, x1 - px), max(0.0, y1 - py),
                      min(float(img.width), x2 + px), min(float(img.height), y2 + py)))
    return boxes


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def estimate_poses(img: Image.Image, device: str = "cpu") -> list[Skeleton]:
    """Every person's skeleton, most complete first.

    With the detector, MediaPipe runs once per person box; without it (or when it finds no
    person) once on the whole image, which yields at most one person.
    """
    crops = _person_boxes(img, device) or [(0.0, 0.0, float(img.width), float(img.height))]
    found = [s for s in (_pose_in(img, c) for c in crops) if s is not None]
    found.sort(key=lambda s: -s.visible)
    kept: list[Skeleton] = []
    for s in found:  # overlapping boxes can show MediaPipe the same person twice
        if all(_iou(s.bbox(), k.bbox()) < 0.5 for k in kept):
            kept.append(s)
    return kept


def draw_openpose(size: tuple[int, int], skeletons: list[Skeleton]) -> Image.Image:
    """OpenPose-style body map: coloured keypoints and limbs on black, `size` = (w, h)."""
    import cv2

    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    for s in skeletons:
        for k, p in enumerate(s.keypoints):
            if p is not None:
                cv2.circle(canvas, (int(p[0]), int(p[1])), POINT_RADIUS, COLORS[k], thickness=-1)
    for i, (a, b) in enumerate(LIMBS):
        for s in skeletons:
            pa, pb = s.keypoints[a], s.keypoints[b]
            if pa is None or pb is None:
                continue
            # Each limb is a filled ellipse blended at 60% over what is drawn so far, like
            # OpenPose's renderer: joints where limbs overlap get the mixed colours it makes.
            length = math.hypot(pa[0] - pb[0], pa[1] - pb[1])
            angle = math.degrees(math.atan2(pa[1] - pb[1], pa[0] - pb[0]))
            centre = (int((pa[0] + pb[0]) / 2), int((pa[1] + pb[1]) / 2))
            polygon = cv2.ellipse2Poly(centre, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
            layer = canvas.copy()
            cv2.fillConvexPoly(layer, polygon, COLORS[i])
            canvas = cv2.addWeighted(canvas, 0.4, layer, 0.6, 0)
    return from_np(canvas)


def _count(n: int) -> str:
    return f"{n} person" if n == 1 else f"{n} people"


class PoseDetection(Tool):
    spec = ToolSpec(
        name="Pose Detection On Image",
        description=(
            "useful when you want to detect the human pose of the image, like: generate human "
            "poses of this image, show the skeleton of the people in the photo, or get a pose "
            "map to condition a new image on"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="pose",
        aliases=("Pose Detection", "Human Pose Detection On Image"),
        paraphrases=(
            "useful when you need the body keypoints of the people in a picture, like: estimate "
            "the pose of the person, extract an openpose skeleton from this photo",
            "useful for drawing the posture of every person in an image as a stick figure, like: "
            "what pose is she in, make a pose image from this picture",
        ),
    )
    model = "MediaPipe Pose full (33 landmarks -> OpenPose 18), on CenterNet person boxes when available"
    learned = True
    weights = ("mediapipe",)  # pose_landmark_full ships in the wheel; the person detector is optional
    packages = ("mediapipe", "cv2")
    memory_mb = _MEMORY_MB

    def run(self, store: ImageStore, image_path: Image.Image, **_: Any) -> ToolResult:
        skeletons = estimate_poses(image_path, self.device)
        if not skeletons:
            return ToolResult(text="No person found")
        points = sum(s.visible for s in skeletons)
        return ToolResult(
            image=draw_openpose(image_path.size, skeletons),
            text=f"Found {_count(len(skeletons))} ({points} keypoints)",
        )
