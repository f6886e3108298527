#!/usr/bin/env bash
# Training speed under each memory allocator, on the same steps: the default recipe (retrain_default.sh's
# LoRA and data, seed 8) for STEPS optimizer steps with glibc malloc (the default, trimmed after each
# step by gpt4tools/train.py), then with each allocator found, preloaded (LD_PRELOAD), in the same
# command. Prints the median tokens/s per allocator and its ratio to glibc's, and the peak RSS.
#
#   JEMALLOC=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 STEPS=15 bash scripts/bench_train_alloc.sh
#
# Where the libraries come from: jemalloc from Debian (`apt-get install libjemalloc2`, or without root
# `apt-get download libjemalloc2 && dpkg -x libjemalloc2_*.deb DIR`), mimalloc from PyPI
# (`pip download cmeel-mimalloc` holds cmeel.prefix/lib/libmimalloc.so). Neither is a dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-15}
OUT=${OUT:-runs/bench/alloc}
D=runs/data/retrain_s8
DATA="$D/dialogues_n180.jsonl $D/loose_n140.jsonl $D/original_n80.jsonl $D/multi_n70.jsonl $D/invented_n200_u0.2.jsonl $D/replay_n430_neg60.jsonl"
for f in $DATA; do [ -s "$f" ] || { echo "missing $f: run TOKENS_ONLY=1 bash scripts/retrain_default.sh first"; exit 1; }; done
ARGS=(--lora-layers top:15 --target-modules q_proj k_proj v_proj o_proj gate_proj up_proj down_proj
      --learning-rate 1e-3 --warmup-steps 10 --gradient-accumulation 4 --save-steps 1000 --cutoff-len 2400
      --threads 2 --save-dtype bf16 --seed 8 --max-steps "$STEPS")
legs=("glibc:")
[ -n "${JEMALLOC:-}" ] && legs+=("jemalloc:$JEMALLOC")
[ -n "${MIMALLOC:-}" ] && legs+=("mimalloc:$MIMALLOC")
for leg in "${legs[@]}"; do
  name=${leg%%:*} lib=${leg#*:}
  rm -rf "${OUT:?}/$name"
  echo "== $name ${lib:-(no preload)}"
  # shellcheck disable=SC2086
  LD_PRELOAD=$lib $PY -m gpt4tools train --base-model qwen2.5-coder-0.5b --data $DATA --out-dir "$OUT/$name" "${ARGS[@]}" \
    > "$OUT.$name.log" 2>&1 || { tail -5 "$OUT.$name.log"; exit 1; }
done
$PY - "$OUT" "${legs[@]}" <<'PY'
import json, statistics, sys
out, legs = sys.argv[1], [leg.split(":")[0] for leg in sys.argv[2:]]
rows = {}
for name in legs:
    m = [json.loads(line) for line in open(f"{out}/{name}/metrics.jsonl")]
    rows[name] = (statistics.median(x["tokens_per_s"] for x in m), max(x.get("rss_mb", 0) for x in m), len(m))
base = rows["glibc"][0]
print("| allocator | steps | median tokens/s | ratio to glibc | peak RSS MB |\n|---|---:|---:|---:|---:|")
for name, (tps, rss, n) in rows.items():
    print(f"| {name} | {n} | {tps:.0f} | {tps / base:.2f}x | {rss} |")
PY
