"""The merged-GGUF cache stays under its byte budget, least recently used out (gpt4tools/llm/gguf.py)."""

import os

import pytest

from gpt4tools.llm import gguf


def _merged(folder, name, size, used):
    f = folder / f"{name}.bf16.gguf"
    f.write_bytes(b"x" * size)
    check = f.with_name(f.name + ".sha256")
    check.write_text("abc\n")
    os.utime(check, (used, used))
    return f


def test_least_recently_used_go_first_and_the_new_one_stays(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT4TOOLS_CACHE", str(tmp_path))
    folder = tmp_path / "gguf"
    folder.mkdir()
    old = _merged(folder, "old", 400, used=1_000)
    mid = _merged(folder, "mid", 400, used=2_000)
    new = _merged(folder, "new", 400, used=3_000)
    oldest_but_kept = _merged(folder, "kept", 400, used=500)
    (folder / "half.gguf.partial").write_bytes(b"x" * 4000)  # another process writing: not counted, not touched
    gone = gguf.prune_merged(keep=oldest_but_kept, limit=900)
    assert gone == [old, mid]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [new.name, new.name + ".sha256", oldest_but_kept.name, oldest_but_kept.name + ".sha256", "half.gguf.partial"])
    assert gguf.prune_merged(limit=900) == []  # under the budget: nothing more
    assert gguf.prune_merged(limit=0) == []  # 0: unbounded


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("GPT4TOOLS_GGUF_CACHE_GB", raising=False)
    assert gguf.gguf_cache_limit() == int(gguf.GGUF_CACHE_GB * 2**30)
    monkeypatch.setenv("GPT4TOOLS_GGUF_CACHE_GB", "2.5")
    assert gguf.gguf_cache_limit() == int(2.5 * 2**30)
    for bad in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv("GPT4TOOLS_GGUF_CACHE_GB", bad)
        with pytest.raises(ValueError, match="GPT4TOOLS_GGUF_CACHE_GB"):
            gguf.gguf_cache_limit()
