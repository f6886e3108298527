"""The chat evaluation split: the model prompted as the app prompts it.

The paper's validation prompts offer 2-5 tools and are phrased by the teacher that wrote
the training data, so a high validation score can hide a model that fails in the app.
This split renders what the agent renders: the tools it would offer for the message among
those available on this machine (the 5 closest, `retrieval.ToolRetriever`, as the agent does
by default; or all of them, `offer=0`), the default prompt template, the uploaded image
announced with its description, and user messages from `phrasings_chat.json`. Those messages were written
independently of the training phrasings and are never used for training (a test checks
that no chat message is also a training phrasing).

Targets are the first assistant step: the tool call (for conditioned generation, the
first tool of the chain) or, for small talk, a no-tool answer. The records use the
GPT4Tools format, so `python -m gpt4tools bench --data data/chat_eval.jsonl` scores them
with the paper's metric.

    python -m gpt4tools data build --split chat --out data                    # -> data/chat_eval.jsonl
    python -m gpt4tools data build --split chat --out data --chat-offer 0     # -> data/chat_eval_all.jsonl
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from gpt4tools import react
from gpt4tools.data.content import ImageContent
from gpt4tools.data.instructions import Instruction, _slots, phrasings
from gpt4tools.data.samples import episode, record_id
from gpt4tools.data.synthetic import rng_for, synthetic_content
from gpt4tools.history import Conversation
from gpt4tools.images import random_name
from gpt4tools.prompt import PromptTemplate
from gpt4tools.react import FinalAnswer
from gpt4tools.tool import ToolSpec

_CHAT_PHRASINGS = Path(__file__).resolve().parent / "phrasings_chat.json"
TEACHER = "chat-heldout"
NO_TOOL_REPLY = "(a reply without tools)"  # the scorer reads only the Thought line and the AI: prefix


@lru_cache(maxsize=1)
def chat_phrasings() -> dict:
    return json.loads(_CHAT_PHRASINGS.read_text(encoding="utf-8"))


def offerable(specs: Sequence[ToolSpec]) -> list[ToolSpec]:
    """Tools a chat message can target here: those whose whole chain is offered too."""
    names = {s.name for s in specs}
    return [s for s in specs if s.name in chat_phrasings() and (not s.follows or s.follows in names)]


def file_name(offer: int) -> str:
    """chat_eval.jsonl for the agent's default offer, else named after the offer."""
    from gpt4tools.retrieval import DEFAULT_K

    return ("chat_eval.jsonl" if offer == DEFAULT_K
            else "chat_eval_all.jsonl" if offer <= 0 else f"chat_eval_top{offer}.jsonl")


def chat_records(available: Sequence[ToolSpec], contents: Sequence[ImageContent], seed: int, per_tool: int,
                 negatives: int, template: PromptTemplate, dropped: Counter, offer: int = 0,
                 retriever=None) -> list[dict]:
    """`per_tool` records for each tool a message can target and `negatives` no-tool records;
    each prompt offers what the agent would offer for its message (`offer`: 0 = all). Each
    record is a one-turn episode (`episode` is its id, `turn` 0)."""
    from gpt4tools.retrieval import ToolRetriever

    if offer > 0 and retriever is None:
        retriever = ToolRetriever(list(available))

    def render(history: Conversation, user: str) -> tuple[str, list[str]]:
        offered = retriever.select(user.strip(), offer) if offer > 0 else list(available)  # as Agent.offered
        return template.render(offered, history.render(), user.strip(), ""), [s.name for s in offered]

    specs = {s.name: s for s in available}
    records: list[dict] = []
    for spec in offerable(available):
        made = _tool_records(spec, specs, contents, seed, per_tool, template, render)
        if len(made) < per_tool:
            dropped[f"chat: only {len(made)} of {per_tool} records for {spec.name}"] += 1
        records += made
    return records + _small_talk_records(contents, seed, negatives, template, render)


def _tool_records(spec: ToolSpec, specs: dict[str, ToolSpec], contents: Sequence[ImageContent], seed: int,
                  per_tool: int, template: PromptTemplate, render: Callable) -> list[dict]:
    """Up to `per_tool` records whose message asks for `spec`, on the images that support it."""
    pool = chat_phrasings()[spec.name]["phrasings"]
    records: list[dict] = []
    tries = 0
    while len(records) < per_tool and tries < 50 * per_tool:
        content = contents[tries % len(contents)]
        rng = rng_for("chat", seed, spec.name, tries)
        tries += 1
        slots = _slots(content, spec, rng)
        if slots is None:
            continue  # e.g. no person in the image for a pose tool
        made = len(records)
        text = pool[made % len(pool)]
        if "{question" in text and "question" not in slots:
            continue
        args = tuple(a.format(**slots) for a in phrasings()[spec.name]["args"])
        ep = episode(Instruction(content.id, spec.name, text.format(**slots), args, TEACHER), content, specs, seed)
        history = Conversation(template)
        history.add_image(ep.image, content.announcement())
        prompt, names = render(history, ep.user)
        rid = record_id(seed, content.id, spec.name, "chat", made)
        records.append({
            "instruction": prompt, "input": "", "output": react.render_call(ep.steps[0].call),
            "id": rid, "tool": ep.steps[0].call.tool,
            "kind": "chat", "teacher": TEACHER, "source": content.id, "template": template.name,
            "tools_offered": names, "asked": spec.name, "episode": rid, "turn": 0,
        })
    return records


def _small_talk_records(contents: Sequence[ImageContent], seed: int, negatives: int, template: PromptTemplate,
                        render: Callable) -> list[dict]:
    """`negatives` no-tool records: small talk, half of them after an upload."""
    small_talk = chat_phrasings()["_no_tool"]
    records = []
    for n in range(negatives):
        rng = rng_for("chat-negative", seed, n)
        history = Conversation(template)
        content = contents[n % len(contents)]
        if rng.random() < 0.5:  # often after an upload: the image alone is no reason to call a tool
            history.add_image(f"image/{random_name(rng=rng)}.png", content.announcement())
        user = small_talk[n % len(small_talk)]
        prompt, names = render(history, user)
        rid = record_id(seed, "chat-negative", None, "chat", n)
        records.append({
            "instruction": prompt, "input": "",
            "output": react.render_final(FinalAnswer(NO_TOOL_REPLY), template.ai_prefix),
            "id": rid, "tool": None, "kind": "chat-negative",
            "teacher": TEACHER, "source": f"chat:{n}", "template": template.name, "tools_offered": names,
            "episode": rid, "turn": 0,
        })
    return records


def chat_contents(seed: int, photos: Sequence[ImageContent], n: int = 200) -> list[ImageContent]:
    """The photos of the evaluation bucket, then synthetic scenes of a stream of their own."""
    return list(photos) + [synthetic_content(seed, "chat", i) for i in range(n)]
