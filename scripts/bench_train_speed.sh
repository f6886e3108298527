#!/usr/bin/env bash
# CPU training speed, on the same steps: the default recipe (retrain_default.sh's LoRA and mix 1's data,
# seed 8) for STEPS optimizer steps once per leg, the legs one after another in one command. Prints
# the median tokens/s of each leg (pad tokens not counted), its ratio to the first leg, the peak RSS, and
# each leg's wall time with its model loads (what --process-steps legs pay for their restarts).
#
# LEGS is a comma-separated list; a leg is NAME or NAME:EXTRA_TRAIN_ARGS (the allocators' libraries come
# from JEMALLOC / MIMALLOC):
#   base                    what train.py does by default (glibc malloc, trimmed after each step)
#   no-trim:--no-trim-heap  glibc without malloc_trim
#   pad64:--pad-to-multiple 64   each sequence padded to a multiple of 64 tokens (fewer shapes)
#   jemalloc, mimalloc      preloaded (LD_PRELOAD) instead of glibc malloc
#   NAME@REV                the code of git revision REV (exported with git archive into OUT/src-REV, sharing
#                           this checkout's runs/data), e.g. before@34f89a6 as the reference leg of a change
#                           (and this checkout's converted weights: GPT4TOOLS_CHECKPOINTS)
#
#   LEGS="base,no-trim:--no-trim-heap,pad64:--pad-to-multiple 64" STEPS=30 bash scripts/bench_train_speed.sh
#   JEMALLOC=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 LEGS=base,jemalloc bash scripts/bench_train_speed.sh
#
# Where the libraries come from: jemalloc from Debian (`apt-get install libjemalloc2`, or without root
# `apt-get download libjemalloc2 && dpkg -x libjemalloc2_*.deb DIR`), mimalloc from PyPI
# (`pip download cmeel-mimalloc` holds cmeel.prefix/lib/libmimalloc.so). Neither is a dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-15}
OUT=${OUT:-runs/bench/train_speed}
LEGS=${LEGS:-base}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: a NAME@REV leg runs in another directory
case $PY in /*) ;; */*) PY=$PWD/$PY ;; esac
names=()
while IFS= read -r leg; do
  [ -n "$leg" ] || continue
  name=${leg%%:*} extra=""
  [ "$name" != "$leg" ] && extra=${leg#*:}
  lib=""
  case $name in
    jemalloc) lib=${JEMALLOC:?set JEMALLOC to libjemalloc.so.2} ;;
    mimalloc) lib=${MIMALLOC:?set MIMALLOC to libmimalloc.so} ;;
  esac
  rm -rf "${OUT:?}/$name"
  src=.
  if [ "$name" != "${name%@*}" ]; then
    src=$OUT/src-${name#*@}
    rm -rf "$src" && mkdir -p "$src/runs" && git archive "${name#*@}" | tar -x -C "$src"
    mkdir -p runs/data && ln -s "$PWD/runs/data" "$src/runs/data"
  fi
  echo "== $name ${lib:+LD_PRELOAD=$lib }$extra"
  start=$SECONDS
  # mix 1 as retrain_default.sh builds and trains it (its data is made first if missing), cut to STEPS
  (export GPT4TOOLS_CHECKPOINTS=${GPT4TOOLS_CHECKPOINTS:-$PWD/checkpoints}; cd "$src" && LD_PRELOAD=$lib OUT="$OUT/$name" SEED=8 STAGED= PY=$PY \
    EXTRA="--max-steps $STEPS --save-steps 1000 $extra" bash scripts/retrain_default.sh) > "$OUT/$name.log" 2>&1 ||
    { tail -5 "$OUT/$name.log"; exit 1; }
  echo $((SECONDS - start)) > "$OUT/$name.wall_s"  # model loads and data building included
  names+=("$name")
done < <(echo "$LEGS" | tr ',' '\n')
$PY - "$OUT" "${names[@]}" <<'PY'
import json, statistics, sys
out, names = sys.argv[1], sys.argv[2:]
rows = {}
for name in names:
    m = [json.loads(line) for line in open(f"{out}/{name}/metrics.jsonl")]
    wall = int(open(f"{out}/{name}.wall_s").read())
    rows[name] = (statistics.median(x["tokens_per_s"] for x in m), max(x.get("rss_mb", 0) for x in m), len(m), wall)
first, first_wall = rows[names[0]][0], rows[names[0]][3]
print(f"| leg | steps | median tokens/s | ratio to {names[0]} | peak RSS MB | wall s (loads included) | wall ratio |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name, (tps, rss, n, wall) in rows.items():
    print(f"| {name} | {n} | {tps:.0f} | {tps / first:.2f}x | {rss} | {wall} | {first_wall / wall:.2f}x |")
PY
