//! The data a run produces: one [`FormatResult`] per format plus the run's context. This is the
//! schema of `results.json` (and, flattened, of `results.csv`); `evalq compare` and `evalq
//! history` read it back, so fields are only ever added, never renamed.

use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything one `evalq run` measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResults {
    pub schema_version: u32,
    /// UTC time the run started, RFC 3339 (`2026-11-27T17:40:00Z`).
    pub created: String,
    pub model: ModelInfo,
    pub dataset: DatasetInfo,
    pub machine: MachineInfo,
    pub provenance: Provenance,
    /// The reference every format is compared with (the F32 source by default).
    pub baseline: BaselineInfo,
    /// One entry per format, in the order they were asked for.
    pub formats: Vec<FormatResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Short name, e.g. `SmolLM2-135M-Instruct`.
    pub name: String,
    pub path: String,
    pub sha256: String,
    /// How the source weights were obtained, e.g. "GGUF … (210×Q4_1, 1×Q8_0), dequantized to an
    /// F32 source". Every report repeats it.
    pub source: String,
    pub architecture: String,
    pub n_params: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub name: String,
    pub path: String,
    pub sha256: String,
    pub n_ctx: usize,
    pub n_chunks: usize,
    /// Tokens scored per format (n_chunks × (n_ctx − 1 − n_ctx/2)).
    pub n_tokens_scored: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineInfo {
    /// `/proc/cpuinfo` model name.
    pub cpu: String,
    pub cores: usize,
    pub threads: usize,
    /// The instruction-set path the kernels ran on (scalar, avx2, avx512, neon).
    pub isa: String,
    /// Measured sustained read bandwidth in GB/s (10⁹ bytes/s), `evalq bench bandwidth`.
    #[serde(deserialize_with = "f64_or_nan")]
    pub peak_read_gbps: f64,
    pub os: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Provenance {
    pub evalq_version: String,
    /// `git rev-parse --short HEAD` of the evalq build, or "unknown".
    pub git_commit: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaselineInfo {
    /// F32, F16 or BF16.
    pub format: String,
    #[serde(deserialize_with = "f64_or_nan")]
    pub ppl: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub ppl_err: f64,
    /// Per-chunk mean NLL of the baseline, one per chunk.
    pub chunk_nll: Vec<f64>,
}

/// One format's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FormatResult {
    /// The file type as given, e.g. `Q4_K_M`.
    pub format: String,
    /// Size of the GGUF file evalq wrote.
    pub file_bytes: u64,
    /// Bits per weight over all tensors, type mix included.
    #[serde(deserialize_with = "f64_or_nan")]
    pub bpw: f64,
    /// Tensor count per ggml type, e.g. `q4_K:90 q5_0:120 q6_K:31 f32:61`.
    pub type_mix: String,
    /// Tensors that fell back to another type, e.g. `120 tensors: q4_K -> q5_0 (576 columns)`.
    pub fallbacks: Vec<String>,
    /// Seconds to quantize the source into this format (0 when the file came from the cache;
    /// then `quantize_cached` is true and the time of the run that made it is kept).
    #[serde(deserialize_with = "f64_or_nan")]
    pub quantize_s: f64,
    pub quantize_cached: bool,
    pub quality: Quality,
    pub speed: Speed,
}

/// Quality against the baseline, as llama-perplexity's KL-divergence mode reports it, plus a
/// paired confidence interval for ΔPPL.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Quality {
    pub n_tokens: usize,
    #[serde(deserialize_with = "f64_or_nan")]
    pub ppl: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub ppl_err: f64,
    /// ln(PPL_q / PPL_base) and its covariance-corrected standard error.
    #[serde(deserialize_with = "f64_or_nan")]
    pub ln_ppl_ratio: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub ln_ppl_ratio_err: f64,
    /// PPL_q − PPL_base and its paired standard error.
    #[serde(deserialize_with = "f64_or_nan")]
    pub dppl: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub dppl_err: f64,
    /// The paired 95% interval of ΔPPL.
    #[serde(deserialize_with = "f64_or_nan")]
    pub dppl_ci_low: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub dppl_ci_high: f64,
    /// True when the 95% interval excludes zero.
    pub distinguishable: bool,
    #[serde(deserialize_with = "f64_or_nan")]
    pub kld_mean: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub kld_err: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub kld_median: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub kld_p99: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub kld_max: f64,
    /// Percentage of tokens whose top-1 token equals the baseline's, and its error.
    #[serde(deserialize_with = "f64_or_nan")]
    pub same_top_pct: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub same_top_err: f64,
    /// RMS of p_q(correct) − p_base(correct), in percent, and its error.
    #[serde(deserialize_with = "f64_or_nan")]
    pub rms_dp: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub rms_dp_err: f64,
    /// Per chunk: mean NLL, mean KLD and the fraction of same top-1 tokens.
    pub chunk_nll: Vec<f64>,
    pub chunk_kld: Vec<f64>,
    pub chunk_top1: Vec<f64>,
}

/// Speed, as llama-bench's pp512 / tg128, plus memory traffic.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Speed {
    /// Prompt tokens in the pp test and generated tokens in the tg test.
    pub pp_tokens: usize,
    pub tg_tokens: usize,
    /// Tokens/s of each repetition, and their median.
    pub pp_runs: Vec<f64>,
    #[serde(deserialize_with = "f64_or_nan")]
    pub pp_tps: f64,
    pub tg_runs: Vec<f64>,
    #[serde(deserialize_with = "f64_or_nan")]
    pub tg_tps: f64,
    /// Bytes one generated token streams on average: every matrix read (output included), one
    /// token_embd row and the KV cache read.
    #[serde(deserialize_with = "f64_or_nan")]
    pub tg_bytes_per_token: f64,
    /// tg_bytes_per_token × tg_tps, in GB/s.
    #[serde(deserialize_with = "f64_or_nan")]
    pub tg_gbps: f64,
    /// tg_gbps as a percentage of the machine's measured peak.
    #[serde(deserialize_with = "f64_or_nan")]
    pub bw_util_pct: f64,
    /// peak / tg_bytes_per_token: the tokens/s a perfect kernel would reach.
    #[serde(deserialize_with = "f64_or_nan")]
    pub roofline_tg_tps: f64,
    /// Peak resident memory while this format was loaded and measured.
    pub peak_rss_bytes: u64,
}

/// Reads a number, or `null` as NaN: serde_json writes NaN (an unmeasured figure) as `null`,
/// and a results file must read back whatever it holds.
fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The median of `v` (mean of the middle two for even lengths); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmeasured_figures_survive_a_json_round_trip() {
        let s = Speed { pp_tps: f64::NAN, tg_tps: 12.5, ..Speed::default() };
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""pp_tps":null"#), "{text}");
        let back: Speed = serde_json::from_str(&text).unwrap();
        assert!(back.pp_tps.is_nan());
        assert_eq!(back.tg_tps, 12.5);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
