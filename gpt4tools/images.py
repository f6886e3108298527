"""A conversation's image folder: safe uploads, safe lookups, chained result names.

Every path a tool sees was written by a model or a user, so it is untrusted: it must
name an existing image file inside this conversation's folder. Everything that goes
wrong here raises `ImageError`, whose message is written for the model to read.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import string
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

IMAGE_DIR = "image"  # names look like "image/abcdefgh.png", as in the paper
NAME_RE = re.compile(r"image/[A-Za-z0-9_\-.]+\.png")  # how image names appear in text
_ID_ALPHABET = string.ascii_lowercase + string.digits
# The only formats decoded: what cameras, phones and screenshots write. PIL would otherwise also
# try EPS (through Ghostscript), PSD, ICO, PCX, SGI, and a dozen more that no user needs.
DECODED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


class ImageError(ValueError):
    """Bad image input: missing, outside the folder, not an image, too big or too small."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 25 * 1024 * 1024  # an upload larger than this is refused unread
    max_pixels: int = 40_000_000  # decompression-bomb limit (20000x20000 is 400M)
    min_side: int = 16  # 1x1 images carry nothing a tool can use
    max_side_stored: int = 768  # uploads are shrunk to this (CPU tools cost grows with pixels)


def random_name(k: int = 8, rng: random.Random | None = None) -> str:
    """Random lowercase letters, like the paper's image names. `rng` makes them reproducible (training data)."""
    choice = rng.choice if rng is not None else secrets.choice
    return "".join(choice(string.ascii_lowercase) for _ in range(k))


def chained_name(source: str | None, op: str, rng: random.Random | None = None) -> str:
    """A new name that keeps the chain: <new id>_<op>_<previous id>_<original id>.png.

    As in the paper, the original upload's id survives any number of steps, so the
    model (and the user) can tell which photo a result came from. A free function so
    the training-data builder writes exactly the names the app writes (with a seeded `rng`).
    """
    choice = rng.choice if rng is not None else secrets.choice
    new_id = "".join(choice(_ID_ALPHABET) for _ in range(4))
    op = re.sub(r"[^a-z0-9]+", "-", op.lower()).strip("-") or "result"
    if source is None:  # generated from text alone
        return f"{IMAGE_DIR}/{new_id}_{op}.png"
    stem = Path(source).stem
    parts = stem.split("_")
    prev, orig = parts[0], parts[-1]
    return f"{IMAGE_DIR}/{new_id}_{op}_{prev}_{orig}.png"


def original_upload(name: str) -> str:
    """The upload a (chained) name comes from: the last id of the chain (see `chained_name`)."""
    return f"{IMAGE_DIR}/{Path(name).stem.split('_')[-1]}.png"


def open_image(path: str | os.PathLike, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Open, fully decode and return an RGB copy of an image file, or raise ImageError."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path.name} does not exist")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ImageError(f"{path.name} is {size / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.0f} MiB")
    try:
        with warnings.catch_warnings():
            # PIL only *warns* between max_pixels and 2*max_pixels; we refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=DECODED_FORMATS) as im:
                w, h = im.size
                if w * h > limits.max_pixels:
                    raise ImageError(f"{path.name} is {w}x{h} pixels; the limit is {limits.max_pixels:,} pixels")
                im = ImageOps.exif_transpose(im)
                im.load()  # decode now: a truncated file fails here, not inside a tool
                rgb = im.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path.name} is too large to decode safely ({e})") from None
    except Image.UnidentifiedImageError:  # SVG, HTML, EPS, text... whatever the file is named
        raise ImageError(f"{path.name} is not a readable image (accepted: PNG, JPEG, WebP, BMP, GIF, TIFF)") from None
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise ImageError(f"{path.name} is not a readable image ({type(e).__name__})") from None
    if min(rgb.size) < limits.min_side:
        raise ImageError(f"{path.name} is {rgb.width}x{rgb.height} pixels; "
                         f"it must be at least {limits.min_side} on each side")
    return rgb


class ImageStore:
    """One conversation's image folder. Names handed out are relative: "image/xxxx.png"."""

    def __init__(self, root: str | os.PathLike, limits: ImageLimits = ImageLimits(), rng: random.Random | None = None):
        """`rng`: draws the new names (a seeded one makes a replayed conversation name its images
        the same way every time: benchmarks); default: the secrets module."""
        self.root = Path(root).resolve()
        self.limits = limits
        self.rng = rng
        self.uploaded_as: dict[str, str] = {}  # upload name -> the file name it came under, where known
        (self.root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)

    # -- names -> files -------------------------------------------------------------
    def resolve(self, name: str) -> Path:
        """Map a model-written image name to a file in this folder, refusing escapes."""
        try:
            return self._resolve(name)
        except OSError as e:  # a name too long for the file system, an unreadable folder...
            shown = name if len(name) <= 80 else name[:79] + "…"
            raise ImageError(f"{shown} cannot be used as an image name ({e.strerror or type(e).__name__})") from None

    def _resolve(self, name: str) -> Path:
        name = name.strip().strip("\"'`")
        if not name:
            raise ImageError("no image name was given")
        if "\x00" in name:
            raise ImageError("the image name contains a NUL byte")
        candidate = Path(name)
        if not candidate.is_absolute():
            candidate = self.root / candidate
        # Refuse symlinks anywhere below the root (a link could point anywhere).
        try:
            rel = candidate.relative_to(self.root)
        except ValueError:
            raise ImageError(f"{name} is outside this conversation's image folder") from None
        probe = self.root
        for part in rel.parts:
            probe = probe / part
            if probe.is_symlink():
                raise ImageError(f"{name} is a link; only files in this conversation's folder can be used")
        real = candidate.resolve()
        if real != self.root and self.root not in real.parents:
            raise ImageError(f"{name} is outside this conversation's image folder")
        if not real.is_file():
            known = ", ".join(self.names()[-5:]) or "none yet"
            raise ImageError(f"{name} does not exist. Images in this conversation: {known}")
        return real

    def open(self, name: str) -> Image.Image:
        return open_image(self.resolve(name), self.limits)

    def name_of(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def names(self) -> list[str]:
        """Image names in this conversation, oldest first."""
        files = sorted((self.root / IMAGE_DIR).glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
        return [self.name_of(p) for p in files]

    def is_upload(self, name: str) -> bool:
        """Whether `name` is one of the user's uploads (random letters, `add_upload`) rather than a
        result (a chained name with "_", `chained_name`)."""
        return "_" not in Path(name).stem

    def exists(self, name: str) -> bool:
        try:
            self.resolve(name)
            return True
        except ImageError:
            return False

    # -- new files ------------------------------------------------------------------
    def add_upload(self, src: str | os.PathLike | Image.Image) -> str:
        """Check an uploaded file (or PIL image), shrink it, and store it under a new random name."""
        img = src.convert("RGB") if isinstance(src, Image.Image) else open_image(src, self.limits)
        if min(img.size) < self.limits.min_side:
            raise ImageError(f"the image is {img.width}x{img.height} pixels; "
                             f"it must be at least {self.limits.min_side} on each side")
        img.thumbnail((self.limits.max_side_stored, self.limits.max_side_stored), Image.Resampling.LANCZOS)
        img.info.clear()  # keep pixels only: no EXIF (GPS, camera serial), text chunks or comments
        while True:
            name = f"{IMAGE_DIR}/{random_name(rng=self.rng)}.png"
            if not (self.root / name).exists():
                break
        self._save(img, name)
        if not isinstance(src, Image.Image):  # "read vacation.jpg" may name it so (gpt4tools.references)
            self.uploaded_as[name] = Path(src).name
        return name

    def result_name(self, source: str | None, op: str) -> str:
        """A new chained name for a result derived from `source` (see `chained_name`)."""
        return chained_name(source, op, self.rng)

    def save_result(self, img: Image.Image, source: str | None, op: str) -> str:
        name = self.result_name(source, op)
        self._save(img, name)
        return name

    def save_file(self, data: bytes, source: str | None, op: str, ext: str) -> str:
        """Store a non-image result (e.g. a 3D mesh) beside the images, under a chained name
        with extension `ext`. It is never listed or opened as an image (those are .png)."""
        ext = re.sub(r"[^a-z0-9]+", "", ext.lower())
        if not ext or ext == "png":
            raise ValueError(f"save_file is for non-PNG files; got extension {ext!r}")
        name = self.result_name(source, op)[: -len(".png")] + f".{ext}"
        dst = self.root / name
        tmp = dst.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dst)
        return name

    def _save(self, img: Image.Image, name: str) -> None:
        # Write then rename, so a crash never leaves a half file under a valid name.
        dst = self.root / name
        tmp = dst.with_suffix(".tmp")
        img.save(tmp, format="PNG", compress_level=1)  # level 6 (default) costs ~4x the time for ~10% size
        os.replace(tmp, dst)

    def clear(self) -> None:
        self.uploaded_as.clear()
        shutil.rmtree(self.root / IMAGE_DIR, ignore_errors=True)
        (self.root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
