//! K-quants: 256-weight super-blocks Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (and Q8_K, the intermediate
//! format ggml uses for dot products).
//!
//! Layouts follow `ggml/src/ggml-common.h`; the dequantization follows `dequantize_row_q*_K` in
//! `ggml/src/ggml-quants.c` operation for operation:
//!
//! * Q2_K: `dl = d * (sc & 0xF)`, `ml = dmin * (sc >> 4)`, then `dl * q - ml`.
//! * Q3_K: `dl = d * (sc - 32)`, then `dl * (q - (hbit ? 0 : 4))`.
//! * Q4_K / Q5_K: `d1 = d * sc`, `m1 = dmin * m`, then `d1 * q - m1`.
//! * Q6_K: `d * sc * q`, evaluated left to right as `(d * sc) * q`.
//!
//! Every product here is exact in f32: an f16 scale has at most 11 significant bits and the
//! integer factors at most 7 + 5 more (|sc| <= 127 and |q| <= 31, or powers of two), which fits
//! in f32's 24. So the only rounding is the final subtraction in Q2_K/Q4_K/Q5_K, ggml's grouping
//! `dl * q - ml` is what must be kept, and even an FMA-contracting C compiler produces the same
//! bits. Q8_K, with its f32 scale, rounds its single product.
//!
//! Quantization (`quantize_row_q*_k`, byte-identical to llama-quantize without an importance
//! matrix) and the scalar `vec_dot_q*_k_q8_k` dot products (ggml-cpu's generic kernels) follow
//! the dequantizers; see the section comments there.

use half::f16;

use super::float::fp32_to_fp16;
use super::{dequantize_blocks, read_array, read_f16, read_i8_array, write_i8_array, Block};
use crate::gguf::GgmlType;
use crate::gguf::QK_K;

/// Bytes of packed 6-bit scales and mins in Q4_K/Q5_K (`K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

/// `block_q2_K` (ggml-common.h): 16 sub-blocks of 16 weights, `x = d*sc*q - dmin*m` with 2-bit
/// `q` and 4-bit `sc`, `m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ2K {
    /// Sub-block scales (low nibble) and mins (high nibble).
    pub scales: [u8; QK_K / 16],
    /// 2-bit quants: byte `32*n + l` holds, at bit `2*j`, weight `128*n + 32*j + l`.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale for the quantized scales.
    pub d: f16,
    /// Super-block scale for the quantized mins.
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

/// `block_q3_K` (ggml-common.h): 16 sub-blocks of 16 weights, `x = d*(sc-32)*q` with 3-bit
/// signed `q` (low two bits plus a high bit that, when clear, subtracts 4) and 6-bit `sc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ3K {
    /// High bits: bit `b` of byte `l` belongs to weight `32*b + l`.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits, laid out as in [`BlockQ2K::qs`].
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales: low nibbles in bytes 0..8, high 2-bit pairs in bytes 8..12.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

/// `block_q4_K` (ggml-common.h): 8 sub-blocks of 32 weights, `x = d*sc*q - dmin*m` with 4-bit
/// `q` and 6-bit `sc`, `m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    /// Super-block scale for the quantized scales.
    pub d: f16,
    /// Super-block scale for the quantized mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins (see [`get_scale_min_k4`]).
    pub scales: [u8; K_SCALE_SIZE],
    /// Byte `32*c + l` holds weight `64*c + l` (low nibble) and `64*c + 32 + l` (high nibble).
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// `block_q5_K` (ggml-common.h): as [`BlockQ4K`] with a fifth bit per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    /// Super-block scale for the quantized scales.
    pub d: f16,
    /// Super-block scale for the quantized mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins (see [`get_scale_min_k4`]).
    pub scales: [u8; K_SCALE_SIZE],
    /// High bits: bit `b` of byte `l` belongs to weight `32*b + l`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, laid out as in [`BlockQ4K::qs`].
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

/// `block_q6_K` (ggml-common.h): 16 sub-blocks of 16 weights, `x = d*sc*(q-32)` with 6-bit `q`
/// and signed 8-bit `sc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    /// Low 4 bits: for half `n` and `l < 32`, byte `64*n + l` holds weights `128*n + l` (low
    /// nibble) and `128*n + 64 + l` (high); byte `64*n + 32 + l` holds `128*n + 32 + l` and
    /// `128*n + 96 + l`.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits: byte `32*n + l`, bits `2*k..2*k+2`, belong to weight `128*n + 32*k + l`.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

/// `block_q8_K` (ggml-common.h): `x = d*q` with an f32 scale; `bsums` are the sums of each 16
/// quants (used by dot products, ignored by dequantization).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    /// Delta (scale), f32.
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sum of quants in groups of 16.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) in Q4_K/Q5_K.
/// Sub-blocks 0..4 keep all six bits in bytes `j` and `j + 4`; sub-blocks 4..8 keep their low
/// nibbles in byte `j + 4` and their top two bits in the top bits of bytes `j - 4` and `j`.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (d, m)
    }
}

/// The inverse of [`get_scale_min_k4`]: packs eight 6-bit scales and mins.
pub fn pack_scale_min_k4(sc: &[u8; 8], m: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut q = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        let (s, mm) = (sc[j] & 63, m[j] & 63);
        if j < 4 {
            q[j] |= s;
            q[j + 4] |= mm;
        } else {
            q[j + 4] = (s & 0xF) | ((mm & 0xF) << 4);
            q[j - 4] |= (s >> 4) << 6;
            q[j] |= (mm >> 4) << 6;
        }
    }
    q
}

/// The sixteen Q3_K sub-block scales, already offset by -32 (range -32..=31). Sub-block `i`
/// takes its low nibble from byte `i % 8` (low nibble for `i < 8`, high otherwise) and its top
/// two bits from byte `8 + i % 4` at bit `2 * (i / 4)`.
#[inline(always)]
pub fn q3k_scales(s: &[u8; 12]) -> [i32; QK_K / 16] {
    std::array::from_fn(|i| {
        let lo = if i < 8 { s[i] & 0xF } else { s[i - 8] >> 4 };
        let hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        (lo | (hi << 4)) as i32 - 32
    })
}

/// The inverse of [`q3k_scales`]: packs sixteen 6-bit scales (already including the +32 bias).
pub fn pack_q3k_scales(sc: &[u8; QK_K / 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (i, &v) in sc.iter().enumerate() {
        let v = v & 63;
        if i < 8 {
            s[i] |= v & 0xF;
        } else {
            s[i - 8] |= (v & 0xF) << 4;
        }
        s[8 + i % 4] |= (v >> 4) << (2 * (i / 4));
    }
    s
}

impl Block for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const QK: usize = QK_K;
    const BYTES: usize = 84;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ2K { scales: read_array(b, 0), qs: read_array(b, 16), d: read_f16(b, 80), dmin: read_f16(b, 82) }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..16].copy_from_slice(&self.scales);
        out[16..80].copy_from_slice(&self.qs);
        out[80..82].copy_from_slice(&self.d.to_le_bytes());
        out[82..84].copy_from_slice(&self.dmin.to_le_bytes());
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK_K] = out.try_into().expect("256 outputs");
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for n in 0..2 {
            let q = &self.qs[32 * n..32 * n + 32];
            for j in 0..4 {
                let shift = 2 * j;
                for h in 0..2 {
                    let is = 8 * n + 2 * j + h;
                    let sc = self.scales[is];
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    let base = 128 * n + 32 * j + 16 * h;
                    for l in 0..16 {
                        let qv = (q[16 * h + l] >> shift) & 3;
                        y[base + l] = dl * qv as f32 - ml;
                    }
                }
            }
        }
    }
}

impl Block for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const QK: usize = QK_K;
    const BYTES: usize = 110;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ3K { hmask: read_array(b, 0), qs: read_array(b, 32), scales: read_array(b, 96), d: read_f16(b, 108) }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..32].copy_from_slice(&self.hmask);
        out[32..96].copy_from_slice(&self.qs);
        out[96..108].copy_from_slice(&self.scales);
        out[108..110].copy_from_slice(&self.d.to_le_bytes());
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK_K] = out.try_into().expect("256 outputs");
        let d_all = self.d.to_f32();
        let scales = q3k_scales(&self.scales);
        for n in 0..2 {
            let q = &self.qs[32 * n..32 * n + 32];
            for j in 0..4 {
                let shift = 2 * j;
                let m = 1u8 << (4 * n + j);
                for h in 0..2 {
                    let is = 8 * n + 2 * j + h;
                    let dl = d_all * scales[is] as f32;
                    let base = 128 * n + 32 * j + 16 * h;
                    for l in 0..16 {
                        let k = 16 * h + l;
                        let lo = ((q[k] >> shift) & 3) as i32;
                        let sub = if self.hmask[k] & m != 0 { 0 } else { 4 };
                        y[base + l] = dl * (lo - sub) as f32;
                    }
                }
            }
        }
    }
}

impl Block for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const QK: usize = QK_K;
    const BYTES: usize = 144;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ4K { d: read_f16(b, 0), dmin: read_f16(b, 2), scales: read_array(b, 4), qs: read_array(b, 16) }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.dmin.to_le_bytes());
        out[4..16].copy_from_slice(&self.scales);
        out[16..144].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK_K] = out.try_into().expect("256 outputs");
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for c in 0..4 {
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &self.qs[32 * c..32 * c + 32];
            let (lo, hi) = y[64 * c..64 * c + 64].split_at_mut(32);
            for l in 0..32 {
                lo[l] = d1 * (q[l] & 0xF) as f32 - m1;
                hi[l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

impl Block for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const QK: usize = QK_K;
    const BYTES: usize = 176;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ5K {
            d: read_f16(b, 0),
            dmin: read_f16(b, 2),
            scales: read_array(b, 4),
            qh: read_array(b, 16),
            qs: read_array(b, 48),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.dmin.to_le_bytes());
        out[4..16].copy_from_slice(&self.scales);
        out[16..48].copy_from_slice(&self.qh);
        out[48..176].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK_K] = out.try_into().expect("256 outputs");
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for c in 0..4 {
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let u1 = 1u8 << (2 * c);
            let u2 = 2u8 << (2 * c);
            let ql = &self.qs[32 * c..32 * c + 32];
            let (lo, hi) = y[64 * c..64 * c + 64].split_at_mut(32);
            for l in 0..32 {
                let h1 = if self.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if self.qh[l] & u2 != 0 { 16 } else { 0 };
                lo[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                hi[l] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

impl Block for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const QK: usize = QK_K;
    const BYTES: usize = 210;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ6K { ql: read_array(b, 0), qh: read_array(b, 128), scales: read_i8_array(b, 192), d: read_f16(b, 208) }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..128].copy_from_slice(&self.ql);
        out[128..192].copy_from_slice(&self.qh);
        write_i8_array(out, 192, &self.scales);
        out[208..210].copy_from_slice(&self.d.to_le_bytes());
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK_K] = out.try_into().expect("256 outputs");
        let d = self.d.to_f32();
        for n in 0..2 {
            let ql = &self.ql[64 * n..64 * n + 64];
            let qh = &self.qh[32 * n..32 * n + 32];
            let sc = &self.scales[8 * n..8 * n + 8];
            let y = &mut y[128 * n..128 * n + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                // (d * sc) first, then * q: the same two roundings as ggml.
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

impl Block for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const QK: usize = QK_K;
    const BYTES: usize = 292;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        let bs: [u8; 32] = read_array(b, 260);
        BlockQ8K {
            d: f32::from_le_bytes(read_array(b, 0)),
            qs: read_i8_array(b, 4),
            bsums: std::array::from_fn(|i| i16::from_le_bytes([bs[2 * i], bs[2 * i + 1]])),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.d.to_le_bytes());
        write_i8_array(out, 4, &self.qs);
        for (i, s) in self.bsums.iter().enumerate() {
            out[260 + 2 * i..262 + 2 * i].copy_from_slice(&s.to_le_bytes());
        }
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK_K] = out.try_into().expect("256 outputs");
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = self.d * q as f32;
        }
    }
}

/// `dequantize_row_q2_K`: `blocks` holds whole [`BlockQ2K`]s, `out` one f32 per weight.
pub fn dequantize_row_q2_k(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockQ2K>(blocks, out)
}

/// `dequantize_row_q3_K`: `blocks` holds whole [`BlockQ3K`]s, `out` one f32 per weight.
pub fn dequantize_row_q3_k(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockQ3K>(blocks, out)
}

/// `dequantize_row_q4_K`: `blocks` holds whole [`BlockQ4K`]s, `out` one f32 per weight.
pub fn dequantize_row_q4_k(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockQ4K>(blocks, out)
}

/// `dequantize_row_q5_K`: `blocks` holds whole [`BlockQ5K`]s, `out` one f32 per weight.
pub fn dequantize_row_q5_k(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockQ5K>(blocks, out)
}

/// `dequantize_row_q6_K`: `blocks` holds whole [`BlockQ6K`]s, `out` one f32 per weight.
pub fn dequantize_row_q6_k(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockQ6K>(blocks, out)
}

/// `dequantize_row_q8_K`: `blocks` holds whole [`BlockQ8K`]s, `out` one f32 per weight.
pub fn dequantize_row_q8_k(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockQ8K>(blocks, out)
}

// ============================================================================================
// Quantization (ggml-quants.c, `quantize_row_q*_K_ref`)
// ============================================================================================
//
// llama-quantize calls `ggml_quantize_chunk`, which for the K-quants calls `quantize_q*_K`; with
// no importance matrix those run `quantize_row_q*_K_ref` over the whole chunk. Blocks are
// independent, so quantizing a tensor row by row, or all at once, gives the same bytes.
//
// Everything below mirrors the C code operation for operation: the same f32 arithmetic in the
// same order (C evaluates `a*b*c` as `(a*b)*c` and `a*b + c - d` as `((a*b) + c) - d`; ggml-base
// is built without FMA contraction and Rust never contracts), the same strict comparisons (the
// first maximum wins ties), the same integer narrowing (`as u8` / `as i8` wrap like C's
// conversions), and quants kept from the first search when a rescaled sub-block scale is zero.

/// `GROUP_MAX_EPS` in ggml-quants.c: groups whose largest magnitude is below this are all-zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: adds `1.5 * 2^23` so the FPU rounds to nearest, ties to even, and reads
/// the integer back from the mantissa. Exact for `|fval| <= 4194303`; outside that range (or for
/// NaN) it returns what the C code returns (ggml only asserts the range in debug builds).
#[inline(always)]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// ggml's `make_qx_quants` without importance weights: signed quants `L[i] = l + nmax` with
/// `l` in `-nmax..nmax`, for a scale searched around `-nmax / max` (max = the value of largest
/// magnitude). `rmse_type` picks the error weights: 1 = x², 2 = 1, 3 = |x|, other = sqrt|x|;
/// 0 returns the plain scale, a negative type returns early after one weighted fit.
pub fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], rmse_type: i32) -> f32 {
    let n = x.len();
    debug_assert_eq!(l_out.len(), n);
    let mut max = 0f32;
    let mut amax = 0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let iscale = -nmaxf / max;
    if rmse_type == 0 {
        for (l, &xi) in l_out.iter_mut().zip(x) {
            let q = nearest_int(iscale * xi);
            *l = (nmax + q.clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let (rmse_type, return_early) = if rmse_type < 0 { (-rmse_type, true) } else { (rmse_type, false) };
    let weight = |xi: f32| -> f32 {
        match rmse_type {
            1 => xi * xi,
            2 => 1.0,
            3 => xi.abs(),
            _ => xi.abs().sqrt(),
        }
    };
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for (l, &xi) in l_out.iter_mut().zip(x) {
        let q = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        *l = (q + nmax) as i8;
        let w = weight(xi);
        let qf = q as f32;
        sumlx += w * xi * qf;
        suml2 += w * qf * qf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 { 0.5 * (scale + 1.0 / iscale) } else { 1.0 / iscale };
    }
    let mut best = scale * sumlx;
    // The 18 tries' sums first (independent of each other), then llama.cpp's sequential choice;
    // the quants are those of the last try that improved, as when it rewrote them each time.
    let mut iscales = [0f32; QX_TRIES];
    for (k, is) in (-9i32..=9).filter(|&is| is != 0).enumerate() {
        iscales[k] = -(nmaxf + 0.1 * is as f32) / max;
    }
    let (lx, l2) = qx_try_sums(nmax, x, &iscales, weight);
    let mut chosen = None;
    for k in 0..QX_TRIES {
        if l2[k] > 0.0 && lx[k] * lx[k] > best * l2[k] {
            chosen = Some(iscales[k]);
            scale = lx[k] / l2[k];
            best = scale * lx[k];
        }
    }
    if let Some(iscale) = chosen {
        for (l, &xi) in l_out.iter_mut().zip(x) {
            let q = nearest_int(iscale * xi);
            *l = (nmax + q.clamp(-nmax, nmax - 1)) as i8;
        }
    }
    scale
}

/// The scale tries of [`make_qx_quants`]: `is = -9..=9` without 0.
const QX_TRIES: usize = 18;

/// `(sumlx, sumlq2)` of every try `iscales[k]` of [`make_qx_quants`], each summed in `x`'s order:
/// with AVX-512, one try per lane (the same operations per lane as the scalar loop, so the
/// same bits, `qx_try_sums_simd_matches_scalar`), else the scalar loop.
fn qx_try_sums(nmax: i32, x: &[f32], iscales: &[f32; QX_TRIES], weight: impl Fn(f32) -> f32) -> ([f32; QX_TRIES], [f32; QX_TRIES]) {
    #[cfg(target_arch = "x86_64")]
    if x.len() <= 256 && (x86_qx::available() || x86_qx::available_avx2()) {
        let mut w = [0f32; 256];
        for (wi, &xi) in w.iter_mut().zip(x) {
            *wi = weight(xi);
        }
        // SAFETY: `available` confirmed AVX-512 F/BW/VL/DQ, `available_avx2` AVX2.
        return unsafe {
            if x86_qx::available() {
                x86_qx::try_sums(nmax, x, &w[..x.len()], iscales)
            } else {
                x86_qx::try_sums_avx2(nmax, x, &w[..x.len()], iscales)
            }
        };
    }
    qx_try_sums_scalar(nmax, x, iscales, weight)
}

fn qx_try_sums_scalar(nmax: i32, x: &[f32], iscales: &[f32; QX_TRIES], weight: impl Fn(f32) -> f32) -> ([f32; QX_TRIES], [f32; QX_TRIES]) {
    let (mut lx, mut l2) = ([0f32; QX_TRIES], [0f32; QX_TRIES]);
    for k in 0..QX_TRIES {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &xi in x {
            let qf = nearest_int(iscales[k] * xi).clamp(-nmax, nmax - 1) as f32;
            let w = weight(xi);
            sumlx += w * xi * qf;
            suml2 += w * qf * qf;
        }
        lx[k] = sumlx;
        l2[k] = suml2;
    }
    (lx, l2)
}

#[cfg(target_arch = "x86_64")]
mod x86_qx {
    use std::arch::x86_64::*;

    use super::QX_TRIES;

    pub(super) fn available() -> bool {
        crate::kernels::Isa::Avx512.is_available()
    }

    pub(super) fn available_avx2() -> bool {
        crate::kernels::Isa::Avx2.is_available()
    }

    /// [`try_sums`] with AVX2: tries 0..8, 8..16 and 16..18 in three registers.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn try_sums_avx2(nmax: i32, x: &[f32], w: &[f32], iscales: &[f32; QX_TRIES]) -> ([f32; QX_TRIES], [f32; QX_TRIES]) {
        let mut pad = [0f32; 24];
        pad[..QX_TRIES].copy_from_slice(iscales);
        let is: [__m256; 3] = std::array::from_fn(|h| _mm256_loadu_ps(pad.as_ptr().add(8 * h)));
        let (lo, hi) = (_mm256_set1_epi32(-nmax), _mm256_set1_epi32(nmax - 1));
        let (magic, mant, half) = (_mm256_set1_ps(12_582_912.0), _mm256_set1_epi32(0x007f_ffff), _mm256_set1_epi32(0x0040_0000));
        let mut lx = [_mm256_setzero_ps(); 3];
        let mut l2 = [_mm256_setzero_ps(); 3];
        for (&xi, &wi) in x.iter().zip(w) {
            let (xv, wv) = (_mm256_set1_ps(xi), _mm256_set1_ps(wi));
            let wx = _mm256_mul_ps(wv, xv);
            for h in 0..3 {
                let v = _mm256_add_ps(_mm256_mul_ps(is[h], xv), magic);
                let q = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(v), mant), half);
                let qf = _mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(q, lo), hi));
                lx[h] = _mm256_add_ps(lx[h], _mm256_mul_ps(wx, qf));
                l2[h] = _mm256_add_ps(l2[h], _mm256_mul_ps(_mm256_mul_ps(wv, qf), qf));
            }
        }
        let (mut a, mut b) = ([0f32; 24], [0f32; 24]);
        for h in 0..3 {
            _mm256_storeu_ps(a.as_mut_ptr().add(8 * h), lx[h]);
            _mm256_storeu_ps(b.as_mut_ptr().add(8 * h), l2[h]);
        }
        (a[..QX_TRIES].try_into().expect("18"), b[..QX_TRIES].try_into().expect("18"))
    }

    /// Tries 0..16 in one register and 16..18 in another; `nearest_int` is the same magic
    /// addition and mantissa read, the clamp the same integer clamp.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/DQ.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn try_sums(nmax: i32, x: &[f32], w: &[f32], iscales: &[f32; QX_TRIES]) -> ([f32; QX_TRIES], [f32; QX_TRIES]) {
        let mut pad = [0f32; 32];
        pad[..QX_TRIES].copy_from_slice(iscales);
        let is = [_mm512_loadu_ps(pad.as_ptr()), _mm512_loadu_ps(pad.as_ptr().add(16))];
        let (lo, hi) = (_mm512_set1_epi32(-nmax), _mm512_set1_epi32(nmax - 1));
        let (magic, mant, half) = (_mm512_set1_ps(12_582_912.0), _mm512_set1_epi32(0x007f_ffff), _mm512_set1_epi32(0x0040_0000));
        let mut lx = [_mm512_setzero_ps(); 2];
        let mut l2 = [_mm512_setzero_ps(); 2];
        for (&xi, &wi) in x.iter().zip(w) {
            let (xv, wv) = (_mm512_set1_ps(xi), _mm512_set1_ps(wi));
            let wx = _mm512_mul_ps(wv, xv);
            for h in 0..2 {
                let v = _mm512_add_ps(_mm512_mul_ps(is[h], xv), magic);
                let q = _mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(v), mant), half);
                let qf = _mm512_cvtepi32_ps(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi));
                lx[h] = _mm512_add_ps(lx[h], _mm512_mul_ps(wx, qf));
                l2[h] = _mm512_add_ps(l2[h], _mm512_mul_ps(_mm512_mul_ps(wv, qf), qf));
            }
        }
        let (mut a, mut b) = ([0f32; 32], [0f32; 32]);
        for h in 0..2 {
            _mm512_storeu_ps(a.as_mut_ptr().add(16 * h), lx[h]);
            _mm512_storeu_ps(b.as_mut_ptr().add(16 * h), l2[h]);
        }
        (a[..QX_TRIES].try_into().expect("18"), b[..QX_TRIES].try_into().expect("18"))
    }
}

/// ggml's `make_q3_quants`: like [`make_qx_quants`] with x² weights, but refined by up to five
/// coordinate-descent passes that move one quant at a time while the weighted fit improves.
/// Returns the scale; `L[i] = l + nmax`.
pub fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8], do_rmse: bool) -> f32 {
    debug_assert_eq!(l_out.len(), x.len());
    let mut max = 0f32;
    let mut amax = 0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let mut sumlx = 0f32;
        let mut suml2 = 0f32;
        for (l, &xi) in l_out.iter_mut().zip(x) {
            let q = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
            *l = q as i8;
            let w = xi * xi;
            let qf = q as f32;
            sumlx += w * xi * qf;
            suml2 += w * qf * qf;
        }
        for _itry in 0..5 {
            let mut n_changed = 0;
            for (l, &xi) in l_out.iter_mut().zip(x) {
                let w = xi * xi;
                let lf = *l as f32;
                let mut slx = sumlx - w * xi * lf;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * lf * lf;
                    let new_l = nearest_int(xi * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != *l as i32 {
                        let nf = new_l as f32;
                        slx += w * xi * nf;
                        sl2 += w * nf * nf;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            *l = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for l in l_out.iter_mut() {
            *l += nmax as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for (l, &xi) in l_out.iter_mut().zip(x) {
        let q = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        *l = (q + nmax) as i8;
    }
    1.0 / iscale
}

/// ggml's `make_qkx2_quants`: unsigned quants `0..=nmax` for `x ≈ scale * L - the_min`. Starts
/// from the min/max fit, then tries `nstep + 1` candidate inverse scales
/// `(rmin + rdelta * is + nmax) / (max - min)`, each followed by a weighted least-squares fit of
/// scale and min, keeping the best by weighted absolute (`use_mad`) or squared error.
/// Returns `(scale, the_min)`; `laux` is scratch of the same length as `x`.
#[allow(clippy::too_many_arguments)]
pub fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    make_qkx2_quants_with(true, nmax, x, weights, l_out, laux, rmin, rdelta, nstep, use_mad)
}

/// [`make_qkx2_quants`], with the AVX-512 tries allowed (where the CPU has them) or not.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn make_qkx2_quants_with(
    simd: bool,
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    debug_assert!(weights.len() == n && l_out.len() == n && laux.len() == n);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = l.clamp(0, nmax) as u8;
        let diff = scale * l_out[i] as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    #[cfg(target_arch = "x86_64")]
    if simd && n <= 32 && nstep < 32 && (x86_qkx2::available() || x86_qkx2::available_avx2()) {
        // The tries from `first` on, one per lane, with the current `min`; the first that
        // beats the best error wins as in the sequential loop, and since a win changes `min`
        // (which every later try reads), the later tries are run again from there.
        let mut first = 0usize;
        while first <= nstep as usize {
            let mut iscales = [0f32; 32];
            for (k, v) in iscales.iter_mut().enumerate().take(nstep as usize + 1 - first) {
                *v = (rmin + rdelta * (first + k) as f32 + nmaxf) / (max - min);
            }
            // SAFETY: `available` confirmed AVX-512 F/BW/VL/DQ, `available_avx2` AVX2.
            let tries = unsafe {
                if x86_qkx2::available() {
                    x86_qkx2::tries(nmax, x, weights, &iscales, min, sum_w, sum_x, use_mad)
                } else {
                    x86_qkx2::tries_avx2(nmax, x, weights, &iscales, min, sum_w, sum_x, use_mad)
                }
            };
            let next = (0..=nstep as usize - first).find(|&k| tries[k].valid && tries[k].error < best_error);
            let Some(k) = next else { break };
            let t = tries[k];
            for i in 0..n {
                laux[i] = nearest_int(iscales[k] * (x[i] - min)).clamp(0, nmax) as u8;
            }
            best_error = t.error;
            scale = t.scale;
            min = t.min;
            l_out.copy_from_slice(laux);
            first += k + 1;
        }
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let mut sum_l = 0f32;
        let mut sum_l2 = 0f32;
        let mut sum_xl = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l_out.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The tries of [`make_qkx2_quants`] in AVX-512 lanes: lane `k` runs try `k` through the scalar
/// loop's operations in its order (the first pass's sums, the least-squares scale and min with
/// the same divisions and the same `min > 0` correction, the second pass's error), so every
/// lane's figures are the scalar ones bit for bit (`qkx2_tries_simd_matches_scalar`).
#[cfg(target_arch = "x86_64")]
mod x86_qkx2 {
    use std::arch::x86_64::*;

    use super::nearest_int;

    pub(super) fn available() -> bool {
        crate::kernels::Isa::Avx512.is_available()
    }

    pub(super) fn available_avx2() -> bool {
        crate::kernels::Isa::Avx2.is_available()
    }

    /// [`tries`] with AVX2, eight tries per register; a lane's compare result is an all-ones
    /// mask, applied with a blend where the AVX-512 code uses a mask register.
    ///
    /// # Safety
    /// The CPU must support AVX2; `x.len() <= 32`.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tries_avx2(
        nmax: i32,
        x: &[f32],
        weights: &[f32],
        iscales: &[f32; 32],
        min: f32,
        sum_w: f32,
        sum_x: f32,
        use_mad: bool,
    ) -> [Try; 32] {
        let (magic, mant, half) = (_mm256_set1_ps(12_582_912.0), _mm256_set1_epi32(0x007f_ffff), _mm256_set1_epi32(0x0040_0000));
        let (zero_i, nmax_v) = (_mm256_setzero_si256(), _mm256_set1_epi32(nmax));
        let (zero, abs_mask) = (_mm256_setzero_ps(), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
        let mut out = [Try::default(); 32];
        for h in 0..4 {
            let is = _mm256_loadu_ps(iscales.as_ptr().add(8 * h));
            let quant = |xi: f32| {
                let v = _mm256_add_ps(_mm256_mul_ps(is, _mm256_set1_ps(xi - min)), magic);
                let l = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(v), mant), half);
                _mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(l, zero_i), nmax_v))
            };
            let (mut sl, mut sl2, mut sxl) = (zero, zero, zero);
            for (&xi, &wi) in x.iter().zip(weights) {
                let lf = quant(xi);
                let w = _mm256_set1_ps(wi);
                let wl = _mm256_mul_ps(w, lf);
                sl = _mm256_add_ps(sl, wl);
                sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(wl, lf));
                sxl = _mm256_add_ps(sxl, _mm256_mul_ps(wl, _mm256_set1_ps(xi)));
            }
            let (sw, sx) = (_mm256_set1_ps(sum_w), _mm256_set1_ps(sum_x));
            let det = _mm256_sub_ps(_mm256_mul_ps(sw, sl2), _mm256_mul_ps(sl, sl));
            let valid = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(det, zero));
            let mut scale = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sw, sxl), _mm256_mul_ps(sx, sl)), det);
            let mut mn = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sl2, sx), _mm256_mul_ps(sl, sxl)), det);
            let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(mn, zero);
            mn = _mm256_blendv_ps(mn, zero, pos);
            scale = _mm256_blendv_ps(scale, _mm256_div_ps(sxl, sl2), pos);
            let mut err = zero;
            for (&xi, &wi) in x.iter().zip(weights) {
                let lf = quant(xi);
                let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, lf), mn), _mm256_set1_ps(xi));
                let e = if use_mad { _mm256_and_ps(diff, abs_mask) } else { _mm256_mul_ps(diff, diff) };
                err = _mm256_add_ps(err, _mm256_mul_ps(_mm256_set1_ps(wi), e));
            }
            let (mut e, mut sc, mut m) = ([0f32; 8], [0f32; 8], [0f32; 8]);
            _mm256_storeu_ps(e.as_mut_ptr(), err);
            _mm256_storeu_ps(sc.as_mut_ptr(), scale);
            _mm256_storeu_ps(m.as_mut_ptr(), mn);
            for k in 0..8 {
                out[8 * h + k] = Try { valid: valid & (1 << k) != 0, error: e[k], scale: sc[k], min: m[k] };
            }
        }
        out
    }

    /// One try's outcome: whether its determinant was positive, and then its fit and error.
    #[derive(Clone, Copy, Default)]
    pub(super) struct Try {
        pub valid: bool,
        pub error: f32,
        pub scale: f32,
        pub min: f32,
    }

    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/DQ; `x.len() <= 32`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tries(
        nmax: i32,
        x: &[f32],
        weights: &[f32],
        iscales: &[f32; 32],
        min: f32,
        sum_w: f32,
        sum_x: f32,
        use_mad: bool,
    ) -> [Try; 32] {
        let _ = nearest_int; // the scalar definition the lanes follow
        let (magic, mant, half) = (_mm512_set1_ps(12_582_912.0), _mm512_set1_epi32(0x007f_ffff), _mm512_set1_epi32(0x0040_0000));
        let (zero_i, nmax_v) = (_mm512_setzero_si512(), _mm512_set1_epi32(nmax));
        let mut out = [Try::default(); 32];
        for h in 0..2 {
            let is = _mm512_loadu_ps(iscales.as_ptr().add(16 * h));
            let quant = |xi: f32| {
                let v = _mm512_add_ps(_mm512_mul_ps(is, _mm512_set1_ps(xi - min)), magic);
                let l = _mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(v), mant), half);
                _mm512_cvtepi32_ps(_mm512_min_epi32(_mm512_max_epi32(l, zero_i), nmax_v))
            };
            let (mut sl, mut sl2, mut sxl) = (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps());
            for (&xi, &wi) in x.iter().zip(weights) {
                let lf = quant(xi);
                let w = _mm512_set1_ps(wi);
                let wl = _mm512_mul_ps(w, lf);
                sl = _mm512_add_ps(sl, wl);
                sl2 = _mm512_add_ps(sl2, _mm512_mul_ps(wl, lf));
                sxl = _mm512_add_ps(sxl, _mm512_mul_ps(wl, _mm512_set1_ps(xi)));
            }
            let (sw, sx) = (_mm512_set1_ps(sum_w), _mm512_set1_ps(sum_x));
            let det = _mm512_sub_ps(_mm512_mul_ps(sw, sl2), _mm512_mul_ps(sl, sl));
            let valid = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(det, _mm512_setzero_ps());
            let mut scale = _mm512_div_ps(_mm512_sub_ps(_mm512_mul_ps(sw, sxl), _mm512_mul_ps(sx, sl)), det);
            let mut mn = _mm512_div_ps(_mm512_sub_ps(_mm512_mul_ps(sl2, sx), _mm512_mul_ps(sl, sxl)), det);
            let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(mn, _mm512_setzero_ps());
            mn = _mm512_mask_mov_ps(mn, pos, _mm512_setzero_ps());
            scale = _mm512_mask_mov_ps(scale, pos, _mm512_div_ps(sxl, sl2));
            let mut err = _mm512_setzero_ps();
            for (&xi, &wi) in x.iter().zip(weights) {
                let lf = quant(xi);
                let diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(scale, lf), mn), _mm512_set1_ps(xi));
                let e = if use_mad { _mm512_abs_ps(diff) } else { _mm512_mul_ps(diff, diff) };
                err = _mm512_add_ps(err, _mm512_mul_ps(_mm512_set1_ps(wi), e));
            }
            let (mut e, mut sc, mut m) = ([0f32; 16], [0f32; 16], [0f32; 16]);
            _mm512_storeu_ps(e.as_mut_ptr(), err);
            _mm512_storeu_ps(sc.as_mut_ptr(), scale);
            _mm512_storeu_ps(m.as_mut_ptr(), mn);
            for k in 0..16 {
                out[16 * h + k] = Try { valid: valid & (1 << k) != 0, error: e[k], scale: sc[k], min: m[k] };
            }
        }
        out
    }
}

/// Packs 256 two-bit values as Q2_K/Q3_K `qs`: byte `32*n + l` holds, at bit `2*j`, value
/// `128*n + 32*j + l`. Values are truncated to their two low bits' worth like the C `|` does.
#[inline(always)]
fn pack_2bit(l: &[u8; QK_K]) -> [u8; QK_K / 4] {
    let mut qs = [0u8; QK_K / 4];
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] = l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
    qs
}

/// Asserts that `src` and `dst` describe the same whole number of `B` blocks.
#[inline]
fn check_quantize_lengths<B: Block>(src: &[f32], dst: &[u8]) {
    assert!(
        src.len().is_multiple_of(B::QK) && src.len() / B::QK * B::BYTES == dst.len(),
        "{}: {} weights cannot quantize into {} bytes",
        B::TYPE.name(),
        src.len(),
        dst.len()
    );
}

/// `quantize_row_q2_K_ref` for one super-block.
pub fn quantize_block_q2_k(x: &[f32; QK_K]) -> BlockQ2K {
    const Q4SCALE: f32 = 15.0;
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    let mut mins = [0f32; QK_K / 16];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, &xi) in weights.iter_mut().zip(xs) {
            *w = xi.abs();
        }
        let (scale, min) =
            make_qkx2_quants(3, xs, &weights, &mut l[16 * j..16 * j + 16], &mut laux, -0.5, 0.1, 15, true);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }

    let mut sc = [0u8; QK_K / 16];
    let d = if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (s, &v) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v) as u8;
        }
        fp32_to_fp16(max_scale / Q4SCALE)
    } else {
        fp32_to_fp16(0.0)
    };
    let dmin = if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (s, &m) in sc.iter_mut().zip(&mins) {
            *s |= (nearest_int(iscale * m) << 4) as u8;
        }
        fp32_to_fp16(max_min / Q4SCALE)
    } else {
        fp32_to_fp16(0.0)
    };

    // Requantize with the rounded scales; a sub-block whose scale rounds to zero keeps the
    // quants of the first search.
    for j in 0..QK_K / 16 {
        let dl = d.to_f32() * (sc[j] & 0xF) as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * (sc[j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + dm) / dl);
            l[16 * j + ii] = q.clamp(0, 3) as u8;
        }
    }

    BlockQ2K { scales: sc, qs: pack_2bit(&l), d, dmin }
}

/// `quantize_row_q3_K_ref` for one super-block.
pub fn quantize_block_q3_k(x: &[f32; QK_K]) -> BlockQ3K {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0f32;
    let mut amax = 0f32;
    for j in 0..QK_K / 16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16], true);
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }

    let mut packed = [0u8; 12];
    let d = if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &s) in scales.iter().enumerate() {
            // C stores nearest_int(..) in an int8_t before clamping.
            let q = nearest_int(iscale * s) as i8 as i32;
            let v = (q.clamp(-32, 31) + 32) as u8;
            if j < 8 {
                packed[j] = v & 0xF;
            } else {
                packed[j - 8] |= (v & 0xF) << 4;
            }
            packed[8 + j % 4] |= (v >> 4) << (2 * (j / 4));
        }
        fp32_to_fp16(1.0 / iscale)
    } else {
        fp32_to_fp16(0.0)
    };

    let sc = q3k_scales(&packed);
    for j in 0..QK_K / 16 {
        let dl = d.to_f32() * sc[j] as f32;
        if dl == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / dl).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }

    // The high bit of weight j goes to bit j / 32 of hmask[j % 32].
    let mut hmask = [0u8; QK_K / 8];
    let mut low = [0u8; QK_K];
    for j in 0..QK_K {
        let mut v = l[j];
        if v > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            v -= 4;
        }
        low[j] = v as u8;
    }
    BlockQ3K { hmask, qs: pack_2bit(&low), scales: packed, d }
}

/// The Q4_K/Q5_K sub-block search: for each 32-weight sub-block, weights `av_x + |x|` with
/// `av_x` the sub-block's RMS, then [`make_qkx2_quants`]. Returns `(scales, mins)`.
fn q45_k_subblocks(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
) -> ([f32; QK_K / 32], [f32; QK_K / 32]) {
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut scales = [0f32; QK_K / 32];
    let mut mins = [0f32; QK_K / 32];
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &xi in xs {
            sum_x2 += xi * xi;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &xi) in weights.iter_mut().zip(xs) {
            *w = av_x + xi.abs();
        }
        (scales[j], mins[j]) =
            make_qkx2_quants(nmax, xs, &weights, &mut l[32 * j..32 * j + 32], &mut laux, rmin, 0.1, nstep, false);
    }
    (scales, mins)
}

/// The shared tail of Q4_K/Q5_K: 6-bit scales and mins relative to the largest, the f16 super
/// scales, and the requantization with the rounded scales into `l` (values `0..=nmax`).
fn q45_k_finish(
    x: &[f32; QK_K],
    nmax: i32,
    scales: &[f32; QK_K / 32],
    mins: &[f32; QK_K / 32],
    l: &mut [u8; QK_K],
) -> (f16, f16, [u8; K_SCALE_SIZE]) {
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..QK_K / 32 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..QK_K / 32 {
        // C stores nearest_int(..) in a uint8_t, then takes MIN(63, ..).
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = fp32_to_fp16(max_scale / 63.0);
    let dmin = fp32_to_fp16(max_min / 63.0);

    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dl = d.to_f32() * sc as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / dl);
            l[32 * j + ii] = q.clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed)
}

/// `quantize_row_q4_K_ref` for one super-block.
pub fn quantize_block_q4_k(x: &[f32; QK_K]) -> BlockQ4K {
    let mut l = [0u8; QK_K];
    let (scales, mins) = q45_k_subblocks(x, 15, -1.0, 20, &mut l);
    let (d, dmin, packed) = q45_k_finish(x, 15, &scales, &mins, &mut l);
    let mut qs = [0u8; QK_K / 2];
    for c in 0..QK_K / 64 {
        for k in 0..32 {
            qs[32 * c + k] = l[64 * c + k] | (l[64 * c + k + 32] << 4);
        }
    }
    BlockQ4K { d, dmin, scales: packed, qs }
}

/// `quantize_row_q5_K_ref` for one super-block.
pub fn quantize_block_q5_k(x: &[f32; QK_K]) -> BlockQ5K {
    let mut l = [0u8; QK_K];
    let (scales, mins) = q45_k_subblocks(x, 31, -0.5, 15, &mut l);
    let (d, dmin, packed) = q45_k_finish(x, 31, &scales, &mins, &mut l);
    let mut qh = [0u8; QK_K / 8];
    let mut qs = [0u8; QK_K / 2];
    for c in 0..QK_K / 64 {
        let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for k in 0..32 {
            let mut l1 = l[64 * c + k];
            if l1 > 15 {
                l1 -= 16;
                qh[k] |= m1;
            }
            let mut l2 = l[64 * c + k + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[k] |= m2;
            }
            qs[32 * c + k] = l1 | (l2 << 4);
        }
    }
    BlockQ5K { d, dmin, scales: packed, qh, qs }
}

/// `quantize_row_q6_K_ref` for one super-block.
pub fn quantize_block_q6_k(x: &[f32; QK_K]) -> BlockQ6K {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0f32;
    let mut max_abs_scale = 0f32;
    for ib in 0..QK_K / 16 {
        let scale = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16], 1);
        scales[ib] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        return BlockQ6K { ql: [0; QK_K / 2], qh: [0; QK_K / 4], scales: [0; QK_K / 16], d: fp32_to_fp16(0.0) };
    }

    let iscale = -128.0 / max_scale;
    let d = fp32_to_fp16(1.0 / iscale);
    // C: MIN(127, nearest_int(..)) stored in an int8_t.
    let sc: [i8; QK_K / 16] = std::array::from_fn(|ib| nearest_int(iscale * scales[ib]).min(127) as i8);

    for j in 0..QK_K / 16 {
        let dl = d.to_f32() * sc[j] as f32;
        if dl == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / dl).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }

    let l = l.map(|v| v as u8);
    let mut ql = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 4];
    for j in (0..QK_K).step_by(128) {
        let (ql, qh) = (&mut ql[j / 2..j / 2 + 64], &mut qh[j / 4..j / 4 + 32]);
        for k in 0..32 {
            let (a, b, c, e) = (l[j + k], l[j + k + 32], l[j + k + 64], l[j + k + 96]);
            ql[k] = (a & 0xF) | ((c & 0xF) << 4);
            ql[k + 32] = (b & 0xF) | ((e & 0xF) << 4);
            qh[k] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
        }
    }
    BlockQ6K { ql, qh, scales: sc, d }
}

/// `quantize_row_q8_K_ref` for one super-block: `d = max / -127` (max = the value of largest
/// magnitude), `q = min(127, nearest_int(x / d))`, and the 16-quant sums in `bsums`. An all-zero
/// block gets `d = 0` and zero quants (and zero `bsums`, which ggml leaves unwritten).
pub fn quantize_block_q8_k(x: &[f32; QK_K]) -> BlockQ8K {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax == 0.0 {
        return BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] };
    }
    let iscale = -127.0 / max;
    let qs: [i8; QK_K] = std::array::from_fn(|j| nearest_int(iscale * x[j]).min(127) as i8);
    let bsums = std::array::from_fn(|j| qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum::<i32>() as i16);
    BlockQ8K { d: 1.0 / iscale, qs, bsums }
}

/// A row quantizer: whole blocks of f32 in, block bytes out (panics on a length mismatch).
pub type QuantizeRowFn = fn(&[f32], &mut [u8]);

/// A row dot product: `n` weights, the row of weight blocks, the row of activation blocks.
pub type VecDotFn = fn(usize, &[u8], &[u8]) -> f32;

/// Quantizes `src` (whole super-blocks) into `dst` with `quantize_one`.
#[inline]
fn quantize_blocks<B: Block>(src: &[f32], dst: &mut [u8], quantize_one: impl Fn(&[f32; QK_K]) -> B) {
    check_quantize_lengths::<B>(src, dst);
    for (x, out) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(B::BYTES)) {
        quantize_one(x.try_into().expect("256 weights")).write(out);
    }
}

/// `quantize_row_q2_K_ref` (what `quantize_q2_K` runs without an importance matrix): `src`
/// holds whole 256-weight super-blocks, `dst` receives 84 bytes per block. Panics when the
/// lengths disagree. Input must be finite (callers reject NaN/inf first; non-finite values do not
/// panic but give meaningless blocks, as in ggml).
pub fn quantize_row_q2_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q2_k)
}

/// `quantize_row_q3_K_ref`; see [`quantize_row_q2_k`] (110 bytes per block).
pub fn quantize_row_q3_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q3_k)
}

/// `quantize_row_q4_K_ref`; see [`quantize_row_q2_k`] (144 bytes per block).
pub fn quantize_row_q4_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q4_k)
}

/// `quantize_row_q5_K_ref`; see [`quantize_row_q2_k`] (176 bytes per block).
pub fn quantize_row_q5_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q5_k)
}

/// `quantize_row_q6_K_ref`; see [`quantize_row_q2_k`] (210 bytes per block).
pub fn quantize_row_q6_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q6_k)
}

/// `quantize_row_q8_K_ref` (also ggml-cpu's `from_float` for Q8_K on every architecture we
/// target): 292 bytes per block, `bsums` filled.
pub fn quantize_row_q8_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q8_k)
}

// ============================================================================================
// Scalar dot products (ggml-cpu/quants.c, `ggml_vec_dot_q*_K_q8_K_generic`)
// ============================================================================================
//
// Each returns `sum_i x_i * y_i` over `n` weights, with `x` a row of K-quant blocks and `y` the
// matching row of Q8_K blocks. Integer products are summed exactly per block; the float
// accumulation follows the generic C code (eight lane sums for Q3_K..Q6_K, added at the very
// end), so the result equals ggml's generic kernel bit for bit.

/// Checks the row lengths and returns the number of super-blocks.
#[inline]
fn check_dot_lengths<B: Block>(n: usize, x: &[u8], y: &[u8]) -> usize {
    assert!(n.is_multiple_of(QK_K), "{} vec_dot: n = {n} is not a multiple of {QK_K}", B::TYPE.name());
    let nb = n / QK_K;
    assert!(
        x.len() == nb * B::BYTES && y.len() == nb * BlockQ8K::BYTES,
        "{} vec_dot: n = {n} needs {} + {} bytes, got {} + {}",
        B::TYPE.name(),
        nb * B::BYTES,
        nb * BlockQ8K::BYTES,
        x.len(),
        y.len()
    );
    nb
}

/// The super-block pairs of a dot product.
#[inline]
fn dot_blocks<'a, B: Block>(x: &'a [u8], y: &'a [u8]) -> impl Iterator<Item = (B, BlockQ8K)> + 'a {
    x.chunks_exact(B::BYTES).zip(y.chunks_exact(BlockQ8K::BYTES)).map(|(xb, yb)| (B::read(xb), BlockQ8K::read(yb)))
}

/// Adds `scale * (a · q8)` for 16 consecutive weights into the eight integer lanes, as the
/// generic C code does (two groups of eight).
#[inline(always)]
fn lanes_16(aux32: &mut [i32; 8], scale: i32, a: &[i8], q8: &[i8]) {
    for g in 0..2 {
        for l in 0..8 {
            let p = q8[8 * g + l] as i32 * a[8 * g + l] as i32; // fits in i16
            aux32[l] += scale * p;
        }
    }
}

/// `ggml_vec_dot_q2_K_q8_K_generic`: `n` weights, `x` Q2_K blocks, `y` Q8_K blocks.
/// Panics when the lengths disagree.
pub fn vec_dot_q2_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_dot_lengths::<BlockQ2K>(n, x, y);
    let mut sumf = 0f32;
    for (xb, yb) in dot_blocks::<BlockQ2K>(x, y) {
        let sc = &xb.scales;
        // The mins term: sum over sub-blocks of m * (sum of its 16 q8), via bsums.
        let mut summs = 0i32;
        for (j, &s) in sc.iter().enumerate() {
            summs += yb.bsums[j] as i32 * (s >> 4) as i32;
        }
        let dall = yb.d * xb.d.to_f32();
        let dmin = yb.d * xb.dmin.to_f32();

        let mut isum = 0i32;
        for k in 0..QK_K / 128 {
            let q2 = &xb.qs[32 * k..32 * k + 32];
            for j in 0..4 {
                let shift = 2 * j;
                for h in 0..2 {
                    let is = 8 * k + 2 * j + h;
                    let q8 = &yb.qs[128 * k + 32 * j + 16 * h..][..16];
                    let mut isuml = 0i32;
                    for l in 0..16 {
                        isuml += q8[l] as i32 * ((q2[16 * h + l] >> shift) & 3) as i32;
                    }
                    isum += (sc[is] & 0xF) as i32 * isuml;
                }
            }
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// `ggml_vec_dot_q3_K_q8_K_generic`; see [`vec_dot_q2_k_q8_k`].
pub fn vec_dot_q3_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_dot_lengths::<BlockQ3K>(n, x, y);
    let mut sums = [0f32; 8];
    for (xb, yb) in dot_blocks::<BlockQ3K>(x, y) {
        // Signed 3-bit quants: low two bits minus 4 when the high bit is clear.
        let mut a = [0i8; QK_K];
        for c in 0..2 {
            let q3 = &xb.qs[32 * c..32 * c + 32];
            for k in 0..4 {
                let m = 1u8 << (4 * c + k);
                for l in 0..32 {
                    let lo = ((q3[l] >> (2 * k)) & 3) as i8;
                    a[128 * c + 32 * k + l] = lo - if xb.hmask[l] & m != 0 { 0 } else { 4 };
                }
            }
        }
        let scales = q3k_scales(&xb.scales); // already minus 32
        let mut aux32 = [0i32; 8];
        for j in 0..QK_K / 16 {
            lanes_16(&mut aux32, scales[j], &a[16 * j..16 * j + 16], &yb.qs[16 * j..16 * j + 16]);
        }
        let d = xb.d.to_f32() * yb.d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

/// The shared body of the Q4_K and Q5_K dot products once the quants are unpacked into `a`.
#[inline(always)]
fn dot_q45_k_block(
    a: &[i8; QK_K],
    packed: &[u8; K_SCALE_SIZE],
    d: f16,
    dmin: f16,
    yb: &BlockQ8K,
    sums: &mut [f32; 8],
    sumf: &mut f32,
) {
    let mut scales = [0u8; 8];
    let mut mins = [0u8; 8];
    for j in 0..8 {
        (scales[j], mins[j]) = get_scale_min_k4(j, packed);
    }
    let mut sumi = 0i32;
    for j in 0..QK_K / 16 {
        sumi += yb.bsums[j] as i32 * mins[j / 2] as i32;
    }
    let mut aux32 = [0i32; 8];
    for (j, &scale) in scales.iter().enumerate() {
        let scale = scale as i32;
        for h in 0..2 {
            let o = 32 * j + 16 * h;
            lanes_16(&mut aux32, scale, &a[o..o + 16], &yb.qs[o..o + 16]);
        }
    }
    let d = d.to_f32() * yb.d;
    for l in 0..8 {
        sums[l] += d * aux32[l] as f32;
    }
    let dmin = dmin.to_f32() * yb.d;
    *sumf -= dmin * sumi as f32;
}

/// `ggml_vec_dot_q4_K_q8_K_generic`; see [`vec_dot_q2_k_q8_k`].
pub fn vec_dot_q4_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_dot_lengths::<BlockQ4K>(n, x, y);
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (xb, yb) in dot_blocks::<BlockQ4K>(x, y) {
        let mut a = [0i8; QK_K];
        for c in 0..QK_K / 64 {
            for l in 0..32 {
                let q = xb.qs[32 * c + l];
                a[64 * c + l] = (q & 0xF) as i8;
                a[64 * c + 32 + l] = (q >> 4) as i8;
            }
        }
        dot_q45_k_block(&a, &xb.scales, xb.d, xb.dmin, &yb, &mut sums, &mut sumf);
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// `ggml_vec_dot_q5_K_q8_K_generic`; see [`vec_dot_q2_k_q8_k`].
pub fn vec_dot_q5_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_dot_lengths::<BlockQ5K>(n, x, y);
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (xb, yb) in dot_blocks::<BlockQ5K>(x, y) {
        let mut a = [0i8; QK_K];
        for c in 0..QK_K / 64 {
            let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for l in 0..32 {
                let q = xb.qs[32 * c + l];
                let h1 = if xb.qh[l] & m1 != 0 { 16 } else { 0 };
                let h2 = if xb.qh[l] & m2 != 0 { 16 } else { 0 };
                a[64 * c + l] = (q & 0xF) as i8 + h1;
                a[64 * c + 32 + l] = (q >> 4) as i8 + h2;
            }
        }
        dot_q45_k_block(&a, &xb.scales, xb.d, xb.dmin, &yb, &mut sums, &mut sumf);
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// `ggml_vec_dot_q6_K_q8_K_generic`; see [`vec_dot_q2_k_q8_k`].
pub fn vec_dot_q6_k_q8_k(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_dot_lengths::<BlockQ6K>(n, x, y);
    let mut sums = [0f32; 8];
    for (xb, yb) in dot_blocks::<BlockQ6K>(x, y) {
        let mut a = [0i8; QK_K];
        for c in 0..2 {
            let (ql, qh) = (&xb.ql[64 * c..64 * c + 64], &xb.qh[32 * c..32 * c + 32]);
            let a = &mut a[128 * c..128 * c + 128];
            for l in 0..32 {
                a[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                a[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                a[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                a[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let mut aux32 = [0i32; 8];
        for j in 0..QK_K / 16 {
            lanes_16(&mut aux32, xb.scales[j] as i32, &a[16 * j..16 * j + 16], &yb.qs[16 * j..16 * j + 16]);
        }
        let d = xb.d.to_f32() * yb.d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{dequantize, dequantize_to_vec};

    fn h(x: f32) -> f16 {
        f16::from_f32(x)
    }

    fn bytes<B: Block>(b: &B) -> Vec<u8> {
        let mut v = vec![0u8; B::BYTES];
        b.write(&mut v);
        v
    }

    fn deq<B: Block + PartialEq + std::fmt::Debug>(b: &B) -> Vec<f32> {
        let v = bytes(b);
        assert_eq!(&B::read(&v), b, "read(write(b)) != b");
        dequantize_to_vec(B::TYPE, &v, QK_K).unwrap()
    }

    /// Every byte 0xE4 = 0b11_10_01_00: the 2-bit quant at shift 2*j is j.
    const RAMP2: u8 = 0xE4;

    #[test]
    fn formats_q2_k_known_values() {
        // Sub-block `is` (= weight / 16) has scale `is` and min 15 - is.
        let scales: [u8; 16] = std::array::from_fn(|is| is as u8 | ((15 - is as u8) << 4));
        let b = BlockQ2K { scales, qs: [RAMP2; 64], d: h(1.0), dmin: h(0.5) };
        let out = deq(&b);
        for (i, &x) in out.iter().enumerate() {
            let is = i / 16;
            let q = (i / 32) % 4;
            let want = is as f32 * q as f32 - 0.5 * (15 - is) as f32;
            assert_eq!(x, want, "weight {i}");
        }
    }

    #[test]
    fn formats_q3_k_scales_pack_roundtrip() {
        let sc: [u8; 16] = std::array::from_fn(|i| (i as u8 * 13 + 5) & 63);
        let packed = pack_q3k_scales(&sc);
        let got = q3k_scales(&packed);
        for i in 0..16 {
            assert_eq!(got[i], sc[i] as i32 - 32);
        }
    }

    #[test]
    fn formats_q3_k_known_values() {
        let sc: [u8; 16] = std::array::from_fn(|i| i as u8 + 20); // sc - 32 = i - 12
        let hmask: [u8; 32] = std::array::from_fn(|k| (k as u8).wrapping_mul(37));
        let b = BlockQ3K { hmask, qs: [RAMP2; 64], scales: pack_q3k_scales(&sc), d: h(0.5) };
        let out = deq(&b);
        for (i, &x) in out.iter().enumerate() {
            let lo = ((i / 32) % 4) as i32;
            let high = (hmask[i % 32] >> (i / 32)) & 1;
            let q = lo - if high == 1 { 0 } else { 4 };
            let want = 0.5 * ((i / 16) as f32 - 12.0) * q as f32;
            assert_eq!(x, want, "weight {i}");
        }
        // Scale -32 and q = -4 gives the extreme value 128 * d.
        let b = BlockQ3K { hmask: [0; 32], qs: [0; 64], scales: [0; 12], d: h(1.0) };
        assert!(deq(&b).iter().all(|&x| x == 128.0));
    }

    #[test]
    fn formats_scale_min_k4_roundtrip() {
        for j in 0..8 {
            for v in 0..64u8 {
                let mut sc: [u8; 8] = std::array::from_fn(|k| (k as u8 * 11 + 3) & 63);
                let mut m: [u8; 8] = std::array::from_fn(|k| (k as u8 * 29 + 7) & 63);
                sc[j] = v;
                m[j] = 63 - v;
                let q = pack_scale_min_k4(&sc, &m);
                for k in 0..8 {
                    assert_eq!(get_scale_min_k4(k, &q), (sc[k], m[k]), "j {j} v {v} k {k}");
                }
            }
        }
    }

    /// Weight `i`'s expected 4-bit quant in the Q4_K/Q5_K tests, and the packed `qs`.
    fn q4_pattern() -> ([u8; QK_K], [u8; QK_K / 2]) {
        let q: [u8; QK_K] = std::array::from_fn(|i| ((i * 7 + i / 32) % 16) as u8);
        let qs = std::array::from_fn(|k| {
            let (c, l) = (k / 32, k % 32);
            q[64 * c + l] | (q[64 * c + 32 + l] << 4)
        });
        (q, qs)
    }

    #[test]
    fn formats_q4_k_known_values() {
        let sc: [u8; 8] = std::array::from_fn(|s| 10 + 7 * s as u8);
        let m: [u8; 8] = std::array::from_fn(|s| 63 - 5 * s as u8);
        let (q, qs) = q4_pattern();
        let b = BlockQ4K { d: h(0.25), dmin: h(0.125), scales: pack_scale_min_k4(&sc, &m), qs };
        let out = deq(&b);
        for (i, &x) in out.iter().enumerate() {
            let s = i / 32;
            let want = 0.25 * sc[s] as f32 * q[i] as f32 - 0.125 * m[s] as f32;
            assert_eq!(x, want, "weight {i}");
        }
    }

    #[test]
    fn formats_q5_k_known_values() {
        let sc: [u8; 8] = std::array::from_fn(|s| 63 - 3 * s as u8);
        let m: [u8; 8] = std::array::from_fn(|s| 2 * s as u8);
        let (q4, qs) = q4_pattern();
        // Fifth bit of weight i is bit i/32 of qh[i % 32].
        let high = |i: usize| (i * 5 / 3) % 2 == 1;
        let qh: [u8; 32] = std::array::from_fn(|l| (0..8).map(|b| (high(32 * b + l) as u8) << b).fold(0, |a, x| a | x));
        let b = BlockQ5K { d: h(-1.5), dmin: h(3.0), scales: pack_scale_min_k4(&sc, &m), qh, qs };
        let out = deq(&b);
        for (i, &x) in out.iter().enumerate() {
            let s = i / 32;
            let q = q4[i] as f32 + if high(i) { 16.0 } else { 0.0 };
            let want = -1.5 * sc[s] as f32 * q - 3.0 * m[s] as f32;
            assert_eq!(x, want, "weight {i}");
        }
    }

    /// Packs 256 six-bit quants (0..64) into Q6_K's `ql` and `qh`.
    fn pack_q6(q: &[u8; QK_K]) -> ([u8; QK_K / 2], [u8; QK_K / 4]) {
        let mut ql = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 4];
        for (i, &v) in q.iter().enumerate() {
            let (n, r) = (i / 128, i % 128);
            let (k, l) = (r / 32, r % 32);
            ql[64 * n + 32 * (k & 1) + l] |= (v & 0xF) << (4 * (k >> 1));
            qh[32 * n + l] |= (v >> 4) << (2 * k);
        }
        (ql, qh)
    }

    #[test]
    fn formats_q6_k_known_values() {
        let q: [u8; QK_K] = std::array::from_fn(|i| ((i * 37 + 11) % 64) as u8);
        let (ql, qh) = pack_q6(&q);
        let scales: [i8; 16] = std::array::from_fn(|s| (s as i8 - 8) * 15);
        let b = BlockQ6K { ql, qh, scales, d: h(0.5) };
        let out = deq(&b);
        for (i, &x) in out.iter().enumerate() {
            let want = 0.5 * scales[i / 16] as f32 * (q[i] as f32 - 32.0);
            assert_eq!(x, want, "weight {i}");
        }
    }

    #[test]
    fn formats_q6_k_products_are_exact() {
        // The widest products in any K-quant: f16 scales with a full 11-bit significand (every
        // exponent, both signs) times every 8-bit scale times every 6-bit quant. The f32 result
        // must equal the exact (f64) product, so evaluation order and FMA cannot matter.
        for bits in (0..=u16::MAX).filter(|b| b & 0x03ff == 0x03ff && b & 0x7c00 != 0x7c00) {
            let d = f16::from_bits(bits);
            for sc in i8::MIN..=i8::MAX {
                for q in -32i32..32 {
                    let got = d.to_f32() * sc as f32 * q as f32;
                    assert_eq!(got as f64, d.to_f64() * sc as f64 * q as f64, "{bits:#06x} {sc} {q}");
                }
            }
        }
        let q: [u8; QK_K] = std::array::from_fn(|i| (i % 64) as u8);
        let (ql, qh) = pack_q6(&q);
        let d = f16::from_bits(0x3bff);
        let b = BlockQ6K { ql, qh, scales: [-127; 16], d };
        for (i, &x) in deq(&b).iter().enumerate() {
            assert_eq!(x as f64, d.to_f64() * -127.0 * ((i % 64) as f64 - 32.0));
        }
    }

    #[test]
    fn formats_q8_k_known_values() {
        let qs: [i8; QK_K] = std::array::from_fn(|i| (i as i32 - 128) as i8);
        let bsums = std::array::from_fn(|g| qs[16 * g..16 * g + 16].iter().map(|&x| x as i16).sum());
        let b = BlockQ8K { d: 0.1, qs, bsums };
        let out = deq(&b);
        for (i, &x) in out.iter().enumerate() {
            assert_eq!(x.to_bits(), (0.1f32 * (i as f32 - 128.0)).to_bits());
        }
    }

    #[test]
    fn formats_k_quants_wrong_lengths() {
        let mut out = vec![0f32; 512];
        for ty in [GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_K] {
            let n = 2 * ty.block_bytes();
            assert!(dequantize(ty, &vec![0; n], &mut out).is_ok());
            assert!(dequantize(ty, &vec![0; n + 1], &mut out).is_err());
            assert!(dequantize(ty, &vec![0; n / 2], &mut out).is_err());
            assert!(dequantize(ty, &vec![0; n], &mut out[..480]).is_err());
        }
    }
    // ---- quantization and dot products ----

    #[test]
    fn formats_nearest_int_rounds_half_to_even() {
        for (x, want) in [(0.5f32, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (-2.5, -2), (0.49999997, 0)] {
            assert_eq!(nearest_int(x), want, "{x}");
        }
        assert_eq!(nearest_int(4194303.0), 4194303);
        assert_eq!(nearest_int(-4194303.0), -4194303);
        // Out of range / NaN: the C bit trick's value, not a panic.
        assert_eq!(nearest_int(f32::NAN), 0);
        assert_eq!(nearest_int(f32::INFINITY), -0x0040_0000);
    }

    /// Eight deterministic super-blocks (exactly reproducible in numpy float32): ramps of
    /// different scales, a spike in block 6, a nearly empty block 7.
    fn golden_input() -> Vec<f32> {
        let mut x = vec![0f32; 8 * QK_K];
        for b in 0..8 {
            for i in 0..QK_K {
                let v = ((i * i * 31 + b * 977 + i * 7) % 2001) as f32 - 1000.0;
                x[b * QK_K + i] = v / (37 * (b + 1)) as f32;
            }
        }
        x[6 * QK_K + 100] = 500.0;
        x[7 * QK_K..].fill(0.0);
        x[7 * QK_K + 3] = -2.5;
        x[7 * QK_K + 200] = 1.25;
        x
    }

    #[test]
    fn formats_k_quantize_golden_digests() {
        // sha256 of ggml's quantize_row_q*_K_ref on golden_input(), from ggml-quants.c compiled
        // with gcc -O3 (no FMA), the same way as llama.cpp's ggml-base.
        let x = golden_input();
        let cases: [(QuantizeRowFn, usize, &str); 6] = [
            (quantize_row_q2_k, 84, "b8808fc4db3ddf4288ef8b60642e6cb92d696b6ea4fc5d8f9c5ad32f6c5b93e3"),
            (quantize_row_q3_k, 110, "be8225d2e22dffe1efef4f2a5d9c5fddfd926c4c57749fd176d593929d3789e6"),
            (quantize_row_q4_k, 144, "b48c4d64306e84b2c10d21a61b89d99d252a306975f2ca7a7ec889b14bbe6138"),
            (quantize_row_q5_k, 176, "69adb66360d21a9900a93e468704d6ade7a11752664367c7e5fc706ceed28a1d"),
            (quantize_row_q6_k, 210, "67638c26f3d000f50e8b4c6e881331d39a4ef64f899a5383624b454b53a09257"),
            (quantize_row_q8_k, 292, "40c0c6ec5c2b2cfea83941b2644fc500cca9a26c43d42c9ea3447aff8b6f7721"),
        ];
        for (i, (f, bytes, want)) in cases.into_iter().enumerate() {
            let mut out = vec![0u8; 8 * bytes];
            f(&x, &mut out);
            assert_eq!(crate::util::sha256_bytes(&out), want, "case {i}");
        }
    }

    #[test]
    fn formats_make_qkx2_constant_group() {
        let x = [0.75f32; 16];
        let w = [1f32; 16];
        let (mut l, mut laux) = ([9u8; 16], [0u8; 16]);
        // min is clamped to 0, so a positive constant group is not "max == min".
        let (scale, min) = make_qkx2_quants(3, &x, &w, &mut l, &mut laux, -0.5, 0.1, 15, true);
        assert!((scale * 3.0 - 0.75).abs() < 1e-6 && min == 0.0, "{scale} {min}");
        assert!(l.iter().all(|&q| q == 3));
        let x = [-0.0f32; 16];
        let (scale, min) = make_qkx2_quants(3, &x, &w, &mut l, &mut laux, -0.5, 0.1, 15, true);
        assert_eq!((scale, min), (0.0, 0.0));
        assert!(l.iter().all(|&q| q == 0));
    }

    #[test]
    fn formats_make_qx_quants_zero_and_sign() {
        let mut l = [5i8; 16];
        assert_eq!(make_qx_quants(32, &[0.0; 16], &mut l, 1), 0.0);
        assert!(l.iter().all(|&q| q == 0));
        // The value of largest magnitude maps to -nmax: a positive max gives a negative scale.
        let x: [f32; 16] = std::array::from_fn(|i| i as f32 - 3.0);
        let scale = make_qx_quants(32, &x, &mut l, 1);
        assert!(scale < 0.0);
        assert_eq!(l[15], 0); // 12 -> l = -32 -> stored 0
        for (i, &q) in l.iter().enumerate() {
            assert!((scale * (q as f32 - 32.0) - x[i]).abs() <= scale.abs() * 0.5 + 1e-6, "{i}");
        }
    }

    #[test]
    fn formats_q8_k_quantize_known_block() {
        let x: [f32; QK_K] = std::array::from_fn(|i| (i as f32 - 128.0) * 0.25);
        let b = quantize_block_q8_k(&x);
        // max = x[0] = -32 -> d = 32/127, q = nearest_int(x * 127/32).
        assert_eq!(b.d, 1.0 / (-127.0f32 / -32.0));
        assert_eq!(b.qs[0], -127);
        assert_eq!(b.qs[128], 0);
        for g in 0..16 {
            assert_eq!(b.bsums[g] as i32, b.qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum::<i32>());
        }
    }

    /// Pseudo-random bytes for `nb` blocks of `B` with finite f16 scales at `scale_offsets`.
    fn random_blocks<B: Block>(nb: usize, seed: u64, scale_offsets: &[usize]) -> Vec<u8> {
        let mut s = seed;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut v: Vec<u8> = (0..nb * B::BYTES).map(|_| next() as u8).collect();
        for b in 0..nb {
            for &o in scale_offsets {
                let d = h(((next() % 2001) as f32 - 1000.0) / 4096.0);
                v[b * B::BYTES + o..b * B::BYTES + o + 2].copy_from_slice(&d.to_le_bytes());
            }
        }
        v
    }

    fn check_vec_dot<B: Block>(dot: fn(usize, &[u8], &[u8]) -> f32, scale_offsets: &[usize]) {
        let nb = 5;
        let x = random_blocks::<B>(nb, 0x1234_5678 + B::BYTES as u64, scale_offsets);
        // Q8_K: random quants with consistent bsums and an f32 scale.
        let yf: Vec<f32> = (0..nb * QK_K).map(|i| ((i * 7919 % 509) as f32 - 254.0) / 31.0).collect();
        let mut y = vec![0u8; nb * BlockQ8K::BYTES];
        quantize_row_q8_k(&yf, &mut y);
        let xd = dequantize_to_vec(B::TYPE, &x, nb * QK_K).unwrap();
        let yd = dequantize_to_vec(GgmlType::Q8_K, &y, nb * QK_K).unwrap();
        let exact: f64 = xd.iter().zip(&yd).map(|(&a, &b)| a as f64 * b as f64).sum();
        let mag: f64 = xd.iter().zip(&yd).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
        let got = dot(nb * QK_K, &x, &y) as f64;
        assert!((got - exact).abs() <= 1e-5 * mag, "{}: {got} vs {exact}", B::TYPE);
    }

    #[test]
    fn formats_k_vec_dot_matches_dequantized_dot() {
        check_vec_dot::<BlockQ2K>(vec_dot_q2_k_q8_k, &[80, 82]);
        check_vec_dot::<BlockQ3K>(vec_dot_q3_k_q8_k, &[108]);
        check_vec_dot::<BlockQ4K>(vec_dot_q4_k_q8_k, &[0, 2]);
        check_vec_dot::<BlockQ5K>(vec_dot_q5_k_q8_k, &[0, 2]);
        check_vec_dot::<BlockQ6K>(vec_dot_q6_k_q8_k, &[208]);
    }

    #[test]
    fn formats_k_quantize_dequantize_round_trip() {
        // Every type reproduces exactly-representable data closely; the error shrinks with bits.
        let x = golden_input();
        let mut prev = f64::INFINITY;
        let cases: [(GgmlType, QuantizeRowFn); 5] = [
            (GgmlType::Q2_K, quantize_row_q2_k),
            (GgmlType::Q3_K, quantize_row_q3_k),
            (GgmlType::Q4_K, quantize_row_q4_k),
            (GgmlType::Q5_K, quantize_row_q5_k),
            (GgmlType::Q6_K, quantize_row_q6_k),
        ];
        for (ty, f) in cases {
            let mut q = vec![0u8; x.len() / QK_K * ty.block_bytes()];
            f(&x, &mut q);
            let y = dequantize_to_vec(ty, &q, x.len()).unwrap();
            let mse: f64 = x.iter().zip(&y).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>() / x.len() as f64;
            assert!(mse < prev, "{ty}: mse {mse} not below {prev}");
            prev = mse;
        }
    }

    /// The AVX-512 try sums of `make_qx_quants` equal the scalar ones bit for bit.
    #[test]
    fn qx_try_sums_simd_matches_scalar() {
        let mut s = 0x1234_5679u32;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        };
        for case in 0..2000 {
            let n = [16usize, 32, 256][case % 3];
            let scale = 10f32.powi((case % 9) as i32 - 4);
            let x: Vec<f32> = (0..n).map(|_| rnd() * scale).collect();
            let max = x.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            for (nmax, rmse) in [(32, 1), (4, 1), (16, 2), (8, 3), (32, 4)] {
                let mut iscales = [0f32; QX_TRIES];
                for (k, is) in (-9i32..=9).filter(|&is| is != 0).enumerate() {
                    iscales[k] = -(nmax as f32 + 0.1 * is as f32) / max;
                }
                let weight = |xi: f32| match rmse {
                    1 => xi * xi,
                    2 => 1.0,
                    3 => xi.abs(),
                    _ => xi.abs().sqrt(),
                };
                let want = qx_try_sums_scalar(nmax, &x, &iscales, weight);
                let got = qx_try_sums(nmax, &x, &iscales, weight);
                for k in 0..QX_TRIES {
                    assert_eq!(got.0[k].to_bits(), want.0[k].to_bits(), "case {case} nmax {nmax} try {k}");
                    assert_eq!(got.1[k].to_bits(), want.1[k].to_bits(), "case {case} nmax {nmax} try {k}");
                }
            }
        }
    }

    /// `make_qkx2_quants` gives the same quants, scale and min with and without the AVX-512
    /// tries, for the parameters Q2_K, Q4_K and Q5_K use and both error measures.
    #[test]
    fn qkx2_tries_simd_matches_scalar() {
        let mut s = 0x0BAD_5EEDu32;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        };
        for case in 0..3000 {
            let n = if case % 2 == 0 { 32 } else { 16 };
            let scale = 10f32.powi(case % 9 - 4);
            let shift = if case % 3 == 0 { 0.7 * scale } else { 0.0 };
            let x: Vec<f32> = (0..n).map(|_| rnd() * scale + shift).collect();
            let w: Vec<f32> = x.iter().map(|v| if case % 4 == 0 { 1.0 } else { v.abs() + 0.01 * scale }).collect();
            for (nmax, rmin, rdelta, nstep, mad) in [(15, -1.0, 0.1, 20, false), (31, -0.5, 0.1, 15, false), (3, -0.5, 0.1, 15, true)] {
                let (mut l1, mut l2) = (vec![0u8; n], vec![0u8; n]);
                let mut aux = vec![0u8; n];
                let a = make_qkx2_quants_with(true, nmax, &x, &w, &mut l1, &mut aux, rmin, rdelta, nstep, mad);
                let b = make_qkx2_quants_with(false, nmax, &x, &w, &mut l2, &mut aux, rmin, rdelta, nstep, mad);
                assert_eq!((a.0.to_bits(), a.1.to_bits()), (b.0.to_bits(), b.1.to_bits()), "case {case} nmax {nmax}");
                assert_eq!(l1, l2, "case {case} nmax {nmax}");
            }
        }
    }
}
