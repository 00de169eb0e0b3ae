#!/usr/bin/env bash
# Sets up everything gptq-quant needs on a fresh Debian machine and builds it.
# Idempotent: a second run only rebuilds what changed. Heavy downloads (the
# PyPI torch wheel that carries libtorch) are cached under ~/.cache/gptq-quant.
#
#   scripts/setup.sh            build dependencies + Release build in ./build
#   scripts/setup.sh --oracles  also the Python peers the conformance tests use
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${GPTQ_CACHE:-$HOME/.cache/gptq-quant}"
VENV="$CACHE/venv"
BUILD_DIR="${GPTQ_BUILD_DIR:-$ROOT/build}"
WITH_ORACLES=0
LLAMA_CPP_DIR=""  # the llama.cpp peer's tree (--oracles), handed to CTest
for arg in "$@"; do
  case "$arg" in
    --oracles) WITH_ORACLES=1 ;;
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

install_python_packages() {
  mkdir -p "$CACHE"
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.build-reqs.sha"
  local want
  want=$(sha256sum "$ROOT/scripts/requirements-build.txt" | cut -d' ' -f1)
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "installing build requirements (torch wheel with libtorch; ~4 GB on first run)"
    "$VENV/bin/pip" install -q --progress-bar off -r "$ROOT/scripts/requirements-build.txt"
    echo "$want" >"$stamp"
  fi
  if ((WITH_ORACLES)); then
    stamp="$VENV/.oracle-reqs.sha"
    want=$(sha256sum "$ROOT/scripts/requirements-oracles.txt" | cut -d' ' -f1)
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
      log "installing test oracles (transformers, tokenizers, gptqmodel)"
      "$VENV/bin/pip" install -q --progress-bar off -r "$ROOT/scripts/requirements-oracles.txt"
      echo "$want" >"$stamp"
    fi
  fi
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
  log "building (this takes a few minutes on a fresh machine)"
  cmake --build "$BUILD_DIR" -j"$(nproc)" 2>&1 | grep -E "error|warning: unused|Error" || true
  cmake --build "$BUILD_DIR" -j"$(nproc)" >/dev/null
  log "built $BUILD_DIR/gptq-quant"
}

install_debian_packages
install_python_packages
((WITH_ORACLES)) && LLAMA_CPP_DIR=$("$ROOT/scripts/setup_llama_cpp.sh")
configure_and_build
