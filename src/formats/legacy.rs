//! The legacy 32-weight block formats: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0, plus Q8_1 activations.
//!
//! Layouts follow `ggml/src/ggml-common.h`; the dequantization follows `dequantize_row_q*` in
//! `ggml/src/ggml-quants.c`. Weight `j` of a 4/5-bit block lives in the low nibble of `qs[j]`
//! for `j < 16` and in the high nibble of `qs[j - 16]` otherwise; the fifth bit of weight `j`
//! is bit `j` of the little-endian `qh` word.
//!
//! Float operation order (kept exactly, no fused multiply-add): `q * d` for the symmetric
//! formats and `q * d + m` for Q4_1 and Q5_1, with the integer quant converted to f32 first.
//! (For these formats `q * d` is always exact in f32, so an FMA-contracting C compiler gives the
//! same bits too.)
//!
//! # Quantization
//!
//! `quantize_row_*` reproduce what llama-quantize writes without an importance matrix:
//! `ggml_quantize_chunk` calls `quantize_q4_0` … `quantize_q8_0`, which without `quant_weights`
//! run `quantize_row_*_ref` over the whole chunk (Q8_0 always does). The output is byte for byte
//! that of the C code compiled without FMA contraction: the same f32 operations in the same order,
//! `roundf` for Q8_0, the reference's truncating casts as x86 executes them (`c_f32_to_i32`),
//! and ggml's fp32→fp16 conversion ([`fp32_to_fp16`]).
//!
//! Edge cases, all as in ggml: an all-zero block gets a zero scale (`-0.0` for Q4_0 and Q5_0,
//! whose scale is `max / -8` or `max / -16`) and quants that dequantize to zero. Finite inputs
//! never put a NaN into a block, but a scale beyond f16's range (a weight above about
//! 65504 × 8 for Q4_0, × 16 for Q5_0, × 127 for Q8_0; for Q4_1 / Q5_1 a block range above
//! 65504 × 15 / × 31 or a minimum below -65504) is stored as ±inf, exactly like ggml, and then
//! dequantizes to inf/NaN. (The block's other weights still get ordinary quants.)
//! Non-finite inputs (±inf, NaN) never panic; the bytes they give follow the C code on x86 but
//! are meaningless, so callers must reject non-finite tensors before quantizing.
//!
//! # Dot products
//!
//! `vec_dot_*` are the scalar twins of ggml-cpu's `ggml_vec_dot_*_generic` (`ggml-cpu/quants.c`):
//! weights of one type against activations of the type ggml pairs with it
//! (`type_traits_cpu[..].vec_dot_type`): Q4_0, Q5_0 and Q8_0 with [`BlockQ8_0`]; Q4_1 and Q5_1
//! with [`BlockQ8_1`], whose `s = d * sum(q)` folds the weights' offset `m` into one product per
//! block. Each block's dot product is an exact integer sum, scaled in f32 in ggml's operation
//! order and accumulated in one f32 (no FMA).

use half::f16;

use super::float::fp32_to_fp16;
use super::{dequantize_blocks, read_array, read_f16, read_i8_array, write_i8_array, Block};
use crate::gguf::GgmlType;

/// Weights per Q4_0 block.
pub const QK4_0: usize = 32;
/// Weights per Q4_1 block.
pub const QK4_1: usize = 32;
/// Weights per Q5_0 block.
pub const QK5_0: usize = 32;
/// Weights per Q5_1 block.
pub const QK5_1: usize = 32;
/// Weights per Q8_0 block.
pub const QK8_0: usize = 32;
/// Weights per Q8_1 block.
pub const QK8_1: usize = 32;

/// `block_q4_0` (ggml-common.h): `x = (q - 8) * d` with 4-bit `q`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_0 {
    /// Delta (scale).
    pub d: f16,
    /// Nibbles: low nibbles are weights 0..16, high nibbles weights 16..32.
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// `block_q4_1` (ggml-common.h): `x = q * d + m` with 4-bit `q`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_1 {
    /// Delta (scale).
    pub d: f16,
    /// Min (offset).
    pub m: f16,
    /// Nibbles, as in [`BlockQ4_0`].
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// `block_q5_0` (ggml-common.h): `x = (q - 16) * d` with 5-bit `q`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_0 {
    /// Delta (scale).
    pub d: f16,
    /// Fifth bit of each quant: bit `j` of this little-endian u32 belongs to weight `j`.
    pub qh: [u8; 4],
    /// Low four bits, as in [`BlockQ4_0`].
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// `block_q5_1` (ggml-common.h): `x = q * d + m` with 5-bit `q`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_1 {
    /// Delta (scale).
    pub d: f16,
    /// Min (offset).
    pub m: f16,
    /// Fifth bits, as in [`BlockQ5_0`].
    pub qh: [u8; 4],
    /// Low four bits, as in [`BlockQ4_0`].
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

/// `block_q8_0` (ggml-common.h): `x = q * d` with signed 8-bit `q`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    /// Delta (scale).
    pub d: f16,
    /// Quants, one per weight.
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// `block_q8_1` (ggml-common.h): `x = q * d` with signed 8-bit `q`, plus `s = d * sum(q)`.
/// Only an activation format: ggml quantizes the inputs of Q4_1/Q5_1 matmuls to it and has no
/// `to_float` for it.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_1 {
    /// Delta (scale).
    pub d: f16,
    /// `d * sum(qs)`.
    pub s: f16,
    /// Quants, one per weight.
    pub qs: [i8; QK8_1],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

impl Block for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const QK: usize = QK4_0;
    const BYTES: usize = 18;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ4_0 { d: read_f16(b, 0), qs: read_array(b, 2) }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..18].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK4_0] = out.try_into().expect("32 outputs");
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            let x0 = (q & 0x0F) as i32 - 8;
            let x1 = (q >> 4) as i32 - 8;
            y[j] = x0 as f32 * d;
            y[j + QK4_0 / 2] = x1 as f32 * d;
        }
    }
}

impl Block for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const QK: usize = QK4_1;
    const BYTES: usize = 20;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ4_1 { d: read_f16(b, 0), m: read_f16(b, 2), qs: read_array(b, 4) }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_le_bytes());
        out[4..20].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK4_1] = out.try_into().expect("32 outputs");
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            let x0 = (q & 0x0F) as f32;
            let x1 = (q >> 4) as f32;
            // Rounded product, then rounded sum (no FMA).
            y[j] = x0 * d + m;
            y[j + QK4_1 / 2] = x1 * d + m;
        }
    }
}

impl Block for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const QK: usize = QK5_0;
    const BYTES: usize = 22;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ5_0 { d: read_f16(b, 0), qh: read_array(b, 2), qs: read_array(b, 6) }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..6].copy_from_slice(&self.qh);
        out[6..22].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK5_0] = out.try_into().expect("32 outputs");
        let d = self.d.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for (j, &q) in self.qs.iter().enumerate() {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = ((q & 0x0F) | xh0) as i32 - 16;
            let x1 = ((q >> 4) | xh1) as i32 - 16;
            y[j] = x0 as f32 * d;
            y[j + QK5_0 / 2] = x1 as f32 * d;
        }
    }
}

impl Block for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const QK: usize = QK5_1;
    const BYTES: usize = 24;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ5_1 { d: read_f16(b, 0), m: read_f16(b, 2), qh: read_array(b, 4), qs: read_array(b, 8) }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_le_bytes());
        out[4..8].copy_from_slice(&self.qh);
        out[8..24].copy_from_slice(&self.qs);
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK5_1] = out.try_into().expect("32 outputs");
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for (j, &q) in self.qs.iter().enumerate() {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = ((q & 0x0F) | xh0) as f32;
            let x1 = ((q >> 4) | xh1) as f32;
            y[j] = x0 * d + m;
            y[j + QK5_1 / 2] = x1 * d + m;
        }
    }
}

impl Block for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const QK: usize = QK8_0;
    const BYTES: usize = 34;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ8_0 { d: read_f16(b, 0), qs: read_i8_array(b, 2) }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        write_i8_array(out, 2, &self.qs);
    }

    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK8_0] = out.try_into().expect("32 outputs");
        let d = self.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

impl Block for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const QK: usize = QK8_1;
    const BYTES: usize = 36;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ8_1 { d: read_f16(b, 0), s: read_f16(b, 2), qs: read_i8_array(b, 4) }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.s.to_le_bytes());
        write_i8_array(out, 4, &self.qs);
    }

    /// `q * d` (ggml itself never dequantizes Q8_1; this serves tests).
    #[inline(always)]
    fn dequantize(&self, out: &mut [f32]) {
        let y: &mut [f32; QK8_1] = out.try_into().expect("32 outputs");
        let d = self.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

/// `dequantize_row_q4_0`: `blocks` holds whole [`BlockQ4_0`]s, `out` one f32 per weight.
pub fn dequantize_row_q4_0(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockQ4_0>(blocks, out)
}

/// `dequantize_row_q4_1`: `blocks` holds whole [`BlockQ4_1`]s, `out` one f32 per weight.
pub fn dequantize_row_q4_1(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockQ4_1>(blocks, out)
}

/// `dequantize_row_q5_0`: `blocks` holds whole [`BlockQ5_0`]s, `out` one f32 per weight.
pub fn dequantize_row_q5_0(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockQ5_0>(blocks, out)
}

/// `dequantize_row_q5_1`: `blocks` holds whole [`BlockQ5_1`]s, `out` one f32 per weight.
pub fn dequantize_row_q5_1(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockQ5_1>(blocks, out)
}

/// `dequantize_row_q8_0`: `blocks` holds whole [`BlockQ8_0`]s, `out` one f32 per weight.
pub fn dequantize_row_q8_0(blocks: &[u8], out: &mut [f32]) {
    dequantize_blocks::<BlockQ8_0>(blocks, out)
}

// ------------------------------------------------------------------------------------------------
// Quantization: `quantize_row_*_ref` in ggml-quants.c.
// ------------------------------------------------------------------------------------------------

/// C's float-to-int conversion as x86 executes it (`cvttss2si` / `cvttps2dq`, which is what the
/// reference build emits): truncation toward zero, and `i32::MIN` ("integer indefinite") for NaN
/// and out-of-range values. The reference code then narrows with `(int8_t)` / `(uint8_t)`, which
/// keeps the low byte; callers do that with `as i8` / `as u8`.
///
/// Rust's saturating `as` would differ when the value is infinite or NaN. That happens for finite
/// inputs too: a block of subnormals has a subnormal scale `d` whose inverse `1/d` overflows to
/// inf, so `x * id` is ±inf (or NaN for a zero weight). Ordinary values are unaffected.
#[inline(always)]
fn c_f32_to_i32(x: f32) -> i32 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        x as i32
    } else {
        i32::MIN
    }
}

/// C's `roundf` (halves away from zero) without the libm call that `f32::round` is on baseline
/// x86-64 (one per weight, 7% of quantizing a model with a Q8_0 embedding). Below 2^23 the
/// truncation `t` and the fraction `x - t` are exact, so comparing the fraction with ±0.5
/// decides exactly; larger magnitudes, infinities and NaN are returned unchanged, as `roundf`
/// returns them. Only the sign of a zero result may differ (`-0.3` gives `+0.0`), which no
/// caller sees: they all convert to an integer.
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN must take the early return
fn round_half_away(x: f32) -> f32 {
    if !(x.abs() < 8_388_608.0) {
        return x;
    }
    let t = x as i32 as f32;
    let f = x - t;
    t + ((f >= 0.5) as i32 - (f <= -0.5) as i32) as f32
}

/// The reference's `id = d ? 1.0f/d : 0.0f` (NaN counts as non-zero, as in C).
#[inline(always)]
fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// The weight of largest magnitude, keeping its sign; the first one wins ties, NaNs are skipped,
/// and an all-zero block gives `+0.0`. (Q4_0 and Q5_0 scale by it so that it maps to quant 0.)
#[inline(always)]
fn signed_absmax(x: &[f32; 32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// The largest magnitude, with C's `MAX(a, b) = a > b ? a : b` (a NaN is forgotten unless last).
#[inline(always)]
fn absmax(x: &[f32; 32]) -> f32 {
    let mut amax = 0f32;
    for &v in x {
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    amax
}

/// `(min, max)` of a block, starting from `(FLT_MAX, -FLT_MAX)` as the reference does.
#[inline(always)]
fn min_max(x: &[f32; 32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Sets bit `j` of `qh` (weights 0..16) or `j + 16` (weights 16..32) from bit 4 of the quants.
#[inline(always)]
fn fifth_bits(qh: &mut u32, j: usize, xi0: u8, xi1: u8) {
    *qh |= ((xi0 as u32 & 0x10) >> 4) << j;
    *qh |= ((xi1 as u32 & 0x10) >> 4) << (j + 16);
}

/// `quantize_row_q4_0_ref` for one block: `d = max / -8` with `max` the signed absmax, then
/// `q = min(15, (int8_t)(x / d + 8.5))`.
fn quantize_block_q4_0(x: &[f32; QK4_0]) -> BlockQ4_0 {
    let d = signed_absmax(x) / -8.0;
    let id = inverse_or_zero(d);
    let mut qs = [0u8; QK4_0 / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        let xi0 = (c_f32_to_i32(x[j] * id + 8.5) as i8).min(15) as u8;
        let xi1 = (c_f32_to_i32(x[j + 16] * id + 8.5) as i8).min(15) as u8;
        *q = xi0 | (xi1 << 4);
    }
    BlockQ4_0 { d: fp32_to_fp16(d), qs }
}

/// `quantize_row_q4_1_ref` for one block: `d = (max - min) / 15`, `m = min`, then
/// `q = min(15, (int8_t)((x - min) / d + 0.5))`.
fn quantize_block_q4_1(x: &[f32; QK4_1]) -> BlockQ4_1 {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse_or_zero(d);
    let mut qs = [0u8; QK4_1 / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        let xi0 = (c_f32_to_i32((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let xi1 = (c_f32_to_i32((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
        *q = xi0 | (xi1 << 4);
    }
    BlockQ4_1 { d: fp32_to_fp16(d), m: fp32_to_fp16(min), qs }
}

/// `quantize_row_q5_0_ref` for one block: `d = max / -16` with `max` the signed absmax, then
/// `q = min(31, (int8_t)(x / d + 16.5))`.
fn quantize_block_q5_0(x: &[f32; QK5_0]) -> BlockQ5_0 {
    let d = signed_absmax(x) / -16.0;
    let id = inverse_or_zero(d);
    let mut qs = [0u8; QK5_0 / 2];
    let mut qh = 0u32;
    for (j, q) in qs.iter_mut().enumerate() {
        let xi0 = (c_f32_to_i32(x[j] * id + 16.5) as i8).min(31) as u8;
        let xi1 = (c_f32_to_i32(x[j + 16] * id + 16.5) as i8).min(31) as u8;
        *q = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        fifth_bits(&mut qh, j, xi0, xi1);
    }
    BlockQ5_0 { d: fp32_to_fp16(d), qh: qh.to_le_bytes(), qs }
}

/// `quantize_row_q5_1_ref` for one block: `d = (max - min) / 31`, `m = min`, then
/// `q = (uint8_t)((x - min) / d + 0.5)` (no clamp in the reference; in range anyway).
fn quantize_block_q5_1(x: &[f32; QK5_1]) -> BlockQ5_1 {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse_or_zero(d);
    let mut qs = [0u8; QK5_1 / 2];
    let mut qh = 0u32;
    for (j, q) in qs.iter_mut().enumerate() {
        let xi0 = c_f32_to_i32((x[j] - min) * id + 0.5) as u8;
        let xi1 = c_f32_to_i32((x[j + 16] - min) * id + 0.5) as u8;
        *q = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        fifth_bits(&mut qh, j, xi0, xi1);
    }
    BlockQ5_1 { d: fp32_to_fp16(d), m: fp32_to_fp16(min), qh: qh.to_le_bytes(), qs }
}

/// The quants and f32 scale shared by `quantize_row_q8_0_ref` and `quantize_row_q8_1_ref`:
/// `d = amax / 127`, `q = roundf(x / d)` (halves away from zero).
#[inline(always)]
fn quantize_q8(x: &[f32; 32]) -> (f32, [i8; 32]) {
    let d = absmax(x) / 127.0;
    let id = inverse_or_zero(d);
    let qs = std::array::from_fn(|j| c_f32_to_i32(round_half_away(x[j] * id)) as i8);
    (d, qs)
}

/// `quantize_row_q8_0_ref` for one block.
fn quantize_block_q8_0(x: &[f32; QK8_0]) -> BlockQ8_0 {
    let (d, qs) = quantize_q8(x);
    BlockQ8_0 { d: fp32_to_fp16(d), qs }
}

/// `quantize_row_q8_1_ref` for one block: as Q8_0, plus `s = (float)sum(q) * d`.
fn quantize_block_q8_1(x: &[f32; QK8_1]) -> BlockQ8_1 {
    let (d, qs) = quantize_q8(x);
    let sum: i32 = qs.iter().map(|&q| q as i32).sum();
    BlockQ8_1 { d: fp32_to_fp16(d), s: fp32_to_fp16(sum as f32 * d), qs }
}

/// Quantizes whole 32-weight blocks of `src` into `dst` with `f`. Panics unless `src` is a whole
/// number of blocks and `dst` exactly their size.
#[inline(always)]
fn quantize_blocks<B: Block>(src: &[f32], dst: &mut [u8], f: impl Fn(&[f32; 32]) -> B) {
    assert!(
        B::QK == 32 && src.len().is_multiple_of(B::QK) && dst.len() == src.len() / B::QK * B::BYTES,
        "{}: {} weights cannot quantize into {} bytes",
        B::TYPE.name(),
        src.len(),
        dst.len()
    );
    for (x, out) in src.chunks_exact(B::QK).zip(dst.chunks_exact_mut(B::BYTES)) {
        f(x.try_into().expect("32 weights")).write(out);
    }
}

/// `quantize_row_q4_0_ref` (what llama-quantize writes for Q4_0 without an imatrix): `src` is a
/// whole number of 32-weight blocks, `dst` exactly `src.len() / 32 * 18` bytes.
pub fn quantize_row_q4_0(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q4_0)
}

/// `quantize_row_q4_1_ref`: `dst` is exactly `src.len() / 32 * 20` bytes.
pub fn quantize_row_q4_1(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q4_1)
}

/// `quantize_row_q5_0_ref`: `dst` is exactly `src.len() / 32 * 22` bytes.
pub fn quantize_row_q5_0(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q5_0)
}

/// `quantize_row_q5_1_ref`: `dst` is exactly `src.len() / 32 * 24` bytes.
pub fn quantize_row_q5_1(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q5_1)
}

/// `quantize_row_q8_0_ref`: `dst` is exactly `src.len() / 32 * 34` bytes. Also the activation
/// quantizer for Q4_0/Q5_0/Q8_0 dot products. (ggml-cpu's AVX `quantize_row_q8_0` rounds halves
/// to even and scales by `127 / amax` instead of `1 / (amax / 127)`, so its activation bytes can
/// differ from these in rare ties; llama-quantize's files always use this reference.)
pub fn quantize_row_q8_0(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q8_0)
}

/// `quantize_row_q8_1_ref`, the activation quantizer for Q4_1/Q5_1 dot products: `dst` is
/// exactly `src.len() / 32 * 36` bytes.
pub fn quantize_row_q8_1(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, quantize_block_q8_1)
}

// ------------------------------------------------------------------------------------------------
// Scalar dot products: `ggml_vec_dot_*_generic` in ggml-cpu/quants.c.
// ------------------------------------------------------------------------------------------------

/// Pairs up the `n / 32` blocks of `x` (weights, type `X`) and `y` (activations, type `Y`).
/// Panics unless `n` is a whole number of blocks and both slices hold exactly that many.
#[inline(always)]
fn block_pairs<'a, X: Block, Y: Block>(n: usize, x: &'a [u8], y: &'a [u8]) -> impl Iterator<Item = (X, Y)> + 'a {
    assert!(
        X::QK == Y::QK && n.is_multiple_of(X::QK) && x.len() == n / X::QK * X::BYTES && y.len() == n / Y::QK * Y::BYTES,
        "vec_dot {}·{}: n = {n} with {} and {} bytes",
        X::TYPE.name(),
        Y::TYPE.name(),
        x.len(),
        y.len()
    );
    x.chunks_exact(X::BYTES).zip(y.chunks_exact(Y::BYTES)).map(|(bx, by)| (X::read(bx), Y::read(by)))
}

/// The 5-bit quant of weight `j` of a Q5 block (`qs` nibble plus bit `j` of `qh`), unsigned.
#[inline(always)]
fn q5_quant(qs: &[u8; 16], qh: u32, j: usize) -> i32 {
    let nibble = if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 };
    (nibble | (((qh >> j) & 1) << 4) as u8) as i32
}

/// `ggml_vec_dot_q4_0_q8_0_generic`: the dot product of `n` Q4_0 weights (`x`) with `n` Q8_0
/// activations (`y`). Per block: `sum += (float)isum * dx * dy`.
pub fn vec_dot_q4_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in block_pairs::<BlockQ4_0, BlockQ8_0>(n, x, y) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = (xb.qs[j] & 0x0F) as i32 - 8;
            let v1 = (xb.qs[j] >> 4) as i32 - 8;
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + 16] as i32;
        }
        sumf += sumi as f32 * xb.d.to_f32() * yb.d.to_f32();
    }
    sumf
}

/// `ggml_vec_dot_q4_1_q8_1_generic`: Q4_1 weights with Q8_1 activations. Per block:
/// `sum += (dx * dy) * isum + mx * sy`, since `sum((q*dx + mx) * qy*dy) = dx*dy*isum + mx*sy`.
pub fn vec_dot_q4_1_q8_1(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in block_pairs::<BlockQ4_1, BlockQ8_1>(n, x, y) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = (xb.qs[j] & 0x0F) as i32;
            let v1 = (xb.qs[j] >> 4) as i32;
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + 16] as i32;
        }
        sumf += (xb.d.to_f32() * yb.d.to_f32()) * sumi as f32 + xb.m.to_f32() * yb.s.to_f32();
    }
    sumf
}

/// `ggml_vec_dot_q5_0_q8_0_generic`: Q5_0 weights with Q8_0 activations. Per block:
/// `sum += (dx * dy) * isum`.
pub fn vec_dot_q5_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in block_pairs::<BlockQ5_0, BlockQ8_0>(n, x, y) {
        let qh = u32::from_le_bytes(xb.qh);
        let mut sumi = 0i32;
        for (j, &q8) in yb.qs.iter().enumerate() {
            sumi += (q5_quant(&xb.qs, qh, j) - 16) * q8 as i32;
        }
        sumf += (xb.d.to_f32() * yb.d.to_f32()) * sumi as f32;
    }
    sumf
}

/// `ggml_vec_dot_q5_1_q8_1_generic`: Q5_1 weights with Q8_1 activations. Per block:
/// `sum += (dx * dy) * isum + mx * sy`.
pub fn vec_dot_q5_1_q8_1(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in block_pairs::<BlockQ5_1, BlockQ8_1>(n, x, y) {
        let qh = u32::from_le_bytes(xb.qh);
        let mut sumi = 0i32;
        for (j, &q8) in yb.qs.iter().enumerate() {
            sumi += q5_quant(&xb.qs, qh, j) * q8 as i32;
        }
        sumf += (xb.d.to_f32() * yb.d.to_f32()) * sumi as f32 + xb.m.to_f32() * yb.s.to_f32();
    }
    sumf
}

/// `ggml_vec_dot_q8_0_q8_0_generic`: Q8_0 weights with Q8_0 activations. Per block:
/// `sum += (float)isum * (dx * dy)`.
pub fn vec_dot_q8_0_q8_0(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in block_pairs::<BlockQ8_0, BlockQ8_0>(n, x, y) {
        let sumi: i32 = xb.qs.iter().zip(&yb.qs).map(|(&a, &b)| a as i32 * b as i32).sum();
        sumf += sumi as f32 * (xb.d.to_f32() * yb.d.to_f32());
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

    fn bytes<B: Block>(blocks: &[B]) -> Vec<u8> {
        let mut v = vec![0u8; blocks.len() * B::BYTES];
        for (b, chunk) in blocks.iter().zip(v.chunks_exact_mut(B::BYTES)) {
            b.write(chunk);
        }
        v
    }

    fn roundtrip<B: Block + PartialEq + std::fmt::Debug>(b: B) {
        let v = bytes(&[b]);
        assert_eq!(B::read(&v), b);
    }

    /// Nibbles such that weight j has low-4-bit value j % 16.
    fn nibbles() -> [u8; 16] {
        std::array::from_fn(|j| (j as u8 & 0xF) | ((((j + 16) as u8) & 0xF) << 4))
    }

    #[test]
    fn formats_q4_0_known_values() {
        let b = BlockQ4_0 { d: h(1.0), qs: nibbles() };
        roundtrip(b);
        let out = dequantize_to_vec(GgmlType::Q4_0, &bytes(&[b]), 32).unwrap();
        let want: Vec<f32> = (0..32).map(|j| (j % 16) as f32 - 8.0).collect();
        assert_eq!(out, want);

        let b2 = BlockQ4_0 { d: h(-0.25), qs: [0x0F; 16] };
        let out = dequantize_to_vec(GgmlType::Q4_0, &bytes(&[b, b2]), 64).unwrap();
        assert!(out[32..48].iter().all(|&x| x == 7.0 * -0.25));
        assert!(out[48..].iter().all(|&x| x == -8.0 * -0.25));
    }

    #[test]
    fn formats_q4_1_known_values() {
        let b = BlockQ4_1 { d: h(0.5), m: h(-2.0), qs: nibbles() };
        roundtrip(b);
        let out = dequantize_to_vec(GgmlType::Q4_1, &bytes(&[b]), 32).unwrap();
        let want: Vec<f32> = (0..32).map(|j| (j % 16) as f32 * 0.5 - 2.0).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn formats_q5_1_products_are_exact() {
        // Why `q * d + m` cannot differ between fused and unfused evaluation: a 5-bit quant times
        // an f16 scale needs at most 16 significant bits, so the f32 product is exact and only
        // the final addition rounds.
        for bits in 0..=u16::MAX {
            let d = f16::from_bits(bits);
            if !d.is_finite() {
                continue;
            }
            for q in 0..32u8 {
                let p = q as f32 * d.to_f32();
                assert_eq!(p as f64, q as f64 * d.to_f64(), "d {bits:#06x} q {q}");
            }
        }
    }

    #[test]
    fn formats_q5_0_known_values() {
        // qh: weights 0..32 alternate the fifth bit.
        let b = BlockQ5_0 { d: h(2.0), qh: 0xAAAA_AAAAu32.to_le_bytes(), qs: nibbles() };
        roundtrip(b);
        let out = dequantize_to_vec(GgmlType::Q5_0, &bytes(&[b]), 32).unwrap();
        let want: Vec<f32> = (0..32).map(|j| (((j % 16) | ((j & 1) << 4)) as f32 - 16.0) * 2.0).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn formats_q5_1_known_values() {
        // Only weight 31's fifth bit set.
        let b = BlockQ5_1 { d: h(1.0), m: h(0.5), qh: (1u32 << 31).to_le_bytes(), qs: nibbles() };
        roundtrip(b);
        let out = dequantize_to_vec(GgmlType::Q5_1, &bytes(&[b]), 32).unwrap();
        for (j, &x) in out.iter().enumerate() {
            let q = (j % 16) + if j == 31 { 16 } else { 0 };
            assert_eq!(x, q as f32 + 0.5, "weight {j}");
        }
        assert_eq!(out[31], 31.5);
    }

    #[test]
    fn formats_q8_0_known_values() {
        let qs: [i8; 32] = std::array::from_fn(|j| if j == 0 { -128 } else { j as i8 * 4 - 1 });
        let b = BlockQ8_0 { d: h(0.125), qs };
        roundtrip(b);
        let out = dequantize_to_vec(GgmlType::Q8_0, &bytes(&[b]), 32).unwrap();
        assert_eq!(out[0], -16.0);
        for (j, &x) in out.iter().enumerate().skip(1) {
            assert_eq!(x, (j as f32 * 4.0 - 1.0) * 0.125);
        }
    }

    #[test]
    fn formats_legacy_wrong_lengths() {
        let mut out = vec![0f32; 64];
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0] {
            let n = 2 * ty.block_bytes();
            assert!(dequantize(ty, &vec![0; n], &mut out).is_ok());
            assert!(dequantize(ty, &vec![0; n - 1], &mut out).is_err());
            assert!(dequantize(ty, &vec![0; n], &mut out[..63]).is_err());
        }
    }

    #[test]
    #[should_panic(expected = "Q8_0")]
    fn formats_row_fn_panics_on_mismatch() {
        dequantize_row_q8_0(&[0u8; 34], &mut [0f32; 64]);
    }

    fn quantize_one<B: Block>(x: &[f32; 32], f: fn(&[f32], &mut [u8])) -> B {
        let mut out = vec![0u8; B::BYTES];
        f(x, &mut out);
        B::read(&out)
    }

    #[test]
    fn quantize_q8_1_block_layout() {
        assert_eq!(BlockQ8_1::BYTES, GgmlType::Q8_1.block_bytes());
        assert_eq!(BlockQ8_1::QK, GgmlType::Q8_1.block_size());
        roundtrip(BlockQ8_1 { d: h(0.5), s: h(-3.0), qs: std::array::from_fn(|j| j as i8 - 16) });
    }

    #[test]
    fn quantize_c_cast_semantics() {
        assert_eq!(c_f32_to_i32(8.99), 8);
        assert_eq!(c_f32_to_i32(-0.99), 0);
        assert_eq!(c_f32_to_i32(-2_147_483_648.0), i32::MIN);
        for x in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 3e9, -3e9] {
            assert_eq!(c_f32_to_i32(x), i32::MIN, "{x}");
            // ... which every `(int8_t)` / `(uint8_t)` narrowing turns into 0.
            assert_eq!(c_f32_to_i32(x) as u8, 0);
        }
    }

    #[test]
    fn quantize_q4_0_exact_grid_and_sign_of_scale() {
        // Values on the grid (q - 8) * 0.5 with the extreme -4 = -8 * 0.5 reproduce exactly.
        let x: [f32; 32] = std::array::from_fn(|j| ((j % 16) as f32 - 8.0) * 0.5);
        let b: BlockQ4_0 = quantize_one(&x, quantize_row_q4_0);
        assert_eq!(b.d.to_f32(), 0.5);
        assert_eq!(b.qs, nibbles());
        // The first weight of largest magnitude sets the sign: [-2, 2, ...] gives d = 0.25.
        let mut y = [0f32; 32];
        y[0] = -2.0;
        y[1] = 2.0;
        let b: BlockQ4_0 = quantize_one(&y, quantize_row_q4_0);
        assert_eq!(b.d.to_f32(), 0.25);
        y.swap(0, 1);
        let b: BlockQ4_0 = quantize_one(&y, quantize_row_q4_0);
        assert_eq!(b.d.to_f32(), -0.25);
        // 2 / -0.25 + 8.5 = 0.5 -> 0; -2 / -0.25 + 8.5 = 16.5 -> 16, clamped to 15.
        assert_eq!(b.qs[0] & 0x0F, 0);
        assert_eq!(b.qs[1] & 0x0F, 15);
    }

    #[test]
    fn quantize_q8_0_rounds_halves_away_from_zero() {
        // amax = 127 gives d = 1 and id = 1, so x * id is exact and roundf decides the ties.
        let mut x = [0f32; 32];
        let vals = [127.0, 0.5, -0.5, 1.5, 2.5, -2.5, 126.5, -127.0];
        x[..vals.len()].copy_from_slice(&vals);
        let b: BlockQ8_0 = quantize_one(&x, quantize_row_q8_0);
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!(&b.qs[..8], &[127, 1, -1, 2, 3, -3, 127, -127]);
        let b1: BlockQ8_1 = quantize_one(&x, quantize_row_q8_1);
        assert_eq!(b1.qs, b.qs);
        assert_eq!(b1.s.to_f32(), (127 + 1 - 1 + 2 + 3 - 3 + 127 - 127) as f32);
    }

    #[test]
    fn quantize_q4_1_and_q5_1_span_min_to_max() {
        let x: [f32; 32] = std::array::from_fn(|j| -1.0 + j as f32 * (3.1 / 31.0));
        let b: BlockQ5_1 = quantize_one(&x, quantize_row_q5_1);
        assert_eq!(b.m, fp32_to_fp16(-1.0));
        let mut y = [0f32; 32];
        b.dequantize(&mut y);
        for (a, r) in x.iter().zip(&y) {
            assert!((a - r).abs() < 0.06, "{a} vs {r}");
        }
        let b: BlockQ4_1 = quantize_one(&x, quantize_row_q4_1);
        assert_eq!(b.qs[0] & 0x0F, 0);
        assert_eq!(b.qs[15] >> 4, 15);
    }

    #[test]
    fn quantize_q5_0_fifth_bits() {
        // Weights alternate between the extremes -16 * d and 15 * d.
        let x: [f32; 32] = std::array::from_fn(|j| if j % 2 == 0 { 16.0 } else { -15.0 });
        let b: BlockQ5_0 = quantize_one(&x, quantize_row_q5_0);
        assert_eq!(b.d.to_f32(), -1.0);
        assert_eq!(u32::from_le_bytes(b.qh), 0xAAAA_AAAA);
        let mut y = [0f32; 32];
        b.dequantize(&mut y);
        assert_eq!(y, x);
    }

    #[test]
    fn vec_dot_pairs_by_hand() {
        // Operands that every format stores exactly (scales are powers of two), so each dot
        // product is exact: y is 127/128 in block 0 and 127/64 in block 1 (Q8 scales 2^-7, 2^-6).
        let y: Vec<f32> = (0..64).map(|j| if j < 32 { 127.0 / 128.0 } else { 127.0 / 64.0 }).collect();
        let q = |f: fn(&[f32], &mut [u8]), bytes: usize, v: &[f32]| {
            let mut out = vec![0u8; v.len() / 32 * bytes];
            f(v, &mut out);
            out
        };
        let (y8, y81) = (q(quantize_row_q8_0, 34, &y), q(quantize_row_q8_1, 36, &y));
        let dot = |x: &[f32]| -> f32 { x.iter().zip(&y).map(|(a, b)| a * b).sum() };
        // Q4_0 / Q4_1: (j % 16 - 8) / 2, so d = 0.5 (Q4_1: range 7.5 / 15, m = -4).
        let x4: Vec<f32> = (0..64).map(|j| ((j % 16) as f32 - 8.0) * 0.5).collect();
        // Q5_0 / Q5_1: (j % 32 - 16) / 2, so d = 0.5 (Q5_1: range 15.5 / 31, m = -8).
        let x5: Vec<f32> = (0..64).map(|j| ((j % 32) as f32 - 16.0) * 0.5).collect();
        // Q8_0: halves with 63.5 = 127 * 0.5 in each block.
        let x8: Vec<f32> = (0..64).map(|j| if j % 32 == 3 { 63.5 } else { (j as f32 - 40.0) * 0.5 }).collect();
        assert_eq!(vec_dot_q4_0_q8_0(64, &q(quantize_row_q4_0, 18, &x4), &y8), dot(&x4));
        assert_eq!(vec_dot_q4_1_q8_1(64, &q(quantize_row_q4_1, 20, &x4), &y81), dot(&x4));
        assert_eq!(vec_dot_q5_0_q8_0(64, &q(quantize_row_q5_0, 22, &x5), &y8), dot(&x5));
        assert_eq!(vec_dot_q5_1_q8_1(64, &q(quantize_row_q5_1, 24, &x5), &y81), dot(&x5));
        assert_eq!(vec_dot_q8_0_q8_0(64, &q(quantize_row_q8_0, 34, &x8), &y8), dot(&x8));
    }

    #[test]
    fn round_half_away_matches_roundf() {
        let mut v: Vec<f32> = vec![0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997, 127.5, -127.5];
        v.extend([8_388_607.5, 8_388_608.0, -8_388_609.0, 1e30, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE]);
        let mut s = 0x9E37_79B9u32;
        for _ in 0..100_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            v.push(f32::from_bits(s & 0xCBFF_FFFF)); // magnitudes below about 2^24, both signs
        }
        for x in v {
            let (got, want) = (round_half_away(x), x.round());
            assert!(got == want, "{x:e}: {got} vs {want}");
        }
        assert!(round_half_away(f32::NAN).is_nan());
    }
}
