#!/usr/bin/env bash
# The benchmark runs behind docs/benchmark.md: the default adapter, the untuned base and the
# always-no-tool baseline on the committed splits, with bench's --backend auto: llama.cpp (the
# adapter merged into a cached GGUF) one prompt at a time, or on CPUs with AMX batched bf16
# transformers (gpt4tools.llm.pick_runner). BACKEND=llamacpp forces llama.cpp. Each run folder keeps
# run.json (the exact command, backend, batch size) and is resumed if it exists.
#
#   bash scripts/eval_default.sh                 # everything (about an hour on 2 cores)
#   RUNS="val test" bash scripts/eval_default.sh # some of it
#   RUNS=constrained bash scripts/eval_default.sh  # free vs constrained decoding, same records
#   RUNS="invented val5" ADAPTER=runs/train/continue4 OUT=runs/bench/continue4 bash scripts/eval_default.sh
#   ADAPTER=runs/train/mine bash scripts/eval_default.sh
#   MODEL=smollm2-135m ADAPTER=adapters/smollm2-135m bash scripts/eval_default.sh  # the small fallback
#
# Report: python scripts/bench_report.py runs/bench/<run>... --names ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-default}  # the embedded default (gpt4tools.models.DEFAULT_MODEL)
ADAPTER=${ADAPTER:-adapters/default}
OUT=${OUT:-runs/bench}
bench() { $PY -m gpt4tools bench --model "$MODEL" --backend "${BACKEND:-auto}" --max-new-tokens 96 "$@"; }
mkdir -p "$OUT"
for run in ${RUNS:-chat val test untuned all}; do
  start=$SECONDS
  case $run in
    chat)  # the app's prompts: the 5 tools the retriever offers, held-out chat messages
      bench --data data/chat_eval.jsonl --adapter "$ADAPTER" --per-tool 5 --out "$OUT/chat5_tuned"
      $PY -m gpt4tools bench --data data/chat_eval.jsonl --baseline no-tool --per-tool 5 --out "$OUT/chat5_no-tool" ;;
    val)  # seen tools, 2-5 offered, the paper's validation protocol
      bench --data data/val.jsonl --adapter "$ADAPTER" --per-tool 10 --out "$OUT/val10_tuned"
      $PY -m gpt4tools bench --data data/val.jsonl --baseline no-tool --per-tool 10 --out "$OUT/val10_no-tool" ;;
    test)  # unseen tools, the whole 650-record split (the paper's 652), timed
      bench --data data/test_unseen.jsonl --adapter "$ADAPTER" --out "$OUT/test_tuned"
      $PY -m gpt4tools bench --data data/test_unseen.jsonl --baseline no-tool --out "$OUT/test_no-tool" ;;
    untuned)  # the base model without the adapter (the GGUF the package ships)
      bench --data data/val.jsonl --adapter none --per-tool 5 --out "$OUT/val5_untuned"
      # the adapter on the same records: --per-tool 5 is the first half of --per-tool 10's draw
      $PY -m gpt4tools score --data data/val.jsonl --per-tool 5 --pred "$OUT/val10_tuned/predictions.jsonl" --out "$OUT/val5_tuned" ;;
    invented)  # 60 invented tools of 15 capabilities never trained on (issue 19, part 2): picked by description
      bench --data data/test_invented.jsonl --adapter "$ADAPTER" --out "$OUT/invented_tuned" ;;
    val5)  # the quick checks of docs/benchmark.md's continuation rounds: 5 per tool, seen and unseen
      bench --data data/val.jsonl --adapter "$ADAPTER" --per-tool 5 --out "$OUT/val5_free"
      bench --data data/test_unseen.jsonl --adapter "$ADAPTER" --per-tool 5 --out "$OUT/test5_free" ;;
    all)  # every available tool offered, as with --offer-tools 0
      bench --data data/chat_eval_all.jsonl --adapter "$ADAPTER" --per-tool 5 --out "$OUT/chatall5_tuned" ;;
    constrained)  # free vs grammar-constrained decoding on the same records (seen and unseen tools), back to back
      for mode in free constrained; do
        flag=$([ $mode = constrained ] && echo --constrained || true)
        bench --data data/val.jsonl --adapter "$ADAPTER" --per-tool 5 $flag --out "$OUT/val5_$mode"
        bench --data data/test_unseen.jsonl --adapter "$ADAPTER" --per-tool 5 $flag --out "$OUT/test5_$mode"
      done ;;
    *) echo "unknown run $run (chat val test untuned all invented val5 constrained)" >&2; exit 2 ;;
  esac
  echo "$run: $((SECONDS - start)) s wall (model load included)" | tee -a "$OUT/eval_wall.txt"
done
