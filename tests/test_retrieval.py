"""Tool retrieval with the real sentence encoder (all-MiniLM-L6-v2, shipped on PyPI)."""

import pytest

from gpt4tools.registry import build_registry
from gpt4tools.retrieval import ToolRetriever


@pytest.fixture(scope="module")
def retriever():
    return ToolRetriever(build_registry().specs())  # all 31 tools, available or not


@pytest.mark.parametrize("message, tool", [
    ("detect the cat in this image", "Detect the Give Object"),
    ("what's written on this sign?", "Text Detection On Image"),
    ("turn this photo into a depth map", "Predict Depth On Image"),
    ("remove the dog from the picture", "Remove Something From The Photo"),
    ("draw a cyberpunk city at night", "Generate Image From User Input Text"),
])
def test_the_asked_tool_is_among_the_five_offered(retriever, message, tool):
    names = [s.name for s in retriever.select(message, 5)]
    assert tool in names, names
    assert 5 <= len(names) <= 7


def test_a_chained_tool_brings_the_tool_it_follows(retriever):
    names = [s.name for s in retriever.select("keep the edges of this photo but make it a castle", 3)]
    canny = names.index("Generate Image Condition On Canny Image")
    assert names[canny - 1] == "Edge Detection On Image"


def test_no_retrieval_when_everything_fits_or_nothing_is_asked(retriever):
    everything = [s.name for s in retriever.specs]
    assert [s.name for s in retriever.select("hello", 0)] == everything
    assert [s.name for s in retriever.select("hello", 31)] == everything
    assert [s.name for s in retriever.select("   ", 5)] == everything
