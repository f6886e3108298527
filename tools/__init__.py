"""The tool catalog: every tool class, listed explicitly (no discovery by reflection).

Each family module defines its tool classes with their `ToolSpec`; this list is the one
place that decides which tools exist and in which order they are listed.
tests/test_registry.py checks it holds exactly the paper's 31 tools.
"""

from __future__ import annotations

from gpt4tools.tool import Tool
from tools.describe import PhotoDescription, VisualQuestionAnswering
from tools.masks import RemoveObject, SegmentGivenObject
from tools.maps import EdgeDetection, HedDetection, LineDetection, SegmentImage, SketchDetection
from tools.faces import DetectFace, RecognizeFace
from tools.objects import CropGivenObject, DetectGivenObject, ObjectDetection
from tools.ocr import TextDetection
from tools.pose import PoseDetection
from tools.quality import AssessImageQuality

CATALOG: list[type[Tool]] = [
    # understanding and object tools
    PhotoDescription, VisualQuestionAnswering, DetectGivenObject, SegmentGivenObject, RemoveObject,
    # condition maps and scene analysis
    EdgeDetection, LineDetection, HedDetection, SketchDetection, SegmentImage, PoseDetection,
    # unseen tools (never in training data)
    TextDetection, ObjectDetection, DetectFace, RecognizeFace, AssessImageQuality, CropGivenObject,
]
