#!/usr/bin/env python3
"""Side by side: llama-perplexity against `evalq ppl` on the same GGUF file, same data, same
thread count, runs alternated, median and spread over several runs.

The file evaluated is the F32 source (the default model dequantized by llama-quantize), so both
tools run the same f32 weights. Prints a Markdown table. Timing covers the evaluation loop only:
llama.cpp's from "calculating perplexity" to "Final estimate" (its log timestamps), evalq's
`seconds` from `--json` (tokenization and weight loading excluded in both).

Usage: scripts/compare_ppl_speed.py [--runs 5] [--chunks 20] [--threads 2]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    cache = Path(os.environ.get("EVALQ_CACHE_DIR", Path.home() / ".cache/evalq"))
    bindir = Path(sh([str(ROOT / "scripts/build-llama-cpp.sh")]).stdout.strip().splitlines()[-1])
    sh(["cargo", "build", "--release", "--bins"], cwd=ROOT)
    evalq = ROOT / "target/release/evalq"
    q41 = Path(sh([str(evalq), "fetch"]).stdout.strip())
    f32 = cache / "models/smollm2-f32.gguf"
    if not f32.exists():
        sh([str(bindir / "llama-quantize"), "--allow-requantize", str(q41), str(f32), "F32"])
    data = ROOT.parent / "shared/datasets/wikitext-2-raw/wiki.test.raw"
    if not data.exists():
        sys.exit(f"missing {data}")

    def llama():
        out = subprocess.run(
            [str(bindir / "llama-perplexity"), "-m", str(f32), "-f", str(data), "-c", "512",
             "--chunks", str(args.chunks), "-t", str(args.threads)],
            text=True, capture_output=True, check=True)
        log = out.stdout + out.stderr
        # llama.cpp's log stamps read minutes.seconds.milliseconds.microseconds.
        def stamp(pat):
            # The stamp directly before the message: llama.cpp interleaves stdout and stderr on
            # one line ("... ETA 0.21.881.979 I Final estimate"), so no wildcard in between.
            m = re.search(r"(\d+)\.(\d+)\.(\d+)\.(\d+) I (?:perplexity: )?" + pat, log)
            return int(m.group(1)) * 60 + int(m.group(2)) + int(m.group(3)) / 1e3 + int(m.group(4)) / 1e6
        secs = stamp("Final estimate") - stamp("calculating perplexity")
        ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", log).group(1))
        return secs, ppl

    def ours():
        out = sh([str(evalq), "--threads", str(args.threads), "ppl", "--model", str(f32),
                  "--dataset", str(data), "--chunks", str(args.chunks), "--json"])
        j = json.loads(out.stdout)
        return j["seconds"], j["ppl"]

    res = {"llama.cpp": [], "evalq": []}
    for i in range(args.runs):
        for name, fn in (("llama.cpp", llama), ("evalq", ours)):
            s, p = fn()
            res[name].append((s, p))
            print(f"run {i + 1}: {name:9} {s:7.2f} s  PPL {p:.4f}", file=sys.stderr)

    scored = args.chunks * 255
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"Machine: {cpu}, {os.cpu_count()} cores; {args.threads} threads; F32 source; "
          f"{args.chunks} chunks x 512; {args.runs} alternated runs\n")
    print("| tool | PPL | median s | min s | max s | scored tok/s (median) |")
    print("|---|---|---|---|---|---|")
    med = {}
    for name, rows in res.items():
        secs = [s for s, _ in rows]
        med[name] = statistics.median(secs)
        print(f"| {name} | {rows[0][1]:.4f} | {med[name]:.2f} | {min(secs):.2f} | {max(secs):.2f} | "
              f"{scored / med[name]:.1f} |")
    print(f"\nspeed ratio evalq/llama.cpp (tokens/s): {med['llama.cpp'] / med['evalq']:.2f}x")


if __name__ == "__main__":
    main()
