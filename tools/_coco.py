"""The COCO-80 vocabulary as people write it: synonyms, plurals, and classes a small
detector confuses. Pure data and string matching; used to map an object query onto the
labels of a closed-vocabulary detector (tools/objects.py).
"""

from __future__ import annotations

import re
from collections.abc import Collection

# Words a user may write for each COCO class (keys are canonical COCO names; the labels file
# may spell a few differently, e.g. "sofa", "tvmonitor": those map through this table too).
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "people",
        "man",
        "men",
        "woman",
        "women",
        "child",
        "children",
        "kid",
        "boy",
        "girl",
        "baby",
        "astronaut",
        "human",
        "guy",
        "lady",
        "player",
        "pedestrian",
        "skier",
        "surfer",
        "someone",
    ),
    "bicycle": ("bike",),
    "car": ("automobile", "taxi", "sedan", "suv", "jeep"),
    "motorcycle": ("motorbike", "scooter", "moped"),
    "airplane": ("plane", "aeroplane", "aircraft", "jet", "airliner"),
    "train": ("locomotive", "tram"),
    "bus": ("buses",),
    "truck": ("lorry",),
    "boat": ("ship", "canoe", "kayak", "yacht", "sailboat"),
    "traffic light": ("stoplight", "traffic signal"),
    "bird": ("pigeon", "seagull", "gull", "duck", "parrot", "eagle", "owl", "sparrow", "crow", "swan", "goose"),
    "cat": ("kitten", "kitty", "kitties"),
    "dog": ("puppy", "puppies", "pup", "doggy"),
    "horse": ("pony", "foal"),
    "sheep": ("lamb",),
    "cow": ("cattle", "bull", "calf", "ox"),
    "backpack": ("rucksack", "knapsack"),
    "umbrella": ("parasol",),
    "handbag": ("purse", "bag"),
    "tie": ("necktie",),
    "suitcase": ("luggage",),
    "sports ball": ("ball", "football", "soccer ball", "basketball"),
    "tennis racket": ("racket", "racquet"),
    "wine glass": ("wineglass", "glass"),
    "cup": ("mug", "coffee", "tea", "teacup", "coffee cup"),
    "knife": ("knives",),
    "hot dog": ("hotdog",),
    "donut": ("doughnut",),
    "cake": ("cupcake",),
    "chair": ("stool",),
    "couch": ("sofa",),
    "potted plant": ("plant", "houseplant", "pottedplant", "flower pot"),
    "dining table": ("table", "desk", "diningtable"),
    "tv": ("television", "tvmonitor", "tv monitor", "monitor", "screen"),
    "laptop": ("notebook computer", "computer"),
    "remote": ("remote control",),
    "cell phone": ("phone", "mobile phone", "smartphone", "cellphone"),
    "oven": ("stove",),
    "refrigerator": ("fridge",),
    "teddy bear": ("teddy", "stuffed animal"),
    "hair drier": ("hair dryer", "hairdryer"),
}
# Classes a small detector mixes up; a query for one may be answered, *saying so*, with another.
SIBLINGS: dict[str, frozenset[str]] = {
    "animals": frozenset({"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"}),
    "vehicles": frozenset({"car", "truck", "bus"}),
}

# The classes people have other words for (the keys above): a text's COCO classes by synonym.
COCO_NAMES: tuple[str, ...] = tuple(_SYNONYMS)


def sibling_group(label: str) -> str | None:
    """The name of the confusable group a COCO label belongs to ("animals"), if any."""
    return next((name for name, group in SIBLINGS.items() if label in group), None)


_NOT_PLURALS = {"glasses", "sunglasses", "eyeglasses"}  # spectacles, not several wine glasses
# "crop her out", "remove me": a query that is only a personal pronoun means a person. Only when
# alone: in "her dog" the pronoun is a possessive and the object is the dog.
_PERSON_PRONOUNS = {"her", "him", "me", "myself", "herself", "himself", "she", "he", "us"}


def singular(word: str) -> str:
    """The singular of an English plural ("kitties" -> "kitty"), the word itself otherwise."""
    for suffix, repl in (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("xes", "x"), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + repl
    return word


def _canonical_table(names: Collection[str]) -> dict[str, str]:
    """phrase -> detector label, for every label, its synonyms and their singular forms."""
    canon_of = {name: name for name in _SYNONYMS}
    canon_of.update({syn: name for name, syns in _SYNONYMS.items() for syn in syns})
    table: dict[str, str] = {}
    for label in names:
        canon = canon_of.get(label, label)  # "sofa" in the file -> "couch" -> its synonyms
        for phrase in (label, canon, *_SYNONYMS.get(canon, ())):
            table.setdefault(phrase, label)
    return table


def coco_labels_for(query: str, names: Collection[str]) -> list[str]:
    """Detector labels named in a free-text query ("two kittens" -> ["cat"]), in query order.

    Multi-word names win over their parts ("teddy bear" is not "bear"); plurals are folded.
    An empty list means the query names nothing the detector knows.
    """
    table = _canonical_table(names)
    raw = re.findall(r"[a-z]+", query.lower())
    if len(raw) == 1 and raw[0] in _PERSON_PRONOUNS and "person" in table:
        return [table["person"]]
    folded = [singular(w) for w in raw]
    found: list[str] = []
    i = 0
    while i < len(raw):
        for n in (3, 2, 1):
            if i + n > len(raw):
                continue
            label = table.get(" ".join(raw[i : i + n])) or table.get(" ".join(folded[i : i + n]))
            if label and not (n == 1 and raw[i] in _NOT_PLURALS):
                if label not in found:
                    found.append(label)
                i += n
                break
        else:
            i += 1
    return found
