"""The llama.cpp backend, and the OpenAI-compatible backend against a real server: llama.cpp's
own (`python -m llama_cpp.server`) on 127.0.0.1, serving a real GGUF. These run on the smallest
LLM fetched by default (SmolLM2-135M) and its committed adapter: the plumbing is the same for
every model, and the default model's own turns are tests/test_default_model.py.

llama-cpp-python has no wheel on PyPI; `bash run.sh test` builds it once per CPU into the
cache, so these run in CI. Elsewhere they skip with the command that enables them.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from gpt4tools import react
from gpt4tools.llm import load_llm
from gpt4tools.models import SMALL_ADAPTER_DIR, SMALL_MODEL

from conftest import requires_weights
from fakes import assert_valid_call, grammar_case

pytestmark = [
    requires_weights(SMALL_MODEL),
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python not installed: bash run.sh setup"),
]

PROMPT = ("Thought: Do I need to use a tool? Yes\nAction: Edge Detection On Image\n"
          "Action Input: image/abcdefgh.png\n"
          "Observation: Result saved as image/ab12_edge_abcdefgh_abcdefgh.png\n\n"
          "Human: What is the capital of France?\n"
          "AI: The capital of France is")


@pytest.fixture(scope="module")
def llm():
    return load_llm(SMALL_MODEL, adapter="none", backend="llamacpp", n_ctx=2048)


def test_generate_and_stream_agree_and_stop(llm):
    gen = llm.generate(PROMPT, stop=react.STOP, max_new_tokens=32)
    assert "Paris" in gen.text  # a real model answers
    # the prompt as the model tokenizes it: with BOS exactly where the GGUF asks for one
    assert gen.prompt_tokens == len(llm.llm.tokenize(PROMPT.encode("utf-8"), add_bos=True))
    assert 0 < gen.completion_tokens <= 32
    assert "".join(llm.stream(PROMPT, stop=react.STOP, max_new_tokens=32)) == gen.text
    cut = llm.generate("List three colours:\n1.", stop=["3."], max_new_tokens=40)
    assert "3." not in cut.text and cut.stop is not None


def test_unusable_adapter_folders_are_refused_with_what_to_do(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="gpt4tools export"):  # the LoRA form needs adapter.gguf
        load_llm(SMALL_MODEL, adapter=str(tmp_path), backend="llamacpp", gguf="lora")
    with pytest.raises(ValueError, match="no adapter_model.safetensors"):
        load_llm(SMALL_MODEL, adapter=str(tmp_path), backend="llamacpp", gguf="bf16")
    with pytest.raises(ValueError, match="unknown GGUF form"):
        load_llm(SMALL_MODEL, backend="llamacpp", gguf="q3")


def test_merged_gguf_is_made_once_and_remade_when_corrupt():
    from gpt4tools import paths
    from gpt4tools.llm.gguf import merged_gguf

    adapter = paths.REPO / SMALL_ADAPTER_DIR
    first = merged_gguf(adapter, "q8_0")
    stamp = first.stat().st_mtime_ns
    assert merged_gguf(adapter, "q8_0") == first and first.stat().st_mtime_ns == stamp  # reused
    with open(first, "r+b") as f:  # flip a byte in the tensor data
        f.seek(first.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    again = merged_gguf(adapter, "q8_0")
    assert again == first and again.stat().st_mtime_ns != stamp  # checked, found corrupt, remade
    # the merged HF folder it went through is gone (only its own: another process may be merging another)
    assert not first.with_name(first.stem + ".hf").exists()


def _file_type(path) -> int:
    """A GGUF model's general.file_type (llama_ftype: 2 is LLAMA_FTYPE_MOSTLY_Q4_0)."""
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields["general.file_type"]
    return int(field.parts[field.data[0]][0])


def test_q4_0_is_quantized_from_the_merged_bf16_by_llama_cpp_and_runs():
    from gpt4tools import paths
    from gpt4tools.llm.gguf import merged_gguf

    adapter = paths.REPO / SMALL_ADAPTER_DIR
    q4 = merged_gguf(adapter, "q4_0")
    assert merged_gguf(adapter, "q4_0") == q4  # cached, sha256 checked
    assert _file_type(q4) == 2  # LLAMA_FTYPE_MOSTLY_Q4_0
    assert q4.stat().st_size < 0.75 * merged_gguf(adapter, "bf16").stat().st_size
    llm = load_llm(SMALL_MODEL, adapter=str(adapter), backend="llamacpp", gguf="q4_0", n_ctx=2048)
    assert llm.gguf == str(q4)
    gen = llm.generate(PROMPT, stop=react.STOP, max_new_tokens=8)
    assert 0 < gen.completion_tokens <= 8 and gen.text.strip()


def test_export_writes_a_q4_0_merged_gguf(tmp_path):
    from gpt4tools import paths
    from gpt4tools.llm.gguf import export_gguf_merged

    out = export_gguf_merged(paths.REPO / SMALL_ADAPTER_DIR, tmp_path / "m.gguf", outtype="q4_0", keep_hf=False)
    assert _file_type(out) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]  # no bf16 or HF folder left behind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """llama.cpp's OpenAI-compatible server, as a user would start it."""
    from gpt4tools import weights

    port = _free_port()
    # a file, not a pipe: llama.cpp logs a lot, and a full pipe nobody reads blocks the server
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w+")
    gguf = weights.path(SMALL_MODEL) / "model.gguf"
    # llama_cpp.server, with the weight buffers our backend picks on this CPU (no AMX repacking: it crashes)
    serve = ("import runpy; from gpt4tools.llm.llamacpp import safe_process_defaults; safe_process_defaults(); "
             "runpy.run_module('llama_cpp.server', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", serve, "--model", str(gguf), "--model_alias", "smol",
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
                            stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as r:
                assert json.load(r)["data"][0]["id"] == "smol"
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.seek(0)
                pytest.fail(f"llama_cpp.server did not start: {log.read()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_openai_backend_against_llama_cpp_server(server, llm):
    remote = load_llm("smol", backend="openai", base_url=server)
    gen = remote.generate(PROMPT, stop=react.STOP, max_new_tokens=32)
    local = llm.generate(PROMPT, stop=react.STOP, max_new_tokens=32).text
    # Same engine, greedy; but the server defaults to repeat_penalty 1.1 (not an OpenAI field
    # we could send portably), so the two agree on the answer and may part after it.
    assert "Paris" in gen.text and gen.text.split("\n")[0] == local.split("\n")[0], (gen.text, local)
    assert gen.completion_tokens > 0 and gen.prompt_tokens > 0
    assert "".join(remote.stream(PROMPT, stop=react.STOP, max_new_tokens=32)) == gen.text
    # a server that honours stop strings must not leak them; ours cuts again anyway
    cut = remote.generate("List three colours:\n1.", stop=["3."], max_new_tokens=40)
    assert "3." not in cut.text


def test_openai_backend_unreachable_server_is_a_clear_error():
    import openai

    remote = load_llm("smol", backend="openai", base_url=f"http://127.0.0.1:{_free_port()}/v1", max_retries=0,
                      timeout=5)
    with pytest.raises(openai.APIConnectionError):
        remote.generate("hello", max_new_tokens=4)


def test_adapter_gguf_matches_peft_on_a_benchmark_prompt():
    """A committed adapter, exported with `gpt4tools export --gguf`, on the original 4-bit GGUF
    in llama.cpp, picks the same tool with the same input as transformers + peft on the
    de-quantized weights."""
    from gpt4tools import paths
    from gpt4tools.prompt import record_prompt

    adapter = paths.REPO / SMALL_ADAPTER_DIR
    assert (adapter / "adapter.gguf").is_file()
    record = next(r for r in map(json.loads, (paths.REPO / "data" / "val.jsonl").open())
                  if r["tool"] == "Edge Detection On Image" and r["kind"] == "positive")
    prompt = record_prompt(record)
    hf = load_llm(SMALL_MODEL, adapter=str(adapter), backend="transformers", dtype="fp32").generate(
        prompt, stop=react.STOP, max_new_tokens=48)
    want = react.parse(hf.text)
    # The backends must agree with each other; whether the tool is right is the benchmark's business.
    assert isinstance(want, react.ToolCall) and want.tool in record["tools_offered"], hf.text
    for form in ("lora", "auto"):  # the LoRA GGUF on the 4-bit base; the merged GGUF made from the peft folder
        cpp = load_llm(SMALL_MODEL, adapter=str(adapter), backend="llamacpp", gguf=form, n_ctx=2048).generate(
            prompt, stop=react.STOP, max_new_tokens=48)
        assert react.parse(cpp.text) == want, (form, hf.text, cpp.text)


# -- grammars ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tuned():
    """The committed small adapter (its LoRA GGUF on the shipped base): it decides to use a tool where asked to."""
    from gpt4tools import paths

    return load_llm(SMALL_MODEL, adapter=str(paths.REPO / SMALL_ADAPTER_DIR), backend="llamacpp", gguf="lora",
                    n_ctx=2048)


@pytest.mark.parametrize("engine", ["llguidance", "llama.cpp"])
def test_grammar_makes_the_call_valid_whatever_the_model_would_say(tuned, engine):
    """The model decides to use a tool; the grammar decides which tool and image it may write.
    Both engines: llguidance (the default where installed) and llama.cpp's own grammar sampler."""
    if engine == "llguidance":
        pytest.importorskip("llguidance")
    tuned.grammar_engine = engine
    try:
        prompt, grammar = grammar_case()
        free = tuned.generate(prompt, stop=react.STOP, max_new_tokens=48)
        gen = tuned.generate(prompt, stop=react.STOP, max_new_tokens=48, grammar=grammar)
        assert_valid_call(gen.text)
        assert gen.text.startswith(f"{react.THOUGHT} Yes\n{react.ACTION} ") and gen.text.endswith("\n"), gen.text
        assert gen.completion_tokens < 48  # it ended where the grammar did
        assert "".join(tuned.stream(prompt, stop=react.STOP, max_new_tokens=48, grammar=grammar)) == gen.text
        assert free.text != gen.text  # unconstrained, it names the tool and image the prompt is about
    finally:
        tuned.grammar_engine = "auto"
    assert tuned.grammar(grammar) is tuned.grammar(grammar)  # parsed by llama.cpp once, kept


def test_the_two_engines_decode_the_same_steps(tuned):
    """llguidance's mask and llama.cpp's grammar sampler allow the same tokens: greedy, the same text."""
    pytest.importorskip("llguidance")
    from gpt4tools.agent import step_grammar
    from gpt4tools.registry import build_registry

    prompt, _ = grammar_case()
    specs = build_registry().subset(["Edge Detection On Image", "Get Photo Description"]).specs()
    grammar = step_grammar(specs, ["image/abcdefgh.png"])  # what the prompt offers, as the agent would
    texts = {}
    for engine in ("llguidance", "llama.cpp"):
        tuned.grammar_engine = engine
        texts[engine] = tuned.generate(prompt, stop=react.STOP, max_new_tokens=48, grammar=grammar).text
    tuned.grammar_engine = "auto"
    assert texts["llguidance"] == texts["llama.cpp"]
    assert isinstance(react.parse(texts["llguidance"]), react.ToolCall)


def test_a_grammar_that_does_not_parse_is_an_error_not_a_crash(llm):
    with pytest.raises(ValueError):
        llm.generate("hello", max_new_tokens=4, grammar='root ::= "unterminated')
    with pytest.raises(ValueError, match="cannot parse"):  # llama.cpp's parser, before its sampler sees it
        llm.grammar("root ::= missing-rule")
    with pytest.raises(ValueError, match="unknown grammar engine"):
        load_llm(SMALL_MODEL, adapter="none", backend="llamacpp", n_ctx=512, grammar_engine="regex")
    assert llm.generate("hello", max_new_tokens=4).completion_tokens > 0  # the model is fine after


def test_openai_backend_sends_the_grammar_to_llama_cpp_server(server):
    remote = load_llm("smol", backend="openai", base_url=server)
    prompt, grammar = grammar_case()
    text = remote.generate(prompt, stop=react.STOP, max_new_tokens=48, grammar=grammar).text
    assert text.startswith(react.THOUGHT + " "), text  # the server decoded under the grammar
    decision = react.parse(text)
    if isinstance(decision, react.ToolCall):  # the base model may also say No: either is a valid step
        assert_valid_call(text)
    else:
        assert isinstance(decision, react.FinalAnswer) and text.rstrip("\n").count("\n") == 1, text
    assert remote.send_grammar


def test_openai_backend_drops_the_grammar_for_a_server_that_refuses_it(caplog):
    """OpenAI itself answers 400 to fields it does not know: ask again without, once and for all."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies = []

    class Picky(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            bodies.append(body)
            if "grammar" in body:
                status, out = 400, {"error": {"message": "Unrecognized request argument supplied: grammar",
                                              "type": "invalid_request_error", "param": None, "code": None}}
            else:
                status, out = 200, {"id": "x", "object": "text_completion", "created": 0, "model": "m",
                                    "choices": [{"text": "Thought: Do I need to use a tool? No\nAI: hi", "index": 0,
                                                 "finish_reason": "stop", "logprobs": None}],
                                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Picky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        remote = load_llm("m", backend="openai", base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1",
                          max_retries=0)
        with caplog.at_level("WARNING", logger="gpt4tools.llm.openai_api"):
            for _ in range(2):
                gen = remote.generate("x", stop=react.STOP, max_new_tokens=8, grammar='root ::= "a"')
                assert react.parse(gen.text) == react.FinalAnswer("hi")
    finally:
        httpd.shutdown()
    assert ["grammar" in b for b in bodies] == [True, False, False]  # refused once, then never sent again
    assert bodies[0]["structured_outputs"] == {"grammar": 'root ::= "a"'} and not remote.send_grammar
    assert sum("refused a request with a grammar" in r.getMessage() for r in caplog.records) == 1
