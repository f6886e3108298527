"""The catalog holds exactly the paper's 31 tools, with the exact names, argument counts,
chains and seen/unseen split of REFERENCE.md §3; docs/tools.md is generated from it."""

from pathlib import Path

import pytest

from gpt4tools.inventory import describe, tools_markdown
from gpt4tools.registry import build_registry

# name -> (number of args, first arg is an image, follows, seen)
PAPER = {
    "Get Photo Description": (1, True, None, True),
    "Answer Question About The Image": (2, True, None, True),
    "Detect the Give Object": (2, True, None, True),
    "Segment the Image": (1, True, None, True),
    "Segment the given object": (2, True, None, True),
    "Remove Something From The Photo": (2, True, None, True),
    "Replace Something From The Photo": (3, True, None, True),
    "Generate Image From User Input Text": (1, False, None, True),
    "Instruct Image Using Text": (2, True, None, True),
    "Edge Detection On Image": (1, True, None, True),
    "Generate Image Condition On Canny Image": (2, True, "Edge Detection On Image", True),
    "Line Detection On Image": (1, True, None, True),
    "Hed Detection On Image": (1, True, None, True),
    "Generate Image Condition On Soft Hed Boundary Image": (2, True, "Hed Detection On Image", True),
    "Sketch Detection On Image": (1, True, None, True),
    "Generate Image Condition On Sketch Image": (2, True, "Sketch Detection On Image", True),
    "Pose Detection On Image": (1, True, None, True),
    "Generate Image Condition On Pose Image": (2, True, "Pose Detection On Image", True),
    "Generate Image Condition On Segmentations": (2, True, "Segment the Image", True),
    "Predict Depth On Image": (1, True, None, True),
    "Generate Image Condition On Depth": (2, True, "Predict Depth On Image", True),
    "Predict Normal Map On Image": (1, True, None, True),
    "Generate Image Condition On Normal Map": (2, True, "Predict Normal Map On Image", True),
    "Text Detection On Image": (1, True, None, False),
    "Detection": (1, True, None, False),
    "Detect Face": (1, True, None, False),
    "Recognize Face": (1, True, None, False),
    "Assess the Image Quality": (1, True, None, False),
    "Image Super-Resolution": (1, True, None, False),
    "Crop the Given Object": (2, True, None, False),
    "Generate 3D Asset From User Input Text": (1, False, None, False),
}


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def test_exactly_the_papers_31_tools(registry):
    assert sorted(registry) == sorted(PAPER)
    for name, (n_args, image_first, follows, seen) in PAPER.items():
        spec = registry[name].spec
        assert (len(spec.args), spec.needs_image, spec.follows, spec.seen) == (n_args, image_first, follows, seen), name
        assert spec.description and not spec.description.rstrip().endswith("image_path."), name
        assert spec.slug and spec.paraphrases, name


def test_every_tool_says_what_backs_it(registry):
    for row in describe(registry):
        assert row["model"], row["name"]
        assert row["available"] or row["reason"], row["name"]  # unavailable always says why


def test_docs_tools_md_is_current(registry):
    doc = Path(__file__).resolve().parent.parent / "docs" / "tools.md"
    assert doc.read_text() == tools_markdown(registry), (
        "regenerate: python -m gpt4tools tools --markdown > docs/tools.md")
