#!/usr/bin/env bash
# llama.cpp's side of the KL-divergence cross-check: runs llama-perplexity's KL-divergence mode
# (F32 source as the base, one quantized file against it) and prints llama.cpp's statistics, to
# be compared by hand with what `evalq run` reports for the same format.
#
# Usage: scripts/crosscheck_kld.sh [QUANT_GGUF] [CHUNKS]
#   QUANT_GGUF  quantized model to score (default /tmp/q8.gguf, a Q8_0 file; /tmp/q5km.gguf is
#               another). Ideally the very file `evalq run` wrote, so that only the evaluation
#               differs.
#   CHUNKS      number of 512-token chunks (default 4)
# Environment: LLAMA_BIN (default ~/.cache/evalq/llama.cpp/build/bin, see
#   scripts/build-llama-cpp.sh), BASE_GGUF (default ~/.cache/evalq/models/smollm2-f32.gguf),
#   DATASET (default: wikitext-2-raw/wiki.test.raw under $EVALQ_DATA_DIR, ./datasets or
#   ../shared/datasets), THREADS (default 2), WORK (default /tmp; the base log-prob file goes to
#   $WORK/evalq-crosscheck-base.kld and is reused when model, chunks and dataset are unchanged).
#
# What to compare with evalq's FormatResult.quality (and BaselineInfo):
#   Mean PPL(Q)                 <-> ppl ± ppl_err
#   Mean PPL(base)              <-> baseline.ppl ± baseline.ppl_err
#   Mean ln(PPL(Q)/PPL(base))   <-> ln_ppl_ratio ± ln_ppl_ratio_err
#   Mean PPL(Q)-PPL(base)       <-> dppl ± dppl_err (evalq's 95% interval is dppl ± 1.96·dppl_err)
#   Mean KLD / Maximum KLD / 99.0% KLD / Median KLD <-> kld_mean ± kld_err / kld_max / kld_p99 /
#                                                       kld_median
#   RMS Δp                      <-> rms_dp ± rms_dp_err (both in percent)
#   Same top p                  <-> same_top_pct ± same_top_err (both in percent)
# The per-chunk lines llama.cpp prints give running totals (PPL, ln ratio, KLD, RMS Δp, same top);
# evalq's chunk_nll/chunk_kld/chunk_top1 are per-chunk values, not running ones.
#
# Expected agreement: the two sides run different forward passes (ggml's kernels vs evalq's), so
# the figures agree to 2-4 significant digits, not bit for bit (KLD within a few percent). On top
# of that, llama.cpp stores the base log-probabilities in the .kld file quantized to 16 bits (a
# range of 16 nats in 65535 steps) and clamps everything more than 16 nats below the top logit;
# evalq uses the exact base log-probabilities (src/eval/kld.rs). Hence:
#   - KLD and Δp: differ only in about the 4th significant digit from that rounding;
#   - PPL(base): llama.cpp's KL mode caps the NLL of very unlikely target tokens at ~16 nats and
#     reports a lower PPL(base) than the model's ordinary perplexity; evalq's PPL(base) is the
#     ordinary one, which this script prints last ("base pass PPL"). ln(PPL(Q)/PPL(base)) and
#     PPL(Q)-PPL(base) shift accordingly: for SmolLM2-135M, Q8_0, 4 chunks, llama.cpp's KL mode says
#     PPL(base) 22.692, ln ratio 0.0068, ΔPPL 0.155, while the exact base gives 22.746 (evalq:
#     22.745), 0.0046 and 0.104. Compare evalq's ln ratio with
#     ln(Mean PPL(Q) / base pass PPL) rather than with llama.cpp's ln ratio line.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

quant="${1:-/tmp/q8.gguf}"
chunks="${2:-4}"
bin="${LLAMA_BIN:-$HOME/.cache/evalq/llama.cpp/build/bin}"
base="${BASE_GGUF:-$HOME/.cache/evalq/models/smollm2-f32.gguf}"
threads="${THREADS:-2}"
work="${WORK:-/tmp}"

if [ -z "${DATASET:-}" ]; then
  for d in "${EVALQ_DATA_DIR:-}" "$root/datasets" "$root/../shared/datasets" "$PWD/../shared/datasets"; do
    if [ -n "$d" ] && [ -f "$d/wikitext-2-raw/wiki.test.raw" ]; then
      DATASET="$d/wikitext-2-raw/wiki.test.raw"
      break
    fi
  done
fi
dataset="${DATASET:-}"

die() { echo "crosscheck_kld.sh: $*" >&2; exit 1; }
[ -x "$bin/llama-perplexity" ] || die "no llama-perplexity in $bin (run scripts/build-llama-cpp.sh)"
[ -f "$base" ] || die "base model $base not found (run evalq fetch)"
[ -f "$quant" ] || die "quantized model $quant not found (make one with evalq quantize or $bin/llama-quantize)"
[ -n "$dataset" ] && [ -f "$dataset" ] || die "wikitext-2-raw/wiki.test.raw not found (set DATASET)"

common=(-f "$dataset" -c 512 --chunks "$chunks" -t "$threads")

# The base file depends on the base model, the dataset and the chunk count; a stamp next to it
# records them so that a rerun against another quantized file skips the base pass.
kld="$work/evalq-crosscheck-base.kld"
stamp="$kld.stamp"
want="$(stat -c '%n %s %Y' "$base" "$dataset") chunks=$chunks"
if [ ! -f "$kld" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== base pass: $base" >&2
  rm -f "$kld" "$stamp"
  "$bin/llama-perplexity" -m "$base" "${common[@]}" --kl-divergence-base "$kld" >"$work/evalq-crosscheck-base.log" 2>&1 \
    || { tail -20 "$work/evalq-crosscheck-base.log" >&2; die "base pass failed (log: $work/evalq-crosscheck-base.log)"; }
  echo "$want" >"$stamp"
fi

echo "== KL-divergence pass: $quant vs $base ($chunks chunks of 512)" >&2
log="$work/evalq-crosscheck-kld.log"
"$bin/llama-perplexity" -m "$quant" "${common[@]}" --kl-divergence-base "$kld" --kl-divergence >"$log" 2>&1 \
  || { tail -20 "$log" >&2; die "KL-divergence pass failed (log: $log)"; }

# The per-chunk table and the final statistics, without the loader's chatter. llama.cpp skips the
# final statistics when fewer than 100 tokens were scored.
sed -n '/^chunk /,$p' "$log" | grep -v '^llama_perf\|^common_perf\|^$' || die "no statistics in $log"
echo "base pass PPL (llama-perplexity without --kl-divergence, exact base logits):"
grep -m1 'Final estimate' "$work/evalq-crosscheck-base.log" | sed 's/.*Final estimate: /  /'
