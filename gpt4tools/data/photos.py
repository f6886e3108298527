"""Image contents built by our own tools from a folder of photos (X_C source b).

Each file goes through `ImageStore.add_upload` exactly as an upload to the app does (so
empty, corrupt, oversized and non-image files are refused by the same checks) and is then
analysed by the project's detectors: CenterNet objects (`tools.objects.detect_objects`),
OCR (`tools.ocr.read_text`), faces (`tools.faces.detect_faces`), and the description the
app would announce ("Get Photo Description" from the registry). Whatever cannot run is
left out and counted. Results are cached per file content (sha256) and per set of
detectors that ran, so a rerun is reproducible and fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable

from gpt4tools.convert.files import sha256_file
from gpt4tools.data.content import ImageContent
from gpt4tools.images import ImageError, ImageStore
from gpt4tools.registry import ToolRegistry
from gpt4tools.tool import INPUT_ERRORS
from tools.describe import PhotoDescription

log = logging.getLogger(__name__)
DESCRIBE_TOOL = PhotoDescription.spec.name
CACHE_VERSION = 1  # bump when the analysis changes


def _detectors(registry: ToolRegistry) -> dict[str, Callable]:
    """The analysis steps that can run here, by name (import or weights failures leave one out)."""
    found: dict[str, Callable] = {}
    from gpt4tools import weights

    try:
        from tools.objects import detect_objects

        if weights.status("centernet").ok:
            found["objects"] = lambda img: [(d.label, d.box) for d in detect_objects(img)]
    except ImportError as e:
        log.info("object detection unavailable: %s", e)
    try:
        from tools.ocr import read_text

        found["ocr"] = lambda img: [(t.text, t.box) for t in read_text(img)]
    except ImportError as e:
        log.info("OCR unavailable: %s", e)
    try:
        from tools.faces import detect_faces

        found["faces"] = lambda img: [f.box for f in detect_faces(img)]
    except ImportError as e:
        log.info("face detection unavailable: %s", e)
    if DESCRIBE_TOOL in registry and registry.availability(DESCRIBE_TOOL).ok:
        found["description"] = registry[DESCRIBE_TOOL]
    return found


def _analyse(path: Path, detectors: dict[str, Callable], sha: str, dropped: Counter) -> ImageContent | None:
    with tempfile.TemporaryDirectory() as tmp:
        store = ImageStore(tmp)
        try:
            name = store.add_upload(path)
            img = store.open(name)
        except ImageError:
            dropped["photos: not a readable image"] += 1
            return None
        if "description" not in detectors:  # no caption, no content: do not run the detectors for nothing
            dropped["photos: no description (Get Photo Description unavailable)"] += 1
            return None
        found: dict[str, list] = {"objects": [], "ocr": [], "faces": []}
        for key in ("objects", "ocr", "faces"):
            if key in detectors:
                try:
                    found[key] = detectors[key](img)
                except Exception as e:  # one detector failing must not lose the others
                    log.warning("%s on %s failed: %s", key, path.name, e)
                    dropped[f"photos: {key} failed ({type(e).__name__})"] += 1
        description = None
        if "description" in detectors:
            try:
                description = detectors["description"](name, store).text.replace("\n", " ").strip()
            except INPUT_ERRORS as e:
                dropped[f"photos: description failed ({type(e).__name__})"] += 1
    if not description:
        return None
    return ImageContent(f"photos:{sha[:16]}", img.width, img.height, [description], found["objects"],
                        found["ocr"], found["faces"], description=description)


def photo_contents(folder: str | os.PathLike, registry: ToolRegistry, cache_dir: Path, dropped: Counter,
                   on_progress: Callable[[int, int], None] | None = None) -> list[ImageContent]:
    """Analyse every file under `folder` (sorted, recursive); skip and count what cannot be used."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    detectors = _detectors(registry)
    signature = hashlib.sha256(f"{CACHE_VERSION}|{'+'.join(sorted(detectors))}".encode()).hexdigest()[:8]
    cache_dir.mkdir(parents=True, exist_ok=True)
    out: list[ImageContent] = []
    seen: set[str] = set()
    for i, path in enumerate(files):
        if on_progress:
            on_progress(i, len(files))
        if path.stat().st_size == 0:
            dropped["photos: empty file"] += 1
            continue
        sha = sha256_file(path)
        if sha in seen:
            dropped["photos: duplicate file"] += 1
            continue
        seen.add(sha)
        cached = cache_dir / f"{sha}-{signature}.json"
        if cached.is_file():
            out.append(ImageContent.from_json(json.loads(cached.read_text(encoding="utf-8"))))
            continue
        content = _analyse(path, detectors, sha, dropped)
        if content is None:
            continue
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps(content.to_json(), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, cached)
        out.append(content)
    if on_progress:
        on_progress(len(files), len(files))
    return out
