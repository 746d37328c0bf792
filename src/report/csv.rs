//! `results.csv`: one flat row per format, for spreadsheets and scripts.
//!
//! The columns are stable: new ones are only ever appended, never renamed or reordered, so a
//! script may address them by name or by position. Cells follow RFC 4180: a cell holding a comma,
//! a quote, a line break or leading/trailing spaces is quoted, with quotes doubled. A figure that
//! was not measured or is not finite (NaN, ±inf) is an empty cell, never `NaN`. Numbers use the
//! shortest text that reads back to the same `f64`. GB/s are 10⁹ bytes/s; KLD is in nats.
//! The run's context (machine, model, dataset, provenance) is repeated on every row so that rows
//! of several runs can be concatenated.
//!
//! | column | meaning |
//! | --- | --- |
//! | format | file type as requested, e.g. Q4_K_M |
//! | file_bytes | size of the GGUF file evalq wrote, bytes |
//! | bpw | bits per weight over all tensors, type mix included, bits |
//! | type_mix | tensors per ggml type, space-separated type:count |
//! | ppl | perplexity of the format on the dataset |
//! | ppl_err | standard error of ppl |
//! | dppl | ppl minus the baseline's ppl |
//! | dppl_ci_low | lower bound of the paired 95% interval of dppl |
//! | dppl_ci_high | upper bound of the paired 95% interval of dppl |
//! | distinguishable | true when the 95% interval of dppl excludes zero |
//! | ln_ppl_ratio | ln(ppl / baseline ppl) |
//! | ln_ppl_ratio_err | covariance-corrected standard error of ln_ppl_ratio |
//! | kld_mean | mean KL divergence from the baseline per token, nats |
//! | kld_err | standard error of kld_mean, nats |
//! | kld_median | median per-token KL divergence, nats |
//! | kld_p99 | 99th percentile of per-token KL divergence, nats |
//! | kld_max | largest per-token KL divergence, nats |
//! | same_top_pct | tokens whose top-1 token equals the baseline's, percent |
//! | same_top_err | standard error of same_top_pct, percentage points |
//! | rms_dp | RMS of p(correct token) minus the baseline's, percentage points |
//! | pp_tps | prompt processing speed, median over runs, tokens/s |
//! | tg_tps | generation speed, median over runs, tokens/s |
//! | tg_bytes_per_token | bytes streamed per generated token, bytes |
//! | tg_gbps | tg_bytes_per_token × tg_tps, GB/s |
//! | bw_util_pct | tg_gbps as a share of peak_read_gbps, percent |
//! | roofline_tg_tps | peak_read_gbps / tg_bytes_per_token: a perfect kernel's speed, tokens/s |
//! | peak_rss_bytes | peak resident memory while the format was measured, bytes |
//! | quantize_s | time to quantize the source into this format (of the run that made a cached file), seconds |
//! | isa | instruction-set path the kernels ran on |
//! | threads | threads used for the speed tests |
//! | model | model name |
//! | model_sha256 | sha256 of the model file |
//! | dataset | dataset name |
//! | dataset_sha256 | sha256 of the dataset file |
//! | n_ctx | context length of each scored chunk, tokens |
//! | n_chunks | chunks scored |
//! | cpu | CPU model name |
//! | peak_read_gbps | measured sustained read bandwidth of the machine, GB/s |
//! | evalq_version | evalq version that produced the row |
//! | git_commit | git commit of the evalq build, or unknown |

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::run::results::{FormatResult, RunResults};

/// One cell before it is written: text is quoted when needed, numbers are not.
enum Cell {
    Text(String),
    Num(f64),
    Int(u64),
    Bool(bool),
}

impl From<&String> for Cell {
    fn from(s: &String) -> Cell {
        Cell::Text(s.clone())
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Cell {
        Cell::Num(v)
    }
}
impl From<u64> for Cell {
    fn from(v: u64) -> Cell {
        Cell::Int(v)
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Cell {
        Cell::Int(v as u64)
    }
}
impl From<bool> for Cell {
    fn from(v: bool) -> Cell {
        Cell::Bool(v)
    }
}

/// Declares the columns once: their names and meanings become [`CSV_COLUMNS`], their values
/// become `cells`, in the same order, so the header and the rows cannot drift apart.
macro_rules! columns {
    ($( $name:literal : $meaning:literal => |$r:ident, $f:ident| $value:expr ;)*) => {
        /// The columns of `results.csv` in order, as (name, meaning with unit). The module
        /// documentation holds the same table for readers of the source.
        pub const CSV_COLUMNS: &[(&str, &str)] = &[$(($name, $meaning)),*];

        /// The cells of one row, in [`CSV_COLUMNS`] order.
        #[allow(unused_variables)]
        fn cells(r: &RunResults, f: &FormatResult) -> Vec<Cell> {
            vec![$({ let $r = r; let $f = f; Cell::from($value) }),*]
        }
    };
}

columns! {
    "format": "file type as requested, e.g. Q4_K_M" => |r, f| &f.format;
    "file_bytes": "size of the GGUF file evalq wrote, bytes" => |r, f| f.file_bytes;
    "bpw": "bits per weight over all tensors, type mix included, bits" => |r, f| f.bpw;
    "type_mix": "tensors per ggml type, space-separated type:count" => |r, f| &f.type_mix;
    "ppl": "perplexity of the format on the dataset" => |r, f| f.quality.ppl;
    "ppl_err": "standard error of ppl" => |r, f| f.quality.ppl_err;
    "dppl": "ppl minus the baseline's ppl" => |r, f| f.quality.dppl;
    "dppl_ci_low": "lower bound of the paired 95% interval of dppl" => |r, f| f.quality.dppl_ci_low;
    "dppl_ci_high": "upper bound of the paired 95% interval of dppl" => |r, f| f.quality.dppl_ci_high;
    "distinguishable": "true when the 95% interval of dppl excludes zero" => |r, f| f.quality.distinguishable;
    "ln_ppl_ratio": "ln(ppl / baseline ppl)" => |r, f| f.quality.ln_ppl_ratio;
    "ln_ppl_ratio_err": "covariance-corrected standard error of ln_ppl_ratio" => |r, f| f.quality.ln_ppl_ratio_err;
    "kld_mean": "mean KL divergence from the baseline per token, nats" => |r, f| f.quality.kld_mean;
    "kld_err": "standard error of kld_mean, nats" => |r, f| f.quality.kld_err;
    "kld_median": "median per-token KL divergence, nats" => |r, f| f.quality.kld_median;
    "kld_p99": "99th percentile of per-token KL divergence, nats" => |r, f| f.quality.kld_p99;
    "kld_max": "largest per-token KL divergence, nats" => |r, f| f.quality.kld_max;
    "same_top_pct": "tokens whose top-1 token equals the baseline's, percent" => |r, f| f.quality.same_top_pct;
    "same_top_err": "standard error of same_top_pct, percentage points" => |r, f| f.quality.same_top_err;
    "rms_dp": "RMS of p(correct token) minus the baseline's, percentage points" => |r, f| f.quality.rms_dp;
    "pp_tps": "prompt processing speed, median over runs, tokens/s" => |r, f| f.speed.pp_tps;
    "tg_tps": "generation speed, median over runs, tokens/s" => |r, f| f.speed.tg_tps;
    "tg_bytes_per_token": "bytes streamed per generated token, bytes" => |r, f| f.speed.tg_bytes_per_token;
    "tg_gbps": "tg_bytes_per_token × tg_tps, GB/s" => |r, f| f.speed.tg_gbps;
    "bw_util_pct": "tg_gbps as a share of peak_read_gbps, percent" => |r, f| f.speed.bw_util_pct;
    "roofline_tg_tps": "peak_read_gbps / tg_bytes_per_token: a perfect kernel's speed, tokens/s"
        => |r, f| f.speed.roofline_tg_tps;
    "peak_rss_bytes": "peak resident memory while the format was measured, bytes" => |r, f| f.speed.peak_rss_bytes;
    "quantize_s": "time to quantize the source into this format (of the run that made a cached file), seconds"
        => |r, f| f.quantize_s;
    "isa": "instruction-set path the kernels ran on" => |r, f| &r.machine.isa;
    "threads": "threads used for the speed tests" => |r, f| r.machine.threads;
    "model": "model name" => |r, f| &r.model.name;
    "model_sha256": "sha256 of the model file" => |r, f| &r.model.sha256;
    "dataset": "dataset name" => |r, f| &r.dataset.name;
    "dataset_sha256": "sha256 of the dataset file" => |r, f| &r.dataset.sha256;
    "n_ctx": "context length of each scored chunk, tokens" => |r, f| r.dataset.n_ctx;
    "n_chunks": "chunks scored" => |r, f| r.dataset.n_chunks;
    "cpu": "CPU model name" => |r, f| &r.machine.cpu;
    "peak_read_gbps": "measured sustained read bandwidth of the machine, GB/s" => |r, f| r.machine.peak_read_gbps;
    "evalq_version": "evalq version that produced the row" => |r, f| &r.provenance.evalq_version;
    "git_commit": "git commit of the evalq build, or unknown" => |r, f| &r.provenance.git_commit;
}

/// `text` as one CSV field: quoted (quotes doubled) when it holds a separator, a quote, a line
/// break or spaces at either end that a reader might trim.
pub fn quote(text: &str) -> String {
    let needs = text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ');
    if needs {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn render(cell: &Cell) -> String {
    match cell {
        Cell::Text(s) => quote(s),
        Cell::Num(v) if v.is_finite() => format!("{v}"),
        Cell::Num(_) => String::new(),
        Cell::Int(v) => v.to_string(),
        Cell::Bool(b) => b.to_string(),
    }
}

/// The whole CSV text: the header, then one line per format, each ending in `\n`.
pub fn to_string(r: &RunResults) -> String {
    let mut out = CSV_COLUMNS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(",");
    out.push('\n');
    for f in &r.formats {
        out.push_str(&cells(r, f).iter().map(render).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// Writes `dir/results.csv` atomically and returns its path.
pub fn write(dir: &Path, r: &RunResults) -> Result<PathBuf> {
    let path = dir.join("results.csv");
    let text = to_string(r);
    crate::util::write_atomic(&path, |w| w.write_all(text.as_bytes()).map_err(|e| Error::io(&path, e)))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(quote("q4_K:90"), "q4_K:90");
        assert_eq!(quote("q4_K:90 q6_K:1"), "q4_K:90 q6_K:1");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote(" padded"), "\" padded\"");
        assert_eq!(quote("two\nlines"), "\"two\nlines\"");
        assert_eq!(render(&Cell::Num(f64::NAN)), "");
        assert_eq!(render(&Cell::Num(0.1)), "0.1");
    }

    /// The module doc's table is what readers of the source see; it must list exactly the
    /// columns [`CSV_COLUMNS`] declares, in order and with the same meanings.
    #[test]
    fn doc_table_matches_the_columns() {
        let src = include_str!("csv.rs");
        let rows: Vec<(String, String)> = src
            .lines()
            .filter_map(|l| l.strip_prefix("//! | "))
            .filter_map(|l| l.strip_suffix(" |"))
            .map(|l| {
                let (a, b) = l.split_once(" | ").expect("two cells");
                (a.to_string(), b.to_string())
            })
            .filter(|(a, _)| a != "column" && a != "---")
            .collect();
        let cols: Vec<(String, String)> = CSV_COLUMNS.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(rows, cols);
    }
}
