"""Export a trained adapter: `python -m gpt4tools export ...`.

    export --adapter adapters/default --merged runs/export/merged     a merged Hugging Face model
    export --adapter adapters/default --gguf runs/export/lora.gguf    the LoRA as a GGUF adapter
    export --adapter adapters/default --gguf-merged runs/export/m.gguf --outtype q8_0
    export --adapter adapters/default --card                          (re)write the model card
    export --adapter runs/train/mine --cast bf16                      halve the adapter file, in place

The GGUF files are written by llama.cpp's own converters (`convert_lora_to_gguf.py`,
`convert_hf_to_gguf.py` with its `gguf-py`), taken from the llama-cpp-python source release
on PyPI: the same code that defines the format, at a pinned version, checked by sha256 and
unpacked once into the cache. The LoRA GGUF applies on top of the original GGUF of the base
(`--backend llamacpp --model default --adapter lora.gguf`), so the 4-bit base file is used
as shipped; the merged GGUF is a standalone model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from gpt4tools import paths
from gpt4tools.convert.files import FetchError

# llama.cpp's converters, from the llama-cpp-python sdist (vendor/llama.cpp); the research notes
# (shared/research/llm-options.md §2e) ran this version against transformers 5.24 / torch 2.13.
CONVERTER_SOURCE = "pypi:llama-cpp-python==0.3.36"
CONVERTER_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
_VENDOR = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
_NEEDED = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "conversion/", "gguf-py/")
CARD = "README.md"


class ExportError(Exception):
    """Input that cannot be exported (the message says what to change)."""


# -- the adapter and its base --------------------------------------------------------------
def read_train_config(adapter: Path) -> dict:
    path = adapter / "train_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def base_model_dir(adapter: Path, base: str | None = None) -> str:
    """The base the adapter was trained on: `base`, else its train_config's base_model."""
    from gpt4tools.llm import resolve_model

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


def export_merged(adapter: Path, out: Path, base: str | None = None, dtype: str = "fp32") -> Path:
    """Base + adapter merged into one Hugging Face model folder (plus tokenizer and template)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gpt4tools.llm.hf import resolve_dtype
    from gpt4tools.prompt import TEMPLATE_FILE, PromptTemplate

    base_dir = base_model_dir(adapter, base)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=resolve_dtype(dtype, "cpu"))
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tmp = out.with_name(out.name + ".partial")
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(str(adapter) if (adapter / "tokenizer_config.json").is_file() else base_dir).save_pretrained(tmp)
    if (adapter / TEMPLATE_FILE).is_file():  # what the model was trained with travels with it
        PromptTemplate.load(adapter).save(tmp)
    (tmp / "export.json").write_text(json.dumps({"adapter": str(adapter), "base": base_dir, "dtype": dtype}, indent=2))
    _replace_dir(tmp, out)
    return out


ADAPTER_DTYPES = ("fp32", "bf16", "fp16")


def cast_adapter(adapter: Path, dtype: str) -> Path:
    """Rewrite adapter_model.safetensors with its floating-point tensors in `dtype`, in place.
    bf16 halves the file (a 0.5B model's r=16 adapter: 22 -> 11 MB) and costs nothing at
    inference in bf16, where the LoRA product is rounded to bf16 anyway; peft casts the
    weights back to the model's dtype when it loads them."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from gpt4tools.llm.hf import resolve_dtype

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


# -- llama.cpp's converters ------------------------------------------------------------------
def _say(msg: str) -> None:
    # Progress goes to stderr: stdout belongs to the caller (`chat --json` merges an adapter on
    # its first run, and a download message there would corrupt the JSON).
    print(msg, file=sys.stderr, flush=True)


def converter_dir(say=_say) -> Path:
    """llama.cpp's conversion scripts, unpacked once into the cache from the pinned sdist."""
    from gpt4tools.convert.sources import download

    cache = paths.cache_dir()
    dest = cache / "tools" / "llama.cpp-converters-0.3.36-r2"  # -rN: bump when _NEEDED changes
    if (dest / ".complete").is_file():
        return dest
    archive = download(CONVERTER_SOURCE, CONVERTER_SHA256, cache, say)
    tmp = dest.with_name(dest.name + f".partial-{os.getpid()}")
    _remove(tmp)
    tmp.mkdir(parents=True)
    with tarfile.open(archive) as t:
        members = [m for m in t.getmembers() if m.name.startswith(_VENDOR)
                   and m.name[len(_VENDOR):].startswith(_NEEDED) and (m.isfile() or m.isdir())]
        for m in members:
            m.name = m.name[len(_VENDOR):]
        t.extractall(tmp, members=members, filter="data")
    for need in _NEEDED:
        if not (tmp / need).exists():
            raise FetchError(f"{archive.name} lacks {need}: not the release this code expects")
    (tmp / ".complete").write_text(CONVERTER_SOURCE + "\n")
    _replace_dir(tmp, dest)
    return dest


def _run_converter(script: str, args: list[str], log: Path) -> None:
    conv = converter_dir()
    env = {**os.environ, "PYTHONPATH": str(conv / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, str(conv / script), *args], stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-8:])
        raise ExportError(f"{script} failed (exit {proc.returncode}); full log: {log}\n{tail}")


def export_gguf_lora(adapter: Path, out: Path, base: str | None = None, outtype: str = "f32") -> Path:
    """The adapter as a llama.cpp LoRA GGUF, for use on top of the base model's GGUF."""
    base_dir = base_model_dir(adapter, base)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    _run_converter("convert_lora_to_gguf.py", ["--base", base_dir, "--outtype", outtype, "--outfile", str(tmp),
                                               str(adapter)], _log_path(out))
    _check_gguf(tmp, want_type="adapter")
    os.replace(tmp, out)
    return out


def export_gguf_merged(adapter: Path, out: Path, base: str | None = None, outtype: str = "q8_0",
                       keep_hf: bool = True) -> Path:
    """Base + adapter merged, then converted into one standalone GGUF model. The merged
    Hugging Face folder it goes through stays beside `out` (`<stem>.hf`) unless not keep_hf."""
    merged = out.with_name(out.stem + ".hf")
    export_merged(adapter, merged, base)
    tmp = out.with_name(out.name + ".partial")
    try:
        _run_converter("convert_hf_to_gguf.py", ["--outtype", outtype, "--outfile", str(tmp), str(merged)],
                       _log_path(out))
        _check_gguf(tmp, want_type="model")
    finally:
        if not keep_hf:
            _remove(merged)
    os.replace(tmp, out)
    return out


def _log_path(out: Path) -> Path:
    """Converter output goes to the cache's logs, not beside the exported file."""
    return paths.cache_dir() / "logs" / f"export-{out.name}.log"


def _check_gguf(path: Path, want_type: str) -> None:
    """A written GGUF must parse, hold tensors, and be the kind of file asked for."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure means the file is unusable
        raise ExportError(f"{path} is not a readable GGUF file ({e})") from e
    field = reader.fields.get("general.type")
    kind = bytes(field.parts[field.data[0]]).decode() if field else "model"
    if kind != want_type or not reader.tensors:
        raise ExportError(f"{path}: expected a GGUF {want_type} with tensors, got {kind} with {len(reader.tensors)}")


# -- model card -----------------------------------------------------------------------------
def write_card(adapter: Path, scores: list[Path] = ()) -> Path:
    """README.md beside the adapter: base, data, settings, benchmark figures, licence."""
    cfg = read_train_config(adapter)
    base = cfg.get("base_model", "?")
    lines = [f"# gpt4tools LoRA adapter: `{adapter.name}`", "",
             f"A LoRA adapter that teaches `{base}` the GPT4Tools ReAct format "
             "(`Thought / Action / Action Input / Observation`) for the project's visual tools.", "",
             "## Use", "", "```bash",
             f"python -m gpt4tools chat --model {base} --adapter {adapter} --image photo.jpg",
             f"python -m gpt4tools export --adapter {adapter} --gguf lora.gguf   # for --backend llamacpp",
             "```", "", "The prompt template it was trained with is `template.json` (loaded with the adapter).", "",
             "## Training", ""]
    if cfg:
        keys = ("base_model", "data", "data_sha256", "max_samples", "samples", "skipped", "epochs", "max_steps", "total_steps",
                "micro_batch_size", "gradient_accumulation", "learning_rate", "warmup_steps", "lora_r", "lora_alpha",
                "lora_dropout", "target_modules", "lora_layers", "cutoff_len", "dtype", "dtype_resolved", "seed", "processes", "train_seconds",
                "train_tokens")
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | `{json.dumps(cfg[k])}` |" for k in keys if k in cfg]
        if cfg.get("command"):
            lines += ["", "Command:", "", "```bash", cfg["command"], "```"]
    else:
        lines.append("(no train_config.json beside the adapter)")
    metrics_path = adapter / "metrics.jsonl"
    if metrics_path.is_file():
        rows = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
        if rows:
            k = max(1, min(10, len(rows) // 4))  # single steps are noisy: compare the ends' means
            first, last = (sum(r["loss"] for r in part) / len(part) for part in (rows[:k], rows[-k:]))
            lines += ["", f"Loss: mean {first:.3f} over the first {k} steps -> {last:.3f} over the last {k} "
                          f"(of {rows[-1]['step']}); median {sorted(r['tokens_per_s'] for r in rows)[len(rows) // 2]:.0f} "
                          "tokens/s."]
    lines += ["", "## Benchmark (the paper's metric, `python -m gpt4tools bench`)", ""]
    if scores:
        lines += ["| run | data | n | SR_t | SR_act | SR_args | SR | IoU |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for s in scores:
            r = json.loads(Path(s).read_text())
            lines.append(f"| {Path(s).parent.name} | {Path(r.get('data', '?')).name} | {r['n']} | "
                         + " | ".join(f"{100 * r[k]:.1f}" for k in ("SR_t", "SR_act", "SR_args", "SR", "IoU")) + " |")
    else:
        lines.append("(not benchmarked yet)")
    lines += ["", "## Licence", "", "The adapter is a derivative of its base model, whose licence applies "
              "(see `python -m gpt4tools weights list`). Code: Apache-2.0.", ""]
    path = adapter / CARD
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# -- helpers --------------------------------------------------------------------------------
def _remove(p: Path) -> None:
    import shutil

    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Swap a finished folder into place: a kill leaves the old one or the new one, never half."""
    old = dest.with_name(dest.name + ".old")
    _remove(old)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    _remove(old)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpt4tools export",
                                 description="Export a LoRA adapter: merged HF model, GGUF (LoRA or merged), model card.")
    ap.add_argument("--adapter", required=True, help="the adapter folder (output of `train`)")
    ap.add_argument("--base", help="base model (default: the one in the adapter's train_config.json)")
    ap.add_argument("--merged", help="write a merged Hugging Face model folder here")
    ap.add_argument("--gguf", help="write the LoRA as a llama.cpp GGUF adapter here")
    ap.add_argument("--gguf-merged", help="write a merged standalone GGUF model here")
    ap.add_argument("--outtype", default=None, help="GGUF tensor type (LoRA: f32/f16/bf16/q8_0, default f32; merged: default q8_0)")
    ap.add_argument("--cast", choices=ADAPTER_DTYPES, help="rewrite the adapter's weights in this dtype, in place (bf16: half the file)")
    ap.add_argument("--card", action="store_true", help="write the model card README.md into the adapter folder")
    ap.add_argument("--scores", nargs="*", default=[], help="scores.json files to quote in the model card")
    args = ap.parse_args(argv)
    adapter = Path(args.adapter)
    if not (args.merged or args.gguf or args.gguf_merged or args.card or args.cast):
        ap.error("say what to export: --cast, --merged, --gguf, --gguf-merged and/or --card")
    try:
        if args.cast:
            print(f"adapter weights in {args.cast}: {cast_adapter(adapter, args.cast)}")
        if args.merged:
            print(f"merged model: {export_merged(adapter, Path(args.merged), args.base)}")
        if args.gguf:
            print(f"LoRA GGUF: {export_gguf_lora(adapter, Path(args.gguf), args.base, args.outtype or 'f32')}")
        if args.gguf_merged:
            print(f"merged GGUF: {export_gguf_merged(adapter, Path(args.gguf_merged), args.base, args.outtype or 'q8_0')}")
        if args.card:
            print(f"model card: {write_card(adapter, [Path(s) for s in args.scores])}")
    except (ExportError, FetchError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
