"""Invented tools (issue 19, part 2): capability files, records, and the held-out eval split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gpt4tools import react
from gpt4tools.data import invented
from gpt4tools.data.dialogues import NearDuplicates
from gpt4tools.records import read_jsonl
from gpt4tools.tool import ToolSpec

REPO = Path(__file__).resolve().parent.parent
EVAL_SPLIT = REPO / "data" / "test_invented.jsonl"
APP_SPLIT = REPO / "data" / "test_invented_app.jsonl"  # the same capabilities in the app's tool layout
EVAL_COMMAND = ["--split", "eval", "--records", "150", "--seed", "0"]  # as data/README.md says


def test_capability_files_load_and_every_name_is_new():
    train, held_out = invented.capabilities("train"), invented.capabilities("eval")
    assert len(train) >= 30 and len(held_out) >= 15
    invented.check_names()  # raises on a clash with a real tool or a name used twice
    assert not {c.id for c in train} & {c.id for c in held_out}
    assert sum(len(c.names) for c in train) >= 100  # "hundreds" of tools once names x descriptions


def test_eval_requests_descriptions_and_names_are_apart_from_training_ones():
    train = invented.capabilities("train")
    near = NearDuplicates([p for c in train for p in (*c.phrasings, *c.descriptions)])
    held_out = invented.capabilities("eval")
    assert not [d for c in held_out for d in c.descriptions if near(d)]
    names = {invented._norm(n) for c in train for n in c.names}
    assert not {invented._norm(n) for c in held_out for n in c.names} & names
    # requests that share a training request's frame are not asked in the eval split
    usable = invented.InventedRecords("eval", invented.real_tools("eval")).phrasings
    assert sum(map(len, usable.values())) < sum(len(c.phrasings) for c in held_out)  # some were left out
    assert not [p for ps in usable.values() for p in ps if near(p)]
    patterns = {cid: [re.compile(re.escape(p).replace(r"\{image\}", ".+").replace(r"\{object\}", ".+")
                                 .replace(r"\{value\}", ".+") + r"( \(image/\w+\.png\))?$") for p in ps]
                for cid, ps in usable.items()}
    for r in read_jsonl(EVAL_SPLIT).values():
        message = r["instruction"].split("New input: ", 1)[1].split("\n", 1)[0]
        assert any(p.match(message) for p in patterns[r["capability"]]), message


def test_a_malformed_capability_is_refused_with_where_it_is():
    good = json.loads(invented.FILES["eval"].read_text(encoding="utf-8"))["capabilities"][0]
    bad = dict(good, arg_values=["{image}", "{object}"])  # one template too many
    with pytest.raises(ValueError, match=r"x\[0\]: capability"):
        invented._capability(bad, "eval", "x[0]")
    with pytest.raises(ValueError, match="malformed"):
        invented._capability({"id": "y"}, "eval", "x[1]")
    slotless = dict(good, phrasings=["do it to {picture}"])
    with pytest.raises(ValueError, match="slots"):
        invented._capability(slotless, "eval", "x[2]")


@pytest.fixture(scope="module")
def train_records():
    return invented.InventedRecords("train", invented.real_tools("train"), seed=3).build(120)


def test_train_records_offer_neither_unseen_nor_held_out_tools(train_records):
    unseen = {s.name for s in invented.real_tools("eval") if not s.seen}
    held_out = {n for c in invented.capabilities("eval") for n in c.names}
    assert len(train_records) == 120
    for r in train_records:
        offered = set(r["tools_offered"])
        assert not offered & unseen and not offered & held_out
        assert not any(name in r["instruction"] for name in held_out)


def test_a_call_record_names_an_offered_tool_with_its_contract_and_no_twin(train_records):
    by_name = {s.name: (c, s) for c in invented.capabilities("train") for s in c.tools()}
    calls = [r for r in train_records if r["kind"] == "positive"]
    refusals = [r for r in train_records if r["kind"] == "unavailable"]
    assert calls and refusals  # both kinds are made (the unavailable share is 0.2)
    for r in calls:
        cap, spec = by_name[r["tool"]]
        assert r["tool"] in r["tools_offered"]
        assert f"Action: {r['tool']}\n" in r["output"]
        parts = spec.split_input(react.fields(r["output"]).inputs[0])
        assert len(parts) == len(spec.args) and parts[0].startswith("image/") and parts[0] in r["instruction"]
        twins = set(cap.names) - {r["tool"]}
        assert not twins & set(r["tools_offered"])  # never two tools that do the same thing
    for r in refusals:
        cap = next(c for c in invented.capabilities("train") if c.id == r["capability"])
        assert "Action:" not in r["output"] and "AI: " in r["output"]
        assert cap.purpose in r["output"]
        assert not set(cap.names) & set(r["tools_offered"])
        assert not set(invented.GENERAL) & set(r["tools_offered"])  # nothing that could serve it anyway


def test_records_are_the_same_for_the_same_seed():
    a = invented.InventedRecords("train", invented.real_tools("train"), seed=5).build(20)
    b = invented.InventedRecords("train", invented.real_tools("train"), seed=5).build(20)
    c = invented.InventedRecords("train", invented.real_tools("train"), seed=6).build(20)
    assert a == b and a != c


def test_app_layout_records_offer_tools_as_the_app_lists_them():
    """--app-layout-share: the real tools in the registry's order with their own descriptions and the
    default template, the invented ones among them; the others as before, draw for draw."""
    from gpt4tools.prompt import PromptTemplate

    real = invented.real_tools("train")
    order = {s.name: i for i, s in enumerate(real)}
    mixed = invented.InventedRecords("train", real, seed=5, app_layout_share=0.5).build(40)
    app = [r for r in mixed if r.get("layout") == "app"]
    assert 10 <= len(app) <= 30 and len(app) < len(mixed)
    specs = {s.name: s for c in invented.capabilities("train") for s in c.tools()} | {s.name: s for s in real}
    for r in app:
        listed = [n for n in r["tools_offered"] if n in order]
        assert listed == sorted(listed, key=order.get) and len(listed) >= 10
        assert any(n not in order for n in r["tools_offered"])  # invented ones among them
        assert r["template"] == PromptTemplate.load().name
        for name in r["tools_offered"]:
            assert f"> {name}: {specs[name].description}" in r["instruction"]  # the canonical wording
        if r["kind"] == "positive":
            assert r["tool"] in r["tools_offered"]
    # without the option nothing is drawn for it (the committed eval split still rebuilds byte for byte, below)
    assert not any("layout" in r for r in invented.InventedRecords("train", real, seed=5).build(20))


@pytest.mark.parametrize("split,extra", [(EVAL_SPLIT, []), (APP_SPLIT, ["--app-layout-share", "1"])],
                         ids=["sampled", "app-layout"])
def test_the_committed_eval_split_rebuilds_byte_for_byte(tmp_path, split, extra):
    out = tmp_path / split.name
    assert invented.main([*EVAL_COMMAND, *extra, "--out", str(out)]) == 0
    assert out.read_bytes() == split.read_bytes()
    rows = read_jsonl(EVAL_SPLIT).values()
    assert len({r["capability"] for r in rows}) == len(invented.capabilities("eval"))


def test_the_benchmark_grammar_reads_an_invented_tools_arguments_from_its_line():
    from gpt4tools.bench import _line_kinds, offered_tools

    record = next(r for r in read_jsonl(EVAL_SPLIT).values()
                  if r["kind"] == "positive" and r["tool"] not in {s.name for s in invented.real_tools("eval")})
    spec = next(s for c in invented.capabilities("eval") for s in c.tools() if s.name == record["tool"])
    assert record["tool"] in offered_tools(record["instruction"])
    assert _line_kinds(record["instruction"], record["tool"]) == tuple(a.kind for a in spec.args)
    # the sentence the tool line ends with reads back as the contract it was written from, for every tool
    for c in (*invented.capabilities("train"), *invented.capabilities("eval")):
        for s in c.tools():
            assert ToolSpec.input_kinds(s.prompt_line()) == tuple(a.kind for a in s.args)
    for s in invented.real_tools("eval"):
        assert ToolSpec.input_kinds(s.prompt_line()) == tuple(a.kind for a in s.args), s.name
    assert ToolSpec.input_kinds("> Foo: does things") is None
