//! AArch64 NEON dot products of the K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and IQ4_XS against
//! Q8_K activations, fused: quants are unpacked to bytes in registers, never expanded to f32.
//!
//! Every kernel body is instantiated twice: with `sdot` (FEAT_DotProd, detected at run time;
//! emitted with inline assembly because `vdotq_s32` is not a stable intrinsic yet) and with
//! widening multiplies (`smull`/`smlal2` to i16, `sadalp` to i32) for cores without it. Both
//! compute exact integer sums per sub-block; a sub-block's sum lives in one `int32x4_t`, four
//! of them are folded with `addp` and multiplied by a vector of four scales.
//!
//! Weights are multiplied as unsigned bytes where that saves work and the constant offset is
//! taken back from the Q8_K `bsums`, as in the x86 kernels: Q3_K as `q + 4` (minus
//! `4 * sum(scale * bsum)`), Q6_K as unsigned `q` (minus `32 * sum(scale * bsum)`), and the
//! `- dmin * m` terms of Q2_K/Q4_K/Q5_K as `dmin * sum(m * bsum)`. Products are at most
//! 127 · 128 in magnitude, so the widening path's i16 pair sums cannot overflow.
//!
//! Only float summation order differs from the scalar twins (see the tests' tolerance).

use std::arch::aarch64::*;
use std::arch::asm;

use crate::formats::VecDotFn;
use crate::gguf::{GgmlType, QK_K};

const Q8K_BYTES: usize = 292; // d: f32 @0, qs: [i8; 256] @4, bsums: [i16; 16] @260
const Q8K_QS: usize = 4;
const Q8K_BSUMS: usize = 260;
const Q2K_BYTES: usize = 84; // scales @0, qs @16, d @80, dmin @82
const Q3K_BYTES: usize = 110; // hmask @0, qs @32, scales @96, d @108
const Q4K_BYTES: usize = 144; // d @0, dmin @2, scales @4, qs @16
const Q5K_BYTES: usize = 176; // d @0, dmin @2, scales @4, qh @16, qs @48
const Q6K_BYTES: usize = 210; // ql @0, qh @128, scales @192, d @208
const IQ4XS_BYTES: usize = 136; // d @0, scales_h @2, scales_l @4, qs @8

/// `kvalues_iq4nl`.
const KVALUES: [i8; 16] = crate::formats::iq4::KVALUES_IQ4NL;

/// Checks the row lengths once (a mismatch panics) and returns the number of super-blocks.
#[inline(always)]
fn super_blocks(n: usize, x: &[u8], y: &[u8], x_bytes: usize) -> usize {
    assert!(n.is_multiple_of(QK_K), "K-quant vec_dot: n = {n} is not a multiple of {QK_K}");
    let nb = n / QK_K;
    assert!(
        x.len() == nb * x_bytes && y.len() == nb * Q8K_BYTES,
        "K-quant vec_dot: n = {n} needs {} + {} bytes, got {} + {}",
        nb * x_bytes,
        nb * Q8K_BYTES,
        x.len(),
        y.len()
    );
    nb
}

// --------------------------------------------------------------------------------------------
// Helpers (`#[inline]` with a subset of the callers' features, so they inline)
// --------------------------------------------------------------------------------------------

#[inline(always)]
unsafe fn rd_f32(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

/// `acc + (4-byte dot products of a and b)` with `sdot`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    asm!(
        "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// `acc + (pair sums of a * b)` with widening multiplies. The lanes hold different partial sums
/// than `sdot`'s, but the sum over the four lanes is the same. Needs |a_i * b_i| <= 16384 and
/// pair sums within i16, which holds for every use here (|weight| <= 127).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_mull(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let p = vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), a, b);
    vpadalq_s16(acc, p)
}

/// The two f16 at `p` (unaligned) as lanes 0 and 1 (FCVTL is base ARMv8 AdvSIMD).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16x2(p: *const u8) -> float32x4_t {
    let bits = (p as *const u32).read_unaligned();
    let v: float32x4_t;
    asm!(
        "fmov {v:s}, {b:w}",
        "fcvtl {v:v}.4s, {v:v}.4h",
        b = in(reg) bits,
        v = out(vreg) v,
        options(pure, nomem, nostack, preserves_flags)
    );
    v
}

/// The f16 at `p` (unaligned).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned() as u32;
    let v: float32x4_t;
    asm!(
        "fmov {v:s}, {b:w}",
        "fcvtl {v:v}.4s, {v:v}.4h",
        b = in(reg) bits,
        v = out(vreg) v,
        options(pure, nomem, nostack, preserves_flags)
    );
    vgetq_lane_f32::<0>(v)
}

/// The sums of four sub-block accumulators, one per lane.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sum4(a: int32x4_t, b: int32x4_t, c: int32x4_t, d: int32x4_t) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(a, b), vpaddq_s32(c, d))
}

/// `sum(s * b)` over 16 i16 pairs `s` (two vectors) and the 16 `bsums` at `p`, in four i32 lanes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mul_bsums(s0: int16x8_t, s1: int16x8_t, p: *const u8) -> int32x4_t {
    let b0 = vld1q_s16(p as *const i16);
    let b1 = vld1q_s16((p as *const i16).add(8));
    let lo = vmlal_high_s16(vmull_s16(vget_low_s16(s0), vget_low_s16(b0)), s0, b0);
    vmlal_high_s16(vmlal_s16(lo, vget_low_s16(s1), vget_low_s16(b1)), s1, b1)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn ld8x16(p: *const u8) -> uint8x16_t {
    vld1q_u8(p)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

/// The eight u16 of `v` widened to i32, in two vectors.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn widen_u16(v: uint16x8_t) -> (int32x4_t, int32x4_t) {
    (vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(v))), vreinterpretq_s32_u32(vmovl_high_u16(v)))
}

/// The eight i16 of `v` widened to i32, in two vectors.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn widen_s16(v: int16x8_t) -> (int32x4_t, int32x4_t) {
    (vmovl_s16(vget_low_s16(v)), vmovl_high_s16(v))
}

/// Q4_K/Q5_K: the packed 6-bit scales and mins (12 bytes at `p`; 16 are read, the 4 after are
/// the block's quants) → bytes 0..8 the eight scales, bytes 8..16 the eight mins
/// (`get_scale_min_k4` for all `j` at once).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn k4_scales_mins(p: *const u8) -> uint8x16_t {
    const A: [u8; 16] = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11];
    const B: [u8; 16] = [255, 255, 255, 255, 0, 1, 2, 3, 255, 255, 255, 255, 4, 5, 6, 7];
    const SHIFT: [i8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -4, -4, -4, -4];
    const MASK: [u8; 16] = [63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15];
    let v = vld1q_u8(p);
    // a = [q0..4, q8..12, q4..8, q8..12]; b = [0, q0..4, 0, q4..8]. Scales/mins 0..4: low 6
    // bits; scales 4..8: low nibble of q8..12, mins 4..8: high nibble; their top two bits are
    // the top bits of q0..4 (scales) and q4..8 (mins).
    let a = vqtbl1q_u8(v, vld1q_u8(A.as_ptr()));
    let b = vqtbl1q_u8(v, vld1q_u8(B.as_ptr()));
    let lo = vandq_u8(vshlq_u8(a, vld1q_s8(SHIFT.as_ptr())), vld1q_u8(MASK.as_ptr()));
    let hi = vandq_u8(vshrq_n_u8::<2>(b), vdupq_n_u8(0x30));
    vorrq_u8(lo, hi)
}

/// Q3_K: the sixteen 6-bit scales minus 32, as i16 (two vectors). `p` points 2 bytes before the
/// 12 scale bytes, so the 16-byte load stays inside the 110-byte block.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn q3k_scales(p: *const u8) -> (int16x8_t, int16x8_t) {
    // Scale i: low nibble of s[i % 8] (low for i < 8, high otherwise), top bits from
    // s[8 + i % 4] at bit 2 * (i / 4). s[j] is v[j + 2].
    const A: [u8; 16] = [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 6, 7, 8, 9];
    const B: [u8; 16] = [10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13];
    const SHIFT_A: [i8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, -4, -4, -4, -4, -4, -4, -4, -4];
    const SHIFT_B: [i8; 16] = [0, 0, 0, 0, -2, -2, -2, -2, -4, -4, -4, -4, -6, -6, -6, -6];
    let v = vld1q_u8(p);
    let a = vqtbl1q_u8(v, vld1q_u8(A.as_ptr()));
    let b = vqtbl1q_u8(v, vld1q_u8(B.as_ptr()));
    let lo = vandq_u8(vshlq_u8(a, vld1q_s8(SHIFT_A.as_ptr())), vdupq_n_u8(0x0f));
    let hi = vandq_u8(vshlq_u8(b, vld1q_s8(SHIFT_B.as_ptr())), vdupq_n_u8(0x03));
    let sc = vsubq_s8(s8(vsliq_n_u8::<4>(lo, hi)), vdupq_n_s8(32));
    (vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc))
}

/// IQ4_XS: the eight sub-block scales `ls - 32` as i32 (two vectors), block at `p`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn iq4xs_scales(p: *const u8) -> (int32x4_t, int32x4_t) {
    const SL0: [i32; 4] = [0, -4, -8, -12];
    const SL1: [i32; 4] = [-16, -20, -24, -28];
    const SH0: [i32; 4] = [4, 2, 0, -2];
    const SH1: [i32; 4] = [-4, -6, -8, -10];
    let sh = vdupq_n_u32((p.add(2) as *const u16).read_unaligned() as u32);
    let sl = vdupq_n_u32((p.add(4) as *const u32).read_unaligned());
    let m4 = vdupq_n_u32(0x0f);
    let m30 = vdupq_n_u32(0x30);
    let off = vdupq_n_s32(32);
    // ls = ((sl >> 4ib) & 0xf) | (((sh >> 2ib) & 3) << 4)
    let l0 = vorrq_u32(
        vandq_u32(vshlq_u32(sl, vld1q_s32(SL0.as_ptr())), m4),
        vandq_u32(vshlq_u32(sh, vld1q_s32(SH0.as_ptr())), m30),
    );
    let l1 = vorrq_u32(
        vandq_u32(vshlq_u32(sl, vld1q_s32(SL1.as_ptr())), m4),
        vandq_u32(vshlq_u32(sh, vld1q_s32(SH1.as_ptr())), m30),
    );
    (vsubq_s32(vreinterpretq_s32_u32(l0), off), vsubq_s32(vreinterpretq_s32_u32(l1), off))
}

// --------------------------------------------------------------------------------------------
// Kernel bodies; `$dot` is `dot_sdot` or `dot_mull`.
// --------------------------------------------------------------------------------------------

macro_rules! q2k_body {
    ($n:ident, $x:ident, $y:ident, $dot:ident) => {{
        let nb = super_blocks($n, $x, $y, Q2K_BYTES);
        let m3 = vdupq_n_u8(3);
        let zero = vdupq_n_s32(0);
        let mut acc = vdupq_n_f32(0.0);
        for i in 0..nb {
            let xb = $x.as_ptr().add(i * Q2K_BYTES);
            let yb = $y.as_ptr().add(i * Q8K_BYTES);
            let dd = vmulq_n_f32(f16x2(xb.add(80)), rd_f32(yb));
            let q8 = yb.add(Q8K_QS);

            let sc = ld8x16(xb);
            let scales = vandq_u8(sc, vdupq_n_u8(0x0f));
            let mins = vshrq_n_u8::<4>(sc);
            let summ = mul_bsums(
                vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins))),
                vreinterpretq_s16_u16(vmovl_high_u8(mins)),
                yb.add(Q8K_BSUMS),
            );
            let (s01, s23) = (vmovl_u8(vget_low_u8(scales)), vmovl_high_u8(scales));
            let (s0, s1) = widen_u16(s01);
            let (s2, s3) = widen_u16(s23);
            let sv = [s0, s1, s2, s3];

            let mut sumi = zero;
            for j in 0..2 {
                let q = vld1q_u8_x2(xb.add(16 + 32 * j));
                // Sub-block 8j + 2k + h: bits 2k of q.h, against q8[128j + 32k + 16h..][..16].
                let mut d = [zero; 8];
                for k in 0..4 {
                    let sh = vdupq_n_s8(-2 * k as i8);
                    for (h, qh) in [q.0, q.1].into_iter().enumerate() {
                        let w = vandq_u8(vshlq_u8(qh, sh), m3);
                        d[2 * k + h] = $dot(zero, s8(w), vld1q_s8(q8.add(128 * j + 32 * k + 16 * h) as *const i8));
                    }
                }
                sumi = vmlaq_s32(sumi, sum4(d[0], d[1], d[2], d[3]), sv[2 * j]);
                sumi = vmlaq_s32(sumi, sum4(d[4], d[5], d[6], d[7]), sv[2 * j + 1]);
            }
            acc = vfmaq_laneq_f32::<0>(acc, vcvtq_f32_s32(sumi), dd);
            acc = vfmsq_laneq_f32::<1>(acc, vcvtq_f32_s32(summ), dd);
        }
        vaddvq_f32(acc)
    }};
}

macro_rules! q3k_body {
    ($n:ident, $x:ident, $y:ident, $dot:ident) => {{
        let nb = super_blocks($n, $x, $y, Q3K_BYTES);
        let m3 = vdupq_n_u8(3);
        let four = vdupq_n_u8(4);
        let zero = vdupq_n_s32(0);
        let mut acc = vdupq_n_f32(0.0);
        for i in 0..nb {
            let xb = $x.as_ptr().add(i * Q3K_BYTES);
            let yb = $y.as_ptr().add(i * Q8K_BYTES);
            let d = rd_f32(yb) * f16_at(xb.add(108));
            let q8 = yb.add(Q8K_QS);

            let (sc01, sc23) = q3k_scales(xb.add(94));
            // Quants are multiplied as q + 4 (0..8); take 4 * sum(scale * bsum) back off.
            let corr = vshlq_n_s32::<2>(mul_bsums(sc01, sc23, yb.add(Q8K_BSUMS)));
            let (s0, s1) = widen_s16(sc01);
            let (s2, s3) = widen_s16(sc23);
            let sv = [s0, s1, s2, s3];
            let hm = vld1q_u8_x2(xb);

            let mut sumi = vnegq_s32(corr);
            for j in 0..2 {
                let q = vld1q_u8_x2(xb.add(32 + 32 * j));
                let mut dv = [zero; 8];
                for k in 0..4 {
                    let sh = vdupq_n_s8(-2 * k as i8);
                    let bit = vdupq_n_u8(1 << (4 * j + k));
                    for (h, (qh, mh)) in [(q.0, hm.0), (q.1, hm.1)].into_iter().enumerate() {
                        let lo = vandq_u8(vshlq_u8(qh, sh), m3);
                        let w = vorrq_u8(lo, vandq_u8(vtstq_u8(mh, bit), four));
                        dv[2 * k + h] = $dot(zero, s8(w), vld1q_s8(q8.add(128 * j + 32 * k + 16 * h) as *const i8));
                    }
                }
                sumi = vmlaq_s32(sumi, sum4(dv[0], dv[1], dv[2], dv[3]), sv[2 * j]);
                sumi = vmlaq_s32(sumi, sum4(dv[4], dv[5], dv[6], dv[7]), sv[2 * j + 1]);
            }
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(sumi), d);
        }
        vaddvq_f32(acc)
    }};
}

macro_rules! q45k_body {
    ($n:ident, $x:ident, $y:ident, $dot:ident, $bytes:expr, $qs_off:expr, $high:expr) => {{
        let nb = super_blocks($n, $x, $y, $bytes);
        let m4 = vdupq_n_u8(0x0f);
        let sixteen = vdupq_n_u8(16);
        let zero = vdupq_n_s32(0);
        let mut acc = vdupq_n_f32(0.0);
        for i in 0..nb {
            let xb = $x.as_ptr().add(i * $bytes);
            let yb = $y.as_ptr().add(i * Q8K_BYTES);
            let dd = vmulq_n_f32(f16x2(xb), rd_f32(yb));
            let q8 = yb.add(Q8K_QS);
            let qs = xb.add($qs_off);

            let sm = k4_scales_mins(xb.add(4));
            let (s0, s1) = widen_u16(vmovl_u8(vget_low_u8(sm)));
            // Each min against the sum of the two bsums of its 32-weight sub-block.
            let b0 = vld1q_s16(yb.add(Q8K_BSUMS) as *const i16);
            let b1 = vld1q_s16((yb.add(Q8K_BSUMS) as *const i16).add(8));
            let bsum2 = vpaddq_s16(b0, b1);
            let mins = vreinterpretq_s16_u16(vmovl_high_u8(sm));
            let summ = vmlal_high_s16(vmull_s16(vget_low_s16(mins), vget_low_s16(bsum2)), mins, bsum2);
            let qh = if $high { vld1q_u8_x2(xb.add(16)) } else { uint8x16x2_t(vdupq_n_u8(0), vdupq_n_u8(0)) };

            let mut dv = [zero; 8];
            for j in 0..4 {
                let q = vld1q_u8_x2(qs.add(32 * j));
                let y = vld1q_s8_x4(q8.add(64 * j) as *const i8);
                let mut l0 = vandq_u8(q.0, m4);
                let mut l1 = vandq_u8(q.1, m4);
                let mut h0 = vshrq_n_u8::<4>(q.0);
                let mut h1 = vshrq_n_u8::<4>(q.1);
                if $high {
                    let bl = vdupq_n_u8(1 << (2 * j));
                    let bh = vdupq_n_u8(2 << (2 * j));
                    l0 = vorrq_u8(l0, vandq_u8(vtstq_u8(qh.0, bl), sixteen));
                    l1 = vorrq_u8(l1, vandq_u8(vtstq_u8(qh.1, bl), sixteen));
                    h0 = vorrq_u8(h0, vandq_u8(vtstq_u8(qh.0, bh), sixteen));
                    h1 = vorrq_u8(h1, vandq_u8(vtstq_u8(qh.1, bh), sixteen));
                }
                dv[2 * j] = $dot($dot(zero, s8(l0), y.0), s8(l1), y.1);
                dv[2 * j + 1] = $dot($dot(zero, s8(h0), y.2), s8(h1), y.3);
            }
            let sumi = vmulq_s32(sum4(dv[0], dv[1], dv[2], dv[3]), s0);
            let sumi = vmlaq_s32(sumi, sum4(dv[4], dv[5], dv[6], dv[7]), s1);
            acc = vfmaq_laneq_f32::<0>(acc, vcvtq_f32_s32(sumi), dd);
            acc = vfmsq_laneq_f32::<1>(acc, vcvtq_f32_s32(summ), dd);
        }
        vaddvq_f32(acc)
    }};
}

macro_rules! q6k_body {
    ($n:ident, $x:ident, $y:ident, $dot:ident) => {{
        let nb = super_blocks($n, $x, $y, Q6K_BYTES);
        let m3 = vdupq_n_u8(3);
        let zero = vdupq_n_s32(0);
        let mut acc = vdupq_n_f32(0.0);
        for i in 0..nb {
            let xb = $x.as_ptr().add(i * Q6K_BYTES);
            let yb = $y.as_ptr().add(i * Q8K_BYTES);
            let d = rd_f32(yb) * f16_at(xb.add(208));
            let q8 = yb.add(Q8K_QS);

            let sc = vld1q_s8(xb.add(192) as *const i8);
            let (sc01, sc23) = (vmovl_s8(vget_low_s8(sc)), vmovl_high_s8(sc));
            // Quants are multiplied unsigned (0..64); take 32 * sum(scale * bsum) back off.
            let corr = vshlq_n_s32::<5>(mul_bsums(sc01, sc23, yb.add(Q8K_BSUMS)));
            let (s0, s1) = widen_s16(sc01);
            let (s2, s3) = widen_s16(sc23);
            let sv = [s0, s1, s2, s3];

            let mut sumi = vnegq_s32(corr);
            for h in 0..2 {
                let ql = vld1q_u8_x4(xb.add(64 * h));
                let qh = vld1q_u8_x2(xb.add(128 + 32 * h));
                // Weights 128h + 32k + 16t + l (sub-block 8h + 2k + t): low four bits from
                // ql[32 * (k % 2) + 16t + l] (high nibble for k >= 2), top two from qh bits 2k.
                let (la, lb, lc, ld) = (ql.0, ql.1, ql.2, ql.3);
                let w = [
                    vsliq_n_u8::<4>(la, vandq_u8(qh.0, m3)),
                    vsliq_n_u8::<4>(lb, vandq_u8(qh.1, m3)),
                    vsliq_n_u8::<4>(lc, vandq_u8(vshrq_n_u8::<2>(qh.0), m3)),
                    vsliq_n_u8::<4>(ld, vandq_u8(vshrq_n_u8::<2>(qh.1), m3)),
                    vsliq_n_u8::<4>(vshrq_n_u8::<4>(la), vandq_u8(vshrq_n_u8::<4>(qh.0), m3)),
                    vsliq_n_u8::<4>(vshrq_n_u8::<4>(lb), vandq_u8(vshrq_n_u8::<4>(qh.1), m3)),
                    vsliq_n_u8::<4>(vshrq_n_u8::<4>(lc), vshrq_n_u8::<6>(qh.0)),
                    vsliq_n_u8::<4>(vshrq_n_u8::<4>(ld), vshrq_n_u8::<6>(qh.1)),
                ];
                let y = vld1q_s8_x4(q8.add(128 * h) as *const i8);
                let z = vld1q_s8_x4(q8.add(128 * h + 64) as *const i8);
                let yv = [y.0, y.1, y.2, y.3, z.0, z.1, z.2, z.3];
                let mut dv = [zero; 8];
                for t in 0..8 {
                    dv[t] = $dot(zero, s8(w[t]), yv[t]);
                }
                sumi = vmlaq_s32(sumi, sum4(dv[0], dv[1], dv[2], dv[3]), sv[2 * h]);
                sumi = vmlaq_s32(sumi, sum4(dv[4], dv[5], dv[6], dv[7]), sv[2 * h + 1]);
            }
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(sumi), d);
        }
        vaddvq_f32(acc)
    }};
}

macro_rules! iq4xs_body {
    ($n:ident, $x:ident, $y:ident, $dot:ident) => {{
        let nb = super_blocks($n, $x, $y, IQ4XS_BYTES);
        let m4 = vdupq_n_u8(0x0f);
        let values = vld1q_s8(KVALUES.as_ptr());
        let zero = vdupq_n_s32(0);
        let mut acc = vdupq_n_f32(0.0);
        for i in 0..nb {
            let xb = $x.as_ptr().add(i * IQ4XS_BYTES);
            let yb = $y.as_ptr().add(i * Q8K_BYTES);
            let d = rd_f32(yb) * f16_at(xb);
            let q8 = yb.add(Q8K_QS);
            let (s0, s1) = iq4xs_scales(xb);

            let mut dv = [zero; 8];
            for ib in 0..8 {
                let q = ld8x16(xb.add(8 + 16 * ib));
                let y = vld1q_s8_x2(q8.add(32 * ib) as *const i8);
                let lo = vqtbl1q_s8(values, vandq_u8(q, m4));
                let hi = vqtbl1q_s8(values, vshrq_n_u8::<4>(q));
                dv[ib] = $dot($dot(zero, lo, y.0), hi, y.1);
            }
            let sumi = vmulq_s32(sum4(dv[0], dv[1], dv[2], dv[3]), s0);
            let sumi = vmlaq_s32(sumi, sum4(dv[4], dv[5], dv[6], dv[7]), s1);
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(sumi), d);
        }
        vaddvq_f32(acc)
    }};
}

/// Defines the `sdot` and widening-multiply instantiations of a kernel body and their safe
/// wrappers.
macro_rules! neon_pair {
    ($what:literal, $dp:ident, $dp_s:ident, $ml:ident, $ml_s:ident, $body:ident $(, $arg:expr)*) => {
        #[doc = concat!($what, " · Q8_K with NEON and `sdot`.")]
        ///
        /// # Safety
        /// The CPU must support NEON and the DotProd extension.
        #[target_feature(enable = "neon,dotprod")]
        unsafe fn $dp(n: usize, x: &[u8], y: &[u8]) -> f32 {
            $body!(n, x, y, dot_sdot $(, $arg)*)
        }

        #[doc = concat!($what, " · Q8_K with NEON widening multiplies.")]
        ///
        /// # Safety
        /// The CPU must support NEON.
        #[target_feature(enable = "neon")]
        unsafe fn $ml(n: usize, x: &[u8], y: &[u8]) -> f32 {
            $body!(n, x, y, dot_mull $(, $arg)*)
        }

        fn $dp_s(n: usize, x: &[u8], y: &[u8]) -> f32 {
            // SAFETY: only handed out by `select` after `Isa::is_available` confirmed NEON,
            // and by `neon` below after detecting DotProd.
            unsafe { $dp(n, x, y) }
        }

        fn $ml_s(n: usize, x: &[u8], y: &[u8]) -> f32 {
            // SAFETY: only handed out by `select` after `Isa::is_available` confirmed NEON.
            unsafe { $ml(n, x, y) }
        }
    };
}

neon_pair!("Q2_K", q2k_dot, q2k_dot_s, q2k_mull, q2k_mull_s, q2k_body);
neon_pair!("Q3_K", q3k_dot, q3k_dot_s, q3k_mull, q3k_mull_s, q3k_body);
neon_pair!("Q4_K", q4k_dot, q4k_dot_s, q4k_mull, q4k_mull_s, q45k_body, Q4K_BYTES, 16, false);
neon_pair!("Q5_K", q5k_dot, q5k_dot_s, q5k_mull, q5k_mull_s, q45k_body, Q5K_BYTES, 48, true);
neon_pair!("Q6_K", q6k_dot, q6k_dot_s, q6k_mull, q6k_mull_s, q6k_body);
neon_pair!("IQ4_XS", iq4xs_dot, iq4xs_dot_s, iq4xs_mull, iq4xs_mull_s, iq4xs_body);

/// The `sdot` (`dotprod == true`) or widening-multiply kernel for `ty`; `None` for other types
/// or when `sdot` is asked for but the CPU lacks DotProd.
fn variant(ty: GgmlType, dotprod: bool) -> Option<VecDotFn> {
    use GgmlType as T;
    if dotprod && !std::arch::is_aarch64_feature_detected!("dotprod") {
        return None;
    }
    let f: VecDotFn = match (ty, dotprod) {
        (T::Q2_K, true) => q2k_dot_s,
        (T::Q3_K, true) => q3k_dot_s,
        (T::Q4_K, true) => q4k_dot_s,
        (T::Q5_K, true) => q5k_dot_s,
        (T::Q6_K, true) => q6k_dot_s,
        (T::IQ4_XS, true) => iq4xs_dot_s,
        (T::Q2_K, false) => q2k_mull_s,
        (T::Q3_K, false) => q3k_mull_s,
        (T::Q4_K, false) => q4k_mull_s,
        (T::Q5_K, false) => q5k_mull_s,
        (T::Q6_K, false) => q6k_mull_s,
        (T::IQ4_XS, false) => iq4xs_mull_s,
        _ => return None,
    };
    Some(f)
}

/// NEON kernels (callers have checked NEON): `sdot` when the CPU has DotProd, else widening
/// multiplies.
pub(super) fn neon(ty: GgmlType) -> Option<VecDotFn> {
    variant(ty, true).or_else(|| variant(ty, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::k_quants::{dequantize_row_q8_k, quantize_row_q8_k, BlockQ8K};
    use crate::formats::{self, dequantize_fn, Block};
    use crate::kernels::isa::Isa;
    use crate::kernels::vec_dot::{implementation, select};
    use half::f16;

    const TYPES: [GgmlType; 6] =
        [GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS];

    /// xorshift64*: deterministic test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn uniform(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
        fn normal(&mut self) -> f32 {
            (0..4).map(|_| self.uniform()).sum::<f32>()
        }
        fn byte(&mut self) -> u8 {
            (self.next() >> 56) as u8
        }
    }

    /// A kernel table: the kernel of one variant for a type.
    type Table = fn(GgmlType) -> Option<VecDotFn>;

    /// Every kernel variant this CPU can run: (name, table).
    fn variants() -> Vec<(&'static str, Table)> {
        let mut v: Vec<(&'static str, Table)> = vec![("neon-mull", |t| variant(t, false))];
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            v.push(("neon-sdot", |t| variant(t, true)));
        }
        v
    }

    fn block_bytes(ty: GgmlType) -> usize {
        ty.block_bytes()
    }

    /// Byte offsets of the f16 fields of a block.
    fn f16_offsets(ty: GgmlType) -> &'static [usize] {
        match ty {
            GgmlType::Q2_K => &[80, 82],
            GgmlType::Q3_K => &[108],
            GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            GgmlType::IQ4_XS => &[0],
            _ => unreachable!(),
        }
    }

    /// (d, dmin) offsets of the formats with a `- dmin * m` term.
    fn min_offsets(ty: GgmlType) -> Option<(usize, usize)> {
        match ty {
            GgmlType::Q2_K => Some((80, 82)),
            GgmlType::Q4_K | GgmlType::Q5_K => Some((0, 2)),
            _ => None,
        }
    }

    /// The sum over all weights of the absolute products that the dot product adds up (the
    /// `d * sc * q` and `dmin * m` parts counted separately): rounding differences between two
    /// summation orders are bounded by a few ulps of this.
    fn magnitude(ty: GgmlType, n: usize, x: &[u8], y: &[u8]) -> f64 {
        let deq = dequantize_fn(ty).unwrap();
        let mut a = vec![0f32; n];
        dequantize_row_q8_k(y, &mut a);
        let mut parts = Vec::new();
        match min_offsets(ty) {
            Some((od, om)) => {
                for zero in [om, od] {
                    let mut x2 = x.to_vec();
                    for b in x2.chunks_exact_mut(block_bytes(ty)) {
                        b[zero..zero + 2].fill(0);
                    }
                    parts.push(x2);
                }
            }
            None => parts.push(x.to_vec()),
        }
        let mut m = 0f64;
        for p in parts {
            let mut w = vec![0f32; n];
            deq(&p, &mut w);
            m += w.iter().zip(&a).map(|(&w, &a)| (w as f64 * a as f64).abs()).sum::<f64>();
        }
        m
    }

    /// Compares every variant with the scalar twin. Tolerance: the integer parts are exact, so
    /// only the float summation order differs: |simd - scalar| <= 1e-5 * magnitude + 1e-6.
    fn check_all(ty: GgmlType, n: usize, x: &[u8], y: &[u8], what: &str) {
        let scalar = formats::traits(ty).vec_dot.unwrap()(n, x, y);
        let tol = 1e-5 * magnitude(ty, n, x, y) + 1e-6;
        for (name, table) in variants() {
            let f = table(ty).unwrap_or_else(|| panic!("{name} has no {ty:?} kernel"));
            let got = f(n, x, y);
            assert!(
                (got as f64 - scalar as f64).abs() <= tol,
                "{ty:?} {name} {what} n={n}: simd {got} vs scalar {scalar} (tol {tol})"
            );
        }
    }

    fn q8k_block(d: f32, qs: [i8; QK_K]) -> Vec<u8> {
        let bsums = std::array::from_fn(|j| qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum());
        let mut v = vec![0u8; Q8K_BYTES];
        BlockQ8K { d, qs, bsums }.write(&mut v);
        v
    }

    #[test]
    fn neon_kquants_tables_cover_the_family() {
        for ty in TYPES {
            if Isa::Neon.is_available() {
                assert!(neon(ty).is_some(), "{ty:?}");
                assert!(variant(ty, false).is_some(), "{ty:?}");
                assert_eq!(implementation(ty, Isa::Neon), "neon", "{ty:?}");
                assert!(select(ty, Isa::Neon).is_some());
            }
        }
        assert!(neon(GgmlType::Q8_K).is_none());
    }

    #[test]
    fn neon_kquants_match_scalar_on_quantized_data() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for ty in TYPES {
            let quantize = formats::traits(ty).quantize.unwrap();
            for nblocks in [1, 2, 3, 6] {
                for trial in 0..4 {
                    let n = nblocks * QK_K;
                    let scale = [1.0f32, 0.02, 30.0, 1e-3][trial];
                    let mut w: Vec<f32> = (0..n).map(|_| rng.normal() * scale).collect();
                    let mut a: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
                    if trial == 2 {
                        // A single outlier in each row.
                        let i = rng.next() as usize % n;
                        w[i] *= 100.0;
                        let j = rng.next() as usize % n;
                        a[j] = -a[j].abs() * 1000.0 - 1.0;
                    }
                    if trial == 3 {
                        // Skewed weights: non-zero mins in every sub-block.
                        w.iter_mut().for_each(|v| *v = v.abs() + 0.5 * scale);
                    }
                    let mut x = vec![0u8; n / QK_K * ty.block_bytes()];
                    quantize(&w, &mut x);
                    let mut y = vec![0u8; n / QK_K * Q8K_BYTES];
                    quantize_row_q8_k(&a, &mut y);
                    check_all(ty, n, &x, &y, &format!("random trial {trial}"));
                }
            }
        }
    }

    #[test]
    fn neon_kquants_match_scalar_on_adversarial_blocks() {
        let mut rng = Rng(12345);
        let scales = [0.0f32, 1.0, -0.75, 65504.0, 6.1035156e-5, 1e-7];
        let mut acts: Vec<(&str, Vec<u8>)> = vec![
            ("q8=127", q8k_block(1.0, [127; QK_K])),
            ("q8=-128", q8k_block(0.5, [-128; QK_K])),
            ("q8=-127", q8k_block(-2.0, [-127; QK_K])),
            ("q8=0", q8k_block(0.0, [0; QK_K])),
            ("q8=±", q8k_block(1.0, std::array::from_fn(|i| if i % 3 == 0 { -128 } else { 127 }))),
        ];
        for r in 0..3 {
            acts.push(("q8 random", q8k_block(rng.uniform(), std::array::from_fn(|_| rng.byte() as i8))));
            let _ = r;
        }
        for ty in TYPES {
            let bb = ty.block_bytes();
            for fill in [Some(0x00u8), Some(0xff), Some(0x80), Some(0x7f), Some(0x55), Some(0xaa), None, None] {
                for &s in &scales {
                    let mut xb: Vec<u8> = (0..bb).map(|_| fill.unwrap_or_else(|| rng.byte())).collect();
                    for (k, &off) in f16_offsets(ty).iter().enumerate() {
                        let v = if k == 0 { s } else { -s * 0.5 };
                        xb[off..off + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
                    }
                    for (what, yb) in &acts {
                        check_all(ty, QK_K, &xb, yb, &format!("fill {fill:?} d {s} {what}"));
                    }
                    // Two blocks: this one followed by a random one.
                    let mut x2 = xb.clone();
                    let mut other: Vec<u8> = (0..bb).map(|_| rng.byte()).collect();
                    for &off in f16_offsets(ty) {
                        other[off..off + 2].copy_from_slice(&f16::from_f32(rng.uniform()).to_le_bytes());
                    }
                    x2.extend_from_slice(&other);
                    let mut y2 = acts[1].1.clone();
                    y2.extend_from_slice(&acts[5].1);
                    check_all(ty, 2 * QK_K, &x2, &y2, &format!("fill {fill:?} d {s} + random"));
                }
            }
        }
    }
}
