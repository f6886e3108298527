#!/usr/bin/env bash
# The project's two commands (see README):
#   bash run.sh        set everything up, then start the app at http://127.0.0.1:7860
#   bash run.sh test   set everything up, then run the test suite (what CI runs)
# Set-up is idempotent: a second run installs, downloads and converts nothing.
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-app}"; shift || true

PY="${PYTHON:-python3}"
VENV=.venv
export GPT4TOOLS_CACHE="${GPT4TOOLS_CACHE:-$HOME/.cache/gpt4tools}"
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 PIP_DISABLE_PIP_VERSION_CHECK=1

step() { printf '\n== %s\n' "$*"; }
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

setup_weights() {
  step "model weights (cached in $GPT4TOOLS_CACHE)"
  "$VENV/bin/python" -m gpt4tools weights fetch
}

case "$mode" in
  app)
    setup_python
    setup_weights
    step "starting the app at http://127.0.0.1:${PORT:-7860}"
    exec "$VENV/bin/python" app.py "$@"
    ;;
  test)
    apt_install chromium
    setup_python
    setup_weights
    step "tests"
    mkdir -p .tmp && export TMPDIR="$PWD/.tmp" GRADIO_TEMP_DIR="$PWD/.tmp/gradio"
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  setup)
    setup_python
    setup_weights
    ;;
  *)
    echo "usage: bash run.sh [app|test|setup] [args...]" >&2
    exit 2
    ;;
esac
