#!/usr/bin/env bash
# The conversation-benchmark runs behind docs/benchmark.md ("Conversations"): the default model
# as the app serves it (constrained decoding, uploads named in the message), then the two
# ablations on the same conversations, each in its own resumable run folder (a killed run goes
# on where it stopped; run.json refuses a folder made with other settings).
#
#   bash scripts/eval_chat.sh                    # everything (about 2.5 h on 2 busy cores)
#   RUNS="default" bash scripts/eval_chat.sh     # some of it
#   RUNS="default unconstrained-all" bash scripts/eval_chat.sh   # constrained vs free, every turn
#   ADAPTER=runs/train/mine OUT=runs/bench-chat/mine bash scripts/eval_chat.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/bench-chat}
ARGS=(--data data/conversations.jsonl --model "${MODEL:-default}" --adapter "${ADAPTER:-adapters/default}")
chat() { $PY -m gpt4tools bench-chat "${ARGS[@]}" "$@"; }
# the categories where several images exist or the image comes with a vague message
PART5=(c001 c002 c003 c004 c005 c006 c007 c008 c009 c010 c011 c012 c013 c014 c015 c016 c017 c018 c019 c020 c021
       c022 c023 c024 c025 c026 c027 c028 c029 c030 c031 c032 c033 c034 c035 c036 c037 c038)
for run in ${RUNS:-default unnamed unconstrained}; do
  start=$SECONDS
  case $run in
    default)  # what the app does
      chat --out "$OUT/default" ;;
    unnamed)  # part 5 ablation: uploads announced in the history only (single-tool + multi-image)
      chat --no-name-uploads --ids "${PART5[@]}" --out "$OUT/default-unnamed" ;;
    unconstrained)  # free decoding, validated after the fact (single-tool + multi-image: compare with default on them)
      chat --no-constrained --ids "${PART5[@]}" --out "$OUT/default-unconstrained-part5" ;;
    unconstrained-all)  # free decoding on every conversation: compare with default turn by turn
      chat --no-constrained --out "$OUT/default-unconstrained" ;;
    *) echo "unknown run $run (default unnamed unconstrained unconstrained-all)" >&2; exit 2 ;;
  esac
  echo "== $run: $((SECONDS - start)) s"
done
