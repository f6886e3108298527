#!/usr/bin/env bash
# The project's two commands (see README):
#   bash run.sh        set everything up, then start the app at http://127.0.0.1:7860
#   bash run.sh test   set everything up, then run the test suite (what CI runs)
#   bash run.sh setup  set up only, including the optional llama.cpp backend (compiled once per CPU)
# Set-up is idempotent: a second run installs, downloads and converts nothing.
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-app}" in
  app|test|setup|llamacpp) mode="${1:-app}"; shift || true ;;
  -*) mode=app ;;  # bash run.sh --port 7861: options go to the app
  *) mode="$1" ;;  # unknown: the usage message below
esac

PY="${PYTHON:-python3}"
VENV=.venv
export GPT4TOOLS_CACHE="${GPT4TOOLS_CACHE:-$HOME/.cache/gpt4tools}"
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 PIP_DISABLE_PIP_VERSION_CHECK=1

T0=$(date +%s)
step() { printf '\n== [%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }  # elapsed seconds since the start
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {  # install Debian packages that are missing
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

setup_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  local want; want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    step "pip install -r requirements.txt"
    "$VENV/bin/pip" install -q -r requirements.txt
    echo "$want" > "$VENV/.requirements.sha256"
  fi
}

# llama-cpp-python ships only a source release: pip compiles llama.cpp (~5-10 min on 2 cores).
# Build the wheel once per CPU (it is built for the CPU it runs on), keep it in the cache with
# its sha256, and install it from there: later runs and fresh clones compile nothing.
# --no-cache-dir: pip's own wheel cache is keyed by the source release, not the CPU, and would hand
# another CPU's build back (a home shared by machines, or scripts/avx2_only.sh's AVX2-only build).
cpu_id() {  # the wheel is built for this CPU: its architecture and instruction-set flags
  (uname -m; grep -m1 '^flags' /proc/cpuinfo 2>/dev/null) | sha256sum | cut -c1-12
}

setup_llamacpp() {
  # the one pinned version, also that of the GGUF converters (gpt4tools/llm/gguf.py)
  LLAMA_CPP_VERSION=$("$VENV/bin/python" -c \
    'from gpt4tools.llm.gguf import LLAMA_CPP_VERSION; print(LLAMA_CPP_VERSION)')
  if "$VENV/bin/python" -c "import sys, llama_cpp; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_VERSION')" 2>/dev/null; then
    return 0
  fi
  local cpu; cpu=$(cpu_id)
  local dir="$GPT4TOOLS_CACHE/wheels/llama-cpp-python-$LLAMA_CPP_VERSION-$cpu"
  local whl; whl=$(ls "$dir"/llama_cpp_python-*.whl 2>/dev/null | head -1 || true)
  if [ -n "$whl" ] && ! (cd "$dir" && sha256sum -c --quiet wheel.sha256 2>/dev/null); then
    echo "cached llama-cpp-python wheel is corrupt; rebuilding"; rm -rf "$dir"; whl=""
  fi
  if [ -z "$whl" ]; then
    step "building llama-cpp-python $LLAMA_CPP_VERSION (once per CPU; cached in $dir)"
    local tmp="$dir.partial-$$"; rm -rf "$tmp"; mkdir -p "$tmp"
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      "$VENV/bin/pip" wheel -q --no-deps --no-cache-dir -w "$tmp" "llama-cpp-python==$LLAMA_CPP_VERSION" > "$tmp.log" 2>&1 \
      || { tail -20 "$tmp.log"; echo "llama-cpp-python did not build (log: $tmp.log); the llamacpp backend stays off" >&2; rm -rf "$tmp"; return 0; }
    (cd "$tmp" && sha256sum llama_cpp_python-*.whl > wheel.sha256)
    rm -rf "$dir"; mv "$tmp" "$dir"; rm -f "$tmp.log"
    whl=$(ls "$dir"/llama_cpp_python-*.whl | head -1)
  fi
  "$VENV/bin/pip" install -q --no-deps "$whl"
}

# The app's first start must not wait ~10 min for a compile, nor serve the slower backend forever:
# with a cached wheel llama.cpp is installed now (seconds); without one it is built in the
# background at low priority (one build at a time), and the next start serves with it. The app's
# status line says which backend serves and why (gpt4tools.llm.backend_note).
setup_llamacpp_soon() {
  if "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then setup_llamacpp; return 0; fi
  local cpu; cpu=$(cpu_id)
  if ls "$GPT4TOOLS_CACHE"/wheels/llama-cpp-python-*-"$cpu"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    setup_llamacpp; return 0
  fi
  mkdir -p "$GPT4TOOLS_CACHE/wheels"
  local log="$GPT4TOOLS_CACHE/wheels/llama-cpp-build.log"
  step "building llama.cpp in the background (log: $log); this start serves with transformers, the next with llama.cpp"
  nohup flock -n "$GPT4TOOLS_CACHE/wheels/llama-cpp-build.lock" nice -n 19 bash "$PWD/$(basename "$0")" llamacpp \
    > "$log" 2>&1 &
}

setup_weights() {
  step "model weights (cached in $GPT4TOOLS_CACHE)"
  "$VENV/bin/python" -m gpt4tools weights fetch
}

case "$mode" in
  app)
    setup_python
    setup_llamacpp_soon  # never a compile in the way of the first start
    setup_weights
    step "starting the app (http://127.0.0.1:7860 unless --host/--port say otherwise)"
    exec "$VENV/bin/python" app.py "$@"
    ;;
  test)
    apt_install chromium
    setup_python
    setup_llamacpp
    setup_weights
    step "ruff check (lint; the rules are in pyproject.toml)"
    "$VENV/bin/ruff" check --quiet .
    step "tests"
    mkdir -p .tmp && export TMPDIR="$PWD/.tmp" GRADIO_TEMP_DIR="$PWD/.tmp/gradio"
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  setup)
    setup_python
    setup_llamacpp
    setup_weights
    ;;
  llamacpp)  # what the app's first start runs in the background
    setup_llamacpp
    ;;
  *)
    echo "usage: bash run.sh [app|test|setup] [args...]" >&2
    exit 2
    ;;
esac
