//! Non-linear 4-bit formats: IQ4_NL (32-weight blocks) and IQ4_XS (256-weight super-blocks).
//!
//! Each 4-bit index selects a value from the fixed table [`KVALUES_IQ4NL`]. Layouts follow
//! `ggml/src/ggml-common.h`; dequantization follows `dequantize_row_iq4_nl` and
//! `dequantize_row_iq4_xs` in `ggml/src/ggml-quants.c`: `d * kvalue` for IQ4_NL and
//! `(d * (ls - 32)) * kvalue` for IQ4_XS.
//!
//! Quantization reproduces what `llama-quantize` writes without an importance matrix
//! (`ggml_quantize_chunk` → `quantize_iq4_nl` / `quantize_iq4_xs`, both built on
//! `quantize_row_iq4_nl_impl` with `ntry = 7` and weights `x²`), bit for bit: same f32
//! arithmetic in the same order, same tie-breaking. The dot products follow ggml-cpu's generic
//! scalar `ggml_vec_dot_iq4_nl_q8_0` and `ggml_vec_dot_iq4_xs_q8_K`.

use half::f16;

use super::k_quants::BlockQ8K;
use super::legacy::BlockQ8_0;
use super::{dequantize_blocks, read_array, read_f16, Block};
use crate::gguf::GgmlType;
use crate::gguf::QK_K;

/// Weights per IQ4_NL block.
pub const QK4_NL: usize = 32;

/// `kvalues_iq4nl` (ggml-common.h): the 16 non-linear quantization levels.
pub const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// `block_iq4_nl` (ggml-common.h): `x = d * KVALUES_IQ4NL[q]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockIQ4NL {
    /// Delta (scale).
    pub d: f16,
    /// Indices: low nibbles are weights 0..16, high nibbles weights 16..32.
    pub qs: [u8; QK4_NL / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4NL>() == 18);

/// `block_iq4_xs` (ggml-common.h): 8 sub-blocks of 32 weights,
/// `x = d * (ls - 32) * KVALUES_IQ4NL[q]` with a 6-bit sub-block scale `ls`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockIQ4XS {
    /// Super-block scale.
    pub d: f16,
    /// Top two bits of each sub-block scale: bits `2*ib..2*ib+2` for sub-block `ib`.
    pub scales_h: u16,
    /// Low four bits of each sub-block scale: sub-block `ib` in byte `ib / 2`, nibble `ib % 2`.
    pub scales_l: [u8; QK_K / 64],
    /// Indices: byte `16*ib + j` holds weights `32*ib + j` (low) and `32*ib + 16 + j` (high).
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4XS>() == 136);

impl BlockIQ4XS {
    /// The 6-bit scale of sub-block `ib` (0..8), before the -32 offset.
    #[inline(always)]
    pub fn sub_scale(&self, ib: usize) -> u8 {
        let lo = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
        let hi = ((self.scales_h >> (2 * ib)) & 3) as u8;
        lo | (hi << 4)
    }
}

impl Block for BlockIQ4NL {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const QK: usize = QK4_NL;
    const BYTES: usize = 18;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockIQ4NL { d: read_f16(b, 0), qs: read_array(b, 2) }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..18].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK4_NL] = out.try_into().expect("32 outputs");
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = d * KVALUES_IQ4NL[(q & 0xF) as usize] as f32;
            y[j + QK4_NL / 2] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
        }
    }
}

impl Block for BlockIQ4XS {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const QK: usize = QK_K;
    const BYTES: usize = 136;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockIQ4XS {
            d: read_f16(b, 0),
            scales_h: u16::from_le_bytes([b[2], b[3]]),
            scales_l: read_array(b, 4),
            qs: read_array(b, 8),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.scales_h.to_le_bytes());
        out[4..8].copy_from_slice(&self.scales_l);
        out[8..136].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK_K] = out.try_into().expect("256 outputs");
        let d = self.d.to_f32();
        for ib in 0..QK_K / 32 {
            let ls = self.sub_scale(ib) as i32;
            let dl = d * (ls - 32) as f32;
            let qs = &self.qs[16 * ib..16 * ib + 16];
            let y = &mut y[32 * ib..32 * ib + 32];
            for (j, &q) in qs.iter().enumerate() {
                y[j] = dl * KVALUES_IQ4NL[(q & 0xF) as usize] as f32;
                y[j + 16] = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
            }
        }
    }
}

/// `dequantize_row_iq4_nl`: `blocks` holds whole [`BlockIQ4NL`]s, `out` one f32 per weight.
pub fn dequantize_row_iq4_nl(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockIQ4NL>(blocks, out)
}

/// `dequantize_row_iq4_xs`: `blocks` holds whole [`BlockIQ4XS`]s, `out` one f32 per weight.
pub fn dequantize_row_iq4_xs(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockIQ4XS>(blocks, out)
}

/// `GROUP_MAX_EPS` (ggml-quants.c): a (sub-)block whose largest |x| is below this gets scale 0.
const GROUP_MAX_EPS: f32 = 1e-15;

/// The `ntry` that `quantize_iq4_nl` / `quantize_iq4_xs` pass: scales `(k - 127) / max` for
/// `k` in `-7..=7` are tried besides the first guess `max / 127`.
const IQ4_NTRY: i32 = 7;

/// ggml's `best_index_int8` over [`KVALUES_IQ4NL`]: the index of the level nearest to `x`, ties
/// going to the upper level. A NaN `x` yields 15 (every comparison is false), as in C.
#[inline(always)]
fn best_index_int8(x: f32) -> u8 {
    let val = &KVALUES_IQ4NL;
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < (val[mu] as f32) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// `(sumqx, sumq2)` of each scale try `itry = -ntry..=ntry` of one 32-weight block (try
/// `itry` at index `itry + ntry`), `1 <= ntry <= 7`: with AVX-512 where the CPU has it, else
/// the scalar loop; both give the same bits.
fn search_tries(xb: &[f32; 32], weight: &[f32; 32], max: f32, ntry: i32) -> ([f32; 16], [f32; 16]) {
    #[cfg(target_arch = "x86_64")]
    if x86_search::available() {
        // SAFETY: `available` confirmed AVX-512 F/BW/VL/DQ.
        return unsafe { x86_search::tries(xb, weight, max, ntry) };
    }
    search_tries_scalar(xb, weight, max, ntry)
}

/// The scalar twin of [`search_tries`]: llama.cpp's loop body per try.
fn search_tries_scalar(xb: &[f32; 32], weight: &[f32; 32], max: f32, ntry: i32) -> ([f32; 16], [f32; 16]) {
    let (mut qx, mut q2) = ([0f32; 16], [0f32; 16]);
    for itry in -ntry..=ntry {
        let id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for j in 0..32 {
            let al = id * xb[j];
            let q = KVALUES_IQ4NL[best_index_int8(al) as usize] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        qx[(itry + ntry) as usize] = sumqx;
        q2[(itry + ntry) as usize] = sumq2;
    }
    (qx, q2)
}

/// The scale search of [`quantize_iq4_impl`] with one try per AVX-512 lane: lane `t` runs try
/// `itry = t - ntry` through the same operations as the scalar loop, in the same order (the
/// index search is a branch-free binary search that picks the same level, ties included), so
/// each lane's sums are the scalar sums bit for bit and the caller's sequential choice among
/// them picks the same scale. The search was 97% of an IQ4_NL quantization.
#[cfg(target_arch = "x86_64")]
mod x86_search {
    use std::arch::x86_64::*;

    use super::KVALUES_IQ4NL;

    pub(super) fn available() -> bool {
        crate::kernels::Isa::Avx512.is_available()
    }

    /// `(sumqx, sumq2)` of each try `itry = -ntry..=ntry` (lane `itry + ntry`), `1 <= ntry <= 7`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/DQ.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn tries(xb: &[f32; 32], weight: &[f32; 32], max: f32, ntry: i32) -> ([f32; 16], [f32; 16]) {
        let mut ids = [0f32; 16];
        for (t, id) in ids.iter_mut().enumerate().take((2 * ntry + 1) as usize) {
            *id = (t as i32 - ntry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        }
        let vals: [f32; 16] = std::array::from_fn(|k| KVALUES_IQ4NL[k] as f32);
        let val = _mm512_loadu_ps(vals.as_ptr());
        let (v0, v15) = (_mm512_set1_ps(vals[0]), _mm512_set1_ps(vals[15]));
        let id = _mm512_loadu_ps(ids.as_ptr());
        let (mut qx, mut q2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for j in 0..32 {
            let xj = _mm512_set1_ps(xb[j]);
            let al = _mm512_mul_ps(id, xj);
            // The last level at or below `al`, by halving steps (levels increase strictly).
            let mut ml = _mm512_setzero_si512();
            for step in [8, 4, 2, 1] {
                let cand = _mm512_add_epi32(ml, _mm512_set1_epi32(step));
                let le = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(_mm512_permutexvar_ps(cand, val), al);
                ml = _mm512_mask_mov_epi32(ml, le, cand);
            }
            let mu = _mm512_min_epi32(_mm512_add_epi32(ml, _mm512_set1_epi32(1)), _mm512_set1_epi32(15));
            let (lo, hi) = (_mm512_permutexvar_ps(ml, val), _mm512_permutexvar_ps(mu, val));
            let lower = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_sub_ps(al, lo), _mm512_sub_ps(hi, al));
            let mut l = _mm512_mask_mov_epi32(mu, lower, ml);
            l = _mm512_mask_mov_epi32(l, _mm512_cmp_ps_mask::<_CMP_LE_OQ>(al, v0), _mm512_setzero_si512());
            l = _mm512_mask_mov_epi32(l, _mm512_cmp_ps_mask::<_CMP_GE_OQ>(al, v15), _mm512_set1_epi32(15));
            let q = _mm512_permutexvar_ps(l, val);
            let wq = _mm512_mul_ps(_mm512_set1_ps(weight[j]), q);
            qx = _mm512_add_ps(qx, _mm512_mul_ps(wq, xj));
            q2 = _mm512_add_ps(q2, _mm512_mul_ps(wq, q));
        }
        let (mut a, mut b) = ([0f32; 16], [0f32; 16]);
        _mm512_storeu_ps(a.as_mut_ptr(), qx);
        _mm512_storeu_ps(b.as_mut_ptr(), q2);
        (a, b)
    }
}

/// ggml's `nearest_int`: round to nearest (ties to even) via the `1.5 * 2^23` magic add. Like
/// the C it reads the mantissa bits, so out-of-range or non-finite inputs give a (meaningless)
/// value rather than a panic.
#[inline(always)]
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12582912.0f32;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Scales and packed indices of one IQ4 super-block, as `quantize_row_iq4_nl_impl` leaves them.
struct Iq4Quantized {
    d: f16,
    scales_h: u16,
    scales_l: [u8; QK_K / 64],
}

/// `quantize_row_iq4_nl_impl` with `quant_weights == NULL` (weights `x[j]²`), for a super-block
/// of `x.len()` weights (32 for IQ4_NL, 256 for IQ4_XS) made of 32-weight blocks. Writes the
/// packed indices to `q4` (`x.len() / 2` bytes) and returns the scales.
///
/// `ntry > 0` is what llama-quantize uses; `ntry <= 0` is the one-shot `*_ref` variant (first
/// guess `max / -127`, no search, indices kept from the first pass).
fn quantize_iq4_impl(x: &[f32], q4: &mut [u8], ntry: i32) -> Iq4Quantized {
    const BLOCK: usize = 32;
    let super_block_size = x.len();
    let nb = super_block_size / BLOCK;
    debug_assert!((1..=QK_K / BLOCK).contains(&nb) && super_block_size.is_multiple_of(BLOCK));
    debug_assert_eq!(q4.len(), super_block_size / 2);
    let v0 = KVALUES_IQ4NL[0] as f32;

    let mut scales = [0f32; QK_K / BLOCK];
    let mut l_all = [0u8; QK_K];
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    for ib in 0..nb {
        let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
        let lb = &mut l_all[ib * BLOCK..(ib + 1) * BLOCK];
        let mut weight = [0f32; BLOCK];
        for (w, &v) in weight.iter_mut().zip(xb) {
            *w = v * v;
        }
        // First element with the largest magnitude (strict `>`), with its sign.
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let mut d = if ntry > 0 { -max / v0 } else { max / v0 };
        let mut id = 1.0 / d;
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for j in 0..BLOCK {
            let al = id * xb[j];
            let l = best_index_int8(al);
            lb[j] = l;
            let q = KVALUES_IQ4NL[l as usize] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        if (1..=7).contains(&ntry) {
            let xb: &[f32; BLOCK] = xb.try_into().expect("32 weights");
            let (qx, q2) = search_tries(xb, &weight, max, ntry);
            for t in 0..(2 * ntry + 1) as usize {
                if q2[t] > 0.0 && qx[t] * qx[t] > best * q2[t] {
                    d = qx[t] / q2[t];
                    best = d * qx[t];
                }
            }
        } else {
            for itry in -ntry..=ntry {
                id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
                sumqx = 0.0;
                sumq2 = 0.0;
                for j in 0..BLOCK {
                    let al = id * xb[j];
                    let q = KVALUES_IQ4NL[best_index_int8(al) as usize] as f32;
                    let w = weight[j];
                    sumqx += w * q * xb[j];
                    sumq2 += w * q * q;
                }
                if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
        }
        scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }

    let mut out = Iq4Quantized { d: f16::from_f32(0.0), scales_h: 0, scales_l: [0; QK_K / 64] };
    if nb > 1 {
        // 6-bit sub-block scales relative to a super-block scale; the most extreme sub-block
        // scale maps to -32. With every sub-block empty, `d` is -0.0 (stored as f16 0x8000).
        let d = -max_scale / 32.0;
        out.d = f16::from_f32(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nb {
            let mut l = nearest_int(id * scales[ib]);
            l = l.clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let xb = &x[ib * BLOCK..(ib + 1) * BLOCK];
            for (lj, &v) in l_all[ib * BLOCK..(ib + 1) * BLOCK].iter_mut().zip(xb) {
                *lj = best_index_int8(idl * v);
            }
            let l = (l + 32) as u8;
            let (l_l, l_h) = (l & 0xF, l >> 4);
            if ib % 2 == 0 {
                out.scales_l[ib / 2] = l_l;
            } else {
                out.scales_l[ib / 2] |= l_l << 4;
            }
            out.scales_h |= (l_h as u16) << (2 * (ib % 8));
        }
    } else {
        out.d = f16::from_f32(scales[0]);
        if ntry > 0 {
            // Indices from the full-precision scale, not the f16-rounded one.
            let id = if scales[0] != 0.0 { 1.0 / scales[0] } else { 0.0 };
            for (lj, &v) in l_all[..super_block_size].iter_mut().zip(x) {
                *lj = best_index_int8(id * v);
            }
        }
    }

    for i in 0..super_block_size / 32 {
        for j in 0..16 {
            q4[16 * i + j] = l_all[32 * i + j] | (l_all[32 * i + 16 + j] << 4);
        }
    }
    out
}

fn check_quantize_lengths(ty: GgmlType, qk: usize, bytes: usize, src: &[f32], dst: &[u8]) {
    assert!(
        src.len().is_multiple_of(qk) && dst.len() == src.len() / qk * bytes,
        "{ty}: {} weights cannot quantize into {} bytes (blocks of {qk} weights, {bytes} bytes)",
        src.len(),
        dst.len()
    );
}

/// Quantizes `src` (a whole number of 32-weight blocks) to IQ4_NL into `dst`
/// (`src.len() / 32 * 18` bytes), byte-identical to llama-quantize without an importance matrix
/// (`quantize_iq4_nl(.., quant_weights = NULL)`). Rows are independent per block, so any run of
/// rows may be passed at once. Panics when the lengths disagree. Non-finite inputs do not panic
/// (their blocks come out as garbage, as in ggml).
pub fn quantize_row_iq4_nl(src: &[f32], dst: &mut [u8]) {
    check_quantize_lengths(GgmlType::IQ4_NL, QK4_NL, BlockIQ4NL::BYTES, src, dst);
    for (x, out) in src.chunks_exact(QK4_NL).zip(dst.chunks_exact_mut(BlockIQ4NL::BYTES)) {
        let mut qs = [0u8; QK4_NL / 2];
        let r = quantize_iq4_impl(x, &mut qs, IQ4_NTRY);
        BlockIQ4NL { d: r.d, qs }.write(out);
    }
}

/// Quantizes `src` (a whole number of 256-weight super-blocks) to IQ4_XS into `dst`
/// (`src.len() / 256 * 136` bytes), byte-identical to llama-quantize without an importance
/// matrix (`quantize_iq4_xs(.., quant_weights = NULL)`). Panics when the lengths disagree.
/// Non-finite inputs do not panic.
pub fn quantize_row_iq4_xs(src: &[f32], dst: &mut [u8]) {
    check_quantize_lengths(GgmlType::IQ4_XS, QK_K, BlockIQ4XS::BYTES, src, dst);
    for (x, out) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BlockIQ4XS::BYTES)) {
        let mut qs = [0u8; QK_K / 2];
        let r = quantize_iq4_impl(x, &mut qs, IQ4_NTRY);
        BlockIQ4XS { d: r.d, scales_h: r.scales_h, scales_l: r.scales_l, qs }.write(out);
    }
}

fn check_vec_dot_lengths(n: usize, x_ty: GgmlType, x: &[u8], y_ty: GgmlType, y: &[u8]) {
    let (qx, bx) = (x_ty.block_size(), x_ty.block_bytes());
    let (qy, by) = (y_ty.block_size(), y_ty.block_bytes());
    assert!(
        n.is_multiple_of(qx) && n.is_multiple_of(qy) && x.len() == n / qx * bx && y.len() == n / qy * by,
        "vec_dot {x_ty}×{y_ty}: n = {n} with {} and {} bytes",
        x.len(),
        y.len()
    );
}

/// ggml-cpu's generic `ggml_vec_dot_iq4_nl_q8_0`: the dot product of `n` weights stored as
/// IQ4_NL blocks (`x`) with `n` activations stored as Q8_0 blocks (`y`). Integer sums per block,
/// then `sumf += (d_y * d_x) * sumi` in f32, block by block. Panics when the lengths disagree.
pub fn vec_dot_iq4_nl_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_vec_dot_lengths(n, GgmlType::IQ4_NL, x, GgmlType::Q8_0, y);
    let mut sumf = 0f32;
    for (xb, yb) in x.chunks_exact(BlockIQ4NL::BYTES).zip(y.chunks_exact(BlockQ8_0::BYTES)) {
        let xb = BlockIQ4NL::read(xb);
        let yb = BlockQ8_0::read(yb);
        let d = yb.d.to_f32() * xb.d.to_f32();
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for (j, &q) in xb.qs.iter().enumerate() {
            sumi1 += yb.qs[j] as i32 * KVALUES_IQ4NL[(q & 0xF) as usize] as i32;
            sumi2 += yb.qs[j + QK4_NL / 2] as i32 * KVALUES_IQ4NL[(q >> 4) as usize] as i32;
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    sumf
}

/// ggml-cpu's generic `ggml_vec_dot_iq4_xs_q8_K`: the dot product of `n` weights stored as
/// IQ4_XS super-blocks (`x`) with `n` activations stored as Q8_K blocks (`y`). Per 32-weight
/// sub-block: `sumf += ((d_x * d_y) * (ls - 32)) * sumi` in f32. Panics when the lengths
/// disagree.
pub fn vec_dot_iq4_xs_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_vec_dot_lengths(n, GgmlType::IQ4_XS, x, GgmlType::Q8_K, y);
    let mut sumf = 0f32;
    for (xb, yb) in x.chunks_exact(BlockIQ4XS::BYTES).zip(y.chunks_exact(BlockQ8K::BYTES)) {
        let xb = BlockIQ4XS::read(xb);
        let yb = BlockQ8K::read(yb);
        let d4d8 = xb.d.to_f32() * yb.d;
        for ib in 0..QK_K / 32 {
            let dl = d4d8 * (xb.sub_scale(ib) as i32 - 32) as f32;
            let qs = &xb.qs[16 * ib..16 * ib + 16];
            let q8 = &yb.qs[32 * ib..32 * ib + 32];
            let (mut sumi1, mut sumi2) = (0i32, 0i32);
            for (j, &q) in qs.iter().enumerate() {
                sumi1 += q8[j] as i32 * KVALUES_IQ4NL[(q & 0xF) as usize] as i32;
                sumi2 += q8[j + 16] as i32 * KVALUES_IQ4NL[(q >> 4) as usize] as i32;
            }
            sumf += dl * (sumi1 + sumi2) as f32;
        }
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{dequantize, dequantize_to_vec};

    fn bytes<B: Block>(b: &B) -> Vec<u8> {
        let mut v = vec![0u8; B::BYTES];
        b.write(&mut v);
        v
    }

    #[test]
    fn formats_iq4_nl_known_values() {
        // Weight j (< 16) uses index j, weight 16 + j uses index 15 - j.
        let qs: [u8; 16] = std::array::from_fn(|j| j as u8 | ((15 - j as u8) << 4));
        let b = BlockIQ4NL { d: f16::from_f32(0.5), qs };
        let v = bytes(&b);
        assert_eq!(BlockIQ4NL::read(&v), b);
        let out = dequantize_to_vec(GgmlType::IQ4_NL, &v, 32).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], 0.5 * KVALUES_IQ4NL[j] as f32);
            assert_eq!(out[16 + j], 0.5 * KVALUES_IQ4NL[15 - j] as f32);
        }
        assert_eq!(out[0], -63.5);
        assert_eq!(out[16], 56.5);
    }

    #[test]
    fn formats_iq4_xs_known_values() {
        // Sub-block ib gets 6-bit scale ls = 5 + 7*ib (high bits used from ib = 4 on).
        let ls: [u8; 8] = std::array::from_fn(|ib| 5 + 7 * ib as u8);
        let scales_l: [u8; 4] = std::array::from_fn(|k| (ls[2 * k] & 0xF) | ((ls[2 * k + 1] & 0xF) << 4));
        let scales_h = (0..8).fold(0u16, |a, ib| a | (((ls[ib] >> 4) as u16) << (2 * ib)));
        let idx = |i: usize| (i * 5 + i / 32) % 16;
        let qs: [u8; 128] = std::array::from_fn(|k| {
            let (ib, j) = (k / 16, k % 16);
            idx(32 * ib + j) as u8 | ((idx(32 * ib + 16 + j) as u8) << 4)
        });
        let b = BlockIQ4XS { d: f16::from_f32(0.25), scales_h, scales_l, qs };
        for (ib, &l) in ls.iter().enumerate() {
            assert_eq!(b.sub_scale(ib), l);
        }
        let v = bytes(&b);
        assert_eq!(BlockIQ4XS::read(&v), b);
        let out = dequantize_to_vec(GgmlType::IQ4_XS, &v, QK_K).unwrap();
        for (i, &x) in out.iter().enumerate() {
            let dl = 0.25 * (ls[i / 32] as f32 - 32.0);
            assert_eq!(x, dl * KVALUES_IQ4NL[idx(i)] as f32, "weight {i}");
        }
    }

    #[test]
    fn formats_iq4_wrong_lengths() {
        let mut out = vec![0f32; 256];
        assert!(dequantize(GgmlType::IQ4_NL, &[0u8; 18 * 8], &mut out).is_ok());
        assert!(dequantize(GgmlType::IQ4_NL, &[0u8; 18 * 8 + 2], &mut out).is_err());
        assert!(dequantize(GgmlType::IQ4_XS, &[0u8; 136], &mut out).is_ok());
        assert!(dequantize(GgmlType::IQ4_XS, &[0u8; 135], &mut out).is_err());
        assert!(dequantize(GgmlType::IQ4_XS, &[0u8; 136], &mut out[..255]).is_err());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn formats_iq4_best_index_ties_and_edges() {
        for (i, &v) in KVALUES_IQ4NL.iter().enumerate() {
            assert_eq!(best_index_int8(v as f32) as usize, i);
        }
        for i in 0..15 {
            let (lo, hi) = (KVALUES_IQ4NL[i] as f32, KVALUES_IQ4NL[i + 1] as f32);
            let mid = (lo + hi) / 2.0; // exact: the levels are small integers
            assert_eq!(best_index_int8(mid) as usize, i + 1, "a tie goes up, at {mid}");
            assert_eq!(best_index_int8(mid.next_down()) as usize, i, "just below {mid}");
        }
        assert_eq!(best_index_int8(-1e9), 0);
        assert_eq!(best_index_int8(f32::NEG_INFINITY), 0);
        assert_eq!(best_index_int8(1e9), 15);
        assert_eq!(best_index_int8(0.0), 8);
        assert_eq!(best_index_int8(-0.0), 8);
        assert_eq!(best_index_int8(f32::NAN), 15, "like C: every comparison false");
    }

    #[test]
    fn formats_iq4_nearest_int_rounds_half_to_even() {
        for (x, want) in [(2.5f32, 2), (3.5, 4), (-2.5, -2), (-3.5, -4), (0.49999997, 0), (31.4, 31), (-32.6, -33)] {
            assert_eq!(nearest_int(x), want, "{x}");
        }
        // Out of range / non-finite: no panic, the C bit-trick result.
        assert_eq!(nearest_int(f32::NAN), 0);
        let _ = (nearest_int(f32::INFINITY), nearest_int(-1e30));
    }

    /// Bytes from ggml's `quantize_iq4_nl`, `quantize_row_iq4_nl_ref` (ntry = -1) and
    /// `quantize_iq4_xs` for small ramps.
    #[test]
    fn formats_iq4_quantize_matches_ggml_on_ramps() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 13.0) * 0.37).collect();
        let mut q = [0u8; 36];
        quantize_row_iq4_nl(&x, &mut q);
        assert_eq!(hex(&q), "bcaa6e6e5d4d4d4c3c3b2b2a2a191918070776b024141413131313131302020202020202");
        for (xb, out) in x.chunks_exact(32).zip(q.chunks_exact_mut(18)) {
            let mut qs = [0u8; 16];
            let r = quantize_iq4_impl(xb, &mut qs, -1);
            BlockIQ4NL { d: r.d, qs }.write(out);
        }
        assert_eq!(hex(&q), "bcaa6e6e5d4d4d4c3c3b2b2a2a19191807079fb024241414131313131313130202020202");

        // Sub-block ib is the same ramp scaled by ib + 1: the last has the largest scale, which
        // maps to 6-bit scale 0 (l = -32), with d = -max_scale / 32 > 0 here.
        let x: Vec<f32> = (0..QK_K).map(|i| ((i % 32) as f32 - 13.0) * 0.01 * (i / 32 + 1) as f32).collect();
        let mut q = [0u8; 136];
        quantize_row_iq4_xs(&x, &mut q);
        let ramp = "6e6e5d4d4d4c3c3b2b2a2a1919180707";
        assert_eq!(hex(&q), format!("d30d55008c048c04{}", ramp.repeat(8)));
        let b = BlockIQ4XS::read(&q);
        let ls: Vec<u8> = (0..8).map(|ib| b.sub_scale(ib)).collect();
        assert_eq!(ls, [28, 24, 20, 16, 12, 8, 4, 0]);
        assert!(b.d.to_f32() > 0.0);
    }

    #[test]
    fn formats_iq4_vec_dot_small() {
        // One IQ4_NL block with d = 0.5, all index 15 (113), against a Q8_0 block with d = 2 and
        // q = 1..=32: 0.5 * 2 * 113 * (32 * 33 / 2).
        let x = bytes(&BlockIQ4NL { d: f16::from_f32(0.5), qs: [0xFF; 16] });
        let y = bytes(&BlockQ8_0 { d: f16::from_f32(2.0), qs: std::array::from_fn(|j| j as i8 + 1) });
        assert_eq!(vec_dot_iq4_nl_q8_0(32, &x, &y), 113.0 * 528.0);

        // IQ4_XS: sub-block ib has ls = 33 + ib (dl = d * (ib + 1)), all index 0 (-127); Q8_K all 1.
        let ls: [u8; 8] = std::array::from_fn(|ib| 33 + ib as u8);
        let x = bytes(&BlockIQ4XS {
            d: f16::from_f32(0.25),
            scales_h: (0..8).fold(0u16, |a, ib| a | (((ls[ib] >> 4) as u16) << (2 * ib))),
            scales_l: std::array::from_fn(|k| (ls[2 * k] & 0xF) | ((ls[2 * k + 1] & 0xF) << 4)),
            qs: [0; 128],
        });
        let y = bytes(&BlockQ8K { d: 4.0, qs: [1; QK_K], bsums: [16; 16] });
        // sum over ib of (0.25 * 4) * (ib + 1) * (-127 * 32) = -4064 * 36.
        assert_eq!(vec_dot_iq4_xs_q8_k(QK_K, &x, &y), -4064.0 * 36.0);
    }

    /// The AVX-512 scale search gives the scalar search's sums bit for bit: random blocks at
    /// several magnitudes, blocks whose scaled values land on level midpoints, and every ntry.
    #[test]
    fn iq4_search_tries_simd_matches_scalar() {
        let mut s = 0x2545_F491u32;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        };
        for case in 0..3000 {
            let scale = 10f32.powi(case % 7 - 3);
            let mut xb: [f32; 32] = std::array::from_fn(|_| rnd() * scale);
            if case % 5 == 0 {
                // Values on midpoints between levels once scaled by the first guess.
                let mids = [-113.5f32, -89.5, -57.5, -21.5, 5.0, 30.5, 52.0, 89.5];
                for (j, v) in xb.iter_mut().enumerate().take(8) {
                    *v = mids[j] / 127.0;
                }
                xb[31] = 1.0;
            }
            let weight: [f32; 32] = std::array::from_fn(|j| xb[j] * xb[j]);
            let max = xb.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            if max == 0.0 {
                continue;
            }
            for ntry in 1..=7 {
                let want = search_tries_scalar(&xb, &weight, max, ntry);
                let got = search_tries(&xb, &weight, max, ntry);
                for t in 0..(2 * ntry + 1) as usize {
                    assert_eq!(got.0[t].to_bits(), want.0[t].to_bits(), "case {case} ntry {ntry} try {t} sumqx");
                    assert_eq!(got.1[t].to_bits(), want.1[t].to_bits(), "case {case} ntry {ntry} try {t} sumq2");
                }
            }
        }
    }
}
