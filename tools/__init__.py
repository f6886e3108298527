"""The tool catalog: every tool class, listed explicitly (no discovery by reflection).

Each family module defines its tool classes with their `ToolSpec`; this list is the one
place that decides which tools exist and in which order they are listed.
tests/test_registry.py checks it holds exactly the paper's 31 tools.
"""

from __future__ import annotations

from gpt4tools.tool import Tool
from tools.maps import EdgeDetection, HedDetection, LineDetection, SegmentImage, SketchDetection
from tools.faces import DetectFace, RecognizeFace
from tools.ocr import TextDetection
from tools.pose import PoseDetection
from tools.quality import AssessImageQuality

CATALOG: list[type[Tool]] = [
    # condition maps and scene analysis
    EdgeDetection, LineDetection, HedDetection, SketchDetection, SegmentImage, PoseDetection,
    # unseen tools (never in training data)
    TextDetection, DetectFace, RecognizeFace, AssessImageQuality,
]
