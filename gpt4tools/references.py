"""Which image a message means, and messages that cannot mean any: pure string rules, no model.

The model alone gets these wrong where several photos exist (it takes the newest upload or the
last result), and none of them is a judgement: once the words say which, the agent decodes the
first call's image argument under that one name (gpt4tools.agent). What the rules read:

- a position: "describe the 2nd one", "now the first photo", "crop the person from the first pic",
  "now the first";
- an image name the session has ("image/ab12.png"), or the file name a photo was uploaded under
  ("read vacation.jpg");
- "the original photo": the upload the last turn's results came from (or the only upload);
- "the other one", where two uploads exist and the last turn worked on one of them;
- "same for this", "and this one?", "does it work on this photo too" sent with a new photo: the
  tool the last turn called, on that photo;
- what an upload shows, in the words the conversation used for it ("go back to the cat one"): its
  description and the messages it came with, with the COCO vocabulary's synonyms ("the coffee
  pic" is the one where a cup was found). Only when exactly one upload fits;
- a reference and nothing more ("now the first", "what about the other one?"): the last turn's
  tool again, on that photo;
- after an edit (a crop, a removal, an upscale: `ToolSpec.photo_out`), a message with no upload and
  no reference of its own ("now sketch it", "upscale"): the edited photo, as the image editors do.

And requests no image can serve, answered at once instead of handed to a model that would guess:
a file name this conversation does not have ("do the same for dog.png"), a position past the
uploads ("the third photo" when there is one), a photo pointed at before any was uploaded.

Anything less clear resolves to nothing and the model decides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from tools._coco import COCO_NAMES, coco_labels_for, singular

_POSITIONS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3,
              "fifth": 4, "5th": 4, "last": -1, "latest": -1, "newest": -1}
_PHOTO = r"(?:photo|pic|picture|image|img|upload|shot|snap|selfie|screenshot)s?\b"
# a position, then a word for a photo; "one" only when no "of ..." follows ("the first one of the cats")
_REFERENCE = re.compile(r"\b(?P<pos>" + "|".join(_POSITIONS) + r")\s+(?:(?P<photo>" + _PHOTO + r")|one\b(?!\s+of\b))",
                        re.I)
# "now the first", "and the 2nd?": a position that ends the message stands for a photo
_TRAILING = re.compile(r"\bthe\s+(?P<pos>" + "|".join(_POSITIONS) + r")\s*[?!.]*\s*$", re.I)
_ANY_POSITION = re.compile(r"\b(" + "|".join(_POSITIONS) + r")\b", re.I)
# a file name as people type it: "vacation.jpg", "IMG_2041.JPG", "image/ab12.png"
_FILE = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.(?:jpe?g|png|gif|webp|bmp|tiff?|heic))\b", re.I)
# "this photo", "the picture", "my pic": a photo the human points at
_POINTED = re.compile(r"\b(?:this|that|the|my|these|those|attached)\s+" + _PHOTO, re.I)
# "the original", "the original photo"; not "the original size/colours" (a property, not a photo)
_ORIGINAL = re.compile(r"\bthe\s+original\b(?!\s+(?:size|colou?rs?|resolution|quality|text|version\s+of)\b)", re.I)
_OTHER = re.compile(r"\bthe\s+other(?:\s+(?:one|" + _PHOTO + r"))?(?!\s+\w+\s+(?:in|on|of)\b)", re.I)
# "the cat one", "the coffee pic", "the one with the navy lady", "the photo of the rocket"
_CONTENT = re.compile(
    r"\bthe\s+(?P<before>[a-z]+(?:\s+[a-z]+)?)\s+(?:one|" + _PHOTO + r")"
    r"|\bthe\s+(?:one|" + _PHOTO + r")\s+(?:with|of)\s+(?:(?:the|a|an|my|that|those|some)\s+)?"
    r"(?P<after>[a-z]+(?:\s+[a-z]+)?)",
    re.I)
# words in "the X one" that say nothing of what the photo shows
_NOT_CONTENT = {"other", "same", "new", "old", "original", "edited", "result", "final", "previous", "next",
                "whole", "full", "entire", "second", "third", "first", "last", "latest", "newest", "this",
                "that", "my", "your", "one", "uploaded", "real", "actual", "big", "small", "right", "left",
                "upscaled", "cropped", "sharpened", "enlarged", "bigger", "fixed", "cleaned", "sharper"}
_WORD = re.compile(r"[a-z]+")


# A photo sent with a message that asks for what the last turn did, naming no operation of its own.
_REPEAT = re.compile(
    r"^(?:(?:and|oh and|ok and|ok|now|what about|how about)\s+)?(?:this|this one|that one|these|here)"
    r"(?:\s+(?:too|also|as well))?\s*[?!.]*$"
    r"|\bsame\s+(?:thing\s+)?(?:for|with|on|to)\s+(?:this|these|it)\b"
    r"|\b(?:does|will|would|can|could)\s+(?:it|that|this)\s+work\s+(?:on|with|for)\s+(?:this|these)\b"
    r"|\bdo\s+(?:the\s+same|that|it)\s+(?:again\s+)?(?:for|with|on|to)\s+(?:this|these)\b",
    re.I)


@dataclass(frozen=True)
class Meaning:
    """What the rules make of a message: the image it means (for the first call's image
    argument) and the tool it asks for again, or the answer to give at once because no image
    can serve it. All None: the model decides."""

    image: str | None = None
    answer: str | None = None
    tool: str | None = None


def resolve(message: str, uploads_now: Sequence[str], uploads: Sequence[str], images: Sequence[str] = (),
            *, originals: Mapping[str, str] | None = None, notes: Mapping[str, str] | None = None,
            last_used: str | None = None, last_tool: str | None = None, last_photo: str | None = None,
            makes_images: bool = False) -> Meaning:
    """What `message` means.

    `uploads_now`: the uploads sent with this message; `uploads`: all of the conversation's, oldest
    first; `images`: every image of the conversation (uploads and results); `originals`: the file
    name each upload came under -> its name here; `notes`: upload -> what the conversation said of
    it (its description, the messages it came with); `last_used`: the upload the last turn worked on;
    `last_tool`: the tool the last turn called first; `last_photo`: the photo the last turn's edit made
    (a crop, a removal, an upscale: not a map or an annotation); `makes_images`: a tool that makes images
    from words alone is offered (then "draw the picture of a cat" with no upload is a request, not a mistake).
    """
    message = message or ""
    meaning = _resolve(message, uploads_now, uploads, images, originals or {}, notes or {}, last_used, last_tool,
                       makes_images)
    if meaning.image and not meaning.tool and last_tool and _only_reference(message):
        # "now the first", "what about the other one?": the last turn's request, on that photo
        return Meaning(image=meaning.image, tool=last_tool)
    if meaning == Meaning() and not uploads_now and last_photo in images and not _content_words(message):
        # after "crop the cat", "now sketch it" and "upscale" mean the crop: the edit is the photo now
        # (not "and from the sign pic too": a photo named by what it shows, which the model may know)
        return Meaning(image=last_photo)
    return meaning


def _resolve(message: str, uploads_now: Sequence[str], uploads: Sequence[str], images: Sequence[str],
             originals: Mapping[str, str], notes: Mapping[str, str], last_used: str | None, last_tool: str | None,
             makes_images: bool) -> Meaning:
    named = _named_file(message, uploads, images, originals)
    if named is not None:
        return named
    by_position = _by_position(message, uploads_now, uploads)
    if by_position is not None:
        return by_position
    if len(uploads_now) == 1 and last_tool and _REPEAT.search(message.strip()):
        return Meaning(image=uploads_now[0], tool=last_tool)
    if not images and not makes_images and _POINTED.search(message):
        return Meaning(answer="I don't see a photo in our conversation yet. Please upload one (the image "
                              "button, or drag it into the chat), then ask again.")
    if _ORIGINAL.search(message) and uploads:
        if len(uploads) == 1 or last_used in uploads:
            return Meaning(image=uploads[0] if len(uploads) == 1 else last_used)
        return Meaning()
    if len(uploads) < 2:
        return Meaning()
    if _OTHER.search(message):
        pool = list(uploads_now) if len(uploads_now) >= 2 else list(uploads)
        if len(pool) == 2 and last_used in pool:
            return Meaning(image=pool[1 - pool.index(last_used)])
        return Meaning()
    return Meaning(image=_by_content(message, uploads, notes))


# What may stand around a reference in a message that asks for nothing new ("ok now the first one pls").
_FILLER = {"now", "and", "ok", "okay", "then", "too", "also", "what", "about", "how", "the", "same", "for", "with",
           "on", "to", "pls", "please", "plz", "one", "do", "it", "again", "thing", "oh", "hm", "hmm", "so",
           "but", "this", "that", "time", "try"}


def _only_reference(message: str) -> bool:
    """Whether the message is a reference to a photo and nothing more: "now the first", "and the
    other one?", "what about the cat pic" (then it asks for what the last turn did)."""
    rest = message.lower()
    for pattern in (_FILE, _REFERENCE, _TRAILING, _ORIGINAL, _OTHER, _CONTENT):
        rest = pattern.sub(" ", rest)
    return all(w in _FILLER for w in _WORD.findall(rest))


def _named_file(message: str, uploads: Sequence[str], images: Sequence[str],
                originals: Mapping[str, str]) -> Meaning | None:
    """A file named in the message: one of the session's images, an upload's own file name, or
    a name the conversation does not have (then the answer says so). None: no file is named."""
    files = list(dict.fromkeys(_FILE.findall(message)))
    if not files:
        return None
    by_original = {k.lower(): v for k, v in originals.items()}
    found = [f if f in images else by_original.get(PurePath(f).name.lower()) for f in files]
    unknown = [f for f, image in zip(files, found) if image is None]
    if not unknown:
        return Meaning(image=found[0]) if len(set(found)) == 1 else Meaning()
    what = " or ".join(unknown[:2])
    if not images:
        return Meaning(answer=f"I don't have {what}: no photo has been uploaded in our conversation yet. "
                              "Please upload it (the image button, or drag it into the chat), then ask again.")
    here = ", ".join(uploads[-3:]) if uploads else ", ".join(images[-3:])
    return Meaning(answer=f"There is no image called {what} in our conversation. Uploaded photos get new "
                          f"names here; the uploads so far are {here}. Which one do you mean? Or upload "
                          f"{what} and ask again.")


def _by_position(message: str, uploads_now: Sequence[str], uploads: Sequence[str]) -> Meaning | None:
    """An upload named by position, or the answer when the position is past the uploads.

    Positions count the uploads sent together with the message when it brought two or more ("two
    pics. describe the 2nd one"), else all uploads of the conversation ("now the first photo").
    "last" only counts within one message: alone, "the last one" may as well mean the last result.
    Only a photo word (not "one": "the third one from the left" may be a person) earns an answer
    that there is no such photo. None: no single position is named.
    """
    refs = list(_REFERENCE.finditer(message))
    positions = {m.group("pos").lower() for m in [*refs, *_TRAILING.finditer(message)]}
    mentioned = {w.lower() for w in _ANY_POSITION.findall(message)}
    if len(positions) != 1 or len(mentioned) > 1:  # none, or "the first and the second photo"
        return None
    word = positions.pop()
    index = _POSITIONS[word]
    pool = list(uploads_now) if len(uploads_now) >= 2 else list(uploads)
    if index >= len(pool) and index >= 1 and any(m.group("photo") for m in refs):
        have = {0: "no photo yet", 1: "only one photo"}.get(len(pool), f"only {len(pool)} photos")
        listed = f" ({', '.join(pool)})" if pool else ""
        return Meaning(answer=f"There is no {word} photo: our conversation has {have}{listed}. "
                              + ("Which one do you mean?" if pool else "Please upload one, then ask again."))
    if len(pool) < 2 or (index == -1 and len(uploads_now) < 2) or index >= len(pool):
        return None
    return Meaning(image=pool[index])


def _content_words(message: str) -> list[str]:
    """The words with which the message names a photo by what it shows ("the cat one": cat)."""
    return [w for m in _CONTENT.finditer(message.lower())
            for w in _WORD.findall(m.group("before") or m.group("after")) if w not in _NOT_CONTENT]


def _by_content(message: str, uploads: Sequence[str], notes: Mapping[str, str]) -> str | None:
    """The one upload whose notes name what the message calls it ("the cat one"), or None."""
    wanted = _things(" ".join(_content_words(message)))
    if not wanted:
        return None
    fits = [u for u in uploads if wanted & _things(notes.get(u, ""))]
    return fits[0] if len(fits) == 1 else None


def _things(text: str) -> set[str]:
    """The things a text names: its words folded to the singular, and the COCO classes they are
    words for ("coffee" and "mug" are both a cup; the detector's descriptions say "cup")."""
    words = {singular(w) for w in _WORD.findall(text.lower()) if len(w) > 2}
    return words | set(coco_labels_for(text, COCO_NAMES))
