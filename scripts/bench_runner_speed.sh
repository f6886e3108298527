#!/usr/bin/env bash
# Which way of running the benchmark is fastest on this machine? The same first N records of the
# unseen-tools split, the default adapter, max 96 new tokens, once per runner, one after another in
# this one command (so the ratios are between runs on the same machine, minutes apart). Prints the
# wall seconds (model load included), records/s relative to the first runner, and SR.
#
#   bash scripts/bench_runner_speed.sh                  # N=80, the runners below
#   N=40 RUNNERS="llamacpp:q8_0:1 transformers:bf16:16" bash scripts/bench_runner_speed.sh
#   MODEL=smollm2-135m ADAPTER=adapters/smollm2-135m bash scripts/bench_runner_speed.sh
#
# A runner is BACKEND:FORM:BATCH; FORM is the GGUF form (llamacpp) or the dtype (transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${N:-80}
MODEL=${MODEL:-default}
ADAPTER=${ADAPTER:-adapters/default}
OUT=${OUT:-runs/runner_speed}
rm -rf "$OUT"; mkdir -p "$OUT"
echo "| runner | records | wall s | records/s vs first | SR | SR_act |"
echo "|---|---:|---:|---:|---:|---:|"
ref=""
for runner in ${RUNNERS:-llamacpp:q8_0:1 llamacpp:bf16:1 transformers:bf16:8 transformers:bf16:16 transformers:fp32:16}; do
  IFS=: read -r backend form batch <<< "$runner"
  if [ "$backend" = llamacpp ]; then opt="--gguf $form"; else opt="--dtype $form"; fi
  start=$(date +%s.%N)
  $PY -m gpt4tools bench --model "$MODEL" --adapter "$ADAPTER" --max-new-tokens 96 \
    --data data/test_unseen.jsonl --limit "$N" --backend "$backend" $opt --batch-size "$batch" \
    --out "$OUT/${runner//:/-}" > "$OUT/${runner//:/-}.log" 2>&1
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  ref=${ref:-$wall}
  read -r sr act < <($PY -c "import json, sys; s = json.load(open(sys.argv[1]))
print(round(100 * s['SR'], 1), round(100 * s['SR_act'], 1))" "$OUT/${runner//:/-}/scores.json")
  printf '| %s | %s | %.1f | %.2fx | %s | %s |\n' "$runner" "$N" "$wall" "$(echo "$ref / $wall" | bc -l)" "$sr" "$act"
done
