"""Every branch of the loop, with a scripted LLM and small real tools."""

import re

import pytest

from gpt4tools import react
from gpt4tools.agent import (
    NOTHING_MADE,
    Action,
    Agent,
    AgentConfig,
    Error,
    Final,
    ImageStep,
    ObservationStep,
    Thought,
    step_grammar,
)
from gpt4tools.history import Conversation
from gpt4tools.llm import ScriptedLLM, StopStream
from gpt4tools.prompt import PromptTemplate
from gpt4tools.registry import ToolRegistry
from gpt4tools.tool import Arg, Availability, Tool, ToolResult, ToolSpec, format_boxes

from fakes import Ask, Crash, Invert, Missing

T = PromptTemplate.load()


def call(tool, inp):
    return react.render_call(react.ToolCall(tool, inp))


def final(text):
    return react.render_final(react.FinalAnswer(text))


def run(script, message, store, conv=None, tools=None, uploads=(), **cfg):
    if tools is None:
        tools = (Invert(), Ask(), Crash())
    llm = ScriptedLLM(script)
    agent = Agent(llm, ToolRegistry(tools), T, AgentConfig(**cfg))
    conv = conv or Conversation(T)
    steps = [s for s in agent.run(message, conv, store, uploads) if not isinstance(s, Thought)]
    return steps, llm, conv


def test_tool_then_answer(store, upload):
    name = upload("chelsea.jpg")
    conv = Conversation(T)
    conv.add_image(name, "a cat")
    steps, llm, conv = run([call("Invert The Image", name), final("done")], f"invert {name}", store, conv)
    assert isinstance(steps[0], Action) and steps[0].tool == "Invert The Image"
    assert isinstance(steps[1], ObservationStep) and steps[1].ok
    assert isinstance(steps[2], ImageStep) and store.exists(steps[2].name)
    # the second prompt carries the first step and its observation in the scratchpad
    assert f"Action Input: {name}\nObservation: Result saved as {steps[2].name}\n" in llm.prompts[1]
    assert f"image named {name}" in llm.prompts[0] and "New input: invert" in llm.prompts[0]


def test_final_answer_is_remembered(store):
    steps, llm, conv = run([final("4")], "what is 2+2?", store)
    assert steps == [Final("4", [], 0, steps[0].seconds)]
    assert conv.turns[-2].text == "what is 2+2?" and conv.turns[-1].text == "4"


def test_unknown_tool_and_parse_error_become_observations(store, upload):
    name = upload("chelsea.jpg")
    steps, llm, _ = run([call("Fly Away", name), "gibberish", final("ok")], "x", store)
    obs = [s for s in steps if isinstance(s, ObservationStep)]
    assert not obs[0].ok and "not a valid tool" in obs[0].text and "Invert The Image" in obs[0].text
    assert any(isinstance(s, Error) and "Could not read" in s.message for s in steps)
    assert isinstance(steps[-1], Final) and "Fly Away failed" in steps[-1].text  # not a bare "ok"


def test_tool_crash_and_bad_input_keep_going(store, upload):
    name = upload("chelsea.jpg")
    script = [call("Crash", "now"), call("Invert The Image", "image/nothere.png"),
              call("Invert The Image", "../../etc/passwd"), call("Ask", name), final("done")]
    steps, llm, _ = run(script, "x", store, max_steps=5)
    obs = [s for s in steps if isinstance(s, ObservationStep)]
    assert "ZeroDivisionError" in obs[0].text and not obs[0].ok
    assert "does not exist" in obs[1].text and "outside" in obs[2].text
    assert "takes 2" in obs[3].text  # wrong argument count
    assert steps[-1].text.startswith("Sorry, that did not work: Ask failed (")  # "done" would be a false claim


def test_fake_file_name_in_answer_is_corrected(store, upload):
    name = upload("chelsea.jpg")
    steps, llm, _ = run([final("Saved as image/zzzzzzzz.png"), final(f"It is {name}")], "x", store)
    assert isinstance(steps[0], Error) and "image/zzzzzzzz.png does not exist" in steps[0].message
    assert steps[-1].text == f"It is {name}" and steps[-1].images == []  # the user's upload is no result to show
    steps, _, _ = run([final("see image/zzzzzzzz.png")] * 3, "x", store)
    assert "image/zzzzzzzz.png" not in steps[-1].text


def test_only_tool_results_are_shown_beside_an_answer(store, upload):
    """The UI shows Final.images: an answer that presents the uploaded photo "as the result" (the
    browser session of the conversation issue) must not put that photo on screen as one."""
    name = upload("chelsea.jpg")
    steps, _, _ = run([call("Invert The Image", name), final("Here it is")], "x", store)
    result = next(s.name for s in steps if isinstance(s, ImageStep))
    steps, _, _ = run([final(f"The dog is ready: {name}, and the inverted one is {result}"),
                       final(f"The inverted one is {result}")], "x", store)
    assert isinstance(steps[0], Error) and f"{name} is the human's upload, not a result" in steps[0].message
    assert steps[-1].images == [result]


def test_an_upload_presented_as_the_result_is_corrected_then_removed(store, upload):
    name = upload("chelsea.jpg")
    steps, _, _ = run([final(f"The mask of the kitty is ready: {name}")] * 3, "mask the kitty", store)
    assert sum(isinstance(s, Error) for s in steps) == 2
    assert steps[-1].text == NOTHING_MADE and steps[-1].images == []  # not "The mask is ready: (no such file)"
    # naming the upload without presenting it as a result is fine
    steps, _, _ = run([final(f"{name} shows a cat on a sofa.")], "what is in it", store)
    assert steps == [Final(f"{name} shows a cat on a sofa.", [], 0, steps[0].seconds)]


def test_a_failed_call_is_never_answered_as_a_success(store, upload):
    name = upload("chelsea.jpg")
    steps, _, _ = run([call("Fly Away", name), final(f"The dog is ready: {name}")] * 2, "find the dog", store)
    assert steps[-1].text.startswith("Sorry, that did not work: Fly Away failed (")
    assert "not a valid tool" in steps[-1].text and steps[-1].images == []
    # the model admits it: its own words stay
    steps, _, _ = run([call("Crash", "now"), final("Sorry, the tool failed.")], "x", store)
    assert steps[-1].text == "Sorry, the tool failed."
    # a later call that worked: the answer stands
    steps, _, _ = run([call("Crash", "now"), call("Invert The Image", name), final("Inverted.")], "x", store)
    assert steps[-1].text == "Inverted."


def test_an_answer_that_only_announces_the_result_gets_the_tools_words(store, upload):
    name = upload("chelsea.jpg")
    steps, _, _ = run([call("Ask", f"{name}, how big?"), final("The result:")], "how big is it", store)
    assert steps[-1].text == "The result: The image is 451x300 pixels."
    # a whole answer, or no tool this turn: the model's words stay
    steps, _, _ = run([call("Ask", f"{name}, how big?"), final("It is 451 by 300.")], "how big is it", store)
    assert steps[-1].text == "It is 451 by 300."
    steps, _, _ = run([final("Here is a list:")], "list things", store)
    assert steps[-1].text == "Here is a list:"


class ReadPage(Tool):  # a multi-line observation, like the OCR's lines of a page
    spec = ToolSpec(name="Read Page", description="useful to read text.", args=(Arg("image_path", "image"),),
                    output="text", slug="read")

    def run(self, store, image_path):
        return ToolResult(text="Heading [3, 9, 296, 36]\nlast line of the page [37, 167, 243, 190]")


class BoxFaces(Tool):  # an image and boxes, like Detect Face
    spec = ToolSpec(name="Box Faces", description="useful to find faces.", args=(Arg("image_path", "image"),),
                    output="image", slug="faces")

    def run(self, store, image_path):
        return ToolResult(image=image_path, text=format_boxes([("face", (1, 2, 30, 40)), ("face", (50, 2, 80, 40))]))


class NamesItsResult(ScriptedLLM):
    """Writes "{made}" as the image the last observation in the prompt saved."""

    def generate(self, prompt, **kw):
        made = re.findall(r"Result saved as (image/\S+)", prompt)
        self.completions[0] = self.completions[0].replace("{made}", made[-1] if made else "")
        return super().generate(prompt, **kw)


def test_an_answer_that_copies_part_of_the_tools_words_gets_all_of_them(store, upload):
    name = upload("chelsea.jpg")
    tools = (ReadPage(), BoxFaces())
    page = "Heading [3, 9, 296, 36]\nlast line of the page [37, 167, 243, 190]"
    # the hand-over with only the end of a multi-line observation (the model copied the last box)
    steps, _, _ = run([call("Read Page", name), final("Here is what I found: [37, 167, 243, 190]")],
                      "read it", store, tools=tools)
    assert steps[-1].text == f"Here is what I found: {page}"
    # ... or a box alone, not the last one, or two boxes mixed: coordinates say nothing of what is there
    for box in ("[3, 9, 296, 36]", "[3, 167, 243, 36]"):
        steps, _, _ = run([call("Read Page", name), final(f"Here is what I found: {box}")], "read it", store,
                          tools=tools)
        assert steps[-1].text == f"Here is what I found: {page}"
    # an answer of its own that quotes a line, or the whole observation: as written
    for answer in ("The heading says: Heading", f"Here is what I found: {page}"):
        steps, _, _ = run([call("Read Page", name), final(answer)], "read it", store, tools=tools)
        assert steps[-1].text == answer

    def answer(text):
        agent = Agent(NamesItsResult([call("Box Faces", name), final(text)]), ToolRegistry(tools), T)
        steps = [s for s in agent.run("how many faces", Conversation(T), store) if not isinstance(s, Thought)]
        return steps[-1].text, steps[2].name

    # the image without what the tool found on it: the boxes and their count
    text, made = answer("Here is the result: {made}")
    assert text == f"Here is the result: {made}\n2 found:\nface [1, 2, 30, 40]\nface [50, 2, 80, 40]"
    # what was found already said, with or without the boxes: as written
    text, made = answer("Here is the result: {made} face [1, 2, 30, 40] and face [50, 2, 80, 40]")
    assert text == f"Here is the result: {made} face [1, 2, 30, 40] and face [50, 2, 80, 40]"
    text, made = answer("I created {made}, which shows two faces marked with boxes.")
    assert text == f"I created {made}, which shows two faces marked with boxes."
    # asked how many, it names what but no number: the count and the boxes too
    text, made = answer("Here is the result: {made} I found a face.")
    assert text == f"Here is the result: {made} I found a face.\n2 found:\nface [1, 2, 30, 40]\nface [50, 2, 80, 40]"


def test_when_the_model_never_answers_the_turn_ends_with_what_the_tools_did(store, upload):
    name = upload("chelsea.jpg")
    # a text tool on the upload, then nothing readable: what the tool said, never the upload as a result
    steps, _, _ = run([call("Ask", f"{name}, how big?"), "gibberish", "gibberish"], "how big", store, max_retries=1)
    assert steps[-1].text == "I could not finish that. Ask said: The image is 451x300 pixels."
    assert name not in steps[-1].text and steps[-1].images == []
    # an image made, then nothing readable: that image
    steps, _, _ = run([call("Invert The Image", name), "gibberish", "gibberish"], "invert", store, max_retries=1)
    made = steps[2].name
    assert steps[-1].text.endswith(f"The last result is {made}.") and steps[-1].images == [made]


def test_an_earlier_result_is_not_presented_as_this_turns_result(store, upload):
    name = upload("chelsea.jpg")
    conv = Conversation(T)
    steps, _, conv = run([call("Invert The Image", name), final("Inverted.")], "invert it", store, conv)
    old = steps[2].name
    # a text-only tool ran this turn; the answer presents the last turn's image as if just made
    stale = final(f"The inverted photo is ready: {old}")
    steps, llm, _ = run([call("Ask", f"{name}, how big?"), stale, final("It is 451x300 pixels.")],
                        "how big is it", store, conv)
    assert isinstance(steps[2], Error) and "No tool made an image in this turn" in steps[2].message
    assert "The image is 451x300 pixels." in llm.prompts[2]  # told what the tool found
    assert steps[-1].text == "It is 451x300 pixels." and steps[-1].images == []
    # it insists: the tool's words, not the old image
    steps, _, _ = run([call("Ask", f"{name}, how big?")] + [stale] * 3, "how big is it", store, conv)
    assert steps[-1].text == "Ask found: The image is 451x300 pixels." and steps[-1].images == []
    # no tool this turn ("show me that again"): naming an earlier result stays allowed
    steps, _, _ = run([final(f"Here it is again: {old}")], "show it again", store, conv)
    assert steps[-1].text == f"Here it is again: {old}" and steps[-1].images == [old]


def test_the_uploads_of_a_message_are_named_in_it(store, upload):
    first, second = upload("chelsea.jpg"), upload("chelsea.jpg")
    conv = Conversation(T)
    for n in (first, second):
        conv.add_image(n, "a cat")
    steps, llm, conv = run([final("ok")], "and this one?", store, conv, uploads=[second])
    assert f"New input: and this one? ({second})" in llm.prompts[0]
    assert conv.turns[-2].text == f"and this one? ({second})"  # the memory says which image the turn was about
    _, llm, _ = run([final("ok")], f"invert {second}", store, uploads=[second])
    assert f"New input: invert {second}\n" in llm.prompts[0]  # already named: left alone
    _, llm, _ = run([final("ok")], "and this one?", store, uploads=[second], name_uploads=False)
    assert "New input: and this one?\n" in llm.prompts[0]


def test_loops_are_bounded(store, upload):
    name = upload("chelsea.jpg")
    steps, llm, _ = run([call("Invert The Image", name)] * 20, "x", store, max_steps=3, max_retries=2)
    assert sum(isinstance(s, Action) for s in steps) == 1  # the repeat is refused
    assert isinstance(steps[-1], Final) and len(llm.prompts) <= 6
    rambling = ["Thought: hmm " * 50] * 10
    steps, llm, _ = run(rambling, "x", store)
    assert isinstance(steps[-1], Final) and len(llm.prompts) == 3


def test_bad_messages_answered_without_the_model(store):
    for msg in ["", "   ", "x" * 100_000]:
        steps, llm, _ = run([], msg, store)
        assert isinstance(steps[0], Final) and not llm.prompts


def test_unavailable_tool_reports_reason(store):
    steps, _, _ = run([call("Missing", "x"), final("ok")], "x", store, tools=(Missing(),))
    assert not steps[1].ok and "unavailable" in steps[1].text and "no-such-weights" in steps[1].text


def test_history_trimming_keeps_latest_image():
    conv = Conversation(T)
    conv.add_image("image/aaaaaaaa.png", "first")
    for i in range(50):
        conv.add_exchange(f"question {i} " + "word " * 20, "answer")
    conv.add_image("image/bbbbbbbb.png", "second")
    conv.add_exchange("last", "reply")
    text = conv.render(budget_tokens=100, count=lambda s: len(s.split()))
    assert "image/bbbbbbbb.png" in text and "question 0 " not in text and "last" in text
    assert len(text.split()) <= 100


@pytest.mark.parametrize("pieces", [["Thought: x\nObs", "ervation: y"], ["Thought: x\nObservation:", " y"], ["a", "b"]])
def test_stop_stream_never_shows_stop_strings(pieces):
    buf = StopStream(["Observation:"])
    shown = "".join(buf.feed(p) for p in pieces) + buf.flush()
    assert "Observ" not in shown and shown == "".join(pieces).split("Observation:")[0]


def test_the_retrieved_tools_are_offered_for_the_whole_turn(store, upload):
    """With more tools than `offer_tools`, each step of a turn lists the same few tools: the
    ones closest to the message (a word-overlap encoder stands in for the sentence encoder)."""
    import numpy as np

    from gpt4tools.retrieval import ToolRetriever

    vocab = sorted({w for t in ("invert colours", "ask about size", "always fails", "needs weights")
                    for w in t.split()})

    def embed(texts):
        rows = np.array([[float(w in t.lower()) for w in vocab] for t in texts]) + 1e-6
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    tools = (Invert(), Ask(), Crash(), Missing())
    name = upload("chelsea.jpg")
    conv = Conversation(T)
    conv.add_image(name, "a cat")
    llm = ScriptedLLM([call("Invert The Image", name), final("done")])
    agent = Agent(llm, ToolRegistry(tools), T, AgentConfig(offer_tools=1),
                  ToolRetriever([t.spec for t in tools], embed))
    steps = [s for s in agent.run(f"invert the colours of {name}", conv, store) if not isinstance(s, Thought)]
    assert isinstance(steps[-1], Final) and len(llm.prompts) == 2
    for prompt in llm.prompts:
        assert "should be one of [Invert The Image]" in prompt and "> Ask:" not in prompt
    assert llm.prompts[1].startswith(llm.prompts[0])  # step 2 extends step 1: the prefix cache applies
    assert len(agent.offered("")) == 4  # nothing to match: every tool


def test_by_default_every_turn_and_session_shares_the_prompt_head(store, upload):
    """Every available tool is offered in the registry's order (AgentConfig.offer_tools = 0), so a
    turn's prompt begins with all of the previous turn's, up to its new input: the backend
    encodes only the new exchange. Another session's prompts share the head up to the history."""
    tools = ToolRegistry((Invert(), Ask(), Crash(), Missing()))
    name = upload("chelsea.jpg")
    conv = Conversation(T)
    conv.add_image(name, "a cat")
    llm = ScriptedLLM([call("Invert The Image", name), final("done"), final("Hello!")])
    agent = Agent(llm, tools, T)
    assert agent.config.offer_tools == 0 and agent.retriever is None
    list(agent.run(f"invert the colours of {name}", conv, store))
    list(agent.run("thanks, and is it still a cat?", conv, store))
    first, second = llm.prompts[0], llm.prompts[2]
    shared = first[: first.index(react.NEW_INPUT)].rstrip()
    assert second.startswith(shared) and len(shared) > 0.8 * len(first)
    other = Agent(ScriptedLLM([final("Hi")]), tools, T)
    list(other.run("hello", Conversation(T), store))
    head = first[: first.index("Previous conversation:")]
    assert other.llm.prompts[0].startswith(head) and all(f"> {s.name}:" in head for s in tools.specs())
    assert agent.retriever is None  # no sentence encoder loaded for it


# -- constrained decoding ---------------------------------------------------------------------
def test_each_step_is_decoded_under_the_grammar_of_offered_tools_and_session_images(store, upload):
    name = upload("chelsea.jpg")
    steps, llm, _ = run([call("Invert The Image", name), final("done")], f"invert {name}", store)
    made = next(s.name for s in steps if isinstance(s, ImageStep))
    first, second = llm.grammars
    specs = [Invert.spec, Ask.spec, Crash.spec]
    assert first == react.step_grammar([(s.name, [a.kind for a in s.args]) for s in specs], [name])
    assert '"Invert The Image\\nAction Input: "' in first and f'"{name}"' in first
    assert made not in first and f'"{made}"' in second  # the result is a name the next step may use
    assert second == step_grammar(specs, store.names(), T.ai_prefix)


def test_without_images_only_text_tools_can_be_called(store):
    _, llm, _ = run([final("Please upload an image.")], "invert it", store)
    [grammar] = llm.grammars
    assert '"Crash\\nAction Input: "' in grammar and "Invert The Image" not in grammar and "image ::=" not in grammar


def test_unconstrained_config_passes_no_grammar(store, upload):
    name = upload("chelsea.jpg")
    _, llm, _ = run([call("Invert The Image", name), final("done")], "x", store, constrained=False)
    assert llm.grammars == [None, None]


class _NoGrammarLLM:
    """A user's backend written before grammars existed: no `grammar` keyword."""

    name, context_length = "plain", 100_000

    def __init__(self, completions):
        self.completions, self.prompts = list(completions), []

    def stream(self, prompt, *, stop=(), max_new_tokens=256):
        self.prompts.append(prompt)
        yield self.completions.pop(0)

    def count_tokens(self, text):
        return len(text.split())


class _LyingLLM(_NoGrammarLLM):
    """Takes any keyword on paper, refuses `grammar` when called."""

    def stream(self, prompt, **kw):
        if "grammar" in kw:
            raise TypeError("stream() got an unexpected keyword argument 'grammar'")
        return super().stream(prompt, **kw)


@pytest.mark.parametrize("cls", [_NoGrammarLLM, _LyingLLM])
def test_a_backend_without_the_grammar_keyword_still_works(store, upload, caplog, cls):
    name = upload("chelsea.jpg")
    llm = cls([call("Invert The Image", name), call("Fly Away", name), final("done")])
    agent = Agent(llm, ToolRegistry((Invert(), Ask(), Crash())), T)
    with caplog.at_level("WARNING", logger="gpt4tools.agent"):
        steps = [s for s in agent.run("x", Conversation(T), store) if not isinstance(s, Thought)]
    assert isinstance(steps[-1], Final) and steps[-1].text == "done" and len(llm.prompts) == 3
    # what such a backend writes is still validated: the unknown tool became an observation
    assert any(isinstance(s, ObservationStep) and "not a valid tool" in s.text for s in steps)
    warnings = [r for r in caplog.records if "cannot decode under a grammar" in r.getMessage()]
    assert len(warnings) == 1 and not agent.grammar_ok


def test_a_session_survives_bad_input_and_keeps_everything(tmp_path):
    """The conversation issue's bad inputs, one after another in one session: an image name the
    human never uploaded, a request that needs an image before any exists, two uploads in one
    message, a tool that raises. Each gets a clear answer; the session keeps serving and its
    memory keeps every turn."""
    from gpt4tools.paths import assets_dir
    from gpt4tools.session import Session

    script = [final("Please upload an image first."),
              call("Invert The Image", "IMAGE2"), final("Inverted."),
              call("Crash", "now"), final("It is done.")]
    llm = ScriptedLLM(script)
    session = Session(Agent(llm, ToolRegistry((Invert(), Ask(), Crash())), T), root=tmp_path / "s")

    def turn(message):
        steps = [s for s in session.send(message) if not isinstance(s, Thought)]
        assert isinstance(steps[-1], Final)
        return steps

    # a file or a photo named before any upload: answered at once (gpt4tools.references), no model call
    steps = turn("invert image/zzzzzzzz.png")
    assert len(steps) == 1 and "image/zzzzzzzz.png" in steps[0].text and "upload" in steps[0].text
    assert "upload one" in turn("invert my photo")[-1].text and not llm.prompts
    assert turn("invert it")[-1].text == "Please upload an image first."  # nothing to point at: the model answers
    first, second = session.add_image(assets_dir() / "chelsea.jpg"), session.add_image(assets_dir() / "rocket.jpg")
    llm.completions[0] = call("Invert The Image", second)
    steps = turn("invert the second one")
    assert f"New input: invert the second one ({first}, {second})" in llm.prompts[-2]
    assert any(isinstance(s, ImageStep) for s in steps) and steps[-1].text == "Inverted."
    steps = turn("crash it")
    assert "ZeroDivisionError" in steps[1].text and steps[-1].text.startswith("Sorry, that did not work: Crash")
    humans = [t.text for t in session.conversation.turns if t.role == "human" and t.image is None]
    assert humans == ["invert image/zzzzzzzz.png", "invert my photo", "invert it",
                      f"invert the second one ({first}, {second})", "crash it"]
    assert session.store.exists(first) and session.store.exists(second)


class _WarmLLM(ScriptedLLM):
    """A scripted backend that keeps what it was asked to encode ahead (as llama.cpp's warm does)."""

    def __init__(self, completions):
        super().__init__(completions)
        self.warmed: list[str] = []

    def warm(self, prompt: str) -> None:
        self.warmed.append(prompt)


def test_the_next_turns_prompt_head_is_encoded_between_turns(tmp_path):
    from gpt4tools.paths import assets_dir
    from gpt4tools.session import Session

    llm = _WarmLLM([call("Invert The Image", "IMAGE"), final("Inverted."), final("Hi.")])
    agent = Agent(llm, ToolRegistry((Invert(),)), T, AgentConfig(prepare_next=True))
    session = Session(agent, root=tmp_path / "s")
    name = session.add_image(assets_dir() / "chelsea.jpg")  # the announcement is encoded while the human types
    agent._preparing.join()
    assert llm.warmed[-1].endswith("New input: ") and name in llm.warmed[-1]
    llm.completions[0] = call("Invert The Image", name)
    list(session.send("invert it"))
    assert llm.prompts[0].startswith(llm.warmed[0])  # the first step reads on from the encoded head
    agent._preparing.join()
    head = llm.warmed[-1]  # after the turn: the history with its exchange, up to the next message
    assert "Inverted." in head and head.endswith("New input: ")
    list(session.send("hello"))
    assert llm.prompts[-1].startswith(head)
    agent.config.prepare_next = False
    before = len(llm.warmed)
    session.add_image(assets_dir() / "rocket.jpg")
    assert len(llm.warmed) == before


@pytest.mark.parametrize("message", ["what can u do?", "ok whatever. what CAN you do then"])
def test_what_can_you_do_is_answered_from_the_tools_offered(store, message):
    llm = ScriptedLLM([])  # the model is not asked
    agent = Agent(llm, ToolRegistry((Invert(), Ask())), T)
    conversation = Conversation(T)
    steps = list(agent.run(message, conversation, store))
    assert isinstance(steps[-1], Final) and "Invert The Image" in steps[-1].text and "photo" in steps[-1].text
    assert not llm.prompts and conversation.turns[-1].text == steps[-1].text


def test_what_can_you_do_about_something_goes_to_the_model(store):
    llm = ScriptedLLM([final("Upload it and I will upscale it.")])
    steps = list(Agent(llm, ToolRegistry((Invert(),)), T).run("what can you do about the blur", Conversation(T), store))
    assert steps[-1].text == "Upload it and I will upscale it." and len(llm.prompts) == 1


class PhotoInvert(Invert):
    """Invert, declared as an edit (its result is the photo to keep working on)."""
    spec = ToolSpec(name="Invert The Photo", description="useful to invert a photo.",
                    args=(Arg("image_path", "image"),), output="image", slug="pinv", photo_out=True)


def test_a_garbled_result_name_in_the_answer_is_this_turns_result(store, upload):
    name = upload("chelsea.jpg")
    steps, llm, _ = run([call("Invert The Image", name), final("Here is the result: image/zzzz_invert.png")],
                        "invert it", store)
    made = next(s.name for s in steps if isinstance(s, ImageStep))
    assert not any(isinstance(s, Error) for s in steps) and len(llm.prompts) == 2  # no retry
    assert steps[-1].text == f"Here is the result: {made}" and steps[-1].images == [made]


def test_after_an_edit_the_next_turn_works_on_the_result(store, upload):
    name = upload("chelsea.jpg")
    conv = Conversation(T)
    conv.add_image(name, "a cat")
    tools = (PhotoInvert(), Invert(), Ask())
    steps, _, conv = run([call("Invert The Image", name), final("ok")], "invert it", store, conv, tools)
    assert conv.last_photo() is None  # a map or annotation of the photo is not the photo now
    steps, _, conv = run([call("Invert The Photo", name), final("ok")], "invert the photo", store, conv, tools)
    edited = next(s.name for s in steps if isinstance(s, ImageStep))
    assert conv.last_photo() == edited
    _, llm, conv = run([call("Ask", f"{edited}, size?"), final("big")], "how big is it now", store, conv, tools)
    assert f'"{edited}"' in llm.grammars[0] and f'"{name}"' not in llm.grammars[0]  # held to the result
    _, llm, _ = run([final("hi")], "thanks", store, conv, tools)
    conv.add_image(upload("rocket.jpg"), "a rocket")
    assert conv.last_photo() is None  # a new photo since: "it" is the model's call again


def test_a_request_only_an_unavailable_tool_serves_is_answered_with_why(store, upload):
    wanted = ToolSpec(name="Swap Things", description="useful to swap things.", slug="swap", output="image",
                      args=(Arg("image_path", "image"), Arg("old"), Arg("new")), asked_as=(r"\bswap\b",))
    why = Availability(False, "weights 'swapper' are not ready (not fetched)",
                       "python -m gpt4tools weights fetch swapper")
    llm = ScriptedLLM([final("Upload a photo first.")])
    agent = Agent(llm, ToolRegistry((Invert(),)), T, unavailable=[(wanted, why)])
    conversation = Conversation(T)
    steps = list(agent.run("can u swap the cat for a dog", conversation, store))
    assert steps[-1].text == "Upload a photo first." and len(llm.prompts) == 1
    llm.prompts.clear()
    upload("chelsea.jpg")  # no image yet: no edit is asked for ("swap that idea for a better one") ...
    steps = list(agent.run("can u swap the cat for a dog", conversation, store))  # ... but now
    text = steps[-1].text
    assert isinstance(steps[-1], Final) and "can't" in text and "Swap Things" in text
    assert "weights 'swapper' are not ready" in text and "python -m gpt4tools weights fetch swapper" in text
    assert not llm.prompts and conversation.turns[-1].text == text
    # an offered tool that answers to the same words: the model decides
    offered = ToolSpec(name="Swap Faces", description="useful to swap faces.", slug="swapf", output="image",
                       args=(Arg("image_path", "image"),), asked_as=(r"\bswap\b",))

    class SwapFaces(Invert):
        spec = offered

    llm = ScriptedLLM([final("Which photo?")])
    steps = list(Agent(llm, ToolRegistry((SwapFaces(),)), T, unavailable=[(wanted, why)]).run(
        "swap the faces", Conversation(T), store))
    assert steps[-1].text == "Which photo?" and len(llm.prompts) == 1


def test_an_answer_that_repeats_the_loops_correction_is_replaced_by_what_the_tools_said(store, upload):
    name = upload("chelsea.jpg")
    echo = "You just ran exactly this. Use its observation, or answer the human now."
    steps, _, conv = run([call("Ask", f"{name}, size?"), call("Ask", f"{name}, size?"), final(echo)], "how big", store)
    assert any(isinstance(s, Error) and s.message == echo for s in steps)
    assert steps[-1].text.startswith("I could not finish that. Ask said: The image is ")
    assert conv.turns[-1].text == steps[-1].text
