//! `evalq recommend`: which quantization format (and, with `--params`/`--config`, which model
//! size) to run in a given amount of RAM.
//!
//! # The memory model
//!
//! The memory llama.cpp keeps resident to run a model on the CPU with a context of `n_ctx`
//! tokens, generating (prompts in micro-batches, logits for the last token):
//!
//! ```text
//! need = weights + kv + compute + output + overhead
//! weights  = tensor bytes as written in the GGUF (measured: results.json file_bytes;
//!            other shapes: models::ModelShape::weight_bytes, llama.cpp's type mix)
//! kv       = 2 × n_layer × n_ctx_pad × n_kv_head × head_dim × bytes(kv type)
//!            bytes: f32 4, f16 2, q8_0 34/32, q4_0 18/32; n_ctx_pad = n_ctx rounded up to 256
//!            (llama-context.cpp pads n_ctx: `GGML_PAD(cparams.n_ctx, 256)`)
//! compute  = 4 × min(n_ctx, n_ubatch) × (2 × d_model + 2 × ffn_dim) + 4 × n_vocab
//!            (the activations of one micro-batch and one row of logits; n_ubatch 512,
//!            llama.cpp's default, `--ubatch` models `-ub`)
//!   with --reserve: 4 × min(n_ctx, n_ubatch) × (n_vocab + 2 × d_model), the reservation
//! output   = 4 × n_vocab                (logits of one sequence, f32)
//! overhead = 32 MiB + 1% of the sum above
//! ```
//!
//! Resident, not allocated, is the default because it is what a RAM budget is spent on: the
//! scheduler reserves room for the logits of a whole micro-batch (98 MiB for SmolLM2's
//! 49,152-token vocabulary), but a generating session computes logits for one token, so most of
//! those pages are never touched. Check: `llama-bench` (pp512 + tg16, `-ub 512`) on the Q4_1
//! file peaks at 149.0 MiB resident; the resident formula at `--ctx 528` gives 93.8 (file) +
//! 16.9 (KV, 768 cells) + 8.4 (compute) + 0.2 (output) + 33.2 (overhead) = 152.5 MiB, 2.3% above;
//! the reservation formula gives 243.2 MiB. `--reserve` counts the reservation, which is what
//! must fit with `--mlock` or without memory overcommit.
//!
//! The reserved compute buffer is the scheduler's worst-case reservation (`sched_reserve: CPU compute
//! buffer size`): with flash attention (on by default on the CPU) no n_kv × n_tokens score
//! matrix exists, so the largest live set is the f32 logits of a whole micro-batch plus two
//! d_model-wide activations. Checked against llama-perplexity of the pinned llama.cpp on
//! SmolLM2-135M Q4_1 (vocab 49152, d_model 576), `-c C -b C -ub U`, flash attention auto:
//!
//! | n_ctx | n_ubatch | printed MiB | formula MiB |
//! |------:|---------:|------------:|------------:|
//! |   512 |      128 |       24.56 |      24.563 |
//! |   512 |      256 |       49.13 |      49.125 |
//! |   512 |      512 |       98.25 |       98.25 |
//! |   600 |      512 |       98.25 |       98.25 |
//! |  1024 |      512 |       98.25 |       98.25 |
//! |  1024 |     1024 |      196.50 |      196.50 |
//! |  2048 |      128 |       25.63 |      24.563 |
//! |  2048 |      512 |      102.51 |       98.25 |
//! |  4096 |      256 |       49.13 |      49.125 |
//! |  4096 |      512 |       98.25 |       98.25 |
//! |  8192 |      512 |       98.25 |       98.25 |
//!
//! Exact except at n_ctx 2048, where the allocator's layout costs 4.3% more; the 1% overhead
//! covers that on any model whose weights are larger than its compute buffer. The printed
//! `CPU output buffer size` is 0.19 MiB for one sequence (= 4 × 49152 bytes). The KV formula
//! reproduces `llama_kv_cache: size = 11.25 MiB (512 cells, 30 layers)`, 180.00 MiB at 8192 and
//! 16.88 MiB at `-c 600` (llama.cpp pads it to 768 cells).
//!
//! The fixed 32 MiB is the process itself: llama.cpp's libraries (libllama 4.5 MB, libggml-cpu
//! 1.6 MB, libggml-base 0.9 MB, common 5.9 MB), the vocabulary tables and thread stacks:
//! `llama-tokenize` on the SmolLM2 GGUF (libraries and vocabulary, no weights) peaks at 30.1 MiB
//! resident (`/usr/bin/time -f %M`). A 128k vocabulary adds a few MiB, inside the 1%.
//!
//! Check of the whole sum against resident memory: `llama-bench -p 64 -n 16 -ub 32` on the Q4_1
//! file peaks at 131.0 MiB; `evalq recommend --ctx 80 --ubatch 32` says 93.8 (the file) + 5.6
//! (KV, 256 cells) + 6.1 (compute, ub 32) + 0.2 (output) + 33.1 (overhead) = 138.8 MiB, 6% above.
//! With the default `-ub 512` the same kind of run (pp512 + tg16) peaks at
//! 149.0 MiB while `--ctx 528` says 243.2 MiB: these are the bytes llama.cpp *allocates*, and a
//! generating session never touches most of the worst-case logits reservation. A budget that
//! covers the allocation also holds with `--mlock` or without memory overcommit; `--ubatch`
//! shrinks the reservation as llama.cpp's `-ub` does.
//!
//! # Choosing
//!
//! Among the formats that fit, the lowest mean KLD wins, then the lowest PPL (formats without
//! a KLD rank after those with one). Across model sizes ([`across_sizes`]), perplexities are
//! compared only within a family.

pub mod models;
pub mod refpoints;

use std::path::Path;

use serde::Serialize;

use crate::quant::mix::FileType;
use crate::run::results::RunResults;
use crate::{Error, Result};

use models::ModelShape;
use refpoints::RefPoint;

/// Fixed part of the overhead.
pub const OVERHEAD_FIXED_BYTES: u64 = 32 << 20;
/// Proportional part of the overhead, in percent of weights + KV + buffers.
pub const OVERHEAD_PERCENT: f64 = 1.0;
/// llama.cpp's default micro-batch (`n_ubatch`, `-ub`).
pub const DEFAULT_UBATCH: u64 = 512;
/// The default context: the one the quality figures were measured at (evalq run and
/// llama-perplexity both use 512), so the KV cache matches the measured setting.
pub const DEFAULT_CTX: u64 = 512;

/// The element type of the KV cache (llama.cpp `--cache-type-k/-v`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvType {
    F32,
    F16,
    Q8_0,
    Q4_0,
}

impl KvType {
    pub fn parse(s: &str) -> Result<KvType> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            "q4_0" => Ok(KvType::Q4_0),
            other => Err(Error::Invalid(format!("unknown KV cache type '{other}' (f16, f32, q8_0, q4_0)"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }

    /// Bytes per element as a fraction (block bytes / block size for the quantized types).
    pub fn bytes_per_element(self) -> (u64, u64) {
        match self {
            KvType::F32 => (4, 1),
            KvType::F16 => (2, 1),
            KvType::Q8_0 => (34, 32),
            KvType::Q4_0 => (18, 32),
        }
    }
}

/// The context and cache settings memory is computed for.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Settings {
    pub n_ctx: u64,
    pub kv_type: KvType,
    /// llama.cpp's `-ub`: the compute buffer scales with it.
    pub n_ubatch: u64,
    /// Count llama.cpp's worst-case compute reservation instead of what stays resident.
    pub reserve: bool,
}

/// `n_ctx` as llama.cpp sizes the cache: rounded up to a multiple of 256.
pub fn padded_ctx(n_ctx: u64) -> u64 {
    n_ctx.div_ceil(256) * 256
}

/// The KV cache: K and V for every layer and cell.
pub fn kv_bytes(s: &ModelShape, n_ctx: u64, kv: KvType) -> u64 {
    let (num, den) = kv.bytes_per_element();
    2 * s.n_layer * padded_ctx(n_ctx) * s.n_kv_head * s.head_dim * num / den
}

/// The scheduler's compute buffer as reserved (see the module doc for the check against
/// llama.cpp's prints).
pub fn compute_bytes(s: &ModelShape, n_ctx: u64, n_ubatch: u64) -> u64 {
    4 * n_ctx.min(n_ubatch) * (s.vocab + 2 * s.d_model)
}

/// The part of the compute buffer a generating session touches: one micro-batch's widest
/// activations (two d_model-wide and two ffn-wide rows per token) and one row of logits.
pub fn compute_resident_bytes(s: &ModelShape, n_ctx: u64, n_ubatch: u64) -> u64 {
    4 * n_ctx.min(n_ubatch) * (2 * s.d_model + 2 * s.ffn_dim) + 4 * s.vocab
}

/// The logits buffer of one sequence.
pub fn output_bytes(s: &ModelShape) -> u64 {
    4 * s.vocab
}

/// The memory one format needs, by part.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Need {
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
    pub output: u64,
    pub overhead: u64,
    pub total: u64,
}

/// Weights plus the parts that depend on the shape and context.
pub fn need(weights: u64, s: &ModelShape, st: &Settings) -> Need {
    let kv_cache = kv_bytes(s, st.n_ctx, st.kv_type);
    let compute = if st.reserve {
        compute_bytes(s, st.n_ctx, st.n_ubatch)
    } else {
        compute_resident_bytes(s, st.n_ctx, st.n_ubatch)
    };
    let output = output_bytes(s);
    let sum = weights + kv_cache + compute + output;
    let overhead = OVERHEAD_FIXED_BYTES + (sum as f64 * OVERHEAD_PERCENT / 100.0).round() as u64;
    Need { weights, kv_cache, compute, output, overhead, total: sum + overhead }
}

/// One (model, format) pair.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub model: String,
    pub format: String,
    pub bpw: f64,
    pub need: Need,
    /// Budget − need, in bytes; negative when it does not fit.
    pub headroom_bytes: i64,
    pub fits: bool,
    pub kld: Option<f64>,
    pub ppl: Option<f64>,
    pub pp_tps: Option<f64>,
    pub tg_tps: Option<f64>,
    /// `measured`, `published` or `extrapolated`; `none` when there is no figure.
    pub quality_kind: String,
    pub quality_source: String,
}

/// The answer for one model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelAnswer {
    pub model: String,
    pub family: String,
    pub n_params: u64,
    /// Where the sizes and figures come from.
    pub source: String,
    pub candidates: Vec<Candidate>,
    /// The winning format, if any fits and has a quality figure.
    pub recommended: Option<String>,
    pub reason: String,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn candidate(
    model: &str,
    format: &str,
    weights: u64,
    bpw: f64,
    s: &ModelShape,
    st: &Settings,
    budget: u64,
) -> Candidate {
    let need = need(weights, s, st);
    let headroom_bytes = budget as i64 - need.total as i64;
    Candidate {
        model: model.to_string(),
        format: format.to_string(),
        bpw,
        fits: headroom_bytes >= 0,
        need,
        headroom_bytes,
        kld: None,
        ppl: None,
        pp_tps: None,
        tg_tps: None,
        quality_kind: "none".into(),
        quality_source: String::new(),
    }
}

/// The index of the winner: fits, then lowest KLD (missing ranks last), then lowest PPL.
/// Candidates with neither figure are never chosen.
pub fn choose(c: &[Candidate]) -> Option<usize> {
    let key = |x: &Candidate| (x.kld.unwrap_or(f64::INFINITY), x.ppl.unwrap_or(f64::INFINITY));
    c.iter()
        .enumerate()
        .filter(|(_, x)| x.fits && (x.kld.is_some() || x.ppl.is_some()))
        .min_by(|a, b| {
            let (ka, kb) = (key(a.1), key(b.1));
            ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        })
        .map(|(i, _)| i)
}

/// Fills in the recommendation and the one-sentence reason.
fn decide(mut a: ModelAnswer) -> ModelAnswer {
    let fitting = a.candidates.iter().filter(|c| c.fits).count();
    match choose(&a.candidates) {
        Some(i) => {
            let w = &a.candidates[i];
            let label = if w.quality_kind == "extrapolated" { ", extrapolated" } else { "" };
            let metric = match (w.kld, w.ppl) {
                (Some(k), _) => format!("the lowest KLD ({k:.4}{label})"),
                (None, Some(p)) => format!("the lowest PPL ({p:.4}{label}; no KLD published)"),
                _ => unreachable!("choose skips candidates without figures"),
            };
            a.reason = format!(
                "{} fits with {} headroom and has {metric} of the {fitting} format{} that fit",
                w.format,
                fmt_bytes(w.headroom_bytes as f64),
                if fitting == 1 { "" } else { "s" }
            );
            a.recommended = Some(w.format.clone());
        }
        None if fitting == 0 => {
            let s = a.candidates.iter().min_by_key(|c| c.need.total);
            a.reason = match s {
                Some(s) => {
                    format!("no format fits; the smallest need is {} at {}", s.format, fmt_bytes(s.need.total as f64))
                }
                None => "no formats".into(),
            };
        }
        None => {
            a.reason = format!(
                "{fitting} format{} fit, but there are no quality figures for {} to rank them",
                if fitting == 1 { "" } else { "s" },
                a.model
            );
        }
    }
    a
}

/// Reads a run's results from a run directory or a results.json file.
pub fn load_results(path: &Path) -> Result<RunResults> {
    let file = if path.is_dir() { path.join("results.json") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: file.clone(),
        field: format!("line {} column {}", e.line(), e.column()),
        msg: e.to_string(),
    })
}

/// The shape of a run's model without opening it: the preset with the same parameter count.
pub fn shape_for_results(r: &RunResults) -> Option<ModelShape> {
    models::PRESETS.iter().map(|p| (p.shape)()).find(|s| s.n_params() == r.model.n_params)
}

/// The measured model's answer: weights are the files the run wrote; quality and speed are the
/// run's.
pub fn measured_answer(r: &RunResults, s: &ModelShape, st: &Settings, budget: u64, origin: &str) -> ModelAnswer {
    let model = r.model.name.clone();
    let candidates = r
        .formats
        .iter()
        .map(|f| {
            let mut c = candidate(&model, &f.format, f.file_bytes, f.bpw, s, st, budget);
            c.kld = finite(f.quality.kld_mean);
            c.ppl = finite(f.quality.ppl);
            c.pp_tps = finite(f.speed.pp_tps);
            c.tg_tps = finite(f.speed.tg_tps);
            c.quality_kind = "measured".into();
            c.quality_source = format!(
                "{origin}: {} n_ctx {} × {} chunks against {}",
                r.dataset.name, r.dataset.n_ctx, r.dataset.n_chunks, r.baseline.format
            );
            c
        })
        .collect();
    decide(ModelAnswer {
        model,
        family: s.family.clone(),
        n_params: r.model.n_params,
        source: format!("measured run {origin} (weights = file_bytes)"),
        candidates,
        recommended: None,
        reason: String::new(),
    })
}

/// The formats considered for a shape: llama.cpp's quantized family plus F16.
pub const SHAPE_FORMATS: &[FileType] = &[
    FileType::F16,
    FileType::Q8_0,
    FileType::Q6_K,
    FileType::Q5_K_M,
    FileType::Q5_K_S,
    FileType::Q5_1,
    FileType::Q5_0,
    FileType::Q4_K_M,
    FileType::Q4_K_S,
    FileType::Q4_1,
    FileType::Q4_0,
    FileType::IQ4_NL,
    FileType::IQ4_XS,
    FileType::Q3_K_L,
    FileType::Q3_K_M,
    FileType::Q3_K_S,
    FileType::Q2_K,
];

/// A shape's answer: sizes from the mix rules, quality from the reference points (or from the
/// measured run when it is the same model).
pub fn shape_answer(
    s: &ModelShape,
    points: &[RefPoint],
    measured: Option<&RunResults>,
    st: &Settings,
    budget: u64,
) -> Result<ModelAnswer> {
    let n_params = s.n_params();
    let same_run = measured.filter(|r| r.model.n_params == n_params);
    let mut candidates = Vec::new();
    for &ft in SHAPE_FORMATS {
        let (bytes, _) = s.weight_bytes(ft)?;
        let bpw = bytes as f64 * 8.0 / n_params as f64;
        let mut c = candidate(&s.name, ft.name(), bytes, bpw, s, st, budget);
        if let Some(f) = same_run.and_then(|r| r.formats.iter().find(|f| f.format == ft.name())) {
            c.kld = finite(f.quality.kld_mean);
            c.ppl = finite(f.quality.ppl);
            c.quality_kind = "measured".into();
            c.quality_source = "the measured run".into();
        } else if let Some(q) = refpoints::quality(points, &s.name, ft.name()) {
            c.kld = q.kld;
            c.ppl = q.ppl;
            c.quality_kind = if q.extrapolated { "extrapolated" } else { "published" }.into();
            c.quality_source = q.source;
        }
        candidates.push(c);
    }
    interpolate_by_bpw(&mut candidates);
    Ok(decide(ModelAnswer {
        model: s.name.clone(),
        family: s.family.clone(),
        n_params,
        source: "sizes: tensor bytes of llama.cpp's type mix for this shape".into(),
        candidates,
        recommended: None,
        reason: String::new(),
    }))
}

/// Fills formats that the reference points cannot reach (IQ4_NL and IQ4_XS: the Llama-3-8B table
/// has them only with an importance matrix) by interpolating between the nearest formats below
/// and above in bits per weight that have figures: ln KLD and ln PPL linearly in bpw. Labelled
/// extrapolated. Formats outside the range of known bpw stay without figures.
fn interpolate_by_bpw(c: &mut [Candidate]) {
    let known: Vec<(f64, Option<f64>, Option<f64>, String)> =
        c.iter().filter(|x| x.quality_kind != "none").map(|x| (x.bpw, x.kld, x.ppl, x.format.clone())).collect();
    for x in c.iter_mut().filter(|x| x.quality_kind == "none") {
        let lo = known.iter().filter(|k| k.0 <= x.bpw).max_by(|a, b| a.0.total_cmp(&b.0));
        let hi = known.iter().filter(|k| k.0 > x.bpw).min_by(|a, b| a.0.total_cmp(&b.0));
        let (Some(lo), Some(hi)) = (lo, hi) else { continue };
        let t = (x.bpw - lo.0) / (hi.0 - lo.0);
        let lerp = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some((a.ln() + t * (b.ln() - a.ln())).exp()),
            _ => None,
        };
        x.kld = lerp(lo.1, hi.1);
        x.ppl = lerp(lo.2, hi.2);
        if x.kld.is_some() || x.ppl.is_some() {
            x.quality_kind = "extrapolated".into();
            x.quality_source = format!("interpolated by bits per weight between {} and {}", lo.3, hi.3);
        }
    }
}

/// The across-size rule, as printed.
pub const ACROSS_SIZES_RULE: &str = "within a family, the size whose best fitting format has the lowest \
perplexity wins (a larger model is preferred only if its quantized PPL is lower); perplexities of \
different families (different tokenizers and data) and models without a PPL figure are not compared";

/// One family's pick across sizes.
#[derive(Clone, Debug, Serialize)]
pub struct FamilyPick {
    pub family: String,
    pub model: Option<String>,
    pub format: Option<String>,
    pub ppl: Option<f64>,
    pub reason: String,
}

/// Applies [`ACROSS_SIZES_RULE`] to the answers, family by family in order of appearance.
pub fn across_sizes(answers: &[ModelAnswer]) -> Vec<FamilyPick> {
    let mut families: Vec<&str> = Vec::new();
    for a in answers {
        if !families.contains(&a.family.as_str()) {
            families.push(&a.family);
        }
    }
    families
        .into_iter()
        .map(|fam| {
            let members: Vec<&ModelAnswer> = answers.iter().filter(|a| a.family == fam).collect();
            let mut ranked: Vec<(&ModelAnswer, &Candidate, f64)> = members
                .iter()
                .filter_map(|a| {
                    let c = a.candidates.iter().find(|c| Some(&c.format) == a.recommended.as_ref())?;
                    Some((*a, c, c.ppl?))
                })
                .collect();
            ranked.sort_by(|x, y| x.2.total_cmp(&y.2));
            let skipped: Vec<String> = members
                .iter()
                .filter(|a| !ranked.iter().any(|r| r.0.model == a.model))
                .map(|a| format!("{} ({})", a.model, a.reason))
                .collect();
            let skipped_note =
                if skipped.is_empty() { String::new() } else { format!("; not compared: {}", skipped.join("; ")) };
            match ranked.first() {
                Some((a, c, p)) => {
                    let others: Vec<String> = ranked[1..]
                        .iter()
                        .map(|(a2, c2, p2)| format!("{} {} PPL {p2:.4}", a2.model, c2.format))
                        .collect();
                    let ext = if c.quality_kind == "extrapolated" { " (extrapolated)" } else { "" };
                    let vs = if others.is_empty() {
                        " (the only size with a fitting format and a PPL)".to_string()
                    } else {
                        format!(", lower than {}", others.join(", "))
                    };
                    FamilyPick {
                        family: fam.to_string(),
                        model: Some(a.model.clone()),
                        format: Some(c.format.clone()),
                        ppl: Some(*p),
                        reason: format!("{} {} has PPL {p:.4}{ext}{vs}{skipped_note}", a.model, c.format),
                    }
                }
                None => FamilyPick {
                    family: fam.to_string(),
                    model: None,
                    format: None,
                    ppl: None,
                    reason: format!("no size can be ranked{skipped_note}"),
                },
            }
        })
        .collect()
}

/// The overall pick.
#[derive(Clone, Debug, Serialize)]
pub struct Pick {
    pub model: String,
    pub format: String,
    pub need_bytes: u64,
    pub headroom_bytes: i64,
    pub reason: String,
}

/// Everything `evalq recommend` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Recommendation {
    pub budget_bytes: u64,
    pub ctx: u64,
    pub ctx_padded: u64,
    pub kv_type: KvType,
    pub n_ubatch: u64,
    pub overhead_fixed_bytes: u64,
    pub overhead_percent: f64,
    pub formula: Formula,
    /// The answer: the measured model's format, or with model sizes, the across-size pick of
    /// the first requested size's family.
    pub recommended: Option<Pick>,
    /// Every (model, format) considered.
    pub candidates: Vec<Candidate>,
    pub models: Vec<ModelAnswer>,
    pub across_sizes_rule: Option<String>,
    pub across_sizes: Vec<FamilyPick>,
}

/// The formulas, as printed and written to JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Formula {
    pub need: &'static str,
    pub kv_cache: String,
    pub compute: String,
    pub output: &'static str,
    pub overhead: String,
}

impl Formula {
    pub fn new(kv: KvType, n_ubatch: u64, reserve: bool) -> Formula {
        let (n, d) = kv.bytes_per_element();
        let b = if d == 1 { n.to_string() } else { format!("{n}/{d}") };
        Formula {
            need: "weights + kv_cache + compute + output + overhead",
            kv_cache: format!("2 × n_layer × n_ctx (padded to 256) × n_kv_head × head_dim × {b} bytes ({})", kv.name()),
            compute: if reserve {
                format!(
                    "4 × min(n_ctx, n_ubatch = {n_ubatch}) × (n_vocab + 2 × d_model) (llama.cpp's CPU compute buffer as reserved, flash attention)"
                )
            } else {
                format!(
                    "4 × min(n_ctx, n_ubatch = {n_ubatch}) × (2 × d_model + 2 × ffn_dim) + 4 × n_vocab (resident while generating; --reserve counts llama.cpp's full reservation)"
                )
            },
            output: "4 × n_vocab (logits of one sequence)",
            overhead: format!("{} MiB + {OVERHEAD_PERCENT}% of the rest", OVERHEAD_FIXED_BYTES >> 20),
        }
    }
}

/// Assembles the recommendation; `answers` are the measured model's (if any) then the sizes'.
/// Errors when nothing fits anywhere, naming the smallest need.
pub fn recommend(budget: u64, st: &Settings, answers: Vec<ModelAnswer>, with_sizes: bool) -> Result<Recommendation> {
    let candidates: Vec<Candidate> = answers.iter().flat_map(|a| a.candidates.iter().cloned()).collect();
    if !candidates.iter().any(|c| c.fits) {
        let s = candidates.iter().min_by_key(|c| c.need.total);
        return Err(Error::Invalid(match s {
            Some(s) => format!(
                "a budget of {} is smaller than any format needs at n_ctx {}: the smallest need is {} {} at {} \
                 (weights {} + KV cache {} + compute {} + output {} + overhead {})",
                fmt_bytes(budget as f64),
                st.n_ctx,
                s.model,
                s.format,
                fmt_bytes(s.need.total as f64),
                fmt_bytes(s.need.weights as f64),
                fmt_bytes(s.need.kv_cache as f64),
                fmt_bytes(s.need.compute as f64),
                fmt_bytes(s.need.output as f64),
                fmt_bytes(s.need.overhead as f64)
            ),
            None => "nothing to recommend: no formats".into(),
        }));
    }
    let size_answers: Vec<ModelAnswer> = if with_sizes {
        answers.iter().filter(|a| !a.source.starts_with("measured")).cloned().collect()
    } else {
        vec![]
    };
    let across = if with_sizes { across_sizes(&size_answers) } else { vec![] };
    let pick_of = |model: &str, format: &str, reason: String| -> Option<Pick> {
        let c = candidates.iter().find(|c| c.model == model && c.format == format)?;
        Some(Pick {
            model: model.into(),
            format: format.into(),
            need_bytes: c.need.total,
            headroom_bytes: c.headroom_bytes,
            reason,
        })
    };
    let recommended = if with_sizes {
        across.first().and_then(|f| pick_of(f.model.as_deref()?, f.format.as_deref()?, f.reason.clone()))
    } else {
        answers.first().and_then(|a| pick_of(&a.model, a.recommended.as_deref()?, a.reason.clone()))
    };
    Ok(Recommendation {
        budget_bytes: budget,
        ctx: st.n_ctx,
        ctx_padded: padded_ctx(st.n_ctx),
        kv_type: st.kv_type,
        n_ubatch: st.n_ubatch,
        overhead_fixed_bytes: OVERHEAD_FIXED_BYTES,
        overhead_percent: OVERHEAD_PERCENT,
        formula: Formula::new(st.kv_type, st.n_ubatch, st.reserve),
        recommended,
        candidates,
        models: answers,
        across_sizes_rule: with_sizes.then(|| ACROSS_SIZES_RULE.to_string()),
        across_sizes: across,
    })
}

/// Decimal bytes as people read RAM sizes in tables: `38.2 MB`, `4.08 GB`, signed when negative.
pub fn fmt_bytes(b: f64) -> String {
    let a = b.abs();
    if a >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if a >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

fn opt(x: Option<f64>, prec: usize) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.prec$}"))
}

/// The human-readable report.
pub fn render_text(r: &Recommendation) -> String {
    let mut o = String::new();
    let push = |o: &mut String, s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    push(
        &mut o,
        match &r.recommended {
            Some(p) => format!(
                "Recommendation: {} {} (needs {}, headroom {})",
                p.model,
                p.format,
                fmt_bytes(p.need_bytes as f64),
                fmt_bytes(p.headroom_bytes as f64)
            ),
            None => "Recommendation: none (see below)".to_string(),
        },
    );
    if let Some(p) = &r.recommended {
        push(&mut o, format!("  why: {}", p.reason));
    }
    push(&mut o, String::new());
    push(
        &mut o,
        format!(
            "budget {} ({:.1} MiB), context {} tokens (cache sized for {}), KV cache {}",
            fmt_bytes(r.budget_bytes as f64),
            r.budget_bytes as f64 / (1u64 << 20) as f64,
            r.ctx,
            r.ctx_padded,
            r.kv_type.name()
        ),
    );
    push(&mut o, format!("need     = {}", r.formula.need));
    push(&mut o, format!("kv_cache = {}", r.formula.kv_cache));
    push(&mut o, format!("compute  = {}", r.formula.compute));
    push(&mut o, format!("output   = {}", r.formula.output));
    push(&mut o, format!("overhead = {}", r.formula.overhead));
    for a in &r.models {
        push(&mut o, String::new());
        let c0 = a.candidates.first();
        push(
            &mut o,
            format!(
                "{} ({:.1} M params, {}): KV cache {}, compute {}, output {}",
                a.model,
                a.n_params as f64 / 1e6,
                a.source,
                c0.map_or("-".into(), |c| fmt_bytes(c.need.kv_cache as f64)),
                c0.map_or("-".into(), |c| fmt_bytes(c.need.compute as f64)),
                c0.map_or("-".into(), |c| fmt_bytes(c.need.output as f64)),
            ),
        );
        push(
            &mut o,
            format!(
                "  {:<8} {:>6} {:>10} {:>10} {:>11} {:<4} {:>8} {:>9} {:>7} {:>7}  quality",
                "format", "bpw", "weights", "need", "headroom", "fits", "KLD", "PPL", "pp t/s", "tg t/s"
            ),
        );
        for c in &a.candidates {
            let mark = if a.recommended.as_ref() == Some(&c.format) { "*" } else { " " };
            push(
                &mut o,
                format!(
                    "{mark} {:<8} {:>6.2} {:>10} {:>10} {:>11} {:<4} {:>8} {:>9} {:>7} {:>7}  {}",
                    c.format,
                    c.bpw,
                    fmt_bytes(c.need.weights as f64),
                    fmt_bytes(c.need.total as f64),
                    fmt_bytes(c.headroom_bytes as f64),
                    if c.fits { "yes" } else { "no" },
                    opt(c.kld, 4),
                    opt(c.ppl, 3),
                    opt(c.pp_tps, 0),
                    opt(c.tg_tps, 0),
                    c.quality_kind
                ),
            );
        }
        push(&mut o, format!("  -> {}", a.reason));
        let ext: Vec<&str> =
            a.candidates.iter().filter(|c| c.quality_kind == "extrapolated").map(|c| c.format.as_str()).collect();
        if !ext.is_empty() {
            push(&mut o, format!("  extrapolated (not published): {}", ext.join(", ")));
        }
    }
    if let Some(rule) = &r.across_sizes_rule {
        push(&mut o, String::new());
        push(&mut o, format!("Across sizes: {rule}."));
        for f in &r.across_sizes {
            push(&mut o, format!("  {}: {}", f.family, f.reason));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smol() -> ModelShape {
        models::preset("135M").unwrap()
    }

    #[test]
    fn kv_cache_matches_a_hand_computation_and_llama_cpp() {
        let s = smol();
        // 2 × 30 layers × 512 cells × 3 kv heads × 64 × 2 bytes = 11,796,480 = 11.25 MiB,
        // llama.cpp: "llama_kv_cache: size = 11.25 MiB (512 cells, 30 layers ...)".
        assert_eq!(kv_bytes(&s, 512, KvType::F16), 2 * 30 * 512 * 3 * 64 * 2);
        assert_eq!(kv_bytes(&s, 512, KvType::F16), 11_796_480);
        assert_eq!(kv_bytes(&s, 8192, KvType::F16), 180 << 20);
        // Padding: 600 tokens are cached in 768 cells.
        assert_eq!(kv_bytes(&s, 600, KvType::F16), 2 * 30 * 768 * 192 * 2);
        assert_eq!(kv_bytes(&s, 512, KvType::Q8_0), 2 * 30 * 512 * 192 * 34 / 32);
        assert_eq!(kv_bytes(&s, 512, KvType::Q4_0), 2 * 30 * 512 * 192 * 18 / 32);
        assert_eq!(kv_bytes(&s, 512, KvType::F32), 2 * kv_bytes(&s, 512, KvType::F16));
        // Llama-2-7B at 4096: 2 × 32 × 4096 × 32 × 128 × 2 = 2 GiB.
        assert_eq!(kv_bytes(&models::preset("7B").unwrap(), 4096, KvType::F16), 2 << 30);
        assert!(KvType::parse("q5_1").unwrap_err().to_string().contains("q5_1"));
    }

    #[test]
    fn compute_buffer_matches_llama_cpp_prints() {
        let s = smol();
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        // Printed by llama-perplexity (two decimals): n_ctx → MiB at the default n_ubatch 512.
        for (n_ctx, printed) in [(128, 24.56), (256, 49.13), (512, 98.25), (1024, 98.25), (4096, 98.25), (8192, 98.25)]
        {
            let got = mib(compute_bytes(&s, n_ctx, DEFAULT_UBATCH));
            assert!((got - printed).abs() <= 0.005 + 1e-9, "n_ctx {n_ctx}: {got} vs {printed}");
        }
        assert!((mib(output_bytes(&s)) - 0.19).abs() < 0.005);
        // Resident: 4 × 512 × (2 × 576 + 2 × 1536) + 4 × 49152, by hand.
        assert_eq!(compute_resident_bytes(&s, 512, DEFAULT_UBATCH), 8_650_752 + 196_608);
        assert_eq!(compute_resident_bytes(&s, 100, DEFAULT_UBATCH), 4 * 100 * 4224 + 196_608);
    }

    fn cand(format: &str, total: u64, budget: u64, kld: Option<f64>, ppl: Option<f64>) -> Candidate {
        let need = Need { weights: total, kv_cache: 0, compute: 0, output: 0, overhead: 0, total };
        Candidate {
            model: "m".into(),
            format: format.into(),
            bpw: 0.0,
            fits: total <= budget,
            headroom_bytes: budget as i64 - total as i64,
            need,
            kld,
            ppl,
            pp_tps: None,
            tg_tps: None,
            quality_kind: "measured".into(),
            quality_source: String::new(),
        }
    }

    #[test]
    fn winner_is_the_lowest_kld_that_fits_then_ppl() {
        let c = vec![
            cand("F16", 300, 200, Some(0.0), Some(10.0)),
            cand("Q8_0", 190, 200, Some(0.004), Some(10.1)),
            cand("Q4_1", 150, 200, Some(0.003), Some(10.2)),
            cand("Q4_0", 120, 200, Some(0.003), Some(10.15)),
            cand("X", 100, 200, None, None),
        ];
        assert_eq!(choose(&c), Some(3), "equal KLD: lower PPL wins");
        let a = decide(ModelAnswer {
            model: "m".into(),
            family: "f".into(),
            n_params: 1,
            source: String::new(),
            candidates: c,
            recommended: None,
            reason: String::new(),
        });
        assert_eq!(a.recommended.as_deref(), Some("Q4_0"));
        assert_eq!(
            a.reason,
            "Q4_0 fits with 0.1 kB headroom and has the lowest KLD (0.0030) of the 4 formats that fit"
        );
        assert_eq!(choose(&[cand("A", 10, 5, Some(0.0), None)]), None);
        assert_eq!(choose(&[cand("A", 1, 5, None, Some(7.0)), cand("B", 1, 5, Some(1.0), None)]), Some(1));
    }

    #[test]
    fn missing_formats_are_interpolated_by_bpw_and_labelled() {
        let mut c = vec![
            cand("A", 1, 5, Some(0.01), Some(6.0)),
            cand("B", 1, 5, None, None),
            cand("C", 1, 5, Some(0.04), Some(7.0)),
        ];
        c[0].bpw = 6.0;
        c[1].bpw = 5.0;
        c[2].bpw = 4.0;
        c[1].quality_kind = "none".into();
        interpolate_by_bpw(&mut c);
        assert_eq!(c[1].quality_kind, "extrapolated");
        assert!((c[1].kld.unwrap() - 0.02).abs() < 1e-12, "{:?}", c[1].kld);
        assert!((c[1].ppl.unwrap() - (42f64).sqrt()).abs() < 1e-12);
        assert!(c[1].quality_source.contains("between C and A"));
    }

    #[test]
    fn nothing_fits_names_the_smallest_need() {
        let a = ModelAnswer {
            model: "m".into(),
            family: "f".into(),
            n_params: 1,
            source: "measured".into(),
            candidates: vec![
                cand("Q8_0", 300_000_000, 1000, Some(0.1), None),
                cand("Q2_K", 123_400_000, 1000, Some(0.5), None),
            ],
            recommended: None,
            reason: String::new(),
        };
        let st = Settings { n_ctx: 512, kv_type: KvType::F16, n_ubatch: DEFAULT_UBATCH, reserve: false };
        let e = recommend(1000, &st, vec![a], false).unwrap_err().to_string();
        assert!(e.contains("smallest need is m Q2_K at 123.4 MB"), "{e}");
    }
}
