"""Synthetic image contents over the 80 COCO categories, for offline bootstrapping.

No captioned photo collection is reachable here, so the default dataset also draws on
scenes made up from plausible object combinations (scenes.json: a kitchen has an oven and
cups, a savanna has zebras). Each scene gets COCO-like boxes (sizes and aspect ratios per
category, objects on the ground, on a table or in the sky) and template captions. Every
content id starts with "synthetic:" so records and stats say where they came from.

Deterministic: content `n` of stream `s` depends only on (seed, s, n).
"""

from __future__ import annotations

import hashlib
import json
import random
from functools import lru_cache
from pathlib import Path

from gpt4tools.data.content import Box, ImageContent

_DATA = Path(__file__).resolve().parent / "scenes.json"
_SIZES = ((640, 480), (480, 640), (640, 427), (500, 375), (640, 360), (427, 640), (612, 612))
_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


@lru_cache(maxsize=1)
def scene_data() -> dict:
    return json.loads(_DATA.read_text(encoding="utf-8"))


def coco_categories() -> list[str]:
    return list(scene_data()["categories"])


def rng_for(*key: object) -> random.Random:
    """A generator seeded from a key (hashlib, not hash(): that is salted per process)."""
    digest = hashlib.sha256("|".join(map(str, key)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def plural(label: str, n: int = 2) -> str:
    if n == 1:
        return label
    return scene_data()["plurals"].get(label) or (label + "es" if label.endswith(("s", "sh", "ch")) else label + "s")


def article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def counted(label: str, n: int) -> str:
    """'a dog', 'two dogs'."""
    if n == 1:
        return f"{article(label)} {label}"
    return f"{_NUMBERS.get(n, 'several')} {plural(label, n)}"


def join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _place(rng: random.Random, label: str, size: tuple[int, int], placed: list[tuple[str, Box]]) -> Box:
    """A box for `label`: its size from the category table, its position from its placement."""
    (h_lo, h_hi), (a_lo, a_hi), where = scene_data()["categories"][label]
    W, H = size
    table = next((b for lab, b in placed if lab == "dining table"), None)
    for _ in range(20):
        h = rng.uniform(h_lo, h_hi) * H
        w = min(rng.uniform(a_lo, a_hi) * h, 0.95 * W)
        x1 = rng.uniform(0, W - w)
        if where == "table" and table is not None:  # stands on the table top
            y2 = rng.uniform(table[1], table[1] + 0.4 * (table[3] - table[1]))
            x1 = rng.uniform(table[0], max(table[0], table[2] - w))
        elif where == "sky" or (where == "any" and rng.random() < 0.4):
            y2 = rng.uniform(h, 0.55 * H if h < 0.55 * H else H)
        else:  # stands on the ground: its bottom edge in the lower part of the frame
            y2 = rng.uniform(max(h, 0.55 * H), H)
        box = (round(x1), round(max(0.0, y2 - h)), round(min(W, x1 + w)), round(min(H, y2)))
        if all(_iou(box, b) < 0.4 for _, b in placed):
            break
    return box


def _caption_parts(rng: random.Random, counts: dict[str, int]) -> tuple[str, list[str], str]:
    """The main subject phrase and the phrases for the other objects."""
    people = scene_data()["people"]
    phrases = {}
    for label, n in counts.items():
        if label == "person":
            phrases[label] = (rng.choice(people["one"]) if n == 1
                              else f"{_NUMBERS.get(n, 'several')} {rng.choice(people['many'])}")
        else:
            phrases[label] = counted(label, n)
    order = sorted(counts, key=lambda lab: (lab != "person", -scene_data()["categories"][lab][0][1]))
    return phrases[order[0]], [phrases[lab] for lab in order[1:]], order[0]


def _captions(rng: random.Random, place: str, counts: dict[str, int]) -> list[str]:
    main, others, main_label = _caption_parts(rng, counts)
    actions = scene_data()["actions"].get(main_label)
    # Things that do nothing are "in" the place; people and animals get a verb.
    action = f" {rng.choice(actions)}" if actions else ""
    with_others = f" with {join(others[:3])}" if others else ""
    near = f" near {join(others[:2])}" if others else ""
    variants = [
        f"{main}{action} in {place}{near}.",
        f"{place} with {join([main] + others[:3])}.",
        f"There {'is' if counts[main_label] == 1 else 'are'} {main} in {place}{with_others}.",
        f"A view of {place} showing {join([main] + others[:2])}.",
        f"{main}{action} next to {others[0]}." if others else f"A photo of {main} in {place}.",
    ]
    rng.shuffle(variants)
    return [v[0].upper() + v[1:] for v in variants[: rng.randint(3, 5)]]


def synthetic_content(seed: int, stream: str, n: int) -> ImageContent:
    """Scene `n` of `stream` (streams keep the train, validation and test images disjoint)."""
    rng = rng_for("synthetic", seed, stream, n)
    data = scene_data()
    kind = rng.choice(sorted(data["scenes"]))
    scene = data["scenes"][kind]
    counts: dict[str, int] = {}
    for label, (lo, hi) in scene["objects"].items():
        k = rng.randint(lo, hi) if rng.random() < 0.45 or lo > 0 else 0
        if k:
            counts[label] = k
    need = scene.get("need")
    if need and not set(need) & set(counts):
        counts[rng.choice(need)] = 1
    if not counts:  # every scene shows something
        counts[rng.choice(sorted(scene["objects"]))] = 1
    while sum(counts.values()) > 8:  # keep captions and box lists readable
        big = max(counts, key=counts.get)
        counts[big] -= 1
    size = rng.choice(_SIZES)
    objects: list[tuple[str, Box]] = []
    # Large and ground objects first, so table-top things can stand on a placed table.
    for label in sorted(counts, key=lambda lab: (data["categories"][lab][2] == "table", lab)):
        for _ in range(counts[label]):
            objects.append((label, _place(rng, label, size, objects)))
    faces = []
    for label, (x1, y1, x2, y2) in objects:
        if label == "person" and (y2 - y1) > 0.3 * size[1] and rng.random() < 0.7:
            fw = 0.45 * (x2 - x1)
            cx = (x1 + x2) / 2
            faces.append((round(cx - fw / 2), round(y1 + 0.02 * (y2 - y1)),
                          round(cx + fw / 2), round(y1 + 0.02 * (y2 - y1) + fw * 1.2)))
    ocr = [("STOP", box) for label, box in objects if label == "stop sign"]
    if rng.random() < scene.get("signs", 0.0):
        w, h = rng.uniform(0.15, 0.35) * size[0], rng.uniform(0.04, 0.08) * size[1]
        x, y = rng.uniform(0, size[0] - w), rng.uniform(0, 0.4 * size[1])
        ocr.append((rng.choice(data["signs"]), (round(x), round(y), round(x + w), round(y + h))))
    place = rng.choice(scene["places"])
    return ImageContent(f"synthetic:{stream}-{n:05d}", size[0], size[1], _captions(rng, place, counts),
                        objects, ocr, faces)
