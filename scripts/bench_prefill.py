"""How fast does the transformers backend read a prompt, and how fast does it run the benchmark?

The same N prompts of the unseen-tools split, the default model and adapter in bf16 (or --dtype),
each measured with the lm head's input packed (what HFCausalLM does, gpt4tools/llm/hf.py
pack_head_input) and as torch runs it unpacked, one after the other in this one command:

- prefill: one forward pass over each prompt alone, the last position's logits only (what
  generate does first); the median seconds per prompt;
- batch B: generate_batch over the prompts, B at a time, as `bench` runs them (max 96 new
  tokens, the ReAct stop strings); seconds per prompt.

    .venv/bin/python scripts/bench_prefill.py                  # N=16, batches 8 and 16
    .venv/bin/python scripts/bench_prefill.py --n 32 --batch-sizes 1,16 --out runs/prefill.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import cpu_model  # noqa: E402

from gpt4tools import react  # noqa: E402
from gpt4tools.bench import build_prompt  # noqa: E402
from gpt4tools.llm import load_llm  # noqa: E402
from gpt4tools.llm.hf import pack_head_input  # noqa: E402


def prompts(n: int) -> list[str]:
    """N prompts of median length: the middle of the split sorted by length."""
    recs = [json.loads(line) for line in Path("data/test_unseen.jsonl").read_text().splitlines()]
    ps = sorted((build_prompt(r) for r in recs), key=len)
    start = max(0, len(ps) // 2 - n // 2)
    return ps[start:start + n]


def prefill_seconds(llm, ps: list[str]) -> list[float]:
    import torch

    times = []
    with torch.inference_mode():
        for p in ps:
            ids = llm.tokenizer(p, return_tensors="pt").input_ids.to(llm.device)
            t0 = time.perf_counter()
            llm.model(input_ids=ids, logits_to_keep=1)
            times.append(time.perf_counter() - t0)
    return times


def batch_seconds(llm, ps: list[str], batch: int) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    texts = []
    for i in range(0, len(ps), batch):
        texts += [g.text for g in llm.generate_batch(ps[i:i + batch], stop=react.STOP, max_new_tokens=96)]
    return (time.perf_counter() - t0) / len(ps), texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-sizes", default="8,16")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = ap.parse_args()
    llm = load_llm("default", adapter=args.adapter, backend="transformers", dtype=args.dtype)
    ps = prompts(args.n)
    prefill_seconds(llm, ps[:2])  # warm-up: oneDNN picks its kernels on the first shapes
    batches = [int(b) for b in args.batch_sizes.split(",")]
    rows, texts = {}, {}
    for mode in ("unpacked", "packed"):
        if mode == "unpacked" and llm.head_packing is not None:
            llm.head_packing.remove()
        if mode == "packed":
            llm.head_packing = pack_head_input(llm.model)
        row = {"prefill_median_s": statistics.median(prefill_seconds(llm, ps))}
        for b in batches:
            row[f"batch{b}_s_per_prompt"], texts[(mode, b)] = batch_seconds(llm, ps, b)
        rows[mode] = row
    same = {b: texts[("unpacked", b)] == texts[("packed", b)] for b in batches}
    print(f"{cpu_model()}, {args.dtype}, {len(ps)} prompts of the unseen-tools split")
    print("| | " + " | ".join(rows["packed"]) + " |")
    print("|---|" + "---:|" * len(rows["packed"]))
    for mode, row in rows.items():
        print(f"| {mode} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |")
    ratios = (rows["unpacked"][k] / rows["packed"][k] for k in rows["packed"])
    print("| speed-up | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    print("same outputs, packed vs unpacked:", ", ".join(f"batch {b}: {s}" for b, s in same.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cpu": cpu_model(), "dtype": args.dtype, "n": len(ps), "rows": rows,
                                        "same_outputs": same}, indent=2))


if __name__ == "__main__":
    main()
