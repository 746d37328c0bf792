#!/usr/bin/env bash
# Builds llama.cpp's llama-perplexity, llama-bench, llama-quantize and llama-tokenize from the
# llama.cpp vendored in the PyPI source distribution llama-cpp-python==0.3.36: the exact
# llama.cpp that produced ../shared/reference/. Used by comparison scripts and cross-check
# tests; evalq itself never links it.
#
# Usage: scripts/build-llama-cpp.sh [WORKDIR]   (default: $EVALQ_CACHE_DIR or ~/.cache/evalq)
# Prints the directory holding the binaries on its last line.
set -euo pipefail
work="${1:-${EVALQ_CACHE_DIR:-$HOME/.cache/evalq}}/llama.cpp"
mkdir -p "$work"
src="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
if [ ! -d "$src" ]; then
  python3 -m pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$work" >&2
  tar -xzf "$work/llama_cpp_python-0.3.36.tar.gz" -C "$work"
fi
if ! command -v cmake >/dev/null; then
  python3 -m pip install -q cmake >&2
fi
build="$work/build"
targets=(llama-perplexity llama-bench llama-quantize llama-tokenize)
if [ ! -x "$build/bin/llama-perplexity" ] || [ ! -x "$build/bin/llama-bench" ]; then
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" >&2
fi
echo "$build/bin"
