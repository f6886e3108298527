"""Which upload a message means when it names one by position: "describe the 2nd one", "now the
first photo", "crop the person from the first pic". Pure string rules, no model.

The model alone gets these wrong where several photos exist (it takes the newest upload or the
last result), and a position is not a judgement: once the words say which, the agent decodes the
first call's image argument under that one name (gpt4tools.agent). Anything less clear ("the cat
one", "the other", two positions in one message) resolves to nothing and the model decides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_POSITIONS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3,
              "last": -1, "latest": -1, "newest": -1}
# a position, then a word for a photo; "one" only when no "of ..." follows ("the first one of the cats")
_REFERENCE = re.compile(
    r"\b(?P<pos>" + "|".join(_POSITIONS) + r")\s+"
    r"(?:(?:photo|pic|picture|image|img|upload|shot|snap)s?\b|one\b(?!\s+of\b))",
    re.I,
)
_ANY_POSITION = re.compile(r"\b(" + "|".join(_POSITIONS) + r")\b", re.I)


def meant_upload(message: str, uploads_now: Sequence[str], uploads: Sequence[str]) -> str | None:
    """The upload `message` names by position, or None.

    `uploads_now`: those sent with this message; `uploads`: all of the conversation's, oldest first.
    Positions count the uploads sent together with the message when it brought two or more ("two
    pics. describe the 2nd one"), else all uploads of the conversation ("now the first photo").
    "last" only counts within one message: alone, "the last one" may as well mean the last result.
    """
    positions = {m.group("pos").lower() for m in _REFERENCE.finditer(message or "")}
    mentioned = {w.lower() for w in _ANY_POSITION.findall(message or "")}
    if len(positions) != 1 or len(mentioned) > 1:  # none, or "the first and the second photo"
        return None
    index = _POSITIONS[positions.pop()]
    pool = list(uploads_now) if len(uploads_now) >= 2 else list(uploads)
    if len(pool) < 2 or (index == -1 and len(uploads_now) < 2) or index >= len(pool):
        return None
    return pool[index]
