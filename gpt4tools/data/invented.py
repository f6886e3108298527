"""Invented tools (issue 19, part 2): tools that exist only in prompts, so that the model learns to
choose a tool by what its description says, not by a name it has memorised.

Capabilities are data, written apart: `invented_train.json` (trained on) and `invented_eval.json`
(the held-out evaluation split; never trained on). A capability has four names, three descriptions
in the paper's style, an argument contract and requests people type. One tool is one name of a
capability with one of its descriptions; the other descriptions are its paraphrases, drawn per
episode as for the real tools. A record offers the invented tool shuffled among real tools and one
tool of each of some other capabilities (never two tools that do the same thing), and its target
is the call. An "unavailable" record asks for a capability that none of the offered tools has and
is answered without a call, in the words the conversation data uses.

A share of the records (`app_layout_share`) offers tools as the app does: every real tool in the
registry's order with its own description, the invented ones among them, the default template. There
the request must be matched to one description among ~20, not among 3-8 (issue 19: the paper's unseen
tools, asked in everyday words with every tool offered, are what the hour's adapters miss).

Train records offer only the seen real tools: the paper's 8 unseen tools stay out of training.
Eval records offer every real tool. Only the first turn is a record: what an invented tool would
return is not knowable, and the answer after an observation is taught by the real tools' data.

    python -m gpt4tools.data.invented --split train --records 300 --out runs/data/invented_train.jsonl
    python -m gpt4tools.data.invented --split eval --records 150 --out data/test_invented.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import string
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from gpt4tools import react
from gpt4tools.data.content import ImageContent
from gpt4tools.data.dialogues import NearDuplicates, benchmark_messages, dialogue_phrases
from gpt4tools.data.instructions import IMAGE
from gpt4tools.data.samples import RecordMaker, record_id
from gpt4tools.data.synthetic import rng_for, synthetic_content
from gpt4tools.history import Conversation
from gpt4tools.images import random_name
from gpt4tools.prompt import PromptTemplate, random_template
from gpt4tools.react import FinalAnswer, ToolCall
from gpt4tools.records import atomic_write, to_jsonl
from gpt4tools.tool import Arg, ToolSpec

HERE = Path(__file__).resolve().parent
FILES = {"train": HERE / "invented_train.json", "eval": HERE / "invented_eval.json"}
TEACHER = "invented"
SLOTS = {"image", "object", "value"}
# Real tools that do anything of their kind (any question, any edit): a request for a capability
# that is not offered could still be served by one of them, so "unavailable" records leave them out.
GENERAL = ("Answer Question About The Image", "Get Photo Description", "Instruct Image Using Text")


@dataclass(frozen=True)
class Capability:
    id: str
    purpose: str  # a verb phrase: "add natural colours to a black-and-white photo"
    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    args: tuple[Arg, ...]
    arg_values: tuple[str, ...]  # one template per argument: "{image}", "{object}" or "{value}"
    requires: str | None  # "object": a request names an object of the photo
    values: tuple[str, ...]
    output: str
    phrasings: tuple[str, ...]
    split: str

    def tools(self) -> list[ToolSpec]:
        """One tool per name; the name's description rotates, the others are its paraphrases."""
        out = []
        for i, name in enumerate(self.names):
            main = self.descriptions[i % len(self.descriptions)]
            out.append(ToolSpec(name=name, description=main, args=self.args, output=self.output, slug="invented",
                                seen=self.split == "train",
                                paraphrases=tuple(d for d in self.descriptions if d != main)))
        return out

    def request(self, content: ImageContent, rng, phrasings: Sequence[str] = ()) -> tuple[str, tuple[str, ...]] | None:
        """(the user's words, the Action Input parts) with IMAGE for the image; None when the
        content has nothing to name. `phrasings`: the ones to draw from (default: all)."""
        labels = content.labels()
        if self.requires == "object" and not labels:
            return None
        slots = {"image": IMAGE, "object": rng.choice(labels) if labels else "",
                 "value": rng.choice(self.values) if self.values else ""}
        text = rng.choice(phrasings or self.phrasings).format(**slots)
        return text, tuple(a.format(**slots) for a in self.arg_values)


def _slots_of(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}


def _capability(d: dict, split: str, where: str) -> Capability:
    """One entry, checked: a malformed capability file is our bug, so it raises with where it is."""
    try:
        args = tuple(Arg(a["name"], a["kind"]) for a in d["args"])
        cap = Capability(d["id"], d["purpose"], tuple(d["names"]), tuple(d["descriptions"]), args,
                         tuple(d["arg_values"]), d.get("requires"), tuple(d.get("values") or ()), d["output"],
                         tuple(d["phrasings"]), split)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: malformed capability: {e!r}") from None
    problems = []
    if len(cap.args) != len(cap.arg_values) or not cap.args or cap.args[0].kind != "image":
        problems.append("arguments: the image first, one template per argument")
    if cap.arg_values[0] != "{image}":
        problems.append("the first argument template must be {image}")
    if cap.output not in ("image", "text"):
        problems.append(f"output {cap.output!r}")
    needed = set().union(*map(_slots_of, cap.arg_values[1:])) if len(cap.arg_values) > 1 else set()
    for p in cap.phrasings:
        slots = _slots_of(p)
        if not slots <= SLOTS or not needed <= slots:
            problems.append(f"phrasing {p!r}: slots {sorted(slots)}, the argument needs {sorted(needed)}")
    if "value" in needed and not cap.values:
        problems.append("{value} used but no values")
    if "object" in needed and cap.requires != "object":
        problems.append('{object} used but "requires" is not "object"')
    if problems:
        raise ValueError(f"{where}: capability {cap.id!r}: " + "; ".join(problems))
    return cap


@lru_cache(maxsize=None)
def capabilities(split: str) -> tuple[Capability, ...]:
    """The capabilities of one split ("train" or "eval"), each validated (their names: `check_names`)."""
    path = FILES[split]
    return tuple(_capability(d, split, f"{path.name}[{i}]")
                 for i, d in enumerate(json.loads(path.read_text(encoding="utf-8"))["capabilities"]))


@lru_cache(maxsize=1)
def check_names() -> None:
    """Every invented name is new: not a real tool's name or alias, not used twice."""
    from gpt4tools.registry import build_registry

    real = {_norm(n) for s in build_registry().specs() for n in (s.name, *s.aliases)}
    seen: Counter = Counter(_norm(n) for split in FILES for c in capabilities(split) for n in c.names)
    clashes = sorted(n for n, k in seen.items() if k > 1 or n in real)
    if clashes:
        raise ValueError(f"invented tool names clash with each other or a real tool: {clashes}")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


class InventedRecords:
    """Records whose target tool is an invented one (or, for a share, no tool at all)."""

    def __init__(self, split: str, real_tools: Sequence[ToolSpec], seed: int = 0,
                 unavailable_share: float = 0.2, tools_range: tuple[int, int] = (3, 8),
                 many_tools_share: float = 0.35, others: tuple[int, int] = (1, 4), max_pool: int = 18,
                 app_layout_share: float = 0.0):
        check_names()
        self.split, self.seed = split, seed
        self.caps = capabilities(split)
        self.real = list(real_tools)
        self.unavailable_share = unavailable_share
        self.tools_range, self.many_tools_share, self.others = tools_range, many_tools_share, others
        self.max_pool = max_pool  # the app offers its ~18 available tools; longer prompts only cost time
        self.app_layout_share = app_layout_share
        self.guard = NearDuplicates(benchmark_messages())
        self.phrasings = {c.id: list(c.phrasings) for c in self.caps}
        if split != "train":  # written apart, and checked: a request that shares a training one's
            # wording (ROUGE-L >= 0.7, e.g. "identify the landmark in {image}" / "... the bird in ...") is not asked
            near = NearDuplicates([p for c in capabilities("train") for p in c.phrasings])
            self.phrasings = {k: [p for p in v if not near(p)] for k, v in self.phrasings.items()}

    def _pool(self, cap: Capability, rng) -> list[ToolSpec]:
        """Real tools plus one tool of each of a few other capabilities (distractors), at most
        `max_pool` in all."""
        rest = [c for c in self.caps if c is not cap]
        picked = [rng.choice(c.tools()) for c in rng.sample(rest, min(len(rest), rng.randint(*self.others)))]
        return rng.sample(self.real, min(len(self.real), self.max_pool - len(picked))) + picked

    def records(self, index: int) -> list[dict]:
        """The records of draw `index` (empty when the draw is unusable)."""
        rng = rng_for("invented", self.seed, self.split, index)
        cap = self.caps[index % len(self.caps)]
        content = synthetic_content(self.seed, f"invented-{self.split}", index)
        asked = cap.request(content, rng, self.phrasings[cap.id])
        if asked is None:
            return []
        text, args = asked
        tool = rng.choice(cap.tools())
        unavailable = rng.random() < self.unavailable_share
        image = f"image/{random_name(rng=rng)}.png"
        message = text.replace(IMAGE, image)
        if self.guard(message):
            return []
        # drawn only where asked for: records built without it stay byte for byte what they were
        app_layout = self.app_layout_share > 0 and rng.random() < self.app_layout_share
        template = PromptTemplate.load() if app_layout else random_template(rng)
        history = Conversation(template)
        history.add_image(image, content.announcement())
        uploaded_now = IMAGE not in text and rng.random() < 0.5  # the app names a new upload after the message
        user_input = template.new_input(message, [image] if uploaded_now else [])
        pool = self._pool(cap, rng)
        if unavailable:
            pool = [s for s in pool if s.name not in GENERAL]
        if app_layout:
            offered = self._app_layout(pool if unavailable else [tool, *pool], rng)
            descriptions = {s.name: s.description for s in offered}
        else:
            maker = RecordMaker(pool if unavailable else [tool, *pool], pool, self.seed, self.split,
                                self.tools_range, self.many_tools_share)
            offered = maker._offer([] if unavailable else [tool.name], rng, message)
            descriptions = None  # drawn below, after the target (the draws' order is the records')
        if unavailable:
            target: ToolCall | FinalAnswer = FinalAnswer(
                rng.choice(dialogue_phrases()["answers_unavailable"]).format(cap=cap.purpose))
            output = react.render_final(target, template.ai_prefix)
        else:
            target = ToolCall(tool.name, tool.join_input([a.replace(IMAGE, image) for a in args]))
            output = react.render_call(target)
        kind = "unavailable" if unavailable else "positive"
        rid = record_id(self.seed, content.id, tool.name, kind, self.split, "invented", index)
        return [{
            "instruction": template.render(offered, history.render(), user_input, "",
                                           descriptions or RecordMaker._descriptions(rng, offered)),
            "input": "", "output": output, "id": rid, "tool": None if unavailable else tool.name, "kind": kind,
            "teacher": TEACHER, "source": content.id, "template": template.name,
            "tools_offered": [s.name for s in offered], "episode": rid, "turn": 0, "capability": cap.id,
            **({"layout": "app"} if app_layout else {}),
        }]

    def _app_layout(self, tools: Sequence[ToolSpec], rng) -> list[ToolSpec]:
        """`tools` as the app lists its available ones: the real ones in the registry's order, each
        invented one at a random place among them."""
        order = {s.name: i for i, s in enumerate(self.real)}
        out = sorted((s for s in tools if s.name in order), key=lambda s: order[s.name])
        for s in (s for s in tools if s.name not in order):
            out.insert(rng.randint(0, len(out)), s)
        return out

    def build(self, total: int) -> list[dict]:
        out: list[dict] = []
        index = 0
        while len(out) < total and index < 20 * total + 20:
            out += self.records(index)
            index += 1
        return out[:total]


def real_tools(split: str) -> list[ToolSpec]:
    """The real tools a split's records offer: the seen ones in training, all of them in eval."""
    from gpt4tools.registry import build_registry

    return [s for s in build_registry().specs() if s.seen or split == "eval"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpt4tools.data.invented", description=__doc__.split("\n\n")[0])
    p.add_argument("--split", choices=sorted(FILES), default="train")
    p.add_argument("--records", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unavailable-share", type=float, default=0.2)
    p.add_argument("--app-layout-share", type=float, default=0.0,
                   help="the share of records that offer tools as the app does (every real tool in registry order)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.records < 1 or not 0 <= args.unavailable_share <= 1 or not 0 <= args.app_layout_share <= 1:
        p.error("--records must be >= 1, --unavailable-share and --app-layout-share in 0..1")
    records = InventedRecords(args.split, real_tools(args.split), args.seed, args.unavailable_share,
                              app_layout_share=args.app_layout_share).build(args.records)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, to_jsonl(records))
    kinds = Counter(r["kind"] for r in records)
    caps = len({r["capability"] for r in records})
    print(f"{len(records)} records ({dict(kinds)}) over {caps} capabilities -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
