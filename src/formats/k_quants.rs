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

use half::f16;

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
        BlockQ2K {
            scales: read_array(b, 0),
            qs: read_array(b, 16),
            d: read_f16(b, 80),
            dmin: read_f16(b, 82),
        }
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
        BlockQ3K {
            hmask: read_array(b, 0),
            qs: read_array(b, 32),
            scales: read_array(b, 96),
            d: read_f16(b, 108),
        }
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
        BlockQ4K {
            d: read_f16(b, 0),
            dmin: read_f16(b, 2),
            scales: read_array(b, 4),
            qs: read_array(b, 16),
        }
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
        BlockQ6K {
            ql: read_array(b, 0),
            qh: read_array(b, 128),
            scales: read_i8_array(b, 192),
            d: read_f16(b, 208),
        }
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
        let b = BlockQ2K {
            scales,
            qs: [RAMP2; 64],
            d: h(1.0),
            dmin: h(0.5),
        };
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
        let b = BlockQ3K {
            hmask,
            qs: [RAMP2; 64],
            scales: pack_q3k_scales(&sc),
            d: h(0.5),
        };
        let out = deq(&b);
        for (i, &x) in out.iter().enumerate() {
            let lo = ((i / 32) % 4) as i32;
            let high = (hmask[i % 32] >> (i / 32)) & 1;
            let q = lo - if high == 1 { 0 } else { 4 };
            let want = 0.5 * ((i / 16) as f32 - 12.0) * q as f32;
            assert_eq!(x, want, "weight {i}");
        }
        // Scale -32 and q = -4 gives the extreme value 128 * d.
        let b = BlockQ3K {
            hmask: [0; 32],
            qs: [0; 64],
            scales: [0; 12],
            d: h(1.0),
        };
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
        let b = BlockQ4K {
            d: h(0.25),
            dmin: h(0.125),
            scales: pack_scale_min_k4(&sc, &m),
            qs,
        };
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
        let qh: [u8; 32] = std::array::from_fn(|l| {
            (0..8)
                .map(|b| (high(32 * b + l) as u8) << b)
                .fold(0, |a, x| a | x)
        });
        let b = BlockQ5K {
            d: h(-1.5),
            dmin: h(3.0),
            scales: pack_scale_min_k4(&sc, &m),
            qh,
            qs,
        };
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
        let b = BlockQ6K {
            ql,
            qh,
            scales,
            d: h(0.5),
        };
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
                    assert_eq!(
                        got as f64,
                        d.to_f64() * sc as f64 * q as f64,
                        "{bits:#06x} {sc} {q}"
                    );
                }
            }
        }
        let q: [u8; QK_K] = std::array::from_fn(|i| (i % 64) as u8);
        let (ql, qh) = pack_q6(&q);
        let d = f16::from_bits(0x3bff);
        let b = BlockQ6K {
            ql,
            qh,
            scales: [-127; 16],
            d,
        };
        for (i, &x) in deq(&b).iter().enumerate() {
            assert_eq!(x as f64, d.to_f64() * -127.0 * ((i % 64) as f64 - 32.0));
        }
    }

    #[test]
    fn formats_q8_k_known_values() {
        let qs: [i8; QK_K] = std::array::from_fn(|i| (i as i32 - 128) as i8);
        let bsums =
            std::array::from_fn(|g| qs[16 * g..16 * g + 16].iter().map(|&x| x as i16).sum());
        let b = BlockQ8K { d: 0.1, qs, bsums };
        let out = deq(&b);
        for (i, &x) in out.iter().enumerate() {
            assert_eq!(x.to_bits(), (0.1f32 * (i as f32 - 128.0)).to_bits());
        }
    }

    #[test]
    fn formats_k_quants_wrong_lengths() {
        let mut out = vec![0f32; 512];
        for ty in [
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::Q8_K,
        ] {
            let n = 2 * ty.block_bytes();
            assert!(dequantize(ty, &vec![0; n], &mut out).is_ok());
            assert!(dequantize(ty, &vec![0; n + 1], &mut out).is_err());
            assert!(dequantize(ty, &vec![0; n / 2], &mut out).is_err());
            assert!(dequantize(ty, &vec![0; n], &mut out[..480]).is_err());
        }
    }
}
