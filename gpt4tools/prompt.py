"""The prompt layout (REFERENCE.md §2), generated from tool specs and a template.

Templates are data (gpt4tools/templates/*.json). The one a model was trained with is
saved beside its adapter (`template.json`) and loaded with it, so training and serving
render identically. Paraphrase variants exist so that training data does not tie the
model to one wording.

Layout: prefix, tool lines, format block, suffix (rules, "Previous conversation:",
history, "New input:", closing paragraph, scratchpad), joined by blank lines as the
original LangChain agent did.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from gpt4tools.models import TEMPLATE_FILE
from gpt4tools.tool import ToolSpec

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    prefix: str
    format_instructions: str  # uses {tool_names} and {ai_prefix}; the block is exact (REFERENCE §1)
    suffix: str  # uses {chat_history}, {input}, {agent_scratchpad}
    image_turn: str  # the human turn announcing an image: {name}, {description}
    image_reply: str = "Received."
    ai_prefix: str = "AI"
    human_prefix: str = "Human"
    wrap: str = "{prompt}"  # chat wrapper for instruction-tuned models, e.g. "USER: {prompt} ASSISTANT:"

    # -- loading and saving ------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | Path = "default") -> "PromptTemplate":
        """A built-in name ("default", "paraphrase-1", ...), a JSON file, or an adapter dir."""
        p = Path(name_or_path)
        if p.is_dir():
            p = p / TEMPLATE_FILE
        if not p.is_file():
            p = TEMPLATE_DIR / f"{name_or_path}.json"
        if not p.is_file():
            raise FileNotFoundError(f"no prompt template {name_or_path!r}; built-in: {', '.join(builtin_names())}")
        return cls(**json.loads(p.read_text(encoding="utf-8")))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TEMPLATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False), encoding="utf-8")
        return path

    # -- rendering ---------------------------------------------------------------------
    def tool_lines(self, tools: Sequence[ToolSpec], descriptions: dict[str, str] | None = None) -> str:
        descriptions = descriptions or {}
        return "\n".join(t.prompt_line(descriptions.get(t.name)) for t in tools)

    def render(
        self,
        tools: Sequence[ToolSpec],
        chat_history: str,
        user_input: str,
        scratchpad: str = "",
        descriptions: dict[str, str] | None = None,
    ) -> str:
        """The full prompt. `descriptions` overrides tool descriptions (paraphrases)."""
        fmt = self.format_instructions.format(
            tool_names=", ".join(t.name for t in tools), ai_prefix=self.ai_prefix
        )
        suffix = self.suffix.format(chat_history=chat_history, input=user_input, agent_scratchpad=scratchpad)
        prompt = "\n\n".join([self.prefix, self.tool_lines(tools, descriptions), fmt, suffix])
        return self.wrap.format(prompt=prompt)

    def image_announcement(self, name: str, description: str) -> tuple[str, str]:
        """The (human, ai) turn pair that introduces an uploaded image into the history."""
        return self.image_turn.format(name=name, description=description.strip().rstrip(".")), self.image_reply

    def new_input(self, message: str, uploads: Sequence[str] = ()) -> str:
        """The human's message as the prompt shows it: the images uploaded with it named at the
        end ("and this one? (image/ab12.png)") unless the message names them already, as the
        training requests that mean a particular image do."""
        names = [n for n in uploads if n not in message]
        return f"{message} ({', '.join(names)})" if names else message

    def history_line(self, role: str, text: str) -> str:
        prefix = self.human_prefix if role == "human" else self.ai_prefix
        return f"{prefix}: {text}"


def record_prompt(record: dict) -> str:
    """The model's prompt for a GPT4Tools record: its instruction, plus its input when not
    empty (as alpaca does). Training and the benchmark both call this, so they cannot drift."""
    extra = record.get("input")
    return record["instruction"] + (f"\n{extra}" if extra and isinstance(extra, str) else "")


def builtin_names() -> list[str]:
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.json"))


def random_template(rng: random.Random) -> PromptTemplate:
    """A random built-in wording, for training-data variety."""
    return PromptTemplate.load(rng.choice(builtin_names()))


def template_for(adapter: str | Path | None) -> PromptTemplate:
    """The template saved beside an adapter (what it was trained with; `adapter` may be its
    folder or a file in it, such as a LoRA GGUF), else the default."""
    if adapter:
        folder = Path(adapter).parent if Path(adapter).is_file() else Path(adapter)
        if (folder / TEMPLATE_FILE).is_file():
            return PromptTemplate.load(folder)
    return PromptTemplate.load()
