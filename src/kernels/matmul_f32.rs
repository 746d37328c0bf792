//! Dense f32 products `y = x · Wᵀ`, where `x` is `(n_tokens, k)` and `W` is `(n_rows, k)`, both
//! row-major, the layout ggml uses for weights (`ne[0]` is the contiguous input dimension).
//!
//! Every output element is the same computation whichever path, tile or thread produces it: 16
//! partial sums, lane `l` taking elements `k ≡ l (mod 16)` in order with fused multiply-adds, then
//! a fixed pairwise reduction. That makes results independent of the thread count and identical
//! between the scalar, AVX2 and AVX-512 paths.

use rayon::prelude::*;

use super::isa::{self, Isa};
use crate::par;

/// Logical lanes of every accumulator.
const LANES: usize = 16;
/// Tokens per parallel task: a block of `x` that stays in L2 while all of `W` streams past it.
const TOKEN_BLOCK: usize = 64;

/// Computes `y[t][n] = Σ_k x[t][k] · w[n][k]` for `t < n_tokens`, `n < n_rows`.
///
/// Panics if the slice lengths disagree with the shapes (a programming error, not bad input).
pub fn matmul(x: &[f32], w: &[f32], y: &mut [f32], n_tokens: usize, k: usize, n_rows: usize) {
    matmul_with(isa::active(), x, w, y, n_tokens, k, n_rows)
}

/// [`matmul`] on a chosen instruction set.
pub fn matmul_with(isa: Isa, x: &[f32], w: &[f32], y: &mut [f32], n_tokens: usize, k: usize, n_rows: usize) {
    assert_eq!(x.len(), n_tokens * k, "x has the wrong length");
    assert_eq!(w.len(), n_rows * k, "w has the wrong length");
    assert_eq!(y.len(), n_tokens * n_rows, "y has the wrong length");
    if n_tokens == 0 || n_rows == 0 {
        return;
    }
    if n_tokens >= TOKEN_BLOCK / 2 {
        par::for_each_chunk(y, TOKEN_BLOCK * n_rows, |b, yb| {
            let t0 = b * TOKEN_BLOCK;
            let nt = yb.len() / n_rows;
            block(isa, &x[t0 * k..(t0 + nt) * k], w, yb, nt, k, n_rows, 0, n_rows);
        });
    } else {
        // Few tokens (generation): split the weight rows across threads instead.
        const ROW_BLOCK: usize = 64;
        let out = SendPtr(y.as_mut_ptr());
        (0..n_rows.div_ceil(ROW_BLOCK)).into_par_iter().for_each(|rb| {
            let r0 = rb * ROW_BLOCK;
            let r1 = (r0 + ROW_BLOCK).min(n_rows);
            let out = &out;
            // SAFETY: each task writes only columns r0..r1 of every output row, disjoint from the
            // columns of every other task, and `y` outlives the parallel loop.
            let y = unsafe { std::slice::from_raw_parts_mut(out.0, n_tokens * n_rows) };
            block(isa, x, w, y, n_tokens, k, n_rows, r0, r1);
        });
    }
}

/// One token against a run of weight rows `w` (`y.len()` rows of `x.len()` values), as the
/// generation path above computes each output: the forward pass's generation team calls it on
/// its own share of the rows.
pub fn one_token_rows(isa: Isa, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (k, n) = (x.len(), y.len());
    assert_eq!(w.len(), n * k, "w has the wrong length");
    block(isa, x, w, y, 1, k, n, 0, n);
}

struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint column ranges of one buffer to rayon tasks.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Output rows `0..nt` (of width `ld`), columns `r0..r1`.
#[allow(clippy::too_many_arguments)]
fn block(isa: Isa, x: &[f32], w: &[f32], y: &mut [f32], nt: usize, k: usize, ld: usize, r0: usize, r1: usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` is Avx512 only when `Isa::is_available` confirmed the features.
        Isa::Avx512 => unsafe { x86::block_avx512(x, w, y, nt, k, ld, r0, r1) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Isa::Avx2 => unsafe { x86::block_avx2(x, w, y, nt, k, ld, r0, r1) },
        _ => {
            for t in 0..nt {
                for r in r0..r1 {
                    y[t * ld + r] = dot_scalar(&x[t * k..(t + 1) * k], &w[r * k..(r + 1) * k]);
                }
            }
        }
    }
}

/// The reference dot product: the lane structure every SIMD path reproduces.
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let main = a.len() / LANES * LANES;
    for (ca, cb) in a[..main].chunks_exact(LANES).zip(b[..main].chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] = ca[l].mul_add(cb[l], acc[l]);
        }
    }
    finish(acc, &a[main..], &b[main..])
}

/// Folds the tail (fewer than 16 elements) into the lanes, then reduces pairwise.
#[inline(always)]
fn finish(mut acc: [f32; LANES], ta: &[f32], tb: &[f32]) -> f32 {
    for l in 0..ta.len() {
        acc[l] = ta[l].mul_add(tb[l], acc[l]);
    }
    reduce(acc)
}

#[inline(always)]
fn reduce(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    acc[0]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{finish, LANES};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX-512F. Slices must match the shapes (checked by the caller).
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block_avx512(x: &[f32], w: &[f32], y: &mut [f32], nt: usize, k: usize, ld: usize, r0: usize, r1: usize) {
        let main = k / LANES * LANES;
        let mut r = r0;
        while r < r1 {
            let nr = (r1 - r).min(4);
            let mut t = 0;
            while t < nt {
                let ntt = (nt - t).min(4);
                if nr == 4 && ntt == 4 {
                    let lanes = tile4x4_avx512(x.as_ptr().add(t * k), w.as_ptr().add(r * k), k, main);
                    for a in 0..4 {
                        for b in 0..4 {
                            let xa = &x[(t + a) * k + main..(t + a + 1) * k];
                            let wb = &w[(r + b) * k + main..(r + b + 1) * k];
                            y[(t + a) * ld + r + b] = finish(lanes[a * 4 + b], xa, wb);
                        }
                    }
                } else {
                    for a in 0..ntt {
                        for b in 0..nr {
                            y[(t + a) * ld + r + b] = dot1(&x[(t + a) * k..(t + a + 1) * k], &w[(r + b) * k..(r + b + 1) * k]);
                        }
                    }
                }
                t += ntt;
            }
            r += nr;
        }
    }

    /// The 16 accumulators of a 4-token × 4-row tile over `main` elements, as lanes. Written
    /// out by hand: with arrays of registers the compiler spilled accumulators to the stack.
    ///
    /// # Safety
    /// AVX-512F; `xp` and `wp` point at 4 rows of `k` floats each, `main <= k`, `main % 16 == 0`.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn tile4x4_avx512(xp: *const f32, wp: *const f32, k: usize, main: usize) -> [[f32; LANES]; 16] {
        let (x0, x1, x2, x3) = (xp, xp.add(k), xp.add(2 * k), xp.add(3 * k));
        let (w0, w1, w2, w3) = (wp, wp.add(k), wp.add(2 * k), wp.add(3 * k));
        let z = _mm512_setzero_ps();
        let (mut c00, mut c01, mut c02, mut c03) = (z, z, z, z);
        let (mut c10, mut c11, mut c12, mut c13) = (z, z, z, z);
        let (mut c20, mut c21, mut c22, mut c23) = (z, z, z, z);
        let (mut c30, mut c31, mut c32, mut c33) = (z, z, z, z);
        let mut i = 0;
        while i < main {
            let b0 = _mm512_loadu_ps(w0.add(i));
            let b1 = _mm512_loadu_ps(w1.add(i));
            let b2 = _mm512_loadu_ps(w2.add(i));
            let b3 = _mm512_loadu_ps(w3.add(i));
            let a = _mm512_loadu_ps(x0.add(i));
            c00 = _mm512_fmadd_ps(a, b0, c00);
            c01 = _mm512_fmadd_ps(a, b1, c01);
            c02 = _mm512_fmadd_ps(a, b2, c02);
            c03 = _mm512_fmadd_ps(a, b3, c03);
            let a = _mm512_loadu_ps(x1.add(i));
            c10 = _mm512_fmadd_ps(a, b0, c10);
            c11 = _mm512_fmadd_ps(a, b1, c11);
            c12 = _mm512_fmadd_ps(a, b2, c12);
            c13 = _mm512_fmadd_ps(a, b3, c13);
            let a = _mm512_loadu_ps(x2.add(i));
            c20 = _mm512_fmadd_ps(a, b0, c20);
            c21 = _mm512_fmadd_ps(a, b1, c21);
            c22 = _mm512_fmadd_ps(a, b2, c22);
            c23 = _mm512_fmadd_ps(a, b3, c23);
            let a = _mm512_loadu_ps(x3.add(i));
            c30 = _mm512_fmadd_ps(a, b0, c30);
            c31 = _mm512_fmadd_ps(a, b1, c31);
            c32 = _mm512_fmadd_ps(a, b2, c32);
            c33 = _mm512_fmadd_ps(a, b3, c33);
            i += LANES;
        }
        let mut out = [[0f32; LANES]; 16];
        for (o, c) in out.iter_mut().zip([c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33]) {
            _mm512_storeu_ps(o.as_mut_ptr(), c);
        }
        out
    }

    #[target_feature(enable = "avx512f,fma")]
    unsafe fn dot1(a: &[f32], b: &[f32]) -> f32 {
        let main = a.len() / LANES * LANES;
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < main {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i)), acc);
            i += LANES;
        }
        let mut lanes = [0f32; LANES];
        _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
        finish(lanes, &a[main..], &b[main..])
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA. Slices must match the shapes (checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block_avx2(x: &[f32], w: &[f32], y: &mut [f32], nt: usize, k: usize, ld: usize, r0: usize, r1: usize) {
        // A 2x2 tile of 16-lane accumulators, each held as two 8-lane registers.
        let main = k / LANES * LANES;
        let mut r = r0;
        while r < r1 {
            let nr = (r1 - r).min(2);
            let mut t = 0;
            while t < nt {
                let ntt = (nt - t).min(2);
                let mut acc = [[[_mm256_setzero_ps(); 2]; 2]; 2];
                let xp = x.as_ptr().add(t * k);
                let wp = w.as_ptr().add(r * k);
                let mut i = 0;
                while i < main {
                    for b in 0..nr {
                        let w_lo = _mm256_loadu_ps(wp.add(b * k + i));
                        let w_hi = _mm256_loadu_ps(wp.add(b * k + i + 8));
                        for a in 0..ntt {
                            let x_lo = _mm256_loadu_ps(xp.add(a * k + i));
                            let x_hi = _mm256_loadu_ps(xp.add(a * k + i + 8));
                            acc[a][b][0] = _mm256_fmadd_ps(x_lo, w_lo, acc[a][b][0]);
                            acc[a][b][1] = _mm256_fmadd_ps(x_hi, w_hi, acc[a][b][1]);
                        }
                    }
                    i += LANES;
                }
                for a in 0..ntt {
                    for b in 0..nr {
                        let mut lanes = [0f32; LANES];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[a][b][0]);
                        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[a][b][1]);
                        let xa = &x[(t + a) * k + main..(t + a + 1) * k];
                        let wb = &w[(r + b) * k + main..(r + b + 1) * k];
                        y[(t + a) * ld + r + b] = finish(lanes, xa, wb);
                    }
                }
                t += ntt;
            }
            r += nr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_isa_matches_scalar_bit_for_bit() {
        // Shapes with tails in every dimension: tokens not a multiple of the tile, k not a
        // multiple of 16, rows not a multiple of 4; and both the token- and row-parallel paths.
        for &(nt, k, n) in &[(1, 576, 192), (3, 37, 5), (70, 100, 9), (130, 64, 67), (5, 1536, 130)] {
            let x = data(nt * k, 1);
            let w = data(n * k, 2);
            let mut want = vec![0f32; nt * n];
            matmul_with(Isa::Scalar, &x, &w, &mut want, nt, k, n);
            for isa in Isa::available() {
                let mut got = vec![0f32; nt * n];
                matmul_with(isa, &x, &w, &mut got, nt, k, n);
                assert!(
                    want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} differs from scalar at shape ({nt}, {k}, {n})",
                    isa.name()
                );
            }
        }
    }

    #[test]
    fn scalar_matches_naive_sum() {
        let (nt, k, n) = (3, 50, 4);
        let x = data(nt * k, 3);
        let w = data(n * k, 4);
        let mut y = vec![0f32; nt * n];
        matmul_with(Isa::Scalar, &x, &w, &mut y, nt, k, n);
        for t in 0..nt {
            for r in 0..n {
                let naive: f64 = (0..k).map(|i| x[t * k + i] as f64 * w[r * k + i] as f64).sum();
                assert!((y[t * n + r] as f64 - naive).abs() < 1e-4, "{t},{r}");
            }
        }
    }
}
