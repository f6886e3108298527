#!/usr/bin/env bash
# Which small LLM should be the embedded default? Each base model gets the same LoRA recipe on
# the same first N training records (after the trainer's seeded shuffle), then is scored on the
# chat split (the agent's own prompts, held-out messages) and on a seen-tools validation subset.
#
#   bash scripts/compare_bases.sh                      # N=600, the three offline bases
#   N=300 BASES="smollm2-135m" bash scripts/compare_bases.sh
#   N=300 BASES="qwen2.5-coder-1.5b=/tmp/q15hf" bash scripts/compare_bases.sh   # NAME=a Hugging Face folder
# (Qwen2.5-Coder-1.5B is offline as a GGUF only: `python gpt4tools/convert/gguf_to_hf.py
#  checkpoints/qwen2.5-coder-1.5b/model.gguf /tmp/q15hf` de-quantizes it to such a folder, ~7 GB, ~1.5 min.)
#
# Run folders: runs/compare/<base>/{adapter,chat5,val3}; train seconds are in
# adapter/train_config.json, seconds per record in each bench folder's predictions.jsonl.
# Summary: python scripts/bench_report.py runs/compare/*/chat5 (and */val3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${N:-600}
for entry in ${BASES:-smollm2-135m gemma-3-270m qwen2.5-coder-0.5b}; do
  base=${entry%%=*} model=${entry#*=}
  out=runs/compare/$base
  [ -f "$out/adapter/adapter_model.safetensors" ] ||
    $PY -m gpt4tools train --base-model "$model" --data data/train.jsonl --out-dir "$out/adapter" --max-samples "$N" \
      --lora-layers top:15 --target-modules q_proj k_proj v_proj o_proj gate_proj up_proj down_proj \
      --learning-rate 1e-3 --gradient-accumulation 4 --warmup-steps 10 --save-steps 25 --cutoff-len 2400 --threads 2
  $PY -m gpt4tools bench --data data/chat_eval.jsonl --model "$model" --adapter "$out/adapter" --backend "${BACKEND:-auto}" \
    --per-tool 5 --max-new-tokens 96 --out "$out/chat5"
  $PY -m gpt4tools bench --data data/val.jsonl --model "$model" --adapter "$out/adapter" --backend "${BACKEND:-auto}" \
    --per-tool 3 --max-new-tokens 96 --out "$out/val3"
done
