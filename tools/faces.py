"""Faces: detection (MediaPipe) and recognition against a user-managed gallery (FaceRes).

- `detect_faces` runs MediaPipe's full-range face detector (BlazeFace, bundled in the
  mediapipe 0.10.21 wheel).
- `embed_face` turns a detected face into a 1024-d descriptor with the `faceres` model
  (HSE FaceRes, as shipped in @vladmandic/human and converted to ONNX), preprocessed the way
  Human does it: the detector box enlarged 1.4x, made square, resized to 224x224, RGB 0..255.
- `FaceGallery` is a folder of reference photos, `<root>/<name>/*.png|jpg`, with the
  descriptors cached beside them; `enroll`, `forget` and `list_people` manage it, and
  `python -m tools.faces {enroll,forget,list}` does the same from a shell.

A face whose best cosine similarity to every gallery photo is below `MATCH_THRESHOLD` is
"unknown": a wrong name is worse than no name.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gpt4tools import paths, weights
from gpt4tools.images import ImageError, ImageStore, open_image
from gpt4tools.model_cache import CACHE
from gpt4tools.tool import Arg, Tool, ToolResult, ToolSpec, format_boxes
from tools._image import Box, draw_boxes

log = logging.getLogger(__name__)

Point = tuple[float, float]

# MediaPipe's own default. Measured at a 0.05 floor: true faces scored 0.65-0.96 (astronaut,
# Grace Hopper, 22 faces of six group photos) and no box at all appeared on the cat, coffee,
# rocket, sign or page photos, so 0.5 loses nothing and invents nothing on these.
MIN_SCORE = 0.5
# Cosine similarity of FaceRes descriptors. Measured: the astronaut against her own scaled,
# mirrored, rotated, re-lit and JPEG-q30 copies 0.86-0.98; against 23 other people's faces
# <= 0.42; between those 23 faces <= 0.62 (253 pairs; a few may be one person in two photos).
# So 0.7 names a person only when the match is clear; a new photo of an enrolled person can
# fall below it (more reference photos per person help).
MATCH_THRESHOLD = 0.7
ENLARGE = 1.4  # Human's face-crop factor around the detector box
FACERES_SIDE = 224
_DETECTOR_MB = 150
_FACERES_MB = 120
_NAME_RE = re.compile(r"^[^\W_][\w .'\-]{0,63}$")  # letters/digits first; no slashes or dots-only
_PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
_CACHE_FILE = ".embeddings.npz"


class GalleryError(ValueError):
    """A gallery request that cannot be done (bad name, no face in the photo, unknown person)."""


@dataclass(frozen=True)
class FaceBox:
    score: float
    box: Box  # x1, y1, x2, y2 in pixels
    # MediaPipe's six keypoints in pixels: right eye, left eye, nose tip, mouth, right ear, left ear
    keypoints: tuple[Point, ...] = ()

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


# -- detection -------------------------------------------------------------------------------
def _load_detector() -> tuple[Any, threading.Lock]:
    import mediapipe as mp

    # model_selection=1 is the full-range model (faces up to ~5 m away); the floor is low and
    # the caller's min_score filters, so one cached graph serves every threshold.
    detector = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.2)
    return detector, threading.Lock()  # a MediaPipe graph is not safe to call from two threads


def detect_faces(img: Image.Image, device: str = "cpu", min_score: float = MIN_SCORE) -> list[FaceBox]:
    """Faces in `img`, best score first. MediaPipe runs on the CPU whatever `device` is."""
    detector, lock = CACHE.get("mediapipe-face", _load_detector, _DETECTOR_MB)
    rgb = np.ascontiguousarray(np.asarray(img.convert("RGB")))
    h, w = rgb.shape[:2]
    with lock:
        result = detector.process(rgb)
    faces = []
    for det in result.detections or []:
        score = float(det.score[0])
        if score < min_score:
            continue
        rel = det.location_data.relative_bounding_box
        box = (
            max(0.0, rel.xmin * w), max(0.0, rel.ymin * h),
            min(float(w), (rel.xmin + rel.width) * w), min(float(h), (rel.ymin + rel.height) * h),
        )
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        kps = tuple((k.x * w, k.y * h) for k in det.location_data.relative_keypoints)
        faces.append(FaceBox(score, box, kps))
    return sorted(faces, key=lambda f: -f.score)


# -- description -----------------------------------------------------------------------------
def _load_faceres(device: str) -> tuple[Any, str, int]:
    import onnxruntime as ort

    from tools.objects import ort_providers

    session = ort.InferenceSession(str(weights.path("faceres") / "faceres.onnx"), providers=ort_providers(device))
    # Outputs are gender (1), descriptor (1024) and age (100); find the descriptor by size
    # rather than by a converter-given name.
    index = next(i for i, o in enumerate(session.get_outputs()) if o.shape[-1] == 1024)
    return session, session.get_inputs()[0].name, index


def face_crop(img: Image.Image, face: FaceBox) -> Image.Image:
    """The model's input: a square ENLARGE x the box, black outside the image, 224x224."""
    x1, y1, x2, y2 = face.box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * ENLARGE / 2
    square = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    return img.convert("RGB").crop(square).resize((FACERES_SIDE, FACERES_SIDE), Image.Resampling.BILINEAR)


def embed_faces(img: Image.Image, faces: list[FaceBox], device: str = "cpu") -> np.ndarray:
    """Unit-length FaceRes descriptors, one row per face (shape (n, 1024))."""
    if not faces:
        return np.zeros((0, 1024), np.float32)
    session, input_name, index = CACHE.get(f"faceres@{device}", lambda: _load_faceres(device), _FACERES_MB)
    batch = np.stack([np.asarray(face_crop(img, f), np.float32) for f in faces])  # NHWC, 0..255
    desc = session.run(None, {input_name: batch})[index]
    return desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)


# -- gallery ---------------------------------------------------------------------------------
def default_gallery_dir() -> Path:
    return paths.runs_dir() / "faces"


def _check_name(name: str) -> str:
    name = " ".join(name.split())
    if not _NAME_RE.match(name) or name.lower() == "unknown":
        raise GalleryError(
            f"{name!r} is not a usable name: use 1-64 letters, digits, spaces, dots, "
            "apostrophes or hyphens, starting with a letter or digit (and not 'unknown')"
        )
    return name


class FaceGallery:
    """Reference photos in `<root>/<name>/`; descriptors cached in `<root>/.embeddings.npz`.

    The cache is keyed by file, size and modification time, so photos added or removed by
    hand are picked up on the next lookup.
    """

    _locks: dict[Path, threading.Lock] = {}

    def __init__(self, root: str | os.PathLike | None = None, device: str = "cpu"):
        self.root = Path(root) if root is not None else default_gallery_dir()
        self.device = device
        self._lock = self._locks.setdefault(self.root.resolve(), threading.Lock())

    def people(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and self._photos(p))

    @staticmethod
    def _photos(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir()
                      if p.suffix.lower() in _PHOTO_SUFFIXES and p.is_file() and not p.is_symlink())

    def enroll(self, name: str, img: Image.Image) -> Path:
        """Add a reference photo of `name` (it must show a face; the largest one is used)."""
        name = _check_name(name)
        if not detect_faces(img, self.device):
            raise GalleryError(f"no face found in the photo for {name}")
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        img = img.convert("RGB")
        img.thumbnail((1024, 1024), Image.Resampling.LANCZOS)  # plenty for a face; keeps the gallery small
        with self._lock:
            n = len(self._photos(folder)) + 1
            while (folder / f"{n:03d}.png").exists():
                n += 1
            dst = folder / f"{n:03d}.png"
            tmp = dst.with_suffix(".tmp")
            img.save(tmp, format="PNG")
            os.replace(tmp, dst)
        return dst

    def forget(self, name: str) -> int:
        """Remove a person and their photos; returns how many photos were removed."""
        name = _check_name(name)
        folder = self.root / name
        if not folder.is_dir():
            raise GalleryError(f"{name} is not in the face gallery ({', '.join(self.people()) or 'it is empty'})")
        with self._lock:
            photos = self._photos(folder)
            for p in photos:
                p.unlink()
            for leftover in folder.iterdir():  # anything else a user put there stays
                log.warning("leaving %s in the gallery", leftover)
            if not any(folder.iterdir()):
                folder.rmdir()
        return len(photos)

    def embeddings(self) -> tuple[list[str], np.ndarray]:
        """(name per row, unit descriptors): one row per reference photo that shows a face."""
        stamps = {}
        for person in self.people():
            for photo in self._photos(self.root / person):
                st = photo.stat()
                stamps[f"{person}/{photo.name}"] = f"{st.st_size}:{st.st_mtime_ns}"
        with self._lock:
            cached = self._read_cache()
            names, rows, fresh = [], [], {}
            for key, stamp in stamps.items():
                hit = cached.get(key)
                if hit is not None and hit[0] == stamp:
                    vec = hit[1]
                else:
                    vec = self._describe(self.root / key)
                fresh[key] = (stamp, vec)
                if vec is not None:
                    names.append(key.split("/", 1)[0])
                    rows.append(vec)
            if fresh.keys() != cached.keys() or any(fresh[k][0] != cached[k][0] for k in fresh):
                self._write_cache(fresh)
        return names, (np.stack(rows) if rows else np.zeros((0, 1024), np.float32))

    def _describe(self, photo: Path) -> np.ndarray | None:
        try:
            img = open_image(photo)
        except ImageError as e:
            log.warning("face gallery: skipping %s (%s)", photo, e)
            return None
        faces = detect_faces(img, self.device)
        if not faces:
            log.warning("face gallery: no face in %s; it is ignored", photo)
            return None
        largest = max(faces, key=lambda f: f.area)
        return embed_faces(img, [largest], self.device)[0]

    def _model_stamp(self) -> str:
        st = (weights.path("faceres") / "faceres.onnx").stat()
        return f"faceres:{st.st_size}:{st.st_mtime_ns}:{ENLARGE}"

    def _read_cache(self) -> dict[str, tuple[str, np.ndarray | None]]:
        file = self.root / _CACHE_FILE
        if not file.is_file():
            return {}
        try:
            with np.load(file, allow_pickle=False) as z:
                if str(z["model"]) != self._model_stamp():
                    return {}  # another model or crop: every descriptor must be recomputed
                keys, stamps, ok, vecs = list(z["keys"]), list(z["stamps"]), z["ok"], z["vectors"]
        except (OSError, KeyError, ValueError) as e:
            log.warning("face gallery: ignoring an unreadable cache (%s)", e)
            return {}
        return {str(k): (str(s), vecs[i] if ok[i] else None) for i, (k, s) in enumerate(zip(keys, stamps))}

    def _write_cache(self, entries: dict[str, tuple[str, np.ndarray | None]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        keys = list(entries)
        vecs = (np.stack([entries[k][1] if entries[k][1] is not None else np.zeros(1024, np.float32) for k in keys])
                if keys else np.zeros((0, 1024), np.float32))
        tmp = self.root / (_CACHE_FILE + ".tmp.npz")
        np.savez(
            tmp, model=np.array(self._model_stamp()), keys=np.array(keys, dtype=str),
            stamps=np.array([entries[k][0] for k in keys], dtype=str),
            ok=np.array([entries[k][1] is not None for k in keys], dtype=bool), vectors=vecs.astype(np.float32),
        )
        os.replace(tmp, self.root / _CACHE_FILE)

    def match(self, descriptors: np.ndarray, threshold: float = MATCH_THRESHOLD) -> list[tuple[str | None, float]]:
        """Best gallery name and its similarity per descriptor row; None below `threshold`."""
        names, gallery = self.embeddings()
        if not names:
            return [(None, 0.0) for _ in range(len(descriptors))]
        sims = descriptors @ gallery.T
        out = []
        for row in sims:
            best = int(np.argmax(row))
            out.append((names[best] if row[best] >= threshold else None, float(row[best])))
        return out


def enroll(name: str, img: Image.Image, root: str | os.PathLike | None = None) -> Path:
    return FaceGallery(root).enroll(name, img)


def forget(name: str, root: str | os.PathLike | None = None) -> int:
    return FaceGallery(root).forget(name)


def list_people(root: str | os.PathLike | None = None) -> list[str]:
    return FaceGallery(root).people()


# -- tools -----------------------------------------------------------------------------------
def _face_lines(faces: list[FaceBox], labels: list[str]) -> str:
    return format_boxes([(label, f.box) for label, f in zip(labels, faces)])


NO_FACE = "No face found"  # the observation when there is none (the data builder writes the same)


class DetectFace(Tool):
    spec = ToolSpec(
        name="Detect Face",
        description=(
            "useful when you want to find the human faces in an image, like: detect the faces, "
            "how many faces are in this photo, where is the face of the person"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="face",
        seen=False,
        aliases=("Face Detection", "Detect Faces", "Face Detection On Image"),
        paraphrases=(
            "useful when you need the location of every face in a picture, like: box the faces, "
            "count the people's faces in the photo",
            "useful for locating human faces in a photo, like: mark each face, is there a face in "
            "this image",
        ),
    )
    model = "MediaPipe face detection, full range (BlazeFace)"
    learned = True
    weights = ("mediapipe",)  # face_detection_full_range_sparse ships in the wheel
    packages = ("mediapipe",)
    memory_mb = _DETECTOR_MB

    def run(self, store: ImageStore, image_path: Image.Image, **_: Any) -> ToolResult:
        faces = detect_faces(image_path, self.device)
        if not faces:
            return ToolResult(text=NO_FACE)
        labels = ["face"] * len(faces)
        drawn = draw_boxes(image_path, [(f"face {f.score:.2f}", f.box) for f in faces])
        return ToolResult(image=drawn, text=_face_lines(faces, labels))


class RecognizeFace(Tool):
    spec = ToolSpec(
        name="Recognize Face",
        description=(
            "useful when you want to know who the people in an image are, like: who is this, "
            "recognize the faces in this photo, is my friend in this picture"
        ),
        args=(Arg("image_path", "image"),),
        output="image",
        slug="faceid",
        seen=False,
        aliases=("Face Recognition", "Recognize Faces", "Identify Face"),
        paraphrases=(
            "useful when you need to identify the person in a picture by their face, like: whose "
            "face is this, name the people in the photo",
            "useful for matching the faces in a photo against the known people, like: do you know "
            "this person, which of my contacts appear here",
        ),
    )
    model = "MediaPipe face detection + HSE FaceRes descriptors (ONNX) against a reference gallery"
    learned = True
    weights = ("mediapipe", "faceres")
    packages = ("mediapipe", "onnxruntime")
    memory_mb = _DETECTOR_MB + _FACERES_MB

    def __init__(self, device: str = "cpu", gallery: str | os.PathLike | None = None) -> None:
        super().__init__(device)
        self.gallery = FaceGallery(gallery, device)

    def run(self, store: ImageStore, image_path: Image.Image, **_: Any) -> ToolResult:
        faces = detect_faces(image_path, self.device)
        if not faces:
            return ToolResult(text=NO_FACE)
        matches = self.gallery.match(embed_faces(image_path, faces, self.device))
        labels = [name or "unknown" for name, _ in matches]
        drawn = draw_boxes(image_path, list(zip(labels, (f.box for f in faces))))
        text = _face_lines(faces, labels)
        if not self.gallery.people():
            text += "\nThe face gallery is empty, so no face can be named."
        return ToolResult(image=drawn, text=text)


# -- command line ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """python -m tools.faces {enroll NAME PHOTO... | forget NAME | list} [--gallery DIR]"""
    parser = argparse.ArgumentParser(prog="python -m tools.faces", description="Manage the face gallery.")
    parser.add_argument("--gallery", help=f"gallery folder (default: {default_gallery_dir()})")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_enroll = sub.add_parser("enroll", help="add reference photos of a person")
    p_enroll.add_argument("name")
    p_enroll.add_argument("photos", nargs="+")
    p_forget = sub.add_parser("forget", help="remove a person")
    p_forget.add_argument("name")
    sub.add_parser("list", help="list the people in the gallery")
    args = parser.parse_args(argv)
    gallery = FaceGallery(args.gallery)
    try:
        if args.cmd == "enroll":
            for photo in args.photos:
                print(gallery.enroll(args.name, open_image(photo)))
        elif args.cmd == "forget":
            print(f"removed {gallery.forget(args.name)} photo(s) of {args.name}")
        else:
            for person in gallery.people():
                print(person)
    except (GalleryError, ImageError, weights.WeightsMissing) as e:
        parser.exit(1, f"error: {e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
