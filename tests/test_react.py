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
