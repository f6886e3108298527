"""Saved prompt states (gpt4tools/llm/states.py): the LRU store itself, without a model. The
backends' use of it is tested on real models in test_llama_decode.py and test_llm_hf.py."""

import pytest

from gpt4tools.llm.states import PromptStates, common_prefix

MB = 2**20


def test_the_longest_shared_prefix_wins():
    s = PromptStates(capacity_mb=1, min_tokens=2)
    s.save([1, 2, 3, 4], "a", 10)
    s.save([1, 2, 9, 9, 9], "b", 10)
    assert s.best([1, 2, 9, 9, 5]) == ((1, 2, 9, 9, 9), 4)
    assert s.best([1, 2, 3, 4, 5]) == ((1, 2, 3, 4), 4)
    assert s.best([7, 7]) == (None, 0)
    assert s.get((1, 2, 3, 4), reused=4) == "a"
    r = s.report()
    assert (r.entries, r.bytes, r.saved, r.restored, r.tokens_restored, r.evicted) == (2, 20, 2, 1, 4, 0)


def test_bounded_by_bytes_least_recently_used_out():
    s = PromptStates(capacity_mb=3 / MB * 100, min_tokens=1)  # 300 bytes
    s.save([1], "one", 100)
    s.save([2], "two", 100)
    s.save([3], "three", 100)
    s.get((1,), reused=1)  # 1 is now the most recently used: 2 goes first
    s.save([4], "four", 100)
    assert s.best([2])[0] is None and s.best([1])[0] == (1,) and s.best([4])[0] == (4,)
    assert s.report().bytes <= s.report().capacity_bytes and s.report().evicted == 1
    s.save([5], "too big", 301)  # larger than the whole store: not kept, nothing evicted for it
    assert s.best([5])[0] is None and s.report().entries == 3


def test_a_longer_state_replaces_its_own_prefix():
    s = PromptStates(capacity_mb=1, min_tokens=1)
    s.save([1, 2], "short", 10)
    assert s.holds([1, 2]) and s.holds([1]) and not s.holds([1, 2, 3])
    s.save([1, 2, 3], "long", 15)
    assert s.report().entries == 1 and s.report().bytes == 15 and s.holds([1, 2])


def test_what_is_worth_saving():
    s = PromptStates(capacity_mb=1, min_tokens=64)
    assert s.worth_saving(held=500, kept=100) and not s.worth_saving(held=500, kept=450)
    assert not PromptStates(capacity_mb=0).worth_saving(held=500, kept=0)  # no memory: nothing saved


def test_report_in_words():
    s = PromptStates(capacity_mb=256, min_tokens=1)
    s.save(list(range(10)), "x", 12 * MB)
    s.get(tuple(range(10)), reused=1234)
    assert s.report().line() == "1 saved prompt states (12 MB of 256 MB), 1 reused (1,234 tokens not encoded again)"


@pytest.mark.parametrize("a,b,n", [([1, 2, 3], [1, 2, 4], 2), ([1, 2], [1, 2, 3], 2), ([], [1], 0), ((5, 6), [7], 0)])
def test_common_prefix(a, b, n):
    assert common_prefix(a, b) == n


def test_the_command_line_takes_megabytes_and_refuses_the_rest():
    import argparse

    from gpt4tools.options import add_model_args

    ap = argparse.ArgumentParser()
    add_model_args(ap)
    assert ap.parse_args([]).prompt_cache_mb == 256
    assert ap.parse_args(["--prompt-cache-mb", "0"]).prompt_cache_mb == 0
    for bad in ("-1", "nan", "lots"):
        with pytest.raises(SystemExit):
            ap.parse_args(["--prompt-cache-mb", bad])


def test_a_backend_gets_a_store_of_its_size_or_none():
    from gpt4tools.llm.states import store_of

    assert store_of(0) is None and store_of(8).capacity_bytes == 8 * MB
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match=">= 0 MB"):
            store_of(bad)
