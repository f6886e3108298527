"""Tiny randomly initialised checkpoints for plumbing tests of the hub-weight tools.

Each builder writes a `from_pretrained`-able folder with the same layout as the real
checkpoint (built from small configs, saved with `save_pretrained`); `install` then puts
them into a checkpoints folder the way a user would, `weights fetch NAME --from DIR`.
Their outputs are noise: tests on them check sizes, names, caching and devices, never
image content.
"""

from __future__ import annotations

from pathlib import Path

import torch

CONTROLNETS = ("canny", "hed", "scribble", "openpose", "seg", "depth", "normal")


def tokenizer():
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols (no merges): any text tokenizes."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in sorted(ByteLevel.alphabet()):
            vocab[ch + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _text_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=514,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **extra,
    )


def _unet(in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
    )


def _sd_pipeline(cls_name: str, in_channels: int):
    """An SD 1.5-shaped pipeline: 4 VAE levels (downscale 8, like the real one), tiny widths."""
    import diffusers
    from diffusers import AutoencoderKL, PNDMScheduler
    from transformers import CLIPTextModel

    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        norm_num_groups=4,
        latent_channels=4,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    return getattr(diffusers, cls_name)(
        vae=vae,
        text_encoder=CLIPTextModel(_text_config()),
        tokenizer=tokenizer(),
        unet=_unet(in_channels),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_diffusion(root: Path) -> None:
    """sd15, the seven controlnet-*, instruct-pix2pix and sd-inpaint."""
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    base = _sd_pipeline("StableDiffusionPipeline", 4)
    base.save_pretrained(root / "sd15")
    for kind in CONTROLNETS:
        net = ControlNetModel.from_unet(base.unet, conditioning_embedding_out_channels=(8, 8, 8, 8))
        net.save_pretrained(root / f"controlnet-{kind}")
    # InstructPix2Pix conditions on the input latents (4 + 4 channels), inpainting on latents + mask (4 + 1 + 4).
    for name, cls_name, channels in (
        ("instruct-pix2pix", "StableDiffusionInstructPix2PixPipeline", 8),
        ("sd-inpaint", "StableDiffusionInpaintPipeline", 9),
    ):
        _sd_pipeline(cls_name, channels).save_pretrained(root / name)


def build_dpt(root: Path) -> None:
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        reassemble_factors=[4, 2, 1, 0.5],
        is_hybrid=False,
    )
    folder = root / "dpt-depth"
    DPTForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(folder)


def build_swin2sr(root: Path) -> None:
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution, Swin2SRImageProcessor

    torch.manual_seed(0)
    config = Swin2SRConfig(
        image_size=32,
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=4,
        upscale=2,
        upsampler="pixelshuffle",
        img_range=1.0,
    )
    folder = root / "swin2sr"
    Swin2SRForImageSuperResolution(config).save_pretrained(folder)
    Swin2SRImageProcessor(pad_size=4).save_pretrained(folder)


def _fan_table() -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in for the marching-cubes table that real Shap-E checkpoints carry as buffers.

    Corner c = x + 2y + 4z, edges in the order of diffusers' `_create_flat_edge_indices`.
    Each cube case gets a triangle fan over its sign-changing edges: every vertex lies on
    the surface, but the triangles are not MC's topology (plumbing only).
    """
    edges = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]
    cases = torch.zeros(256, 5, 3, dtype=torch.long)
    masks = torch.zeros(256, 5, dtype=torch.bool)
    for case in range(256):
        crossed = [i for i, (a, b) in enumerate(edges) if ((case >> a) & 1) != ((case >> b) & 1)]
        for t in range(min(5, len(crossed) - 2)):
            cases[case, t] = torch.tensor([crossed[0], crossed[t + 1], crossed[t + 2]])
            masks[case, t] = True
    return cases, masks


def build_shap_e(root: Path) -> None:
    from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEPipeline
    from diffusers.pipelines.shap_e import ShapERenderer
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    latent_dim, hidden = 16, 8  # the prior's latent is (4 * hidden) x latent_dim: one row per MLP unit
    prior = PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        embedding_dim=latent_dim,
        num_embeddings=4 * hidden,
        additional_embeddings=0,
        time_embed_act_fn="gelu",
        norm_in_type="layer",
        embedding_proj_norm_type="layer",
        encoder_hid_proj_type=None,
        added_emb_type=None,
        embedding_proj_dim=32,
        clip_embed_dim=2 * latent_dim,
    )
    renderer = ShapERenderer(
        param_shapes=((hidden, 93), (hidden, hidden), (hidden, hidden), (hidden, hidden)),
        d_latent=latent_dim,
        d_hidden=hidden,
    )
    with torch.no_grad():
        renderer.mesh_decoder.cases, renderer.mesh_decoder.masks = _fan_table()
        renderer.mlp.mlp[-1].bias[0] = 3.0  # positive SDF inside the box: the surface is the box itself
    scheduler = HeunDiscreteScheduler(
        beta_schedule="exp",
        num_train_timesteps=1024,
        prediction_type="sample",
        use_karras_sigmas=True,
        clip_sample=True,
        clip_sample_range=1.0,
    )
    pipe = ShapEPipeline(
        prior=prior,
        text_encoder=CLIPTextModelWithProjection(_text_config()),
        tokenizer=tokenizer(),
        scheduler=scheduler,
        shap_e_renderer=renderer,
    )
    pipe.save_pretrained(root / "shap-e")


NAMES = (
    "sd15",
    *(f"controlnet-{k}" for k in CONTROLNETS),
    "instruct-pix2pix",
    "sd-inpaint",
    "dpt-depth",
    "swin2sr",
    "shap-e",
)


def build_all(root: Path) -> Path:
    """Every tiny checkpoint, one folder per manifest name under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for build in (build_diffusion, build_dpt, build_swin2sr, build_shap_e):
        build(root)
    return root


def install(src: Path, names: tuple[str, ...] = NAMES) -> None:
    """`python -m gpt4tools weights fetch NAME --from src/NAME` for each name, into the
    checkpoints folder that GPT4TOOLS_CHECKPOINTS points at."""
    from gpt4tools import weights

    for name in names:
        weights.fetch([name], from_dir=src / name, say=lambda msg: None)
