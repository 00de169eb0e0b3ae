#!/usr/bin/env bash
# Sets up everything gptq-quant needs on a fresh Debian machine and builds it.
# Idempotent: a second run only rebuilds what changed. Heavy downloads (the
# PyPI torch wheel that carries libtorch) are cached under ~/.cache/gptq-quant.
#
#   scripts/setup.sh            build dependencies + Release build in ./build
#   scripts/setup.sh --demo     only what scripts/demo.sh needs: the gptq-quant
#                               target (no tests) and transformers to make the
#                               demo model; no gptqmodel, no llama.cpp
#   scripts/setup.sh --oracles  also the Python peers the conformance tests use
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${GPTQ_CACHE:-$HOME/.cache/gptq-quant}"
VENV="$CACHE/venv"
BUILD_DIR="${GPTQ_BUILD_DIR:-$ROOT/build}"
WITH_ORACLES=0
WITH_DEMO=0
BUILD_TARGET=all    # --demo: the executable alone
LLAMA_CPP_DIR=""  # the llama.cpp peer's tree (--oracles), handed to CTest
for arg in "$@"; do
  case "$arg" in
    --oracles) WITH_ORACLES=1 ;;
    --demo) WITH_DEMO=1; BUILD_TARGET=gptq-quant ;;
    *) echo "setup.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

log() { echo "[setup] $*" >&2; }

install_debian_packages() {
  local wanted=(build-essential cmake ccache git libcli11-dev nlohmann-json3-dev libgtest-dev libpcre2-dev libgloo-dev python3-venv
                libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev)
  local missing=()
  for pkg in "${wanted[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# install_requirements <name> <what>: scripts/requirements-<name>.txt into the
# venv, skipped while the file's hash matches the one recorded last time.
install_requirements() {
  local file="$ROOT/scripts/requirements-$1.txt" stamp="$VENV/.$1-reqs.sha" want
  want=$(sha256sum "$file" | cut -d' ' -f1)
  [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && return
  log "installing $2"
  "$VENV/bin/pip" install -q --progress-bar off -r "$file"
  echo "$want" >"$stamp"
}

install_python_packages() {
  mkdir -p "$CACHE"
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  install_requirements build "build requirements (torch wheel with libtorch; ~4 GB on first run)"
  ((WITH_DEMO)) && install_requirements demo "the demo model's maker (transformers, tokenizers)"
  ((WITH_ORACLES)) && install_requirements oracles "test oracles (transformers, tokenizers, gptqmodel, compressed-tensors)"
  return 0
}

configure_and_build() {
  local torch_prefix spdlog_dir
  torch_prefix=$("$VENV/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
  spdlog_dir=$("$VENV/bin/python" -c 'import tokenspeed_spdlog, os; print(os.path.join(os.path.dirname(tokenspeed_spdlog.__file__), "cmake"))')
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    log "configuring $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$torch_prefix" -Dspdlog_DIR="$spdlog_dir" \
      -DGPTQ_PYTHON="$VENV/bin/python" ${LLAMA_CPP_DIR:+-DGPTQ_LLAMA_CPP_DIR:PATH="$LLAMA_CPP_DIR"} \
      -DTORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" >/dev/null
  elif [[ -n "$LLAMA_CPP_DIR" ]] && ! grep -qxF "GPTQ_LLAMA_CPP_DIR:PATH=$LLAMA_CPP_DIR" "$BUILD_DIR/CMakeCache.txt"; then
    cmake -DGPTQ_LLAMA_CPP_DIR:PATH="$LLAMA_CPP_DIR" "$BUILD_DIR" >/dev/null
  fi
  log "building $BUILD_TARGET (a few minutes on a fresh machine; ccache makes rebuilds quick)"
  local start=$SECONDS build_log="$BUILD_DIR/build.log"
  if ! cmake --build "$BUILD_DIR" --target "$BUILD_TARGET" -j"$(nproc)" >"$build_log" 2>&1; then
    grep -E "error|Error" "$build_log" | head -40 >&2
    log "build failed; full log: $build_log"
    exit 1
  fi
  grep -E "warning:" "$build_log" | sort -u | head -20 >&2 || true
  log "built $BUILD_DIR/gptq-quant in $((SECONDS - start)) s"
}

install_debian_packages
install_python_packages
((WITH_ORACLES)) && LLAMA_CPP_DIR=$("$ROOT/scripts/setup_llama_cpp.sh")
configure_and_build
