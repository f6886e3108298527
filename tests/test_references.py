"""Uploads named by position (gpt4tools.references) and the agent holding its first call to them."""

import pytest

from gpt4tools.references import meant_upload

A, B, C = "image/aaaaaaaa.png", "image/bbbbbbbb.png", "image/cccccccc.png"


@pytest.mark.parametrize(
    "message, now, meant",
    [
        ("two pics. describe the 2nd one", [A, B], B),
        ("whats in the first photo?", [A, B], A),
        ("describe the last one", [A, B], B),
        ("describe the LATEST pic", [A, B, C], C),
        ("sketch the second picture", [A, B, C], B),
    ],
)
def test_a_position_counts_the_uploads_sent_together(message, now, meant):
    assert meant_upload(message, now, [A, B, C]) == meant


def test_without_two_uploads_in_the_message_a_position_counts_the_conversations_uploads():
    assert meant_upload("now crop the person from the first pic", [], [A, B, C]) == A
    assert meant_upload("and the 3rd image?", [C], [A, B, C]) == C
    assert meant_upload("upscale the 2nd upload", [], [A, B]) == B


@pytest.mark.parametrize(
    "message, now, uploads",
    [
        ("describe it", [A, B], [A, B]),  # no position
        ("compare the first and the second photo", [A, B], [A, B]),  # two positions
        ("first, crop the dog", [], [A, B]),  # "first" of a sequence, not of photos
        ("crop the first one of the cats", [], [A, B]),  # the first cat
        ("the last one", [], [A, B]),  # alone, "last" may be the last result
        ("the first photo", [A], [A]),  # one photo: nothing to choose
        ("the third photo", [], [A, B]),  # there is no third
        ("", [], [A, B]),
    ],
)
def test_anything_less_clear_names_no_upload(message, now, uploads):
    assert meant_upload(message, now, uploads) is None


def test_the_agent_holds_the_first_call_to_the_upload_named(store, upload):
    from gpt4tools import react
    from gpt4tools.agent import Agent, Final
    from gpt4tools.history import Conversation
    from gpt4tools.llm import ScriptedLLM
    from gpt4tools.prompt import PromptTemplate
    from gpt4tools.registry import ToolRegistry

    from fakes import Invert

    first, second = upload("chelsea.jpg"), upload("astronaut.jpg")
    script = [react.render_call(react.ToolCall("Invert The Image", second)),
              react.render_call(react.ToolCall("Invert The Image", first)),
              react.render_final(react.FinalAnswer("done"))]
    llm = ScriptedLLM(script)
    agent = Agent(llm, ToolRegistry([Invert()]), PromptTemplate.load())
    steps = list(agent.run("invert the 2nd one twice", Conversation(PromptTemplate.load()), store,
                           [first, second]))
    assert isinstance(steps[-1], Final)
    image_rule = [[line for line in g.splitlines() if line.startswith("image ::=")][0] for g in llm.grammars]
    assert second in image_rule[0] and first not in image_rule[0]  # only the upload named
    assert first in image_rule[1] and second in image_rule[1]  # later steps: every image
    # nothing named by position: every image from the first step
    llm = ScriptedLLM([react.render_final(react.FinalAnswer("ok"))])
    list(Agent(llm, ToolRegistry([Invert()]), PromptTemplate.load()).run(
        "invert it", Conversation(PromptTemplate.load()), store, [first, second]))
    assert first in llm.grammars[0] and second in llm.grammars[0]
