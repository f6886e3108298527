import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt4tools import react
from gpt4tools.prompt import PromptTemplate, builtin_names
from gpt4tools.react import FinalAnswer, ParseError, ToolCall

from fakes import parse_trajectory

line = (
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=60)
    .map(str.strip)
    .filter(lambda s: s and "Observation:" not in s and "AI:" not in s
            and not s.startswith(("Thought:", "Action", "Human:", "New input:")))
)


@given(tool=line, tool_input=line)
def test_call_round_trip(tool, tool_input):
    assert react.parse(react.render_call(ToolCall(tool, tool_input))) == ToolCall(tool, tool_input)


@given(answer=line)
def test_final_round_trip(answer):
    assert react.parse(react.render_final(FinalAnswer(answer))) == FinalAnswer(answer)


@given(st.text(max_size=400))
@settings(max_examples=300)
def test_parse_never_raises(text):
    assert isinstance(react.parse(text), (ToolCall, FinalAnswer, ParseError))
    parse_trajectory(text)
    react.fields(text)


def test_stops_at_observation_and_ignores_imagined_rest():
    text = ("Thought: Do I need to use a tool? Yes\nAction: Edge Detection On Image\n"
            "Action Input: image/abcdefgh.png\nObservation: image/fake.png\n"
            "Thought: Do I need to use a tool? No\nAI: done")
    assert react.parse(text) == ToolCall("Edge Detection On Image", "image/abcdefgh.png")


def test_runaway_answer_is_cut():
    text = "Thought: Do I need to use a tool? No\nAI: 2 + 2 is 4.\nHuman: thanks\nAI: you're welcome"
    assert react.parse(text) == FinalAnswer("2 + 2 is 4.")


def test_errors_are_written_for_the_model():
    yes_no_action = react.parse("Thought: Do I need to use a tool? Yes\nI will look at it.")
    assert isinstance(yes_no_action, ParseError) and "Action:" in yes_no_action.message
    missing_input = react.parse("Thought: Do I need to use a tool? Yes\nAction: Detection\n")
    assert isinstance(missing_input, ParseError) and "Action Input" in missing_input.message
    assert isinstance(react.parse(""), ParseError)


def test_lenient_where_intent_is_clear():
    assert react.parse("Action: Detection\nAction Input: image/a.png") == ToolCall("Detection", "image/a.png")
    assert (react.parse("Thought: Do I need to use a tool? No\nParis is the capital.")
            == FinalAnswer("Paris is the capital."))


def test_trajectory_and_fields():
    steps = [(ToolCall("Edge Detection On Image", "image/abcdefgh.png"),
              "Result saved as image/x1_edge_abcdefgh_abcdefgh.png"),
             (ToolCall("Generate Image Condition On Canny Image", "image/x1_edge_abcdefgh_abcdefgh.png, a red car"),
              "Result saved as image/y.png")]
    text = react.render_trajectory(steps, FinalAnswer("Here it is: image/y.png"))
    traj = parse_trajectory(text)
    assert traj.steps == steps and traj.final == FinalAnswer("Here it is: image/y.png")
    f = react.fields(text)
    assert f.thoughts == ["Yes", "Yes", "No"] and f.actions == [s[0].tool for s in steps] and f.has_ai
    assert react.reference_uses_tool(text) and not react.reference_uses_tool(react.render_final(FinalAnswer("hi")))


@pytest.mark.parametrize("name", builtin_names())
def test_templates_spell_the_format_that_react_writes_and_parses(name):
    """The prompt templates are data, so their format block is prose; this ties it to react's markers."""
    t = PromptTemplate.load(name)
    assert (t.ai_prefix, t.human_prefix) == (react.AI_PREFIX, react.HUMAN_PREFIX)
    block = t.format_instructions.format(tool_names="Tool A, Tool B", ai_prefix=t.ai_prefix)
    lines = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("```")]
    tool_step = lines[lines.index(f"{react.THOUGHT} Yes"):][:4]
    assert [ln.split(":")[0] + ":" for ln in tool_step] == \
        [react.THOUGHT_LABEL, react.ACTION, react.ACTION_INPUT, react.OBSERVATION]
    # the shape render_call writes, line for line
    written = react.render_call(ToolCall("Tool A", "image/a.png")).splitlines()
    assert [ln.split(":")[0] for ln in written] == [ln.split(":")[0] for ln in tool_step]
    answer = lines[lines.index(f"{react.THOUGHT} No") + 1]
    assert answer.startswith(f"{react.AI_PREFIX}:")
    assert react.parse(f"{react.THOUGHT} No\n{answer}") == FinalAnswer("[your response here]")
    assert f"\n{react.NEW_INPUT} {{input}}" in t.suffix  # generation stops at this marker (react.STOP)


# -- the step grammar (constrained decoding) ------------------------------------------------
class _ByteTokenizer:
    """One token per byte, plus an end token: llguidance then matches a grammar against exact text."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]
    special_token_ids = [256]  # the end token is not the text "<eos>"

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


@pytest.fixture(scope="module")
def accepts():
    """accepts(grammar, text): whether `text` is a whole step under the GBNF `grammar`, read by
    llguidance (what the transformers backend enforces it with) through its GBNF converter."""
    llg = pytest.importorskip("llguidance")
    tokenizer = llg.LLTokenizer(llg.TokenizerWrapper(_ByteTokenizer()))

    def check(grammar: str, text: str) -> bool:
        m = llg.LLMatcher(tokenizer, llg.grammar_from("gbnf", grammar), log_level=0)
        assert not m.is_error(), m.get_error()
        return m.consume_tokens(list(text.encode("utf-8"))) and m.is_accepting()

    return check


TOOLS = [("Edge Detection On Image", ["image"]),
         ("Answer Question About The Image", ["image", "text"]),
         ("Replace Something From The Photo", ["image", "text", "text"]),
         ("Generate Image From User Input Text", ["text"])]
IMAGES = ["image/abcdefgh.png", "image/ab12_edge_abcdefgh_abcdefgh.png"]


def step(tool: str, tool_input: str) -> str:
    """A tool step as the constrained model writes it: render_call's text up to the Observation."""
    return react.render_call(ToolCall(tool, tool_input)).removesuffix(react.OBSERVATION)


def test_grammar_accepts_the_trained_format_byte_for_byte(accepts):
    g = react.step_grammar(TOOLS, IMAGES)
    valid = [
        step("Edge Detection On Image", IMAGES[1]),
        step("Answer Question About The Image", f"{IMAGES[0]}, what colour is the cat, and why?"),
        step("Replace Something From The Photo", f"{IMAGES[0]}, the cat, a small dog, sitting"),
        step("Generate Image From User Input Text", "a red car, on a beach"),
        react.render_final(FinalAnswer("Paris is the capital of France.")),
        react.render_final(FinalAnswer("It is 4.")) + "\n",  # the answer may end with its line
    ]
    assert valid[0] == ("Thought: Do I need to use a tool? Yes\nAction: Edge Detection On Image\n"
                        f"Action Input: {IMAGES[1]}\n")
    for text in valid:
        assert accepts(g, text), text
        assert not isinstance(react.parse(text), ParseError)
    for text in valid[:4]:
        assert not accepts(g, text.rstrip("\n")), "a tool step ends with its newline"


@pytest.mark.parametrize("text", [
    step("Detect Object", IMAGES[0]),  # a tool that is not offered
    step("Edge Detection On Imag", IMAGES[0]),  # a near miss
    step("Edge Detection On Image", "image/zzzzzzzz.png"),  # an image that does not exist
    step("Edge Detection On Image", "image/abcdefgh.jpg"),
    step("Edge Detection On Image", f"{IMAGES[0]}, extra"),  # one argument too many
    step("Answer Question About The Image", IMAGES[0]),  # one too few
    step("Answer Question About The Image", f"{IMAGES[0]},what"),  # the separator is ", "
    step("Answer Question About The Image", f"what is it, {IMAGES[0]}"),  # the image comes first
    step("Replace Something From The Photo", f"{IMAGES[0]}, the cat"),  # three arguments, not two
    step("Answer Question About The Image", f"{IMAGES[0]},  what"),  # an argument starts with text
    step("Generate Image From User Input Text", ""),  # arguments are not empty
    "Thought: Do I need to use a tool? Maybe\nAI: hi",
    "Thought: Do I need to use a tool? No\nAI: ",  # an answer is not empty
    "Thought: Do I need to use a tool? No\nAI: two\nlines",
    "Thought: Do I need to use a tool? No\nHuman: hi",
    "Thought: Do I need to use a tool? Yes\nAction: Edge Detection On Image\nAction Input: image/abcdefgh.png\n"
    "Observation:",  # the program writes the observation
    " Thought: Do I need to use a tool? No\nAI: hi",
])
def test_grammar_rejects_invalid_steps(accepts, text):
    assert not accepts(react.step_grammar(TOOLS, IMAGES), text)


def test_grammar_without_images_offers_only_tools_it_can_fill(accepts):
    g = react.step_grammar(TOOLS, [])
    assert "Edge Detection" not in g and "Answer Question" not in g
    assert accepts(g, step("Generate Image From User Input Text", "a cat"))
    assert not accepts(g, step("Edge Detection On Image", IMAGES[0]))
    only_image_tools = react.step_grammar(TOOLS[:2], [])
    assert accepts(only_image_tools, react.render_final(FinalAnswer("Please upload an image first.")))
    assert not accepts(only_image_tools, "Thought: Do I need to use a tool? Yes\n")
    with pytest.raises(ValueError, match="image only first"):
        react.step_grammar([("Bad", ["text", "image"])], IMAGES)


def test_grammar_that_must_call_takes_no_answer(accepts):
    g = react.step_grammar(TOOLS, IMAGES, must_call=True)
    assert accepts(g, step("Edge Detection On Image", IMAGES[0]))
    assert not accepts(g, react.render_final(FinalAnswer("I cannot do that.")))
    # with no tool that can be filled, an answer is still the only way out
    assert accepts(react.step_grammar(TOOLS[:1], [], must_call=True), react.render_final(FinalAnswer("Upload one.")))


def test_grammar_escapes_names(accepts):
    odd = 'Say "Hi" \\ to Ünïcode\ttab'
    g = react.step_grammar([(odd, ["text"])], ['image/a"b.png'])
    assert r'"Say \"Hi\" \\ to Ünïcode\ttab\nAction Input: "' in g
    assert accepts(g, step(odd, "hello"))
    assert not accepts(g, step('Say "Hi" \\ to Ünïcode tab', "hello"))


_name = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=30).map(
    str.strip).filter(lambda s: s and "Observation:" not in s)
_arg_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x85\u2028\u2029"),
                    min_size=1, max_size=30)


@given(names=st.lists(_name, min_size=1, max_size=4, unique=True), data=st.data(),
       images=st.lists(st.from_regex(r"image/[A-Za-z0-9_\-.]{1,12}\.png", fullmatch=True), min_size=1,
                       max_size=3, unique=True))
@settings(max_examples=60, deadline=None)
def test_every_rendered_valid_step_parses_under_the_grammar(accepts, names, data, images):
    """Any names (quotes, backslashes, unicode: escaped), any argument text the contract allows."""
    kinds = [data.draw(st.sampled_from([["image"], ["image", "text"], ["image", "text", "text"], ["text"]]))
             for _ in names]
    g = react.step_grammar(list(zip(names, kinds)), images)
    i = data.draw(st.integers(0, len(names) - 1))
    values = []
    for j, kind in enumerate(kinds[i]):
        if kind == "image":
            values.append(data.draw(st.sampled_from(images)))
        else:
            last = j == len(kinds[i]) - 1
            text = data.draw(_arg_text.filter(lambda s, last=last: s[0] != " " and (last or "," not in s)))
            values.append(text)
    text = step(names[i], ", ".join(values))
    assert accepts(g, text), (g, text)
    if all(not v.startswith(("Thought:", "Action", "Human:", "New input:", "AI:")) for v in values):
        parsed = react.parse(text)
        assert isinstance(parsed, ToolCall) and parsed.tool == names[i]
    assert not accepts(g, step(names[i] + "x" if names[i] + "x" not in names else "zz" + names[i], ", ".join(values)))


def test_a_decoder_under_the_grammar_can_only_write_valid_steps(accepts):
    """gpt4tools.llm.grammar's mask on a toy byte-level 'model' that wants to call a tool that is
    not offered, on an image that does not exist: greedy decoding under the mask writes a valid step."""
    pytest.importorskip("llguidance")
    import llguidance
    import numpy as np

    from gpt4tools.llm.grammar import Grammars, LlamaLogits

    grammars = Grammars(llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteTokenizer())), 257, [256])
    g = react.step_grammar(TOOLS, IMAGES)
    wanted = step("Detect Object", "image/zzzzzzzz.png").encode()
    for want in (wanted, react.render_final(FinalAnswer("hi\nthere")).encode()):
        mask, ids = LlamaLogits(grammars, g), [1, 2, 3]  # a "prompt"
        while ids[-1] != 256 and len(ids) < 200:
            scores = np.zeros(257, dtype=np.float32)
            scores[ord("a"):ord("z") + 1] = 1.0  # its second choice, anywhere: a letter
            n = len(ids) - 3
            if n < len(want):
                scores[want[n]] = 10.0  # what the model would write
            else:
                scores[[256, 10]] = [10.0, 5.0]  # the end, or else the end of the line
            ids.append(int(np.argmax(mask(np.array(ids), scores))))
        text = bytes(ids[3:-1]).decode()
        assert ids[-1] == 256 and accepts(g, text), text
        if want is wanted:
            call = react.parse(text)
            assert isinstance(call, ToolCall) and call.tool in dict(TOOLS), text
            assert call.tool_input.split(", ")[0] in IMAGES, text
        else:
            assert text == "Thought: Do I need to use a tool? No\nAI: hi\n"  # the answer ends at its line
