"""Requests that only an unavailable tool could serve, answered before the model: pure string rules.

Asked to "swap the cat for a dog" or for "a depth thing" with no inpainting or depth weights, the
default model calls the nearest tool it has (Remove, Edge) and presents that as the answer. The
words of such requests are the tools' own contract (`ToolSpec.asked_as`), so the rule reads them
from the specs: a message that matches an unavailable tool's pattern, and no offered tool's, gets an
honest answer at once with the reason and how to enable the tool. Anything else: the model decides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from gpt4tools.tool import Availability, ToolSpec


@lru_cache(maxsize=256)
def _pattern(spec: ToolSpec) -> re.Pattern | None:
    return re.compile("|".join(f"(?:{p})" for p in spec.asked_as), re.I) if spec.asked_as else None


def asks_for(message: str, spec: ToolSpec) -> bool:
    """Whether the message asks, in the tool's `asked_as` words, for what it does."""
    pattern = _pattern(spec)
    return bool(pattern and pattern.search(message or ""))


def answer(message: str, offered: Sequence[ToolSpec], unavailable: Sequence[tuple[ToolSpec, Availability]],
           has_images: bool = True) -> str | None:
    """The answer for a request that only unavailable tools serve, or None (the model decides).

    `unavailable`: (spec, its availability: why not, how to enable) for the tools that are not offered; `has_images`:
    whether the conversation has an image (without one, "turn that into a SMART goal" is no edit)."""
    if any(asks_for(message, s) for s in offered):
        return None
    wanted = [(s, why) for s, why in unavailable if (has_images or not s.needs_image) and asks_for(message, s)]
    if not wanted:
        return None
    spec, why = wanted[0]
    others = len({s.name for s, _ in wanted}) - 1
    which = f"the tool {spec.name}" + (f" (or one of {others} similar tools)" if others else "")
    text = (f"Sorry, I can't do that here: it needs {which}, which is not available on this machine "
            f"({why.problem.strip() or 'not installed'}).")
    if why.how:
        text += f" Whoever runs this app can enable it with: {why.how}"
    return text + " I can still work on your photos with the tools I have: ask me what I can do."
