"""The one tool contract. Prompt lines, teacher prompts, benchmark metadata and docs are
all generated from `ToolSpec`; tool code never restates its own metadata elsewhere.

A tool receives its arguments as one comma-separated string (the paper's `Action Input`).
`ToolSpec.split_input` turns it into named values; image arguments are resolved inside
the conversation's `ImageStore` and decoded before `run` sees them.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from PIL import Image

from gpt4tools import weights
from gpt4tools.images import ImageError, ImageStore

log = logging.getLogger(__name__)

ArgKind = Literal["image", "text"]
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
_INPUT_NAMES_RE = re.compile(r"representing the ([\w, ]+)\.$")  # the end of `input_description`


class ToolInputError(ValueError):
    """The model called a tool wrongly (argument count, empty or absurd text). Shown to it."""


class ToolUnavailable(RuntimeError):
    """The tool's weights or packages are missing. Carries how to enable it."""


@dataclass(frozen=True)
class Arg:
    name: str  # e.g. "image_path", "text", "object", "question"
    kind: ArgKind = "text"
    max_chars: int = 1000  # longer text is refused: a model looping inside an argument


@dataclass(frozen=True)
class ToolSpec:
    name: str  # exact benchmark string, odd spellings included
    description: str  # when the tool is useful, "like: ..." examples; no input prose (generated)
    args: tuple[Arg, ...]
    output: Literal["text", "image"]
    slug: str  # short operation name used in result file names, e.g. "edge"
    follows: str | None = None  # the tool whose output image this one is conditioned on
    seen: bool = True  # seen tools go into training data; the 8 unseen ones only into the test split
    aliases: tuple[str, ...] = ()  # other spellings the teacher or model may write
    paraphrases: tuple[str, ...] = ()  # alternative descriptions, for training-data variety
    # How people ask for what only this tool does (regexes, case-insensitive; "swap the cat for a dog").
    # Where the tool is unavailable, a message that matches one, and no offered tool's, is answered at
    # once with the reason instead of handed to a model that would call the nearest tool (gpt4tools.unserved).
    asked_as: tuple[str, ...] = ()
    # The output image is a photo to keep working on (an edit or a new picture), not a map or an
    # annotation of the input: after it, "now sketch it" means the result (gpt4tools.references).
    photo_out: bool = False

    def __post_init__(self) -> None:
        if not self.args:
            raise ValueError(f"{self.name}: a tool needs at least one argument")
        if any(a.kind == "image" for a in self.args[1:]):
            raise ValueError(f"{self.name}: only the first argument may be an image")

    @property
    def needs_image(self) -> bool:
        return self.args[0].kind == "image"

    def input_description(self) -> str:
        """The sentence that ends a tool line, as in the paper's descriptions."""
        names = ["image_path" if a.kind == "image" else a.name for a in self.args]
        if len(names) == 1:
            return f"The input to this tool should be a string, representing the {names[0]}."
        listed = ", ".join(names[:-1]) + " and " + names[-1]
        return (f"The input to this tool should be a comma separated string of {_NUMBER_WORDS[len(names)]}, "
                f"representing the {listed}.")

    @staticmethod
    def input_kinds(line: str) -> tuple[ArgKind, ...] | None:
        """The argument kinds a tool line's input sentence (`input_description`) names: image_path
        an image, any other name text; None for a line without one (read back from a prompt for a
        tool that is not in the registry, such as an invented one)."""
        m = _INPUT_NAMES_RE.search(line)
        if not m:
            return None
        names = [n.strip() for n in re.split(r", | and ", m.group(1)) if n.strip()]
        return tuple("image" if n == "image_path" else "text" for n in names) or None

    def prompt_line(self, description: str | None = None) -> str:
        return f"> {self.name}: {description or self.description} {self.input_description()}"

    def split_input(self, raw: str) -> list[str]:
        """Split an Action Input into this tool's arguments.

        The last argument takes the rest of the string, so a question or prompt may
        contain commas. An image-only tool given extra parts is an error, not a guess.
        """
        raw = (raw or "").strip()
        if len(self.args) == 1:  # one image path (never has commas) or one free text
            parts = raw.split(",") if self.args[0].kind == "image" else [raw]
        else:
            parts = raw.split(",", len(self.args) - 1)
        parts = [p.strip() for p in parts] if raw else []
        if len(parts) != len(self.args) or any(not p for p in parts):
            want = ", ".join(a.name for a in self.args)
            raise ToolInputError(
                f"{self.name} takes {len(self.args)} comma-separated argument(s) ({want}); got {raw!r}"
            )
        for arg, part in zip(self.args, parts):
            if len(part) > arg.max_chars:
                raise ToolInputError(
                    f"the {arg.name} argument is {len(part)} characters long; the limit is {arg.max_chars}")
        return parts

    def join_input(self, values: list[str]) -> str:
        return ", ".join(values)


class Availability(weights.Status):
    """Whether a tool can run now: its weights' Status (same fields and `reason`), or a missing package."""

    @classmethod
    def of(cls, status: weights.Status) -> Availability:
        return cls(status.ok, status.problem, status.how)


@dataclass
class ToolResult:
    """What `run` returns: an image to save, text to report, or both."""

    image: Image.Image | None = None
    text: str | None = None
    source: str | None = None  # the image the result derives from (for chained names)


@dataclass
class Observation:
    """What the agent shows the model after a call, plus what the UI needs."""

    text: str
    image: str | None = None  # name of the image written, if any
    ok: bool = True


class Tool:
    """Base class. Subclasses set `spec` and implement `load` (optional) and `run`.

    Class attributes describe the backing model for `python -m gpt4tools tools`:
    `model` (what computes the result), `learned` (a trained model vs a classical
    algorithm), `weights` (manifest names that must be present), `packages` (import
    names that must be installed) and `memory_mb` (rough RSS when loaded).
    """

    spec: ClassVar[ToolSpec]
    model: ClassVar[str] = ""
    learned: ClassVar[bool] = False
    weights: ClassVar[tuple[str, ...]] = ()
    packages: ClassVar[tuple[str, ...]] = ()
    memory_mb: ClassVar[int] = 50

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    # -- availability -----------------------------------------------------------------
    def availability(self) -> Availability:
        """Cheap check (no weights are loaded): packages importable, weights present."""
        missing = [p for p in self.packages if importlib.util.find_spec(p) is None]
        if missing:
            return Availability(False, f"missing Python package(s): {', '.join(missing)} (pip install them)")
        for name in self.weights:
            status = weights.status(name)
            if not status.ok:
                return Availability.of(status)
        return Availability(True)

    def learned_now(self) -> bool:
        """Whether what would run now is a learned model (tools with a classical fallback
        answer for the path their weights select)."""
        return self.learned

    # -- running ----------------------------------------------------------------------
    def run(self, store: ImageStore, **args: Any) -> ToolResult:
        """Compute the result. Image arguments arrive as RGB PIL images, text as str."""
        raise NotImplementedError

    def __call__(self, raw_input: str, store: ImageStore) -> Observation:
        """Run on a raw Action Input. Input mistakes raise ToolInputError/ImageError;
        missing weights raise ToolUnavailable; anything else is a bug in the tool."""
        parts = self.spec.split_input(raw_input)
        values: dict[str, Any] = {}
        source = None
        for arg, part in zip(self.spec.args, parts):
            if arg.kind == "image":
                values[arg.name] = store.open(part)
                source = store.name_of(store.resolve(part))
            else:
                values[arg.name] = part
        avail = self.availability()
        if not avail.ok:
            raise ToolUnavailable(f"{self.spec.name} is unavailable: {avail.reason}")
        result = self.run(store, **values)
        result.source = result.source or source
        return self.observe(result, store)

    def observe(self, result: ToolResult, store: ImageStore) -> Observation:
        if result.image is not None:
            name = store.save_result(result.image, result.source, self.spec.slug)
            return Observation(text=result_saved(name, result.text), image=name)
        if result.text is None:
            raise RuntimeError(f"{self.spec.name} returned neither an image nor text")
        return Observation(text=result.text)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.name!r} on {self.device}>"


# Errors a tool call may raise because of its input: the agent shows these to the model.
INPUT_ERRORS = (ToolInputError, ImageError, ToolUnavailable)


def result_saved(name: str, extra: str | None = None) -> str:
    """The observation of a tool that made an image (the paper's wording; the data builder
    writes the same text into training samples, so the model learns to pass `name` on)."""
    return f"Result saved as {name}" + (f"\n{extra}" if extra else "")


def format_boxes(boxes: list[tuple[str, tuple[float, float, float, float]]]) -> str:
    """Boxes as the paper writes them: `label [x1, y1, x2, y2]`, integer pixels."""
    return "\n".join(f"{label} [{', '.join(str(int(round(v))) for v in box)}]" for label, box in boxes)


__all__ = [
    "Arg", "ToolSpec", "Tool", "ToolResult", "Observation", "Availability",
    "ToolInputError", "ToolUnavailable", "INPUT_ERRORS", "format_boxes", "result_saved",
]
