#!/usr/bin/env bash
# Cross-checks the NEON path: builds for aarch64 and runs the kernel tests under qemu-aarch64.
# Installs the target, the cross linker and qemu-user when they are missing (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -q aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo check --release --target aarch64-unknown-linux-gnu --target-dir target/aarch64 --all-targets
cargo test --release --target aarch64-unknown-linux-gnu --target-dir target/aarch64 --lib kernels
