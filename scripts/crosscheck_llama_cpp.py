#!/usr/bin/env python3
"""Live cross-check of evalq against llama.cpp through llama-cpp-python (the pinned 0.3.36,
which vendors the llama.cpp that made ../shared/reference).

For each file type:
  1. bytes: `evalq quantize` and llama.cpp's `llama_model_quantize` turn the same F32 source
     into GGUF files, which must be identical byte for byte;
  2. runs in llama.cpp: llama.cpp loads the file evalq wrote and computes the perplexity of the
     first chunks of WikiText-2 with llama-perplexity's protocol, which must agree with the
     reference llama-perplexity figures for that file type: within 0.2% on a machine with the
     reference machine's instruction set (AVX-512), within 2% elsewhere. llama.cpp's own
     kernels differ by instruction set, and with activations re-quantized at every product its
     2-chunk figure moves with them: on an AVX2 Zen 3, llama.cpp on byte-identical files gave
     up to 1.23% (Q5_K_M) from the AVX-512 reference. A wrong file is off by far more.

Usage: scripts/crosscheck_llama_cpp.py --evalq target/release/evalq [--formats Q4_0,Q4_K_M]
       [--ppl-chunks 2] [--work DIR]
Exits non-zero on the first failure, printing what differed.
"""
import argparse
import ctypes
import filecmp
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

# llama.cpp's LLAMA_FTYPE_* ids.
FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
    "Q5_K_M": 17, "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30, "BF16": 32,
}
GGML_TYPE_Q8_0 = 8


def reference_tolerance():
    """0.2% where the CPU has the reference machine's AVX-512, else 2% (see the module doc)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return (2e-3, "AVX-512, as the reference machine") if " avx512f" in flags else (2e-2, "not the reference machine's AVX-512")


def llama_quantize(llama_cpp, src, dst, name):
    params = llama_cpp.llama_model_quantize_default_params()
    base = name.removesuffix("_pure")
    params.pure = name.endswith("_pure")
    if base == "Q4_K_L":
        base = "Q4_K_M"
        params.token_embedding_type = GGML_TYPE_Q8_0
    params.ftype = FTYPES[base]
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize failed for {name} (rc {rc})")


def llama_perplexity(llama_cpp_mod, model, tokens, n_chunks, n_ctx=512):
    """llama-perplexity's protocol in llama.cpp itself: the second half of each chunk scored,
    max in f32, sum of exponentials in f64."""
    import numpy as np
    llm = llama_cpp_mod.Llama(model_path=str(model), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                              logits_all=True, flash_attn=True, n_threads=os.cpu_count() or 1,
                              verbose=False)
    nll, count, running = 0.0, 0, []
    first = n_ctx // 2
    for c in range(n_chunks):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx]
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[:n_ctx], dtype=np.float32)
        for pos in range(first, n_ctx - 1):
            row = logits[pos]
            mx = row.max()
            s = np.exp(row - mx, dtype=np.float32).astype(np.float64).sum()
            nll += -(float(row[chunk[pos + 1]] - mx) - math.log(s))
            count += 1
        running.append(math.exp(nll / count))
    del llm
    return running


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evalq", default=str(ROOT / "target/release/evalq"))
    ap.add_argument("--formats", default="")
    ap.add_argument("--ppl-chunks", type=int, default=2)
    ap.add_argument("--work", default="")
    args = ap.parse_args()

    import llama_cpp  # the pinned llama-cpp-python (scripts/test.sh installs it)

    ref_tensors = json.loads((SHARED / "reference/llama-cpp-tensors.json").read_text())
    ref_ppl = json.loads((SHARED / "reference/llama-cpp-ppl.json").read_text())
    formats = [f for f in args.formats.split(",") if f] or sorted(ref_tensors)
    tokens = [int(l) for l in (SHARED / "reference/wiki.test.raw.ids.txt").read_text().split()]
    work = Path(args.work or tempfile.mkdtemp(prefix="evalq-xcheck-"))
    work.mkdir(parents=True, exist_ok=True)

    src = work / "f32.gguf"
    subprocess.run([args.evalq, "--quiet", "quantize", "smollm2-135m", str(src), "--format", "F32"],
                   check=True, stdout=subprocess.DEVNULL)
    failures = []
    tol, why = reference_tolerance()
    print(f"perplexity tolerance against the reference: {tol * 100:g}% ({why})", flush=True)
    for name in formats:
        ours, theirs = work / f"evalq-{name}.gguf", work / f"llama-{name}.gguf"
        t0 = time.time()
        subprocess.run([args.evalq, "--quiet", "quantize", str(src), str(ours), "--format", name],
                       check=True, stdout=subprocess.DEVNULL)
        t1 = time.time()
        llama_quantize(llama_cpp, src, theirs, name)
        t2 = time.time()
        same = filecmp.cmp(ours, theirs, shallow=False)
        line = f"{name:12} bytes {'identical' if same else 'DIFFER'} (evalq {t1 - t0:.1f} s, llama.cpp {t2 - t1:.1f} s)"
        if not same:
            failures.append(f"{name}: files differ")
        theirs.unlink()
        key = f"{name}_c512_ch20_chunks"
        if args.ppl_chunks > 0 and key in ref_ppl:
            running = llama_perplexity(llama_cpp, ours, tokens, args.ppl_chunks)
            want = ref_ppl[key][args.ppl_chunks - 1]
            rel = abs(running[-1] / want - 1)
            line += f"; llama.cpp on evalq's file: PPL[{args.ppl_chunks}] {running[-1]:.4f} vs reference {want:.4f} ({rel * 100:.3f}%)"
            if not math.isfinite(running[-1]) or rel > tol:
                failures.append(f"{name}: llama.cpp perplexity of evalq's file {running[-1]:.4f} vs {want}")
        ours.unlink()
        print(line, flush=True)
    src.unlink()
    if failures:
        print("FAILED:\n" + "\n".join(failures))
        sys.exit(1)
    print(f"{len(formats)} passed, 0 failed")


if __name__ == "__main__":
    main()
