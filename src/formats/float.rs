//! Unquantized element types: F32, F16 and BF16 (one weight per "block").
//!
//! Both conversions to f32 are exact. F16 goes through the `half` crate, which like ggml's
//! `ggml_compute_fp16_to_fp32` (ggml-impl.h) and the F16C instruction returns NaNs quieted with
//! their payload kept. BF16 is the upper half of an f32, so it is a plain 16-bit shift as in
//! `ggml_compute_bf16_to_fp32`; NaN payloads pass through untouched (unlike `half::bf16::to_f32`,
//! which sets the quiet bit, so it is deliberately not used here).

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Elements converted per batch by the F16 path (stack buffer size).
const F16_BATCH: usize = 256;

/// Copies little-endian f32 values. `data.len()` must be `4 * out.len()`.
pub fn dequantize_row_f32(data: &[u8], out: &mut [f32]) {
    assert_eq!(
        data.len(),
        out.len() * 4,
        "F32: byte count does not match element count"
    );
    for (b, y) in data.chunks_exact(4).zip(out.iter_mut()) {
        *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Converts little-endian IEEE half floats. `data.len()` must be `2 * out.len()`.
pub fn dequantize_row_f16(data: &[u8], out: &mut [f32]) {
    assert_eq!(
        data.len(),
        out.len() * 2,
        "F16: byte count does not match element count"
    );
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
    assert_eq!(
        data.len(),
        out.len() * 2,
        "BF16: byte count does not match element count"
    );
    for (b, y) in data.chunks_exact(2).zip(out.iter_mut()) {
        *y = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// ggml's `GGML_BF16_TO_FP32`: the bf16 bits become the top half of the f32.
#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
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
        let vals = [
            0.0f32,
            -0.0,
            1.5,
            -3.25e-40,
            f32::INFINITY,
            f32::from_bits(0x7f80_0001),
        ];
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
}
