#!/usr/bin/env python3
"""Bitwise cross-check of evalq's dequantization against the `gguf` package (gguf-py).

Usage: crosscheck_dequant.py DIR

DIR holds pairs of files written by tests/dequant_crosscheck.rs:

  <label>.<TYPE>.bin   raw ggml blocks of type TYPE (e.g. Q4_K), or just <TYPE>.bin
  <label>.<TYPE>.f32   evalq's dequantization of them, little-endian f32

Each .bin is dequantized with `gguf.quants.dequantize` and compared bit for bit (NaNs included)
with the matching .f32. For every pair one line is printed:

  OK <file> <TYPE> <n_values> <reference>

The script stops at the first mismatch, prints the type, block index, element within the block
and both values, and exits 1. It exits 2 on usage or setup errors (missing files, unknown type).

Q8_K has no dequantizer in gguf-py (it is an internal ggml format); if gguf-py lacks it, a
three-line numpy transcription of `dequantize_row_q8_K` is used and the line says so.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import gguf
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType


def q8_k_numpy(data: np.ndarray) -> np.ndarray:
    """`dequantize_row_q8_K`: f32 d, 256 int8 quants, 16 int16 sums (ignored); y = d * q."""
    block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType.Q8_K]
    blocks = data.reshape(-1, type_size)
    d = blocks[:, :4].copy().view("<f4")
    qs = blocks[:, 4 : 4 + block_size].copy().view(np.int8).astype(np.float32)
    return (d * qs).reshape(-1)


def quiet_nans(values: np.ndarray) -> int:
    """Sets the quiet bit of signaling NaNs in place; returns how many there were.

    numpy converts f16 to f32 in software and keeps a signaling NaN signaling (0x7c01 becomes
    0x7f802000). ggml's `ggml_compute_fp16_to_fp32` (a multiply by 2^-112, ggml-impl.h), the
    F16C instruction used by ggml-cpu, and the `half` crate all return it quieted (0x7fc02000).
    ggml is the reference, so the gguf-py result is adjusted for these values only.
    """
    bits = values.view(np.uint32)
    signaling = ((bits & 0x7F800000) == 0x7F800000) & ((bits & 0x007FFFFF) != 0) & ((bits & 0x00400000) == 0)
    bits[signaling] |= np.uint32(0x00400000)
    return int(signaling.sum())


def reference(data: np.ndarray, qtype: GGMLQuantizationType) -> tuple[np.ndarray, str]:
    try:
        ref = np.array(gguf.quants.dequantize(data, qtype), dtype=np.float32).reshape(-1)
    except NotImplementedError:
        if qtype == GGMLQuantizationType.Q8_K:
            return q8_k_numpy(data), "numpy-q8_k"
        raise
    if qtype == GGMLQuantizationType.F16:
        n = quiet_nans(ref)
        if n:
            print(f"NOTE F16: quieted {n} signaling NaNs in gguf-py's result, as ggml's fp16->fp32 does")
    return ref, "gguf-py"


def fmt(x: np.float32) -> str:
    return f"{float(x)!r} (0x{int(np.float32(x).view(np.uint32)):08x})"


def check(bin_path: Path) -> int:
    stem = bin_path.name[: -len(".bin")]
    type_name = stem.rsplit(".", 1)[-1]
    try:
        qtype = GGMLQuantizationType[type_name]
    except KeyError:
        print(f"error: {bin_path.name}: unknown ggml type {type_name!r}", file=sys.stderr)
        sys.exit(2)
    f32_path = bin_path.with_name(stem + ".f32")
    if not f32_path.exists():
        print(f"error: {f32_path} is missing", file=sys.stderr)
        sys.exit(2)

    data = np.fromfile(bin_path, dtype=np.uint8)
    ours = np.fromfile(f32_path, dtype="<f4")
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if data.size % type_size != 0 or data.size // type_size * block_size != ours.size:
        print(
            f"MISMATCH {bin_path.name} {type_name}: {data.size} bytes ({type_size} per block) "
            f"but {ours.size} values in {f32_path.name}",
        )
        sys.exit(1)

    ref, source = reference(data, qtype)
    if ref.size != ours.size:
        print(f"MISMATCH {bin_path.name} {type_name}: reference has {ref.size} values, ours {ours.size}")
        sys.exit(1)

    diff = np.flatnonzero(ref.view(np.uint32) != ours.view(np.uint32))
    if diff.size:
        i = int(diff[0])
        print(
            f"MISMATCH {bin_path.name} {type_name}: block {i // block_size} element {i % block_size} "
            f"(value {i}): evalq {fmt(ours[i])} vs {source} {fmt(ref[i])}; "
            f"{diff.size} of {ours.size} values differ"
        )
        sys.exit(1)
    print(f"OK {bin_path.name} {type_name} {ours.size} {source}")
    return ours.size


def main() -> None:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    root = Path(sys.argv[1])
    bins = sorted(root.glob("*.bin"))
    if not bins:
        print(f"error: no .bin files in {root}", file=sys.stderr)
        sys.exit(2)
    total = sum(check(p) for p in bins)
    print(f"all {len(bins)} files bit-identical ({total} values), gguf {metadata.version('gguf')}")


if __name__ == "__main__":
    main()
