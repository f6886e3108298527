#!/usr/bin/env bash
# Continue the default adapter on conversation-shaped records (issue 19, part 4) mixed with a replay
# of the original training records, so that what it knew is kept while it learns which image a
# request means, follow-ups, repairs and honest failures. Resumable (train checkpoints every 10 steps).
#
#   bash scripts/continue_default.sh            # 300 dialogue + 300 replayed records, as the adapter of 9f0d7d1
#                                               # (made with INIT = the adapters/default of 58815d0)
#   INIT=adapters/default SEED=2 DIALOGUES=400 REPLAY=200 NEGATIVES=150 OUT=runs/train/continue2 \
#     bash scripts/continue_default.sh          # a further round, with extra general questions answered
#                                               # without a tool (against needless refusals)
#   EXTRA="runs/data/para/train.jsonl" ...      # more training files (e.g. LLM-teacher records), mixed in
#   KINDS="multi-image follow-up" ...           # only these dialogue kinds
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/train/continue}
INIT=${INIT:-adapters/default}
SEED=${SEED:-1}
DIALOGUES=${DIALOGUES:-300}
REPLAY=${REPLAY:-300}
NEGATIVES=${NEGATIVES:-0}
EXTRA=${EXTRA:-}
KINDS=${KINDS:-}  # dialogue kinds to draw in turn (gpt4tools/data/dialogues.py KINDS); empty: the first five
mkdir -p runs/data
DLG=runs/data/dialogues_train_s${SEED}_n${DIALOGUES}${KINDS:+_$(echo $KINDS | tr ' ' '-')}.jsonl
RPL=runs/data/replay_train_s${SEED}_n${REPLAY}_neg${NEGATIVES}.jsonl
[ -s "$DLG" ] || $PY -m gpt4tools.data.dialogues --records "$DIALOGUES" --seed "$SEED" --split train \
  --kinds ${KINDS:-multi-image follow-up repair failure unavailable} --out "$DLG"
[ -s "$RPL" ] || $PY scripts/replay_records.py "$REPLAY" "$NEGATIVES" "$SEED" "$RPL"
$PY -m gpt4tools train --base-model qwen2.5-coder-0.5b --init-adapter "$INIT" \
  --data "$DLG" "$RPL" $EXTRA --out-dir "$OUT" \
  --learning-rate 5e-4 --warmup-steps 5 --gradient-accumulation 4 --save-steps 10 --cutoff-len 2400 \
  --threads 2 --save-dtype bf16
