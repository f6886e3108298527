#!/usr/bin/env bash
# A command run as on a CPU with AVX2 only, emulated on a newer one (issue 21's timings). An emulation,
# not the reference machine: the same cores, clock and memory, with every instruction newer than AVX2 kept out:
#   - llama.cpp built without AVX-512, AVX-VNNI and AMX (GGML_NATIVE off), checked: no zmm/tmm register
#     in its CPU library; llama-cpp-python loads it through LLAMA_CPP_LIB_PATH;
#   - torch (the tools) held to AVX2 kernels: ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS;
#   - gpt4tools told the CPU has no AVX-512/AMX (GPT4TOOLS_CPU_ISA=avx2): it picks the q8_0 GGUF, fp32 torch.
# The arguments are the command (called scripts/bench_turns_avx2.sh, running only bench_turns.py, until session 36):
#   bash scripts/avx2_only.sh .venv/bin/python scripts/bench_turns.py --limit 8 --configs before,prepared --typing 2
#   N=40 RUNNERS="llamacpp:q8_0:1 llamacpp:q4_0:1" bash scripts/avx2_only.sh bash scripts/bench_runner_speed.sh
#   BUILD_ONLY=1 bash scripts/avx2_only.sh   # build and check the AVX2-only llama.cpp (cached), nothing else
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$PWD/.venv/bin/python}
CACHE=${GPT4TOOLS_CACHE:-$HOME/.cache/gpt4tools}
VERSION=$($PY -c 'from gpt4tools.llm.gguf import LLAMA_CPP_VERSION; print(LLAMA_CPP_VERSION)')
LIB=$CACHE/llamacpp-avx2/$VERSION/llama_cpp/lib
if [ ! -s "$LIB/libggml-cpu.so" ]; then
  tmp=$CACHE/llamacpp-avx2/$VERSION.partial; rm -rf "$tmp"; mkdir -p "$tmp"
  echo "building llama-cpp-python $VERSION for AVX2 only (~5-10 min on 2 cores; log: $tmp.log)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
    -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    $PY -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$tmp" "llama-cpp-python==$VERSION" > "$tmp.log" 2>&1 \
    || { tail -20 "$tmp.log"; exit 1; }
  $PY -m zipfile -e "$tmp"/llama_cpp_python-*.whl "$tmp"
  rm -rf "$CACHE/llamacpp-avx2/$VERSION"; mv "$tmp" "$CACHE/llamacpp-avx2/$VERSION"; rm -f "$tmp.log"
fi
# the check that makes it AVX2-only: no AVX-512 (zmm) or AMX (tmm) register anywhere in its code, and AVX2's
# (ymm) in its CPU kernels. grep -c reads all of objdump's output (grep -q would end it early: SIGPIPE, pipefail)
count() { objdump -d --no-show-raw-insn "$1" | grep -cE "$2" || true; }
for so in "$LIB"/libggml*.so "$LIB"/libllama.so; do
  [ "$(count "$so" '%zmm|%tmm')" -eq 0 ] || { echo "$so uses AVX-512 or AMX instructions: not an AVX2-only build" >&2; exit 1; }
done
[ "$(count "$LIB/libggml-cpu.so" '%ymm')" -gt 0 ] || { echo "$LIB/libggml-cpu.so has no AVX code" >&2; exit 1; }
echo "AVX2-only llama.cpp: $LIB" >&2
[ -z "${BUILD_ONLY:-}" ] || exit 0
[ $# -gt 0 ] || { echo "usage: bash scripts/avx2_only.sh COMMAND [ARGS...]" >&2; exit 2; }
export LLAMA_CPP_LIB_PATH=$LIB GPT4TOOLS_CPU_ISA=avx2
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
exec "$@"
