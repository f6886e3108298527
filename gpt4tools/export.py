"""Export a trained adapter: `python -m gpt4tools export ...`.

    export --adapter adapters/default --merged runs/export/merged     a merged Hugging Face model
    export --adapter adapters/default --gguf runs/export/lora.gguf    the LoRA as a GGUF adapter
    export --adapter adapters/default --gguf-merged runs/export/m.gguf --outtype q8_0
    export --adapter adapters/default --card                          (re)write the model card
    export --adapter runs/train/mine --cast bf16                      halve the adapter file, in place

The steps themselves live below the pipeline: adapters, their base and dtype casts in
gpt4tools.models; the merge and llama.cpp's converters (pinned, checked by sha256, unpacked once
into the cache) in gpt4tools.llm.gguf. The LoRA GGUF applies on top of the original GGUF of the
base (`--backend llamacpp --model default --adapter lora.gguf`), so the 4-bit base file is used
as shipped; the merged GGUF is a standalone model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gpt4tools.convert.files import FetchError
from gpt4tools.llm.gguf import export_gguf_lora, export_gguf_merged, export_merged
from gpt4tools.metrics import METRICS
from gpt4tools.models import ADAPTER_DTYPES, ExportError, cast_adapter, read_train_config
from gpt4tools.records import read_jsonl

CARD = "README.md"


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
        keys = ("base_model", "data", "data_sha256", "max_samples", "samples", "skipped", "epochs", "max_steps",
                "total_steps", "micro_batch_size", "gradient_accumulation", "learning_rate", "warmup_steps", "lora_r",
                "lora_alpha", "lora_dropout", "target_modules", "lora_layers", "cutoff_len", "dtype", "dtype_resolved",
                "seed", "processes", "train_seconds", "train_tokens")
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | `{json.dumps(cfg[k])}` |" for k in keys if k in cfg]
        if cfg.get("command"):
            lines += ["", "Command:", "", "```bash", cfg["command"], "```"]
    else:
        lines.append("(no train_config.json beside the adapter)")
    metrics_path = adapter / "metrics.jsonl"
    if metrics_path.is_file():
        rows = read_jsonl(metrics_path, allow_list=False).values()
        if rows:
            k = max(1, min(10, len(rows) // 4))  # single steps are noisy: compare the ends' means
            first, last = (sum(r["loss"] for r in part) / len(part) for part in (rows[:k], rows[-k:]))
            median = sorted(r["tokens_per_s"] for r in rows)[len(rows) // 2]
            lines += ["", f"Loss: mean {first:.3f} over the first {k} steps -> {last:.3f} over the last {k} "
                          f"(of {rows[-1]['step']}); median {median:.0f} tokens/s."]
    lines += ["", "## Benchmark (the paper's metric, `python -m gpt4tools bench`)", ""]
    if scores:
        lines += ["| run | data | n | " + " | ".join(METRICS) + " |", "|---|---|---:|" + "---:|" * len(METRICS)]
        for s in scores:
            r = json.loads(Path(s).read_text())
            lines.append(f"| {Path(s).parent.name} | {Path(r.get('data', '?')).name} | {r['n']} | "
                         + " | ".join(f"{100 * r[k]:.1f}" for k in METRICS) + " |")
    else:
        lines.append("(not benchmarked yet)")
    lines += ["", "## Licence", "", "The adapter is a derivative of its base model, whose licence applies "
              "(see `python -m gpt4tools weights list`). Code: Apache-2.0.", ""]
    path = adapter / CARD
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpt4tools export",
                                 description="Export a LoRA adapter: merged HF model, GGUF (LoRA or merged), "
                                             "model card.")
    ap.add_argument("--adapter", required=True, help="the adapter folder (output of `train`)")
    ap.add_argument("--base", help="base model (default: the one in the adapter's train_config.json)")
    ap.add_argument("--merged", help="write a merged Hugging Face model folder here")
    ap.add_argument("--gguf", help="write the LoRA as a llama.cpp GGUF adapter here")
    ap.add_argument("--gguf-merged", help="write a merged standalone GGUF model here")
    ap.add_argument("--outtype", default=None,
                    help="GGUF tensor type (LoRA: f32/f16/bf16/q8_0, default f32; merged: those or q4_0, default q8_0)")
    ap.add_argument("--cast", choices=ADAPTER_DTYPES,
                    help="rewrite the adapter's weights in this dtype, in place (bf16: half the file)")
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
            out = export_gguf_merged(adapter, Path(args.gguf_merged), args.base, args.outtype or "q8_0")
            print(f"merged GGUF: {out}")
        if args.card:
            print(f"model card: {write_card(adapter, [Path(s) for s in args.scores])}")
    except (ExportError, FetchError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
