"""Conversation-shaped training records (gpt4tools/data/dialogues.py): every kind parses, means the
right image, renders exactly as the served agent renders its prompts, answers failures honestly,
and stays clear of the conversation benchmark's messages. Fast: no model is loaded."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import replace
from functools import lru_cache

import pytest
from PIL import Image
from test_conversations_data import max_rouge
from test_data import SMALL

from gpt4tools import agent as A
from gpt4tools import react
from gpt4tools.data.build import BuildConfig, build
from gpt4tools.data.dialogues import (
    ALL_KINDS,
    KINDS,
    DialogueBuilder,
    benchmark_messages,
    dialogue_phrases,
    loose_phrases,
)
from gpt4tools.history import Conversation
from gpt4tools.images import NAME_RE, ImageStore
from gpt4tools.prompt import PromptTemplate
from gpt4tools.registry import ToolRegistry, build_registry
from gpt4tools.tool import Availability, Observation, Tool

SCHEMA = {"instruction", "input", "output", "id", "tool", "kind", "teacher", "source", "template", "tools_offered",
          "episode", "turn"}
PER_KIND = 60  # records of each kind


@lru_cache(maxsize=1)
def registry() -> ToolRegistry:
    return build_registry()  # instantiating the catalog loads nothing


@lru_cache(maxsize=4)
def made(seed: int = 0) -> tuple:
    """(dialogue, records) pairs, PER_KIND records of each kind."""
    builder = DialogueBuilder(registry(), seed)
    return tuple(pair for kind in ALL_KINDS for pair in builder.dialogues(PER_KIND, [kind]))


def of_kind(kind: str) -> list:
    return [(d, recs) for d, recs in made() if d.kind == kind]


def first_call(d, recs) -> react.ToolCall:
    """The first call the records teach (a repair's wrong call is context only)."""
    decision = react.parse(recs[0]["output"])
    assert isinstance(decision, react.ToolCall), recs[0]["output"]
    return decision


def image_arg(call: react.ToolCall) -> str | None:
    spec = registry().resolve(call.tool).spec
    return spec.split_input(call.tool_input)[0] if spec.needs_image else None


def before_scratchpad(instruction: str) -> str:
    """The prompt up to the end of the new input: history, announcements, the message."""
    head, _, rest = instruction.rpartition("New input: ")
    return head + rest.split("\n", 1)[0]


# -- every kind ----------------------------------------------------------------------------------
def test_each_kind_is_made_and_every_record_parses():
    counts = Counter(r["kind"] for _, recs in made() for r in recs)
    assert set(counts) == set(ALL_KINDS) and all(counts[k] >= PER_KIND for k in ALL_KINDS), counts
    ids = [r["id"] for _, recs in made() for r in recs]
    assert len(ids) == len(set(ids))
    for d, recs in made():
        for r in recs:
            assert set(r) == SCHEMA, sorted(r)
            assert r["kind"] == d.kind and r["teacher"] == "dialogue" and r["input"] == ""
            decision = react.parse(r["output"], PromptTemplate.load(r["template"]).ai_prefix)
            if r["tool"] is None:
                assert isinstance(decision, react.FinalAnswer), r["output"]
            else:
                assert decision == react.ToolCall(r["tool"], decision.tool_input), r["output"]
                assert r["tool"] in r["tools_offered"]
                registry().resolve(r["tool"]).spec.split_input(decision.tool_input)  # the right argument count
        assert len({r["episode"] for r in recs}) == 1
        assert [r["turn"] for r in recs] == list(range(d.first_target, d.first_target + len(recs)))


def test_image_arguments_exist_in_their_history():
    for _, recs in made():
        for r in recs:
            if r["tool"] is None:
                continue
            scratch = r["instruction"][len(before_scratchpad(r["instruction"])):]
            name = image_arg(react.parse(r["output"]))
            if name:  # an upload or earlier result in the history, or a result of this turn's steps
                assert name in before_scratchpad(r["instruction"]) or f"Result saved as {name}" in scratch, name


def test_the_meant_image_is_the_one_called():
    for d, recs in of_kind("multi-image") + of_kind("follow-up"):
        assert image_arg(first_call(d, recs)) == d.meant
        uploads = [u.name for u in d.all_uploads()]
        message = d.message
        if d.kind == "follow-up":  # a result of the last turn, named in its answer; never an upload
            assert d.meant not in uploads and d.meant in d.past[-1].results and d.meant in d.past[-1].answer
            continue
        i = uploads.index(d.meant)
        if d.ref == "newest":  # the new upload, named only by the agent's suffix
            assert d.uploads and d.meant == d.uploads[-1].name and d.meant not in message
            assert recs[0]["instruction"].count(f"New input: {message} (") == 1
            continue
        p = dialogue_phrases()
        # the last upload is meant only when the message names it (position, content or name)
        assert i < len(uploads) - 1 or d.ref in ("ordinal", "last", "content", "name"), d.ref
        if d.ref == "last":
            assert i == len(uploads) - 1 and any(ph in message for ph in p["refs_last"]), message
        elif d.ref == "ordinal":
            phrases = p["refs_ordinal"][i] + (p["refs_middle"] if len(uploads) == 3 and i == 1 else [])
            assert any(ph in message for ph in phrases), (message, i)
        elif d.ref in ("before-last", "other"):
            assert i == len(uploads) - 2
        elif d.ref == "content":
            label = next(lab for lab in d.all_uploads()[i].content.labels()
                         if any(t.format(label=lab) in message for t in p["refs_content"]))
            others = [u.content.announcement().lower() for u in d.all_uploads() if u.name != d.meant]
            assert label in d.all_uploads()[i].content.announcement().lower() and not any(label in o for o in others)
        else:
            assert d.ref == "name" and d.meant in message
    refs = Counter(d.ref for d, _ in of_kind("multi-image"))
    assert {"ordinal", "content", "name", "newest", "last"} <= set(refs), refs
    meant_last = [d for d, _ in of_kind("multi-image") if d.ref != "newest" and d.meant == d.all_uploads()[-1].name]
    assert meant_last  # the last of several uploads, named, is among the samples


def test_going_back_to_the_original_calls_the_upload_not_the_newer_results():
    p = dialogue_phrases()
    for d, recs in of_kind("original"):
        assert d.meant in [u.name for u in d.all_uploads()] and image_arg(first_call(d, recs)) == d.meant
        assert d.images()[-1] != d.meant  # a result or the other upload is newer than the photo meant
        if len(d.all_uploads()) > 1:  # "my photo" could be either: only "the original" or its content
            assert not any(ph in d.message for ph in p["refs_sent"]), d.message


def test_loose_requests_do_not_name_the_one_photo_they_mean():
    loose = loose_phrases()["ops"]
    for d, recs in of_kind("loose"):
        (upload,) = d.all_uploads()
        assert d.meant == upload.name and image_arg(first_call(d, recs)) == d.meant
        assert upload.name not in d.message and first_call(d, recs).tool in loose


def test_repairs_correct_the_call_that_the_agent_refused():
    hows = Counter()
    for d, recs in of_kind("repair"):
        hows[d.how] += 1
        wrong, error = d.steps[0].call, d.steps[0].observation
        right = first_call(d, recs)
        assert wrong != right and right == d.steps[1].call
        assert recs[0]["instruction"].endswith(react.render_step(wrong, error))  # the error is in the scratchpad
        if d.how == "missing-image":
            assert image_arg(wrong) not in d.images() and image_arg(right) in d.images()
        if d.how == "unknown-tool":
            with pytest.raises(KeyError):
                registry().resolve(wrong.tool)
    assert set(hows) == {"missing-image", "arg-count", "unknown-tool"}, hows


def test_failures_are_answered_honestly_and_name_no_image():
    hows = Counter()
    for d, recs in of_kind("failure"):
        hows[d.how] += 1
        final = react.parse(recs[-1]["output"])
        assert isinstance(final, react.FinalAnswer) and recs[-1]["tool"] is None
        assert not NAME_RE.search(final.text), final.text
        assert A.ADMITS.search(final.text), final.text
        call, observation = d.steps[0].call, d.steps[0].observation
        # the agent would keep this answer: it admits the failure (Agent._honest leaves it as it is)
        assert A._honest(final.text, (call.tool, observation), []) == final.text
        if d.how == "none-found":
            assert observation.startswith("No ") and " found in the image" in observation
        else:
            assert observation.startswith("Error: ") and call.tool in observation
    assert set(hows) == {"none-found", "crash", "unavailable"}, hows


def test_unavailable_requests_are_declined_without_a_call_and_without_the_tool():
    from gpt4tools.chatbench import CANT

    for d, recs in of_kind("unavailable"):
        (r,) = recs
        assert r["tool"] is None and not d.steps
        assert not d.excluded & set(r["tools_offered"]), (d.excluded, r["tools_offered"])
        assert CANT.search(react.parse(r["output"]).text), r["output"]


def test_served_requests_call_the_offered_tool_that_serves_them():
    """The declines' contrast: the same capability asked for with its tool offered gets the call;
    a picture's prompt is the phrase of the request, a depth or normal map's image the upload."""
    from gpt4tools.data.dialogues import SERVED

    pairs = of_kind("served")
    assert {SERVED[c] for c in SERVED} >= {d.steps[0].call.tool for d, _ in pairs} and len(pairs) >= 3
    for d, recs in pairs:
        call = first_call(d, recs)
        assert call.tool in SERVED.values() and call.tool in recs[0]["tools_offered"]
        if call.tool == "Generate Image From User Input Text":
            assert call.tool_input and call.tool_input in d.message and not d.all_uploads()
        else:
            assert call.tool_input == d.meant == d.all_uploads()[0].name


def test_records_are_deterministic_per_seed():
    def records(seed: int) -> list[dict]:
        return DialogueBuilder(registry(), seed).build(40)

    first = records(3)
    assert json.dumps(first) == json.dumps(records(3))
    assert json.dumps(first) != json.dumps(records(4))


def test_no_message_is_a_near_duplicate_of_a_benchmark_message():
    bench = benchmark_messages()
    assert len(bench) > 100
    messages = sorted({m for d, _ in made() for m in d.messages()})
    score, msg, other = max_rouge(messages, bench)
    assert score < 0.7, f"ROUGE-L {score:.2f}: {msg!r} is a near-duplicate of the benchmark's {other!r}"


def test_a_benchmark_message_is_never_kept():
    """The generator's own guard: with a message of ours declared off limits, it is dropped."""
    builder = DialogueBuilder(registry(), 0)
    d, _ = next(builder.dialogues(1, ["unavailable"]))
    dropped: Counter = Counter()
    guarded = DialogueBuilder(registry(), 0, forbidden=[d.message])
    kept = [x for x, _ in guarded.dialogues(1, ["unavailable"], dropped)]
    assert d.message not in [x.message for x in kept]
    assert dropped["dialogues: near-duplicate of a conversation-benchmark message"] >= 1


# -- the served agent renders the same prompts -------------------------------------------------------
class ScriptLLM:
    """Writes the dialogue's steps in order and keeps every prompt the agent sends."""

    name = "script"
    context_length = 10**9  # no history trimming

    def __init__(self, completions: list[str]):
        self.completions = list(completions)
        self.prompts: list[str] = []

    def stream(self, prompt: str, **kwargs):
        self.prompts.append(prompt)
        text = self.completions.pop(0) if self.completions else react.render_final(react.FinalAnswer("ok"))
        yield text.split(react.OBSERVATION)[0]  # generation stops at "Observation:"

    def count_tokens(self, text: str) -> int:
        return len(text) // 3


def replay_tools(d, descriptions: dict[str, str]) -> ToolRegistry:
    """The seen tools with the wording the record's prompt shows; a call the dialogue made with a
    known observation answers with it (and writes its result), any other call meets the real contract."""
    known = {(st.call.tool, st.call.tool_input): st for st in d.steps[d.first_target:]}  # not a repair's wrong call
    pool = [n for n in registry() if registry()[n].spec.seen]

    def make(name: str) -> Tool:
        base = type(registry()[name])
        spec = replace(base.spec, description=descriptions.get(name, base.spec.description))

        def call(self, raw_input: str, store: ImageStore) -> Observation:
            step = known.get((name, raw_input))
            if step is None:
                return Tool.__call__(self, raw_input, store)  # split_input and ImageStore: the real errors
            if step.image:
                Image.new("RGB", (32, 32)).save(store.root / step.image)
            observation = step.observation or "(unknown)"
            return Observation(observation, step.image, ok=not observation.startswith("Error"))

        def run(self, store, **values):
            raise AssertionError("a call got past the input checks: a model would run")

        return type(base.__name__, (base,), {"spec": spec, "__call__": call, "run": run,
                                             "availability": lambda self: Availability(True)})()

    return ToolRegistry(make(n) for n in pool)


def replay(d, recs) -> tuple[list[str], str]:
    """Run the dialogue's current turn through the real Agent (conversation built as Session builds
    it); the prompts it sent, and its final answer."""
    r0 = recs[0]
    template = PromptTemplate.load(r0["template"])
    tool_lines = r0["instruction"]
    descriptions = {}
    for name in r0["tools_offered"]:
        spec = registry()[name].spec
        descriptions[name] = next(t for t in (spec.description, *spec.paraphrases) if spec.prompt_line(t) in tool_lines)
    tools = replay_tools(d, descriptions)
    completions = [react.render_call(st.call) for st in d.steps]
    completions += [react.render_final(react.FinalAnswer(d.final), template.ai_prefix)] if d.final else []
    llm = ScriptLLM(completions)
    agent = A.Agent(llm, tools, template, A.AgentConfig(constrained=False))
    agent.offered = lambda message: [tools[n].spec for n in r0["tools_offered"]]  # the record's offer
    conversation = Conversation(template)
    for turn in d.past:  # Session.add_image for each upload, then Agent.run's add_exchange
        for u in turn.uploads:
            conversation.add_image(u.name, u.content.announcement())
        conversation.add_exchange(template.new_input(turn.message, [u.name for u in turn.uploads]), turn.answer)
    for u in d.uploads:
        conversation.add_image(u.name, u.content.announcement())
    with _session_store(d.images()) as store:
        steps = list(agent.run(d.message, conversation, store, [u.name for u in d.uploads]))
    final = next(s for s in steps if isinstance(s, A.Final))
    return llm.prompts, final.text


class _session_store:
    def __init__(self, names):
        self.names = names

    def __enter__(self) -> ImageStore:
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        store = ImageStore(self.tmp.name)
        for i, name in enumerate(self.names):
            Image.new("RGB", (32, 32)).save(store.root / name)
            os.utime(store.root / name, ns=(10**18 + i * 10**9,) * 2)
        return store

    def __exit__(self, *exc) -> None:
        self.tmp.cleanup()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_prompt_is_what_the_agent_sends(kind):
    checked = 0
    for d, recs in of_kind(kind):
        prompts, answer = replay(d, recs)
        for r in recs:
            assert prompts[r["turn"]] == r["instruction"], (kind, r["turn"])
            checked += 1
        if d.final is not None:  # the agent keeps the answer: its names exist, a failure is admitted
            assert answer == d.final
    assert checked >= PER_KIND


# -- the build option -------------------------------------------------------------------------------
def test_data_build_mixes_in_dialogues_with_a_share(tmp_path):
    reg = ToolRegistry(cls() for cls in SMALL)
    cfg = BuildConfig(out=tmp_path / "out", work=tmp_path / "work", train_records=60, val_per_tool=3, val_finals=3,
                      val_negatives=0, photos=[], sharegpt=False, retrieved_share=0.0, dialogue_share=0.25)
    build(cfg, reg)
    records = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    kinds = Counter(r["kind"] for r in records)
    assert sum(kinds[k] for k in KINDS) >= 15, kinds
    assert all(r["tools_offered"] and set(r["tools_offered"]) <= set(reg) for r in records)
    val = (tmp_path / "out" / "val.jsonl").read_text()
    assert '"teacher": "dialogue"' not in val  # train only
