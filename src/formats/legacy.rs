//! The legacy 32-weight block formats: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
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

use half::f16;

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

impl Block for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const QK: usize = QK4_0;
    const BYTES: usize = 18;

    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        BlockQ4_0 {
            d: read_f16(b, 0),
            qs: read_array(b, 2),
        }
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
        BlockQ4_1 {
            d: read_f16(b, 0),
            m: read_f16(b, 2),
            qs: read_array(b, 4),
        }
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
        BlockQ5_0 {
            d: read_f16(b, 0),
            qh: read_array(b, 2),
            qs: read_array(b, 6),
        }
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
        BlockQ5_1 {
            d: read_f16(b, 0),
            m: read_f16(b, 2),
            qh: read_array(b, 4),
            qs: read_array(b, 8),
        }
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
        BlockQ8_0 {
            d: read_f16(b, 0),
            qs: read_i8_array(b, 2),
        }
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
        let b = BlockQ4_0 {
            d: h(1.0),
            qs: nibbles(),
        };
        roundtrip(b);
        let out = dequantize_to_vec(GgmlType::Q4_0, &bytes(&[b]), 32).unwrap();
        let want: Vec<f32> = (0..32).map(|j| (j % 16) as f32 - 8.0).collect();
        assert_eq!(out, want);

        let b2 = BlockQ4_0 {
            d: h(-0.25),
            qs: [0x0F; 16],
        };
        let out = dequantize_to_vec(GgmlType::Q4_0, &bytes(&[b, b2]), 64).unwrap();
        assert!(out[32..48].iter().all(|&x| x == 7.0 * -0.25));
        assert!(out[48..].iter().all(|&x| x == -8.0 * -0.25));
    }

    #[test]
    fn formats_q4_1_known_values() {
        let b = BlockQ4_1 {
            d: h(0.5),
            m: h(-2.0),
            qs: nibbles(),
        };
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
        let b = BlockQ5_0 {
            d: h(2.0),
            qh: 0xAAAA_AAAAu32.to_le_bytes(),
            qs: nibbles(),
        };
        roundtrip(b);
        let out = dequantize_to_vec(GgmlType::Q5_0, &bytes(&[b]), 32).unwrap();
        let want: Vec<f32> = (0..32)
            .map(|j| (((j % 16) | ((j & 1) << 4)) as f32 - 16.0) * 2.0)
            .collect();
        assert_eq!(out, want);
    }

    #[test]
    fn formats_q5_1_known_values() {
        // Only weight 31's fifth bit set.
        let b = BlockQ5_1 {
            d: h(1.0),
            m: h(0.5),
            qh: (1u32 << 31).to_le_bytes(),
            qs: nibbles(),
        };
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
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
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
}
