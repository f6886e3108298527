#!/usr/bin/env bash
# Times the README's two commands on fresh clones of this checkout, each with an empty cache
# (GPT4TOOLS_CACHE) and pip's cache off, then a second time: docs/setup-times.md.
#
#   bash scripts/time_setup.sh [WORKDIR]      (default /tmp/gpt4tools-setup-times)
#
# "test": `bash run.sh test` to its end (set-up, then the whole default suite); run.sh prints the
#   elapsed seconds at each step, so the log also gives the set-up's parts (pip, llama.cpp, weights).
# "app": `bash run.sh` until http://127.0.0.1:PORT/ answers (then stopped): first in another
#   fresh clone with its own empty cache, then again in that clone.
# Debian packages (chromium) are whatever this machine already has: apt is not undone.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/gpt4tools-setup-times}
port=${PORT:-7871}
rm -rf "$work"; mkdir -p "$work"
export PIP_NO_CACHE_DIR=1

app_until_ready() {  # $1: clone, $2: log; prints seconds until the page answers
  local t0; t0=$(date +%s.%N)
  (cd "$1" && exec bash run.sh --port "$port" > "$2" 2>&1) &
  local pid=$!
  until curl -sf "http://127.0.0.1:$port/" > /dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "the app exited; see $2" >&2; return 1; }
    sleep 0.5
  done
  echo "$(date +%s.%N) - $t0" | bc
  pkill -TERM -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  sleep 2
}

timed() {  # $1: log, rest: command; prints seconds and the exit code
  local t0 rc=0; t0=$(date +%s.%N)
  "${@:2}" > "$1" 2>&1 || rc=$?
  echo "$(echo "$(date +%s.%N) - $t0" | bc) rc=$rc"
}

git clone -q "$repo" "$work/test"
export GPT4TOOLS_CACHE="$work/cache"
echo "test, first run:  $(cd "$work/test" && timed "$work/test-1.log" bash run.sh test -q) s"
grep '^== \[' "$work/test-1.log"
echo "test, second run: $(cd "$work/test" && timed "$work/test-2.log" bash run.sh test -q) s"
grep '^== \[' "$work/test-2.log"
tail -3 "$work/test-2.log"
git clone -q "$repo" "$work/app"
export GPT4TOOLS_CACHE="$work/cache-app"
echo "app, first run:  $(app_until_ready "$work/app" "$work/app-1.log") s to the first page"
grep '^== \[' "$work/app-1.log"
echo "app, second run: $(app_until_ready "$work/app" "$work/app-2.log") s to the first page"
