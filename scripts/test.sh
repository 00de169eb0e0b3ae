#!/usr/bin/env bash
# Sets everything up (dependencies, test oracles, build) and runs all tests:
# GoogleTest unit tests and the conformance tests against the real peers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${GPTQ_BUILD_DIR:-$ROOT/build}"
"$ROOT/scripts/setup.sh" --oracles
cd "$BUILD_DIR"
ctest --output-on-failure -j"${GPTQ_TEST_JOBS:-2}" "$@"
