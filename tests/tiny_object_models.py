"""Tiny, randomly initialised OWL-ViT / SAM / BLIP checkpoints, for plumbing tests only.

They have the real classes, processors and file layout of the hub checkpoints the object
tools load (`weights.path("owlvit")` etc.), at a few hundred kB each; their outputs are
meaningless. Built with `save_pretrained` and installed with `weights.fetch(..., from_dir=)`,
so loading them exercises the real code path.
"""

from __future__ import annotations

from pathlib import Path

_LAYER = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}


def _owlvit(d: Path) -> None:
    from transformers import (
        CLIPTokenizer,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    vocab: dict[str, int] = {}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    # Special tokens last: OWL-ViT treats a query whose first id is 0 as padding.
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    text = dict(
        vocab_size=len(vocab),
        max_position_embeddings=32,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        **_LAYER,
    )
    cfg = OwlViTConfig(text_config=text, vision_config=dict(image_size=32, patch_size=8, **_LAYER), projection_dim=32)
    model = OwlViTForObjectDetection(cfg)
    # Zero the box head's last layer: each box is then its patch's grid-cell prior, a valid box,
    # so the plumbing test sees boxes (a random head yields degenerate ones).
    for p in model.box_head.dense2.parameters():
        p.data.zero_()
    model.save_pretrained(d)
    images = OwlViTImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    OwlViTProcessor(image_processor=images, tokenizer=CLIPTokenizer(vocab=vocab, merges=[])).save_pretrained(d)


def _sam(d: Path) -> None:
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    cfg = SamConfig(
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
            "output_channels": 16,
            "num_pos_feats": 8,
            "window_size": 2,
            "global_attn_indexes": [1],
            "mlp_dim": 37,
        },
        prompt_encoder_config={"hidden_size": 16, "image_size": 64, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={
            "hidden_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "mlp_dim": 32,
            "iou_head_hidden_dim": 16,
        },
    )
    SamModel(cfg).save_pretrained(d)
    images = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    SamProcessor(image_processor=images).save_pretrained(d)


def _blip(d: Path, vqa: bool) -> None:
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[DEC]",
        "a",
        "cat",
        "how",
        "many",
        "people",
        "photo",
        "of",
        "the",
        "is",
        "there",
        "one",
        "two",
    ]
    vocab = {w: i for i, w in enumerate(words)}
    text = dict(
        vocab_size=len(vocab),
        max_position_embeddings=64,
        bos_token_id=vocab["[DEC]"],
        pad_token_id=0,
        sep_token_id=vocab["[SEP]"],
        eos_token_id=vocab["[SEP]"],
        **_LAYER,
    )
    cfg = BlipConfig(text_config=text, vision_config=dict(image_size=32, patch_size=8, **_LAYER), projection_dim=32)
    (BlipForQuestionAnswering if vqa else BlipForConditionalGeneration)(cfg).save_pretrained(d)
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    ).save_pretrained(d)


def build_tiny(root: Path) -> Path:
    """Build owlvit/, sam/, blip-caption/, blip-vqa/ and install them into `root`/checkpoints
    the way a user would (`weights fetch NAME --from DIR`); returns that checkpoints folder."""
    import os

    import torch

    from gpt4tools import weights

    torch.manual_seed(0)
    builders = {
        "owlvit": _owlvit,
        "sam": _sam,
        "blip-caption": lambda d: _blip(d, False),
        "blip-vqa": lambda d: _blip(d, True),
    }
    checkpoints = root / "checkpoints"
    old = os.environ.get("GPT4TOOLS_CHECKPOINTS")
    os.environ["GPT4TOOLS_CHECKPOINTS"] = str(checkpoints)
    try:
        for name, build in builders.items():
            src = root / "src" / name
            src.mkdir(parents=True, exist_ok=True)
            build(src)
            weights.fetch([name], from_dir=src, say=lambda msg: None)
    finally:
        if old is None:
            del os.environ["GPT4TOOLS_CHECKPOINTS"]
        else:
            os.environ["GPT4TOOLS_CHECKPOINTS"] = old
    return checkpoints
