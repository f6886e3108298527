"""Uploads named by position (gpt4tools.references) and the agent holding its first call to them."""

import pytest

from gpt4tools.references import Meaning, resolve

A, B, C = "image/aaaaaaaa.png", "image/bbbbbbbb.png", "image/cccccccc.png"


def meant_upload(message, uploads_now, uploads):
    """The upload the rules take `message` to mean, with these uploads and nothing else said."""
    return resolve(message, uploads_now, uploads, uploads).image


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
    assert meant_upload("now the first", [], [A, B]) == A
    assert meant_upload("and the second?", [], [A, B]) == B
    assert meant_upload("now the first", [], [A]) is None  # one photo: nothing to choose
    assert meant_upload("the first is blurry, fix the second", [], [A, B]) is None  # two positions


@pytest.mark.parametrize(
    "message, now, uploads",
    [
        ("describe it", [A, B], [A, B]),  # no position
        ("compare the first and the second photo", [A, B], [A, B]),  # two positions
        ("first, crop the dog", [], [A, B]),  # "first" of a sequence, not of photos
        ("crop the first one of the cats", [], [A, B]),  # the first cat
        ("the last one", [], [A, B]),  # alone, "last" may be the last result
        ("the first photo", [A], [A]),  # one photo: nothing to choose
        ("the third one", [], [A, B]),  # there is no third ("one" may be a person: no answer either)
        ("", [], [A, B]),
    ],
)
def test_anything_less_clear_names_no_upload(message, now, uploads):
    assert meant_upload(message, now, uploads) is None


NOTES = {A: "Please take this image, image/aaaaaaaa.png. What it shows, briefly: the object detector found 1 dog\n"
             "heres my kitty, where is she (image/aaaaaaaa.png)",
         B: "Please take this image, image/bbbbbbbb.png. What it shows, briefly: the object detector found 1 cup\n"
            "and this is my breakfast. crop the plate (image/bbbbbbbb.png)"}


@pytest.mark.parametrize(
    "message, meant",
    [
        ("go back to the cat one and make it sharper", A),  # "kitty" in the message it came with
        ("upscale the coffee pic", B),  # the detector found a cup: coffee is a cup
        ("now the breakfast photo", B),
        ("the one with the mug", B),
        ("the dog one", A),  # in its description
        ("the horse one", None),  # neither
        ("the photo one", None),  # no content word
        ("make it sharper", None),
    ],
)
def test_an_upload_named_by_what_the_conversation_said_of_it(message, meant):
    assert resolve(message, [], [A, B], [A, B], notes=NOTES) == Meaning(image=meant)


def test_content_that_fits_two_uploads_names_none():
    notes = {A: "a person", B: "a person and a dog"}
    assert resolve("the person one", [], [A, B], [A, B], notes=notes).image is None
    assert resolve("the dog one", [], [A, B], [A, B], notes=notes).image == B


def test_the_other_upload_is_the_one_the_last_turn_did_not_work_on():
    assert resolve("sketch of the other", [], [A, B], [A, B], last_used=A).image == B
    assert resolve("and who's in the other one", [], [A, B], [A, B], last_used=B).image == A
    assert resolve("the other", [], [A, B], [A, B]).image is None  # which one was worked on is unknown
    assert resolve("the other", [], [A, B, C], [A, B, C], last_used=A).image is None  # three: which other?
    assert resolve("remove the other dog in it", [], [A, B], [A, B], last_used=A).image is None


@pytest.mark.parametrize("message", ["same for this", "and this one?", "oh and this", "now same thing on this",
                                     "hm does it work on this old photo too", "do the same for this one"])
def test_a_new_photo_with_same_for_this_asks_for_the_last_tool_again(message):
    assert resolve(message, [B], [A, B], [A, B], last_tool="Pose Detection On Image") == \
        Meaning(image=B, tool="Pose Detection On Image")


@pytest.mark.parametrize("message, now, last_tool", [
    ("same for this", [], "Pose Detection On Image"),  # no new photo: "this" may be a result
    ("and this one?", [B], None),  # the last turn called no tool
    ("and this one?", [A, B], "Detect Face"),  # two new photos: which one?
    ("now segment this one", [B], "Detect Face"),  # names an operation of its own
])
def test_no_repeat_without_one_new_photo_and_a_last_tool(message, now, last_tool):
    assert resolve(message, now, [A, B], [A, B], last_tool=last_tool).tool is None


def test_the_original_is_the_upload_the_last_turn_worked_on():
    assert resolve("ok now remove her from the original photo", [], [A], [A, "image/x1_seg_a_aaaaaaaa.png"]).image == A
    assert resolve("and the straight lines of the original", [], [A, B], [A, B], last_used=A).image == A
    assert resolve("the original", [], [A, B], [A, B]).image is None  # which one's results: unknown
    assert resolve("upscale it to the original size", [], [A], [A]).image is None


def test_a_file_name_resolves_to_the_upload_it_came_under_or_gets_an_answer():
    originals = {"vacation.jpg": A}
    assert resolve("read the text in vacation.jpg", [A], [A], [A], originals=originals).image == A
    assert resolve("read the text in Vacation.JPG", [A], [A], [A], originals=originals).image == A
    assert resolve(f"describe {B}", [], [A, B], [A, B]).image == B  # a name of this session
    missing = resolve("now do the same for dog.png", [], [A], [A], originals=originals)
    assert missing.image is None and "dog.png" in missing.answer and A in missing.answer
    empty = resolve("whats in IMG_2041.jpg", [], [], [])
    assert "IMG_2041.jpg" in empty.answer and "upload" in empty.answer


def test_a_position_past_the_uploads_gets_an_answer():
    answer = resolve("whos in the third photo", [A], [A], [A]).answer
    assert "third" in answer and "only one photo" in answer and A in answer
    assert resolve("whos in the third one", [A], [A], [A]) == Meaning()  # "one": maybe a person


def test_a_photo_pointed_at_before_any_upload_gets_an_answer():
    assert "upload" in resolve("whats in the picture", [], [], []).answer
    assert resolve("why is the sky blue", [], [], []) == Meaning()
    assert resolve("make a picture of a castle", [], [], []) == Meaning()  # not pointing at one
    assert resolve("whats in the picture", [A], [A], [A]) == Meaning()  # there is one
    # where a tool makes images from words, "the picture" may be one to make
    assert resolve("draw the picture of a cat", [], [], [], makes_images=True) == Meaning()


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


def test_the_agent_answers_at_once_where_no_image_can_serve_and_resolves_the_other(store, upload):
    from gpt4tools import react
    from gpt4tools.agent import Agent, Final
    from gpt4tools.history import Conversation
    from gpt4tools.llm import ScriptedLLM
    from gpt4tools.prompt import PromptTemplate
    from gpt4tools.registry import ToolRegistry

    from fakes import Invert

    first, second = upload("chelsea.jpg"), upload("astronaut.jpg")
    conversation = Conversation(PromptTemplate.load())
    llm = ScriptedLLM([react.render_call(react.ToolCall("Invert The Image", first)),
                       react.render_final(react.FinalAnswer("done")),
                       react.render_final(react.FinalAnswer("ok"))])
    agent = Agent(llm, ToolRegistry([Invert()]), PromptTemplate.load())
    list(agent.run("invert the rocket one", conversation, store, [first, second]))  # no rule: the model picks
    assert conversation.last_used() == first
    # the upload's own file name, and a name nobody uploaded: answered without the model
    steps = list(agent.run("now do the same for dog.png", conversation, store))
    assert isinstance(steps[-1], Final) and "dog.png" in steps[-1].text and len(llm.prompts) == 2
    list(agent.run("sketch of the other", conversation, store))
    assert [line for line in llm.grammars[-1].splitlines() if line.startswith("image ::=")] == [f'image ::= "{second}"']
    assert conversation.last_tool() is None  # that turn called no tool
    assert store.uploaded_as[first] == "chelsea.jpg"


def test_the_agent_holds_same_for_this_to_the_last_tool_and_the_new_photo(store, upload):
    from gpt4tools import react
    from gpt4tools.agent import Agent
    from gpt4tools.history import Conversation
    from gpt4tools.llm import ScriptedLLM
    from gpt4tools.prompt import PromptTemplate
    from gpt4tools.registry import ToolRegistry

    from fakes import Ask, Invert

    first = upload("chelsea.jpg")
    conversation = Conversation(PromptTemplate.load())
    llm = ScriptedLLM([react.render_call(react.ToolCall("Invert The Image", first)),
                       react.render_final(react.FinalAnswer("done")),
                       react.render_final(react.FinalAnswer("ok"))])
    agent = Agent(llm, ToolRegistry([Invert(), Ask()]), PromptTemplate.load())
    list(agent.run("invert it", conversation, store, [first]))
    assert conversation.last_tool() == "Invert The Image"
    second = upload("astronaut.jpg")
    list(agent.run("same for this", conversation, store, [second]))
    grammar = llm.grammars[-1]
    assert "Invert The Image" in grammar and Ask.spec.name not in grammar and first not in grammar
    assert grammar.splitlines()[0].endswith(" call")  # a call, not an answer that it cannot be done


@pytest.mark.parametrize("message, meant", [
    ("now the first", A), ("and the 2nd one?", B), ("ok what about the other one", B),
    ("do the same for the first photo pls", A), ("now the cat one", A)])
def test_a_bare_reference_asks_for_the_last_request_on_that_photo(message, meant):
    got = resolve(message, [], [A, B], [A, B], last_used=A if meant == B else B, last_tool="Detection",
                  notes={A: "a cat on a sofa", B: "a cup of coffee"})
    assert got == Meaning(image=meant, tool="Detection")


@pytest.mark.parametrize("message", ["now the edges of the first", "crop the dog in the 2nd one",
                                     "the first photo is blurry, upscale it"])
def test_a_reference_with_a_request_of_its_own_is_no_repeat(message):
    got = resolve(message, [], [A, B], [A, B], last_tool="Detection")
    assert got.image in (A, B) and got.tool is None


EDIT = "image/x1_crop_aaaaaaaa_aaaaaaaa.png"


@pytest.mark.parametrize("message", ["now sketch it", "now the edges", "upscale", "whats in this photo"])
def test_after_an_edit_the_message_means_the_result(message):
    assert resolve(message, [], [A], [A, EDIT], last_used=A, last_photo=EDIT) == Meaning(image=EDIT)


def test_an_edit_yields_to_a_new_upload_and_to_named_photos():
    assert resolve("now sketch it", [B], [A, B], [A, EDIT, B], last_photo=EDIT).image is None  # the model: B
    assert resolve("detect the dog in the original", [], [A], [A, EDIT], last_used=A, last_photo=EDIT).image == A
    assert resolve("now the first photo", [], [A, B], [A, B, EDIT], last_photo=EDIT).image == A
    assert resolve("now sketch it", [], [A], [A], last_photo=EDIT).image is None  # gone (cleared)


def test_after_an_edit_a_photo_named_by_content_is_left_to_the_model():
    got = resolve("and from the sign pic too", [], [A, B], [A, B, EDIT], last_used=B, last_photo=EDIT)
    assert got.image is None
    assert resolve("now edges of the upscaled one", [], [A], [A, EDIT], last_photo=EDIT).image == EDIT
