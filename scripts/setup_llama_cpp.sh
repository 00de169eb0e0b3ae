#!/usr/bin/env bash
# Builds llama.cpp, the GGUF peer the conformance tests compare against (never
# used by gptq-quant itself), from the only registry we use: PyPI. The
# llama-cpp-python sdist carries the whole llama.cpp tree under
# vendor/llama.cpp and the ctypes bindings under llama_cpp/.
#
#   scripts/setup_llama_cpp.sh     (scripts/setup.sh --oracles calls it)
#
# Result, cached under ~/.cache/gptq-quant (prints the tree root on stdout):
#   llama.cpp-0.3.36/                     tree root: gguf-py/, convert_hf_to_gguf.py
#   llama.cpp-0.3.36/build/bin/           llama-quantize, llama-imatrix,
#                                         llama-perplexity, libllama.so, libggml*.so
#   llama.cpp-0.3.36/bindings/llama_cpp/  the ctypes bindings (LLAMA_CPP_LIB_PATH=build/bin)
# A stamp file makes a rerun a no-op; delete the directory to rebuild.
#
# Build choices, for a 2-core CI box and for results that do not depend on
# which x86 machine ran them: only the three tools (and the libraries they
# link), Release, shared libraries (the bindings need libllama.so), no
# tests/examples/server/HTTPS. GGML_NATIVE=OFF: ggml then compiles one fixed
# x86-64 AVX2+FMA+F16C code path, so an AVX-512 machine runs the same kernels
# (same summation order, same numbers) as an AVX2 one, and a cached build never
# meets an instruction its machine lacks.
set -euo pipefail

CACHE="${GPTQ_CACHE:-$HOME/.cache/gptq-quant}"
VENV="$CACHE/venv"
VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SDIST="$CACHE/downloads/llama_cpp_python-$VERSION.tar.gz"
TREE="$CACHE/llama.cpp-$VERSION"
TARGETS=(llama-quantize llama-imatrix llama-perplexity)
CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON
  -DGGML_NATIVE=OFF -DGGML_CCACHE=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
  -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON
)
# The stamp records what was built, so changing a flag or target rebuilds.
STAMP="$TREE/.gptq-built"
WANT_STAMP="$VERSION ${CMAKE_FLAGS[*]} ${TARGETS[*]}"

log() { echo "[setup-llama.cpp] $*" >&2; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" ]]; then
  echo "$TREE"
  exit 0
fi

download_sdist() {
  if [[ -f "$SDIST" ]] && echo "$SDIST_SHA256  $SDIST" | sha256sum -c --status; then
    return
  fi
  log "downloading llama-cpp-python==$VERSION sdist from PyPI"
  mkdir -p "$(dirname "$SDIST")"
  rm -f "$SDIST"
  "$VENV/bin/pip" download -q --progress-bar off --no-deps --no-binary :all: \
    -d "$(dirname "$SDIST")" "llama-cpp-python==$VERSION"
  if ! echo "$SDIST_SHA256  $SDIST" | sha256sum -c --status; then
    log "sha256 of $SDIST does not match the pinned $SDIST_SHA256"
    exit 1
  fi
}

unpack_tree() {
  [[ -f "$TREE/CMakeLists.txt" && -d "$TREE/bindings/llama_cpp" ]] && return
  log "unpacking vendor/llama.cpp to $TREE"
  local tmp="$TREE.unpack.$$"
  rm -rf "$tmp" "$TREE"
  mkdir -p "$tmp"
  tar -xzf "$SDIST" -C "$tmp" "llama_cpp_python-$VERSION/vendor/llama.cpp" "llama_cpp_python-$VERSION/llama_cpp"
  mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" "$tmp/tree"
  rm -f "$tmp/tree/.git"  # a submodule link into a repository the sdist does not have
  mkdir -p "$tmp/tree/bindings"
  mv "$tmp/llama_cpp_python-$VERSION/llama_cpp" "$tmp/tree/bindings/llama_cpp"
  mv "$tmp/tree" "$TREE"
  rm -rf "$tmp"
}

build_tools() {
  local generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  # Reached only when the stamp is missing or stale: (re)apply every flag.
  [[ -f "$TREE/build/CMakeCache.txt" ]] && generator=()  # keep the generator it was made with
  log "configuring $TREE/build"
  cmake -S "$TREE" -B "$TREE/build" "${generator[@]}" "${CMAKE_FLAGS[@]}" >"$TREE/build.configure.log" 2>&1 ||
    { cat "$TREE/build.configure.log" >&2; exit 1; }
  log "building ${TARGETS[*]} (4-8 minutes on 2 cores)"
  local start=$SECONDS
  if ! cmake --build "$TREE/build" --target "${TARGETS[@]}" -j"$(nproc)" >"$TREE/build/gptq-build.log" 2>&1; then
    tail -40 "$TREE/build/gptq-build.log" >&2
    log "build failed; full log: $TREE/build/gptq-build.log"
    exit 1
  fi
  log "built in $((SECONDS - start)) s"
}

download_sdist
unpack_tree
build_tools
for f in "${TARGETS[@]}" libllama.so libggml.so libggml-base.so libggml-cpu.so libllama-common.so libllama-perplexity-impl.so; do
  [[ -e "$TREE/build/bin/$f" ]] || { log "missing $TREE/build/bin/$f after the build"; exit 1; }
done
echo "$WANT_STAMP" >"$STAMP"
echo "$TREE"
