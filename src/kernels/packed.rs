//! Weight matrices of the 32-block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) and of IQ4_XS,
//! repacked at load 16 rows at a time so that one 32-bit SIMD lane holds one row.
//!
//! Why: in the row-major layout a 256-bit register holds 32 weights of one row, so every
//! block's integer products end in eight partial sums that must be reduced, converted and
//! scaled per row and per token: on AVX2 the one-row kernels spent more instructions on that
//! and on unpacking each weight block again for every token than on the products themselves
//! (perf: three quarters of a Q4_0 pp512 in `q4_0_q8_0`). With rows interleaved, lane `r` holds
//! four consecutive weights of row `r`; multiply-adds against broadcast activations finish a
//! whole 32-weight block for eight rows in integers, each block costs one conversion and two or
//! three float operations per eight outputs, and a weight chunk is unpacked once for all the
//! tokens of a call. llama.cpp repacks Q4_0 and IQ4_NL for the same reason.
//!
//! Numerics: per block the integer dot product is exact, and the float terms are formed and
//! added in the order of the format's scalar reference (`formats::legacy::vec_dot_*`,
//! `formats::iq4::vec_dot_iq4_nl_q8_0`, `formats::iq4::vec_dot_iq4_xs_q8_k`: one term per
//! 32-weight sub-block), block after block, without fused multiply-adds. So
//! every output is bit for bit the scalar reference's, whatever the instruction set, the token
//! grouping or the thread count (`packed_*` tests).
//!
//! Layout of a packed matrix: groups of 16 rows; per group, per 32-column block:
//! - the 16 rows' f16 scales `d` (32 bytes);
//! - Q4_1 and Q5_1: the 16 rows' f16 minimums `m` (32 bytes);
//! - Q5_0 and Q5_1: the 16 rows' fifth bits, 4 bytes per row rearranged so that bit `c` of
//!   byte `j` is the fifth bit of weight `4c + j` and bit `4 + c` that of weight `16 + 4c + j`
//!   (64 bytes): one shift and one mask put a chunk's fifth bits at bit 4 of its bytes;
//! - the quants in chunks of 4 bytes per row: chunk `c`, lane `r` holds bytes `4c..4c+4` of
//!   row `r`'s quants. For the 4-bit formats those bytes carry weights `4c..4c+4` in their low
//!   nibbles and `16+4c..16+4c+4` in their high ones (4 chunks, 256 bytes); for Q8_0 they are
//!   weights `4c..4c+4` (8 chunks, 512 bytes).
//!
//! IQ4_XS (256-weight super-blocks) per group and super-block: the 16 rows' f16 `d` (32 bytes),
//! their `scales_h` (32 bytes), their `scales_l` (64 bytes), then the 128 quant bytes of each
//! row in chunks of 4 as above (32 chunks; sub-block `s` is chunks `4s..4s + 4`, laid out like
//! an IQ4_NL block), with Q8_K activations.
//!
//! A packed matrix has exactly the bytes of the original, rearranged. Rows 0..8 of a chunk are
//! its first 32 bytes, so a 256-bit register takes half a group.
//!
//! Products: `vpmaddubsw` multiplies unsigned by signed bytes. The 4- and 5-bit quants are
//! unsigned already (Q4_0's weight is `q - 8`, Q5_0's `q - 16`: the prepared activations carry
//! `-8 · Σa` or `-16 · Σa` per block as the integer sum's starting value). Q8_0's quants and
//! IQ4_NL's and IQ4_XS's table values are signed and go through `|w| · sign(a, w)`. Every path
//! is exact for every weight byte and every activation in `[-127, 127]`, all the activation
//! quantizers make (Q8_K too: its scale is `max / -127`, so no quant rounds to -128).

use crate::formats::iq4::KVALUES_IQ4NL;
use crate::gguf::GgmlType;

use super::isa::Isa;

/// Rows per packed group.
pub const ROWS: usize = 16;
/// Weights per block of the 32-block formats.
const QK: usize = 32;
/// Weights per IQ4_XS super-block.
const QK_K: usize = 256;
/// What the AVX-512 kernels add to a signed weight (Q8_0, the IQ4 tables) to make it unsigned.
const SIGNED_OFFSET: i32 = 128;
/// Bytes of one prepared activation block: the f32 scale, a second word and the 32 quants.
/// The second word is the i32 `-bias · Σa` for Q4_0 and Q5_0 (the integer sum's starting
/// value), the f32 sum `s` of the Q8_1 block for Q4_1 and Q5_1, and the i32 `-128 · Σa` for
/// the signed Q8_0 and IQ4_NL: the AVX-512 kernels add 128 to those weights to make them
/// unsigned for `vpdpbusd`, and start from it (the AVX2 kernels and the reference do not).
pub const PREP_BLOCK: usize = 40;
/// Bytes of one prepared IQ4_XS activation super-block: the Q8_K scale as f32, 4 unused bytes
/// (the 32-block formats' second word), the 256 quants, and per 32-weight sub-block the i32
/// `-128 · Σa` (for the AVX-512 kernel, as for IQ4_NL above).
pub const PREP_SUPER: usize = 8 + QK_K + 4 * (QK_K / QK);

/// Whether matrices of `ty` with `rows` rows are repacked for `isa`: one of the seven formats,
/// whole groups of rows, and packed kernels for that instruction set.
pub fn packable(ty: GgmlType, rows: usize, isa: Isa) -> bool {
    kind(ty).is_some() && rows > 0 && rows.is_multiple_of(ROWS) && kernel(ty, isa, 1).is_some()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    IQ4NL,
    IQ4XS,
}

fn kind(ty: GgmlType) -> Option<Kind> {
    match ty {
        GgmlType::Q4_0 => Some(Kind::Q4_0),
        GgmlType::Q4_1 => Some(Kind::Q4_1),
        GgmlType::Q5_0 => Some(Kind::Q5_0),
        GgmlType::Q5_1 => Some(Kind::Q5_1),
        GgmlType::Q8_0 => Some(Kind::Q8_0),
        GgmlType::IQ4_NL => Some(Kind::IQ4NL),
        GgmlType::IQ4_XS => Some(Kind::IQ4XS),
        _ => None,
    }
}

impl Kind {
    fn has_min(self) -> bool {
        matches!(self, Kind::Q4_1 | Kind::Q5_1)
    }

    fn has_qh(self) -> bool {
        matches!(self, Kind::Q5_0 | Kind::Q5_1)
    }

    /// IQ4_XS: a 16-bit and a 32-bit field of sub-block scales, in the places of the other
    /// formats' minimum and fifth bits (copied as they are).
    fn has_scales(self) -> bool {
        self == Kind::IQ4XS
    }

    /// Weights per block.
    fn block_weights(self) -> usize {
        if self == Kind::IQ4XS {
            QK_K
        } else {
            QK
        }
    }

    /// Quant bytes per row and block.
    fn quant_bytes(self) -> usize {
        match self {
            Kind::Q8_0 => 32,
            Kind::IQ4XS => 128,
            _ => 16,
        }
    }

    /// Bytes of one raw block: f16 scale, f16 minimum (IQ4_XS: `scales_h`), fifth bits
    /// (IQ4_XS: `scales_l`), quants.
    fn raw_block(self) -> usize {
        2 + 2 * (self.has_min() || self.has_scales()) as usize
            + 4 * (self.has_qh() || self.has_scales()) as usize
            + self.quant_bytes()
    }

    /// Offsets inside one raw block of the minimum, the fifth bits and the quants.
    fn raw_offsets(self) -> (usize, usize, usize) {
        let m = 2;
        let qh = m + 2 * (self.has_min() || self.has_scales()) as usize;
        (m, qh, qh + 4 * (self.has_qh() || self.has_scales()) as usize)
    }

    /// Bytes of one group's block: 16 rows' raw blocks, rearranged.
    fn group_block(self) -> usize {
        ROWS * self.raw_block()
    }

    /// Offsets inside one group block of the minimums, the fifth bits and the quants.
    fn group_offsets(self) -> (usize, usize, usize) {
        let m = 2 * ROWS;
        let qh = m + 2 * ROWS * (self.has_min() || self.has_scales()) as usize;
        (m, qh, qh + 4 * ROWS * (self.has_qh() || self.has_scales()) as usize)
    }

    /// What the prepared second word cancels, as `-offset · Σa`: the unsigned quants' bias
    /// ([`Kind::bias`]), or for the signed kinds the 128 the AVX-512 kernels add to each weight.
    fn prepared_offset(self) -> i32 {
        if self.bias() != 0 {
            self.bias()
        } else {
            SIGNED_OFFSET
        }
    }

    /// What the unsigned quants exceed the signed weights by (0: signed, or a minimum instead).
    fn bias(self) -> i32 {
        match self {
            Kind::Q4_0 => 8,
            Kind::Q5_0 => 16,
            _ => 0,
        }
    }
}

/// The Q5 fifth bits `qh` (bit `j` for weight `j`) in the packed arrangement (module doc).
fn spread_qh(qh: u32) -> [u8; 4] {
    std::array::from_fn(|j| {
        (0..4).fold(0u8, |b, c| {
            b | (((qh >> (4 * c + j)) & 1) << c) as u8 | (((qh >> (16 + 4 * c + j)) & 1) << (4 + c)) as u8
        })
    })
}

/// The inverse of [`spread_qh`].
fn gather_qh(p: [u8; 4]) -> u32 {
    let mut qh = 0u32;
    for (j, &b) in p.iter().enumerate() {
        for c in 0..4 {
            qh |= (((b >> c) & 1) as u32) << (4 * c + j);
            qh |= (((b >> (4 + c)) & 1) as u32) << (16 + 4 * c + j);
        }
    }
    qh
}

/// Rearranges the row-major blocks `raw` of a `rows x cols` matrix of `ty` into the packed
/// layout. Panics unless `ty` is packable, `rows` a multiple of 16 and the lengths agree.
pub fn pack(ty: GgmlType, rows: usize, cols: usize, raw: &[u8]) -> Vec<u8> {
    let k = kind(ty).expect("a packable type");
    assert!(rows.is_multiple_of(ROWS) && cols.is_multiple_of(k.block_weights()), "{rows}x{cols} does not pack");
    let nb = cols / k.block_weights();
    let rb = k.raw_block();
    assert_eq!(raw.len(), rows * nb * rb, "{ty} matrix of {rows}x{cols}: wrong length");
    let (rm, rqh, rq) = k.raw_offsets();
    let (gm, gqh, gq) = k.group_offsets();
    let mut out = vec![0u8; raw.len()];
    for g in 0..rows / ROWS {
        for b in 0..nb {
            let dst = &mut out[(g * nb + b) * k.group_block()..][..k.group_block()];
            for r in 0..ROWS {
                let src = &raw[((g * ROWS + r) * nb + b) * rb..][..rb];
                dst[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
                if k.has_min() || k.has_scales() {
                    dst[gm + 2 * r..gm + 2 * r + 2].copy_from_slice(&src[rm..rm + 2]);
                }
                if k.has_qh() {
                    let qh = u32::from_le_bytes(src[rqh..rqh + 4].try_into().expect("4 bytes"));
                    dst[gqh + 4 * r..gqh + 4 * r + 4].copy_from_slice(&spread_qh(qh));
                } else if k.has_scales() {
                    dst[gqh + 4 * r..gqh + 4 * r + 4].copy_from_slice(&src[rqh..rqh + 4]);
                }
                for c in 0..k.quant_bytes() / 4 {
                    let o = gq + c * 4 * ROWS + 4 * r;
                    dst[o..o + 4].copy_from_slice(&src[rq + 4 * c..rq + 4 * c + 4]);
                }
            }
        }
    }
    out
}

/// Row `l` of the group block `src`, back in its raw block `dst`.
fn unpack_block(k: Kind, src: &[u8], l: usize, dst: &mut [u8]) {
    let (rm, rqh, rq) = k.raw_offsets();
    let (gm, gqh, gq) = k.group_offsets();
    dst[..2].copy_from_slice(&src[2 * l..2 * l + 2]);
    if k.has_min() || k.has_scales() {
        dst[rm..rm + 2].copy_from_slice(&src[gm + 2 * l..gm + 2 * l + 2]);
    }
    if k.has_qh() {
        let p = src[gqh + 4 * l..gqh + 4 * l + 4].try_into().expect("4 bytes");
        dst[rqh..rqh + 4].copy_from_slice(&gather_qh(p).to_le_bytes());
    } else if k.has_scales() {
        dst[rqh..rqh + 4].copy_from_slice(&src[gqh + 4 * l..gqh + 4 * l + 4]);
    }
    for c in 0..k.quant_bytes() / 4 {
        let o = gq + c * 4 * ROWS + 4 * l;
        dst[rq + 4 * c..rq + 4 * c + 4].copy_from_slice(&src[o..o + 4]);
    }
}

/// Row `r` of a packed matrix, back in its raw blocks (`out` holds one raw row).
pub fn unpack_row(ty: GgmlType, cols: usize, packed: &[u8], r: usize, out: &mut [u8]) {
    let k = kind(ty).expect("a packable type");
    assert_eq!(out.len(), cols / k.block_weights() * k.raw_block(), "one raw row");
    let (g, l, nb) = (r / ROWS, r % ROWS, cols / k.block_weights());
    for (b, dst) in out.chunks_exact_mut(k.raw_block()).enumerate() {
        unpack_block(k, &packed[(g * nb + b) * k.group_block()..][..k.group_block()], l, dst);
    }
}

/// Row `r` of a packed matrix dequantized into `out` (`cols` values), through the format's own
/// dequantization one block at a time, so the values are exactly those of the raw row. Nothing
/// is allocated: the forward pass looks up token embeddings this way.
pub fn dequantize_row(ty: GgmlType, cols: usize, packed: &[u8], r: usize, out: &mut [f32]) {
    let k = kind(ty).expect("a packable type");
    assert_eq!(out.len(), cols, "one row of values");
    let (g, l, nb) = (r / ROWS, r % ROWS, cols / k.block_weights());
    let mut raw = [0u8; 136];
    let raw = &mut raw[..k.raw_block()];
    for (b, o) in out.chunks_exact_mut(k.block_weights()).enumerate() {
        unpack_block(k, &packed[(g * nb + b) * k.group_block()..][..k.group_block()], l, raw);
        crate::formats::dequantize(ty, raw, o).expect("one whole block");
    }
}

/// The activation type of `ty`'s products (Q8_0, Q8_1 for the formats with a minimum, Q8_K
/// for IQ4_XS).
pub fn activation_type(ty: GgmlType) -> GgmlType {
    crate::formats::traits(ty).vec_dot_type
}

/// Blocks per row of `cols` weights of the packable `ty`: what the kernels take as `nb`.
pub fn blocks(ty: GgmlType, cols: usize) -> usize {
    cols / kind(ty).expect("a packable type").block_weights()
}

/// Bytes of one prepared activation row of `cols` values for weights of `ty`.
pub fn prepared_row_bytes(ty: GgmlType, cols: usize) -> usize {
    if kind(ty) == Some(Kind::IQ4XS) {
        cols / QK_K * PREP_SUPER
    } else {
        cols / QK * PREP_BLOCK
    }
}

/// Prepares one activation row `y` of `cols` values, quantized to [`activation_type`], for
/// weights of `ty`: per block the scale as f32, the second word (see [`PREP_BLOCK`]) and the
/// 32 quants.
pub fn prepare(ty: GgmlType, cols: usize, y: &[u8], out: &mut [u8]) {
    let k = kind(ty).expect("a packable type");
    if k == Kind::IQ4XS {
        // Q8_K: the f32 scale, 256 quants, 16 i16 sums (unused here).
        const YB: usize = 4 + QK_K + 32;
        let nb = cols / QK_K;
        assert!(y.len() == nb * YB && out.len() == nb * PREP_SUPER, "prepared row lengths");
        for (src, dst) in y.chunks_exact(YB).zip(out.chunks_exact_mut(PREP_SUPER)) {
            dst[..4].copy_from_slice(&src[..4]);
            dst[4..8].fill(0);
            let qs = &src[4..4 + QK_K];
            dst[8..8 + QK_K].copy_from_slice(qs);
            for (sub, o) in qs.chunks_exact(QK).zip(dst[8 + QK_K..].chunks_exact_mut(4)) {
                o.copy_from_slice(&neg_offset_sum(SIGNED_OFFSET, sub).to_le_bytes());
            }
        }
        return;
    }
    let nb = cols / QK;
    let yb = if k.has_min() { 36 } else { 34 };
    assert!(y.len() == nb * yb && out.len() == nb * PREP_BLOCK, "prepared row lengths");
    for (src, dst) in y.chunks_exact(yb).zip(out.chunks_exact_mut(PREP_BLOCK)) {
        let d = half::f16::from_le_bytes([src[0], src[1]]).to_f32();
        let qs = &src[yb - QK..];
        let second = if k.has_min() {
            half::f16::from_le_bytes([src[2], src[3]]).to_f32().to_bits()
        } else {
            neg_offset_sum(k.prepared_offset(), qs) as u32
        };
        dst[..4].copy_from_slice(&d.to_le_bytes());
        dst[4..8].copy_from_slice(&second.to_le_bytes());
        dst[8..].copy_from_slice(qs);
    }
}

/// `-offset · Σa` over the activation quants `q` (signed bytes).
fn neg_offset_sum(offset: i32, q: &[u8]) -> i32 {
    -offset * q.iter().map(|&v| v as i8 as i32).sum::<i32>()
}

/// A packed kernel: `ng` groups of packed weights `w` (`nb` blocks per row) against `T`
/// prepared activation rows, the `t`-th at `a + t * a_stride`; the 16 results of group `g` for
/// token `t` go to `y + t * y_stride + 16 * g`.
///
/// Callers guarantee that `w` holds `ng` groups, each activation row `nb` prepared blocks,
/// and that every output position is valid for writes and written by no one else meanwhile.
pub type KernelFn =
    unsafe fn(nb: usize, ng: usize, w: *const u8, a: *const u8, a_stride: usize, y: *mut f32, y_stride: usize);

/// The packed kernel for `ty` on `isa` taking `t` tokens at once (1, 4 or 8), if one exists.
///
/// AVX-512 machines with VNNI take the [`avx512`] kernels, for all seven formats. Measured on
/// the Zen 4 machine (2026-12-07, alternated runs, medians of 3 each), against the AVX2 packed
/// kernels: pp512 IQ4_XS 816-825 -> 1515-1598 t/s, Q4_0 931-1177 -> 1386-1609, tg128 even;
/// Q8_0, which had kept the VNNI row kernels (the AVX2 packed ones generated ~20% slower),
/// against those: pp512 673-825 -> 918-1603, tg128 127-153 -> 137-159 (every file's output
/// matrix is Q8_0). AVX-512 without VNNI takes the AVX2 kernels, but for Q8_0, which keeps the
/// row kernels there. Every packed kernel gives the scalar reference's bits.
pub fn kernel(ty: GgmlType, isa: Isa, t: usize) -> Option<KernelFn> {
    let k = kind(ty)?;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if x86::usable() => x86::pick(k, t),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if avx512::usable() => avx512::pick(k, t),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if x86::usable() && k != Kind::Q8_0 => x86::pick(k, t),
        _ => {
            let _ = (k, t);
            None
        }
    }
}

/// The weight of chunk byte `byte` at position `j` of a block (0..32) as the kernels see it:
/// the unsigned quant for Q4_0/Q4_1/Q5_0/Q5_1 (fifth bit from `qh`, the packed arrangement),
/// the signed value for Q8_0 and IQ4_NL.
fn weight(k: Kind, q: &[u8], qh: [u8; 4], l: usize, j: usize) -> i32 {
    if k == Kind::Q8_0 {
        return q[(j / 4) * 4 * ROWS + 4 * l + j % 4] as i8 as i32;
    }
    let (c, i) = ((j % 16) / 4, j % 4);
    let byte = q[c * 4 * ROWS + 4 * l + i];
    let nib = if j < 16 { byte & 0xF } else { byte >> 4 };
    match k {
        Kind::IQ4NL => KVALUES_IQ4NL[nib as usize] as i32,
        Kind::Q5_0 | Kind::Q5_1 => {
            let bit = if j < 16 { c } else { 4 + c };
            (nib | (((qh[i] >> bit) & 1) << 4)) as i32
        }
        _ => nib as i32,
    }
}

/// The scalar reference of the packed kernels (tests): what every SIMD version must equal bit
/// for bit, formed from the packed bytes exactly as the format's scalar `vec_dot` forms each
/// output from the raw ones.
pub fn reference(ty: GgmlType, nb: usize, ng: usize, w: &[u8], a: &[&[u8]], y: &mut [f32], y_stride: usize) {
    let k = kind(ty).expect("a packable type");
    if k == Kind::IQ4XS {
        return reference_iq4xs(nb, ng, w, a, y, y_stride);
    }
    let gb = k.group_block();
    let (gm, gqh, gq) = k.group_offsets();
    assert_eq!(w.len(), ng * nb * gb, "packed weights");
    let f16 = |p: &[u8], i: usize| half::f16::from_le_bytes([p[2 * i], p[2 * i + 1]]).to_f32();
    for (t, at) in a.iter().enumerate() {
        assert_eq!(at.len(), nb * PREP_BLOCK, "prepared activations");
        for g in 0..ng {
            for l in 0..ROWS {
                let mut acc = 0f32;
                for b in 0..nb {
                    let blk = &w[(g * nb + b) * gb..][..gb];
                    let ab = &at[b * PREP_BLOCK..][..PREP_BLOCK];
                    let dw = f16(blk, l);
                    let da = f32::from_le_bytes(ab[..4].try_into().unwrap());
                    let second = u32::from_le_bytes(ab[4..8].try_into().unwrap());
                    let qh = if k.has_qh() { blk[gqh + 4 * l..gqh + 4 * l + 4].try_into().unwrap() } else { [0; 4] };
                    // The signed kinds' second word is for the AVX-512 kernels only.
                    let mut s = if k.bias() != 0 { second as i32 } else { 0 };
                    for j in 0..QK {
                        s += weight(k, &blk[gq..], qh, l, j) * ab[8 + j] as i8 as i32;
                    }
                    let f = s as f32;
                    acc += match k {
                        Kind::Q4_0 => f * dw * da,
                        Kind::Q5_0 | Kind::Q8_0 | Kind::IQ4NL => (dw * da) * f,
                        Kind::Q4_1 | Kind::Q5_1 => (dw * da) * f + f16(&blk[gm..], l) * f32::from_bits(second),
                        Kind::IQ4XS => unreachable!("IQ4_XS returned above"),
                    };
                }
                y[t * y_stride + g * ROWS + l] = acc;
            }
        }
    }
}

/// [`reference`] for IQ4_XS: per super-block `d4d8 = d · d_a`, then per sub-block
/// `acc += (d4d8 · (ls - 32)) · Σ w·a`, as `formats::iq4::vec_dot_iq4_xs_q8_k` does.
fn reference_iq4xs(nb: usize, ng: usize, w: &[u8], a: &[&[u8]], y: &mut [f32], y_stride: usize) {
    let k = Kind::IQ4XS;
    let gb = k.group_block();
    let (gm, gqh, gq) = k.group_offsets();
    assert_eq!(w.len(), ng * nb * gb, "packed weights");
    for (t, at) in a.iter().enumerate() {
        assert_eq!(at.len(), nb * PREP_SUPER, "prepared activations");
        for g in 0..ng {
            for l in 0..ROWS {
                let mut acc = 0f32;
                for b in 0..nb {
                    let blk = &w[(g * nb + b) * gb..][..gb];
                    let ab = &at[b * PREP_SUPER..][..PREP_SUPER];
                    let dw = half::f16::from_le_bytes([blk[2 * l], blk[2 * l + 1]]).to_f32();
                    let d4d8 = dw * f32::from_le_bytes(ab[..4].try_into().unwrap());
                    let sh = u16::from_le_bytes([blk[gm + 2 * l], blk[gm + 2 * l + 1]]) as u32;
                    let sl = u32::from_le_bytes(blk[gqh + 4 * l..gqh + 4 * l + 4].try_into().unwrap());
                    for s in 0..QK_K / QK {
                        let ls = ((sl >> (4 * s)) & 0xF) | (((sh >> (2 * s)) & 3) << 4);
                        let dl = d4d8 * (ls as i32 - 32) as f32;
                        // Sub-block `s` is laid out as an IQ4_NL block, 16 chunks further per `s`.
                        let q = &blk[gq + s * 4 * 4 * ROWS..];
                        let mut sum = 0i32;
                        for j in 0..QK {
                            sum += weight(Kind::IQ4NL, q, [0; 4], l, j) * ab[8 + QK * s + j] as i8 as i32;
                        }
                        acc += dl * sum as f32;
                    }
                }
                y[t * y_stride + g * ROWS + l] = acc;
            }
        }
    }
}

/// The x86 kernels' format parameter (`run::<K, T>`): a `u8` because const generics take no
/// enums on stable Rust.
#[cfg(target_arch = "x86_64")]
mod code {
    use super::Kind;

    pub const Q4_0: u8 = 0;
    pub const Q4_1: u8 = 1;
    pub const Q5_0: u8 = 2;
    pub const Q5_1: u8 = 3;
    pub const Q8_0: u8 = 4;
    pub const IQ4NL: u8 = 5;

    pub fn kind_of(k: u8) -> Kind {
        [Kind::Q4_0, Kind::Q4_1, Kind::Q5_0, Kind::Q5_1, Kind::Q8_0, Kind::IQ4NL][k as usize]
    }
}

/// The kernel of an x86 module for format `k` and `t` tokens: its `run::<K, T>`, or `run_xs::<T>`
/// for IQ4_XS.
#[cfg(target_arch = "x86_64")]
macro_rules! pick_kernels {
    ($k:expr, $t:expr) => {{
        macro_rules! k {
            ($kind:expr) => {
                match $t {
                    1 => Some(run::<$kind, 1> as KernelFn),
                    4 => Some(run::<$kind, 4> as KernelFn),
                    8 => Some(run::<$kind, 8> as KernelFn),
                    _ => None,
                }
            };
        }
        match $k {
            Kind::Q4_0 => k!(Q4_0),
            Kind::Q4_1 => k!(Q4_1),
            Kind::Q5_0 => k!(Q5_0),
            Kind::Q5_1 => k!(Q5_1),
            Kind::Q8_0 => k!(Q8_0),
            Kind::IQ4NL => k!(IQ4NL),
            Kind::IQ4XS => match $t {
                1 => Some(run_xs::<1> as KernelFn),
                4 => Some(run_xs::<4> as KernelFn),
                8 => Some(run_xs::<8> as KernelFn),
                _ => None,
            },
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::code::*;
    use super::{KernelFn, Kind, PREP_BLOCK, PREP_SUPER, QK, QK_K, ROWS};
    use crate::formats::iq4::KVALUES_IQ4NL;

    /// F16C on top of what `Isa::Avx2` guarantees (AVX2, FMA); asked once (cpuid traps in a VM).
    pub(super) fn usable() -> bool {
        use std::sync::OnceLock;
        static V: OnceLock<bool> = OnceLock::new();
        *V.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c"))
    }

    /// How far ahead of the block being computed the one-token kernel prefetches weights.
    const PREFETCH_BYTES: usize = 2048;

    pub(super) fn pick(k: Kind, t: usize) -> Option<KernelFn> {
        pick_kernels!(k, t)
    }

    /// One token streams the weights from memory once: asks for the `gb` bytes of the group
    /// block `PREFETCH_BYTES` ahead of `blk` while that one is computed. The addresses may lie
    /// past the matrix (a prefetch never faults), hence `wrapping_add`.
    #[inline(always)]
    unsafe fn prefetch_ahead(blk: *const u8, gb: usize) {
        let mut off = 0;
        while off < gb {
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH_BYTES + off) as *const i8);
            off += 64;
        }
    }

    #[inline(always)]
    unsafe fn bcast32(p: *const u8) -> __m256i {
        _mm256_set1_epi32((p as *const i32).read_unaligned())
    }

    /// `Σ |w|·sign(a, w)` over groups of four bytes into i32 lanes, added to `acc`: `w` · `a`
    /// exactly for signed `w` and `a` in `[-127, 127]` (pairs of products stay inside i16).
    #[inline(always)]
    unsafe fn dot_signed(acc: __m256i, aw: __m256i, w: __m256i, a: __m256i, ones: __m256i) -> __m256i {
        let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(a, w));
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones))
    }

    /// The i32 dot products of one block of eight rows (`half` of the group block `blk`)
    /// with `T` prepared activation blocks, per row lane, starting from their second word for
    /// Q4_0 and Q5_0.
    #[inline(always)]
    unsafe fn int_sums<const K: u8, const T: usize>(blk: *const u8, half: usize, ab: &[*const u8; T]) -> [__m256i; T] {
        let kind = kind_of(K);
        let (_, gqh, gq) = kind.group_offsets();
        let q = blk.add(gq + 32 * half);
        let ones = _mm256_set1_epi16(1);
        let low = _mm256_set1_epi8(0x0F);
        let mut s32: [__m256i; T] =
            std::array::from_fn(|t| if kind.bias() != 0 { bcast32(ab[t].add(4)) } else { _mm256_setzero_si256() });
        match K {
            Q8_0 => {
                for c in 0..8 {
                    let w = _mm256_loadu_si256(q.add(64 * c) as *const __m256i);
                    let aw = _mm256_abs_epi8(w);
                    for t in 0..T {
                        s32[t] = dot_signed(s32[t], aw, w, bcast32(ab[t].add(8 + 4 * c)), ones);
                    }
                }
            }
            IQ4NL => {
                let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
                for c in 0..4 {
                    let raw = _mm256_loadu_si256(q.add(64 * c) as *const __m256i);
                    let lo = _mm256_shuffle_epi8(table, _mm256_and_si256(raw, low));
                    let hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low));
                    let (alo, ahi) = (_mm256_abs_epi8(lo), _mm256_abs_epi8(hi));
                    for t in 0..T {
                        s32[t] = dot_signed(s32[t], alo, lo, bcast32(ab[t].add(8 + 4 * c)), ones);
                        s32[t] = dot_signed(s32[t], ahi, hi, bcast32(ab[t].add(24 + 4 * c)), ones);
                    }
                }
            }
            _ => {
                // Unsigned quants: pairs of products are at most 2·31·127, so four products of
                // 5-bit or eight of 4-bit quants add up inside i16 before widening.
                let five = K == Q5_0 || K == Q5_1;
                let qh = if five { _mm256_loadu_si256(blk.add(gqh + 32 * half) as *const __m256i) } else { low };
                let fifth = _mm256_set1_epi8(0x10);
                let mut s16 = [_mm256_setzero_si256(); T];
                for c in 0..4 {
                    let raw = _mm256_loadu_si256(q.add(64 * c) as *const __m256i);
                    let mut lo = _mm256_and_si256(raw, low);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low);
                    if five {
                        let (l5, h5) = match c {
                            0 => (_mm256_slli_epi16::<4>(qh), qh),
                            1 => (_mm256_slli_epi16::<3>(qh), _mm256_srli_epi16::<1>(qh)),
                            2 => (_mm256_slli_epi16::<2>(qh), _mm256_srli_epi16::<2>(qh)),
                            _ => (_mm256_slli_epi16::<1>(qh), _mm256_srli_epi16::<3>(qh)),
                        };
                        lo = _mm256_or_si256(lo, _mm256_and_si256(l5, fifth));
                        hi = _mm256_or_si256(hi, _mm256_and_si256(h5, fifth));
                    }
                    for t in 0..T {
                        let p = _mm256_add_epi16(
                            _mm256_maddubs_epi16(lo, bcast32(ab[t].add(8 + 4 * c))),
                            _mm256_maddubs_epi16(hi, bcast32(ab[t].add(24 + 4 * c))),
                        );
                        s16[t] = if c == 0 { p } else { _mm256_add_epi16(s16[t], p) };
                    }
                    if five && c == 1 {
                        for t in 0..T {
                            s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(s16[t], ones));
                            s16[t] = _mm256_setzero_si256();
                        }
                    }
                }
                for t in 0..T {
                    s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(s16[t], ones));
                }
            }
        }
        s32
    }

    /// `K`: the format (`super::code`). See [`KernelFn`] for the contract.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available (`kernel` hands this out only then), and the
    /// pointers must satisfy [`KernelFn`]'s contract.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run<const K: u8, const T: usize>(
        nb: usize,
        ng: usize,
        w: *const u8,
        a: *const u8,
        a_stride: usize,
        y: *mut f32,
        y_stride: usize,
    ) {
        let kind = kind_of(K);
        let gb = kind.group_block();
        let (gm, _, _) = kind.group_offsets();
        for g in 0..ng {
            let wg = w.add(g * nb * gb);
            for half in 0..2 {
                let mut acc = [_mm256_setzero_ps(); T];
                for b in 0..nb {
                    let blk = wg.add(b * gb);
                    if T == 1 && half == 0 {
                        prefetch_ahead(blk, gb);
                    }
                    let ab: [*const u8; T] = std::array::from_fn(|t| a.add(t * a_stride + b * PREP_BLOCK));
                    let s32 = int_sums::<K, T>(blk, half, &ab);
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * half) as *const __m128i));
                    let mw = if kind.has_min() {
                        _mm256_cvtph_ps(_mm_loadu_si128(blk.add(gm + 16 * half) as *const __m128i))
                    } else {
                        dw
                    };
                    for t in 0..T {
                        let da = _mm256_broadcast_ss(&*(ab[t] as *const f32));
                        let f = _mm256_cvtepi32_ps(s32[t]);
                        // The scalar references' association: Q4_0 `(isum * dx) * dy`, the
                        // others `(dx * dy) * isum`, plus `mx * sy` for Q4_1 and Q5_1.
                        let term = match K {
                            Q4_0 => _mm256_mul_ps(_mm256_mul_ps(f, dw), da),
                            Q4_1 | Q5_1 => {
                                let sa = _mm256_broadcast_ss(&*(ab[t].add(4) as *const f32));
                                _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(dw, da), f), _mm256_mul_ps(mw, sa))
                            }
                            _ => _mm256_mul_ps(_mm256_mul_ps(dw, da), f),
                        };
                        acc[t] = _mm256_add_ps(acc[t], term);
                    }
                }
                for (t, acc_t) in acc.iter().enumerate() {
                    _mm256_storeu_ps(y.add(t * y_stride + g * ROWS + 8 * half), *acc_t);
                }
            }
        }
    }

    /// The IQ4_XS kernel (see [`KernelFn`]): per super-block and half group, the eight rows'
    /// scales are decoded once for the `T` tokens; per sub-block each token's integer sum is
    /// that of an IQ4_NL block, and adds `(d4d8 · (ls - 32)) · sum` to the row's lane, the
    /// scalar reference's terms.
    ///
    /// # Safety
    /// As for [`run`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_xs<const T: usize>(
        nb: usize,
        ng: usize,
        w: *const u8,
        a: *const u8,
        a_stride: usize,
        y: *mut f32,
        y_stride: usize,
    ) {
        let kind = Kind::IQ4XS;
        let gb = kind.group_block();
        let (gsh, gsl, gq) = kind.group_offsets();
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for g in 0..ng {
            let wg = w.add(g * nb * gb);
            for half in 0..2 {
                let mut acc = [_mm256_setzero_ps(); T];
                for b in 0..nb {
                    let blk = wg.add(b * gb);
                    if T == 1 && half == 0 {
                        prefetch_ahead(blk, gb);
                    }
                    let ab: [*const u8; T] = std::array::from_fn(|t| a.add(t * a_stride + b * PREP_SUPER));
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * half) as *const __m128i));
                    let d4d8: [__m256; T] =
                        std::array::from_fn(|t| _mm256_mul_ps(dw, _mm256_broadcast_ss(&*(ab[t] as *const f32))));
                    // Each row's scale fields in its lane, shifted on by one sub-block per step.
                    let mut sh = _mm256_cvtepu16_epi32(_mm_loadu_si128(blk.add(gsh + 16 * half) as *const __m128i));
                    let mut sl = _mm256_loadu_si256(blk.add(gsl + 32 * half) as *const __m256i);
                    for s in 0..QK_K / QK {
                        let ls = _mm256_or_si256(
                            _mm256_and_si256(sl, _mm256_set1_epi32(0x0F)),
                            _mm256_slli_epi32::<4>(_mm256_and_si256(sh, _mm256_set1_epi32(3))),
                        );
                        let lsf = _mm256_cvtepi32_ps(_mm256_sub_epi32(ls, _mm256_set1_epi32(32)));
                        sl = _mm256_srli_epi32::<4>(sl);
                        sh = _mm256_srli_epi32::<2>(sh);
                        let q = blk.add(gq + s * 4 * 4 * ROWS + 32 * half);
                        let mut s32 = [_mm256_setzero_si256(); T];
                        for c in 0..4 {
                            let raw = _mm256_loadu_si256(q.add(64 * c) as *const __m256i);
                            let lo = _mm256_shuffle_epi8(table, _mm256_and_si256(raw, low));
                            let hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low));
                            let (alo, ahi) = (_mm256_abs_epi8(lo), _mm256_abs_epi8(hi));
                            for t in 0..T {
                                let at = ab[t].add(8 + QK * s);
                                s32[t] = dot_signed(s32[t], alo, lo, bcast32(at.add(4 * c)), ones);
                                s32[t] = dot_signed(s32[t], ahi, hi, bcast32(at.add(16 + 4 * c)), ones);
                            }
                        }
                        for t in 0..T {
                            let term = _mm256_mul_ps(_mm256_mul_ps(d4d8[t], lsf), _mm256_cvtepi32_ps(s32[t]));
                            acc[t] = _mm256_add_ps(acc[t], term);
                        }
                    }
                }
                for (t, acc_t) in acc.iter().enumerate() {
                    _mm256_storeu_ps(y.add(t * y_stride + g * ROWS + 8 * half), *acc_t);
                }
            }
        }
    }
}

/// The packed kernels with AVX-512: one 512-bit register holds all 16 rows of a group, and
/// `vpdpbusd` (VNNI) forms each group of four byte products and adds it to the row's i32
/// lane in one instruction, where AVX2 needs `vpmaddubsw`, `vpmaddwd` and `vpaddd` per eight
/// rows (plus `vpsignb` for the signed weights). `vpdpbusd` multiplies unsigned by signed bytes
/// without saturating: the 4- and 5-bit quants are unsigned already; Q8_0's quants and the
/// IQ4 table values are made unsigned by adding 128, and the sum starts from the prepared
/// `-128 · Σa` instead (see [`PREP_BLOCK`], [`PREP_SUPER`]), which cancels it exactly. The float
/// terms are the AVX2 kernels' (and the reference's), lane by lane: the same bits.
///
/// Unlike the AVX2 kernels these do not prefetch for one token: on the Zen 4 machine the
/// hardware prefetcher alone streamed faster (a one-token product over 151 MB of Q8_0 groups,
/// one thread, alternated: 17.0-20.0 GB/s with the 2 KiB-ahead prefetch, 19.4-20.0 without).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::code::*;
    use super::{KernelFn, Kind, PREP_BLOCK, PREP_SUPER, QK, QK_K, ROWS, SIGNED_OFFSET};
    use crate::formats::iq4::KVALUES_IQ4NL;

    /// AVX-512 F/BW with VNNI, F16C and FMA; asked once (cpuid traps in a VM).
    pub(super) fn usable() -> bool {
        use std::sync::OnceLock;
        static V: OnceLock<bool> = OnceLock::new();
        *V.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }

    pub(super) fn pick(k: Kind, t: usize) -> Option<KernelFn> {
        pick_kernels!(k, t)
    }

    /// Four activation bytes (or one i32) at `p` in every lane.
    #[inline(always)]
    unsafe fn bcast32(p: *const u8) -> __m512i {
        _mm512_set1_epi32((p as *const i32).read_unaligned())
    }

    /// The IQ4_NL table plus [`SIGNED_OFFSET`], as unsigned bytes, in every 128-bit lane.
    #[inline(always)]
    unsafe fn table_plus_128() -> __m512i {
        let t: [u8; 16] = std::array::from_fn(|i| (KVALUES_IQ4NL[i] as i32 + SIGNED_OFFSET) as u8);
        _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr() as *const __m128i))
    }

    /// The i32 dot products of one group block `blk` (16 rows) with `T` prepared activation
    /// blocks, per row lane, starting from their second word where that is an integer.
    ///
    /// One token has no other token's products to overlap with, and one chain of eight
    /// dependent `vpdpbusd` per block was the bound of a generation step (Q8_0 tg128 ~5% below
    /// the row kernels): it then spreads the products over four sums, added at the end
    /// (integers: the same result).
    #[inline(always)]
    unsafe fn int_sums<const K: u8, const T: usize>(blk: *const u8, ab: &[*const u8; T]) -> [__m512i; T] {
        let kind = kind_of(K);
        let (_, gqh, gq) = kind.group_offsets();
        let q = blk.add(gq);
        let low = _mm512_set1_epi8(0x0F);
        let np = if T == 1 { 4 } else { 1 };
        let mut s = [[_mm512_setzero_si512(); 4]; T];
        if !kind.has_min() {
            for t in 0..T {
                s[t][0] = bcast32(ab[t].add(4));
            }
        }
        // Adds the products of the 16 rows' four bytes `u` with activation bytes `off..off + 4`
        // into sum `i` (mod `np`) of every token. (A macro: a closure would not inherit the
        // function's target features, and every intrinsic in it became a call.)
        macro_rules! dot {
            ($i:expr, $u:expr, $off:expr) => {{
                let (i, u, off): (usize, __m512i, usize) = ($i, $u, $off);
                for t in 0..T {
                    s[t][i % np] = _mm512_dpbusd_epi32(s[t][i % np], u, bcast32(ab[t].add(off)));
                }
            }};
        }
        match K {
            Q8_0 => {
                // `w ^ 0x80` is `w + SIGNED_OFFSET` as an unsigned byte.
                let flip = _mm512_set1_epi8(i8::MIN);
                for c in 0..8 {
                    dot!(c, _mm512_xor_si512(_mm512_loadu_si512(q.add(64 * c) as *const _), flip), 8 + 4 * c);
                }
            }
            IQ4NL => {
                let table = table_plus_128();
                for c in 0..4 {
                    let raw = _mm512_loadu_si512(q.add(64 * c) as *const _);
                    dot!(2 * c, _mm512_shuffle_epi8(table, _mm512_and_si512(raw, low)), 8 + 4 * c);
                    dot!(2 * c + 1, _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16::<4>(raw), low)), 24 + 4 * c);
                }
            }
            _ => {
                let five = K == Q5_0 || K == Q5_1;
                let qh = if five { _mm512_loadu_si512(blk.add(gqh) as *const _) } else { low };
                let fifth = _mm512_set1_epi8(0x10);
                for c in 0..4 {
                    let raw = _mm512_loadu_si512(q.add(64 * c) as *const _);
                    let mut lo = _mm512_and_si512(raw, low);
                    let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), low);
                    if five {
                        let (l5, h5) = match c {
                            0 => (_mm512_slli_epi16::<4>(qh), qh),
                            1 => (_mm512_slli_epi16::<3>(qh), _mm512_srli_epi16::<1>(qh)),
                            2 => (_mm512_slli_epi16::<2>(qh), _mm512_srli_epi16::<2>(qh)),
                            _ => (_mm512_slli_epi16::<1>(qh), _mm512_srli_epi16::<3>(qh)),
                        };
                        lo = _mm512_or_si512(lo, _mm512_and_si512(l5, fifth));
                        hi = _mm512_or_si512(hi, _mm512_and_si512(h5, fifth));
                    }
                    dot!(2 * c, lo, 8 + 4 * c);
                    dot!(2 * c + 1, hi, 24 + 4 * c);
                }
            }
        }
        std::array::from_fn(|t| {
            let p = &s[t];
            if np == 1 {
                p[0]
            } else {
                _mm512_add_epi32(_mm512_add_epi32(p[0], p[1]), _mm512_add_epi32(p[2], p[3]))
            }
        })
    }

    /// `K`: the format (`super::code`). See [`KernelFn`] for the contract.
    ///
    /// # Safety
    /// The features of [`usable`] must be available (`kernel` hands this out only then), and
    /// the pointers must satisfy [`KernelFn`]'s contract.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn run<const K: u8, const T: usize>(
        nb: usize,
        ng: usize,
        w: *const u8,
        a: *const u8,
        a_stride: usize,
        y: *mut f32,
        y_stride: usize,
    ) {
        let kind = kind_of(K);
        let gb = kind.group_block();
        let (gm, _, _) = kind.group_offsets();
        for g in 0..ng {
            let wg = w.add(g * nb * gb);
            let mut acc = [_mm512_setzero_ps(); T];
            for b in 0..nb {
                let blk = wg.add(b * gb);
                let ab: [*const u8; T] = std::array::from_fn(|t| a.add(t * a_stride + b * PREP_BLOCK));
                let s32 = int_sums::<K, T>(blk, &ab);
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
                let mw = if kind.has_min() { _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(gm) as *const __m256i)) } else { dw };
                for t in 0..T {
                    let da = _mm512_set1_ps((ab[t] as *const f32).read_unaligned());
                    let f = _mm512_cvtepi32_ps(s32[t]);
                    // The association of `x86::run` and of the scalar references.
                    let term = match K {
                        Q4_0 => _mm512_mul_ps(_mm512_mul_ps(f, dw), da),
                        Q4_1 | Q5_1 => {
                            let sa = _mm512_set1_ps((ab[t].add(4) as *const f32).read_unaligned());
                            _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(dw, da), f), _mm512_mul_ps(mw, sa))
                        }
                        _ => _mm512_mul_ps(_mm512_mul_ps(dw, da), f),
                    };
                    acc[t] = _mm512_add_ps(acc[t], term);
                }
            }
            for (t, acc_t) in acc.iter().enumerate() {
                _mm512_storeu_ps(y.add(t * y_stride + g * ROWS), *acc_t);
            }
        }
    }

    /// The IQ4_XS kernel (see `x86::run_xs`), 16 rows per register.
    ///
    /// # Safety
    /// As for [`run`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn run_xs<const T: usize>(
        nb: usize,
        ng: usize,
        w: *const u8,
        a: *const u8,
        a_stride: usize,
        y: *mut f32,
        y_stride: usize,
    ) {
        let kind = Kind::IQ4XS;
        let gb = kind.group_block();
        let (gsh, gsl, gq) = kind.group_offsets();
        let table = table_plus_128();
        let low = _mm512_set1_epi8(0x0F);
        for g in 0..ng {
            let wg = w.add(g * nb * gb);
            let mut acc = [_mm512_setzero_ps(); T];
            for b in 0..nb {
                let blk = wg.add(b * gb);
                let ab: [*const u8; T] = std::array::from_fn(|t| a.add(t * a_stride + b * PREP_SUPER));
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
                let d4d8: [__m512; T] =
                    std::array::from_fn(|t| _mm512_mul_ps(dw, _mm512_set1_ps((ab[t] as *const f32).read_unaligned())));
                let mut sh = _mm512_cvtepu16_epi32(_mm256_loadu_si256(blk.add(gsh) as *const __m256i));
                let mut sl = _mm512_loadu_si512(blk.add(gsl) as *const _);
                for s in 0..QK_K / QK {
                    let ls = _mm512_or_si512(
                        _mm512_and_si512(sl, _mm512_set1_epi32(0x0F)),
                        _mm512_slli_epi32::<4>(_mm512_and_si512(sh, _mm512_set1_epi32(3))),
                    );
                    let lsf = _mm512_cvtepi32_ps(_mm512_sub_epi32(ls, _mm512_set1_epi32(32)));
                    sl = _mm512_srli_epi32::<4>(sl);
                    sh = _mm512_srli_epi32::<2>(sh);
                    let q = blk.add(gq + s * 4 * 4 * ROWS);
                    let mut s32: [__m512i; T] = std::array::from_fn(|t| bcast32(ab[t].add(8 + QK_K + 4 * s)));
                    for c in 0..4 {
                        let raw = _mm512_loadu_si512(q.add(64 * c) as *const _);
                        let lo = _mm512_shuffle_epi8(table, _mm512_and_si512(raw, low));
                        let hi = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16::<4>(raw), low));
                        for t in 0..T {
                            let at = ab[t].add(8 + QK * s);
                            s32[t] = _mm512_dpbusd_epi32(s32[t], lo, bcast32(at.add(4 * c)));
                            s32[t] = _mm512_dpbusd_epi32(s32[t], hi, bcast32(at.add(16 + 4 * c)));
                        }
                    }
                    for t in 0..T {
                        let term = _mm512_mul_ps(_mm512_mul_ps(d4d8[t], lsf), _mm512_cvtepi32_ps(s32[t]));
                        acc[t] = _mm512_add_ps(acc[t], term);
                    }
                }
            }
            for (t, acc_t) in acc.iter().enumerate() {
                _mm512_storeu_ps(y.add(t * y_stride + g * ROWS), *acc_t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats;
    use crate::kernels::vec_dot::tests::values;

    const TYPES: [GgmlType; 7] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
    ];

    fn quantize(ty: GgmlType, v: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; v.len() / ty.block_size() * ty.block_bytes()];
        (formats::traits(ty).quantize.expect("quantizable"))(v, &mut out);
        out
    }

    #[test]
    fn packed_qh_spread_round_trips() {
        for qh in [0u32, 1, 0x8000_0000, 0xFFFF_FFFF, 0x1234_5678, 0xDEAD_BEEF, 0x0001_0000] {
            assert_eq!(gather_qh(spread_qh(qh)), qh, "{qh:#x}");
        }
        // Weight 4c + j's bit is bit c of byte j; weight 16 + 4c + j's is bit 4 + c.
        assert_eq!(spread_qh(1 << 5), [0, 0b10, 0, 0]);
        assert_eq!(spread_qh(1 << 31), [0, 0, 0, 0b1000_0000]);
    }

    /// Packing keeps the length and every row comes back as it was.
    #[test]
    fn packed_unpack_row_inverts_pack() {
        for ty in TYPES {
            let (rows, cols) = (32, 3 * ty.block_size());
            let raw = quantize(ty, &values(3, rows * cols));
            let p = pack(ty, rows, cols, &raw);
            assert_eq!(p.len(), raw.len(), "{ty}");
            assert_ne!(p, raw, "{ty}: packing rearranges");
            let rb = raw.len() / rows;
            for r in 0..rows {
                let mut o = vec![0u8; rb];
                unpack_row(ty, cols, &p, r, &mut o);
                assert_eq!(o, raw[r * rb..(r + 1) * rb], "{ty} row {r}");
                let (mut got, mut want) = (vec![f32::NAN; cols], vec![0f32; cols]);
                dequantize_row(ty, cols, &p, r, &mut got);
                formats::dequantize(ty, &raw[r * rb..(r + 1) * rb], &mut want).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{ty} row {r} values");
            }
        }
    }

    /// Weights and activations at the edges of the integer paths: every quant at its largest
    /// and smallest, activations at ±127, so that a saturating or overflowing i16 sum shows.
    fn extreme_rows(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        let mut raw = quantize(ty, &values(seed, rows * cols));
        let rb = raw.len() / rows;
        let k = kind(ty).unwrap();
        let (_, rqh, rq) = k.raw_offsets();
        for r in 0..rows {
            for blk in raw[r * rb..(r + 1) * rb].chunks_exact_mut(k.raw_block()) {
                let fill = match (r + seed as usize) % 3 {
                    0 => 0xFF,
                    1 => 0x00,
                    _ => continue,
                };
                // Q8_0: -128 and 127, the extremes of a signed quant.
                blk[rq..].fill(if k == Kind::Q8_0 { fill ^ 0x80 } else { fill });
                if k.has_qh() {
                    blk[rqh..rqh + 4].fill(fill);
                }
            }
        }
        raw
    }

    /// The scalar reference on packed bytes gives the format's scalar `vec_dot` on the raw
    /// rows, bit for bit; and every SIMD kernel, at every token count, gives the reference's
    /// bits, over several groups and block counts, on random and on extreme values.
    #[test]
    fn packed_kernels_match_scalar_vec_dot_bits() {
        let mut simd_checked = 0;
        for ty in TYPES {
            let dot = formats::traits(ty).vec_dot.expect("a scalar vec_dot");
            let act = activation_type(ty);
            for (seed, rows, nb) in [(1u64, 16usize, 1usize), (2, 32, 3), (3, 48, 18), (4, 16, 48), (5, 32, 7)] {
                let cols = nb * ty.block_size();
                let raw = if seed % 2 == 1 {
                    let mut v = values(seed, rows * cols);
                    for (r, row) in v.chunks_mut(cols).enumerate() {
                        let s = 10f32.powf((r % 5) as f32 / 2.0 - 1.0);
                        row.iter_mut().for_each(|x| *x *= s);
                    }
                    quantize(ty, &v)
                } else {
                    extreme_rows(ty, rows, cols, seed)
                };
                let p = pack(ty, rows, cols, &raw);
                let nt = 9;
                let acts: Vec<Vec<u8>> = (0..nt)
                    .map(|t| {
                        let mut v: Vec<f32> = values(seed * 77 + t as u64, cols).iter().map(|x| x * 3.0).collect();
                        if t % 3 == 0 {
                            // ±127 everywhere: the largest magnitude in every block.
                            v.iter_mut().for_each(|x| *x = if *x < 0.0 { -1.0 } else { 1.0 });
                        }
                        quantize(act, &v)
                    })
                    .collect();
                let pr = prepared_row_bytes(ty, cols);
                let prep: Vec<u8> = acts
                    .iter()
                    .flat_map(|a| {
                        let mut o = vec![0u8; pr];
                        prepare(ty, cols, a, &mut o);
                        o
                    })
                    .collect();
                let refs: Vec<&[u8]> = prep.chunks_exact(pr).collect();
                let mut want = vec![f32::NAN; nt * rows];
                reference(ty, nb, rows / ROWS, &p, &refs, &mut want, rows);
                let rb = raw.len() / rows;
                for t in 0..nt {
                    for r in 0..rows {
                        let d = dot(cols, &raw[r * rb..(r + 1) * rb], &acts[t]);
                        assert_eq!(want[t * rows + r].to_bits(), d.to_bits(), "{ty} reference row {r} token {t}");
                    }
                }
                for isa in Isa::available() {
                    for tk in [1usize, 4, 8] {
                        let Some(kern) = kernel(ty, isa, tk) else { continue };
                        simd_checked += 1;
                        let mut got = vec![f32::NAN; nt * rows];
                        let mut t0 = 0;
                        while t0 + tk <= nt {
                            // SAFETY: the buffers hold `rows / 16` groups, `tk` prepared rows
                            // from `t0` and outputs for them; this kernel was handed out for
                            // an available instruction set.
                            unsafe {
                                kern(
                                    nb,
                                    rows / ROWS,
                                    p.as_ptr(),
                                    prep[t0 * pr..].as_ptr(),
                                    pr,
                                    got[t0 * rows..].as_mut_ptr(),
                                    rows,
                                )
                            };
                            t0 += tk;
                        }
                        for (i, (g, w)) in got.iter().zip(&want).enumerate().take(t0 * rows) {
                            assert_eq!(
                                g.to_bits(),
                                w.to_bits(),
                                "{ty} {} x{tk} token {} row {}",
                                isa.name(),
                                i / rows,
                                i % rows
                            );
                        }
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx2.is_available() {
            assert!(simd_checked > 0, "no packed kernel ran on an AVX2 machine");
        }
        let _ = simd_checked;
    }
}
