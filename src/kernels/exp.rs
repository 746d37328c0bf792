//! `e^x` for f32, computed the way glibc's `expf` computes it on an x86-64 CPU with FMA (its
//! `__expf_fma`, the one Rust's `f32::exp` calls on this project's machines), so that every
//! result is bit for bit what libm gave before, but vectorized and the same on every platform.
//!
//! Why: the SiLU of every feed-forward layer and the log-softmax of every scored token call `exp`
//! once per element. Through libm that was one scalar call per element (2.8% of an F16 pp512,
//! ~3.5% of a Q4_0 pp512, and 49152 calls per token scored in a perplexity). The algorithm,
//! read from glibc's `sysdeps/ieee754/flt-32/e_expf.c` and its compiled form: with `N = 32`,
//! `x·N/ln 2 = k + r` (`k` an integer, `|r| <= 1/2`); `e^x = 2^(k/N) · 2^(r/N)`, the first
//! factor from a 32-entry table with `k / N` added to its exponent, the second a cubic in `r`.
//! All of it in f64 with three fused multiply-adds, rounded to f32 once at the end.
//! [`expf`] is the scalar definition; [`exp_in_place`] gives the same bits with AVX2 (four
//! lanes of f64 per vector) where the CPU has it, and calls [`expf`] elsewhere.

use super::isa::{self, Isa};

/// `2^(i/32)` as f64 bits, minus `i << 47` (so that adding `k << 47` to entry `k % 32` puts
/// `k / 32` into the exponent): glibc's `__exp2f_data.tab`.
const TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// `32 / ln 2`.
const INV_LN2_N: u64 = 0x40471547652b82fe;
/// The cubic's coefficients, highest first (the constant term is 1).
const C0: u64 = 0x3ebc6af84b912394;
const C1: u64 = 0x3f2ebfce50fac4f3;
const C2: u64 = 0x3f962e42ff0c52d6;
/// `1.5 · 2^52`: adding it rounds to an integer held in the low bits of the f64.
const SHIFT: u64 = 0x4338000000000000;
/// Inputs whose top 12 bits (sign cleared) reach `88.0f`'s take the special-case path.
const SPECIAL_TOP: u32 = 0x42b;
/// Above this the result overflows to +inf (`ln(2^128)`, rounded).
const OVERFLOW: f32 = f32::from_bits(0x42b17217);
/// Below this it is 0 (`ln(2^-150)`), and below [`MAY_UNDERFLOW`] the smallest subnormal.
const UNDERFLOW: f32 = f32::from_bits(0xc2cff1b4);
const MAY_UNDERFLOW: f32 = f32::from_bits(0xc2ce8ecf);

/// `e^x`, bit for bit glibc's `__expf_fma` (errno and floating-point flags aside).
#[inline]
pub fn expf(x: f32) -> f32 {
    if (x.to_bits() >> 20) & 0x7ff >= SPECIAL_TOP {
        special(x)
    } else {
        core(x)
    }
}

/// The main path, valid for `|x| < 88` and, with subnormal results, down to [`MAY_UNDERFLOW`].
#[inline(always)]
fn core(x: f32) -> f32 {
    let f = f64::from_bits;
    let xd = x as f64;
    let shifted = f(INV_LN2_N).mul_add(xd, f(SHIFT));
    let ki = shifted.to_bits();
    let kd = shifted - f(SHIFT);
    // r = x·N/ln 2 - k without rounding the product first.
    let r = f(INV_LN2_N).mul_add(xd, -kd);
    let s = f(TAB[(ki % 32) as usize].wrapping_add(ki << 47));
    let z = f(C0).mul_add(r, f(C1));
    let r2 = r * r;
    let y = r.mul_add(f(C2), 1.0);
    let y = z.mul_add(r2, y);
    (y * s) as f32
}

#[cold]
fn special(x: f32) -> f32 {
    if x == f32::NEG_INFINITY {
        0.0
    } else if !x.is_finite() {
        x + x
    } else if x > OVERFLOW {
        f32::INFINITY
    } else if x < UNDERFLOW {
        0.0
    } else if x < MAY_UNDERFLOW {
        f32::from_bits(1)
    } else {
        core(x)
    }
}

/// Replaces every `x` in `v` by [`expf`]`(x)`, the same bits on every path.
pub fn exp_in_place(v: &mut [f32]) {
    exp_in_place_with(isa::active(), v)
}

/// [`exp_in_place`] on a chosen instruction set, which must be available.
pub fn exp_in_place_with(isa: Isa, v: &mut [f32]) {
    assert!(isa.is_available(), "{} is not available on this CPU", isa.name());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both x86 SIMD levels imply AVX2 and FMA (`Isa::is_available` checked them).
        Isa::Avx2 | Isa::Avx512 => unsafe { x86::exp_in_place_avx2(v) },
        _ => v.iter_mut().for_each(|x| *x = expf(*x)),
    }
}

/// Calls `f(i, expf(xs[i] - shift))` for every `i` in order, the exponentials computed 64 at
/// a time by [`exp_in_place`]: the sums of a log-softmax, which must keep their order.
pub fn for_each_exp_minus(xs: &[f32], shift: f32, mut f: impl FnMut(usize, f32)) {
    let mut e = [0f32; 64];
    for (c0, c) in (0..).step_by(64).zip(xs.chunks(64)) {
        let e = &mut e[..c.len()];
        for (ei, &x) in e.iter_mut().zip(c) {
            *ei = x - shift;
        }
        exp_in_place(e);
        for (i, &ei) in (c0..).zip(e.iter()) {
            f(i, ei);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::*;

    /// Four lanes of [`core`]: the same operations on f64 lanes, the table read by a gather.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn core4(x: __m128) -> __m128 {
        let pd = |b: u64| _mm256_set1_pd(f64::from_bits(b));
        let xd = _mm256_cvtps_pd(x);
        let shifted = _mm256_fmadd_pd(pd(INV_LN2_N), xd, pd(SHIFT));
        let ki = _mm256_castpd_si256(shifted);
        let kd = _mm256_sub_pd(shifted, pd(SHIFT));
        let r = _mm256_fmsub_pd(pd(INV_LN2_N), xd, kd);
        let idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
        let t = _mm256_i64gather_epi64::<8>(TAB.as_ptr() as *const i64, idx);
        let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
        let z = _mm256_fmadd_pd(pd(C0), r, pd(C1));
        let r2 = _mm256_mul_pd(r, r);
        let y = _mm256_fmadd_pd(r, pd(C2), _mm256_set1_pd(1.0));
        let y = _mm256_fmadd_pd(z, r2, y);
        _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
    }

    /// [`exp_in_place`] eight values at a time; blocks with a special-case input, and the tail,
    /// go through [`expf`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_in_place_avx2(v: &mut [f32]) {
        let mut chunks = v.chunks_exact_mut(8);
        for c in &mut chunks {
            let p = c.as_mut_ptr();
            let x = _mm256_loadu_ps(p);
            let top = _mm256_and_si256(_mm256_srli_epi32::<20>(_mm256_castps_si256(x)), _mm256_set1_epi32(0x7ff));
            let special = _mm256_cmpgt_epi32(top, _mm256_set1_epi32(SPECIAL_TOP as i32 - 1));
            if _mm256_testz_si256(special, special) == 0 {
                c.iter_mut().for_each(|x| *x = expf(*x));
                continue;
            }
            let lo = core4(_mm256_castps256_ps128(x));
            let hi = core4(_mm256_extractf128_ps::<1>(x));
            _mm256_storeu_ps(p, _mm256_set_m128(hi, lo));
        }
        chunks.into_remainder().iter_mut().for_each(|x| *x = expf(*x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs spread over every binade of f32 (every 997th bit pattern, both signs), the
    /// special-case boundaries and their neighbours, the non-finite values.
    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (0..=u32::MAX).step_by(997).map(f32::from_bits).collect();
        for b in [OVERFLOW, UNDERFLOW, MAY_UNDERFLOW, 88.0, -88.0, 0.0, -0.0, 1e-30, -1e-30] {
            let mut x = b;
            let mut y = b;
            for _ in 0..64 {
                v.extend([x, y]);
                x = x.next_up();
                y = y.next_down();
            }
        }
        v.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN, f32::MIN_POSITIVE]);
        v
    }

    /// Every path gives [`expf`]'s bits (NaN for NaN), on every available instruction set,
    /// with the inputs at every alignment of the eight-lane blocks.
    #[test]
    fn exp_simd_matches_scalar_bits() {
        let xs = inputs();
        for isa in Isa::available() {
            for shift in [0, 3] {
                let mut got = xs[shift..].to_vec();
                exp_in_place_with(isa, &mut got);
                for (&x, &g) in xs[shift..].iter().zip(&got) {
                    let want = expf(x);
                    assert!(
                        g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                        "{}: exp({x:e}) = {g:e}, scalar {want:e}",
                        isa.name()
                    );
                }
            }
        }
    }

    /// Where libm is glibc on x86-64 with FMA (its `__expf_fma`), [`expf`] is libm's `expf`
    /// bit for bit: the forward pass and the perplexity keep the values they had through libm.
    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn expf_matches_glibc_fma_bits() {
        if !is_x86_feature_detected!("fma") {
            return;
        }
        let mut bad = 0;
        for x in inputs() {
            let (got, want) = (expf(x), x.exp());
            if got.to_bits() != want.to_bits() && !(got.is_nan() && want.is_nan()) {
                bad += 1;
                assert!(bad < 5, "exp({x:e}) = {got:e}, libm {want:e}");
            }
        }
        assert_eq!(bad, 0);
    }

    #[test]
    fn expf_known_values() {
        assert_eq!(expf(0.0), 1.0);
        assert_eq!(expf(1.0), std::f32::consts::E);
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf(f32::INFINITY), f32::INFINITY);
        assert_eq!(expf(100.0), f32::INFINITY);
        assert_eq!(expf(-200.0), 0.0);
        assert!(expf(f32::NAN).is_nan());
        assert!((expf(-10.0) - 4.539_993e-5).abs() < 1e-11);
    }
}
