"""The LLM teacher (one tool per request, grammar-held replies) and the paraphrasing route."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter

import numpy as np
import pytest
from test_data import SMALL

from gpt4tools.data.build import BuildConfig, build
from gpt4tools.data.filters import ToolFit
from gpt4tools.data.instructions import IMAGE, Instruction
from gpt4tools.data.synthetic import synthetic_content
from gpt4tools.data.teacher import (
    PARAPHRASE_GRAMMAR,
    LLMTeacher,
    Paraphraser,
    ReplyCache,
    grounded,
    parse_reply,
    shots,
    write_grammar,
    write_prompt,
)
from gpt4tools.llm.base import Generation
from gpt4tools.registry import ToolRegistry

from conftest import requires_weights

QA = "Answer Question About The Image"
DETECT = "Detect the Give Object"


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry(cls() for cls in SMALL)


class FakeTeacher:
    """Answers by rule from the prompt's last block; records every prompt and grammar it gets."""

    name = "fake-teacher"
    context_length = 4096

    def __init__(self, reply):
        self.reply = reply  # (tool or None, style, last block) -> completion
        self.prompts: list[str] = []
        self.grammars: list[str | None] = []

    def generate(self, prompt, *, stop=(), max_new_tokens=256, grammar=None):
        self.prompts.append(prompt)
        self.grammars.append(grammar)
        block = prompt.rsplit("\n\n", 1)[-1]
        tool = re.search(r"^Tool: (.+?) \(", block, re.M)
        style = re.search(r"^Style: (.+)$", block, re.M).group(1)
        return Generation(self.reply(tool.group(1) if tool else None, style, block))

    def count_tokens(self, text):
        return len(text.split())


def _write(tool, style, block):
    return {DETECT: " could you box the dog for me in example.jpg? | Input: example.jpg, dog",
            QA: " how many dogs are there in example.jpg? | Input: example.jpg, how many dogs are there? "
                "| Answer: Two dogs.",
            }.get(tool, "")


def test_one_instruction_per_tool_with_the_image_argument_and_answer(registry):
    llm = FakeTeacher(_write)
    teacher = LLMTeacher(llm, registry, retries=0)
    content = synthetic_content(0, "train", 1)
    dropped = Counter()
    found = teacher.instructions(content, [registry[DETECT].spec, registry[QA].spec], dropped)
    assert [(i.tool, i.args, i.answer, i.teacher) for i in found] == [
        (DETECT, (IMAGE, "dog"), None, "fake-teacher"),
        (QA, (IMAGE, "how many dogs are there?"), "Two dogs.", "fake-teacher")]
    assert found[0].text == "could you box the dog for me in example.jpg?"
    # One request per tool, each ending at this image and tool, held to that tool's reply grammar.
    assert len(llm.prompts) == 2 and all(p.endswith("\nInstruction:") for p in llm.prompts)
    assert f"Tool: {DETECT} (" in llm.prompts[0].rsplit("\n\n", 1)[-1]
    assert llm.grammars == [write_grammar(registry[DETECT].spec), write_grammar(registry[QA].spec)]
    assert '"example.jpg"' in llm.grammars[0] and '" | Answer: "' in llm.grammars[1]
    # The worked examples are never for the tool asked (a small model copies them).
    for prompt, tool in zip(llm.prompts, (DETECT, QA)):
        examples = prompt.split("\n\n")[1:-1]
        assert len(examples) == 2 and not any(f"Tool: {tool} (" in e for e in examples)
    assert not dropped


@pytest.mark.parametrize("reply, reason", [
    ("", "teacher: empty reply"),
    (" find the dog in example.jpg? | Inp", "teacher: unparsable line"),  # cut off by the token limit
    (" find the dog | Input: example.jpg, cat", "teacher: text input not a phrase of the request"),
    (" find the dog dog | Input: example.jpg, dog dog dog", "teacher: text input runs on"),
    (" find the <object> in example.jpg | Input: example.jpg, object", "teacher: placeholder or format text left in"),
    (" find the dog | Input: photo.png, dog", "teacher: missing image reference"),
    (" find the dog in example.jpg | Input: example.jpg", "teacher: wrong argument count"),
])
def test_unusable_replies_are_dropped_with_their_reason(registry, reply, reason):
    dropped = Counter()
    teacher = LLMTeacher(FakeTeacher(lambda *a: reply), registry, retries=1)
    assert teacher.instruction(synthetic_content(0, "train", 1), registry[DETECT].spec, dropped) is None
    assert dropped == Counter({reason: 2})  # the retry is asked in another style and fails the same way
    assert teacher.asked == 2


def test_a_question_needs_its_answer(registry):
    dropped = Counter()
    reply = " how many dogs are in example.jpg? | Input: example.jpg, how many dogs are in it?"
    teacher = LLMTeacher(FakeTeacher(lambda *a: reply), registry, retries=0)
    assert teacher.instruction(synthetic_content(0, "train", 1), registry[QA].spec, dropped) is None
    assert dropped == Counter({"teacher: question without an answer": 1})


def test_a_retry_asks_in_another_style(registry):
    styles = []

    def reply(tool, style, block):
        styles.append(style)
        return "" if len(styles) == 1 else _write(tool, style, block)

    teacher = LLMTeacher(FakeTeacher(reply), registry, retries=2)
    assert teacher.instruction(synthetic_content(0, "train", 1), registry[DETECT].spec, Counter()) is not None
    assert len(styles) == 2 and styles[0] != styles[1] and set(styles) <= set(shots()["styles"])


def test_replies_are_cached_so_a_rebuild_asks_nothing_and_matches(registry, tmp_path):
    content = synthetic_content(0, "train", 1)
    specs = [registry[DETECT].spec, registry[QA].spec]
    first = LLMTeacher(FakeTeacher(_write), registry, ReplyCache(tmp_path / "r.jsonl"), seed=3)
    found = first.instructions(content, specs, Counter())
    offline = FakeTeacher(lambda *a: pytest.fail("a cached request was asked again"))
    again = LLMTeacher(offline, registry, ReplyCache(tmp_path / "r.jsonl"), seed=3)
    assert again.instructions(content, specs, Counter()) == found and again.asked == 0
    # Another seed draws other styles and examples: other prompts, asked anew.
    other = LLMTeacher(FakeTeacher(_write), registry, ReplyCache(tmp_path / "r.jsonl"), seed=4)
    other.instructions(content, specs, Counter())
    assert other.asked >= 1


@pytest.mark.parametrize("arg, request_text, ok", [
    ("dog", "find the dogs in example.jpg", True),
    ("red car", "box the red car please", True),
    ("cat", "find the dog", False),
    ("how many dogs are there?", "how many dogs are there in example.jpg?", True),
    ("a lighthouse on a cliff at dawn", "draw me a lighthouse on a cliff", False),
    ("a lighthouse on a cliff at dawn", "can I have a lighthouse on a cliff at dawn, please", True),
])
def test_a_text_input_must_be_a_phrase_of_the_request(arg, request_text, ok):
    assert grounded(arg, request_text) is ok


def test_the_paraphrase_route_keeps_tool_arguments_and_answer(registry):
    def rewrite(tool, style, block):
        original = re.search(r"^Request: (.+)$", block, re.M).group(1)
        return {"Find the dog in example.jpg.": " hey, could you spot where the dog is hiding in example.jpg?",
                "Find the cat in example.jpg.": " find the cat in example.jpg please",  # too close
                "Find the bird in example.jpg.": " hey, where is it hiding in this photo?",  # lost both
                "Find the cow in example.jpg.": " Rewritten: where's the cow in example.jpg?",  # format leak
                }[original]

    para = Paraphraser(FakeTeacher(rewrite), registry, retries=0)
    dropped = Counter()
    found = para.run_on([Instruction("c", DETECT, f"Find the {o} in {IMAGE}.", (IMAGE, o), "template")
                         for o in ("dog", "cat", "bird", "cow")], dropped)
    assert found == [Instruction("c", DETECT, "hey, could you spot where the dog is hiding in example.jpg?",
                                 (IMAGE, "dog"), "fake-teacher/paraphrase")]
    assert dropped == Counter({"paraphrase: too close to the original": 1, "paraphrase: image name lost or added": 1,
                               "paraphrase: format text left in": 1})
    assert all(g == PARAPHRASE_GRAMMAR for g in para.llm.grammars)


def test_tool_fit_keeps_requests_close_to_their_tool():
    """With vectors that put "box"/"find" near detection and "edges" near edge detection."""
    registry = ToolRegistry(cls() for cls in SMALL)

    def embed(texts):
        def vec(t):
            t = t.lower()
            v = np.array([("detect" in t or "box" in t) * 1.0, ("edge" in t) * 1.0, 0.1])
            return v / np.linalg.norm(v)
        return np.stack([vec(t) for t in texts])

    fit = ToolFit(registry.specs(), k=1, embed=embed)
    dropped = Counter()
    assert fit.accept(Instruction("c", "Edge Detection On Image", "show me the edges", (IMAGE,), "t"), dropped)
    assert not fit.accept(Instruction("c", "Edge Detection On Image", "box the dog", (IMAGE,), "t"), dropped)
    assert dropped == Counter({"filter: request does not fit its tool (not among the 1 closest)": 1})


def test_a_paraphrase_build_rebuilds_byte_for_byte_from_its_cache(registry, tmp_path):
    def rewrite(tool, style, block):
        original = re.search(r"^Request: (.+)$", block, re.M).group(1)
        return f" I was wondering, {original[0].lower() + original[1:]} Thanks a lot, that would help me today!"

    def cfg(llm):
        return BuildConfig(out=tmp_path / "out", work=tmp_path / "work", train_records=30, negative_share=0.0,
                           val_per_tool=0, val_finals=0, val_negatives=0, photos=[], sharegpt=False,
                           teacher="paraphrase", llm=lambda: llm, max_contents=30)

    first = FakeTeacher(rewrite)
    stats = build(cfg(first), registry)["train"]
    data = (tmp_path / "out" / "train.jsonl").read_bytes()
    records = [json.loads(line) for line in data.decode().splitlines()]
    assert records and {r["teacher"] for r in records} == {"fake-teacher/paraphrase"}
    assert all("I was wondering" in r["instruction"] for r in records if r["tool"])
    assert stats["records"] == len(records) and len(first.prompts) > 0
    (tmp_path / "out" / "train.jsonl").unlink()
    build(cfg(FakeTeacher(lambda *a: pytest.fail("asked again"))), registry)
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == data


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
@requires_weights("smollm2-135m")
def test_the_grammars_hold_a_real_small_model_to_the_reply_format(registry):
    """An untuned 135M model writes poor requests, but the grammar holds every reply to the line the
    parser reads: the image argument as given, the fields in order, one line."""
    from gpt4tools.llm import load_llm

    llm = load_llm("smollm2-135m", adapter="none", backend="llamacpp", n_ctx=2048)
    content = synthetic_content(0, "train", 1)
    teacher = LLMTeacher(llm, registry)
    for name in (DETECT, QA, "Generate Image From User Input Text"):
        spec = registry[name].spec
        prompt = write_prompt(content, spec, teacher._examples(content, spec), shots()["styles"][0], teacher.specs)
        out = llm.generate(prompt, stop=["\n"], max_new_tokens=160, grammar=write_grammar(spec))
        if out.completion_tokens >= 160:
            continue  # cut off: a partial line, which the parser rejects
        line = out.text.strip("\n")
        assert "\n" not in line
        fields = line.split(" | ")
        assert fields[1].startswith("Input: ") and (not spec.needs_image or fields[1].startswith(f"Input: {IMAGE}"))
        assert (len(fields) == 3 and fields[2].startswith("Answer: ")) if name == QA else len(fields) == 2
        dropped = Counter()
        parse_reply(f"Tool: {name} | Instruction:{line}", content.id, registry, [name], "t", dropped)
        assert "teacher: unparsable line" not in dropped and "teacher: missing image reference" not in dropped
    para = llm.generate("Request: find the dog\nStyle: casual\nRewritten:", max_new_tokens=60,
                        grammar=PARAPHRASE_GRAMMAR)
    assert "\n" not in para.text.strip("\n") and para.text.startswith(" ")



def test_llm_requests_near_a_conversation_benchmark_message_are_dropped(registry, tmp_path):
    from gpt4tools.data.build import Builder
    from gpt4tools.data.dialogues import benchmark_messages

    message = benchmark_messages()[0]
    builder = Builder(BuildConfig(out=tmp_path / "out", work=tmp_path / "work", photos=[]), registry)
    dropped = Counter()
    mine = Instruction("c", DETECT, "could you box every zebra standing near the fence for me?", (IMAGE, "zebra"), "t")
    near = Instruction("c", DETECT, message, (IMAGE, "x"), "t")
    assert builder._apart([mine, near], dropped) == [mine]
    assert dropped == Counter({"filter: near a conversation-benchmark message (ROUGE-L >= 0.7)": 1})


def test_a_looping_rewrite_or_one_that_repeats_the_style_is_dropped(registry):
    replies = iter([" two sinks next to a drier with the same sketch as example.jpg (no greeting) (no greeting) "
                    "(no greeting) (no greeting)",
                    " could you box the sink in example.jpg, terse, no greeting"])
    para = Paraphraser(FakeTeacher(lambda *a: next(replies)), registry, retries=1)
    dropped = Counter()
    ins = Instruction("c", DETECT, f"Find the sink in {IMAGE}.", (IMAGE, "sink"), "template")
    assert para.paraphrase(ins, dropped) is None
    assert dropped == Counter({"paraphrase: repeats itself": 1, "paraphrase: format text left in": 1})


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
@requires_weights("smollm2-135m")
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])  # SIGTERM: what the Data tab's Stop sends
def test_a_teacher_build_killed_mid_way_resumes_without_losing_or_asking_twice(tmp_path, sig):
    """A real `data build --teacher paraphrase` process (the 135M model through llama.cpp) killed with
    SIGKILL or stopped with SIGTERM while it asks the model; run again, it finishes from the reply
    cache and writes what an uninterrupted build writes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from gpt4tools import paths

    def command(root):
        return [sys.executable, "-m", "gpt4tools", "data", "build", "--teacher", "paraphrase", "--backend",
                "llamacpp", "--model", "smollm2-135m", "--out", str(root / "out"), "--work", str(root / "work"),
                "--train-records", "24", "--negative-share", "0", "--val-per-tool", "0", "--val-finals", "0",
                "--val-negatives", "0", "--no-photos", "--no-sharegpt", "--retries", "0", "--quiet", "--patience", "4",
                "--load", "PhotoDescription,DetectGivenObject,EdgeDetection,Text2Image"]

    replies = tmp_path / "a" / "work" / "teacher-replies.jsonl"
    proc = subprocess.Popen(command(tmp_path / "a"), cwd=paths.REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if replies.is_file() and len(replies.read_bytes().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before it could be killed"
    os.killpg(proc.pid, getattr(signal, sig))
    proc.wait()
    asked = len(replies.read_bytes().splitlines())
    assert not (tmp_path / "a" / "out" / "train.jsonl").exists()

    subprocess.run(command(tmp_path / "a"), cwd=paths.REPO, check=True, capture_output=True, timeout=300)
    subprocess.run(command(tmp_path / "b"), cwd=paths.REPO, check=True, capture_output=True, timeout=300)
    resumed = (tmp_path / "a" / "out" / "train.jsonl").read_bytes()
    assert resumed == (tmp_path / "b" / "out" / "train.jsonl").read_bytes() and resumed
    ids = [json.loads(line)["id"] for line in resumed.decode().splitlines()]
    assert len(ids) == len(set(ids))
    # The replies cached before the kill were not asked again: one line per prompt in the cache.
    keys = [json.loads(line)["key"] for line in replies.read_text().splitlines()]
    assert len(keys) == len(set(keys)) >= asked


def test_a_teacher_whose_every_reply_is_dropped_stops_after_patience(registry, tmp_path):
    """Without the bound it would ask for every image of --max-contents (20,000 by default)."""
    llm = FakeTeacher(lambda *a: " no")
    cfg = BuildConfig(out=tmp_path / "out", work=tmp_path / "work", train_records=30, negative_share=0.0,
                      val_per_tool=0, val_finals=0, val_negatives=0, photos=[], sharegpt=False, teacher="llm",
                      llm=lambda: llm, retries=0, patience=3, max_contents=500)
    stats = build(cfg, registry)["train"]
    assert stats["records"] == 0 and stats["images_used"] <= 4
    assert stats["dropped"]["teacher: unparsable line"] + stats["dropped"].get("teacher: no instruction in the reply",
                                                                                0) == len(llm.prompts)
