//! Unquantized element types: F32, F16 and BF16 (one weight per "block").
//!
//! Both conversions to f32 are exact. F16 goes through the `half` crate, which like ggml's
//! `ggml_compute_fp16_to_fp32` (ggml-impl.h) and the F16C instruction returns NaNs quieted with
//! their payload kept. BF16 is the upper half of an f32, so it is a plain 16-bit shift as in
//! `ggml_compute_bf16_to_fp32`; NaN payloads pass through untouched (unlike `half::bf16::to_f32`,
//! which sets the quiet bit, so it is deliberately not used here).
//!
//! The other direction is what `ggml_quantize_chunk` does for these types: F32 is a copy, F16 is
//! `ggml_fp32_to_fp16_row` and BF16 `ggml_fp32_to_bf16_row_ref`, both round to nearest even (see
//! [`fp32_to_fp16`] and [`fp32_to_bf16`] for their NaN rules). The dot products follow ggml-cpu's
//! scalar path for F16·F16 and BF16·BF16 (`ggml_vec_dot_f16` / `ggml_vec_dot_bf16` without SIMD):
//! each product in f32, summed in f64 (`ggml_float`).

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Elements converted per batch by the F16 path (stack buffer size).
const F16_BATCH: usize = 256;

/// Copies little-endian f32 values. `data.len()` must be `4 * out.len()`.
pub fn dequantize_row_f32(data: &[u8], out: &mut [f32]) {
    assert_eq!(data.len(), out.len() * 4, "F32: byte count does not match element count");
    for (b, y) in data.chunks_exact(4).zip(out.iter_mut()) {
        *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Converts little-endian IEEE half floats. `data.len()` must be `2 * out.len()`.
pub fn dequantize_row_f16(data: &[u8], out: &mut [f32]) {
    assert_eq!(data.len(), out.len() * 2, "F16: byte count does not match element count");
    let mut buf = [f16::ZERO; F16_BATCH];
    for (bytes, y) in data.chunks(2 * F16_BATCH).zip(out.chunks_mut(F16_BATCH)) {
        let buf = &mut buf[..y.len()];
        for (h, b) in buf.iter_mut().zip(bytes.chunks_exact(2)) {
            *h = f16::from_le_bytes([b[0], b[1]]);
        }
        // Uses F16C when the CPU has it; both paths are exact.
        buf.convert_to_f32_slice(y);
    }
}

/// Converts little-endian bfloat16 values. `data.len()` must be `2 * out.len()`.
pub fn dequantize_row_bf16(data: &[u8], out: &mut [f32]) {
    assert_eq!(data.len(), out.len() * 2, "BF16: byte count does not match element count");
    for (b, y) in data.chunks_exact(2).zip(out.iter_mut()) {
        *y = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// ggml's `GGML_BF16_TO_FP32`: the bf16 bits become the top half of the f32.
#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// ggml's `GGML_FP32_TO_FP16` (`ggml_compute_fp32_to_fp16` in ggml-impl.h), which llama-quantize
/// uses for every f16 it writes (F16 tensors and the scales of quantized blocks): round to
/// nearest even, overflow to ±inf, subnormals kept. For non-NaN input that is exactly IEEE
/// conversion, done here by the `half` crate; a NaN becomes the canonical quiet NaN `0x7e00`
/// with its sign kept and its payload dropped (where `half` would keep payload bits).
#[inline(always)]
pub fn fp32_to_fp16(x: f32) -> f16 {
    if x.is_nan() {
        f16::from_bits(((x.to_bits() >> 16) as u16 & 0x8000) | 0x7e00)
    } else {
        f16::from_f32(x)
    }
}

/// ggml's `ggml_compute_fp32_to_bf16` (ggml-impl.h), returning the bf16 bits: round to nearest
/// even (finite values may round up to ±inf), and a NaN keeps its top 16 bits with the quiet bit
/// forced on. Subnormals are kept, as in the reference row conversion llama-quantize uses.
#[inline(always)]
pub fn fp32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        ((u >> 16) | 0x40) as u16
    } else {
        // Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even. No overflow:
        // the largest non-NaN pattern is 0xff80_0000 (-inf).
        ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
    }
}

/// `ggml_quantize_chunk` for F32: writes `src` as little-endian f32. `dst.len()` must be
/// `4 * src.len()`.
pub fn quantize_row_f32(src: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), src.len() * 4, "F32: byte count does not match element count");
    for (x, out) in src.iter().zip(dst.chunks_exact_mut(4)) {
        out.copy_from_slice(&x.to_le_bytes());
    }
}

/// `ggml_fp32_to_fp16_row`: writes `src` as little-endian f16 ([`fp32_to_fp16`]). `dst.len()`
/// must be `2 * src.len()`.
pub fn quantize_row_f16(src: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), src.len() * 2, "F16: byte count does not match element count");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("f16c") {
        // SAFETY: F16C was just detected; the lengths were checked above.
        unsafe { x86_f16c::quantize_row_f16(src, dst) };
        return;
    }
    quantize_row_f16_scalar(src, dst);
}

/// [`quantize_row_f16`] one value at a time with [`fp32_to_fp16`]: the reference the F16C path
/// is tested against, and its path for groups holding a NaN.
fn quantize_row_f16_scalar(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&fp32_to_fp16(*x).to_le_bytes());
    }
}

/// F16C conversion, eight values per `vcvtps2ph` with round to nearest even: for non-NaN input
/// that is IEEE conversion (subnormals, overflow to ±inf and all), so the bits of
/// [`fp32_to_fp16`]; a group of eight holding a NaN goes through the scalar code, whose NaN
/// bits (`0x7e00`, sign kept) differ from the instruction's (payload kept).
#[cfg(target_arch = "x86_64")]
mod x86_f16c {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support F16C (and so AVX); `dst.len() == 2 * src.len()`.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn quantize_row_f16(src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), 2 * src.len());
        let full = src.len() / 8 * 8;
        let mut i = 0;
        while i < full {
            let v = _mm256_loadu_ps(src.as_ptr().add(i));
            if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) != 0 {
                super::quantize_row_f16_scalar(&src[i..i + 8], &mut dst[2 * i..2 * i + 16]);
            } else {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm_storeu_si128(dst.as_mut_ptr().add(2 * i) as *mut __m128i, h);
            }
            i += 8;
        }
        super::quantize_row_f16_scalar(&src[full..], &mut dst[2 * full..]);
    }
}

/// `ggml_fp32_to_bf16_row_ref`: writes `src` as little-endian bf16 ([`fp32_to_bf16`]).
/// `dst.len()` must be `2 * src.len()`.
pub fn quantize_row_bf16(src: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), src.len() * 2, "BF16: byte count does not match element count");
    for (x, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&fp32_to_bf16(*x).to_le_bytes());
    }
}

/// Checks that `x` and `y` each hold exactly `n` 2-byte elements.
#[inline(always)]
fn check_dot_lengths(ty: &str, n: usize, x: &[u8], y: &[u8]) {
    assert!(x.len() == 2 * n && y.len() == 2 * n, "vec_dot {ty}: n = {n} with {} and {} bytes", x.len(), y.len());
}

/// `ggml_vec_dot_f16`'s scalar path: `n` little-endian f16 weights (`x`) with `n` f16
/// activations (`y`). Each product is rounded to f32, then summed in f64; the result is rounded
/// to f32 once at the end.
pub fn vec_dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_dot_lengths("F16", n, x, y);
    let mut sumf = 0f64;
    for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let a = f16::from_le_bytes([a[0], a[1]]).to_f32();
        let b = f16::from_le_bytes([b[0], b[1]]).to_f32();
        sumf += (a * b) as f64;
    }
    sumf as f32
}

/// `ggml_vec_dot_bf16`'s scalar path: `n` little-endian bf16 weights (`x`) with `n` bf16
/// activations (`y`), products in f32 summed in f64 as in [`vec_dot_f16`].
pub fn vec_dot_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    check_dot_lengths("BF16", n, x, y);
    let mut sumf = 0f64;
    for (a, b) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
        let a = bf16_to_f32(u16::from_le_bytes([a[0], a[1]]));
        let b = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
        sumf += (a * b) as f64;
    }
    sumf as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{dequantize, dequantize_to_vec};
    use crate::gguf::GgmlType;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn formats_f32_roundtrip_bits() {
        let vals = [0.0f32, -0.0, 1.5, -3.25e-40, f32::INFINITY, f32::from_bits(0x7f80_0001)];
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let out = dequantize_to_vec(GgmlType::F32, &data, vals.len()).unwrap();
        assert_eq!(bits(&out), bits(&vals));
    }

    #[test]
    fn formats_f16_known_values() {
        // (f16 bits, f32 bits)
        let cases: [(u16, u32); 9] = [
            (0x3c00, 0x3f80_0000), // 1.0
            (0xc000, 0xc000_0000), // -2.0
            (0x0000, 0x0000_0000), // +0
            (0x8000, 0x8000_0000), // -0
            (0x0001, 0x3380_0000), // smallest subnormal 2^-24
            (0x03ff, 0x387f_c000), // largest subnormal
            (0x7bff, 0x477f_e000), // 65504
            (0xfc00, 0xff80_0000), // -inf
            (0x7e00, 0x7fc0_0000), // quiet NaN
        ];
        let data: Vec<u8> = cases.iter().flat_map(|(h, _)| h.to_le_bytes()).collect();
        let out = dequantize_to_vec(GgmlType::F16, &data, cases.len()).unwrap();
        for ((h, want), got) in cases.iter().zip(&out) {
            assert_eq!(got.to_bits(), *want, "f16 {h:#06x}");
        }
    }

    #[test]
    fn formats_f16_all_finite_values_exact() {
        // Every finite f16 converts exactly: round-tripping back to f16 is the identity, and the
        // batched path agrees with the scalar one (more than one batch, odd tail).
        let all: Vec<u16> = (0..=u16::MAX).filter(|h| h & 0x7c00 != 0x7c00).collect();
        let data: Vec<u8> = all.iter().flat_map(|h| h.to_le_bytes()).collect();
        let out = dequantize_to_vec(GgmlType::F16, &data, all.len()).unwrap();
        for (h, y) in all.iter().zip(&out) {
            assert_eq!(f16::from_f32(*y).to_bits(), *h);
            assert_eq!(y.to_bits(), f16::from_bits(*h).to_f32().to_bits());
        }
    }

    #[test]
    fn formats_bf16_is_a_shift() {
        let cases: [u16; 6] = [0x3f80, 0xc040, 0x0001, 0x7f80, 0x7f81, 0xffff];
        let data: Vec<u8> = cases.iter().flat_map(|h| h.to_le_bytes()).collect();
        let out = dequantize_to_vec(GgmlType::BF16, &data, cases.len()).unwrap();
        for (h, y) in cases.iter().zip(&out) {
            assert_eq!(y.to_bits(), (*h as u32) << 16);
        }
        assert_eq!(out[0], 1.0);
        assert_eq!(out[1], -3.0);
    }

    #[test]
    fn formats_float_wrong_lengths() {
        let mut out = [0f32; 3];
        assert!(dequantize(GgmlType::F32, &[0u8; 11], &mut out).is_err());
        assert!(dequantize(GgmlType::F16, &[0u8; 7], &mut out).is_err());
        assert!(dequantize(GgmlType::BF16, &[0u8; 4], &mut out).is_err());
        assert!(dequantize(GgmlType::BF16, &[0u8; 6], &mut out).is_ok());
    }

    /// ggml's `ggml_compute_fp32_to_fp16` (ggml-impl.h) bit trick, as an independent oracle.
    fn ggml_fp32_to_fp16_oracle(f: f32) -> u16 {
        let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
        let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
        let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
        let w = f.to_bits();
        let shl1_w = w.wrapping_add(w);
        let sign = w & 0x8000_0000;
        let bias = (shl1_w & 0xff00_0000).max(0x7100_0000);
        base += f32::from_bits((bias >> 1) + 0x0780_0000);
        let bits = base.to_bits();
        let nonsign = ((bits >> 13) & 0x7c00) + (bits & 0x0fff);
        ((sign >> 16) | if shl1_w > 0xff00_0000 { 0x7e00 } else { nonsign }) as u16
    }

    #[test]
    fn quantize_fp16_matches_ggml_bit_trick() {
        let edges = [0u32, 0x8000_0000, 0x3380_0000, 0x3300_0000, 0x3300_0001, 0x477f_efff, 0x477f_f000];
        let stride = (0..=u32::MAX).step_by(251).chain(edges).chain([0x7f80_0000, 0xff80_0000, 0x7fc0_0000]);
        for bits in stride.chain((0x7f80_0001..0x7f80_0100).chain(0xffbf_ff00..0xffc0_0100)) {
            let x = f32::from_bits(bits);
            assert_eq!(fp32_to_fp16(x).to_bits(), ggml_fp32_to_fp16_oracle(x), "{bits:#010x}");
        }
        // Every f16 survives the round trip, and a tie rounds to even.
        for h in 0..=u16::MAX {
            let v = f16::from_bits(h);
            if !v.is_nan() {
                assert_eq!(fp32_to_fp16(v.to_f32()).to_bits(), h);
            }
        }
        assert_eq!(fp32_to_fp16(1.0 + 2f32.powi(-11)).to_bits(), 0x3c00);
        assert_eq!(fp32_to_fp16(1.0 + 3.0 * 2f32.powi(-11)).to_bits(), 0x3c02);
    }

    /// The row conversion (F16C where the CPU has it) gives the scalar bits for a stride over
    /// every f32 pattern, in rows whose groups of eight mix NaNs, infinities, subnormals,
    /// overflow and ties, with a ragged tail.
    #[test]
    fn quantize_row_f16_matches_scalar() {
        let edges = [0x7fc0_0000u32, 0xff80_0001, 0x477f_f000, 0x3300_0000, 0x0000_0001, 0x3f80_1000];
        let vals: Vec<f32> = (0..=u32::MAX).step_by(4099).chain(edges).map(f32::from_bits).collect();
        for len in [vals.len(), vals.len() - 3, 7] {
            let src = &vals[..len];
            let (mut fast, mut slow) = (vec![0u8; 2 * len], vec![0u8; 2 * len]);
            quantize_row_f16(src, &mut fast);
            quantize_row_f16_scalar(src, &mut slow);
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn quantize_bf16_rounding_and_nan() {
        let cases: [(u32, u16); 11] = [
            (0x3f80_0000, 0x3f80), // 1.0
            (0x3f80_8000, 0x3f80), // tie, even stays
            (0x3f81_8000, 0x3f82), // tie, odd rounds up
            (0x3f80_8001, 0x3f81), // above the tie
            (0x8000_0000, 0x8000), // -0
            (0x0001_8000, 0x0002), // subnormal, kept (tie to even)
            (0x7f7f_ffff, 0x7f80), // f32::MAX rounds up to inf
            (0xff80_0000, 0xff80), // -inf
            (0x7f80_0001, 0x7fc0), // signaling NaN: quieted, top bits kept
            (0xffc1_2345, 0xffc1), // quiet NaN keeps its payload's top bits
            (0x7fff_ffff, 0x7fff), // NaN with every bit set
        ];
        for (f, b) in cases {
            assert_eq!(fp32_to_bf16(f32::from_bits(f)), b, "{f:#010x}");
        }
    }

    #[test]
    fn quantize_float_rows_round_trip() {
        let x: Vec<f32> = (0..300).map(|i| ((i as f32) * 0.731).sin() * 10f32.powi(i % 7 - 3)).collect();
        let mut b32 = vec![0u8; 1200];
        quantize_row_f32(&x, &mut b32);
        assert_eq!(bits(&dequantize_to_vec(GgmlType::F32, &b32, 300).unwrap()), bits(&x));
        let mut b16 = vec![0u8; 600];
        quantize_row_f16(&x, &mut b16);
        let y = dequantize_to_vec(GgmlType::F16, &b16, 300).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(*b, f16::from_f32(*a).to_f32());
        }
        quantize_row_bf16(&x, &mut b16);
        let y = dequantize_to_vec(GgmlType::BF16, &b16, 300).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= a.abs() * 2f32.powi(-8), "{a} vs {b}");
        }
    }

    #[test]
    fn vec_dot_float_accumulates_in_f64() {
        // 4096 * 4096 = 2^24, plus four products of 0.5: an f32 accumulator would stay at 2^24,
        // f64 reaches 2^24 + 2 (representable in f32).
        let x = [4096.0f32, 1.0, 1.0, 1.0, 1.0];
        let y = [4096.0f32, 0.5, 0.5, 0.5, 0.5];
        let (mut bx, mut by) = (vec![0u8; 10], vec![0u8; 10]);
        quantize_row_f16(&x, &mut bx);
        quantize_row_f16(&y, &mut by);
        assert_eq!(vec_dot_f16(5, &bx, &by), 16_777_218.0);
        quantize_row_bf16(&x, &mut bx);
        quantize_row_bf16(&y, &mut by);
        assert_eq!(vec_dot_bf16(5, &bx, &by), 16_777_218.0);
    }

    #[test]
    #[should_panic(expected = "vec_dot F16")]
    fn vec_dot_float_rejects_mismatched_lengths() {
        vec_dot_f16(3, &[0u8; 6], &[0u8; 4]);
    }
}
