//! `evalq compare`: did anything get worse between two runs of the same model on the same data?
//!
//! Two `results.json` are paired format by format (by name) and chunk by chunk, and every format
//! gets a verdict for quality and for each speed test: improved, unchanged or regressed (or not
//! measured / not comparable). The rules, and why they take two conditions each:
//!
//! **Quality** (PPL from `chunk_nll`, KLD from `chunk_kld`): a change counts only if it is
//! *statistically significant* (a paired t-test over the per-chunk differences, two-sided at
//! `alpha`, default 0.01, i.e. a 99% interval that excludes zero) **and** *practically relevant*
//! (|ΔPPL| ≥ 0.2% relative, or |ΔKLD| ≥ 10% relative and ≥ 1e-4 nats absolute). A nightly run
//! compares 13 formats; with significance alone, a reordered float sum that moves every chunk by
//! 1e-6 nats would be "significant" (the chunks move together, so the spread is tiny) and the
//! nightly would cry wolf. With relevance alone, one noisy chunk could flag a format. Identical
//! chunk arrays give a difference of exactly zero and are unchanged; a shift with no spread at
//! all is certain, hence significant.
//!
//! **Speed** (pp and tg separately, from the repetitions `pp_runs` / `tg_runs`): a change inside
//! the noise of the repetitions is not a regression. Regressed only if the ranges do not overlap
//! (every current repetition is slower than every baseline repetition) **and** the median drops
//! by more than the larger of either side's relative spread ((max − min) / median) and a
//! threshold: `speed_threshold` for pp (default 10%), `tg_threshold` for tg (default 25%).
//! Improved is the mirror image. The thresholds are wide because the repetitions of one run do
//! not see all the noise: two `evalq run`s of the same binary on an idle 2-core VM moved a
//! format's tg median by up to 23% (165 vs 203 t/s for Q4_1, each run's five repetitions within
//! 2% of each other; the process's memory placement differs from run to run) and pp by up to 6.5%. Speed measured on another
//! machine (CPU model or thread count differ) is "not comparable", never "regressed"; a run made
//! with `--no-speed` is "not measured".
//!
//! Runs of different models, datasets, context lengths or baselines are refused: their numbers
//! do not measure the same thing. Runs with different chunk counts are paired on the common
//! prefix of chunks (same data in the same order, since chunking depends only on the dataset and
//! n_ctx).

pub mod report;
pub mod stats;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use self::stats::{paired_t, PairedTest, Spread};
use crate::error::{Error, Result};
use crate::run::results::{FormatResult, RunResults, SCHEMA_VERSION};

/// Which regressions make `evalq compare` exit with 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailOn {
    Quality,
    Speed,
    Any,
}

/// The thresholds of the rules in the module doc.
#[derive(Clone, Debug, Serialize)]
pub struct CompareOptions {
    /// Two-sided significance level of the paired t-tests (0.01: 99% intervals).
    pub alpha: f64,
    /// Smallest relevant |ΔPPL| / PPL_base, as a fraction (0.002 = 0.2%).
    pub min_ppl_rel: f64,
    /// Smallest relevant |ΔKLD| / KLD_base, as a fraction (0.10 = 10%) ...
    pub min_kld_rel: f64,
    /// ... and smallest relevant |ΔKLD| in nats (1e-4); both must hold.
    pub min_kld_abs: f64,
    /// Smallest relevant change of a median speed, as a fraction (0.05 = 5%), when the
    /// repetitions themselves spread less than that.
    pub speed_threshold: f64,
    /// The same for generation (tg), whose run-to-run noise is larger.
    pub tg_threshold: f64,
    pub fail_on: FailOn,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            alpha: 0.01,
            min_ppl_rel: 0.002,
            min_kld_rel: 0.10,
            min_kld_abs: 1e-4,
            speed_threshold: 0.10,
            tg_threshold: 0.25,
            fail_on: FailOn::Any,
        }
    }
}

impl CompareOptions {
    /// Checks that every threshold is usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, v: f64| Error::Invalid(format!("{name} must be a finite number ≥ 0, not {v}"));
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(Error::Invalid(format!("--alpha must be between 0 and 1 (exclusive), not {}", self.alpha)));
        }
        for (name, v) in [
            ("--min-ppl-change", self.min_ppl_rel),
            ("--min-kld-change", self.min_kld_rel),
            ("--min-kld-abs", self.min_kld_abs),
            ("--speed-threshold", self.speed_threshold),
            ("--tg-threshold", self.tg_threshold),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(name, v));
            }
        }
        Ok(())
    }
}

/// The outcome for one aspect of one format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Unchanged,
    Regressed,
    /// One side has no figures for this aspect (e.g. a run with `--no-speed`).
    NotMeasured,
    /// The runs were made on different machines, so speeds say nothing about the code.
    NotComparable,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Improved => "improved",
            Verdict::Unchanged => "unchanged",
            Verdict::Regressed => "regressed",
            Verdict::NotMeasured => "not measured",
            Verdict::NotComparable => "not comparable",
        })
    }
}

/// Combines aspect verdicts: any regression wins, then any improvement; aspects that could not
/// be judged are ignored unless none could.
fn combine(vs: &[Verdict]) -> Verdict {
    if vs.contains(&Verdict::Regressed) {
        Verdict::Regressed
    } else if vs.contains(&Verdict::Improved) {
        Verdict::Improved
    } else if vs.contains(&Verdict::Unchanged) {
        Verdict::Unchanged
    } else if vs.contains(&Verdict::NotComparable) {
        Verdict::NotComparable
    } else {
        Verdict::NotMeasured
    }
}

/// Which run a side is, for the reports.
#[derive(Clone, Debug, Serialize)]
pub struct RunLabel {
    /// The run directory's name (or the file's path); set by the caller, which knows it.
    pub name: String,
    pub created: String,
    pub git_commit: String,
    pub evalq_version: String,
    pub n_chunks: usize,
    pub cpu: String,
    pub threads: usize,
}

impl RunLabel {
    fn of(r: &RunResults) -> RunLabel {
        RunLabel {
            name: format!("{} ({})", r.created, r.provenance.git_commit),
            created: r.created.clone(),
            git_commit: r.provenance.git_commit.clone(),
            evalq_version: r.provenance.evalq_version.clone(),
            n_chunks: r.dataset.n_chunks,
            cpu: r.machine.cpu.clone(),
            threads: r.machine.threads,
        }
    }
}

/// Quality of one format, baseline run against current run, over the paired chunks.
#[derive(Clone, Debug, Serialize)]
pub struct QualityDelta {
    /// PPL of each side over the paired chunks, exp(mean chunk NLL).
    pub ppl_base: f64,
    pub ppl_cur: f64,
    /// PPL_cur − PPL_base.
    pub dppl: f64,
    /// 100 · (PPL_cur / PPL_base − 1), and its interval at 1 − alpha (from the NLL test).
    pub dppl_pct: f64,
    pub dppl_pct_ci_low: f64,
    pub dppl_pct_ci_high: f64,
    /// The paired test of chunk NLL, current − baseline (nats).
    pub nll_test: PairedTest,
    pub ppl_verdict: Verdict,
    /// Mean KLD from each run's own reference, over the paired chunks.
    pub kld_base: f64,
    pub kld_cur: f64,
    pub dkld: f64,
    /// 100 · ΔKLD / KLD_base (infinite when the baseline's KLD is 0 and the current one is not).
    pub dkld_pct: f64,
    pub kld_test: PairedTest,
    pub kld_verdict: Verdict,
    /// Same top-1 token as the reference, percent, and the change in percentage points.
    pub same_top_base: f64,
    pub same_top_cur: f64,
    pub dsame_top: f64,
    /// PPL and KLD combined.
    pub verdict: Verdict,
}

/// One speed test (pp or tg) of one format.
#[derive(Clone, Debug, Serialize)]
pub struct SpeedDelta {
    pub base: Option<Spread>,
    pub cur: Option<Spread>,
    /// 100 · (median_cur / median_base − 1).
    pub delta_pct: f64,
    /// The noise band in percent: max(either side's relative spread, speed_threshold) · 100. A
    /// median change inside ±this is never a verdict.
    pub noise_pct: f64,
    pub verdict: Verdict,
}

/// Every verdict for one format present in both runs.
#[derive(Clone, Debug, Serialize)]
pub struct FormatComparison {
    pub format: String,
    pub quality: QualityDelta,
    pub pp: SpeedDelta,
    pub tg: SpeedDelta,
    /// All aspects combined.
    pub verdict: Verdict,
    /// This format regressed in an aspect `fail_on` counts.
    pub counted_regression: bool,
}

/// The whole comparison: what `compare.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub baseline: RunLabel,
    pub current: RunLabel,
    pub model: String,
    pub model_sha256: String,
    pub dataset: String,
    pub dataset_sha256: String,
    pub n_ctx: usize,
    /// Chunks paired (the common prefix when the runs differ in length).
    pub n_chunks_paired: usize,
    /// Whether speeds were measured on the same machine (CPU model and thread count).
    pub speed_comparable: bool,
    /// Things a reader must know, e.g. the prefix pairing or the machine difference.
    pub notes: Vec<String>,
    pub options: CompareOptions,
    pub formats: Vec<FormatComparison>,
    /// Formats only the current run has, and only the baseline run has.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Some format regressed in a counted aspect: `evalq compare` exits with 1.
    pub regressed: bool,
}

/// Reads a run's results: `path` is a run directory holding `results.json`, or the file itself.
pub fn load_results(path: &Path) -> Result<RunResults> {
    let file = if path.is_dir() { path.join("results.json") } else { path.to_path_buf() };
    let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    let r: RunResults = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Invalid(format!("{}: malformed results.json: {e}", file.display())))?;
    if r.schema_version > SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "{}: schema_version {} is newer than this evalq understands ({SCHEMA_VERSION})",
            file.display(),
            r.schema_version
        )));
    }
    Ok(r)
}

/// Where the reports go by default: `<CURRENT run dir>/compare-vs-<baseline name>/` when the
/// current side is a directory, `./compare/` when it is a file.
pub fn default_out_dir(baseline: &Path, current: &Path) -> PathBuf {
    if current.is_dir() {
        let base_dir = if baseline.is_dir() { baseline } else { baseline.parent().unwrap_or(baseline) };
        let name = std::fs::canonicalize(base_dir)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "baseline".into());
        current.join(format!("compare-vs-{name}"))
    } else {
        PathBuf::from("compare")
    }
}

/// The name a report shows for a side: the run directory's name, or the path of a file.
pub fn side_name(path: &Path) -> String {
    let p =
        if path.is_dir() { std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()) } else { path.into() };
    if path.is_dir() {
        p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
    } else {
        p.display().to_string()
    }
}

/// Compares `cur` with `base`. Fails, naming every mismatch at once, when the two runs do not
/// measure the same thing (see the module doc).
pub fn compare(base: &RunResults, cur: &RunResults, opts: &CompareOptions) -> Result<Comparison> {
    opts.validate()?;
    let mut mismatches = Vec::new();
    if !base.dataset.sha256.eq_ignore_ascii_case(&cur.dataset.sha256) {
        mismatches.push(format!(
            "dataset sha256 differs (baseline {} '{}', current {} '{}')",
            base.dataset.sha256, base.dataset.name, cur.dataset.sha256, cur.dataset.name
        ));
    }
    if !base.model.sha256.eq_ignore_ascii_case(&cur.model.sha256) {
        mismatches.push(format!(
            "model sha256 differs (baseline {} '{}', current {} '{}')",
            base.model.sha256, base.model.name, cur.model.sha256, cur.model.name
        ));
    }
    if base.dataset.n_ctx != cur.dataset.n_ctx {
        mismatches.push(format!("n_ctx differs (baseline {}, current {})", base.dataset.n_ctx, cur.dataset.n_ctx));
    }
    if base.baseline.format != cur.baseline.format {
        mismatches.push(format!(
            "reference format differs (baseline run against {}, current run against {}), so KLD is not comparable",
            base.baseline.format, cur.baseline.format
        ));
    }
    if !mismatches.is_empty() {
        return Err(Error::Invalid(format!("the runs are not comparable: {}", mismatches.join("; "))));
    }
    let n = base.dataset.n_chunks.min(cur.dataset.n_chunks);
    if n == 0 {
        return Err(Error::Invalid(format!(
            "the runs have no chunk in common (baseline {} chunks, current {})",
            base.dataset.n_chunks, cur.dataset.n_chunks
        )));
    }
    let mut notes = Vec::new();
    if base.dataset.n_chunks != cur.dataset.n_chunks {
        notes.push(format!(
            "the runs scored different numbers of chunks (baseline {}, current {}); quality is compared on the first \
             {n} chunks, which are the same text in the same order",
            base.dataset.n_chunks, cur.dataset.n_chunks
        ));
    }
    let speed_comparable = base.machine.cpu == cur.machine.cpu && base.machine.threads == cur.machine.threads;
    if !speed_comparable {
        notes.push(format!(
            "the runs were made on different machines (baseline '{}', {} threads; current '{}', {} threads): \
             quality is compared, speed is not comparable",
            base.machine.cpu, base.machine.threads, cur.machine.cpu, cur.machine.threads
        ));
    }

    let mut formats = Vec::new();
    for bf in &base.formats {
        let Some(cf) = cur.formats.iter().find(|f| f.format == bf.format) else { continue };
        let quality = quality_delta(bf, cf, n, base.dataset.n_chunks, cur.dataset.n_chunks, opts)?;
        let pp = speed_delta(&bf.speed.pp_runs, &cf.speed.pp_runs, speed_comparable, opts.speed_threshold);
        let tg = speed_delta(&bf.speed.tg_runs, &cf.speed.tg_runs, speed_comparable, opts.tg_threshold);
        let verdict = combine(&[quality.verdict, pp.verdict, tg.verdict]);
        let q_bad = quality.verdict == Verdict::Regressed;
        let s_bad = pp.verdict == Verdict::Regressed || tg.verdict == Verdict::Regressed;
        let counted_regression = match opts.fail_on {
            FailOn::Quality => q_bad,
            FailOn::Speed => s_bad,
            FailOn::Any => q_bad || s_bad,
        };
        formats.push(FormatComparison { format: bf.format.clone(), quality, pp, tg, verdict, counted_regression });
    }
    let names = |r: &RunResults| r.formats.iter().map(|f| f.format.clone()).collect::<Vec<_>>();
    let (bn, cn) = (names(base), names(cur));
    let added: Vec<String> = cn.iter().filter(|f| !bn.contains(f)).cloned().collect();
    let removed: Vec<String> = bn.iter().filter(|f| !cn.contains(f)).cloned().collect();
    let regressed = formats.iter().any(|f| f.counted_regression);
    Ok(Comparison {
        baseline: RunLabel::of(base),
        current: RunLabel::of(cur),
        model: cur.model.name.clone(),
        model_sha256: cur.model.sha256.clone(),
        dataset: cur.dataset.name.clone(),
        dataset_sha256: cur.dataset.sha256.clone(),
        n_ctx: cur.dataset.n_ctx,
        n_chunks_paired: n,
        speed_comparable,
        notes,
        options: opts.clone(),
        formats,
        added,
        removed,
        regressed,
    })
}

/// The first `n` values of a per-chunk array, after checking it has one value per chunk.
fn chunks<'a>(v: &'a [f64], n: usize, expected: usize, side: &str, format: &str, field: &str) -> Result<&'a [f64]> {
    if v.len() != expected {
        return Err(Error::Invalid(format!(
            "{side} run, format {format}: quality.{field} has {} values but the run has {expected} chunks",
            v.len()
        )));
    }
    Ok(&v[..n])
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn quality_delta(
    bf: &FormatResult,
    cf: &FormatResult,
    n: usize,
    n_base: usize,
    n_cur: usize,
    opts: &CompareOptions,
) -> Result<QualityDelta> {
    let (bq, cq) = (&bf.quality, &cf.quality);
    let f = bf.format.as_str();
    let b_nll = chunks(&bq.chunk_nll, n, n_base, "baseline", f, "chunk_nll")?;
    let c_nll = chunks(&cq.chunk_nll, n, n_cur, "current", f, "chunk_nll")?;
    let b_kld = chunks(&bq.chunk_kld, n, n_base, "baseline", f, "chunk_kld")?;
    let c_kld = chunks(&cq.chunk_kld, n, n_cur, "current", f, "chunk_kld")?;
    let b_top = chunks(&bq.chunk_top1, n, n_base, "baseline", f, "chunk_top1")?;
    let c_top = chunks(&cq.chunk_top1, n, n_cur, "current", f, "chunk_top1")?;

    // Every chunk scores the same number of tokens, so ln PPL is the mean of the chunk NLLs and
    // the ratio of two PPLs is exp of the mean paired difference.
    let nll_test = paired_t(b_nll, c_nll, opts.alpha);
    let (ppl_base, ppl_cur) = (mean(b_nll).exp(), mean(c_nll).exp());
    let pct = |x: f64| 100.0 * x.exp_m1();
    let dppl_pct = pct(nll_test.mean);
    let rel_ppl = nll_test.mean.exp_m1().abs();
    let ppl_verdict = judge(nll_test.significant, rel_ppl >= opts.min_ppl_rel, nll_test.mean);

    let kld_test = paired_t(b_kld, c_kld, opts.alpha);
    let (kld_base, kld_cur) = (mean(b_kld), mean(c_kld));
    let dkld = kld_test.mean;
    let dkld_pct = if dkld == 0.0 { 0.0 } else { 100.0 * dkld / kld_base };
    let kld_relevant = dkld.abs() >= opts.min_kld_abs && dkld_pct.abs() >= 100.0 * opts.min_kld_rel;
    let kld_verdict = judge(kld_test.significant, kld_relevant, dkld);

    let (same_top_base, same_top_cur) = (100.0 * mean(b_top), 100.0 * mean(c_top));
    Ok(QualityDelta {
        ppl_base,
        ppl_cur,
        dppl: ppl_cur - ppl_base,
        dppl_pct,
        dppl_pct_ci_low: pct(nll_test.ci_low),
        dppl_pct_ci_high: pct(nll_test.ci_high),
        nll_test,
        ppl_verdict,
        kld_base,
        kld_cur,
        dkld,
        dkld_pct,
        kld_test,
        kld_verdict,
        same_top_base,
        same_top_cur,
        dsame_top: same_top_cur - same_top_base,
        verdict: combine(&[ppl_verdict, kld_verdict]),
    })
}

/// A quality figure that is lower-is-better changed by `delta`.
fn judge(significant: bool, relevant: bool, delta: f64) -> Verdict {
    match (significant && relevant, delta > 0.0) {
        (false, _) => Verdict::Unchanged,
        (true, true) => Verdict::Regressed,
        (true, false) => Verdict::Improved,
    }
}

/// Judges one speed test by the rule in the module doc.
pub fn speed_delta(base_runs: &[f64], cur_runs: &[f64], comparable: bool, threshold: f64) -> SpeedDelta {
    let (base, cur) = (Spread::of(base_runs), Spread::of(cur_runs));
    let (Some(b), Some(c)) = (base, cur) else {
        return SpeedDelta { base, cur, delta_pct: f64::NAN, noise_pct: f64::NAN, verdict: Verdict::NotMeasured };
    };
    let change = c.median / b.median - 1.0;
    let noise = b.relative().max(c.relative()).max(threshold);
    let verdict = if !comparable {
        Verdict::NotComparable
    } else if c.max < b.min && -change > noise {
        Verdict::Regressed
    } else if c.min > b.max && change > noise {
        Verdict::Improved
    } else {
        Verdict::Unchanged
    };
    SpeedDelta { base, cur, delta_pct: 100.0 * change, noise_pct: 100.0 * noise, verdict }
}

/// Writes `compare.md`, `compare.html`, `compare.json`, `compare.svg` and `compare.png` into
/// `dir` and returns their paths.
pub fn write_reports(dir: &Path, c: &Comparison) -> Result<Vec<PathBuf>> {
    report::write_all(dir, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CompareOptions {
        CompareOptions::default()
    }

    #[test]
    fn speed_inside_the_spread_is_unchanged() {
        let base = [100.0, 104.0, 98.0, 102.0, 101.0];
        let slower: Vec<f64> = base.iter().map(|x| x * 0.98).collect();
        assert_eq!(speed_delta(&base, &slower, true, opts().speed_threshold).verdict, Verdict::Unchanged);
        let much: Vec<f64> = base.iter().map(|x| x * 0.7).collect();
        let d = speed_delta(&base, &much, true, opts().speed_threshold);
        assert_eq!(d.verdict, Verdict::Regressed);
        assert!((d.delta_pct + 30.0).abs() < 1e-9);
        let faster: Vec<f64> = base.iter().map(|x| x * 1.3).collect();
        assert_eq!(speed_delta(&base, &faster, true, opts().speed_threshold).verdict, Verdict::Improved);
        assert_eq!(speed_delta(&base, &much, false, opts().speed_threshold).verdict, Verdict::NotComparable);
        assert_eq!(speed_delta(&base, &[], true, opts().speed_threshold).verdict, Verdict::NotMeasured);
        assert_eq!(speed_delta(&[f64::NAN], &base, true, opts().speed_threshold).verdict, Verdict::NotMeasured);
    }

    #[test]
    fn a_drop_within_a_wide_spread_is_unchanged_even_without_overlap() {
        // Ranges do not overlap, but the baseline's repetitions spread 30%: an 8% lower median
        // is inside that noise.
        let base = [100.0, 130.0, 115.0];
        let cur = [97.0, 99.0, 98.0];
        let d = speed_delta(&base, &cur, true, opts().speed_threshold);
        assert!(d.noise_pct > 25.0);
        assert_eq!(d.verdict, Verdict::Unchanged);
    }

    fn real() -> RunResults {
        serde_json::from_str(include_str!("../../tests/data/compare/results.json")).unwrap()
    }

    #[test]
    fn every_mismatch_is_named_at_once_and_bad_chunk_arrays_are_refused() {
        let base = real();
        let mut cur = real();
        cur.dataset.sha256 = "00".into();
        cur.model.sha256 = "11".into();
        cur.dataset.n_ctx = 1024;
        cur.baseline.format = "F16".into();
        let e = compare(&base, &cur, &opts()).unwrap_err().to_string();
        for needle in
            ["dataset sha256", "model sha256", "n_ctx differs (baseline 512, current 1024)", "reference format"]
        {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let mut cur = real();
        cur.formats[3].quality.chunk_kld.pop();
        let e = compare(&base, &cur, &opts()).unwrap_err().to_string();
        assert!(e.contains("current run, format Q5_K_M: quality.chunk_kld has 19 values"), "{e}");
        let bad = CompareOptions { alpha: 1.5, ..opts() };
        assert!(compare(&base, &base, &bad).is_err());
    }

    #[test]
    fn a_kld_change_must_be_relevant_in_both_senses() {
        let base = real();
        // F16's KLD is ~4e-6 nats: doubling it is +100% but far below 1e-4 nats absolute.
        let mut cur = real();
        let q = &mut cur.formats[0].quality;
        q.chunk_kld.iter_mut().for_each(|x| *x *= 2.0);
        let c = compare(&base, &cur, &opts()).unwrap();
        assert_eq!(c.formats[0].quality.kld_verdict, Verdict::Unchanged);
        assert!(c.formats[0].quality.kld_test.significant);
        // Q4_K_M's ~0.058 nats up 20%: significant, relevant, regressed.
        let mut cur = real();
        cur.formats[5].quality.chunk_kld.iter_mut().for_each(|x| *x *= 1.2);
        let c = compare(&base, &cur, &opts()).unwrap();
        assert_eq!(c.formats[5].format, "Q4_K_M");
        assert_eq!(c.formats[5].quality.kld_verdict, Verdict::Regressed);
        assert!((c.formats[5].quality.dkld_pct - 20.0).abs() < 1e-9);
        assert!(c.regressed);
    }

    #[test]
    fn verdicts_combine_worst_first() {
        use Verdict::*;
        assert_eq!(combine(&[Unchanged, Improved, Regressed]), Regressed);
        assert_eq!(combine(&[Unchanged, Improved, NotMeasured]), Improved);
        assert_eq!(combine(&[Unchanged, NotComparable, NotComparable]), Unchanged);
        assert_eq!(combine(&[NotMeasured, NotComparable]), NotComparable);
        assert_eq!(combine(&[NotMeasured]), NotMeasured);
    }

    #[test]
    fn quality_needs_significance_and_relevance() {
        assert_eq!(judge(true, true, 0.1), Verdict::Regressed);
        assert_eq!(judge(true, true, -0.1), Verdict::Improved);
        assert_eq!(judge(true, false, 0.1), Verdict::Unchanged);
        assert_eq!(judge(false, true, 0.1), Verdict::Unchanged);
    }
}
