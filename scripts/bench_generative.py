"""Latency and memory of the generative / hub-weight tools (SD 1.5 + ControlNet,
InstructPix2Pix, inpainting, DPT depth and normals, Swin2SR, Shap-E).

Each tool runs in a fresh process (so its RSS is its own): one warm-up call through the
real tool path (ImageStore upload, `tool(raw_input, store)`), then the median of N timed
calls on a 512x512 image. Prints one JSON line per tool.

Weights (`--weights`):
    real          the fetched checkpoints (python -m gpt4tools weights fetch NAME [--from DIR])
    architecture  the real models' architectures and sizes with RANDOM weights, built in
                  memory from their published configs and put into the model cache (this
                  process only: the weights' status is reported ok). Same compute and memory
                  as the real model, so the timing is real; the images are noise. For
                  machines without a model hub, like the one this project is built on.
    tiny          the tiny test checkpoints (tests/tiny_generative_models.py): checks the script

    python scripts/bench_generative.py --weights architecture --steps 2 gen depth sr
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import time_calls  # scripts/benchlib.py (this folder is on sys.path)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# key -> (module, class, asset, text argument or None)
TOOLS = {
    "gen": ("tools.generate", "Text2Image", None, "a red bicycle leaning on a wall"),
    "canny2image": ("tools.generate", "Canny2Image", "astronaut.jpg", "a robot in a space suit"),
    "pix2pix": ("tools.edit", "InstructPix2Pix", "chelsea.jpg", "make it look like a watercolor painting"),
    "replace": ("tools.edit", "ReplaceObject", "chelsea.jpg", "cat, a small dog"),
    "depth": ("tools.depth", "Image2Depth", "astronaut.jpg", None),
    "normal": ("tools.depth", "Image2Normal", "astronaut.jpg", None),
    "sr": ("tools.upscale", "SuperResolution", "astronaut.jpg", None),
    "3d": ("tools.asset3d", "Text2Asset3D", None, "a wooden chair"),
}


# -- random weights with the real architectures (configs as published upstream) ---------------------
def _clip_text(projection: bool = False):
    """CLIP ViT-L/14's text tower (SD 1.5 and Shap-E)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        projection_dim=768,
        max_position_embeddings=77,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _sd(cls_name: str, in_channels: int):
    import diffusers
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_generative_models import tokenizer  # a byte-level CLIP tokenizer: same sequence length

    unet = UNet2DConditionModel(sample_size=64, in_channels=in_channels, cross_attention_dim=768)  # SD 1.5 UNet
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    sched = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    return getattr(diffusers, cls_name)(
        vae=vae,
        text_encoder=_clip_text(),
        tokenizer=tokenizer(),
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _architecture(name: str):
    """A random-weight model shaped like the checkpoint `name` (what the tool's loader returns)."""
    if name == "sd15":
        return _sd("StableDiffusionPipeline", 4)
    if name == "instruct-pix2pix":
        return _sd("StableDiffusionInstructPix2PixPipeline", 8)
    if name == "sd-inpaint":
        return _sd("StableDiffusionInpaintPipeline", 9)
    if name.startswith("controlnet-"):
        from diffusers import ControlNetModel, UNet2DConditionModel

        return ControlNetModel.from_unet(UNet2DConditionModel(sample_size=64, cross_attention_dim=768))
    if name == "dpt-depth":
        from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

        cfg = DPTConfig(
            is_hybrid=True,
            image_size=384,
            neck_hidden_sizes=[256, 512, 768, 768],
            backbone_featmap_shape=[1, 1024, 24, 24],
        )  # Intel/dpt-hybrid-midas
        return DPTImageProcessor(size={"height": 384, "width": 384}, keep_aspect_ratio=False), DPTForDepthEstimation(
            cfg
        ).eval()
    if name == "swin2sr":
        from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution, Swin2SRImageProcessor

        return Swin2SRImageProcessor(), Swin2SRForImageSuperResolution(Swin2SRConfig()).eval()  # classical x2 64
    if name == "shap-e":
        from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEPipeline
        from diffusers.pipelines.shap_e import ShapERenderer

        sys.path.insert(0, str(REPO / "tests"))
        from tiny_generative_models import tokenizer

        prior = PriorTransformer(
            num_attention_heads=16,
            attention_head_dim=64,
            num_layers=24,
            embedding_dim=1024,
            num_embeddings=1024,
            additional_embeddings=0,
            time_embed_act_fn="gelu",
            norm_in_type="layer",
            embedding_proj_norm_type="layer",
            encoder_hid_proj_type=None,
            added_emb_type=None,
            time_embed_dim=4096,
            embedding_proj_dim=768,
            clip_embed_dim=2048,
        )
        sched = HeunDiscreteScheduler(
            beta_schedule="exp",
            num_train_timesteps=1024,
            prediction_type="sample",
            use_karras_sigmas=True,
            clip_sample=True,
            clip_sample_range=1.0,
        )
        pipe = ShapEPipeline(
            prior=prior,
            text_encoder=_clip_text(projection=True),
            tokenizer=tokenizer(),
            scheduler=sched,
            shap_e_renderer=ShapERenderer(),
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe
    raise KeyError(name)


def use_architectures(names: tuple[str, ...], device: str) -> None:
    """Put random-weight models into the cache under the tools' keys; report their weights ok."""
    from gpt4tools import weights
    from gpt4tools.model_cache import CACHE

    CACHE.budget_mb = 10**6
    for name in names:
        CACHE.get(f"{name}@{device}", lambda n=name: _architecture(n), 0)
    real_status = weights.status
    weights.status = lambda n: weights.Status(True) if n in names else real_status(n)


# -- one tool ---------------------------------------------------------------------------------------
def bench_one(key: str, mode: str, calls: int, steps: int, device: str, light: bool = False) -> dict:
    import importlib

    import psutil
    from PIL import Image

    from gpt4tools.images import ImageStore

    module, cls_name, asset, text = TOOLS[key]
    rss0 = psutil.Process().memory_info().rss
    cls = getattr(importlib.import_module(module), cls_name)
    tool = cls(device=device)
    if hasattr(tool, "steps"):
        tool.steps = steps
    if light and key == "3d":  # Shap-E's defaults are sized for a GPU: 20 views x 128^2 rays x 192 samples
        tool.frame_size, tool.ray_samples, tool.mesh_grid = 32, (8, 16), 32
    if mode == "architecture":
        use_architectures(cls.weights, device)
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "tiny":
            sys.path.insert(0, str(REPO / "tests"))
            from tiny_generative_models import build_all, install

            os.environ["GPT4TOOLS_CHECKPOINTS"] = str(Path(tmp) / "checkpoints")
            install(build_all(Path(tmp) / "src"), tuple(cls.weights))
        store = ImageStore(Path(tmp) / "session")
        raw = text or ""
        if asset:
            img = Image.open(REPO / "assets" / asset).convert("RGB").resize((512, 512), Image.Resampling.LANCZOS)
            raw = store.add_upload(img) + (f", {text}" if text else "")
        obs, first_s, times = time_calls(lambda: tool(raw, store), calls)
    return {
        "tool": cls.spec.name,
        "weights": mode,
        "model": tool.model,
        "input": (f"{asset} resized to 512x512" if asset else "text") + (f", {text}" if text else ""),
        "steps": getattr(tool, "steps", None),
        "render": f"{tool.frame_size}px {tool.ray_samples} grid {tool.mesh_grid}" if key == "3d" else None,
        "first_call_s": round(first_s, 2),
        "median_s": round(statistics.median(times), 2),
        "calls": calls,
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20),
        "rss_growth_mb": round((psutil.Process().memory_info().rss - rss0) / 2**20),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "observation": obs.text.replace("\n", " | ")[:200],
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tools", nargs="*", metavar="TOOL", help=f"some of: {', '.join(TOOLS)} (default: all)")
    ap.add_argument("--weights", choices=("real", "architecture", "tiny"), default="real")
    ap.add_argument("--calls", type=int, default=5, help="timed calls after the warm-up call")
    ap.add_argument("--steps", type=int, default=20, help="denoising steps (diffusion tools), prior steps (3D)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--light-3d", action="store_true", help="3D: 32 px views, 8+16 ray samples, 32^3 mesh grid")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # run in this process
    args = ap.parse_args(argv)
    unknown = [k for k in args.tools if k not in TOOLS]
    if unknown:
        ap.error(f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
    if args.one:
        result = bench_one(args.tools[0], args.weights, args.calls, args.steps, args.device, args.light_3d)
        print(json.dumps(result), flush=True)
        return 0
    failed = 0
    for key in args.tools or list(TOOLS):
        cmd = [
            sys.executable,
            __file__,
            key,
            "--one",
            "--weights",
            args.weights,
            "--calls",
            str(args.calls),
            "--steps",
            str(args.steps),
            "--device",
            args.device,
            *(["--light-3d"] if args.light_3d else []),
        ]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode:
            failed += 1
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(json.dumps({"tool": key, "error": tail}), flush=True)
        else:
            print(proc.stdout.strip().splitlines()[-1], flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
