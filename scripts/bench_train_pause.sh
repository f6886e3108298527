#!/usr/bin/env bash
# Is a CPU training run's slowdown the process's age or the machine's clock under sustained load?
# One leg of bench_train_speed.sh (untrimmed, STEPS steps), the process stopped (SIGSTOP) for PAUSE seconds
# after step AT, the cores idle meanwhile, then continued. If the steps after the pause run faster than the
# same steps of an uninterrupted run, the clock recovered; if not, the process's state is what ages.
# Compare its metrics with a leg of the same steps (docs/benchmark.md, "Where a CPU step's time goes").
#
#   STEPS=40 AT=22 PAUSE=90 bash scripts/bench_train_pause.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-40} AT=${AT:-22} PAUSE=${PAUSE:-90}
OUT=${OUT:-runs/bench/train_pause}
LEGS="no-trim:--no-trim-heap" STEPS=$STEPS OUT=$OUT bash scripts/bench_train_speed.sh > "$OUT.out" 2>&1 &
M=$OUT/no-trim/metrics.jsonl
until [ -f "$M" ] && [ "$(wc -l < "$M")" -ge "$AT" ]; do sleep 2; done
P=$(pgrep -f -- "--out-dir $OUT/no-trim" | head -1)
kill -STOP "$P"; echo "$(date +%T) stopped $P after step $AT"; sleep "$PAUSE"
kill -CONT "$P"; echo "$(date +%T) continued"
wait
cat "$OUT.out"
