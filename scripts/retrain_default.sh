#!/usr/bin/env bash
# The default adapter's data, trained from scratch in one run (issue 19, part 5): what the chain of
# v1 and five continuations learned over ~3.5 h of training, as one seeded mix that fits the hour a
# CPU training run is given on 2 cores. Every record comes from a committed generator:
#   - data/train.jsonl (template teacher): whole episodes up to REPLAY records, then NEGATIVES more
#     general requests answered without a tool;
#   - conversation-shaped records (gpt4tools/data/dialogues.py): the five first kinds, 'loose'
#     wording, going back to the 'original' upload, more 'multi-image';
#   - invented tools (gpt4tools/data/invented.py --split train), a share of them not offered.
# LoRA as v1 (r 16 on q/k/v/o/gate/up/down of the top 15 layers), one pass, lr 1e-3. Neither mix tried
# so far reaches the default (docs/benchmark.md, "The default's data from scratch"): it declines tool requests.
# STAGED=1 (below; "Two stages within the hour") came closer on seen tools (val5 88.3, test5 100 in 57.7 min)
# but fell on invented tools (80.7: it calls a tool for 17 of 28 requests nothing offered serves).
#
#   bash scripts/retrain_default.sh                     # "mix 1": 63 min on 2 AMX Xeon cores; resumable
#   OUT=runs/train/other SEED=9 REPLAY=500 bash scripts/retrain_default.sh
#   TOKENS_ONLY=1 bash scripts/retrain_default.sh       # build the data, print its training tokens, stop
#   EXTRA="--max-steps 30 --no-trim-heap" bash scripts/retrain_default.sh  # more train flags (they come last)
#   PROCESS_STEPS=16 bash scripts/retrain_default.sh    # a new process every 16 steps: 1.14x over 48 steps, reloads included
#
# STAGED=1 trains the way the chain learned, in two runs within the hour: first the template replay
# alone (as v1: the format and every tool), PER_TOOL calls of each tool at least; then everything else
# continued from it at LR_B (as the continuations), with a small replay (REPLAY_B, NEGATIVES_B,
# PER_TOOL_B) so the template does not fade. Stage one's adapter is $OUT-stage1.
#   STAGED=1 PER_TOOL=14 REPLAY=2000 REPLAY_B=150 INVENTED=120 UNOFFERED=0.1 DIALOGUES=100 LOOSE=100 \
#     ORIGINAL=60 MULTI=40 OUT=runs/train/staged1 bash scripts/retrain_default.sh   # "staged1": 57.7 min
# "staged2" (session 34): the faster training code (1.92x with DROPOUT=0) holds 1.0M tokens in 59.6 min,
# and 'served' dialogues contrast the declines (val5 90.8, test5 97.8, invented 88.7; not adopted: the
# conversation benchmark 76.0 % of turns against the default's 91.8):
#   STAGED=1 DROPOUT=0 PER_TOOL=26 REPLAY=2000 NEGATIVES=60 DIALOGUES=160 LOOSE=120 ORIGINAL=70 MULTI=60 \
#     INVENTED=260 UNOFFERED=0.25 SERVED=50 REPLAY_B=250 NEGATIVES_B=20 PER_TOOL_B=6 OUT=runs/train/staged2 \
#     bash scripts/retrain_default.sh
# "staged3" (session 35): stage 2 spends its tokens on conversation-shaped records (1,442 records, 664k tokens,
# 29.5 min with PROCESS_STEPS=16 and an untrimmed heap; stage 1 as staged2's): conversations 82.0 % of turns:
#   STAGED=1 DROPOUT=0 PROCESS_STEPS=16 EXTRA="--no-trim-heap" PER_TOOL=26 REPLAY=2000 NEGATIVES=60 DIALOGUES=350 \
#     LOOSE=280 ORIGINAL=140 MULTI=200 INVENTED=200 UNOFFERED=0.25 SERVED=50 REPLAY_B=200 NEGATIVES_B=20 PER_TOOL_B=6 \
#     OUT=runs/train/staged3 bash scripts/retrain_default.sh
# "staged5" (session 36): the same stage 2 as PASSES=3 runs in a row over records of seeds 8, 18, 28 (a third of
# each count), 31.2 min of steps: 80.3 % of turns (multi-image 73.8 against 64.3; single-tool turns lost):
#   STAGED=1 PASSES=3 DROPOUT=0 PROCESS_STEPS=16 EXTRA="--no-trim-heap" PER_TOOL=26 REPLAY=2000 NEGATIVES=60 \
#     DIALOGUES=350 LOOSE=280 ORIGINAL=140 MULTI=200 INVENTED=200 UNOFFERED=0.25 SERVED=50 REPLAY_B=200 NEGATIVES_B=20 \
#     PER_TOOL_B=6 OUT=runs/train/staged5 bash scripts/retrain_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/train/retrain}
SEED=${SEED:-8}
REPLAY=${REPLAY:-430}
NEGATIVES=${NEGATIVES:-60}
DIALOGUES=${DIALOGUES:-180}  # the five first kinds
LOOSE=${LOOSE:-140}
ORIGINAL=${ORIGINAL:-80}
MULTI=${MULTI:-70}
INVENTED=${INVENTED:-200}
UNOFFERED=${UNOFFERED:-0.2}  # the share of invented-tool requests that nothing offered serves
INV_APP=${INV_APP:-0}  # the share of invented-tool records that offer tools as the app does (data/invented.py)
PER_TOOL=${PER_TOOL:-0}  # >0: the replay takes an episode only while a tool it calls has fewer calls
SERVED=${SERVED:-0}  # 'served' dialogues: the declined capabilities asked for with their tool offered
PROCESS_STEPS=${PROCESS_STEPS:-0}  # >0: a new training process every N steps (an aging process slows)
DROPOUT=${DROPOUT:-0.05}  # LoRA dropout; 0 is ~1.4x faster on CPU (docs/benchmark.md, "What a CPU step computes")
STAGED=${STAGED:-}
LR_B=${LR_B:-5e-4}
REPLAY_B=${REPLAY_B:-120}
NEGATIVES_B=${NEGATIVES_B:-20}
PER_TOOL_B=${PER_TOOL_B:-3}
PASSES=${PASSES:-1}  # STAGED: stage 2 as PASSES runs in a row, each over its own records (seed SEED + 10p)
D=runs/data/retrain_s$SEED
mkdir -p "$D"
data() {  # $1: output file, then the generator's module and arguments
  local out=$1; shift
  [ -s "$out" ] || { $PY -m "$@" --out "$out.partial" && mv "$out.partial" "$out"; }
}
rest() {  # $1: seed, $2: a divisor of the counts; sets REST: the conversation, invented and served files
  local s=$1 k=$2 d=runs/data/retrain_s$1
  local dia=$((DIALOGUES / k)) loose=$((LOOSE / k)) orig=$((ORIGINAL / k)) multi=$((MULTI / k)) inv=$((INVENTED / k))
  local served=$((SERVED / k))
  mkdir -p "$d"
  data "$d/dialogues_n$dia.jsonl" gpt4tools.data.dialogues --records "$dia" --seed "$s" --split train \
    --kinds multi-image follow-up repair failure unavailable
  data "$d/loose_n$loose.jsonl" gpt4tools.data.dialogues --records "$loose" --seed "$s" --kinds loose
  data "$d/original_n$orig.jsonl" gpt4tools.data.dialogues --records "$orig" --seed "$s" --kinds original
  data "$d/multi_n$multi.jsonl" gpt4tools.data.dialogues --records "$multi" --seed "$((s + 1))" --kinds multi-image
  local inv_file=$d/invented_n${inv}_u$UNOFFERED.jsonl app=()
  if [ "$INV_APP" != 0 ]; then inv_file=${inv_file%.jsonl}_app$INV_APP.jsonl app=(--app-layout-share "$INV_APP"); fi
  data "$inv_file" gpt4tools.data.invented --split train --records "$inv" \
    --seed "$s" --unavailable-share "$UNOFFERED" "${app[@]}"
  REST="$d/dialogues_n$dia.jsonl $d/loose_n$loose.jsonl $d/original_n$orig.jsonl $d/multi_n$multi.jsonl"
  REST+=" $inv_file"
  if [ "$served" -gt 0 ]; then
    data "$d/served_n$served.jsonl" gpt4tools.data.dialogues --records "$served" --seed "$s" --kinds served
    REST+=" $d/served_n$served.jsonl"
  fi
}
replay() {  # $1: output file, then replay_records.py's REPLAY NEGATIVES SEED PER_TOOL
  [ -s "$1" ] || $PY scripts/replay_records.py "$2" "$3" "$4" "$1" "$5"
}
RPL=$D/replay_n${REPLAY}_neg$NEGATIVES.jsonl
if [ "$PER_TOOL" -gt 0 ]; then RPL=${RPL%.jsonl}_pt$PER_TOOL.jsonl; fi
replay "$RPL" "$REPLAY" "$NEGATIVES" "$SEED" "$PER_TOOL"
if [ -n "$STAGED" ]; then
  STAGES=("$RPL")
  for ((p = 0; p < PASSES; p++)); do  # pass p: its own records (seed SEED + 10p), 1/PASSES of each count
    S=$((SEED + 10 * p))
    rest "$S" "$PASSES"
    RB=$((REPLAY_B / PASSES)) NB=$((NEGATIVES_B / PASSES)) PB=$(((PER_TOOL_B + PASSES - 1) / PASSES))  # PB rounds up
    RPL_B=runs/data/retrain_s$S/replay_n${RB}_neg${NB}_pt${PB}_s$((S + 1)).jsonl
    replay "$RPL_B" "$RB" "$NB" "$((S + 1))" "$PB"
    STAGES+=("$REST $RPL_B")
  done
else
  rest "$SEED" 1
  STAGES=("$REST $RPL")
fi
COMMON=(--gradient-accumulation 4 --save-steps 10 --cutoff-len 2400 --threads 2 --save-dtype bf16 --seed "$SEED")
ARGS=(--lora-layers top:15 --target-modules q_proj k_proj v_proj o_proj gate_proj up_proj down_proj
      --lora-dropout "$DROPOUT" --learning-rate 1e-3 --warmup-steps 10 "${COMMON[@]}")
# shellcheck disable=SC2206
ARGS+=(${EXTRA:-})  # more train flags, last so they win (scripts/bench_train_speed.sh: --max-steps and its legs)
if [ -n "${TOKENS_ONLY:-}" ]; then  # how long it will take: ~280 training tokens/s on 2 AMX Xeon cores (DROPOUT=0)
  for FILES in "${STAGES[@]}"; do
  # shellcheck disable=SC2086
  $PY - $FILES <<'PY'
import sys
from transformers import AutoTokenizer
from gpt4tools.train import TrainConfig, choose_groups, read_records, tokenize_all
from gpt4tools.models import resolve_model
cfg = TrainConfig(data=sys.argv[1:], cutoff_len=2400)
records, skipped = read_records(cfg.data)
tok = AutoTokenizer.from_pretrained(resolve_model("qwen2.5-coder-0.5b")[0])
samples = tokenize_all(records, tok, cfg, skipped, choose_groups(records, cfg))
n = sum(len(s["input_ids"]) for s in samples)
print(f"{len(records)} records, {len(samples)} sequences, {n} tokens (~{n / 280 / 60:.0f} min at 280 tokens/s), skipped {skipped}")
PY
  done
  exit 0
fi
train() {  # python -m gpt4tools train, run again while it pauses at --process-steps (exit code 75)
  local rc
  while true; do
    rc=0
    $PY -m gpt4tools train --process-steps "$PROCESS_STEPS" "$@" || rc=$?  # EXTRA (in "$@") may override
    [ "$rc" -eq 75 ] || return "$rc"
  done
}
if [ -n "$STAGED" ]; then
  # shellcheck disable=SC2086
  [ -s "$OUT-stage1/adapter_model.safetensors" ] ||
    train --base-model qwen2.5-coder-0.5b --data ${STAGES[0]} --out-dir "$OUT-stage1" "${ARGS[@]}"
  PREV=$OUT-stage1
  for ((p = 1; p <= PASSES; p++)); do  # each pass continues the last one, with its own warm-up and decay
    DIR=$OUT-pass$p
    [ "$p" -lt "$PASSES" ] || DIR=$OUT
    if [ "$p" -lt "$PASSES" ] && [ -s "$DIR/adapter_model.safetensors" ]; then PREV=$DIR; continue; fi
    # shellcheck disable=SC2086
    train --base-model qwen2.5-coder-0.5b --init-adapter "$PREV" --data ${STAGES[p]} --out-dir "$DIR" \
      --learning-rate "$LR_B" --warmup-steps 5 "${COMMON[@]}" ${EXTRA:-}
    PREV=$DIR
  done
else
  # shellcheck disable=SC2086
  train --base-model qwen2.5-coder-0.5b --data ${STAGES[0]} --out-dir "$OUT" "${ARGS[@]}"
fi
