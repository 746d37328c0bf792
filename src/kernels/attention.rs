//! Causal attention over all heads, against keys and values of the rows before each query.
//!
//! [`attend_rows`] is the kernel the forward pass runs. It reads keys from a transposed cache
//! (per key/value head, one row of positions per head dimension), so the scores of 16 keys are
//! computed side by side, one key per SIMD lane, for several queries at once, and the weighted
//! sum of values takes each value row once for all of those queries. [`attend_row`], one query
//! against row-major keys, is its scalar reference: both sum every score in the same order
//! (eight partial sums over the head dimension, combined as a fixed tree) and every output in
//! key order, so they give the same bits.
//!
//! The bodies are plain Rust written so that they vectorize without reassociation, compiled once
//! per instruction set through `#[target_feature]` wrappers. No FMA contraction happens in Rust,
//! so every path gives the same bits.

use std::ops::Range;

use super::isa;

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: usize,
    /// Query heads per key/value head.
    pub group: usize,
    pub head_dim: usize,
    /// Row stride of `k` and `v` (`n_kv_head * head_dim`).
    pub kv_stride: usize,
    /// The softmax scale, usually `1/sqrt(head_dim)`.
    pub scale: f32,
}

/// Keys whose scores are computed together: one per lane of a 512-bit vector.
pub const KEY_BLOCK: usize = 16;
/// Queries attended together: their scores share each loaded key block, and their outputs each
/// loaded value row.
const QUERY_BLOCK: usize = 4;

/// Keys transposed for [`attend_rows`]: element `(g * head_dim + i) * stride + j` is dimension
/// `i` of key/value head `g` at position `j`. `stride` is a multiple of [`KEY_BLOCK`], and
/// positions past the cached ones may hold anything (their lanes are computed and ignored).
#[derive(Clone, Copy)]
pub struct KeysT<'a> {
    pub data: &'a [f32],
    pub stride: usize,
}

/// Writes the attention output of the query rows `q` (row `r` at position `t0 + r`, all heads)
/// for the query heads `heads` into `out` (per row, those heads' outputs side by side), each
/// attending to positions `0..=t0 + r`. `v` holds row-major values. `scores` is scratch space,
/// grown as needed. Splitting the heads changes no bits: each head is computed on its own.
#[allow(clippy::too_many_arguments)]
pub fn attend_rows(
    s: &AttnShape,
    q: &[f32],
    kt: KeysT,
    v: &[f32],
    t0: usize,
    heads: Range<usize>,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    match isa::active() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx512 is active only after `Isa::is_available` confirmed the features.
        isa::Isa::Avx512 => unsafe { attend_rows_avx512(s, q, kt, v, t0, heads, scores, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        isa::Isa::Avx2 => unsafe { attend_rows_avx2(s, q, kt, v, t0, heads, scores, out) },
        _ => attend_rows_impl::<Scalar16>(s, q, kt, v, t0, heads, scores, out),
    }
}

/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn attend_rows_avx512(
    s: &AttnShape,
    q: &[f32],
    kt: KeysT,
    v: &[f32],
    t0: usize,
    heads: Range<usize>,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    attend_rows_impl::<x86::Avx512>(s, q, kt, v, t0, heads, scores, out)
}

/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_rows_avx2(
    s: &AttnShape,
    q: &[f32],
    kt: KeysT,
    v: &[f32],
    t0: usize,
    heads: Range<usize>,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    attend_rows_impl::<x86::Avx2>(s, q, kt, v, t0, heads, scores, out)
}

/// Sixteen f32 lanes: the only operations attention needs, each lane-wise and exactly rounded
/// (separate multiply and add, never fused), so every implementation gives the same bits.
trait V16: Copy {
    /// Whether [`scores_block`] computes its eight partial sums one after the other (only as
    /// many live vectors as queries) rather than side by side (eight per query): for register
    /// files where 8 x 4 of these vectors would spill, as 64 256-bit registers did on AVX2.
    const ONE_PARTIAL_AT_A_TIME: bool = false;
    /// # Safety
    /// `p` must point to 16 readable f32 values.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// `p` must point to 16 writable f32 values.
    unsafe fn store(self, p: *mut f32);
    fn splat(x: f32) -> Self;
    fn zero() -> Self {
        Self::splat(0.0)
    }
    /// `self + a * b`, rounded after the product and after the sum.
    fn mul_add_sep(self, a: Self, b: Self) -> Self;
    fn add(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
}

/// The scalar reference of [`V16`].
#[derive(Clone, Copy)]
struct Scalar16([f32; 16]);

impl V16 for Scalar16 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Scalar16(std::ptr::read_unaligned(p as *const [f32; 16]))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; 16], self.0)
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Scalar16([x; 16])
    }
    #[inline(always)]
    fn mul_add_sep(self, a: Self, b: Self) -> Self {
        Scalar16(std::array::from_fn(|i| self.0[i] + a.0[i] * b.0[i]))
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Scalar16(std::array::from_fn(|i| self.0[i] + b.0[i]))
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Scalar16(std::array::from_fn(|i| self.0[i] * b.0[i]))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::V16;
    use std::arch::x86_64::*;

    /// One 512-bit register.
    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    impl V16 for Avx512 {
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            // SAFETY: only reached from functions compiled with AVX-512F enabled.
            unsafe { Avx512(_mm512_set1_ps(x)) }
        }
        #[inline(always)]
        fn mul_add_sep(self, a: Self, b: Self) -> Self {
            // SAFETY: as above.
            unsafe { Avx512(_mm512_add_ps(self.0, _mm512_mul_ps(a.0, b.0))) }
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            // SAFETY: as above.
            unsafe { Avx512(_mm512_add_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            // SAFETY: as above.
            unsafe { Avx512(_mm512_mul_ps(self.0, b.0)) }
        }
    }

    /// Two 256-bit registers.
    #[derive(Clone, Copy)]
    pub struct Avx2(__m256, __m256);

    impl V16 for Avx2 {
        const ONE_PARTIAL_AT_A_TIME: bool = true;
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0);
            _mm256_storeu_ps(p.add(8), self.1)
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            // SAFETY: only reached from functions compiled with AVX2 enabled.
            unsafe { Avx2(_mm256_set1_ps(x), _mm256_set1_ps(x)) }
        }
        #[inline(always)]
        fn mul_add_sep(self, a: Self, b: Self) -> Self {
            // SAFETY: as above.
            unsafe {
                Avx2(_mm256_add_ps(self.0, _mm256_mul_ps(a.0, b.0)), _mm256_add_ps(self.1, _mm256_mul_ps(a.1, b.1)))
            }
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            // SAFETY: as above.
            unsafe { Avx2(_mm256_add_ps(self.0, b.0), _mm256_add_ps(self.1, b.1)) }
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            // SAFETY: as above.
            unsafe { Avx2(_mm256_mul_ps(self.0, b.0), _mm256_mul_ps(self.1, b.1)) }
        }
    }

}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend_rows_impl<V: V16>(
    s: &AttnShape,
    q: &[f32],
    kt: KeysT,
    v: &[f32],
    t0: usize,
    heads: Range<usize>,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = s.head_dim;
    let qd = s.n_head * hd;
    let nq = q.len() / qd;
    assert!(heads.start <= heads.end && heads.end <= s.n_head, "heads {heads:?} of {}", s.n_head);
    let (h0, od) = (heads.start, heads.len() * hd);
    assert!(q.len() == nq * qd && out.len() == nq * od, "query and output rows differ");
    let n_keys = t0 + nq;
    let padded = n_keys.next_multiple_of(KEY_BLOCK);
    assert!(
        kt.stride >= padded && kt.data.len() >= (s.n_head / s.group) * hd * kt.stride,
        "keys shorter than attended"
    );
    assert!(
        v.len() >= n_keys * s.kv_stride && s.kv_stride >= (s.n_head / s.group) * hd,
        "values shorter than attended"
    );
    // The query heads sharing a key/value head go together: each key block, once loaded, serves
    // all of them (their scores rows side by side in `scores`), rather than being read again
    // from L2 per head. Every score and output is computed as before, so the bits are the same.
    scores.resize(s.group * QUERY_BLOCK * padded, 0.0);
    let mut h_first = heads.start;
    while h_first < heads.end {
        let g = h_first / s.group;
        let hs = h_first..heads.end.min((g + 1) * s.group);
        h_first = hs.end;
        let kt_head = &kt.data[g * hd * kt.stride..(g + 1) * hd * kt.stride];
        for r0 in (0..nq).step_by(QUERY_BLOCK) {
            let nb = QUERY_BLOCK.min(nq - r0);
            // Keys up to the last query of the block; row `i` uses `0..=t0 + r0 + i`.
            let last = t0 + r0 + nb - 1;
            for j0 in (0..=last).step_by(KEY_BLOCK) {
                for (k, h) in hs.clone().enumerate() {
                    let qh = |i: usize| &q[(r0 + i) * qd + h * hd..(r0 + i) * qd + (h + 1) * hd];
                    let sc_h = &mut scores[k * QUERY_BLOCK * padded..(k + 1) * QUERY_BLOCK * padded];
                    if nb == QUERY_BLOCK {
                        let qs: [&[f32]; QUERY_BLOCK] = std::array::from_fn(qh);
                        // SAFETY: `j0 + 16 <= padded <= stride` and every row of `kt_head` has
                        // `stride` values; `sc_h` holds QUERY_BLOCK rows of `padded`.
                        unsafe { scores_block::<V, QUERY_BLOCK>(qs, kt_head, kt.stride, j0, s.scale, sc_h, padded) };
                    } else {
                        for i in 0..nb {
                            // SAFETY: as above, for row `i` of `sc_h`.
                            unsafe {
                                scores_block::<V, 1>([qh(i)], kt_head, kt.stride, j0, s.scale, &mut sc_h[i * padded..], padded)
                            };
                        }
                    }
                }
            }
            for (k, hh) in hs.clone().enumerate() {
                let sc_h = &mut scores[k * QUERY_BLOCK * padded..(k + 1) * QUERY_BLOCK * padded];
                // Softmax per query, in key order, as `attend_row` does.
                let mut inv = [0f32; QUERY_BLOCK];
                for (i, inv_i) in inv.iter_mut().enumerate().take(nb) {
                    let sc = &mut sc_h[i * padded..i * padded + t0 + r0 + i + 1];
                    let max = sc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    *inv_i = exp_and_inverse_sum(sc, max);
                    // The weights themselves, each rounded once as `attend_row` rounds them.
                    for sj in sc.iter_mut() {
                        *sj *= *inv_i;
                    }
                }
                // Weighted sum of values in key order, 16 dimensions at a time, each value row
                // read once for the block's queries. A partial block goes one query at a time:
                // each output's sum is the same whatever the grouping.
                let kv_off = g * hd;
                let main = hd / 16 * 16;
                let vs = Values { v, stride: s.kv_stride, off: kv_off, first: t0 + r0 };
                let dst = |i: usize| (r0 + i) * od + (hh - h0) * hd;
                if nb == QUERY_BLOCK {
                    let sc: [&[f32]; QUERY_BLOCK] = std::array::from_fn(|i| &sc_h[i * padded..(i + 1) * padded]);
                    // SAFETY: `j < n_keys` for every key read and `kv_off + main <= kv_stride`
                    // (asserted above); every output row holds `main` values from `dst(i)`.
                    unsafe { vs.weighted_sum::<V, QUERY_BLOCK>(sc, main, out.as_mut_ptr(), std::array::from_fn(dst)) };
                } else {
                    for i in 0..nb {
                        let one = Values { first: t0 + r0 + i, ..vs };
                        // SAFETY: as above, for the one query `i`.
                        unsafe { one.weighted_sum::<V, 1>([&sc_h[i * padded..]], main, out.as_mut_ptr(), [dst(i)]) };
                    }
                }
                // Dimensions past the last whole 16 (none for this model's 64).
                for i in (0..nb).filter(|_| main < hd) {
                    let orow = &mut out[(r0 + i) * od + (hh - h0) * hd + main..(r0 + i) * od + (hh - h0 + 1) * hd];
                    orow.fill(0.0);
                    for j in 0..=t0 + r0 + i {
                        let vj = &v[j * s.kv_stride + kv_off + main..j * s.kv_stride + kv_off + hd];
                        let p = sc_h[i * padded + j];
                        for (oi, &vi) in orow.iter_mut().zip(vj) {
                            *oi += p * vi;
                        }
                    }
                }
            }
        }
    }
}

/// The value rows of one key/value head for a block of queries, the first of which attends
/// to keys `0..=first` and query `i` to `0..=first + i`.
#[derive(Clone, Copy)]
struct Values<'a> {
    v: &'a [f32],
    stride: usize,
    off: usize,
    first: usize,
}

impl Values<'_> {
    /// `out[dst[i] + e] = sum over keys j of scores[i][j] * v[j][off + e]` (the softmax weights) for
    /// `e < main` (a multiple of 16), added in key order with separate products and sums.
    /// Keys all `NQ` queries attend to go through a fixed-size loop, so the outputs stay in
    /// registers; each remaining key adds to the queries that attend to it.
    ///
    /// # Safety
    /// Rows `0..=first + NQ - 1` of `v` (stride `stride`) must hold `off + main` values, and
    /// `out` must hold `main` values from every `dst[i]`; `scores[i]` must hold
    /// `first + i + 1` values.
    // Indexing by query is the point: it fixes which outputs each key adds to.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn weighted_sum<V: V16, const NQ: usize>(
        &self,
        scores: [&[f32]; NQ],
        main: usize,
        out: *mut f32,
        dst: [usize; NQ],
    ) {
        debug_assert!((0..NQ).all(|i| scores[i].len() > self.first + i));
        let mut e0 = 0;
        if NQ == 1 {
            // One query (generation): 64 dimensions per pass, so each value row is read once
            // rather than once per 16 dimensions (the rows come from L2 or farther then).
            while e0 + 64 <= main {
                self.weighted_sum_dims::<V, NQ, 4>(&scores, e0, out, &dst);
                e0 += 64;
            }
        }
        while e0 < main {
            self.weighted_sum_dims::<V, NQ, 1>(&scores, e0, out, &dst);
            e0 += 16;
        }
    }

    /// [`Values::weighted_sum`] for dimensions `e0..e0 + 16 * W`: each output is the same
    /// sum in the same order whatever `W`.
    ///
    /// # Safety
    /// As for [`Values::weighted_sum`], with `e0 + 16 * W <= main`.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn weighted_sum_dims<V: V16, const NQ: usize, const W: usize>(
        &self,
        scores: &[&[f32]; NQ],
        e0: usize,
        out: *mut f32,
        dst: &[usize; NQ],
    ) {
        let last = self.first + NQ - 1;
        let row = |j: usize, w: usize| V::load(self.v.as_ptr().add(j * self.stride + self.off + e0 + 16 * w));
        let mut o = [[V::zero(); W]; NQ];
        for j in 0..=self.first {
            for w in 0..W {
                let vj = row(j, w);
                for i in 0..NQ {
                    o[i][w] = o[i][w].mul_add_sep(V::splat(*scores[i].get_unchecked(j)), vj);
                }
            }
        }
        for j in self.first + 1..=last {
            for w in 0..W {
                let vj = row(j, w);
                for i in j - self.first..NQ {
                    o[i][w] = o[i][w].mul_add_sep(V::splat(*scores[i].get_unchecked(j)), vj);
                }
            }
        }
        for i in 0..NQ {
            for w in 0..W {
                o[i][w].store(out.add(dst[i] + e0 + 16 * w));
            }
        }
    }
}

/// Replaces each score `s` by `exp(s - max)` ([`exp_neg`]) and returns `1 / sum` of them, the
/// sum in f64 over sixteen interleaved partial sums (score `j` into sum `j % 16`, combined as
/// the fixed pairwise tree of [`tree16`]). With AVX-512 sixteen scores go at once; the lanes do
/// the scalar operations, so both give the same bits (`softmax_simd_matches_scalar`) and both
/// attention kernels, which call this, agree bit for bit. A libm `expf` call per score and one
/// chain of dependent f64 additions were a fifth of the attention time.
#[inline(always)]
fn exp_and_inverse_sum(sc: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match isa::active() {
        // SAFETY: Avx512 is active only after `Isa::is_available` confirmed the features.
        isa::Isa::Avx512 => return unsafe { x86_softmax::exp_and_inverse_sum(sc, max) },
        // SAFETY: as above, for AVX2.
        isa::Isa::Avx2 => return unsafe { x86_softmax::exp_and_inverse_sum_avx2(sc, max) },
        _ => {}
    }
    exp_and_inverse_sum_scalar(sc, max)
}

fn exp_and_inverse_sum_scalar(sc: &mut [f32], max: f32) -> f32 {
    let mut sum = [0f64; 16];
    for (j, sj) in sc.iter_mut().enumerate() {
        *sj = exp_neg(*sj - max);
        sum[j % 16] += *sj as f64;
    }
    (1.0 / tree16(sum)) as f32
}

/// `((s0 + s8) + (s4 + s12)) + ...`: halves added lane-wise, then halves of the halves.
#[inline(always)]
fn tree16(s: [f64; 16]) -> f64 {
    let h8: [f64; 8] = std::array::from_fn(|i| s[i] + s[i + 8]);
    let h4: [f64; 4] = std::array::from_fn(|i| h8[i] + h8[i + 4]);
    (h4[0] + h4[2]) + (h4[1] + h4[3])
}

const EXP_LOG2E: f32 = std::f32::consts::LOG2_E;
const EXP_MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
const EXP_C1: f32 = 0.693_359_4; // ln 2 in few bits, so n * C1 is exact
const EXP_C2: f32 = -2.121_944_4e-4; // ln 2 - C1
const EXP_P: [f32; 6] = [1.987_569_1e-4, 1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

/// `exp(x)` for `x <= 0` (Cephes' `expf`: `2^n · p(r)` with `r = x - n ln 2`), within 2 ulp of
/// the exact value and 0-ish below -87 (clamped to `exp(-87)`, ~1.6e-38, far below any softmax
/// sum's resolution). Only correctly rounded `+ - *` and exact conversions, never fused, so
/// the vector version in `x86_softmax` gives the same bits lane by lane.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    let x = if x > -87.0 { x } else { -87.0 };
    let n = (x * EXP_LOG2E + EXP_MAGIC) - EXP_MAGIC;
    let r = (x - n * EXP_C1) - n * EXP_C2;
    let mut p = EXP_P[0];
    for c in &EXP_P[1..] {
        p = p * r + c;
    }
    let y = (p * (r * r) + r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(target_arch = "x86_64")]
mod x86_softmax {
    use std::arch::x86_64::*;

    use super::{EXP_C1, EXP_C2, EXP_LOG2E, EXP_MAGIC, EXP_P};

    /// [`super::exp_neg`] on 16 lanes.
    #[inline(always)]
    unsafe fn exp_neg(x: __m512) -> __m512 {
        let lo = _mm512_set1_ps(-87.0);
        let x = _mm512_mask_mov_ps(lo, _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, lo), x);
        let magic = _mm512_set1_ps(EXP_MAGIC);
        let n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)), magic), magic);
        let r = _mm512_sub_ps(
            _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(EXP_C1))),
            _mm512_mul_ps(n, _mm512_set1_ps(EXP_C2)),
        );
        let mut p = _mm512_set1_ps(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c));
        }
        let y = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r), _mm512_set1_ps(1.0));
        let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)));
        _mm512_mul_ps(y, _mm512_castsi512_ps(e))
    }

    /// [`super::exp_neg`] on 8 lanes.
    #[inline(always)]
    unsafe fn exp_neg8(x: __m256) -> __m256 {
        // `max` returns its second operand for a NaN, as the scalar comparison does.
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let magic = _mm256_set1_ps(EXP_MAGIC);
        let n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)), magic), magic);
        let r = _mm256_sub_ps(
            _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(EXP_C1))),
            _mm256_mul_ps(n, _mm256_set1_ps(EXP_C2)),
        );
        let mut p = _mm256_set1_ps(EXP_P[0]);
        for &c in &EXP_P[1..] {
            p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r), _mm256_set1_ps(1.0));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(y, _mm256_castsi256_ps(e))
    }

    /// [`super::exp_and_inverse_sum_scalar`] with AVX2: whole blocks of sixteen scores in
    /// vectors (score `j` into the f64 partial sum `j % 16`, four per register), the last
    /// partial block through the scalar code, which computes the same bits per score.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_and_inverse_sum_avx2(sc: &mut [f32], max: f32) -> f32 {
        let m = _mm256_set1_ps(max);
        let mut acc = [_mm256_setzero_pd(); 4];
        let whole = sc.len() / 16 * 16;
        for j in (0..whole).step_by(16) {
            let p = sc.as_mut_ptr().add(j);
            for h in 0..2 {
                let e = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(p.add(8 * h)), m));
                _mm256_storeu_ps(p.add(8 * h), e);
                acc[2 * h] = _mm256_add_pd(acc[2 * h], _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
                acc[2 * h + 1] = _mm256_add_pd(acc[2 * h + 1], _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
            }
        }
        let mut sum = [0f64; 16];
        for (i, a) in acc.iter().enumerate() {
            _mm256_storeu_pd(sum.as_mut_ptr().add(4 * i), *a);
        }
        for (j, sj) in sc.iter_mut().enumerate().skip(whole) {
            *sj = super::exp_neg(*sj - max);
            sum[j % 16] += *sj as f64;
        }
        (1.0 / super::tree16(sum)) as f32
    }

    /// [`super::exp_and_inverse_sum_scalar`] sixteen scores at a time: lanes 0..8 and 8..16 of
    /// each block go to the two f64 accumulators, i.e. score `j` to partial sum `j % 16`, in
    /// order; lanes past the end hold +0.0, which leaves a (non-negative) sum unchanged.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn exp_and_inverse_sum(sc: &mut [f32], max: f32) -> f32 {
        let m = _mm512_set1_ps(max);
        let (mut a, mut b) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        let mut j = 0;
        while j < sc.len() {
            let k = (sc.len() - j).min(16);
            let mask = if k == 16 { u16::MAX } else { (1u16 << k) - 1 };
            let p = sc.as_mut_ptr().add(j);
            let e = exp_neg(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p), m));
            let e = _mm512_maskz_mov_ps(mask, e);
            _mm512_mask_storeu_ps(p, mask, e);
            a = _mm512_add_pd(a, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
            b = _mm512_add_pd(b, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e)))));
            j += 16;
        }
        let (mut s, mut t) = ([0f64; 8], [0f64; 8]);
        _mm512_storeu_pd(s.as_mut_ptr(), a);
        _mm512_storeu_pd(t.as_mut_ptr(), b);
        let all: [f64; 16] = std::array::from_fn(|i| if i < 8 { s[i] } else { t[i - 8] });
        (1.0 / super::tree16(all)) as f32
    }
}

/// Scaled scores of the `NQ` query heads `qs` against keys `j0..j0 + 16`, written to
/// `scores[i * row + j0..]`, summed exactly as [`dot8`] sums one pair: partial sum `l` takes
/// dimensions `l, l + 8, ...` in order, the eight are combined as a fixed tree, and a tail of
/// `hd % 8` dimensions is added last.
///
/// # Safety
/// Every one of the `hd` rows of `kt` (stride `stride`) must hold `j0 + 16` values, and
/// `scores` must hold `(NQ - 1) * row + j0 + 16`.
// Indexing by partial sum and by query is the point: it fixes the summation order.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn scores_block<V: V16, const NQ: usize>(
    qs: [&[f32]; NQ],
    kt: &[f32],
    stride: usize,
    j0: usize,
    scale: f32,
    scores: &mut [f32],
    row: usize,
) {
    let hd = qs[0].len();
    debug_assert!(kt.len() >= (hd.max(1) - 1) * stride + j0 + 16 && scores.len() >= (NQ - 1) * row + j0 + 16);
    let main = hd / 8 * 8;
    let key = |e: usize| V::load(kt.as_ptr().add(e * stride + j0));
    let mut res = [V::zero(); NQ];
    let mut acc = [[V::zero(); 8]; NQ];
    if !V::ONE_PARTIAL_AT_A_TIME {
        for c in (0..main).step_by(8) {
            for l in 0..8 {
                let k = key(c + l);
                for i in 0..NQ {
                    acc[i][l] = acc[i][l].mul_add_sep(V::splat(*qs[i].get_unchecked(c + l)), k);
                }
            }
        }
    } else {
        // The same sums one partial sum at a time, so that only NQ of them are live.
        for l in 0..8 {
            let mut a = [V::zero(); NQ];
            for c in (0..main).step_by(8) {
                let k = key(c + l);
                for i in 0..NQ {
                    a[i] = a[i].mul_add_sep(V::splat(*qs[i].get_unchecked(c + l)), k);
                }
            }
            for i in 0..NQ {
                acc[i][l] = a[i];
            }
        }
    }
    for i in 0..NQ {
        let a = &acc[i];
        let mut sum = (a[0].add(a[4]).add(a[2].add(a[6]))).add(a[1].add(a[5]).add(a[3].add(a[7])));
        for e in main..hd {
            sum = sum.mul_add_sep(V::splat(qs[i][e]), key(e));
        }
        res[i] = sum.mul(V::splat(scale));
    }
    for (i, r) in res.iter().enumerate() {
        r.store(scores.as_mut_ptr().add(i * row + j0));
    }
}

/// Writes the attention output of query row `t` (`q_row`, all heads) into `out_row`,
/// attending to row-major key/value rows `0..=t`. `scores` needs room for `t + 1` values. The
/// scalar reference of [`attend_rows`], which gives the same bits.
pub fn attend_row(
    s: &AttnShape,
    q_row: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    scores: &mut [f32],
    out_row: &mut [f32],
) {
    attend_impl(s, q_row, k, v, t, scores, out_row)
}

#[inline(always)]
fn attend_impl(s: &AttnShape, q_row: &[f32], k: &[f32], v: &[f32], t: usize, scores: &mut [f32], out_row: &mut [f32]) {
    let hd = s.head_dim;
    let sc = &mut scores[..=t];
    for h in 0..s.n_head {
        let kv_off = (h / s.group) * hd;
        let qh = &q_row[h * hd..(h + 1) * hd];
        let mut max = f32::NEG_INFINITY;
        for (j, sj) in sc.iter_mut().enumerate() {
            let kj = &k[j * s.kv_stride + kv_off..j * s.kv_stride + kv_off + hd];
            *sj = dot8(qh, kj) * s.scale;
            max = max.max(*sj);
        }
        let inv = exp_and_inverse_sum(sc, max);
        let o = &mut out_row[h * hd..(h + 1) * hd];
        o.fill(0.0);
        for (j, &p) in sc.iter().enumerate() {
            let vj = &v[j * s.kv_stride + kv_off..j * s.kv_stride + kv_off + hd];
            let p = p * inv;
            for (oi, &vi) in o.iter_mut().zip(vj) {
                *oi += p * vi;
            }
        }
    }
}

/// A dot product with eight independent partial sums, so it vectorizes without reassociation.
#[inline(always)]
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let main = a.len() / 8 * 8;
    for (ca, cb) in a[..main].chunks_exact(8).zip(b[..main].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for i in main..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::Isa;

    /// `attend_rows` on every instruction set, for several batch offsets and row counts
    /// (query blocks with leftovers, key blocks cut by the causal edge) and head sizes with and
    /// without a tail of `hd % 8`, gives the bits of `attend_row` one query at a time.
    #[test]
    fn attend_rows_matches_attend_row_bit_for_bit() {
        let gen = |n: usize, seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) % 1000)
                .map(|x| x as f32 / 500.0 - 1.0)
                .collect()
        };
        for (n_head, n_kv, hd) in [(4, 2, 20), (6, 3, 64), (2, 1, 8)] {
            for (t0, nq) in [(0, 1), (0, 7), (5, 1), (13, 9), (0, 40), (31, 17)] {
                let n_keys = t0 + nq;
                let shape = AttnShape { n_head, group: n_head / n_kv, head_dim: hd, kv_stride: n_kv * hd, scale: 0.3 };
                let q = gen(nq * n_head * hd, 1);
                let k = gen(n_keys * n_kv * hd, 2);
                let v = gen(n_keys * n_kv * hd, 3);
                let stride = n_keys.next_multiple_of(KEY_BLOCK) + KEY_BLOCK;
                // Unused positions hold NaN: lanes past the causal edge must be ignored.
                let mut kt = vec![f32::NAN; n_kv * hd * stride];
                for j in 0..n_keys {
                    for e in 0..n_kv * hd {
                        kt[e * stride + j] = k[j * n_kv * hd + e];
                    }
                }
                let qd = n_head * hd;
                let mut want = vec![0f32; nq * qd];
                let mut sc = vec![0f32; n_keys];
                for r in 0..nq {
                    attend_row(
                        &shape,
                        &q[r * qd..(r + 1) * qd],
                        &k,
                        &v,
                        t0 + r,
                        &mut sc,
                        &mut want[r * qd..(r + 1) * qd],
                    );
                }
                // Softmax weights sum to one, so each output lies within the range of the values.
                assert!(want.iter().all(|o| o.abs() <= 1.0 + 1e-5));
                for isa in Isa::available() {
                    let mut got = vec![0f32; nq * qd];
                    let mut scratch = Vec::new();
                    let kts = KeysT { data: &kt, stride };
                    // All heads at once, then the heads in two parts (the generation split).
                    let split = n_head / 2;
                    for heads in [0..n_head, 0..split, split..n_head] {
                        let od = heads.len() * hd;
                        let mut part = vec![0f32; nq * od];
                        let h0 = heads.start;
                        match isa {
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx512 => unsafe {
                                attend_rows_avx512(&shape, &q, kts, &v, t0, heads, &mut scratch, &mut part)
                            },
                            #[cfg(target_arch = "x86_64")]
                            Isa::Avx2 => unsafe {
                                attend_rows_avx2(&shape, &q, kts, &v, t0, heads, &mut scratch, &mut part)
                            },
                            _ => attend_rows_impl::<Scalar16>(&shape, &q, kts, &v, t0, heads, &mut scratch, &mut part),
                        }
                        for r in 0..nq {
                            got[r * qd + h0 * hd..r * qd + h0 * hd + od].copy_from_slice(&part[r * od..(r + 1) * od]);
                        }
                    }
                    let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{} hd {hd} t0 {t0} nq {nq}", isa.name());
                }
            }
        }
    }

    /// The AVX-512 softmax gives the scalar one's weights and inverse sum bit for bit, for
    /// every length up to 70 (all tails), and `exp_neg` stays within 2 ulp of `f32::exp`.
    #[test]
    fn softmax_simd_matches_scalar() {
        for len in 1..70usize {
            // Scores from -90 to +10 around the max: some clamped at -87.
            let base: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 * 0.1 - 90.0).collect();
            let max = base.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut want = base.clone();
            let inv_want = exp_and_inverse_sum_scalar(&mut want, max);
            let mut paths: Vec<(&str, fn(&mut [f32], f32) -> f32)> = vec![("active", exp_and_inverse_sum)];
            #[cfg(target_arch = "x86_64")]
            {
                if isa::Isa::Avx2.is_available() {
                    // SAFETY: AVX2 is available.
                    paths.push(("avx2", |s, m| unsafe { x86_softmax::exp_and_inverse_sum_avx2(s, m) }));
                }
                if isa::Isa::Avx512.is_available() {
                    // SAFETY: AVX-512 is available.
                    paths.push(("avx512", |s, m| unsafe { x86_softmax::exp_and_inverse_sum(s, m) }));
                }
            }
            for (name, f) in paths {
                let mut got = base.clone();
                let inv_got = f(&mut got, max);
                assert_eq!(inv_got.to_bits(), inv_want.to_bits(), "{name} len {len}");
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} len {len}");
            }
        }
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp_neg(x), (x as f64).exp());
            let ulp = (want as f32).to_bits().abs_diff(got.to_bits());
            assert!(ulp <= 2, "exp({x}) = {got} vs {want}: {ulp} ulp");
            x += 0.001_37;
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert!(exp_neg(-1e30) < 2e-38 && exp_neg(-1e30) > 0.0);
    }
}
