"""Our llama.cpp decoding loop (gpt4tools/llm/llama_decode.py): prompt lookup and grammar drafts
verified in one pass, prompts reused from the context. It must write exactly what
llama-cpp-python's own greedy loop writes, free and under a grammar, on a real model."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest

from gpt4tools import react
from gpt4tools.llm.llama_decode import prompt_lookup
from gpt4tools.models import SMALL_ADAPTER_DIR, SMALL_MODEL

from conftest import requires_weights
from fakes import grammar_case


def test_prompt_lookup_drafts_what_followed_the_latest_match():
    t = np.array([9, 1, 2, 3, 4, 5, 8, 1, 2, 3, 7, 6, 1, 2, 3])
    assert prompt_lookup(t, 3) == [7, 6, 1]  # the latest earlier "1 2 3" was followed by 7 6 1
    assert prompt_lookup(t, 10) == [7, 6, 1, 2, 3]  # up to the end of what is known
    assert prompt_lookup(np.array([4, 5, 6, 9, 5, 6]), 2) == [9, 5]  # no trigram: the bigram "5 6"
    assert prompt_lookup(np.array([1, 2, 3, 4]), 4) == []  # nothing repeats
    assert prompt_lookup(np.array([1]), 4) == []


weights = requires_weights(SMALL_MODEL)
llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                           reason="llama-cpp-python not installed: bash run.sh setup")

PROMPTS = [
    grammar_case()[0],
    "Human: Repeat exactly: image/ab12cd34.png, image/ab12cd34.png, image/ab12cd34.png\nAI:",
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick",
]


@pytest.fixture(scope="module")
def tuned():
    from gpt4tools import paths
    from gpt4tools.llm import load_llm

    return load_llm(SMALL_MODEL, adapter=str(paths.REPO / SMALL_ADAPTER_DIR), backend="llamacpp", n_ctx=2048)


def _run(llm, decoding, prompt, grammar=None, n=40):
    llm.decoding = decoding
    llm._decoder.draft_tokens = 8 if decoding == "lookup" else 0
    try:
        return llm.generate(prompt, stop=react.STOP, max_new_tokens=n, grammar=grammar)
    finally:
        llm.decoding, llm._decoder.draft_tokens = "lookup", 8


@weights
@llama
@pytest.mark.parametrize("constrained", [False, True])
def test_same_text_as_llama_cpp_python_greedy(tuned, constrained):
    if constrained:
        pytest.importorskip("llguidance")
    grammar = grammar_case()[1] if constrained else None
    prompts = PROMPTS[:1] if constrained else PROMPTS
    for prompt in prompts:
        want = _run(tuned, "library", prompt, grammar)
        assert want.completion_tokens > 0
        for decoding in ("greedy", "lookup"):
            got = _run(tuned, decoding, prompt, grammar)
            assert got.text == want.text, (decoding, prompt[-60:])
            # the library's loop cuts the stop string itself and cannot say which it was; ours says
            assert (got.stop is None) == (want.stop is None) and got.stop in (want.stop, *react.STOP, None)
            assert got.prompt_tokens == want.prompt_tokens
        assert "".join(tuned.stream(prompt, stop=react.STOP, max_new_tokens=40, grammar=grammar)) == want.text


@weights
@llama
def test_copies_take_fewer_passes_and_prompts_are_reused(tuned):
    prompt = PROMPTS[2]
    first = _run(tuned, "lookup", prompt, n=24)
    stats = tuned.last_stats
    assert stats.completion_tokens == first.completion_tokens >= 8
    assert stats.accepted > 0 and stats.forward_passes < stats.completion_tokens - 1  # drafts were kept
    again = _run(tuned, "lookup", prompt, n=24)
    assert again.text == first.text
    assert again.cached_tokens == again.prompt_tokens - 1  # only the last prompt token decoded again
    longer = _run(tuned, "lookup", prompt + first.text, n=8)  # the next step extends the last one
    assert longer.cached_tokens >= again.prompt_tokens


@weights
@llama
def test_a_closed_stream_leaves_a_usable_context(tuned):
    """The app stops reading mid-answer (a stop string, a closed browser): the next completion
    must not see the abandoned tokens as if they were its prompt."""
    want = _run(tuned, "library", PROMPTS[0]).text
    stream = tuned.stream(PROMPTS[2], max_new_tokens=40)
    next(stream)
    stream.close()
    assert _run(tuned, "lookup", PROMPTS[0]).text == want


@weights
@llama
def test_too_long_a_prompt_is_a_clear_error(tuned):
    with pytest.raises(ValueError, match="context"):
        tuned.generate("word " * 3000, max_new_tokens=4)
    assert tuned.generate(PROMPTS[2], max_new_tokens=4).completion_tokens == 4  # and the model still works


@weights
@llama
def test_concurrent_sessions_each_get_their_own_answer(tuned):
    """One context serves one completion at a time: threads interleaving would corrupt it."""
    want = {p: _run(tuned, "lookup", p).text for p in PROMPTS}
    got: dict[str, str] = {}

    def ask(p):
        got[p] = "".join(tuned.stream(p, stop=react.STOP, max_new_tokens=40))

    threads = [threading.Thread(target=ask, args=(p,)) for p in PROMPTS * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want



@weights
@llama
def test_warm_encodes_a_head_that_later_prompts_reuse(tuned):
    head = PROMPTS[0]
    tuned.warm(head)
    got = tuned.generate(head + "Thought:", max_new_tokens=4)
    assert got.cached_tokens >= len(tuned._decoder.tokenize(head)) - 2  # the seam may retokenize


@weights
@llama
def test_a_conversation_resumes_from_its_saved_state_after_another_ones_turn(tuned):
    """Two conversations taking turns on one model: the second one's prompt cuts the first one's
    context back, so it is saved first; the first one's next prompt starts from that state and
    writes what a context that never saw the other conversation writes."""
    first_turn, other = PROMPTS[0], PROMPTS[2]  # they share nothing but the start
    reply = tuned.generate(first_turn, stop=react.STOP, max_new_tokens=24)
    follow = first_turn + reply.text + "\nObservation: Result saved as image/ab12cd34.png\n"
    before = tuned.states_report()
    tuned.generate(other, max_new_tokens=8)
    got = tuned.generate(follow, stop=react.STOP, max_new_tokens=24)
    assert got.cached_tokens >= len(tuned._decoder.tokenize(first_turn)) - 2
    after = tuned.states_report()
    assert after.restored == before.restored + 1  # (saved here or by an earlier test: the same tokens)
    assert 0 < after.bytes <= after.capacity_bytes

    states, tuned._decoder.states = tuned._decoder.states, None
    try:
        tuned.generate(other, max_new_tokens=8)  # without saved states: encoded again from the start
        fresh = tuned.generate(follow, stop=react.STOP, max_new_tokens=24)
    finally:
        tuned._decoder.states = states
    assert fresh.cached_tokens < 8 and fresh.text == got.text


@weights
@llama
def test_a_store_that_holds_one_state_evicts_instead_of_failing(tuned):
    """Saving the context may push out the state a prompt would have started from: the prompt is then
    encoded again (no error), and writes the same text."""
    from gpt4tools.llm.states import PromptStates

    first, other = PROMPTS[0], "The river runs past the old mill and the bridge. " * 12  # shorter than first
    kept = tuned._decoder.states
    try:
        tuned._decoder.states = PromptStates(capacity_mb=64)
        reply = tuned.generate(first, stop=react.STOP, max_new_tokens=16)
        follow = first + reply.text + "\nObservation: done\n"
        tuned.generate(other, max_new_tokens=4)
        want = tuned.generate(follow, stop=react.STOP, max_new_tokens=16)  # restored, the other one saved
        sizes = tuned._decoder.states.report()
        assert sizes.entries == 2 and sizes.restored == 1
        # room for the first conversation's state or the other's, not both
        tuned._decoder.states = PromptStates(capacity_mb=0.9 * sizes.bytes / 2**20)
        tuned.generate(first, stop=react.STOP, max_new_tokens=16)
        tuned.generate(other, max_new_tokens=4)  # saves the first conversation's context
        got = tuned.generate(follow, stop=react.STOP, max_new_tokens=16)  # saving the other one evicts it
        report = tuned._decoder.states.report()
        assert report.evicted >= 1 and report.restored == 0 and report.bytes <= report.capacity_bytes
        assert got.text == want.text
    finally:
        tuned._decoder.states = kept
