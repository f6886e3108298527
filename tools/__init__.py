"""The tool catalog: every tool class, listed explicitly (no discovery by reflection).

Each family module defines its tool classes with their `ToolSpec`; this list is the one
place that decides which tools exist, in the order of REFERENCE.md §3 (23 seen tools,
then the 8 unseen ones). tests/test_registry.py checks it holds exactly the paper's 31.
"""

from __future__ import annotations

from gpt4tools.tool import Tool
from tools.asset3d import Text2Asset3D
from tools.depth import Image2Depth, Image2Normal
from tools.describe import PhotoDescription, VisualQuestionAnswering
from tools.edit import InstructPix2Pix, ReplaceObject
from tools.faces import DetectFace, RecognizeFace
from tools.generate import (
                            Canny2Image,
                            Depth2Image,
                            Hed2Image,
                            Normal2Image,
                            Pose2Image,
                            Scribble2Image,
                            Seg2Image,
                            Text2Image,
)
from tools.maps import EdgeDetection, HedDetection, LineDetection, SegmentImage, SketchDetection
from tools.masks import RemoveObject, SegmentGivenObject
from tools.objects import CropGivenObject, DetectGivenObject, ObjectDetection
from tools.ocr import TextDetection
from tools.pose import PoseDetection
from tools.quality import AssessImageQuality
from tools.upscale import SuperResolution

CATALOG: list[type[Tool]] = [
    # the 23 seen tools (training data covers these)
    PhotoDescription, VisualQuestionAnswering, DetectGivenObject, SegmentImage, SegmentGivenObject,
    RemoveObject, ReplaceObject, Text2Image, InstructPix2Pix,
    EdgeDetection, Canny2Image, LineDetection, HedDetection, Hed2Image, SketchDetection, Scribble2Image,
    PoseDetection, Pose2Image, Seg2Image, Image2Depth, Depth2Image, Image2Normal, Normal2Image,
    # the 8 unseen tools (in the app, never in training data)
    TextDetection, ObjectDetection, DetectFace, RecognizeFace, AssessImageQuality, SuperResolution,
    CropGivenObject, Text2Asset3D,
]
