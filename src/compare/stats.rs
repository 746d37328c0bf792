//! The statistics `evalq compare` judges with: a paired t-test over per-chunk figures and the
//! Student t quantile it needs, plus the range and spread of speed repetitions.
//!
//! Two runs of the same model on the same chunks are paired: chunk i of the baseline and chunk i
//! of the current run scored the same tokens, so the per-chunk differences remove the chunks'
//! own difficulty (which varies far more than any code change moves it) and a t-test on those
//! differences is the right test. Twenty chunks are few, so the critical value comes from the t
//! distribution with n − 1 degrees of freedom, not from the normal one.

use serde::Serialize;

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7, nine coefficients; relative error < 1e-13).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The continued fraction of the incomplete beta function (modified Lentz's method).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function I_x(a, b).
fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast only on one side of the mean; use the symmetry
    // I_x(a, b) = 1 − I_{1−x}(b, a) on the other.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// P(T ≤ t) for Student's t with `dof` degrees of freedom.
pub fn t_cdf(t: f64, dof: f64) -> f64 {
    let tail = 0.5 * inc_beta(dof / 2.0, 0.5, dof / (dof + t * t));
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The `p` quantile of Student's t with `dof` degrees of freedom (`p` in (0, 1)), found by
/// bisection on [`t_cdf`]: sixty halvings of a bracket reach double precision, and this runs
/// once per comparison, so speed does not matter.
pub fn t_quantile(p: f64, dof: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0 && dof > 0.0, "t_quantile: p = {p}, dof = {dof}");
    if p < 0.5 {
        return -t_quantile(1.0 - p, dof);
    }
    let mut hi = 1.0;
    while t_cdf(hi, dof) < p && hi < 1e12 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, dof) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-13 * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// A paired t-test of `cur − base`, chunk by chunk.
#[derive(Clone, Debug, Serialize)]
pub struct PairedTest {
    /// Pairs tested.
    pub n: usize,
    /// Mean and sample standard deviation of the differences.
    pub mean: f64,
    pub sd: f64,
    /// Two-sided confidence interval of the mean difference at `1 − alpha`.
    pub ci_low: f64,
    pub ci_high: f64,
    /// The interval excludes zero.
    pub significant: bool,
}

/// Tests the mean of `cur[i] − base[i]` against zero, two-sided at level `alpha`.
///
/// Degenerate cases are decided without dividing by zero: identical arrays give a mean of
/// exactly 0 and are never significant; differences that are all the same nonzero value
/// (zero spread) are a certain shift and always significant. Fewer than two pairs have no
/// spread to judge by and are never significant.
pub fn paired_t(base: &[f64], cur: &[f64], alpha: f64) -> PairedTest {
    let n = base.len().min(cur.len());
    let d: Vec<f64> = (0..n).map(|i| cur[i] - base[i]).collect();
    let mean = if n == 0 { f64::NAN } else { d.iter().sum::<f64>() / n as f64 };
    let sd = if n < 2 { f64::NAN } else { (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() };
    if n < 2 || !mean.is_finite() {
        return PairedTest { n, mean, sd, ci_low: f64::NAN, ci_high: f64::NAN, significant: false };
    }
    // Spread at the rounding level of the mean counts as none: adding 0.01 to every element
    // leaves differences that agree to ~1e-17, which is a shift, not noise.
    if sd <= mean.abs() * 1e-12 || sd == 0.0 {
        return PairedTest { n, mean, sd, ci_low: mean, ci_high: mean, significant: mean != 0.0 };
    }
    let half = t_quantile(1.0 - alpha / 2.0, (n - 1) as f64) * sd / (n as f64).sqrt();
    let (ci_low, ci_high) = (mean - half, mean + half);
    PairedTest { n, mean, sd, ci_low, ci_high, significant: ci_low > 0.0 || ci_high < 0.0 }
}

/// The repetitions of one speed test: their median and range.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spread {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The measured repetitions of `runs` (finite and positive), or None when there are none
    /// (a run with `--no-speed` records no repetitions and NaN medians).
    pub fn of(runs: &[f64]) -> Option<Spread> {
        let v: Vec<f64> = runs.iter().copied().filter(|x| x.is_finite() && *x > 0.0).collect();
        if v.is_empty() {
            return None;
        }
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Spread { n: v.len(), median: crate::run::results::median(&v), min, max })
    }

    /// (max − min) / median: how far apart repetitions of the same test land.
    pub fn relative(&self) -> f64 {
        (self.max - self.min) / self.median
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_printed_tables() {
        // Two-sided 95% and 99% critical values (one-sided 0.975 and 0.995), from any table.
        for (p, dof, want) in [
            (0.975, 1.0, 12.706),
            (0.995, 1.0, 63.657),
            (0.975, 5.0, 2.571),
            (0.995, 5.0, 4.032),
            (0.975, 10.0, 2.228),
            (0.975, 19.0, 2.093),
            (0.995, 19.0, 2.861),
            (0.995, 30.0, 2.750),
            (0.95, 60.0, 1.671),
            (0.995, 1000.0, 2.581),
        ] {
            let got = t_quantile(p, dof);
            assert!((got - want).abs() < 1.5e-3, "t({p}, {dof}) = {got}, table {want}");
        }
        assert!((t_quantile(0.025, 19.0) + 2.093).abs() < 1e-3);
        assert!(t_quantile(0.5, 7.0).abs() < 1e-9);
        // Large dof tends to the normal quantile.
        assert!((t_quantile(0.975, 1e7) - 1.959_964).abs() < 1e-4);
    }

    #[test]
    fn t_cdf_is_symmetric_and_monotone() {
        assert!((t_cdf(0.0, 3.0) - 0.5).abs() < 1e-15);
        assert!((t_cdf(1.3, 4.0) + t_cdf(-1.3, 4.0) - 1.0).abs() < 1e-14);
        assert!(t_cdf(1.0, 4.0) < t_cdf(1.1, 4.0));
        // dof 1 is the Cauchy distribution: P(T ≤ 1) = 3/4.
        assert!((t_cdf(1.0, 1.0) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn identical_arrays_are_exactly_unchanged() {
        let a = [2.5, 3.5, 3.2, 3.1];
        let t = paired_t(&a, &a, 0.01);
        assert_eq!(t.mean, 0.0);
        assert!(!t.significant);
        assert_eq!((t.ci_low, t.ci_high), (0.0, 0.0));
    }

    #[test]
    fn a_constant_shift_is_significant_without_spread() {
        let a = [2.5616, 3.5628, 3.2194, 3.1536, 3.0160];
        let b: Vec<f64> = a.iter().map(|x| x + 0.01).collect();
        let t = paired_t(&a, &b, 0.01);
        assert!(t.significant, "{t:?}");
        assert!((t.mean - 0.01).abs() < 1e-12);
        let down: Vec<f64> = a.iter().map(|x| x - 0.01).collect();
        assert!(paired_t(&a, &down, 0.01).significant);
    }

    #[test]
    fn noise_around_zero_is_not_significant_and_a_clear_shift_is() {
        let base = [3.0, 3.1, 2.9, 3.2, 3.05, 2.95, 3.15, 3.0];
        let noise = [1e-4, -2e-4, 1.5e-4, -1e-4, 0.5e-4, -0.5e-4, 1e-4, -1e-4];
        let cur: Vec<f64> = base.iter().zip(noise).map(|(b, n)| b + n).collect();
        let t = paired_t(&base, &cur, 0.01);
        assert!(!t.significant, "{t:?}");
        assert!(t.ci_low < 0.0 && t.ci_high > 0.0);
        let shifted: Vec<f64> = base.iter().zip(noise).map(|(b, n)| b + 0.01 + n).collect();
        let t = paired_t(&base, &shifted, 0.01);
        assert!(t.significant && t.ci_low > 0.0, "{t:?}");
        // By hand: mean 0.01 + mean(noise) = 0.0100125, and the interval is mean ± t·sd/√n.
        let crit = t_quantile(0.995, 7.0);
        assert!((t.ci_high - t.mean - crit * t.sd / 8f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn too_few_pairs_are_not_a_test() {
        assert!(!paired_t(&[1.0], &[2.0], 0.01).significant);
        assert!(!paired_t(&[], &[], 0.01).significant);
    }

    #[test]
    fn spreads_skip_unmeasured_repetitions() {
        let s = Spread::of(&[100.0, f64::NAN, 90.0, 110.0, 0.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 100.0, 90.0, 110.0));
        assert!((s.relative() - 0.2).abs() < 1e-12);
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[f64::NAN]).is_none());
    }
}
