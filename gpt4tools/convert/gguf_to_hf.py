"""Convert a GGUF causal LM into a Hugging Face folder (config, safetensors, tokenizer).

    python gguf_to_hf.py MODEL.gguf OUT_DIR

Run as a subprocess of `weights fetch` with the app's own Python (transformers + gguf
from requirements.txt), so the several GB the de-quantization needs are returned to the
system when it exits. Loading a GGUF in transformers takes 15-45 s and a few GB; the
safetensors folder it writes reloads in about a second, which is what training and the
transformers backend use.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # everything comes from the GGUF: never ask a hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def convert(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # fp32: the weights are de-quantized from 4-5 bit blocks; bf16 would round them again.
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized and refuses to save them, although
    # the weights are plain floats by now: drop the marker (see docs/llm-options notes).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    convert(Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
