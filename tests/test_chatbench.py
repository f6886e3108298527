"""The conversation benchmark: the pure turn scorer on hand-made turns, and whole runs through the
real Session/Agent with the scripted model and small real tools (tests/fakes.py)."""

from __future__ import annotations

import json

import pytest

from gpt4tools import chatbench as cb

from fakes import scripted_agent

UP, RES = "image/upload01.png", "image/res_invert_upload01_upload01.png"
TOOLS = {"Invert The Image": "Invert The Image", "Ask": "Ask", "Ask Something": "Ask"}


def canonical(name):
    return TOOLS.get(name)


def turn(actions=(), results=(), answer=""):
    return {"actions": [{"tool": t, "input": i, "known": canonical(t) is not None, "ok": ok} for t, i, ok in actions],
            "results": list(results), "answer": answer}


def expect(tools=("Invert The Image",), image="upload:last", args=(), result_image=True, answer=(), unavailable=False):
    return {"tools": list(tools), "image": image, "args": list(args), "result_image": result_image,
            "answer": list(answer), "unavailable": unavailable}


def test_a_right_turn_passes_every_check():
    t = turn([("Invert The Image", UP, True)], [RES], f"Done: {RES}")
    score = cb.score_turn(expect(), t, UP, canonical)
    assert score["success"] and all(score[c] for c in cb.CHECKS)


def test_the_wrong_image_fails_only_the_image_check():
    older = "image/older001.png"
    score = cb.score_turn(expect(), turn([("Invert The Image", older, True)], [RES], RES), UP, canonical)
    assert not score["image"] and not score["success"]
    assert all(score[c] for c in cb.CHECKS if c != "image")


def test_an_invented_tool_and_a_claimed_result_are_caught():
    # the browser session of the issue: a tool that does not exist, then the upload shown as the result
    t = turn([("Detect Object", f"{UP}, dog", False)], [], f"The dog is ready: {UP}")
    score = cb.score_turn(expect(args=["dog"]), t, UP, canonical)
    assert not score["tool"] and not score["no_invented_tool"] and not score["no_false_claim"]
    assert not score["result"] and not score["success"]


def test_answers_about_an_upload_are_not_claims_when_no_result_was_asked():
    t = turn([("Ask", f"{UP}, how big is it?", True)], [], f"{UP} is 600x400 pixels.")
    score = cb.score_turn(expect(["Ask"], result_image=False, args=["big"], answer=["600"]), t, UP, canonical)
    assert score["success"]


def test_no_tool_turns_and_unavailable_requests():
    chit = expect(tools=(), image=None, result_image=False, answer=["blue"])
    assert cb.score_turn(chit, turn(answer="Rayleigh scattering makes it blue."), None, canonical)["success"]
    assert not cb.score_turn(chit, turn([("Ask", f"{UP}, sky", True)], answer="blue"), None, canonical)["tool"]
    gen = expect(tools=(), image=None, result_image=False, unavailable=True)
    honest = turn(answer="I can't generate images here: the generation tools are not installed.")
    faked = turn(answer=f"Here is your picture: {UP}")
    assert cb.score_turn(gen, honest, None, canonical)["success"]
    faked_score = cb.score_turn(gen, faked, None, canonical)
    assert not faked_score["answer"] and not faked_score["success"]


def test_keywords_are_checked_only_for_tools_that_take_text():
    t = turn([("Invert The Image", UP, True)], [RES], RES)
    score = cb.score_turn(expect(args=["cat"]), t, UP, canonical, text_args=lambda name: 0)
    assert score["args"] and score["success"]
    assert not cb.score_turn(expect(args=["cat"]), t, UP, canonical, text_args=lambda name: 1)["args"]


def test_image_references_resolve_against_uploads_and_results():
    ups, res = ["image/a.png", "image/b.png"], ["image/r.png"]
    assert cb.resolve_image("upload:last", ups, res) == "image/b.png"
    assert cb.resolve_image("upload:0", ups, res) == "image/a.png"
    assert cb.resolve_image("result:last", ups, res) == "image/r.png"
    assert cb.resolve_image("result:last", ups, []) is None and cb.resolve_image(None, ups, res) is None
    assert cb.resolve_image("upload:5", ups, res) is None


CONVERSATIONS = [
    {"id": "t1", "category": "follow-up", "turns": [
        {"user": "invert this pls", "uploads": ["chelsea.jpg"], "expect": expect()},
        {"user": "invert it again", "uploads": [], "expect": expect(image="result:last")},
        {"user": "thanks!", "uploads": [], "expect": expect(tools=(), image=None, result_image=False)}]},
    {"id": "t2", "category": "multi-image", "turns": [
        {"user": "what size is the sign", "uploads": ["coffee.jpg", "make:sign:OPEN 24 HOURS"],
         "expect": expect(["Ask"], args=["big"], result_image=False, answer=["pixels"])}]},
]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "conversations.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in CONVERSATIONS))
    return path


def test_a_run_scores_every_turn_with_latencies_and_resumes(data, tmp_path, monkeypatch):
    monkeypatch.setenv("GPT4TOOLS_RUNS", str(tmp_path / "runs"))
    agent, out = scripted_agent(), tmp_path / "run"
    summary = cb.run(cb.load_conversations(data), agent, out)
    rows = [json.loads(x) for x in (out / "turns.jsonl").read_text().splitlines()]
    assert [r["score"]["success"] for r in rows] == [True, True, True, True]
    assert rows[1]["meant_image"] == rows[0]["turn"]["results"][0]  # "it" = the last result
    assert rows[3]["meant_image"] == rows[3]["turn"]["uploads"][1]  # the newest of two uploads
    assert summary["turns"] == {"n": 4, "rate": 1.0} and summary["conversations"] == {"n": 2, "rate": 1.0}
    assert summary["latency_s"]["turn_s"]["n"] == 4 and summary["latency_s"]["first_action_s"]["n"] == 3
    assert "Turns: **100.0 %** of 4" in (out / "scores.md").read_text()
    cb.run(cb.load_conversations(data), agent, out)  # resumed: nothing replayed, nothing duplicated
    assert len((out / "turns.jsonl").read_text().splitlines()) == 4
    assert summary["latency_s"]["turn_without_tools_s"]["n"] == 4
    assert all(0 <= r["turn"]["tool_s"] <= r["turn"]["turn_s"] for r in rows)
    # a replay names its images as the first run did (seeded by the conversation): runs compare like with like
    again = cb.run_conversation(scripted_agent(), cb.load_conversations(data)[0], tmp_path / "photos")
    assert [(t["turn"]["uploads"], t["turn"]["results"]) for t in again] == \
        [(r["turn"]["uploads"], r["turn"]["results"]) for r in rows[:3]]


def test_a_wrong_image_in_a_run_is_scored_as_such(data, tmp_path, monkeypatch):
    """The scripted model applies a tool to the last image named in the history: with two uploads in
    one turn that is the second, so a turn that means the first one fails its image check."""
    monkeypatch.setenv("GPT4TOOLS_RUNS", str(tmp_path / "runs"))
    conv = {"id": "t3", "category": "multi-image", "turns": [
        {"user": "invert the first one", "uploads": ["coffee.jpg", "rocket.jpg"], "expect": expect(image="upload:0")}]}
    summary = cb.run([conv], scripted_agent(), tmp_path / "run")
    assert summary["checks"]["image"]["rate"] == 0.0 and summary["right_image"] == {"n": 1, "rate": 0.0}


def test_bad_conversation_files_are_refused_clearly(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "turns": []}\n')
    with pytest.raises(cb.ChatBenchError, match="line 1"):
        cb.load_conversations(bad)
    bad.write_text("not json\n")
    with pytest.raises(cb.ChatBenchError, match="not valid JSON"):
        cb.load_conversations(bad)
    with pytest.raises(cb.ChatBenchError, match="neither a file"):
        cb.make_photo("nope.jpg", tmp_path)
