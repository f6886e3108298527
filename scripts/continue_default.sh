#!/usr/bin/env bash
# Continue the default adapter on conversation-shaped records (issue 19, part 4) mixed with a replay
# of the original training records, so that what it knew is kept while it learns which image a
# request means, follow-ups, repairs and honest failures. Resumable (train checkpoints every 10 steps).
#
#   bash scripts/continue_default.sh            # about 300 + 300 records; OUT=runs/train/continue
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/train/continue}
DIALOGUES=${DIALOGUES:-300}
REPLAY=${REPLAY:-300}
mkdir -p runs/data
[ -s runs/data/dialogues_train.jsonl ] || \
  $PY -m gpt4tools.data.dialogues --records "$DIALOGUES" --seed 1 --split train --out runs/data/dialogues_train.jsonl
[ -s runs/data/replay_train.jsonl ] || $PY - "$REPLAY" <<'PY'
import json, random, sys
# whole episodes of data/train.jsonl in a seeded order, until REPLAY records
rows = [json.loads(line) for line in open("data/train.jsonl", encoding="utf-8")]
episodes = {}
for r in rows:
    episodes.setdefault(r["episode"], []).append(r)
order = sorted(episodes)
random.Random(1).shuffle(order)
out, want = [], int(sys.argv[1])
for e in order:
    if len(out) >= want:
        break
    out += episodes[e]
with open("runs/data/replay_train.jsonl", "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
print(f"replay: {len(out)} records of {len(rows)}")
PY
$PY -m gpt4tools train --base-model qwen2.5-coder-0.5b --init-adapter adapters/default \
  --data runs/data/dialogues_train.jsonl runs/data/replay_train.jsonl --out-dir "$OUT" \
  --learning-rate 5e-4 --warmup-steps 5 --gradient-accumulation 4 --save-steps 10 --cutoff-len 2400 \
  --threads 2 --save-dtype bf16
