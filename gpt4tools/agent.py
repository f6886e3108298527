"""The ReAct loop. It yields typed steps; the UI and CLI only render them.

The model's mistakes (unreadable output, unknown tools, bad arguments, file names that
do not exist) become observations it can correct, within a bounded number of retries.
A tool that crashes also becomes an observation (and a logged traceback), so one bad
call never takes the app down. Backend failures (the LLM itself erroring) are raised.

Constrained decoding (AgentConfig.constrained, on by default): each step is decoded under
`react.step_grammar` for the tools offered this turn and the images of the session, so the
model can only write an offered tool, an existing image name and the argument count the
tool's contract says. Backends that cannot take a grammar decode freely, and the parse and
validation above still catch what they write.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence, Union

from gpt4tools import react, references, unserved
from gpt4tools.history import Conversation
from gpt4tools.images import NAME_RE, ImageStore, original_upload
from gpt4tools.llm import LLM
from gpt4tools.prompt import PromptTemplate
from gpt4tools.registry import ToolRegistry, UnknownToolError
from gpt4tools.retrieval import ToolRetriever
from gpt4tools.tool import INPUT_ERRORS, Availability, ToolSpec, result_saved

log = logging.getLogger(__name__)


# -- steps -----------------------------------------------------------------------------
@dataclass
class Thought:
    """The model's text so far in this step (streamed: many updates, the last complete)."""

    text: str


@dataclass
class Action:
    tool: str
    tool_input: str


@dataclass
class ObservationStep:
    tool: str
    text: str
    ok: bool = True


@dataclass
class ImageStep:
    name: str  # as the model sees it, e.g. "image/ab12_edge_abcdefgh_abcdefgh.png"
    path: str  # on disk, for the UI


@dataclass
class Final:
    text: str
    images: list[str] = field(default_factory=list)  # image names the answer mentions (all exist)
    steps: int = 0
    seconds: float = 0.0


@dataclass
class Error:
    """Unusable model output or a stopped loop; `message` is what the model was told."""

    message: str


Step = Union[Thought, Action, ObservationStep, ImageStep, Final, Error]


@dataclass
class AgentConfig:
    max_steps: int = 5  # tool calls per turn
    max_retries: int = 2  # corrective observations for unusable output, per turn
    max_new_tokens: int = 256
    max_input_chars: int = 8000  # longer messages are refused with a clear answer
    # Tools offered per turn: 0 offers every available tool, in the registry's fixed order, so
    # that the prompt's head (prefix, tool lines, format block) is the same in every turn and
    # session and its keys/values are computed once; k > 0 offers the k closest to the message
    # (retrieval.py), as the paper's prompts offered 2-5. On the conversation benchmark all 18
    # offline tools scored as well as the 5 closest (62.3 against 61.7 % of 183 turns, right
    # image 75.2 against 73.0 %) while a turn's first token came ~3x sooner
    # (docs/benchmark.md, "Turn speed").
    offer_tools: int = 0
    # Decode each step under the grammar of valid steps (react.step_grammar) where the backend can.
    constrained: bool = True
    # Name the images uploaded with a message in it ("and this one? (image/ab12.png)"), so that
    # "this" resolves to the newest upload rather than to whatever the history mentions last.
    name_uploads: bool = True
    # Between turns, encode the next prompt up to the human's message in the background (backends
    # with `warm`: llama.cpp, transformers), so that a turn's first step reads only the message and what
    # follows: first token 1.07 -> 0.49 s (docs/benchmark.md). Its thread is not a daemon: as a daemon,
    # a process that ended right after a turn crashed in 4 of 9 runs (the interpreter finalised under a
    # decode still in native code), and in 0 of 11 as it is (scripts/stress_prepare_exit.py).
    prepare_next: bool = True


def step_grammar(specs: Sequence[ToolSpec], images: Sequence[str], ai_prefix: str = react.AI_PREFIX,
                 must_call: bool = False) -> str:
    """The grammar of one step for these tools (their argument kinds from the tool contract)
    and these image names: the one place the contract meets react's grammar."""
    return react.step_grammar([(s.name, [a.kind for a in s.args]) for s in specs], images, ai_prefix, must_call)


class Agent:
    def __init__(self, llm: LLM, tools: ToolRegistry, template: PromptTemplate | None = None,
                 config: AgentConfig | None = None, retriever: ToolRetriever | None = None,
                 unavailable: Sequence[tuple[ToolSpec, Availability]] = ()):
        self.llm = llm
        self.tools = tools  # the tools the model may use: available ones
        self.unavailable = list(unavailable)  # the others, with why: "swap the cat for a dog" gets that answer
        self.template = template or PromptTemplate.load()
        self.config = config or AgentConfig()
        self.retriever = retriever  # made on first use (it loads a sentence encoder)
        self.grammar_ok = _takes_grammar(llm)  # False once the backend turned a grammar down
        self._warned = False
        self._preparing: threading.Thread | None = None

    def offered(self, user_input: str) -> list[ToolSpec]:
        """The tools this turn's prompt lists (fixed for the turn, so each step's prompt
        extends the last and the backend reuses its cache)."""
        specs = self.tools.specs()
        k = self.config.offer_tools
        if k <= 0 or k >= len(specs):
            return specs
        try:
            if self.retriever is None:
                self.retriever = ToolRetriever(specs)
            return self.retriever.select(user_input, k)
        except ImportError as e:  # a broken install: serve with every tool rather than not at all
            log.warning("tool retrieval unavailable (%s); offering all %d tools", e, len(specs))
            self.config.offer_tools = 0
            return specs

    def warm_up(self) -> None:
        """Do now what the first message would wait for: load the tool retriever (its sentence
        encoder takes a few seconds) where tools are retrieved; where every tool is offered, encode
        the prompt's head that every turn shares (~1,500 tokens, ~5 s on 2 cores) on backends that
        keep it (an optional `warm(prompt)`: llama.cpp's)."""
        self.offered("warm up")
        warm = getattr(self.llm, "warm", None)
        if self.config.offer_tools <= 0 and warm is not None:
            warm(self.prompt(Conversation(self.template), ""))

    def prepare(self, conversation: Conversation) -> None:
        """Start encoding the next turn's prompt, up to where the human's message goes, in the
        background: called when a turn ends and when an upload is announced, so the keys/values of
        the history (the last answer, the new image's announcement) are ready before the human
        has typed. Only where every tool is offered (the head does not depend on the message) and
        the backend keeps what it encoded (`warm`). A turn that starts meanwhile waits for the
        backend's lock, as it would for another session's turn."""
        warm = getattr(self.llm, "warm", None)
        if warm is None or not self.config.prepare_next or self.config.offer_tools > 0:
            return
        if self._preparing is not None and self._preparing.is_alive():
            self._preparing.join()  # one at a time: this one then starts from what that one encoded
        text = self.prompt(conversation, _MESSAGE_GOES_HERE)
        head = text[: text.index(_MESSAGE_GOES_HERE)]
        # Not a daemon: at exit the interpreter waits for it (about a second) instead of freeing the
        # model under a decode still running in C, which crashed a process that ended right after a turn.
        self._preparing = threading.Thread(target=_warm_quietly, args=(warm, head), daemon=False)
        self._preparing.start()

    def prompt(self, conversation: Conversation, user_input: str, scratchpad: str = "",
               offered: list[ToolSpec] | None = None) -> str:
        specs = self.offered(user_input) if offered is None else offered
        skeleton = self.template.render(specs, "", user_input, scratchpad)
        budget = self.llm.context_length - self.config.max_new_tokens - self.llm.count_tokens(skeleton)
        history = conversation.render(max(budget, 0), self.llm.count_tokens)
        return self.template.render(specs, history, user_input, scratchpad)

    def step_grammar(self, offered: Sequence[ToolSpec], store: ImageStore, meant: str | None = None,
                     must_call: bool = False) -> str | None:
        """The grammar this step decodes under, or None (unconstrained): the offered tools,
        the images that exist in the session now (or only `meant`, the one the message named),
        the template's AI prefix; `must_call`: a call, not an answer ("same for this")."""
        if not self.config.constrained:
            return None
        return step_grammar(offered, [meant] if meant else store.names(), self.template.ai_prefix, must_call)

    def _stream(self, prompt: str, grammar: str | None) -> Iterator[str]:
        kw = dict(stop=react.STOP, max_new_tokens=self.config.max_new_tokens)
        if grammar is not None and not self.grammar_ok:
            self._warn_unconstrained("its stream() takes no grammar keyword")
        if grammar is None or not self.grammar_ok:
            return self.llm.stream(prompt, **kw)
        try:
            return self.llm.stream(prompt, grammar=grammar, **kw)
        except TypeError as e:  # a custom backend without the keyword (the signature did not tell)
            if "grammar" not in str(e):
                raise
            self.grammar_ok = False
            self._warn_unconstrained(str(e))
            return self.llm.stream(prompt, **kw)

    def _warn_unconstrained(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s cannot decode under a grammar (%s): steps are decoded unconstrained and validated",
                        getattr(self.llm, "name", type(self.llm).__name__), why)

    def run(self, user_input: str, conversation: Conversation, store: ImageStore,
            uploads: Sequence[str] = ()) -> Iterator[Step]:
        """One turn. `uploads`: the images the human uploaded with this message (newest last)."""
        yield from self._turn(user_input, conversation, store, uploads)
        self.prepare(conversation)

    def _turn(self, user_input: str, conversation: Conversation, store: ImageStore,
              uploads: Sequence[str]) -> Iterator[Step]:
        t0 = time.perf_counter()
        message = (user_input or "").strip()
        refusal = self._refuse(message)
        if refusal:
            yield Final(refusal)
            return
        offered = self.offered(message)  # retrieval sees the human's words only
        user_input = self.template.new_input(message, uploads if self.config.name_uploads else ())
        scratchpad, retries, calls, made, failure = "", 0, [], [], None
        # "describe the 2nd one", "go back to the cat one": the image the message means, for the first
        # call's image argument; or an answer at once ("do the same for dog.png": there is no dog.png)
        images = store.names()
        meaning = references.resolve(
            message, uploads, [n for n in images if store.is_upload(n)], images,
            originals={v: k for k, v in store.uploaded_as.items()}, notes=conversation.notes(),
            last_used=conversation.last_used(), last_tool=conversation.last_tool(),
            last_photo=conversation.last_photo(),
            makes_images=any(s.output == "image" and not s.needs_image for s in offered))
        # "what can u do?": the tools' own names, not a small model's guess; "swap the cat for a dog"
        # without inpainting weights: why not, not the nearest tool's output
        at_once = (meaning.answer or (self.capabilities() if CAPABILITIES.search(message) else None)
                   or unserved.answer(message, offered, self.unavailable, bool(images)))
        if at_once:
            conversation.add_exchange(user_input, at_once)
            yield Final(at_once, [], 0, time.perf_counter() - t0)
            return
        meant = meaning.image
        # "same for this": the first step must call the tool the last turn called (if still offered)
        again = [s for s in offered if s.name == meaning.tool]

        def remember(text: str) -> None:  # the turn's exchange, with the upload its first call worked on
            inputs = [m.group(0) for m in (NAME_RE.search(c.tool_input) for c in calls) if m]
            used = original_upload(inputs[0]) if inputs else None
            tool = self.tools.canonical(calls[0].tool) if calls else None
            conversation.add_exchange(user_input, text, used if used and store.exists(used) else None, tool,
                                      photos[-1] if photos else None)

        observed: list[str] = []  # what the tools said this turn, in order
        photos: list[str] = []  # the images this turn's edits and generations made (not maps or annotations)
        corrections: list[str] = []  # what the loop told the model about its unusable steps
        for _ in range(self.config.max_steps + self.config.max_retries + 1):
            completion = ""
            # per step: a tool may have made an image, and the first call may be held to `meant`
            grammar = self.step_grammar(offered, store) if calls else \
                self.step_grammar(again or offered, store, meant, must_call=bool(again))
            for piece in self._stream(self.prompt(conversation, user_input, scratchpad, offered), grammar):
                completion += piece
                yield Thought(completion)
            decision = react.parse(completion, self.template.ai_prefix)

            problem = None
            if isinstance(decision, react.ParseError):
                problem = decision.message
            elif isinstance(decision, react.FinalAnswer) and _echoes(decision.text, corrections):
                # "AI: You just ran exactly this. Use its observation...": our words to it are no answer
                text = _fallback_answer(calls, made, observed)
                remember(text)
                yield Final(text, _results(text, store), len(calls), time.perf_counter() - t0)
                return
            elif isinstance(decision, react.FinalAnswer):
                misspelt = [n for n in _image_names(decision.text) if not store.exists(n)]
                if misspelt and made:  # "Here is the result: image/<a name it garbled>": it means this turn's result
                    decision = react.FinalAnswer(_replace_names(decision.text, misspelt, made[-1]))
                named = _image_names(decision.text)
                missing = [n for n in named if not store.exists(n)]
                # presented as this request's result though no tool made it: the human's upload, or
                # (when this turn's tools ran and made no image) an image of an earlier turn
                posed = ([] if missing or made or not CLAIM.search(decision.text)
                         else [n for n in named if store.is_upload(n) or (calls and not ADMITS.search(decision.text))])
                if not missing and not posed:
                    text = _completed(_honest(decision.text, failure, made), observed, made, message)
                    remember(text)
                    yield Final(text, _results(text, store), len(calls), time.perf_counter() - t0)
                    return
                stale = [n for n in posed if not store.is_upload(n)]  # earlier turns' results, not uploads
                if missing:
                    problem = (f"{', '.join(missing)} does not exist. Only mention files that exist: "
                               f"{', '.join(store.names()[-5:]) or 'none'}.")
                elif not stale:  # "The dog is ready: <upload>"
                    problem = (f"{', '.join(posed)} is the human's upload, not a result: no tool made an image "
                               f"for this request. Say what the tools found, or that it did not work.")
                else:  # "The line map is ready: <an earlier turn's result>" after a text-only tool
                    problem = (f"No tool made an image in this turn, so {', '.join(posed)} is not its result. "
                               f"Tell the human what the tools found: {observed[-1]}")
                if retries >= self.config.max_retries:  # give up correcting: strip the names
                    honest = _honest(decision.text, failure, made)
                    if honest != decision.text:  # the last call failed: say what failed
                        text = honest
                    elif stale:  # (missing names leave nothing posed)
                        text = f"{calls[-1].tool} found: {observed[-1]}"  # what this turn's tool said
                    elif not made and CLAIM.search(decision.text):  # not "X is ready: (no such file)"
                        text = NOTHING_MADE
                    else:
                        text = _strip_names(decision.text, missing + posed)
                    remember(text)
                    yield Final(text, _results(text, store), len(calls), time.perf_counter() - t0)
                    return
            elif len(calls) >= self.config.max_steps:
                problem = f"The step limit ({self.config.max_steps} tool calls) is reached. Answer now without tools."
            elif calls and calls[-1] == decision:
                problem = "You just ran exactly this. Use its observation, or answer the human now."
            if problem is not None:
                corrections.append(problem)
                retries += 1
                yield Error(problem)
                if retries > self.config.max_retries:
                    break
                scratchpad += completion.rstrip() + "\n" + react.OBSERVATION + react.render_observation(problem)
                continue

            calls.append(decision)
            yield Action(decision.tool, decision.tool_input)
            obs_text, ok, image = self.observe(decision, store)
            failure = None if ok else (decision.tool, obs_text)
            observed.append(obs_text)
            yield ObservationStep(decision.tool, obs_text, ok)
            if image:
                made.append(image)
                if self._makes_photo(decision.tool):
                    photos.append(image)
                yield ImageStep(image, str(store.resolve(image)))
            scratchpad += react.render_step(decision, obs_text)

        text = _fallback_answer(calls, made, observed)
        remember(text)
        yield Final(text, _results(text, store), len(calls), time.perf_counter() - t0)

    # -- helpers -------------------------------------------------------------------------
    def _refuse(self, user_input: str) -> str | None:
        if not user_input:
            return "Please type a message (you can also upload an image first)."
        if len(user_input) > self.config.max_input_chars:
            return (f"Your message is {len(user_input):,} characters long; the limit is "
                    f"{self.config.max_input_chars:,}. Please shorten it.")
        return None

    def _makes_photo(self, name: str) -> bool:
        key = self.tools.canonical(name)
        return key is not None and self.tools[key].spec.photo_out

    def capabilities(self) -> str:
        """What this agent can do, from the tools it offers (the registry's own names)."""
        specs = self.tools.specs()
        on_photos = [s.name for s in specs if s.needs_image]
        from_words = [s.name for s in specs if not s.needs_image]
        text = (f"I work on your photos with these tools: {', '.join(on_photos)}. Upload a photo (the image button, "
                "or drag it into the chat) and tell me what to do with it.")
        if from_words:
            text += f" Without a photo I can use: {', '.join(from_words)}."
        return text + " Questions that need no tool I answer myself."

    def observe(self, call: react.ToolCall, store: ImageStore) -> tuple[str, bool, str | None]:
        """Run one call as the loop does: (observation text, ok, image made). The model's mistakes
        (unknown tool, bad input) and tool crashes become observations; the data builder writes
        its repair samples from the same texts."""
        try:
            tool = self.tools.resolve(call.tool)
        except UnknownToolError as e:
            return str(e), False, None
        try:
            obs = tool(call.tool_input, store)
            return obs.text, obs.ok, obs.image
        except INPUT_ERRORS as e:
            return f"Error: {e}", False, None
        except Exception as e:  # a bug in the tool: keep serving, tell the model, log it
            log.exception("tool %s crashed on %r", tool.spec.name, call.tool_input)
            return f"Error: {tool.spec.name} failed ({type(e).__name__}: {e})", False, None


_MESSAGE_GOES_HERE = "\x00"  # where the next human message will go in a prepared prompt


def _warm_quietly(warm, head: str) -> None:
    """Encode `head` (a speed-up only: a failure is logged, and the next turn encodes it itself)."""
    try:
        warm(head)
    except Exception:
        log.exception("preparing the next turn's prompt failed")


def _echoes(answer: str, corrections: list[str]) -> bool:
    """Whether an answer repeats one of the loop's corrections instead of answering the human."""
    said = re.sub(r"\s+", " ", answer).strip().lower()
    # a short answer ("Done.") may well be part of a correction by chance: only sentences count
    return len(said) >= 20 and any(said in c.lower() or c.lower() in said for c in corrections)


def _fallback_answer(calls: list, made: list[str], observed: list[str]) -> str:
    """When the model never gave a usable answer: what this turn's tools produced or said. Only
    images they made: an image the scratchpad names may be the human's upload, not a result."""
    if made:
        return f"I could not finish in {len(calls)} steps. The last result is {made[-1]}."
    if calls:
        return f"I could not finish that. {calls[-1].tool} said: {observed[-1]}"
    return "Sorry, I could not work out how to do that. Could you rephrase the request?"


# "what can u do?", "ok whatever. what CAN you do then": the whole question, not "what can you do about the blur"
CAPABILITIES = re.compile(r"\bwhat\s+(?:else\s+)?(?:can|could)\s+(?:u|you|ya)\s+(?:do|help with)"
                          r"(?:\s+(?:then|now|here|exactly|for me|anyway))?\s*[?!.]*\s*$", re.I)
# Words with which an answer presents an image as the outcome of the request.
CLAIM = re.compile(r"\b(ready|saved|here (?:is|it is)|here's|done|result|created|generated|made|produced|"
                   r"edited|marked|masked|removed|replaced)\b", re.I)
NOTHING_MADE = "Sorry, I did not manage to make an image for that. Could you say which image and what to do with it?"
# Words with which an answer admits that something did not work.
ADMITS = re.compile(r"\b(fail(?:ed|s)?|error|could ?not|couldn't|can ?not|can't|unable|sorry|"
                    r"not (?:able|available|possible|found|valid)|did not|didn't|no such)\b", re.I)


def _honest(text: str, failure: tuple[str, str] | None, made: list[str]) -> str:
    """The answer, unless the turn's last call failed, nothing was made, and the answer does not
    say so: then what failed (the model may not present a failure as a success)."""
    if failure is None or made or ADMITS.search(text):
        return text
    tool, observation = failure
    reason = observation.removeprefix("Error:").strip().rstrip(".")
    return f"Sorry, that did not work: {tool} failed ({reason})."


# An answer that only announces what follows ("The result:", "Here is what I found:"): the
# model stopped before copying the observation (its one-line answer meets the observation's line).
LEAD_IN = re.compile(r"^[^\n]{0,60}:$")


# The phrases with which the training answers hand over a tool's words ("Here is what I found: ...").
HANDOVER = re.compile(r"^(?:here is what i found|here's what i found|here is the result|the result)$", re.I)
BOX_LINE = re.compile(r"^(.+?) \[\d+, \d+, \d+, \d+\]$")  # tool.format_boxes' lines
HOW_MANY = re.compile(r"\bhow\s+many\b|\bcount\b|\bnumber\s+of\b", re.I)
NUMBER = re.compile(r"\d|\b(?:no|none|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
                    r"dozens?|several)\b", re.I)
BARE_BOX = re.compile(r"\[\d+, \d+, \d+, \d+\]")  # a box's coordinates without what is in it


def _completed(text: str, observed: list[str], made: list[str], message: str = "") -> str:
    """The answer, completed with the tool's own words where the model stopped short of them:
    only what a tool said is added, never anything else.
    - only a lead-in ("The result:"): the lead-in and the last observation;
    - a hand-over with the end of a multi-line observation ("Here is what I found: [37, 167, 243, 190]",
      the last box of a page the OCR read), or with a box's coordinates alone (any box, or a mix of
      two: they say nothing of what is in it): the whole observation;
    - this turn's image presented without the boxes the tool found on it ("Here is the result:
      image/x.png" after Detect Face), not even naming what they are: the boxes and their count
      ("how many faces?"). An answer that says what was found ("I found two faces") is left as is,
      as the training answers are, unless the human asked how many and it gives no number ("I found
      a person."): then the boxes and their count too."""
    if not observed:
        return text
    answer, last = text.strip(), observed[-1].strip()
    if LEAD_IN.match(answer):
        return f"{answer} {last}"
    head, colon, tail = answer.partition(":")
    tail = tail.strip().rstrip(".")
    if colon and HANDOVER.match(head.strip()) and "\n" in last and tail and tail != last \
            and (last.endswith(tail) or BARE_BOX.fullmatch(tail)):
        return f"{head.strip()}: {last}"
    lines = last.splitlines()
    found = [m for m in map(BOX_LINE.match, lines[1:]) if m]
    boxes, labels = [m.group(0) for m in found], {m.group(1).lower() for m in found}
    own_words = NAME_RE.sub("", answer).lower()  # without file names ("..._face_...png" names no face)
    named = any(re.search(rf"\b{re.escape(label)}", own_words) for label in labels)
    uncounted = HOW_MANY.search(message) and not NUMBER.search(BARE_BOX.sub("", own_words)) \
        and not BARE_BOX.search(own_words)  # boxes listed: they are the count
    if made and made[-1] in answer and lines[0] == result_saved(made[-1]) and boxes and (not named or uncounted):
        return f"{answer}\n{len(boxes)} found:\n" + "\n".join(boxes)
    return text


def _takes_grammar(llm: LLM) -> bool:
    """Whether the backend's stream() takes a `grammar` keyword (True where it cannot be told)."""
    try:
        params = inspect.signature(llm.stream).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "grammar" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _results(text: str, store: ImageStore) -> list[str]:
    """The tool results an answer names: what the UI shows beside it. Never an upload (the
    user's own photo is not a result, whatever the answer says) and never a name that does not exist."""
    return [n for n in _image_names(text) if store.exists(n) and not store.is_upload(n)]


def _image_names(text: str) -> list[str]:
    return list(dict.fromkeys(NAME_RE.findall(text)))


def _strip_names(text: str, names: list[str]) -> str:
    return re.sub(r"\s+", " ", _replace_names(text, names, "(no such file)")).strip()


def _replace_names(text: str, names: list[str], by: str) -> str:
    for n in names:
        text = text.replace(n, by)
    return text
