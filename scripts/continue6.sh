#!/usr/bin/env bash
# The sixth continuation (docs/benchmark.md, "Loose wording"), from the fifth (scripts/continue5.sh):
# 90 multi-image records, 50 'original' ones (either of two uploads meant, this time), 30 requests
# for unavailable tools and 50 invented-tool records of which 30 % ask for what nothing offered does,
# with 50 replayed records and 10 general questions. ~20 min on 2 cores; resumable.
#
#   bash scripts/continue6.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
INIT=${INIT:-runs/train/continue5}
OUT=${OUT:-runs/train/continue6}
mkdir -p runs/data
data() {  # $1: output file, then the generator's module and arguments
  local out=$1; shift
  [ -s "$out" ] || { $PY -m "$@" --out "$out.partial" && mv "$out.partial" "$out"; }
}
data runs/data/dialogues_train_s7_n50_original.jsonl gpt4tools.data.dialogues --records 50 --seed 7 --kinds original
data runs/data/dialogues_train_s7_n30_unavailable.jsonl gpt4tools.data.dialogues --records 30 --seed 7 --kinds unavailable
data runs/data/invented_train_s7_n50_u30.jsonl gpt4tools.data.invented --split train --records 50 --seed 7 \
  --unavailable-share 0.3
INIT=$INIT SEED=7 DIALOGUES=90 KINDS="multi-image" REPLAY=50 NEGATIVES=10 OUT=$OUT PY=$PY \
  EXTRA="runs/data/dialogues_train_s7_n50_original.jsonl runs/data/dialogues_train_s7_n30_unavailable.jsonl runs/data/invented_train_s7_n50_u30.jsonl" \
  bash scripts/continue_default.sh
