"""Convert a TF.js graph model (model.json + .bin shards) to ONNX with tf2onnx.

Runs inside the throw-away TensorFlow build venv (see buildenv.py), never in the app's
venv: it imports only the standard library, numpy and tf2onnx.

    python tfjs_onnx.py MODEL.json OUT.onnx [--opset 17]

tf2onnx 1.17's `--tfjs` reader trips over three things in these models when run on
TensorFlow 2.21 / numpy 2, so the graph JSON is patched on a copy first:
  * `np.product` (removed in numpy 2) is still called by tf2onnx: alias it to `np.prod`;
  * fused ops (`_FusedConv2D`, `FusedDepthwiseConv2dNative`, `_FusedMatMul`) lack the
    `TArgs` attribute that TensorFlow's op registry now requires: one DT_FLOAT per arg;
  * `TopKV2` lacks `index_type` (added to the op after the model was exported): int32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path


def patch_graph(model: dict) -> int:
    """Add the attributes TF 2.21 needs to the graph nodes in place; returns how many were patched."""
    patched = 0
    for node in model["modelTopology"]["node"]:
        attr = node.setdefault("attr", {})
        op = node["op"]
        if op.lstrip("_").startswith("Fused") and "TArgs" not in attr:
            num_args = int(attr.get("num_args", {}).get("i", 0))
            attr["TArgs"] = {"list": {"type": ["DT_FLOAT"] * num_args}}
            patched += 1
        elif op == "TopKV2" and "index_type" not in attr:
            attr["index_type"] = {"type": "DT_INT32"}
            patched += 1
    return patched


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_json", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args(argv)

    import numpy as np

    if not hasattr(np, "product"):
        np.product = np.prod  # tf2onnx 1.17 still calls the numpy<2 name
    from tf2onnx import convert

    model = json.loads(args.model_json.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        n = patch_graph(model)
        print(f"patched {n} graph nodes", flush=True)
        (work / args.model_json.name).write_text(json.dumps(model))
        for group in model["weightsManifest"]:  # the .bin shards sit beside model.json
            for shard in group["paths"]:
                shutil.copy(args.model_json.parent / shard, work / shard)
        sys.argv = ["tf2onnx.convert", "--tfjs", str(work / args.model_json.name),
                    "--output", str(args.output), "--opset", str(args.opset)]
        convert.main()
    return 0 if args.output.is_file() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
