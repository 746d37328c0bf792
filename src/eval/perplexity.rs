//! Perplexity exactly as llama-perplexity computes it (`tools/perplexity/perplexity.cpp`,
//! `perplexity()`):
//!
//! - the whole text is tokenized once, with BOS first when the vocabulary adds BOS;
//! - it is cut into `n_tokens / n_ctx` non-overlapping chunks of `n_ctx` tokens (the last,
//!   partial chunk is dropped), optionally capped by `--chunks`;
//! - when the vocabulary adds BOS, the first token of every chunk is replaced by BOS;
//! - only the second half is scored: the logits at positions `n_ctx/2 ..= n_ctx-2` predict the
//!   tokens at `n_ctx/2+1 ..= n_ctx-1`, so each chunk scores `n_ctx - 1 - n_ctx/2` tokens;
//! - `PPL = exp(mean NLL)`, with the error `PPL · sqrt(var(NLL) / (N-1))`.
//!
//! The log-softmax mixes f32 and f64 exactly as llama.cpp's does.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::kernels::exp;
use crate::model::forward::{forward, State};
use crate::model::weights::LlamaWeights;
use crate::par;

/// Parameters of a perplexity run.
#[derive(Clone, Debug)]
pub struct PplParams {
    pub n_ctx: usize,
    /// At most this many chunks; `None` for all.
    pub max_chunks: Option<usize>,
    pub add_bos: bool,
    pub bos_id: Option<u32>,
}

/// Running totals after one chunk, as llama.cpp prints them (`[i]ppl,`).
#[derive(Clone, Debug, Serialize)]
pub struct ChunkResult {
    pub chunk: usize,
    /// Running perplexity over all chunks so far.
    pub ppl: f64,
    /// Mean NLL of this chunk alone.
    pub nll: f64,
}

/// The final result.
#[derive(Clone, Debug, Serialize)]
pub struct PplResult {
    pub ppl: f64,
    pub ppl_stderr: f64,
    pub n_chunks: usize,
    pub n_ctx: usize,
    pub n_tokens_scored: usize,
    pub n_tokens_total: usize,
    pub chunks: Vec<ChunkResult>,
}

/// The chunks that `tokens` splits into: `(n_chunks, first_scored_position)`.
pub fn plan(n_tokens: usize, p: &PplParams) -> Result<usize> {
    if p.n_ctx < 4 {
        return Err(Error::Invalid(format!("--ctx {} is too small (at least 4)", p.n_ctx)));
    }
    if n_tokens < 2 * p.n_ctx {
        return Err(Error::Invalid(format!(
            "the dataset tokenizes to {n_tokens} tokens, but a context of {} needs at least {} (two chunks)",
            p.n_ctx,
            2 * p.n_ctx
        )));
    }
    let max = n_tokens / p.n_ctx;
    Ok(p.max_chunks.map_or(max, |c| c.min(max)))
}

/// Accumulates NLL the way llama.cpp does: f64 sums of v and v².
#[derive(Clone, Debug, Default)]
pub struct NllStats {
    pub sum: f64,
    pub sum2: f64,
    pub count: usize,
}

impl NllStats {
    pub fn push(&mut self, v: f64) {
        self.sum += v;
        self.sum2 += v * v;
        self.count += 1;
    }

    pub fn ppl(&self) -> f64 {
        (self.sum / self.count as f64).exp()
    }

    /// llama.cpp's `PPL · sqrt((E[v²] − E[v]²) / (N − 1))`.
    pub fn ppl_stderr(&self) -> f64 {
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum2 / n - mean * mean;
        if var > 0.0 && self.count > 1 {
            self.ppl() * (var / (n - 1.0)).sqrt()
        } else {
            0.0
        }
    }
}

/// Negative log-likelihood of `tok` under `logits`, as llama.cpp's `log_softmax`: the max and the
/// difference in f32, the sum of exponentials in f64, in logit order. The exponentials are
/// libm's `expf` bits, computed 64 at a time ([`exp::for_each_exp_minus`]; 49152 scalar calls per
/// scored token otherwise).
pub fn nll(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum_exp = 0f64;
    exp::for_each_exp_minus(logits, max, |_, e| sum_exp += e as f64);
    -(((logits[tok] - max) as f64) - sum_exp.ln())
}

/// Runs the whole protocol. `on_chunk` is called after each chunk (for progress output).
pub fn perplexity(
    w: &LlamaWeights,
    tokens: &[u32],
    p: &PplParams,
    mut on_chunk: impl FnMut(&ChunkResult, usize),
) -> Result<PplResult> {
    let n_chunks = plan(tokens.len(), p)?;
    let n_ctx = p.n_ctx;
    let vocab = w.config.vocab_size;
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::Invalid(format!("token id {bad} is outside the model's vocabulary of {vocab}")));
    }
    let first = n_ctx / 2;
    let mut state = State::new(&w.config, n_ctx);
    let mut stats = NllStats::default();
    let mut chunks = Vec::with_capacity(n_chunks);
    let mut batch = vec![0u32; n_ctx];
    for i in 0..n_chunks {
        batch.copy_from_slice(&tokens[i * n_ctx..(i + 1) * n_ctx]);
        if p.add_bos {
            batch[0] = p.bos_id.ok_or_else(|| Error::Invalid("the vocabulary adds BOS but has no BOS id".into()))?;
        }
        // The forward pass and the scoring on one thread team (see `par`).
        let nlls = par::team(|| {
            forward(w, &mut state, &batch, first);
            // One log-softmax over the 49152-word vocabulary per scored token, computed in
            // parallel, each row on its own, then summed in order, so the result does not
            // depend on the thread count.
            let logits = &state.logits;
            let mut nlls = vec![0f64; n_ctx - 1 - first];
            par::for_each_row(&mut nlls, 1, |i, v| {
                v[0] = nll(&logits[i * vocab..(i + 1) * vocab], batch[first + i + 1] as usize);
            });
            nlls
        });
        let mut chunk_stats = NllStats::default();
        for v in nlls {
            stats.push(v);
            chunk_stats.push(v);
        }
        let r = ChunkResult { chunk: i + 1, ppl: stats.ppl(), nll: chunk_stats.sum / chunk_stats.count as f64 };
        on_chunk(&r, n_chunks);
        chunks.push(r);
    }
    Ok(PplResult {
        ppl: stats.ppl(),
        ppl_stderr: stats.ppl_stderr(),
        n_chunks,
        n_ctx,
        n_tokens_scored: stats.count,
        n_tokens_total: tokens.len(),
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_uniform_is_log_vocab() {
        let logits = vec![0.5f32; 1000];
        assert!((nll(&logits, 3) - (1000f64).ln()).abs() < 1e-9);
    }

    #[test]
    fn stats_match_hand_computation() {
        let mut s = NllStats::default();
        for v in [1.0, 2.0, 3.0, 4.0] {
            s.push(v);
        }
        assert!((s.ppl() - 2.5f64.exp()).abs() < 1e-12);
        // var = 7.5 - 6.25 = 1.25; stderr = ppl * sqrt(1.25/3)
        assert!((s.ppl_stderr() - 2.5f64.exp() * (1.25f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn plan_follows_llama_cpp() {
        let p = PplParams { n_ctx: 512, max_chunks: None, add_bos: false, bos_id: None };
        assert_eq!(plan(303_415, &p).unwrap(), 592);
        assert_eq!(plan(303_415, &PplParams { max_chunks: Some(20), ..p.clone() }).unwrap(), 20);
        assert!(plan(1000, &p).is_err());
    }
}
