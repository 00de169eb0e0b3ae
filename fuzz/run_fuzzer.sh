#!/usr/bin/env bash
# Builds and runs the libFuzzer target for the safetensors header parser.
#
#   fuzz/run_fuzzer.sh [SECONDS]      default 300; work dir $GPTQ_FUZZ_DIR (/tmp/gptq-fuzz)
#
# Needs clang with its libFuzzer runtime (Debian: clang-14 libclang-rt-14-dev,
# installed here when missing). The normal build never needs clang: the
# fuzzer lives in its own build directory (build-fuzz) configured with
# -DCMAKE_CXX_COMPILER=clang++-14 -DGPTQ_BUILD_FUZZERS=ON -DGPTQ_BUILD_TESTS=OFF.
# Seeds are valid files written by the reference `safetensors` package
# (fuzz/make_corpus.py); crashes land in $GPTQ_FUZZ_DIR/artifacts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_TO_RUN="${1:-300}"
CACHE="${GPTQ_CACHE:-$HOME/.cache/gptq-quant}"
PYTHON="$CACHE/venv/bin/python"
BUILD_DIR="${GPTQ_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
WORK="${GPTQ_FUZZ_DIR:-/tmp/gptq-fuzz}"

if ! command -v clang++-14 >/dev/null || ! dpkg -s libclang-rt-14-dev >/dev/null 2>&1; then
  echo "[fuzz] installing clang-14 and libclang-rt-14-dev (libFuzzer runtime)" >&2
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clang-14 libclang-rt-14-dev >/dev/null
fi

if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++-14 -DGPTQ_BUILD_FUZZERS=ON -DGPTQ_BUILD_TESTS=OFF \
    -DCMAKE_PREFIX_PATH="$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
    -Dspdlog_DIR="$("$PYTHON" -c 'import tokenspeed_spdlog, os; print(os.path.join(os.path.dirname(tokenspeed_spdlog.__file__), "cmake"))')" \
    -DTORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" >/dev/null
fi
cmake --build "$BUILD_DIR" --target gptq_fuzz_safetensors_header

mkdir -p "$WORK/corpus" "$WORK/seeds" "$WORK/artifacts"
"$PYTHON" "$ROOT/fuzz/make_corpus.py" "$WORK/seeds"
"$BUILD_DIR/fuzz/gptq_fuzz_safetensors_header" -max_total_time="$SECONDS_TO_RUN" \
  -print_final_stats=1 -max_len=4096 -dict="$ROOT/fuzz/safetensors.dict" \
  -artifact_prefix="$WORK/artifacts/" "$WORK/corpus" "$WORK/seeds"
