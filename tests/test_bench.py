"""The benchmark runner and the score command: resume, baseline, and bad input files."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from gpt4tools import bench, react
from gpt4tools.llm import Generation, ScriptedLLM, cut_at_stop

IMG = "image/abcdefgh.png"


def call(tool: str, args: str) -> str:
    return react.render_call(react.ToolCall(tool, args))


def final(text: str) -> str:
    return react.render_final(react.FinalAnswer(text))


RECORDS = [
    {"id": "seg-1", "instruction": "PROMPT seg-1\n", "input": "", "output": call("Segment the Image", IMG)},
    {"id": 2, "instruction": "PROMPT det-2\n", "input": "",
     "output": call("Detect the Give Object", f"{IMG}, cat")},
    {"id": "chat-3", "instruction": "PROMPT chat-3", "input": "What is 2+2?", "output": final("4.")},
    {"id": "det-4", "instruction": "PROMPT det-4\n", "input": "",
     "output": call("Detect the Give Object", f"{IMG}, red apple")},
]
# What a perfect model writes for each record, as scripted completions (stop strings cut them).
PERFECT = {
    "seg-1": call("Segment the Image", "image/zzzzzzzz.png") + " imagined observation\nThought: more",
    "2": call("Detect the Give Object", "image/zzzzzzzz.png, cat"),
    "chat-3": final("It is 4."),
    "det-4": call("Detect the Give Object", "image/zzzzzzzz.png, red apple"),
}


class ByPromptLLM(ScriptedLLM):
    """Answers each prompt by its record ("PROMPT <key>"), in whatever order the runner asks."""

    def __init__(self, answers: dict[str, str]):
        super().__init__([])
        self.answers = answers

    def generate(self, prompt, *, stop=(), max_new_tokens=256):
        self.prompts.append(prompt)
        text, which = cut_at_stop(self.answers[prompt.split()[1]], stop)
        return Generation(text, self.count_tokens(prompt), self.count_tokens(text), which)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(RECORDS), encoding="utf-8")
    return path


def write_jsonl(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines), encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]


# -- bench -------------------------------------------------------------------------------
def test_bench_resumes_without_regenerating(data, tmp_path):
    out = tmp_path / "run"
    first = ByPromptLLM({"seg-1": PERFECT["seg-1"], "det-2": PERFECT["2"]})
    seen = []
    report = bench.run_bench(data, out, llm=first, limit=2, progress_callback=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 2), (1, 2), (2, 2)]
    assert report["n"] == 2 and report["SR"] == 1.0 and report["coverage"] == 0.5
    assert report["problems"]["missing_predictions"]["count"] == 2

    # A kill in the middle of writing the next line leaves a partial line behind.
    with (out / "predictions.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"id": "chat-3", "outp')
    second = ByPromptLLM({"chat-3": PERFECT["chat-3"], "det-4": PERFECT["det-4"]})
    report = bench.run_bench(data, out, llm=second)
    assert second.prompts == ["PROMPT chat-3\nWhat is 2+2?", "PROMPT det-4\n"]  # only the missing ids; input appended
    lines = read_jsonl(out / "predictions.jsonl")
    assert [ln["id"] for ln in lines] == [2, "seg-1", "chat-3", "det-4"]  # each run in prompt order
    assert lines[1]["output"].endswith("Action Input: image/zzzzzzzz.png\n")  # cut before "Observation:"
    assert lines[1]["stop"] == react.OBSERVATION
    assert report["n"] == 4 and report["SR"] == 1.0 and report["coverage"] == 1.0
    assert report["problems"] == {}
    assert {"seg-1", "2", "chat-3", "det-4"} == {str(ln["id"]) for ln in lines}


def test_a_line_separator_inside_an_output_is_not_a_line_break(tmp_path):
    records = [{"id": "u", "instruction": "PROMPT u\n", "input": "", "output": final("a\u2028b")}]
    data = tmp_path / "ann.jsonl"
    data.write_text(json.dumps(records[0], ensure_ascii=False) + "\n", encoding="utf-8")
    pred = write_jsonl(tmp_path / "pred.jsonl",
                       [json.dumps({"id": "u", "output": final("x\u2028y")}, ensure_ascii=False)])
    report = bench.score_files(data, pred, tmp_path / "out")
    assert report["n"] == 1 and report["SR"] == 1.0 and report["problems"] == {}


def test_one_at_a_time_prompts_go_in_text_order(tmp_path):
    """Neighbours then share the longest prefix, which the backends' prefix caches skip."""
    records = [{"id": i, "instruction": f"PROMPT {p}\n", "input": "", "output": final("x")}
               for i, p in enumerate(["b-tools b", "a-tools z", "b-tools a", "a-tools a"])]
    path = tmp_path / "ann.jsonl"
    write_jsonl(path, records)
    llm = ByPromptLLM({k: final("x") for k in ("b-tools", "a-tools")})
    bench.run_bench(path, tmp_path / "run", llm=llm)
    assert llm.prompts == sorted(llm.prompts) and len(llm.prompts) == 4


def test_bench_scores_a_wrong_model(data, tmp_path):
    llm = ByPromptLLM({"seg-1": call("Detect the Give Object", f"{IMG}, cat"),
                       "det-2": call("Detect the Give Object", f"{IMG}, cat"), "chat-3": final("4"),
                       "det-4": final("4")})
    report = bench.run_bench(data, tmp_path / "run", llm=llm)
    per_tool = report["per_tool"]
    assert per_tool["Segment the Image"]["SR"] == 0.0  # wrong tool
    assert per_tool["Detect the Give Object"]["SR"] == 0.5  # det-4 answered with no tool
    assert per_tool["no tool"]["SR"] == 1.0
    assert report["SR"] == pytest.approx(2 / 4)


def test_no_tool_baseline_cli_scores_the_no_tool_share(data, tmp_path, capsys):
    out = tmp_path / "baseline"
    assert bench.bench_main(["--data", str(data), "--baseline", "no-tool", "--out", str(out)]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["SR"] == pytest.approx(1 / 4)  # one of four records needs no tool
    assert scores["per_tool"]["no tool"]["SR"] == 1.0 and scores["per_tool"]["Segment the Image"]["SR"] == 0.0
    assert all(ln["output"].startswith(f"{react.THOUGHT} No\nAI: ") for ln in read_jsonl(out / "predictions.jsonl"))
    assert "SR 25.0 %" in capsys.readouterr().out


def test_resume_with_other_settings_is_refused(data, tmp_path):
    out = tmp_path / "run"
    bench.run_bench(data, out, baseline="no-tool", limit=1)
    with pytest.raises(bench.BenchError, match="other settings"):
        bench.run_bench(data, out, llm=ScriptedLLM(["x"] * 4))
    assert len(read_jsonl(out / "predictions.jsonl")) == 1


def test_bench_cli_rejects_unusable_annotations(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "output": "x"}\nnot json\n', encoding="utf-8")  # no instruction
    assert bench.bench_main(["--data", str(bad), "--baseline", "no-tool", "--out", str(tmp_path / "o")]) == 2
    assert "no usable records" in capsys.readouterr().err


# -- score -------------------------------------------------------------------------------
def test_score_writes_json_markdown_and_chart(data, tmp_path):
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": k, "output": v} for k, v in PERFECT.items()])
    assert bench.score_main(["--data", str(data), "--pred", str(pred), "--out", str(tmp_path / "rep")]) == 0
    scores = json.loads((tmp_path / "rep" / "scores.json").read_text())
    assert (scores["n"], scores["SR"], scores["coverage"]) == (4, 1.0, 1.0)
    md = (tmp_path / "rep" / "scores.md").read_text()
    assert "| **all** | 4 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |" in md
    assert "| Detect the Give Object | 2 |" in md and "| no tool | 1 |" in md
    with Image.open(tmp_path / "rep" / "scores.png") as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 100


def test_score_reports_bad_predictions_without_crashing(data, tmp_path, capsys):
    pred = write_jsonl(tmp_path / "pred.jsonl", [
        {"id": "seg-1", "output": PERFECT["seg-1"]},
        {"id": "seg-1", "output": "a later duplicate that would fail"},
        "{broken json",
        {"id": "ghost", "output": PERFECT["2"]},
        {"id": 2, "output": ""},
        ["not", "an", "object"],
    ])
    assert bench.score_main(["--data", str(data), "--pred", str(pred)]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())  # default: beside --pred
    p = scores["problems"]
    assert p["duplicate_prediction_ids"]["examples"] == ["seg-1"]
    assert p["malformed_prediction_lines"]["examples"] == [3]
    assert p["unknown_prediction_ids"]["examples"] == ["ghost"]
    assert p["empty_outputs"]["examples"] == ["2"]
    assert p["invalid_prediction"]["examples"] == [6]
    assert sorted(p["missing_predictions"]["examples"]) == ["chat-3", "det-4"]
    # Scored: seg-1 (the first line, a success) and id 2 (empty, a failure).
    assert (scores["n"], scores["SR"], scores["coverage"]) == (2, 0.5, 0.5)
    assert "duplicate_prediction_ids" in capsys.readouterr().err


def test_annotations_as_a_json_list_and_a_list_that_does_not_parse(tmp_path):
    """The reader (gpt4tools/records.py) takes JSON lists; their positions stand in for line numbers."""
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps([RECORDS[0], {"id": "x"}, RECORDS[2]]), encoding="utf-8")
    problems = bench.Problems()
    assert list(bench.load_annotations(ann, problems)) == ["seg-1", "chat-3"]
    assert problems.kinds["invalid_annotation"]["examples"] == [2]
    ann.write_text(json.dumps(RECORDS)[:-2], encoding="utf-8")
    with pytest.raises(bench.BenchError, match="starts like a JSON list but does not parse"):
        bench.load_annotations(ann, bench.Problems())


def test_score_accepts_original_code_outputs(data, tmp_path):
    # The original inference wrote the decoded prompt + continuation, sometimes as [text].
    rec = RECORDS[0]
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": "seg-1", "output": [rec["instruction"] + PERFECT["seg-1"]]}])
    report = bench.score_files(data, pred, tmp_path / "rep")
    assert report["n"] == 1 and report["SR"] == 1.0


def test_score_duplicate_annotations_and_jsonl_annotations(tmp_path):
    ann = write_jsonl(tmp_path / "ann.jsonl", [RECORDS[2], {**RECORDS[2], "output": call("Segment the Image", IMG)}])
    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": "chat-3", "output": final("4")}])
    report = bench.score_files(ann, pred)
    assert report["SR"] == 1.0  # scored against the first annotation (no tool)
    assert report["problems"]["duplicate_annotation_ids"]["count"] == 1


def test_score_nothing_scorable_exits_nonzero(data, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert bench.score_main(["--data", str(data), "--pred", str(empty)]) == 1
    assert "nothing could be scored" in capsys.readouterr().err
    assert json.loads((tmp_path / "scores.json").read_text())["problems"]["missing_predictions"]["count"] == 4
    assert not (tmp_path / "scores.png").exists()
    assert bench.score_main(["--data", str(empty), "--pred", str(empty)]) == 1  # empty annotations too
    assert bench.score_main(["--data", str(tmp_path / "nope.json"), "--pred", str(empty)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_dispatches_score(data, tmp_path):
    from gpt4tools.cli import main

    pred = write_jsonl(tmp_path / "pred.jsonl", [{"id": "chat-3", "output": final("4")}])
    assert main(["score", "--data", str(data), "--pred", str(pred)]) == 0
    assert (tmp_path / "scores.json").is_file()


def test_per_tool_subset_is_stratified_seeded_and_checked(data, tmp_path):
    records = {str(r["id"]): r for r in RECORDS}
    one = bench.select_per_tool(records, 1, seed=0)
    keys = sorted(bench.metrics.reference_tool(r["output"]) for r in one.values())
    assert keys == ["Detect the Give Object", "Segment the Image", "no tool"]  # one per tool, no more
    assert list(one) == [k for k in records if k in one]  # file order kept
    assert bench.select_per_tool(records, 1, seed=0) == one
    assert {frozenset(bench.select_per_tool(records, 1, seed=s)) for s in range(8)} != {frozenset(one)}

    out = tmp_path / "run"
    report = bench.run_bench(data, out, baseline="no-tool", per_tool=1)
    assert report["n"] == report["n_annotations"] == 3
    with pytest.raises(bench.BenchError, match="other settings"):  # a resume may not change the subset
        bench.run_bench(data, out, baseline="no-tool", per_tool=2)
    with pytest.raises(bench.BenchError, match="--per-tool"):
        bench.run_bench(data, tmp_path / "x", baseline="no-tool", per_tool=0)


def test_score_per_tool_scores_the_subset_of_a_larger_run(data, tmp_path):
    """score --per-tool N reads bench --per-tool N's records out of a bigger run's predictions."""
    full = bench.run_bench(data, tmp_path / "all", baseline="no-tool")
    pred = tmp_path / "all" / "predictions.jsonl"
    sub = bench.run_bench(data, tmp_path / "one", baseline="no-tool", per_tool=1)
    scored = bench.score_files(data, pred, tmp_path / "rescored", per_tool=1)
    assert full["n"] > scored["n"] == sub["n"] == 3
    assert scored["per_tool"] == sub["per_tool"] and scored["SR"] == sub["SR"]
    assert "unknown_prediction_ids" not in scored["problems"]  # the rest of the run is not a problem
    assert bench.score_main(["--data", str(data), "--pred", str(pred), "--per-tool", "0"]) == 2


def test_auto_runner_batches_transformers_only_on_amx_cpus(monkeypatch):
    import gpt4tools.llm as llm_mod
    from gpt4tools import hardware

    monkeypatch.setattr(llm_mod, "resolve_backend",
                        lambda backend, model, device: "llamacpp" if backend == "auto" else backend)
    monkeypatch.setattr(hardware, "cpu_has_amx", lambda: True)
    assert llm_mod.pick_runner("auto", "default", "cpu", None) == ("transformers", llm_mod.AMX_BATCH)
    assert llm_mod.pick_runner("auto", "default", "cpu", 4) == ("transformers", 4)  # an asked batch size stays
    assert llm_mod.pick_runner("llamacpp", "default", "cpu", None) == ("llamacpp", 1)  # an asked backend stays
    assert llm_mod.pick_runner("auto", "default", "cuda", None) == ("llamacpp", 1)
    monkeypatch.setattr(hardware, "cpu_has_amx", lambda: False)
    assert llm_mod.pick_runner("auto", "default", "cpu", None) == ("llamacpp", 1)


# -- --constrained ----------------------------------------------------------------------------
def _format_prompt(key: str, tools: list[str], history: str = "") -> str:
    """A benchmark prompt shaped like the real ones: tool lines, the format block, the history."""
    from gpt4tools.prompt import PromptTemplate

    t = PromptTemplate.load()
    fmt = t.format_instructions.format(tool_names=", ".join(tools), ai_prefix=t.ai_prefix)
    return f"PROMPT {key}\n\n" + "\n".join(f"> {n}: ..." for n in tools) + f"\n\n{fmt}\n\n{history}\n"


class GrammarLLM(ByPromptLLM):
    """ByPromptLLM that also takes (and records) a grammar per prompt."""

    def __init__(self, answers):
        super().__init__(answers)
        self.grammars: dict[str, str | None] = {}

    def generate(self, prompt, *, stop=(), max_new_tokens=256, grammar=None):
        self.grammars[prompt.split()[1]] = grammar
        return super().generate(prompt, stop=stop, max_new_tokens=max_new_tokens)


def test_prompt_grammar_reads_the_offered_tools_and_images():
    prompt = _format_prompt("x", ["Segment the Image", "Detect the Give Object", "Some Future Tool"],
                            f"Human: Here is an image named {IMG}.\nAI: Received.\nNew input: hi\n"
                            "Observation: Result saved as image/ab12_seg_abcdefgh_abcdefgh.png\n")
    assert bench.offered_tools(prompt) == ["Segment the Image", "Detect the Give Object", "Some Future Tool"]
    g = bench.prompt_grammar(prompt)
    assert g == react.step_grammar([("Segment the Image", ["image"]), ("Detect the Give Object", ["image", "text"]),
                                    ("Some Future Tool", ["text"])],  # unknown to the registry: one free text
                                   [IMG, "image/ab12_seg_abcdefgh_abcdefgh.png"])


def test_prompt_grammar_of_real_records_accepts_their_references():
    """For the committed validation split, each reference tool step is a valid step under the
    grammar made from its own prompt (the data and the constraint agree)."""
    llg = pytest.importorskip("llguidance")
    from gpt4tools import paths

    class Bytes:
        eos_token_id, bos_token_id = 256, None
        tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]
        special_token_ids = [256]

        def __call__(self, text):
            return list(text)

    tok = llg.LLTokenizer(llg.TokenizerWrapper(Bytes()))
    records = [json.loads(line) for line in (paths.REPO / "data" / "val.jsonl").open(encoding="utf-8")]
    steps = [r for r in records if react.reference_uses_tool(r["output"])][:150]
    assert len(steps) >= 50
    for r in steps:
        m = llg.LLMatcher(tok, llg.grammar_from("gbnf", bench.record_grammar(r)), log_level=0)
        text = r["output"].removesuffix(react.OBSERVATION)
        assert m.consume_tokens(list(text.encode())) and m.is_accepting(), (r["id"], text)


def test_bench_constrained_passes_a_grammar_per_prompt_and_records_it(tmp_path):
    records = [{"id": "a", "instruction": _format_prompt("a", ["Segment the Image"], f"New input: {IMG}"),
                "input": "", "output": call("Segment the Image", IMG)},
               {"id": "b", "instruction": _format_prompt("b", ["Segment the Image", "Generate Image From User "
                                                              "Input Text"]), "input": "", "output": final("hi")}]
    data = tmp_path / "ann.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    llm = GrammarLLM({"a": call("Segment the Image", IMG), "b": final("hi")})
    report = bench.run_bench(data, tmp_path / "run", llm=llm, constrained=True)
    assert report["n"] == 2 and report["SR"] == 1.0
    assert llm.grammars["a"] == bench.record_grammar(records[0]) and f'"{IMG}"' in llm.grammars["a"]
    assert "Segment the Image" not in llm.grammars["b"]  # no image in that prompt: only the text tool
    assert json.loads((tmp_path / "run" / "run.json").read_text())["constrained"] is True
    with pytest.raises(bench.BenchError, match="other settings.*constrained"):
        bench.run_bench(data, tmp_path / "run", llm=llm)  # a resume may not mix free and constrained

    free = GrammarLLM({"a": call("Segment the Image", IMG), "b": final("hi")})
    bench.run_bench(data, tmp_path / "free", llm=free)
    assert free.grammars == {"a": None, "b": None}  # the paper's protocol by default
    settings = json.loads((tmp_path / "free" / "run.json").read_text())
    assert settings["constrained"] is False
    del settings["constrained"]  # a run folder from before the setting existed resumes as unconstrained
    (tmp_path / "free" / "run.json").write_text(json.dumps(settings))
    bench.run_bench(data, tmp_path / "free", llm=free)


def test_generate_many_sends_grammars_per_row_or_one_by_one():
    from gpt4tools.llm import generate_many

    class Batcher(ScriptedLLM):
        def __init__(self, per_row: bool):
            super().__init__([])
            self.batch_grammars, self.calls = per_row, []

        def generate(self, prompt, *, stop=(), max_new_tokens=256, grammar=None):
            self.calls.append(("one", prompt, grammar))
            return Generation(prompt.upper())

        def generate_batch(self, prompts, *, stop=(), max_new_tokens=256, grammars=None):
            self.calls.append(("batch", list(prompts), grammars))
            return [Generation(p.upper()) for p in prompts]

    prompts, grammars = ["a", "b", "c"], ["G", None, "G"]
    for per_row in (True, False):
        llm = Batcher(per_row)
        assert [g.text for g in generate_many(llm, prompts, batch_size=4, grammars=grammars)] == ["A", "B", "C"]
        assert llm.calls == ([("batch", prompts, grammars)] if per_row else
                             [("one", p, g) for p, g in zip(prompts, grammars)])
    llm = Batcher(False)
    generate_many(llm, prompts, batch_size=4)  # no grammars: batched as before
    assert llm.calls == [("batch", prompts, None)]
