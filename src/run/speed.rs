//! Speed as llama-bench measures it: pp (a prompt of `pp_tokens` processed as one batch from an
//! empty cache) and tg (`tg_tokens` generated one at a time with the KV cache), each after a
//! warm-up run, repeated, reported as the median with every repetition kept for the spread.
//!
//! Generation streams every weight once per token, so it is bound by memory bandwidth; the
//! bytes one token reads are counted here so the report can set tokens/s against the machine's
//! measured peak.

use std::time::Instant;

use crate::model::forward::{forward, forward_next, State};
use crate::model::weights::LlamaWeights;
use crate::run::results::{median, Speed};

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct SpeedParams {
    pub pp_tokens: usize,
    pub tg_tokens: usize,
    /// Timed repetitions of each test (after one untimed warm-up).
    pub reps: usize,
}

impl Default for SpeedParams {
    fn default() -> Self {
        SpeedParams { pp_tokens: 512, tg_tokens: 128, reps: 5 }
    }
}

/// Token ids for the tests: a fixed pseudo-random sequence, as llama-bench feeds random tokens
/// (the content does not change the work done).
fn test_tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut x = 0x9E37_79B9u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % vocab as u32
        })
        .collect()
}

/// Bytes that generating one token streams from memory at KV position `pos`: every matrix of
/// every layer and the output matrix once, one row of token_embd, the norms, and the cached
/// keys and values attention reads.
pub fn bytes_per_token(w: &LlamaWeights, pos: usize) -> u64 {
    let c = &w.config;
    let matrices: usize = w.layers.iter().map(|l| l.n_matrix_bytes()).sum::<usize>() + w.output().n_bytes();
    let embd_row = w.tok_embd.n_bytes() / c.vocab_size;
    let norms = (2 * c.n_layer + 1) * c.d_model * 4;
    let kv = 2 * c.n_layer * (pos + 1) * c.kv_dim() * std::mem::size_of::<f32>();
    (matrices + embd_row + norms + kv) as u64
}

/// Runs pp and tg for `w` and returns the speed figures (bandwidth fields use `peak_gbps`).
/// `state` must hold at least `max(pp_tokens, tg_tokens)` positions.
pub fn measure(w: &LlamaWeights, state: &mut State, p: &SpeedParams, peak_gbps: f64) -> Speed {
    let vocab = w.config.vocab_size;
    let prompt = test_tokens(p.pp_tokens, vocab);
    let gen = test_tokens(p.tg_tokens, vocab);

    let mut pp_runs = Vec::with_capacity(p.reps);
    for rep in 0..=p.reps {
        let t = Instant::now();
        forward(w, state, &prompt, p.pp_tokens - 1);
        let s = t.elapsed().as_secs_f64();
        if rep > 0 {
            pp_runs.push(p.pp_tokens as f64 / s);
        }
    }

    let mut tg_runs = Vec::with_capacity(p.reps);
    for rep in 0..=p.reps {
        state.clear();
        let t = Instant::now();
        for &tok in &gen {
            forward_next(w, state, &[tok], 0);
        }
        let s = t.elapsed().as_secs_f64();
        if rep > 0 {
            tg_runs.push(p.tg_tokens as f64 / s);
        }
    }

    // The average over the generated positions 0..tg_tokens.
    let bpt = (0..p.tg_tokens).map(|pos| bytes_per_token(w, pos) as f64).sum::<f64>() / p.tg_tokens as f64;
    let tg_tps = median(&tg_runs);
    let tg_gbps = bpt * tg_tps / 1e9;
    Speed {
        pp_tokens: p.pp_tokens,
        tg_tokens: p.tg_tokens,
        pp_tps: median(&pp_runs),
        pp_runs,
        tg_tps,
        tg_runs,
        tg_bytes_per_token: bpt,
        tg_gbps,
        bw_util_pct: if peak_gbps > 0.0 { 100.0 * tg_gbps / peak_gbps } else { f64::NAN },
        roofline_tg_tps: if bpt > 0.0 { peak_gbps * 1e9 / bpt } else { f64::NAN },
        peak_rss_bytes: 0,
    }
}
