"""The transformers backend on a real model (SmolLM2-135M, the smallest one fetched by default):
generate, stream and batched generation agree, and stop strings cut where the agent needs them."""

import pytest

from gpt4tools import react
from gpt4tools.llm import generate_many, load_llm
from gpt4tools.models import SMALL_MODEL

from conftest import requires_weights
from fakes import assert_valid_call, grammar_case

pytestmark = requires_weights(SMALL_MODEL)

PROMPTS = [
    "Human: What is the capital of France?\nAI:",
    "Thought: Do I need to use a tool? Yes\nAction: Edge Detection On Image\nAction Input: image/abcdefgh.png\n"
    "Observation: Result saved as image/ab12_edge_abcdefgh_abcdefgh.png\n\nThought: Do I need to use a tool? No\nAI:",
    "List three colours:\n1.",
]


@pytest.fixture(scope="module")
def llm():
    # fp32: in bf16 a left-padded row may round differently and flip a greedy token.
    return load_llm(SMALL_MODEL, adapter="none", backend="transformers", dtype="fp32")


def test_generate_stream_and_batch_agree(llm):
    one = [llm.generate(p, stop=react.STOP, max_new_tokens=24) for p in PROMPTS]
    streamed = ["".join(llm.stream(p, stop=react.STOP, max_new_tokens=24)) for p in PROMPTS]
    batched = generate_many(llm, PROMPTS, stop=react.STOP, max_new_tokens=24, batch_size=3)
    assert [g.text for g in one] == streamed
    assert all(g.text.strip() for g in one)  # a real model says something
    for a, b in zip(one, batched):
        assert a.text == b.text
        assert b.prompt_tokens == a.prompt_tokens and 0 < b.completion_tokens <= 24


def test_stop_string_cuts_the_continuation(llm):
    # The model continues a numbered list; stopping at "3." must cut before it.
    gen = llm.generate(PROMPTS[2], stop=["3."], max_new_tokens=40)
    assert "3." not in gen.text and gen.stop == "3."
    [batched] = generate_many(llm, [PROMPTS[2]], stop=["3."], max_new_tokens=40, batch_size=4)
    assert batched.text == gen.text


def test_prefix_cache_skips_the_shared_prompt_and_changes_nothing(llm):
    """The agent's second step is its first prompt plus one observation: only that tail is
    encoded again, and the greedy continuation is the one a fresh encoding gives (fp32)."""
    from gpt4tools.prompt import PromptTemplate
    from gpt4tools.registry import build_registry

    specs = build_registry().subset(["Edge Detection On Image", "Get Photo Description"]).specs()
    step1 = PromptTemplate.load().render(specs, "Human: hi\nAI: Hello!", "edges of image/abcdefgh.png please")
    first = llm.generate(step1, stop=react.STOP, max_new_tokens=24)
    step2 = step1 + first.text + "\nObservation: Result saved as image/ab12_edge_abcdefgh_abcdefgh.png\n"
    other = PROMPTS[0]  # an unrelated prompt shares nothing: encoded from scratch
    cached = [llm.generate(p, stop=react.STOP, max_new_tokens=24) for p in (step2, other)]
    assert cached[0].cached_tokens >= llm.count_tokens(step1) - 2  # all of step 1 (bar the boundary token)
    assert cached[1].cached_tokens == 0

    saved, llm.prefix = llm.prefix, None
    try:
        fresh = [llm.generate(p, stop=react.STOP, max_new_tokens=24) for p in (step2, other)]
    finally:
        llm.prefix = saved
    assert [g.text for g in cached] == [g.text for g in fresh]
    assert fresh[0].cached_tokens == 0


def test_a_conversation_resumes_from_its_saved_cache_after_another_ones_turn(llm):
    """Two conversations taking turns: the other one's prompt would crop the first one's cache, so
    a copy is saved; the first one's next step starts from it and writes what a fresh encoding writes."""
    from gpt4tools.prompt import PromptTemplate
    from gpt4tools.registry import build_registry

    specs = build_registry().subset(["Edge Detection On Image", "Get Photo Description"]).specs()
    step1 = PromptTemplate.load().render(specs, "Human: hi\nAI: Hello!", "edges of image/abcdefgh.png please")
    first = llm.generate(step1, stop=react.STOP, max_new_tokens=24)
    step2 = step1 + first.text + "\nObservation: Result saved as image/ab12_edge_abcdefgh_abcdefgh.png\n"
    before = llm.states_report()
    assert llm.generate(PROMPTS[0], stop=react.STOP, max_new_tokens=8).cached_tokens == 0
    got = llm.generate(step2, stop=react.STOP, max_new_tokens=24)
    assert got.cached_tokens >= llm.count_tokens(step1) - 2
    after = llm.states_report()
    assert after.restored == before.restored + 1  # (saved here or by an earlier test: the same tokens)
    assert 0 < after.bytes <= after.capacity_bytes

    saved, llm.prefix = llm.prefix, None
    try:
        fresh = llm.generate(step2, stop=react.STOP, max_new_tokens=24)
    finally:
        llm.prefix = saved
    assert fresh.text == got.text


def test_warm_encodes_a_prompt_head_that_the_next_prompt_reuses(llm):
    """Agent.prepare's call between turns: the head is encoded ahead, the next prompt encodes only
    its own tail, and writes what a fresh encoding writes."""
    head = "Human: Here is a photo of my garden.\nAI: Received.\nHuman:"
    prompt = head + " What colour are roses usually?\nAI:"
    saved, llm.prefix = llm.prefix, None
    try:
        fresh = llm.generate(prompt, stop=react.STOP, max_new_tokens=16)
        llm.warm(head)  # no prefix cache: nothing to do, no error
    finally:
        llm.prefix = saved
    llm.warm(PROMPTS[0])  # something else first: warm replaces it
    llm.warm(head)
    assert llm.prefix.ids == llm.tokenizer(head).input_ids
    got = llm.generate(prompt, stop=react.STOP, max_new_tokens=16)
    assert got.cached_tokens >= llm.count_tokens(head) - 1 and got.text == fresh.text


# -- grammars (llguidance) ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tuned():
    """The small model with its committed adapter: it decides to use a tool where asked to."""
    from gpt4tools import paths
    from gpt4tools.models import SMALL_ADAPTER_DIR

    return load_llm(SMALL_MODEL, adapter=str(paths.REPO / SMALL_ADAPTER_DIR), backend="transformers", dtype="fp32")


def test_grammar_makes_the_call_valid_whatever_the_model_would_say(tuned):
    pytest.importorskip("llguidance")
    prompt, grammar = grammar_case()
    free = tuned.generate(prompt, stop=react.STOP, max_new_tokens=48)
    gen = tuned.generate(prompt, stop=react.STOP, max_new_tokens=48, grammar=grammar)
    assert_valid_call(gen.text)
    assert gen.text.startswith(f"{react.THOUGHT} Yes\n{react.ACTION} ") and gen.text.endswith("\n"), gen.text
    assert gen.stop is None and gen.completion_tokens < 48  # it ended where the grammar did, with the end token
    assert "".join(tuned.stream(prompt, stop=react.STOP, max_new_tokens=48, grammar=grammar)) == gen.text
    assert free.text != gen.text  # unconstrained, it names the tool and image the prompt is about


def test_batched_rows_each_follow_their_own_grammar(tuned):
    pytest.importorskip("llguidance")
    prompt, grammar = grammar_case()
    prompts, grammars = [prompt, PROMPTS[0], prompt], [grammar, None, grammar]
    one = [tuned.generate(p, stop=react.STOP, max_new_tokens=40, grammar=g) for p, g in zip(prompts, grammars)]
    batched = generate_many(tuned, prompts, stop=react.STOP, max_new_tokens=40, batch_size=3, grammars=grammars)
    assert [g.text for g in batched] == [g.text for g in one]
    assert_valid_call(batched[0].text)
    assert_valid_call(batched[2].text)
