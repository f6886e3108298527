"""GGUF files for llama.cpp: llama.cpp's own converters, and the cache of merged adapters.

The GGUF files are written by llama.cpp's converters (`convert_lora_to_gguf.py`,
`convert_hf_to_gguf.py` with its `gguf-py`), taken from the llama-cpp-python source release
on PyPI: the same code that defines the format, at a pinned version (LLAMA_CPP_VERSION, also
the one `bash run.sh setup` builds), checked by sha256 and unpacked once into the cache. The
LoRA GGUF applies on top of the original GGUF of the base, so the 4-bit base file is used as
shipped; the merged GGUF is a standalone model.

Import-light: torch, transformers, peft and gguf are imported by the functions that use them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from gpt4tools import paths
from gpt4tools.convert.files import FetchError, sha256_file
from gpt4tools.hardware import resolve_dtype
from gpt4tools.models import TEMPLATE_FILE, ExportError, base_model_dir, read_train_config

LLAMA_CPP_VERSION = "0.3.36"
# How an adapter reaches llama.cpp (llamacpp.py): "lora" as a LoRA GGUF on the shipped base, or
# merged with its base into a standalone GGUF of that type; "auto" picks per CPU (llamacpp.resolve_form).
GGUF_FORMS = ("auto", "lora", "bf16", "f16", "q8_0", "q4_0")
# Types llama.cpp's converter does not write (it writes f32/f16/bf16/q8_0): made from the merged
# bf16 GGUF by llama.cpp's own quantizer (llama_model_quantize), as its llama-quantize tool does.
# Fewer bytes per weight, for CPUs where decoding waits on memory (docs/benchmark.md, issue 21).
QUANTIZED = ("q4_0",)

# llama.cpp's converters, from the llama-cpp-python sdist (vendor/llama.cpp); the research notes
# (shared/research/llm-options.md §2e) ran this version against transformers 5.24 / torch 2.13.
CONVERTER_SOURCE = f"pypi:llama-cpp-python=={LLAMA_CPP_VERSION}"
CONVERTER_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
_VENDOR = f"llama_cpp_python-{LLAMA_CPP_VERSION}/vendor/llama.cpp/"
_NEEDED = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "conversion/", "gguf-py/")
_CONVERTERS = f"llama.cpp-converters-{LLAMA_CPP_VERSION}-r2"  # the cache folder; -rN: bump when _NEEDED changes
_MERGED_KEY = f"convert-{LLAMA_CPP_VERSION}"  # part of a merged GGUF's cache key: what converted it


def _say(msg: str) -> None:
    # Progress goes to stderr: stdout belongs to the caller (`chat --json` merges an adapter on
    # its first run, and a download message there would corrupt the JSON).
    print(msg, file=sys.stderr, flush=True)


# -- llama.cpp's converters ------------------------------------------------------------------
def converter_dir(say=_say) -> Path:
    """llama.cpp's conversion scripts, unpacked once into the cache from the pinned sdist."""
    from gpt4tools.convert.sources import download

    cache = paths.cache_dir()
    dest = cache / "tools" / _CONVERTERS
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
        proc = subprocess.run([sys.executable, str(conv / script), *args], stdout=f, stderr=subprocess.STDOUT,
                              env=env)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-8:])
        raise ExportError(f"{script} failed (exit {proc.returncode}); full log: {log}\n{tail}")


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


# -- exports -----------------------------------------------------------------------------------
def export_merged(adapter: Path, out: Path, base: str | None = None, dtype: str = "fp32") -> Path:
    """Base + adapter merged into one Hugging Face model folder (plus tokenizer and template):
    what convert_hf_to_gguf.py reads for a merged GGUF, and an export of its own."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = base_model_dir(adapter, base)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=resolve_dtype(dtype, "cpu"))
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tmp = out.with_name(out.name + ".partial")
    merged.save_pretrained(tmp)
    tokenizer_dir = str(adapter) if (adapter / "tokenizer_config.json").is_file() else base_dir
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp)
    if (adapter / TEMPLATE_FILE).is_file():  # the prompt template it was trained with travels with it
        shutil.copyfile(adapter / TEMPLATE_FILE, tmp / TEMPLATE_FILE)
    (tmp / "export.json").write_text(json.dumps({"adapter": str(adapter), "base": base_dir, "dtype": dtype}, indent=2))
    _replace_dir(tmp, out)
    return out


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
    quantized = outtype in QUANTIZED  # the converter writes these as bf16; llama.cpp's quantizer does the rest
    # not quantize_gguf's own .partial name: it reads the converter's file mapped while it writes
    tmp = out.with_name(out.name + (".bf16.partial" if quantized else ".partial"))
    try:
        _run_converter("convert_hf_to_gguf.py", ["--outtype", "bf16" if quantized else outtype,
                                                 "--outfile", str(tmp), str(merged)], _log_path(out))
        _check_gguf(tmp, want_type="model")
        if quantized:
            quantize_gguf(tmp, out, outtype)
        else:
            os.replace(tmp, out)
    finally:
        if not keep_hf:
            _remove(merged)
        if quantized:
            _remove(tmp)
    return out


def quantize_gguf(src: Path, out: Path, outtype: str) -> Path:
    """A GGUF model re-quantized to `outtype` (one of QUANTIZED) by llama.cpp's quantizer."""
    import ctypes

    try:
        import llama_cpp
    except ImportError as e:
        raise ExportError(f"a {outtype} GGUF is made by llama.cpp's quantizer: install llama-cpp-python "
                          "(bash run.sh setup)") from e
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{outtype.upper()}")
    params.nthread = os.cpu_count() or 1
    tmp = out.with_name(out.name + ".partial")
    if tmp.resolve() == src.resolve():  # llama.cpp maps its input: writing over it dies of SIGBUS
        raise ValueError(f"quantize_gguf: {src} is also where it would write")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        _remove(tmp)
        raise ExportError(f"llama.cpp could not quantize {src} to {outtype} (llama_model_quantize returned {rc})")
    _check_gguf(tmp, want_type="model")
    os.replace(tmp, out)
    return out


# -- the cache of merged GGUFs -------------------------------------------------------------------
# Each adapter ever served or benchmarked adds a merged file (bf16: 1.27 GB for the default's
# base), and a disk once filled up with experiments' files: the folder is kept under this many
# GB, least recently used out (GPT4TOOLS_GGUF_CACHE_GB; 0: no bound).
GGUF_CACHE_GB = 10.0


def merged_gguf(adapter: Path, outtype: str) -> Path:
    """Base + peft adapter merged into a standalone GGUF of `outtype`, made once into the
    cache (keyed by the adapter's weights, its base and the type) and verified by sha256."""
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise ValueError(f"{adapter} is not a peft adapter folder (no adapter_model.safetensors)")
    base = read_train_config(adapter).get("base_model") or \
        json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    key = hashlib.sha256(f"{sha256_file(weights)}|{base}|{outtype}|{_MERGED_KEY}".encode()).hexdigest()[:16]
    out = paths.cache_dir() / "gguf" / f"{Path(base).name}+{adapter.name}-{key}.{outtype}.gguf"
    check = out.with_name(out.name + ".sha256")
    if out.is_file() and check.is_file() and check.read_text().strip() == sha256_file(out):
        os.utime(check)  # used now: the last to be pruned
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if outtype in QUANTIZED:  # from the merged bf16 file, itself cached
        quantize_gguf(merged_gguf(adapter, "bf16"), out, outtype)
    else:
        export_gguf_merged(adapter, out, outtype=outtype, keep_hf=False)
    check.write_text(sha256_file(out) + "\n")
    prune_merged(keep=out)
    return out


def gguf_cache_limit() -> int:
    """The merged GGUFs' byte budget (GPT4TOOLS_GGUF_CACHE_GB, else GGUF_CACHE_GB; 0: unbounded)."""
    raw = os.environ.get("GPT4TOOLS_GGUF_CACHE_GB", "")
    try:
        gb = float(raw) if raw.strip() else GGUF_CACHE_GB
    except ValueError:
        raise ValueError(f"GPT4TOOLS_GGUF_CACHE_GB must be a number of GB, not {raw!r}") from None
    if not 0 <= gb < float("inf"):  # also NaN
        raise ValueError(f"GPT4TOOLS_GGUF_CACHE_GB must be a finite number >= 0, not {raw!r}")
    return int(gb * 2**30)


def prune_merged(keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Delete the least recently used merged GGUFs (by their .sha256 file's time: made or last
    loaded) until the folder holds at most `limit` bytes (gguf_cache_limit()); never `keep`.
    A process that still has a deleted file open keeps reading it (POSIX). Returns what went."""
    limit = gguf_cache_limit() if limit is None else limit
    folder = paths.cache_dir() / "gguf"
    if limit <= 0 or not folder.is_dir():
        return []
    files = []
    for f in folder.glob("*.gguf"):
        check = f.with_name(f.name + ".sha256")
        try:  # another process may prune at the same time
            files.append(((check if check.is_file() else f).stat().st_mtime, f.stat().st_size, f))
        except FileNotFoundError:
            continue
    total = sum(size for _, size, _ in files)
    gone = []
    for _, size, f in sorted(files):
        if total <= limit:
            break
        if keep is not None and f.resolve() == keep.resolve():
            continue
        total -= size
        f.unlink(missing_ok=True)
        f.with_name(f.name + ".sha256").unlink(missing_ok=True)
        gone.append(f)
    if gone:
        _say(f"pruned {len(gone)} merged GGUF(s) from {folder} (least recently used; "
             f"GPT4TOOLS_GGUF_CACHE_GB={limit / 2**30:g})")
    return gone


# -- folders -----------------------------------------------------------------------------------
def _remove(p: Path) -> None:
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
