"""The ReAct text format (REFERENCE.md §1): written and read here, and nowhere else.

The agent parses completions with `parse`, the data builder writes samples with
`render_call`/`render_final`/`render_observation`, and the scorer extracts the paper's
fields with `fields` (the original regexes, so benchmark numbers stay comparable). `step_grammar` writes
the same format as a GBNF grammar, so that a constrained decoder can only write valid steps.

    Thought: Do I need to use a tool? Yes
    Action: <tool name>
    Action Input: <arguments joined by ", ">
    Observation: <filled in by the program>

    Thought: Do I need to use a tool? No
    AI: <answer>
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

THOUGHT_LABEL = "Thought:"
THOUGHT = f"{THOUGHT_LABEL} Do I need to use a tool?"
ACTION = "Action:"
ACTION_INPUT = "Action Input:"
OBSERVATION = "Observation:"
AI_PREFIX = "AI"
HUMAN_PREFIX = "Human"
NEW_INPUT = "New input:"  # the prompt's line before the user's message (templates/*.json use it)

# Generation stops here: the program, not the model, writes observations. The others
# catch a model that runs on into the next turn of the conversation.
STOP = (OBSERVATION, f"\n{HUMAN_PREFIX}:", f"\n{NEW_INPUT}")
# A final answer also ends where the model starts another thought.
_ANSWER_ENDS = (*STOP, f"\n{THOUGHT_LABEL}")

# The paper's scorer regexes (eval/evaluate_result.py), kept verbatim.
_THOUGHT_RE = re.compile(r"Thought: Do I need to use a tool\? (.*)")
_ACTION_RE = re.compile(r"Action: (.*)")
_INPUT_RE = re.compile(r"Action Input: (.*)")
_AI_RE = re.compile(r"AI: (.*)")


@dataclass(frozen=True)
class ToolCall:
    tool: str
    tool_input: str


@dataclass(frozen=True)
class FinalAnswer:
    text: str


@dataclass(frozen=True)
class ParseError:
    """The completion could not be read. `message` is written for the model to act on."""

    message: str
    raw: str = ""


Decision = ToolCall | FinalAnswer


# -- writing ---------------------------------------------------------------------------
def render_call(call: ToolCall) -> str:
    """A tool step as the model writes it, ending where generation stops."""
    return f"{THOUGHT} Yes\n{ACTION} {call.tool}\n{ACTION_INPUT} {call.tool_input}\n{OBSERVATION}"


def render_observation(text: str) -> str:
    """What the program appends after `render_call`, closing the step."""
    return f" {text.strip()}\n"


def render_final(answer: FinalAnswer, ai_prefix: str = AI_PREFIX) -> str:
    return f"{THOUGHT} No\n{ai_prefix}: {answer.text.strip()}"


def render_step(call: ToolCall, observation: str) -> str:
    """A finished tool step, as it appears in a scratchpad."""
    return render_call(call) + render_observation(observation)


def render_trajectory(steps: list[tuple[ToolCall, str]], final: FinalAnswer | None = None) -> str:
    text = "".join(render_step(c, o) for c, o in steps)
    return text + (render_final(final) if final else "")


# -- reading ---------------------------------------------------------------------------
def _line_after(text: str, prefix: str) -> str | None:
    """The rest of the first line starting with `prefix` (at a line start), else None."""
    m = re.search(rf"(?m)^[ \t]*{re.escape(prefix)}[ \t]*(.*)$", text)
    return m.group(1).strip() if m else None


def parse(completion: str, ai_prefix: str = AI_PREFIX) -> Decision | ParseError:
    """Read the model's next decision from a completion. Never raises.

    Lenient where intent is clear (a missing Thought line before a well-formed
    Action, an answer after "No" without the "AI:" prefix); strict where guessing
    would run the wrong tool.
    """
    if not isinstance(completion, str):
        return ParseError("the model returned no text", raw=repr(completion))
    text = completion.split(OBSERVATION, 1)[0]  # anything after is the model imagining
    thought = _line_after(text, THOUGHT)
    action = _line_after(text, ACTION)
    answer_m = re.search(rf"(?m)^[ \t]*{re.escape(ai_prefix)}:[ \t]?", text)

    wants_tool = thought is not None and thought.lower().startswith("yes")
    no_tool = thought is not None and thought.lower().startswith("no")

    if action is not None and not no_tool:
        if not action:
            return ParseError("'Action:' must be followed by a tool name.", completion)
        tool_input = _line_after(text, ACTION_INPUT)
        if tool_input is None:
            return ParseError(f"After 'Action: {action}' write 'Action Input: <the input>' on the next line.",
                              completion)
        return ToolCall(action, tool_input)
    if wants_tool:
        return ParseError(
            "You answered Yes but gave no 'Action:' line. Write 'Action: <tool name>' and 'Action Input: <input>'.",
            completion,
        )
    if answer_m is not None:
        answer = _cut_runaway(text[answer_m.end():])
        if answer:
            return FinalAnswer(answer)
        return ParseError(f"'{ai_prefix}:' must be followed by your answer.", completion)
    if no_tool:
        rest = _cut_runaway(text.split(thought, 1)[1] if thought else "")
        if rest:
            return FinalAnswer(rest)
    return ParseError(
        f"Could not read your reply. Start with '{THOUGHT} Yes' and an 'Action:' line, "
        f"or '{THOUGHT} No' and '{ai_prefix}: <answer>'.",
        completion,
    )


def _cut_runaway(text: str) -> str:
    """An answer ends where the model starts writing the next turn or a new thought."""
    for marker in _ANSWER_ENDS:
        text = text.split(marker, 1)[0]
    return text.strip()


# -- the grammar of one step -------------------------------------------------------------
def step_grammar(tools: Sequence[tuple[str, Sequence[str]]], images: Sequence[str],
                 ai_prefix: str = AI_PREFIX, must_call: bool = False) -> str:
    """One step the model may write, as a GBNF grammar (llama.cpp's format; xgrammar and
    llguidance read it too). The completion continues the prompt's scratchpad at a line start:

        Thought: Do I need to use a tool? Yes\nAction: <tool>\nAction Input: <arguments>\n
        Thought: Do I need to use a tool? No\n<ai_prefix>: <answer>[\n]

    and then ends (the program writes the Observation). `tools`: (exact name, argument kinds)
    for each tool offered, kinds "image" or "text", image first (the tool contract, gpt4tools.tool).
    Arguments are joined by ", "; an image argument is one of `images`; a text argument is
    non-empty text on one line, without "," unless it is the last (the last takes the rest, as
    ToolSpec.split_input reads it). A tool whose image argument cannot be filled (no `images`)
    is left out; with no tool left, only "No" can follow the Thought. `must_call`: only "Yes" and a
    call may follow it (where a tool is left).
    """
    names = list(dict.fromkeys(images))
    calls: list[str] = []
    seen: set[str] = set()
    for name, kinds in tools:
        kinds = list(kinds)
        if any(k not in ("image", "text") for k in kinds) or "image" in kinds[1:]:
            raise ValueError(f"{name}: argument kinds must be 'image' or 'text', an image only first: {kinds}")
        if name in seen or not kinds or ("image" in kinds and not names):
            continue
        seen.add(name)
        parts = ["image" if k == "image" else "text-last" if i == len(kinds) - 1 else "text-part"
                 for i, k in enumerate(kinds)]
        calls.append(gbnf_literal(name + "\n" + ACTION_INPUT + " ") + " " + ' ", " '.join(parts))
    newline = gbnf_literal("\n")
    branches = " call" if calls and must_call else " (call | final)" if calls else " final"
    rules = ["root ::= " + gbnf_literal(THOUGHT + " ") + branches,
             "final ::= " + gbnf_literal("No\n" + ai_prefix + ": ") + f" line {newline}?"]
    if calls:
        rules += ["call ::= " + gbnf_literal("Yes\n" + ACTION + " ") + f" tool {newline}",
                  "tool ::= " + " | ".join(calls)]
    body = " ".join(calls)
    if " image" in body:
        rules.append("image ::= " + " | ".join(gbnf_literal(n) for n in names))
    if " text-part" in body:
        rules.append("text-part ::= [^\\n, ] [^\\n,]*")  # an argument before another: no comma
    if " text-last" in body:
        rules.append("text-last ::= line")
    rules.append("line ::= [^\\n ] [^\\n]*")  # non-empty, on one line, no leading space
    return "\n".join(rules) + "\n"


def gbnf_literal(text: str) -> str:
    """A GBNF string literal: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Fields:
    """The paper scorer's view of an output: every thought, action and input, stripped."""

    thoughts: list[str]
    actions: list[str]
    inputs: list[str]
    has_ai: bool

    @property
    def uses_tool(self) -> bool:
        return bool(self.actions) and bool(self.inputs)


def fields(text: str) -> Fields:
    return Fields(
        thoughts=[t.strip() for t in _THOUGHT_RE.findall(text)],
        actions=[a.strip() for a in _ACTION_RE.findall(text)],
        inputs=[i.strip() for i in _INPUT_RE.findall(text)],
        has_ai=bool(_AI_RE.search(text)),
    )


def reference_uses_tool(text: str) -> bool:
    """The paper's test for a tool-using reference: both markers present."""
    return ACTION in text and ACTION_INPUT in text
