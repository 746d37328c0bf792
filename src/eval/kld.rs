//! Quality of a quantized model against its baseline, as llama-perplexity's KL-divergence mode
//! (`tools/perplexity/perplexity.cpp`, `kl_divergence()`) reports it: both perplexities, the
//! ratio and difference of perplexities with errors that account for the two being measured on
//! the same tokens, the KL divergence (mean, error, percentiles), the RMS change in the
//! probability of the correct token and how often the top-1 token is unchanged.
//!
//! evalq runs the baseline and the quantized model in lockstep, so each token is scored with
//! [`BaseRow::new`] once (the baseline's log-softmax) and [`token_stats_vs`] once per format, and
//! the [`TokenStats`] go into one [`QualityAccumulator`] per format.
//!
//! # Where evalq departs from llama.cpp, and why
//!
//! llama.cpp writes the baseline's log-probabilities to its `--kl-divergence-base` file
//! quantized to 16 bits: logits in `[max − 16, max]` in 65535 steps (about 2.4e-4 nats per
//! step), every lower logit clamped to `max − 16`. Its KL-divergence mode computes `PPL(base)`,
//! the KLD and Δp from those values. evalq has the baseline's logits in memory and uses the exact
//! log-probabilities, which has two consequences when comparing with llama.cpp:
//!
//! - the KLD and Δp differ in about the 4th significant digit (the 16-bit rounding);
//! - `PPL(base)` is larger: llama.cpp's clamp caps a target token's NLL at about 16 nats, and a
//!   small model meets such tokens. evalq's `PPL(base)` is the baseline's ordinary perplexity
//!   (what `llama-perplexity` prints without `--kl-divergence`), whereas llama.cpp's KL mode
//!   reports a lower one (SmolLM2-135M, 4 chunks of 512: 22.692 instead of 22.746, −0.24%), and
//!   with it a larger `ln(PPL(Q)/PPL(base))` and ΔPPL (+0.0024 and +0.054 there). `PPL(Q)` is
//!   unaffected: both sides use the quantized model's exact logits.
//!
//! Everything else follows llama.cpp:
//!
//! - the log-softmax takes the max and the differences in f32 and sums the exponentials in f64,
//!   then rounds the log of the sum to f32; an NLL is `(max + log_sum_exp) − logit` in f32;
//! - the KLD of a token sums `p_base·(ln p_base − ln p_q)` over the tokens whose base
//!   log-probability exceeds [`KLD_LOG_P_FLOOR`] (−16), llama.cpp's cut-off; each term in f32, the
//!   sum in f64;
//! - top-1 tokens are the first index of the maximum;
//! - Δp is `exp(−nll_q) − exp(−nll_base)` in f32;
//! - the statistics (see [`KldSummary`]) use llama.cpp's formulas, including its thresholds: no
//!   error below 11 tokens, no covariance below 10.
//!
//! Two deliberate guards: squared errors that rounding makes slightly negative (identical models)
//! are clamped to 0 where llama.cpp would print NaN, and the RMS Δp error is 0 when RMS Δp is 0.
//! Squares and products of per-token values are taken in f64 (llama.cpp squares the f32 NLLs in
//! f32), which changes nothing visible.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kernels::exp;
use crate::run::results::Quality;

/// Base log-probabilities at or below this do not enter the KL divergence. llama.cpp skips them
/// because its 16-bit base file cannot represent them (they all sit at the clamped bottom); evalq
/// keeps the cut-off so that both sum over the same tokens. The truncated sum can dip slightly
/// below zero for near-identical distributions, and differs from the full-vocabulary KLD by about
/// 0.5% for SmolLM2-135M at Q8_0.
pub const KLD_LOG_P_FLOOR: f32 = -16.0;

/// z for a two-sided 95% normal interval.
const Z95: f64 = 1.96;

/// What one scored token contributes to the statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenStats {
    /// −ln p_base(target).
    pub nll_base: f64,
    /// −ln p_q(target).
    pub nll_q: f64,
    /// KL(p_base ‖ p_q) in nats, over the tokens above [`KLD_LOG_P_FLOOR`].
    pub kld: f64,
    /// p_q(target) − p_base(target).
    pub dp: f64,
    /// Whether both models put the same token first.
    pub same_top: bool,
}

/// The parameters of a log-softmax, computed as llama.cpp does.
struct LogSoftmax {
    max: f32,
    /// First index of the maximum.
    imax: usize,
    /// ln Σ exp(l − max), summed in f64 and rounded to f32.
    log_sum_exp: f32,
}

impl LogSoftmax {
    fn new(logits: &[f32]) -> Self {
        assert!(!logits.is_empty(), "log-softmax of an empty logit row");
        let mut max = logits[0];
        let mut imax = 0;
        for (i, &l) in logits.iter().enumerate().skip(1) {
            if l > max {
                max = l;
                imax = i;
            }
        }
        // Four f64 accumulators instead of one: a single chain of dependent adds would
        // serialize them. The order only moves the f64 sum by a few ulps, far below the f32
        // rounding of its log. Logit `i` goes to accumulator `i % 4`, a last partial four to
        // the first; the exponentials (libm's `expf` bits) are computed 64 at a time.
        let mut acc = [0f64; 4];
        let main = logits.len() / 4 * 4;
        exp::for_each_exp_minus(logits, max, |i, e| acc[if i < main { i % 4 } else { 0 }] += e as f64);
        let sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        LogSoftmax { max, imax, log_sum_exp: sum.ln() as f32 }
    }

    /// −ln p(tok), as llama.cpp's KL-divergence mode computes it.
    fn nll(&self, logits: &[f32], tok: usize) -> f32 {
        (self.max + self.log_sum_exp) - logits[tok]
    }

    /// ln p(i).
    fn log_prob(&self, logit: f32) -> f32 {
        (logit - self.max) - self.log_sum_exp
    }
}

/// The baseline's side of one token, computed once and shared by every format: its
/// log-probabilities above [`KLD_LOG_P_FLOOR`], its top-1 token and its probability of the
/// target.
#[derive(Clone, Debug)]
pub struct BaseRow {
    n_vocab: usize,
    target: usize,
    top: usize,
    nll: f32,
    p_target: f32,
    /// Tokens whose base log-probability exceeds the floor, ascending, with ln p and p. Typically
    /// a small fraction of the vocabulary, which is what makes scoring a format cheap.
    kept: Vec<u32>,
    log_p: Vec<f32>,
    p: Vec<f32>,
}

impl BaseRow {
    /// The baseline's log-softmax of one logit row, scoring `target`.
    ///
    /// Panics when `base_logits` is empty or `target` is out of range.
    pub fn new(base_logits: &[f32], target: usize) -> Self {
        assert!(target < base_logits.len(), "target {target} outside a vocabulary of {}", base_logits.len());
        let ls = LogSoftmax::new(base_logits);
        let nll = ls.nll(base_logits, target);
        let (mut kept, mut log_p, mut p) = (Vec::new(), Vec::new(), Vec::new());
        for (i, &l) in base_logits.iter().enumerate() {
            let lp = ls.log_prob(l);
            if lp > KLD_LOG_P_FLOOR {
                kept.push(i as u32);
                log_p.push(lp);
                p.push(lp.exp());
            }
        }
        BaseRow { n_vocab: base_logits.len(), target, top: ls.imax, nll, p_target: (-nll).exp(), kept, log_p, p }
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    pub fn target(&self) -> usize {
        self.target
    }

    /// The baseline's top-1 token (first index of the maximum logit).
    pub fn top(&self) -> usize {
        self.top
    }

    /// −ln p_base(target).
    pub fn nll(&self) -> f64 {
        self.nll as f64
    }

    /// p_base(target).
    pub fn p_target(&self) -> f64 {
        self.p_target as f64
    }

    /// `(token, ln p_base)` for every token above [`KLD_LOG_P_FLOOR`], ascending by token.
    pub fn log_probs(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        self.kept.iter().zip(&self.log_p).map(|(&i, &lp)| (i as usize, lp))
    }
}

/// Scores one token of a quantized model against the baseline's precomputed row.
///
/// Panics when `q_logits` does not have the baseline's vocabulary size or `target` is not the
/// row's target (both are caller bugs).
pub fn token_stats_vs(base: &BaseRow, q_logits: &[f32], target: usize) -> TokenStats {
    assert_eq!(q_logits.len(), base.n_vocab, "quantized and baseline logit rows differ in length");
    assert_eq!(target, base.target, "target differs from the one the baseline row was built for");
    let ls = LogSoftmax::new(q_logits);
    let mut kld = 0f64;
    for ((&i, &lp_base), &p_base) in base.kept.iter().zip(&base.log_p).zip(&base.p) {
        let lp_q = ls.log_prob(q_logits[i as usize]);
        kld += (p_base * (lp_base - lp_q)) as f64;
    }
    let nll_q = ls.nll(q_logits, target);
    let dp = (-nll_q).exp() - base.p_target;
    TokenStats { nll_base: base.nll(), nll_q: nll_q as f64, kld, dp: dp as f64, same_top: ls.imax == base.top }
}

/// Scores one token from both full logit rows. When several formats are compared with the same
/// baseline, build the [`BaseRow`] once and call [`token_stats_vs`] instead.
pub fn token_stats(base_logits: &[f32], q_logits: &[f32], target: usize) -> TokenStats {
    token_stats_vs(&BaseRow::new(base_logits, target), q_logits, target)
}

/// Running sums of one chunk, for the per-chunk arrays.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ChunkSums {
    count: usize,
    nll_q: f64,
    nll_base: f64,
    kld: f64,
    same_top: usize,
}

/// Collects [`TokenStats`] for one format over a run; serializable so that a run can checkpoint
/// it between chunks.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QualityAccumulator {
    count: usize,
    sum_nll: f64,
    sum_nll2: f64,
    sum_nll_base: f64,
    sum_nll_base2: f64,
    sum_nll_nll_base: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_dp: f64,
    sum_dp2: f64,
    sum_dp4: f64,
    n_same_top: usize,
    /// Every token's KLD, for the median, percentiles and maximum (f32, as llama.cpp keeps them).
    kld_values: Vec<f32>,
    /// Per completed chunk: mean NLL of the format and of the baseline, mean KLD, same-top
    /// fraction.
    chunk_nll: Vec<f64>,
    chunk_nll_base: Vec<f64>,
    chunk_kld: Vec<f64>,
    chunk_top1: Vec<f64>,
    /// The chunk being filled.
    open: ChunkSums,
}

impl QualityAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, t: &TokenStats) {
        self.count += 1;
        self.sum_nll += t.nll_q;
        self.sum_nll2 += t.nll_q * t.nll_q;
        self.sum_nll_base += t.nll_base;
        self.sum_nll_base2 += t.nll_base * t.nll_base;
        self.sum_nll_nll_base += t.nll_q * t.nll_base;
        self.sum_kld += t.kld;
        self.sum_kld2 += t.kld * t.kld;
        self.sum_dp += t.dp;
        let dp2 = t.dp * t.dp;
        self.sum_dp2 += dp2;
        self.sum_dp4 += dp2 * dp2;
        self.n_same_top += t.same_top as usize;
        self.kld_values.push(t.kld as f32);

        let c = &mut self.open;
        c.count += 1;
        c.nll_q += t.nll_q;
        c.nll_base += t.nll_base;
        c.kld += t.kld;
        c.same_top += t.same_top as usize;
    }

    /// Closes the current chunk and records its means. A chunk with no tokens records nothing.
    pub fn end_chunk(&mut self) {
        let c = std::mem::take(&mut self.open);
        if c.count == 0 {
            return;
        }
        let n = c.count as f64;
        self.chunk_nll.push(c.nll_q / n);
        self.chunk_nll_base.push(c.nll_base / n);
        self.chunk_kld.push(c.kld / n);
        self.chunk_top1.push(c.same_top as f64 / n);
    }

    /// Tokens pushed so far.
    pub fn n_tokens(&self) -> usize {
        self.count
    }

    /// Chunks closed so far.
    pub fn n_chunks(&self) -> usize {
        self.chunk_nll.len()
    }

    /// The baseline's perplexity over the tokens pushed (the same for every format).
    pub fn base_ppl(&self) -> f64 {
        mean_and_err(self.sum_nll_base, self.sum_nll_base2, self.count).0.exp()
    }

    /// Its error, `PPL · se(NLL)` as llama.cpp computes it.
    pub fn base_ppl_err(&self) -> f64 {
        self.base_ppl() * mean_and_err(self.sum_nll_base, self.sum_nll_base2, self.count).1
    }

    /// The baseline's mean NLL per completed chunk.
    pub fn base_chunk_nll(&self) -> &[f64] {
        &self.chunk_nll_base
    }

    /// Every figure of llama.cpp's final printout (Δp percentiles aside), over all tokens pushed.
    /// Empty accumulators give zeros, as llama.cpp's `mean_and_uncertainty` does for no tokens.
    pub fn summary(&self) -> KldSummary {
        let n = self.count;
        let (ln_q, ln_q_err) = mean_and_err(self.sum_nll, self.sum_nll2, n);
        let (ln_b, ln_b_err) = mean_and_err(self.sum_nll_base, self.sum_nll_base2, n);
        let cov = covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, n);
        let (ppl_q, ppl_b) = (ln_q.exp(), ln_b.exp());
        let (ppl_q_err, ppl_b_err) = (ppl_q * ln_q_err, ppl_b * ln_b_err);
        let ln_ratio = ln_q - ln_b;
        let ln_ratio_err = (ln_q_err * ln_q_err + ln_b_err * ln_b_err - 2.0 * cov).max(0.0).sqrt();
        let ppl_ratio = ln_ratio.exp();
        // The covariance of the two PPLs by the delta method: d exp(x)/dx = exp(x).
        let ppl_cov = ppl_q * ppl_b * cov;
        let dppl_err = (ppl_q_err * ppl_q_err + ppl_b_err * ppl_b_err - 2.0 * ppl_cov).max(0.0).sqrt();

        let (kld_mean, kld_err) = mean_and_err(self.sum_kld, self.sum_kld2, n);
        let mut sorted = self.kld_values.clone();
        sorted.sort_by(f32::total_cmp);
        let pct = |f: f32| percentile(&sorted, f) as f64;

        let (dp_mean, dp_mean_err) = mean_and_err(self.sum_dp, self.sum_dp2, n);
        let (mse, mse_err) = mean_and_err(self.sum_dp2, self.sum_dp4, n);
        let rms = mse.sqrt();
        // d sqrt(x)/dx = 1/(2 sqrt(x)); undefined at 0, where there is nothing to be uncertain of.
        let rms_err = if rms > 0.0 { 0.5 / rms * mse_err } else { 0.0 };

        let same = if n > 0 { self.n_same_top as f64 / n as f64 } else { 0.0 };
        let same_err = if n > 1 { (same * (1.0 - same) / (n - 1) as f64).sqrt() } else { 0.0 };

        KldSummary {
            n_tokens: n,
            ppl_q,
            ppl_q_err,
            ppl_base: ppl_b,
            ppl_base_err: ppl_b_err,
            cor_ln_ppl: cov / (ln_q_err * ln_b_err),
            ln_ppl_ratio: ln_ratio,
            ln_ppl_ratio_err: ln_ratio_err,
            ppl_ratio,
            ppl_ratio_err: ppl_ratio * ln_ratio_err,
            dppl: ppl_q - ppl_b,
            dppl_err,
            kld_mean,
            kld_err,
            kld_max: pct(1.0),
            kld_p999: pct(0.999),
            kld_p99: pct(0.99),
            kld_p95: pct(0.95),
            kld_p90: pct(0.90),
            kld_median: median_f32(&sorted) as f64,
            kld_p10: pct(0.10),
            kld_p5: pct(0.05),
            kld_p1: pct(0.01),
            kld_p01: pct(0.001),
            kld_min: pct(0.0),
            dp_mean_pct: 100.0 * dp_mean,
            dp_mean_err_pct: 100.0 * dp_mean_err,
            rms_dp_pct: 100.0 * rms,
            rms_dp_err_pct: 100.0 * rms_err,
            same_top_pct: 100.0 * same,
            same_top_err_pct: 100.0 * same_err,
        }
    }

    /// The format's [`Quality`]. Tokens pushed after the last [`end_chunk`](Self::end_chunk)
    /// count in the totals but not in the per-chunk arrays.
    pub fn finish(&self) -> Quality {
        let s = self.summary();
        let (low, high) = (s.dppl - Z95 * s.dppl_err, s.dppl + Z95 * s.dppl_err);
        Quality {
            n_tokens: s.n_tokens,
            ppl: s.ppl_q,
            ppl_err: s.ppl_q_err,
            ln_ppl_ratio: s.ln_ppl_ratio,
            ln_ppl_ratio_err: s.ln_ppl_ratio_err,
            dppl: s.dppl,
            dppl_err: s.dppl_err,
            dppl_ci_low: low,
            dppl_ci_high: high,
            distinguishable: low > 0.0 || high < 0.0,
            kld_mean: s.kld_mean,
            kld_err: s.kld_err,
            kld_median: s.kld_median,
            kld_p99: s.kld_p99,
            kld_max: s.kld_max,
            same_top_pct: s.same_top_pct,
            same_top_err: s.same_top_err_pct,
            rms_dp: s.rms_dp_pct,
            rms_dp_err: s.rms_dp_err_pct,
            chunk_nll: self.chunk_nll.clone(),
            chunk_kld: self.chunk_kld.clone(),
            chunk_top1: self.chunk_top1.clone(),
        }
    }
}

/// The figures of llama-perplexity's final KL-divergence printout. Percent fields are in
/// percent, as llama.cpp prints them. `Display` prints them in llama.cpp's layout, for a
/// side-by-side comparison with `scripts/crosscheck_kld.sh`.
#[derive(Clone, Debug, PartialEq)]
pub struct KldSummary {
    pub n_tokens: usize,
    pub ppl_q: f64,
    pub ppl_q_err: f64,
    pub ppl_base: f64,
    pub ppl_base_err: f64,
    /// Correlation of the two mean NLLs, a fraction (llama.cpp prints it in percent); NaN when
    /// either has no error.
    pub cor_ln_ppl: f64,
    pub ln_ppl_ratio: f64,
    pub ln_ppl_ratio_err: f64,
    pub ppl_ratio: f64,
    pub ppl_ratio_err: f64,
    pub dppl: f64,
    pub dppl_err: f64,
    pub kld_mean: f64,
    pub kld_err: f64,
    pub kld_max: f64,
    pub kld_p999: f64,
    pub kld_p99: f64,
    pub kld_p95: f64,
    pub kld_p90: f64,
    pub kld_median: f64,
    pub kld_p10: f64,
    pub kld_p5: f64,
    pub kld_p1: f64,
    pub kld_p01: f64,
    pub kld_min: f64,
    pub dp_mean_pct: f64,
    pub dp_mean_err_pct: f64,
    pub rms_dp_pct: f64,
    pub rms_dp_err_pct: f64,
    pub same_top_pct: f64,
    pub same_top_err_pct: f64,
}

impl fmt::Display for KldSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pm = |v: f64, e: f64| format!("{v:10.6} ± {e:10.6}");
        writeln!(f, "====== Perplexity statistics ======")?;
        writeln!(f, "Mean PPL(Q)                   : {}", pm(self.ppl_q, self.ppl_q_err))?;
        writeln!(f, "Mean PPL(base)                : {}", pm(self.ppl_base, self.ppl_base_err))?;
        writeln!(f, "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%", 100.0 * self.cor_ln_ppl)?;
        writeln!(f, "Mean ln(PPL(Q)/PPL(base))     : {}", pm(self.ln_ppl_ratio, self.ln_ppl_ratio_err))?;
        writeln!(f, "Mean PPL(Q)/PPL(base)         : {}", pm(self.ppl_ratio, self.ppl_ratio_err))?;
        writeln!(f, "Mean PPL(Q)-PPL(base)         : {}", pm(self.dppl, self.dppl_err))?;
        writeln!(f)?;
        writeln!(f, "====== KL divergence statistics ======")?;
        writeln!(f, "Mean    KLD: {}", pm(self.kld_mean, self.kld_err))?;
        for (label, v) in [
            ("Maximum KLD", self.kld_max),
            ("99.9%   KLD", self.kld_p999),
            ("99.0%   KLD", self.kld_p99),
            ("95.0%   KLD", self.kld_p95),
            ("90.0%   KLD", self.kld_p90),
            ("Median  KLD", self.kld_median),
            ("10.0%   KLD", self.kld_p10),
            (" 5.0%   KLD", self.kld_p5),
            (" 1.0%   KLD", self.kld_p1),
            (" 0.1%   KLD", self.kld_p01),
            ("Minimum KLD", self.kld_min),
        ] {
            writeln!(f, "{label}: {v:10.6}")?;
        }
        writeln!(f)?;
        writeln!(f, "====== Token probability statistics ======")?;
        writeln!(f, "Mean    Δp: {:6.3} ± {:5.3} %", self.dp_mean_pct, self.dp_mean_err_pct)?;
        writeln!(f, "RMS Δp    : {:6.3} ± {:5.3} %", self.rms_dp_pct, self.rms_dp_err_pct)?;
        writeln!(f, "Same top p: {:6.3} ± {:5.3} %", self.same_top_pct, self.same_top_err_pct)
    }
}

/// Mean of `n` values from their sum and sum of squares, and llama.cpp's standard error of that
/// mean: `sqrt((E[x²] − E[x]²) / (n − 1))`, zero unless the variance is positive and `n > 10`.
fn mean_and_err(sum: f64, sum2: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = sum / n as f64;
    let var = sum2 / n as f64 - mean * mean;
    let err = if var > 0.0 && n > 10 { (var / (n - 1) as f64).sqrt() } else { 0.0 };
    (mean, err)
}

/// llama.cpp's covariance of two means: `(E[ab] − E[a]E[b]) / (n − 1)`, zero below 10 values.
fn covariance(sum_a: f64, sum_b: f64, sum_ab: f64, n: usize) -> f64 {
    if n < 10 {
        return 0.0;
    }
    let n_f = n as f64;
    (sum_ab / n_f - (sum_a / n_f) * (sum_b / n_f)) / (n_f - 1.0)
}

/// llama.cpp's percentile of ascending `sorted`: linear interpolation at `fraction · (n − 1)`,
/// computed in f32; the ends for fractions outside (0, 1). 0 when empty.
fn percentile(sorted: &[f32], fraction: f32) -> f32 {
    let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else { return 0.0 };
    if fraction <= 0.0 {
        return first;
    }
    if fraction >= 1.0 {
        return last;
    }
    let pos = fraction * (sorted.len() - 1) as f32;
    let ip = pos as usize;
    let frac = pos - ip as f32;
    (1.0 - frac) * sorted[ip] + frac * sorted[(ip + 1).min(sorted.len() - 1)]
}

/// The middle value of ascending `sorted`, the mean of the middle two (in f32) for even lengths.
fn median_f32(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n.is_multiple_of(2) => 0.5 * (sorted[n / 2] + sorted[n / 2 - 1]),
        _ => sorted[n / 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::perplexity::{nll, NllStats};

    /// xorshift64*: deterministic test data without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Uniform in [0, 1).
        fn uniform(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Roughly normal (sum of uniforms), mean 0, variance 1.
        fn normal(&mut self) -> f64 {
            (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
        }
    }

    fn logits(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (scale * rng.normal()) as f32).collect()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn identical_logits_give_zero_divergence() {
        let mut rng = Rng(7);
        let mut acc = QualityAccumulator::new();
        for chunk in 0..3 {
            for t in 0..100 {
                let l = logits(&mut rng, 500, 3.0);
                let target = (chunk * 100 + t) % 500;
                let s = token_stats(&l, &l, target);
                assert_eq!(s.kld, 0.0);
                assert_eq!(s.dp, 0.0);
                assert_eq!(s.nll_q, s.nll_base);
                assert!(s.same_top);
                acc.push(&s);
            }
            acc.end_chunk();
        }
        let q = acc.finish();
        assert_eq!(q.n_tokens, 300);
        assert_eq!(q.kld_mean, 0.0);
        assert_eq!((q.kld_median, q.kld_p99, q.kld_max), (0.0, 0.0, 0.0));
        assert_eq!(q.same_top_pct, 100.0);
        assert_eq!(q.same_top_err, 0.0);
        assert_eq!((q.rms_dp, q.rms_dp_err), (0.0, 0.0));
        assert_eq!(q.dppl, 0.0);
        assert_eq!(q.ln_ppl_ratio, 0.0);
        // Only rounding residue of the covariance correction remains: relative to the unpaired errors.
        assert!(q.ln_ppl_ratio_err < 1e-6 * (q.ppl_err / q.ppl), "{}", q.ln_ppl_ratio_err);
        assert!(q.dppl_err < 1e-6 * q.ppl_err, "{} vs {}", q.dppl_err, q.ppl_err);
        assert!(q.dppl_ci_low <= 0.0 && q.dppl_ci_high >= 0.0);
        assert!(!q.distinguishable);
        assert_eq!(q.ppl, acc.base_ppl());
        assert_eq!(q.ppl_err, acc.base_ppl_err());
        assert!(q.ppl_err > 0.0);
        assert_eq!(q.chunk_nll, acc.base_chunk_nll());
        assert_eq!(q.chunk_top1, vec![1.0; 3]);
        assert_eq!(q.chunk_kld, vec![0.0; 3]);
        assert!(close(acc.summary().cor_ln_ppl, 1.0, 1e-9));
    }

    #[test]
    fn three_token_distributions_match_closed_form() {
        let pb = [0.5f64, 0.3, 0.2];
        let pq = [0.4f64, 0.4, 0.2];
        // Shifting logits by a constant changes nothing; use different shifts on each side.
        let base: Vec<f32> = pb.iter().map(|p| (p.ln() + 1.5) as f32).collect();
        let q: Vec<f32> = pq.iter().map(|p| (p.ln() - 4.0) as f32).collect();
        let want_kld: f64 = pb.iter().zip(&pq).map(|(b, q)| b * (b / q).ln()).sum();
        for target in 0..3 {
            let s = token_stats(&base, &q, target);
            assert!((s.kld - want_kld).abs() < 1e-6, "kld {} vs {want_kld}", s.kld);
            assert!((s.nll_base + pb[target].ln()).abs() < 1e-6);
            assert!((s.nll_q + pq[target].ln()).abs() < 1e-6);
            assert!((s.dp - (pq[target] - pb[target])).abs() < 1e-6);
            // Base top is 0; the quantized 0.4/0.4 tie resolves to the first index, 0.
            assert!(s.same_top);
        }
        // The reverse direction is a different divergence, and the top token moves.
        let q2: Vec<f32> = [0.3f64, 0.5, 0.2].iter().map(|p| p.ln() as f32).collect();
        let s = token_stats(&base, &q2, 1);
        let want: f64 = 0.5 * (0.5f64 / 0.3).ln() + 0.3 * (0.3f64 / 0.5).ln();
        assert!((s.kld - want).abs() < 1e-6);
        assert!(!s.same_top);
    }

    #[test]
    fn nll_follows_llama_cpp_log_softmax() {
        let mut rng = Rng(3);
        let l = logits(&mut rng, 49152, 4.0);
        for target in [0, 17, 49151] {
            let row = BaseRow::new(&l, target);
            assert!((row.nll() - nll(&l, target)).abs() < 1e-5, "{} vs {}", row.nll(), nll(&l, target));
            assert!((row.p_target() - (-nll(&l, target)).exp()).abs() < 1e-7);
        }
    }

    #[test]
    fn base_row_keeps_tokens_above_the_floor() {
        // ln p ≈ 0, −10, −30 (the last below −16), plus a tie for the top at index 3.
        let l = [0.0f32, -10.0, -30.0, 0.0];
        let row = BaseRow::new(&l, 2);
        let kept: Vec<usize> = row.log_probs().map(|(i, _)| i).collect();
        assert_eq!(kept, vec![0, 1, 3]);
        assert_eq!(row.top(), 0);
        // A token the floor drops still has an exact NLL and Δp.
        assert!((row.nll() - (30.0 + (2.0f64 + (-10f64).exp()).ln())).abs() < 1e-4);
        // The dropped term is missing from the KLD: with q uniform the truncated sum is
        // Σ_kept p_b ln(p_b · 4).
        let q = [0.0f32; 4];
        let s = token_stats_vs(&row, &q, 2);
        let want: f64 = row.log_probs().map(|(_, lp)| (lp as f64).exp() * (lp as f64 + 4f64.ln())).sum();
        assert!((s.kld - want).abs() < 1e-6);
    }

    #[test]
    fn shared_base_row_equals_direct_scoring() {
        let mut rng = Rng(11);
        let base = logits(&mut rng, 4096, 3.0);
        let row = BaseRow::new(&base, 100);
        for _ in 0..3 {
            let q: Vec<f32> = base.iter().map(|&b| b + (0.1 * rng.normal()) as f32).collect();
            let s = token_stats_vs(&row, &q, 100);
            assert_eq!(s, token_stats(&base, &q, 100));
            assert!(s.kld > 0.0);
        }
    }

    /// Synthetic per-token values with correlated NLLs, so that the covariance matters.
    fn synthetic(n: usize, seed: u64, shift: f64) -> Vec<TokenStats> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|_| {
                let nll_base = 3.0 + 1.5 * rng.normal();
                let nll_q = nll_base + shift + 0.05 * rng.normal();
                let p_b = (-nll_base).exp();
                TokenStats {
                    nll_base,
                    nll_q,
                    kld: 0.01 * rng.uniform() * rng.uniform(),
                    dp: (-nll_q).exp() - p_b,
                    same_top: rng.uniform() < 0.9,
                }
            })
            .collect()
    }

    /// Population variance (two-pass).
    fn var_pop(v: &[f64]) -> f64 {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64
    }

    #[test]
    fn errors_match_direct_computation() {
        let toks = synthetic(400, 5, 0.01);
        let mut acc = QualityAccumulator::new();
        toks.iter().for_each(|t| acc.push(t));
        acc.end_chunk();
        let q = acc.finish();
        let s = acc.summary();
        let n = toks.len() as f64;
        let col = |f: fn(&TokenStats) -> f64| toks.iter().map(f).collect::<Vec<f64>>();
        let (a, b) = (col(|t| t.nll_q), col(|t| t.nll_base));
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let se = |v: &[f64]| (var_pop(v) / (n - 1.0)).sqrt();

        let (ppl_q, ppl_b) = (mean(&a).exp(), mean(&b).exp());
        assert!(close(q.ppl, ppl_q, 1e-12));
        assert!(close(q.ppl_err, ppl_q * se(&a), 1e-9));
        assert!(close(s.ppl_base_err, ppl_b * se(&b), 1e-9));
        // se² + se² − 2 cov of the two means is the standard error of the paired difference.
        let diff: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        assert!(close(q.ln_ppl_ratio, mean(&diff), 1e-12));
        assert!(close(q.ln_ppl_ratio_err, se(&diff), 1e-6), "{} vs {}", q.ln_ppl_ratio_err, se(&diff));
        // The pairing matters: the unpaired error is far larger.
        assert!(q.ln_ppl_ratio_err < 0.1 * (se(&a).powi(2) + se(&b).powi(2)).sqrt());
        // Likewise ΔPPL's error is that of the linearized difference ppl_q·a − ppl_b·b.
        let lin: Vec<f64> = a.iter().zip(&b).map(|(x, y)| ppl_q * x - ppl_b * y).collect();
        assert!(close(q.dppl_err, se(&lin), 1e-6), "{} vs {}", q.dppl_err, se(&lin));
        assert!(close(q.dppl_ci_low, q.dppl - 1.96 * q.dppl_err, 1e-12));
        assert!(close(q.dppl_ci_high, q.dppl + 1.96 * q.dppl_err, 1e-12));
        assert_eq!(q.distinguishable, q.dppl_ci_low > 0.0);
        assert!(q.distinguishable, "a 1% shift over 400 tokens with 0.05 noise is visible");
        let cor = {
            let (ma, mb) = (mean(&a), mean(&b));
            let c = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / n;
            c / (var_pop(&a) * var_pop(&b)).sqrt()
        };
        assert!(close(s.cor_ln_ppl, cor, 1e-9));

        let kld = col(|t| t.kld);
        assert!(close(q.kld_mean, mean(&kld), 1e-12));
        assert!(close(q.kld_err, se(&kld), 1e-9));

        let dp2: Vec<f64> = col(|t| t.dp * t.dp);
        let rms = mean(&dp2).sqrt();
        assert!(close(q.rms_dp, 100.0 * rms, 1e-12));
        assert!(close(q.rms_dp_err, 100.0 * 0.5 / rms * se(&dp2), 1e-6));
        let dp = col(|t| t.dp);
        assert!(close(s.dp_mean_pct, 100.0 * mean(&dp), 1e-9));

        let same = toks.iter().filter(|t| t.same_top).count() as f64 / n;
        assert!(close(q.same_top_pct, 100.0 * same, 1e-12));
        assert!(close(q.same_top_err, 100.0 * (same * (1.0 - same) / (n - 1.0)).sqrt(), 1e-12));

        // PPL and its error agree with the perplexity mode's statistics.
        let mut st = NllStats::default();
        a.iter().for_each(|&v| st.push(v));
        assert!(close(q.ppl, st.ppl(), 1e-12));
        assert!(close(q.ppl_err, st.ppl_stderr(), 1e-12));
    }

    #[test]
    fn equal_quality_is_not_distinguishable() {
        // Same distribution, independent noise around the baseline: ΔPPL's interval covers 0.
        let toks = synthetic(400, 9, 0.0);
        let mut acc = QualityAccumulator::new();
        toks.iter().for_each(|t| acc.push(t));
        let q = acc.finish();
        assert!(q.dppl_ci_low < 0.0 && q.dppl_ci_high > 0.0, "{q:?}");
        assert!(!q.distinguishable);
    }

    #[test]
    fn percentiles_follow_llama_cpp() {
        let with_klds = |v: &[f32]| {
            let mut acc = QualityAccumulator::new();
            for &k in v {
                acc.push(&TokenStats { nll_base: 1.0, nll_q: 1.0, kld: k as f64, dp: 0.0, same_top: true });
            }
            acc.finish()
        };
        // 1..=10 in a scrambled order: median 5.5; p99 at 0.99·9 = 8.91 → 9 + 0.91.
        let q = with_klds(&[7.0, 2.0, 10.0, 1.0, 5.0, 9.0, 3.0, 6.0, 8.0, 4.0]);
        assert_eq!(q.kld_median, 5.5);
        assert!((q.kld_p99 - 9.91).abs() < 1e-5, "{}", q.kld_p99);
        assert_eq!(q.kld_max, 10.0);
        // 101 values: the median is the middle one and p99 lands exactly on index 99.
        let v: Vec<f32> = (0..101).rev().map(|i| i as f32).collect();
        let q = with_klds(&v);
        assert_eq!((q.kld_median, q.kld_p99, q.kld_max), (50.0, 99.0, 100.0));
        let sorted: Vec<f32> = (0..101).map(|i| i as f32).collect();
        assert_eq!(percentile(&sorted, 0.0), 0.0);
        assert_eq!(percentile(&sorted, 1.5), 100.0);
        assert!((percentile(&sorted, 0.999) - 99.9).abs() < 1e-4);
        assert_eq!(median_f32(&[]), 0.0);
    }

    #[test]
    fn small_counts_follow_llama_cpp_thresholds() {
        assert_eq!(mean_and_err(10.0, 30.0, 10), (1.0, 0.0));
        let (m, e) = mean_and_err(11.0, 33.0, 11);
        assert_eq!(m, 1.0);
        assert!(close(e, (2.0f64 / 10.0).sqrt(), 1e-12));
        assert_eq!(mean_and_err(0.0, 0.0, 0), (0.0, 0.0));
        assert_eq!(covariance(1.0, 2.0, 3.0, 9), 0.0);
        assert!(close(covariance(10.0, 20.0, 30.0, 10), (3.0 - 2.0) / 9.0, 1e-12));
        let q = QualityAccumulator::new().finish();
        assert_eq!(q.n_tokens, 0);
        assert_eq!((q.kld_mean, q.kld_max, q.same_top_pct), (0.0, 0.0, 0.0));
    }

    #[test]
    fn chunks_record_their_own_means() {
        let toks = synthetic(30, 2, 0.02);
        let mut acc = QualityAccumulator::new();
        acc.end_chunk(); // an empty chunk records nothing
        for (i, t) in toks.iter().enumerate() {
            acc.push(t);
            if i == 9 || i == 19 {
                acc.end_chunk();
            }
        }
        // The last 10 tokens are still open: in the totals, not in the chunk arrays.
        let q = acc.finish();
        assert_eq!((q.n_tokens, acc.n_chunks()), (30, 2));
        for (c, range) in [0..10, 10..20].into_iter().enumerate() {
            let part = &toks[range];
            let m = |f: fn(&TokenStats) -> f64| part.iter().map(f).sum::<f64>() / 10.0;
            assert!(close(q.chunk_nll[c], m(|t| t.nll_q), 1e-12));
            assert!(close(acc.base_chunk_nll()[c], m(|t| t.nll_base), 1e-12));
            assert!(close(q.chunk_kld[c], m(|t| t.kld), 1e-12));
            assert!(close(q.chunk_top1[c], m(|t| t.same_top as u8 as f64), 1e-12));
        }
        acc.end_chunk();
        assert_eq!(acc.finish().chunk_nll.len(), 3);
    }

    #[test]
    fn checkpoint_round_trips() {
        let toks = synthetic(250, 4, 0.01);
        let mut acc = QualityAccumulator::new();
        toks[..200].iter().for_each(|t| acc.push(t));
        acc.end_chunk();
        toks[200..210].iter().for_each(|t| acc.push(t));
        let json = serde_json::to_string(&acc).unwrap();
        let mut back: QualityAccumulator = serde_json::from_str(&json).unwrap();
        for t in &toks[210..] {
            acc.push(t);
            back.push(t);
        }
        acc.end_chunk();
        back.end_chunk();
        let (a, b) = (acc.finish(), back.finish());
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        assert_eq!(a.chunk_nll.len(), 2);
        assert_eq!(acc.summary(), back.summary());
    }

    #[test]
    fn summary_prints_llama_cpp_labels() {
        let mut acc = QualityAccumulator::new();
        synthetic(200, 8, 0.01).iter().for_each(|t| acc.push(t));
        let text = acc.summary().to_string();
        for label in [
            "Mean PPL(Q)",
            "Cor(ln(PPL(Q)), ln(PPL(base)))",
            "Mean PPL(Q)-PPL(base)",
            "99.0%   KLD",
            "RMS Δp",
            "Same top p",
        ] {
            assert!(text.contains(label), "{label} missing from\n{text}");
        }
    }
}
