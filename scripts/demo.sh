#!/usr/bin/env bash
# Sets everything up and runs the main job on its embedded default: the GPTQ
# solver benchmark on a seeded 4096x4096 layer (4-bit, group 128, act-order).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${GPTQ_BUILD_DIR:-$ROOT/build}"
"$ROOT/scripts/setup.sh"
"$BUILD_DIR/gptq-quant" benchmark solver --size 4096 --samples 4096 --bits 4 --group-size 128 --desc-act
