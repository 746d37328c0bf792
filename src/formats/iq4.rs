//! Non-linear 4-bit formats: IQ4_NL (32-weight blocks) and IQ4_XS (256-weight super-blocks).
//!
//! Each 4-bit index selects a value from the fixed table [`KVALUES_IQ4NL`]. Layouts follow
//! `ggml/src/ggml-common.h`; dequantization follows `dequantize_row_iq4_nl` and
//! `dequantize_row_iq4_xs` in `ggml/src/ggml-quants.c`: `d * kvalue` for IQ4_NL and
//! `(d * (ls - 32)) * kvalue` for IQ4_XS.

use half::f16;

use super::{dequantize_blocks, read_array, read_f16, Block};
use crate::gguf::GgmlType;
use crate::gguf::QK_K;

/// Weights per IQ4_NL block.
pub const QK4_NL: usize = 32;

/// `kvalues_iq4nl` (ggml-common.h): the 16 non-linear quantization levels.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

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
        BlockIQ4NL {
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
        let b = BlockIQ4NL {
            d: f16::from_f32(0.5),
            qs,
        };
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
        let scales_l: [u8; 4] =
            std::array::from_fn(|k| (ls[2 * k] & 0xF) | ((ls[2 * k + 1] & 0xF) << 4));
        let scales_h = (0..8).fold(0u16, |a, ib| a | (((ls[ib] >> 4) as u16) << (2 * ib)));
        let idx = |i: usize| (i * 5 + i / 32) % 16;
        let qs: [u8; 128] = std::array::from_fn(|k| {
            let (ib, j) = (k / 16, k % 16);
            idx(32 * ib + j) as u8 | ((idx(32 * ib + 16 + j) as u8) << 4)
        });
        let b = BlockIQ4XS {
            d: f16::from_f32(0.25),
            scales_h,
            scales_l,
            qs,
        };
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
}
