//! The output side of `evalq run`: turns a [`RunResults`] into the files of a run directory.
//!
//! | file | made by | for |
//! | --- | --- | --- |
//! | `results.csv` | [`csv`] | spreadsheets and scripts: one flat row per format, columns in [`CSV_COLUMNS`] |
//! | `results.json` | here | `evalq compare` / `evalq history`: the [`RunResults`] schema itself |
//! | `charts/*.svg`, `charts/*.png` | [`charts`] | the five charts, each in both formats |
//! | `report.md` | [`markdown`] | reading on a forge or in a terminal; links the PNGs |
//! | `report.html` | [`html`] | a single file to mail or archive: table and charts inlined |
//!
//! **Architecture invariant:** report computes no metrics. Every number comes from
//! [`RunResults`]; what this module derives is presentation only (orderings, the Pareto front,
//! which caveats apply, which format the recommendation names). The markdown and HTML reports are
//! two renderings of one [`Summary`], so they cannot disagree.

pub mod charts;
pub mod csv;
pub mod html;
pub mod markdown;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::run::results::{FormatResult, RunResults};

pub use self::csv::CSV_COLUMNS;

/// Writes every output of a run into `dir` (created if missing), each file atomically, and
/// returns the paths written in the order: CSV, JSON, charts (SVG then PNG per chart), markdown,
/// HTML.
pub fn write_all(dir: &Path, r: &RunResults) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = vec![csv::write(dir, r)?, write_json(dir, r)?];
    written.extend(charts::write_all(dir, r)?);
    let summary = Summary::build(r);
    written.push(markdown::write(dir, &summary)?);
    written.push(html::write(dir, &summary)?);
    Ok(written)
}

/// `results.json`: the [`RunResults`] as pretty JSON, the format `evalq compare` reads back.
fn write_json(dir: &Path, r: &RunResults) -> Result<PathBuf> {
    let path = dir.join("results.json");
    let mut text = serde_json::to_string_pretty(r)
        .map_err(|e| Error::Invalid(format!("results.json: cannot serialize the results: {e}")))?;
    text.push('\n');
    crate::util::write_bytes_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// Indices of the points on the Pareto front when lower is better on both axes: the points no
/// other point beats or equals on both axes while beating on one. Points with a non-finite
/// coordinate are never on the front. Returned sorted by x (then y).
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut idx: Vec<usize> =
        (0..points.len()).filter(|&i| points[i].0.is_finite() && points[i].1.is_finite()).collect();
    idx.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0).then(points[a].1.total_cmp(&points[b].1)));
    // Walking in increasing x, a point is on the front exactly when its y is below every y seen so
    // far; ties in x were sorted by y, so only the first of them can pass.
    let mut best = f64::INFINITY;
    let mut front = Vec::new();
    for i in idx {
        if points[i].1 < best {
            best = points[i].1;
            front.push(i);
        }
    }
    front
}

/// Whether a figure was measured: finite and positive. Speeds of 0 or NaN mean "not measured"
/// (a skipped bench or a crashed run), and every output shows them as missing.
pub(crate) fn measured(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// `v` with `sig` significant digits in plain (not scientific) notation, at most 8 decimals;
/// "n/a" when not finite.
pub(crate) fn fmt_sig(v: f64, sig: i32) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    let decimals = (sig - 1 - mag).clamp(0, 8) as usize;
    format!("{v:.decimals$}")
}

/// `v` with a fixed number of decimals, "n/a" when not finite.
pub(crate) fn fmt_fixed(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "n/a".into()
    }
}

/// Decimals that show an uncertainty `err` with two significant digits, so a value and its
/// error are printed to the same, meaningful, precision.
fn decimals_for(err: f64) -> usize {
    if !err.is_finite() || err <= 0.0 {
        return 3;
    }
    (1 - err.log10().floor() as i32).clamp(0, 6) as usize
}

/// "value ± err" with four decimals, as llama-perplexity prints PPL, so figures can be compared
/// with its output digit for digit (the paired ΔPPL interval is what says which differences
/// are real).
pub(crate) fn fmt_ppl(v: f64, err: f64) -> String {
    if err.is_finite() {
        format!("{} ± {}", fmt_fixed(v, 4), fmt_fixed(err, 4))
    } else {
        fmt_fixed(v, 4)
    }
}

/// "+0.123 [+0.050, +0.196]": a signed difference and its interval at the precision of `err`.
fn fmt_delta_ci(v: f64, err: f64, lo: f64, hi: f64) -> String {
    let d = decimals_for(err);
    let s = |x: f64| if x.is_finite() { format!("{x:+.d$}") } else { "n/a".into() };
    format!("{} [{}, {}]", s(v), s(lo), s(hi))
}

/// Megabytes (10⁶ bytes): whole numbers for large files, three significant digits for small.
pub(crate) fn fmt_mb(bytes: u64) -> String {
    let mb = bytes as f64 / 1e6;
    if mb >= 100.0 {
        format!("{mb:.0}")
    } else if mb >= 10.0 {
        format!("{mb:.1}")
    } else {
        fmt_sig(mb, 3)
    }
}

/// Tokens/s: one decimal below 100, whole above; "n/a" when not measured.
pub(crate) fn fmt_tps(v: f64) -> String {
    if !measured(v) {
        "n/a".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A value that is only meaningful when measured (positive), with fixed decimals.
fn fmt_measured(v: f64, decimals: usize) -> String {
    if measured(v) {
        format!("{v:.decimals$}")
    } else {
        "n/a".into()
    }
}

/// The first 12 hex digits of a sha256, enough to tell files apart in a report.
pub(crate) fn short_sha(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

/// One titled list of facts for the report header, e.g. ("Model", [("sha256", "…")]).
pub(crate) struct Facts {
    pub title: &'static str,
    pub items: Vec<(&'static str, String)>,
}

/// Everything the markdown and HTML reports show, as text: the renderers only lay it out.
pub(crate) struct Summary {
    pub title: String,
    pub facts: Vec<Facts>,
    /// One sentence about the baseline every ΔPPL and KLD is measured against.
    pub baseline: String,
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    /// The charts, as (file stem under `charts/`, title).
    pub charts: Vec<(&'static str, &'static str)>,
    pub caveats: Vec<String>,
    pub recommendation: String,
}

/// Column titles of the report's results table.
const TABLE_HEADER: [&str; 12] = [
    "format",
    "bpw",
    "size MB",
    "PPL ± err",
    "ΔPPL [95% CI]",
    "KLD mean",
    "KLD p99",
    "same top %",
    "pp t/s",
    "tg t/s",
    "tg GB/s",
    "% of peak",
];

impl Summary {
    pub(crate) fn build(r: &RunResults) -> Summary {
        let m = &r.model;
        let d = &r.dataset;
        let mc = &r.machine;
        let facts = vec![
            Facts {
                title: "Model",
                items: vec![
                    ("name", format!("{} ({}, {} parameters)", m.name, m.architecture, fmt_params(m.n_params))),
                    ("sha256", short_sha(&m.sha256).to_string()),
                    ("source", m.source.clone()),
                ],
            },
            Facts {
                title: "Dataset",
                items: vec![
                    ("name", d.name.clone()),
                    ("sha256", short_sha(&d.sha256).to_string()),
                    ("context", format!("{} tokens (n_ctx)", d.n_ctx)),
                    ("chunks", d.n_chunks.to_string()),
                    ("scored tokens", format!("{} per format", d.n_tokens_scored)),
                ],
            },
            Facts {
                title: "Machine",
                items: vec![
                    ("cpu", mc.cpu.clone()),
                    ("cores / threads", format!("{} cores, {} threads used", mc.cores, mc.threads)),
                    ("isa", mc.isa.clone()),
                    ("peak bandwidth", format!("{} GB/s read, measured", fmt_measured(mc.peak_read_gbps, 1))),
                    ("os", mc.os.clone()),
                ],
            },
            Facts {
                title: "Provenance",
                items: vec![
                    ("evalq", format!("{} (commit {})", r.provenance.evalq_version, r.provenance.git_commit)),
                    ("run started", r.created.clone()),
                    ("schema version", r.schema_version.to_string()),
                ],
            },
        ];
        let b = &r.baseline;
        let baseline = format!(
            "Every ΔPPL and KLD is measured against the {} baseline, PPL {}, on the same {} tokens. \
             MB are 10⁶ bytes, GB/s are 10⁹ bytes/s, KLD is in nats.",
            b.format,
            fmt_ppl(b.ppl, b.ppl_err),
            d.n_tokens_scored
        );
        let peak = mc.peak_read_gbps;
        let rows = r
            .formats
            .iter()
            .map(|f| {
                let q = &f.quality;
                let s = &f.speed;
                vec![
                    f.format.clone(),
                    fmt_fixed(f.bpw, 2),
                    fmt_mb(f.file_bytes),
                    fmt_ppl(q.ppl, q.ppl_err),
                    fmt_delta_ci(q.dppl, q.dppl_err, q.dppl_ci_low, q.dppl_ci_high),
                    fmt_sig(q.kld_mean, 3),
                    fmt_sig(q.kld_p99, 3),
                    fmt_fixed(q.same_top_pct, 2),
                    fmt_tps(s.pp_tps),
                    fmt_tps(s.tg_tps),
                    fmt_measured(s.tg_gbps, 2),
                    if measured(peak) { fmt_measured(s.bw_util_pct, 1) } else { "n/a".into() },
                ]
            })
            .collect();
        Summary {
            title: format!("evalq report: {} on {}", m.name, d.name),
            facts,
            baseline,
            header: TABLE_HEADER.to_vec(),
            rows,
            charts: charts::CHARTS.iter().map(|c| (c.stem, c.title)).collect(),
            caveats: caveats(r),
            recommendation: recommendation(r),
        }
    }
}

/// "135M" / "1.2B": parameter counts as people say them.
fn fmt_params(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{}B", fmt_sig(n / 1e9, 3))
    } else if n >= 1e6 {
        format!("{}M", fmt_sig(n / 1e6, 3))
    } else {
        format!("{n}")
    }
}

/// A list of format names, "A, B and C".
fn join_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.into_iter().collect();
    match v.len() {
        0 => String::new(),
        1 => v[0].to_string(),
        n => format!("{} and {}", v[..n - 1].join(", "), v[n - 1]),
    }
}

/// The caveats that apply to this run, each one self-contained sentence or two.
fn caveats(r: &RunResults) -> Vec<String> {
    let mut out = Vec::new();
    for f in r.formats.iter().filter(|f| !f.fallbacks.is_empty()) {
        out.push(format!(
            "{} is not pure: some tensors fell back to other types ({}), so its size and quality are those of \
             the mix, not of {} alone.",
            f.format,
            f.fallbacks.join("; "),
            f.format
        ));
    }

    // The default model is published as Q4_1; its weights are already on Q4_1's grid, so
    // requantizing to Q4_1 recovers them almost exactly. That says nothing about Q4_1 on a model
    // that was never quantized, and readers must be told.
    let source_q41 = r.model.source.to_ascii_lowercase().contains("q4_1");
    let has_q41 = r.formats.iter().any(|f| f.format.eq_ignore_ascii_case("q4_1"));
    if source_q41 && has_q41 {
        let mut s = String::from(
            "The source is the published Q4_1 model dequantized to F32, so Q4_1 (and any format sharing its \
             block grid) can reproduce the source weights almost exactly and looks nearly lossless for that \
             reason alone; its figures here say little about Q4_1 on a model that was never quantized.",
        );
        let others: Vec<&str> = r
            .formats
            .iter()
            .filter(|f| !f.format.eq_ignore_ascii_case("q4_1") && f.type_mix.to_ascii_lowercase().contains("q4_1"))
            .map(|f| f.format.as_str())
            .collect();
        if !others.is_empty() {
            s.push_str(&format!(" {} also store tensors as q4_1 and share that advantage.", join_names(others)));
        }
        out.push(s);
    }

    let same: Vec<&FormatResult> = r.formats.iter().filter(|f| !f.quality.distinguishable).collect();
    if !same.is_empty() {
        let list: Vec<String> = same
            .iter()
            .map(|f| {
                let q = &f.quality;
                format!("{} (ΔPPL {})", f.format, fmt_delta_ci(q.dppl, q.dppl_err, q.dppl_ci_low, q.dppl_ci_high))
            })
            .collect();
        out.push(format!(
            "Not distinguishable from the {} baseline at 95% on {} scored tokens: {}. Their ΔPPL interval \
             includes zero, so this run cannot rank them against the baseline by perplexity; KLD and same-top \
             still separate them, and a longer dataset may.",
            r.baseline.format,
            r.dataset.n_tokens_scored,
            list.join(", ")
        ));
    }

    let unmeasured: Vec<&str> = r
        .formats
        .iter()
        .filter(|f| !measured(f.speed.tg_tps) || !measured(f.speed.pp_tps))
        .map(|f| f.format.as_str())
        .collect();
    if !unmeasured.is_empty() {
        out.push(format!(
            "No speed was measured for {} (shown as n/a and left out of the speed charts).",
            join_names(unmeasured)
        ));
    }
    if !measured(r.machine.peak_read_gbps) {
        out.push("The machine's peak read bandwidth was not measured, so no % of peak is given.".into());
    }
    out
}

/// One paragraph naming formats worth choosing, each choice backed by the figures behind it.
fn recommendation(r: &RunResults) -> String {
    let fs = &r.formats;
    if fs.is_empty() {
        return "No format was measured, so there is nothing to recommend.".into();
    }
    let mut parts = Vec::new();

    match fs.iter().filter(|f| !f.quality.distinguishable).min_by_key(|f| f.file_bytes) {
        Some(f) => parts.push(format!(
            "The smallest format not distinguishable from the {} baseline at 95% is {} ({} MB, {} bpw, ΔPPL {}).",
            r.baseline.format,
            f.format,
            fmt_mb(f.file_bytes),
            fmt_fixed(f.bpw, 2),
            fmt_delta_ci(f.quality.dppl, f.quality.dppl_err, f.quality.dppl_ci_low, f.quality.dppl_ci_high)
        )),
        None if fs.len() == 1 => parts.push(format!(
            "The only format, {}, is distinguishable from the {} baseline at 95% (ΔPPL {}, mean KLD {}).",
            fs[0].format,
            r.baseline.format,
            fmt_delta_ci(
                fs[0].quality.dppl,
                fs[0].quality.dppl_err,
                fs[0].quality.dppl_ci_low,
                fs[0].quality.dppl_ci_high
            ),
            fmt_sig(fs[0].quality.kld_mean, 3)
        )),
        None => {
            let best = fs.iter().min_by(|a, b| a.quality.kld_mean.total_cmp(&b.quality.kld_mean));
            if let Some(f) = best {
                parts.push(format!(
                    "Every format is distinguishable from the {} baseline at 95%; the closest by KLD is {} (mean KLD {}).",
                    r.baseline.format,
                    f.format,
                    fmt_sig(f.quality.kld_mean, 3)
                ));
            }
        }
    }

    // Along the KLD-vs-size Pareto front, the step that buys the largest KLD reduction per extra
    // megabyte ends at the format with the best KLD per byte.
    let pts: Vec<(f64, f64)> = fs.iter().map(|f| (f.file_bytes as f64, f.quality.kld_mean)).collect();
    let front = pareto_front(&pts);
    let names: Vec<&str> = front.iter().map(|&i| fs[i].format.as_str()).collect();
    if front.len() >= 2 {
        let best_step = front
            .windows(2)
            .filter_map(|w| {
                let (a, b) = (&fs[w[0]], &fs[w[1]]);
                let mb = (b.file_bytes as f64 - a.file_bytes as f64) / 1e6;
                let gain = (a.quality.kld_mean - b.quality.kld_mean) / mb;
                (mb > 0.0 && gain.is_finite()).then_some((w[0], w[1], gain))
            })
            .max_by(|x, y| x.2.total_cmp(&y.2));
        parts.push(format!("The KLD-vs-size Pareto front is {}.", join_names(names)));
        if let Some((a, b, gain)) = best_step {
            parts.push(format!(
                "Along it, {} gives the best KLD per byte: moving up from {} costs {} MB and lowers the mean KLD \
                 from {} to {} ({} nats per MB).",
                fs[b].format,
                fs[a].format,
                fmt_sig((fs[b].file_bytes as f64 - fs[a].file_bytes as f64) / 1e6, 3),
                fmt_sig(fs[a].quality.kld_mean, 3),
                fmt_sig(fs[b].quality.kld_mean, 3),
                fmt_sig(gain, 2)
            ));
        }
    } else if let (Some(&i), true) = (front.first(), fs.len() > 1) {
        parts.push(format!(
            "{} alone is on the KLD-vs-size Pareto front: it is smaller or closer than every other format.",
            fs[i].format
        ));
    }

    let fastest =
        fs.iter().filter(|f| measured(f.speed.tg_tps)).max_by(|a, b| a.speed.tg_tps.total_cmp(&b.speed.tg_tps));
    match fastest {
        Some(f) => {
            let util = if measured(f.speed.bw_util_pct) && measured(r.machine.peak_read_gbps) {
                format!(
                    ", streaming {} GB/s, {}% of the measured peak",
                    fmt_fixed(f.speed.tg_gbps, 2),
                    fmt_fixed(f.speed.bw_util_pct, 0)
                )
            } else {
                String::new()
            };
            parts.push(format!(
                "For generation speed, {} is fastest at {} tokens/s on {} threads{util}.",
                f.format,
                fmt_tps(f.speed.tg_tps),
                r.machine.threads
            ));
        }
        None => parts.push("No generation speed was measured, so speed cannot inform the choice.".into()),
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        // (bpw, ppl): b is dominated by a (larger and worse); d ties a on x but is worse.
        let pts = [(4.0, 10.0), (5.0, 11.0), (8.0, 9.0), (4.0, 12.0), (2.0, 20.0), (f64::NAN, 1.0)];
        assert_eq!(pareto_front(&pts), vec![4, 0, 2]);
        assert_eq!(pareto_front(&[]), Vec::<usize>::new());
        // Equal points: only one of them is on the front.
        assert_eq!(pareto_front(&[(1.0, 1.0), (1.0, 1.0)]).len(), 1);
    }

    #[test]
    fn numbers_are_formatted_at_a_sensible_precision() {
        assert_eq!(fmt_sig(0.0012345, 3), "0.00123");
        assert_eq!(fmt_sig(123.456, 3), "123");
        assert_eq!(fmt_sig(f64::NAN, 3), "n/a");
        assert_eq!(fmt_ppl(12.3456, 0.1234), "12.3456 ± 0.1234");
        assert_eq!(fmt_ppl(28.625, f64::NAN), "28.6250");
        assert_eq!(fmt_delta_ci(0.0123, 0.004, 0.004, 0.0202), "+0.0123 [+0.0040, +0.0202]");
        assert_eq!(fmt_mb(270_000_000), "270");
        assert_eq!(fmt_mb(1_234_567), "1.23");
        assert_eq!(fmt_tps(0.0), "n/a");
        assert_eq!(fmt_tps(f64::NAN), "n/a");
        assert_eq!(fmt_tps(12.34), "12.3");
        assert_eq!(short_sha("abc"), "abc");
        assert_eq!(join_names(["a", "b", "c"]), "a, b and c");
    }
}
