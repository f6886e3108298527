"""Training speed: our LoRA loop (gpt4tools.train) against a plain transformers.Trainer + peft.

    python scripts/bench_train.py                       # default model, 24 samples, 3 repeats
    python scripts/bench_train.py --model smollm2-135m --samples 24 --repeats 3 --out runs/bench_train.json

Both sides train the same LoRA (the paper's r/alpha/dropout on q/k/v/o) on the same samples of
data/train.jsonl, tokenized and masked by the same function, at batch 1 in the same dtype and
thread count, in this one process, alternating (ours, Trainer, ours, ...) so machine noise hits
both. One untimed warm-up pass runs first, and the first step of every run is not timed.
Reported: the median over repeats of tokens/s (sequence tokens through forward+backward+optimizer,
excluding the warm-up step), and the ratio ours/Trainer. The Trainer side is what most tutorials
do: full logits over the sequence, loss from `labels` inside the model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt4tools.train import IGNORE, TrainConfig, collate, load_base, loss_on_tail, read_records, tokenize_record  # noqa: E402


def lora_model(cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    _, tokenizer, model = load_base(cfg, "cpu")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    return tokenizer, get_peft_model(model, lora)


def run_ours(cfg: TrainConfig, samples: list[dict]) -> float:
    import torch

    tokenizer, model = lora_model(cfg)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    tokens, seconds = 0, 0.0
    for i, s in enumerate(samples):
        batch = collate([s], tokenizer.pad_token_id)
        t0 = time.perf_counter()
        loss, _ = loss_on_tail(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i:  # step 0 is the warm-up
            seconds += time.perf_counter() - t0
            tokens += len(s["input_ids"])
    return tokens / seconds


def run_trainer(cfg: TrainConfig, samples: list[dict]) -> float:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from gpt4tools.hardware import resolve_dtype

    tokenizer, model = lora_model(cfg)

    class Timer(TrainerCallback):
        def __init__(self):
            self.t0, self.seconds, self.step = 0.0, 0.0, 0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if self.step:  # step 0 is the warm-up
                self.seconds += time.perf_counter() - self.t0
            self.step += 1

    def collator(batch):
        b = batch[0]
        return {"input_ids": torch.tensor([b["input_ids"]]), "labels": torch.tensor([b["labels"]]),
                "attention_mask": torch.ones(1, len(b["input_ids"]), dtype=torch.long)}

    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=1, learning_rate=cfg.learning_rate,
                                 num_train_epochs=1, logging_steps=10_000, save_strategy="no", report_to=[],
                                 use_cpu=True, bf16=resolve_dtype(cfg.dtype, "cpu") == torch.bfloat16,
                                 dataloader_num_workers=0,
                                 remove_unused_columns=False, disable_tqdm=True, lr_scheduler_type="constant")
        data = [{"input_ids": s["input_ids"], "labels": s["labels"]} for s in samples]
        Trainer(model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[timer]).train()
    tokens = sum(len(s["input_ids"]) for s in samples[1:])
    return tokens / timer.seconds


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", default="data/train.jsonl")
    ap.add_argument("--samples", type=int, default=24, help="steps per run (the first is a warm-up)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="auto", help="auto (bf16 where the CPU has it natively, else fp32), fp32, bf16")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(base_model=args.model, data=[args.data], dtype=args.dtype)
    tokenizer, _ = lora_model(cfg)
    records, _ = read_records(cfg.data)
    samples = [s for r in records[: args.samples * 2] if (s := tokenize_record(r, tokenizer, cfg.cutoff_len))]
    samples = samples[: args.samples]
    assert all(IGNORE in s["labels"] for s in samples)
    # The first training steps in a process run slower (allocator, oneDNN kernel choice):
    # one untimed pass on a few samples keeps that out of whichever side would go first.
    run_ours(cfg, samples[:3])
    ours, theirs = [], []
    for rep in range(args.repeats):
        torch.manual_seed(rep)
        ours.append(run_ours(cfg, samples))
        torch.manual_seed(rep)
        theirs.append(run_trainer(cfg, samples))
        print(f"repeat {rep + 1}: ours {ours[-1]:.0f} tok/s, Trainer {theirs[-1]:.0f} tok/s", flush=True)
    result = {"model": args.model, "dtype": args.dtype, "threads": torch.get_num_threads(), "samples": len(samples),
              "mean_tokens_per_sample": statistics.mean(len(s["input_ids"]) for s in samples),
              "repeats": args.repeats, "ours_tok_s": ours, "trainer_tok_s": theirs,
              "ours_median": statistics.median(ours), "trainer_median": statistics.median(theirs)}
    result["ratio"] = result["ours_median"] / result["trainer_median"]
    print(f"| loop | median tok/s |\n|---|---:|\n| gpt4tools.train | {result['ours_median']:.0f} |\n"
          f"| transformers.Trainer + peft | {result['trainer_median']:.0f} |\n\nratio {result['ratio']:.2f}x "
          f"({len(samples)} samples of ~{result['mean_tokens_per_sample']:.0f} tokens, {args.repeats} repeats)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
