"""Conversation memory: human and AI turns, images announced as in the paper, and
trimming to the model's context that never drops the latest image's announcement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from gpt4tools.prompt import PromptTemplate


@dataclass
class Turn:
    role: str  # "human" or "ai"
    text: str
    image: str | None = None  # set on the human turn that announces an image
    used: str | None = None  # on the human turn of an exchange: the upload its first tool call worked on
    tool: str | None = None  # ... and the tool of that call ("same for this" asks for it again)
    photo: str | None = None  # ... and the photo it made last (an edit, a new picture): "now sketch it" means it


@dataclass
class Conversation:
    template: PromptTemplate
    turns: list[Turn] = field(default_factory=list)

    def add_image(self, name: str, description: str) -> None:
        human, ai = self.template.image_announcement(name, description)
        self.turns += [Turn("human", human, image=name), Turn("ai", ai, image=name)]

    def add_exchange(self, user: str, answer: str, used: str | None = None, tool: str | None = None,
                     photo: str | None = None) -> None:
        self.turns += [Turn("human", user, used=used, tool=tool, photo=photo), Turn("ai", answer)]

    def last_tool(self) -> str | None:
        """The tool the latest exchange called first (None when it called none)."""
        latest = next((t for t in reversed(self.turns) if t.role == "human" and not t.image), None)
        return latest.tool if latest else None

    def last_photo(self) -> str | None:
        """The photo the latest exchange that called a tool made (an edit, a new picture), unless an
        upload was announced since: what "now sketch it" works on. None: no such photo."""
        for t in reversed(self.turns):
            if t.role != "human":
                continue
            if t.image:
                return None
            if t.tool:
                return t.photo
        return None

    def last_used(self) -> str | None:
        """The upload the latest turn that called a tool on an image worked on."""
        return next((t.used for t in reversed(self.turns) if t.used), None)

    def notes(self) -> dict[str, str]:
        """Each announced upload -> what the conversation said of it: its announcement (with
        the description) and the human messages that came with it (they name it)."""
        out = {t.image: t.text for t in self.turns if t.image and t.role == "human"}
        for t in self.turns:
            if t.role == "human" and not t.image:
                for name in out:
                    if name in t.text:
                        out[name] += "\n" + t.text
        return out

    def clear(self) -> None:
        self.turns.clear()

    def render(self, budget_tokens: int | None = None, count: Callable[[str], int] = lambda s: len(s) // 3) -> str:
        """The history text, oldest turns dropped first to fit `budget_tokens`.

        Turns go in (human, ai) pairs. The most recent image announcement is kept even
        if older plain turns must go, so the model can still name the last image.
        """
        pairs = [self.turns[i : i + 2] for i in range(0, len(self.turns), 2)]

        def lines(ps):
            return "\n".join(self.template.history_line(t.role, t.text) for p in ps for t in p)

        if budget_tokens is None:
            return lines(pairs)
        last_image = max((i for i, p in enumerate(pairs) if p[0].image), default=None)
        kept = list(range(len(pairs)))
        while kept and count(lines(pairs[i] for i in kept)) > budget_tokens:
            droppable = [i for i in kept if i != last_image]
            if not droppable:
                break
            kept.remove(droppable[0])
        return lines(pairs[i] for i in kept)
