"""Small real tools for testing the loop and the UI without model weights, and test helpers."""

import re
from dataclasses import dataclass, field

from PIL import ImageOps

from gpt4tools import react
from gpt4tools.tool import Arg, Tool, ToolResult, ToolSpec


@dataclass
class Trajectory:
    """A whole assistant turn read back from text: tool steps with observations, then maybe an answer."""

    steps: list = field(default_factory=list)  # (react.ToolCall, observation text)
    final: react.FinalAnswer | None = None


def parse_trajectory(text: str) -> Trajectory:
    """Split a multi-step text (scratchpad or sample output) into steps with react.parse, so
    tests can check what the data builder wrote. Never raises."""
    traj = Trajectory()
    for chunk in re.split(rf"(?m)^(?={re.escape(react.THOUGHT)})", text):
        if not chunk.strip():
            continue
        decision = react.parse(chunk)
        if isinstance(decision, react.ToolCall):
            obs = chunk.split(react.OBSERVATION, 1)[1].strip() if react.OBSERVATION in chunk else ""
            traj.steps.append((decision, obs))
        elif isinstance(decision, react.FinalAnswer):
            traj.final = decision
    return traj


class Invert(Tool):
    spec = ToolSpec(name="Invert The Image", description="useful to invert colours.",
                    args=(Arg("image_path", "image"),), output="image", slug="invert")
    model = "PIL ImageOps.invert (test tool)"

    def run(self, store, image_path):
        return ToolResult(image=ImageOps.invert(image_path))


class Ask(Tool):
    spec = ToolSpec(name="Ask", description="useful to ask about size.",
                    args=(Arg("image_path", "image"), Arg("question")),
                    output="text", slug="ask", aliases=("Ask Something",))

    def run(self, store, image_path, question):
        return ToolResult(text=f"The image is {image_path.width}x{image_path.height} pixels.")


class Crash(Tool):
    spec = ToolSpec(name="Crash", description="always fails.", args=(Arg("text"),), output="text", slug="crash")

    def run(self, store, text):
        raise ZeroDivisionError("boom")


class Missing(Tool):
    spec = ToolSpec(name="Missing", description="needs weights nobody fetched.", args=(Arg("text"),), output="text",
                    slug="m")
    weights = ("no-such-weights",)

    def run(self, store, text):
        raise AssertionError("never runs")


class EchoPlanLLM:
    """A scripted LLM that plans from the prompt, for app and load tests (no weights).

    Like a tiny tuned model it reads only the prompt: the newest input's first keyword in
    `plan` picks a tool, applied to the last image named before the input (the latest
    upload or result, so "invert it again" chains); once an observation is in the
    scratchpad it answers with it. Without a keyword it answers without tools. Output is
    streamed in small pieces (`delay_s` between them) to exercise streaming.
    """

    name = "echo-plan"
    context_length = 100_000

    def __init__(self, plan: dict[str, str] | None = None, delay_s: float = 0.0, piece: int = 8):
        self.plan = plan or {"invert": "Invert The Image", "size": "Ask", "crash": "Crash"}
        self.delay_s = delay_s
        self.piece = piece
        self.prompts: list[str] = []

    def _complete(self, prompt: str) -> str:
        from gpt4tools import react
        from gpt4tools.images import NAME_RE

        history, _, current = prompt.rpartition("New input:")
        user = current.split("\n", 1)[0].strip()
        if "Observation:" in current:  # a tool ran: report its last observation
            observed = current.rsplit("Observation:", 1)[1].strip().split("\n")[0]
            return react.render_final(react.FinalAnswer(observed))
        tool = next((t for k, t in self.plan.items() if k in user.lower()), None)
        images = NAME_RE.findall(history)
        if tool is None:
            return react.render_final(react.FinalAnswer(f"You said: {user}"))
        if tool == "Crash":
            return react.render_call(react.ToolCall(tool, "now"))
        if not images:
            return react.render_final(react.FinalAnswer("Please upload an image first."))
        args = images[-1] + (", how big is it?" if tool == "Ask" else "")
        return react.render_call(react.ToolCall(tool, args))

    def generate(self, prompt: str, *, stop=(), max_new_tokens: int = 256):
        from gpt4tools.llm import Generation, cut_at_stop

        self.prompts.append(prompt)
        text, which = cut_at_stop(self._complete(prompt), stop)
        return Generation(text, self.count_tokens(prompt), self.count_tokens(text), which)

    def stream(self, prompt: str, *, stop=(), max_new_tokens: int = 256):
        import time

        text = self.generate(prompt, stop=stop, max_new_tokens=max_new_tokens).text
        for i in range(0, len(text), self.piece):
            if self.delay_s:
                time.sleep(self.delay_s)
            yield text[i:i + self.piece]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def scripted_agent(delay_s: float = 0.0):
    """An Agent with EchoPlanLLM and the small real tools above: the app without weights."""
    from gpt4tools.agent import Agent
    from gpt4tools.registry import ToolRegistry

    return Agent(EchoPlanLLM(delay_s=delay_s), ToolRegistry([Invert(), Ask(), Crash()]))


def serve_fake_openai(answer: str, delay_s: float = 0.0, seen: list[str] | None = None):
    """A minimal OpenAI-compatible completions server on 127.0.0.1 that always answers
    `answer` after `delay_s` seconds: a slow, scripted model for real benchmark jobs.
    `seen`, when given, collects each request's Authorization header ("" when none came).
    Returns (base_url, shutdown)."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            if seen is not None:
                seen.append(self.headers.get("Authorization") or "")
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            time.sleep(delay_s)
            out = json.dumps({"id": "cmpl-fake", "object": "text_completion", "created": 0,
                              "model": body.get("model", "fake"),
                              "choices": [{"text": answer, "index": 0, "finish_reason": "stop", "logprobs": None}],
                              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1", server.shutdown


def bench_records(n_tool: int = 6, n_plain: int = 4) -> list[dict]:
    """Benchmark records in the paper's format: `n_tool` that need Invert The Image, `n_plain` that need no tool."""
    from gpt4tools import react

    records = []
    for i in range(n_tool + n_plain):
        uses_tool = i < n_tool
        text = f"invert image/img{i:05d}.png" if uses_tool else f"what is {i} plus {i}?"
        out = (react.render_call(react.ToolCall("Invert The Image", f"image/img{i:05d}.png")) if uses_tool
               else react.render_final(react.FinalAnswer(str(2 * i))))
        prompt = f"Tools: Invert The Image\nNew input: {text}\n"
        records.append({"id": i, "instruction": prompt, "input": "", "output": out})
    return records


# -- grammar-constrained decoding, shared by the backend tests -------------------------------
GRAMMAR_TOOLS = ["Segment the Image", "Answer Question About The Image"]
GRAMMAR_IMAGES = ["image/zzzzzzzz.png", "image/yyyyyyyy.png"]


def grammar_case():
    """A prompt that asks for edges of image/abcdefgh.png, and a grammar that allows neither that
    tool nor that image: only two other tools, on two other images (or no tool)."""
    from gpt4tools.agent import step_grammar
    from gpt4tools.prompt import PromptTemplate
    from gpt4tools.registry import build_registry

    specs = build_registry().subset(["Edge Detection On Image", "Get Photo Description"]).specs()
    history = ("Human: Here is an image named image/abcdefgh.png. Description: a cat on a sofa. If you understand, "
               "say \"Received\".\nAI: Received.")
    prompt = PromptTemplate.load().render(specs, history, "find the edges in image/abcdefgh.png")
    return prompt, step_grammar(build_registry().subset(GRAMMAR_TOOLS).specs(), GRAMMAR_IMAGES)


def assert_valid_call(text: str) -> None:
    """`text` is a call of one of GRAMMAR_TOOLS on one of GRAMMAR_IMAGES."""
    call = react.parse(text)
    assert isinstance(call, react.ToolCall), text
    assert call.tool in GRAMMAR_TOOLS and call.tool_input.startswith(tuple(GRAMMAR_IMAGES)), call
