//! NEON dot products for the 32-weight block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL
//! against Q8_0 / Q8_1 activations) and for F16·F16 and BF16·BF16.
//!
//! Each block's integer dot product is computed exactly in i32 lanes, with `sdot` when the CPU
//! has the dot-product extension (detected when the table is consulted) and with
//! `smull`/`sadalp` otherwise (i8 products fit i16 exactly, pairs are widened into i32). Both
//! are exact for every byte of both operands. Blocks then accumulate
//! `float(sumi) * (d_x * d_y)` with FMA in f32 lanes (plus `m_x * s_y` for Q4_1 / Q5_1), and the
//! lanes are summed once at the end: only the order of the float additions differs from the
//! scalar twins in `formats::{legacy, iq4, float}`.
//!
//! `vdotq_s32` is still unstable in Rust, so `sdot` is emitted with inline assembly inside
//! functions compiled with the `dotprod` target feature.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::formats::iq4::KVALUES_IQ4NL;
use crate::formats::VecDotFn;
use crate::gguf::GgmlType;

/// The NEON kernel for weights of type `ty`, if this file has one: the `sdot` variant when the
/// dot-product extension is present.
pub(super) fn neon(ty: GgmlType) -> Option<VecDotFn> {
    pick(ty, std::arch::is_aarch64_feature_detected!("dotprod"))
}

fn pick(ty: GgmlType, dotprod: bool) -> Option<VecDotFn> {
    use GgmlType as T;
    Some(match (ty, dotprod) {
        (T::Q4_0, true) => w_q4_0_sdot,
        (T::Q4_0, false) => w_q4_0_mull,
        (T::Q4_1, true) => w_q4_1_sdot,
        (T::Q4_1, false) => w_q4_1_mull,
        (T::Q5_0, true) => w_q5_0_sdot,
        (T::Q5_0, false) => w_q5_0_mull,
        (T::Q5_1, true) => w_q5_1_sdot,
        (T::Q5_1, false) => w_q5_1_mull,
        (T::Q8_0, true) => w_q8_0_sdot,
        (T::Q8_0, false) => w_q8_0_mull,
        (T::IQ4_NL, true) => w_iq4_nl_sdot,
        (T::IQ4_NL, false) => w_iq4_nl_mull,
        (T::F16, _) => w_f16,
        (T::BF16, _) => w_bf16,
        _ => return None,
    })
}

/// Safe wrappers: the function pointers the table hands out.
macro_rules! wrappers {
    ($($name:ident => $inner:path;)*) => {$(
        fn $name(n: usize, x: &[u8], y: &[u8]) -> f32 {
            // SAFETY: only handed out by `select` after `Isa::is_available` confirmed NEON (the
            // table additionally checked the dot-product extension for the `sdot` variants).
            unsafe { $inner(n, x, y) }
        }
    )*};
}

wrappers! {
    w_q4_0_sdot => q4_0_q8_0_sdot;
    w_q4_0_mull => q4_0_q8_0_mull;
    w_q4_1_sdot => q4_1_q8_1_sdot;
    w_q4_1_mull => q4_1_q8_1_mull;
    w_q5_0_sdot => q5_0_q8_0_sdot;
    w_q5_0_mull => q5_0_q8_0_mull;
    w_q5_1_sdot => q5_1_q8_1_sdot;
    w_q5_1_mull => q5_1_q8_1_mull;
    w_q8_0_sdot => q8_0_q8_0_sdot;
    w_q8_0_mull => q8_0_q8_0_mull;
    w_iq4_nl_sdot => iq4_nl_q8_0_sdot;
    w_iq4_nl_mull => iq4_nl_q8_0_mull;
    w_f16 => f16_f16;
    w_bf16 => bf16_bf16;
}

// Block sizes in bytes (ggml-common.h); every legacy block holds 32 weights.
const QK: usize = 32;
const Q4_0_BYTES: usize = 18; // d, qs[16]
const Q4_1_BYTES: usize = 20; // d, m, qs[16]
const Q5_0_BYTES: usize = 22; // d, qh[4], qs[16]
const Q5_1_BYTES: usize = 24; // d, m, qh[4], qs[16]
const Q8_0_BYTES: usize = 34; // d, qs[32]
const Q8_1_BYTES: usize = 36; // d, s, qs[32]
const IQ4_NL_BYTES: usize = 18; // d, qs[16]

/// The number of blocks in a dot product of `n` weights; panics unless `x` and `y` hold exactly
/// that many blocks of `xb` and `yb` bytes. After this check every block access is in bounds.
#[inline(always)]
fn blocks(n: usize, x: &[u8], y: &[u8], xb: usize, yb: usize, what: &str) -> usize {
    let nb = n / QK;
    assert!(
        n.is_multiple_of(QK) && x.len() == nb * xb && y.len() == nb * yb,
        "vec_dot {what}: n = {n} with {} and {} bytes",
        x.len(),
        y.len()
    );
    nb
}

/// Panics unless `x` and `y` each hold exactly `n` 2-byte floats.
#[inline(always)]
fn halves(n: usize, x: &[u8], y: &[u8], what: &str) {
    assert!(x.len() == 2 * n && y.len() == 2 * n, "vec_dot {what}: n = {n} with {} and {} bytes", x.len(), y.len());
}

// The helpers below are `#[inline(always)]` without target features: they are only called from
// the `#[target_feature]` entry points, into which they are always inlined.

/// Reads 4 bytes (unaligned).
///
/// # Safety
/// `p` must be valid for reading 4 bytes.
#[inline(always)]
unsafe fn rd32(p: *const u8) -> u32 {
    (p as *const u32).read_unaligned()
}

/// The integer products: `acc` plus the products of `a` and `b`, exact for all bytes. Only
/// the sum over the 4 lanes is specified (the lanes are distributed differently per variant).
trait Products {
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// `sdot` (Armv8.2 dot-product extension): lane `i` gains `sum(a[4i..4i+4] * b[4i..4i+4])`.
struct Sdot;
/// `smull` + `sadalp`: i8 products in i16 (|p| <= 16384), pairwise widened into i32.
struct Mull;

impl Products for Sdot {
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // Only inlined into functions compiled with `dotprod`, whose assembler accepts `sdot`.
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }
}

impl Products for Mull {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// One quantized format: byte sizes, and one block's weights as two signed 16-byte vectors
/// (weights 0..16 and 16..32) to multiply with the activation bytes at `Y_QS`.
trait Format {
    const NAME: &'static str;
    const XB: usize;
    const YB: usize;
    /// Offset of the 32 activation quants in the activation block.
    const Y_QS: usize;
    /// Q4_1 / Q5_1: add `m_x * s_y` per block.
    const MS: bool;
    unsafe fn weights(x: *const u8) -> (int8x16_t, int8x16_t);
}

/// Low and high nibbles of the 16 bytes at `p`.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    let v = vld1q_u8(p);
    (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
}

/// `0x10` in byte `j` where bit `j` (weights 0..16) or bit `16 + j` (weights 16..32) of the
/// Q5 high-bit word at `p` is set.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    const IDX_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const IDX_HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    const SEL: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bytes = vreinterpretq_u8_u32(vdupq_n_u32(rd32(p)));
    let sel = vld1q_u8(SEL.as_ptr());
    let bit = |idx: &[u8; 16]| vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(idx.as_ptr())), sel), vdupq_n_u8(0x10));
    (bit(&IDX_LO), bit(&IDX_HI))
}

#[inline(always)]
unsafe fn minus(v: uint8x16_t, k: i8) -> int8x16_t {
    vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(k))
}

struct Q4_0;
struct Q4_1;
struct Q5_0;
struct Q5_1;
struct Q8_0;
struct IQ4NL;

impl Format for Q4_0 {
    const NAME: &'static str = "Q4_0·Q8_0";
    const XB: usize = Q4_0_BYTES;
    const YB: usize = Q8_0_BYTES;
    const Y_QS: usize = 2;
    const MS: bool = false;
    #[inline(always)]
    unsafe fn weights(x: *const u8) -> (int8x16_t, int8x16_t) {
        let (lo, hi) = nibbles(x.add(2));
        (minus(lo, 8), minus(hi, 8))
    }
}

impl Format for Q4_1 {
    const NAME: &'static str = "Q4_1·Q8_1";
    const XB: usize = Q4_1_BYTES;
    const YB: usize = Q8_1_BYTES;
    const Y_QS: usize = 4;
    const MS: bool = true;
    #[inline(always)]
    unsafe fn weights(x: *const u8) -> (int8x16_t, int8x16_t) {
        let (lo, hi) = nibbles(x.add(4));
        (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
    }
}

impl Format for Q5_0 {
    const NAME: &'static str = "Q5_0·Q8_0";
    const XB: usize = Q5_0_BYTES;
    const YB: usize = Q8_0_BYTES;
    const Y_QS: usize = 2;
    const MS: bool = false;
    #[inline(always)]
    unsafe fn weights(x: *const u8) -> (int8x16_t, int8x16_t) {
        let (lo, hi) = nibbles(x.add(6));
        let (blo, bhi) = fifth_bits(x.add(2));
        (minus(vorrq_u8(lo, blo), 16), minus(vorrq_u8(hi, bhi), 16))
    }
}

impl Format for Q5_1 {
    const NAME: &'static str = "Q5_1·Q8_1";
    const XB: usize = Q5_1_BYTES;
    const YB: usize = Q8_1_BYTES;
    const Y_QS: usize = 4;
    const MS: bool = true;
    #[inline(always)]
    unsafe fn weights(x: *const u8) -> (int8x16_t, int8x16_t) {
        let (lo, hi) = nibbles(x.add(8));
        let (blo, bhi) = fifth_bits(x.add(4));
        (vreinterpretq_s8_u8(vorrq_u8(lo, blo)), vreinterpretq_s8_u8(vorrq_u8(hi, bhi)))
    }
}

impl Format for Q8_0 {
    const NAME: &'static str = "Q8_0·Q8_0";
    const XB: usize = Q8_0_BYTES;
    const YB: usize = Q8_0_BYTES;
    const Y_QS: usize = 2;
    const MS: bool = false;
    #[inline(always)]
    unsafe fn weights(x: *const u8) -> (int8x16_t, int8x16_t) {
        (vld1q_s8(x.add(2) as *const i8), vld1q_s8(x.add(18) as *const i8))
    }
}

impl Format for IQ4NL {
    const NAME: &'static str = "IQ4_NL·Q8_0";
    const XB: usize = IQ4_NL_BYTES;
    const YB: usize = Q8_0_BYTES;
    const Y_QS: usize = 2;
    const MS: bool = false;
    #[inline(always)]
    unsafe fn weights(x: *const u8) -> (int8x16_t, int8x16_t) {
        let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
        let (lo, hi) = nibbles(x.add(2));
        (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi))
    }
}

/// `[d_x * d_y, m_x * s_y]` (the second lane meaningless without `m` / `s`) from the first 4
/// bytes of each block, converted with one `fcvtl`.
#[inline(always)]
unsafe fn scales(x: *const u8, y: *const u8) -> float32x2_t {
    let h = vcreate_u16(rd32(x) as u64 | ((rd32(y) as u64) << 32));
    let f = vcvt_f32_f16(vreinterpret_f16_u16(h));
    vmul_f32(vget_low_f32(f), vget_high_f32(f))
}

/// One block into `acc` (and `m_x * s_y` into lane 1 of `acc_m`).
#[inline(always)]
unsafe fn block<F: Format, P: Products>(acc: &mut float32x4_t, acc_m: &mut float32x2_t, x: *const u8, y: *const u8) {
    let (w0, w1) = F::weights(x);
    let y0 = vld1q_s8(y.add(F::Y_QS) as *const i8);
    let y1 = vld1q_s8(y.add(F::Y_QS + 16) as *const i8);
    let sumi = P::dot(P::dot(vdupq_n_s32(0), w0, y0), w1, y1);
    let d = scales(x, y);
    *acc = vfmaq_lane_f32::<0>(*acc, vcvtq_f32_s32(sumi), d);
    if F::MS {
        *acc_m = vadd_f32(*acc_m, d);
    }
}

/// The block loop: two blocks per iteration into two accumulators.
#[inline(always)]
unsafe fn run<F: Format, P: Products>(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let nb = blocks(n, x, y, F::XB, F::YB, F::NAME);
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut acc_m = vdup_n_f32(0.0);
    let mut i = 0;
    while i + 2 <= nb {
        let (x0, y0) = (xp.add(i * F::XB), yp.add(i * F::YB));
        block::<F, P>(&mut acc0, &mut acc_m, x0, y0);
        block::<F, P>(&mut acc1, &mut acc_m, x0.add(F::XB), y0.add(F::YB));
        i += 2;
    }
    if i < nb {
        block::<F, P>(&mut acc0, &mut acc_m, xp.add(i * F::XB), yp.add(i * F::YB));
    }
    let s = vaddvq_f32(vaddq_f32(acc0, acc1));
    if F::MS {
        s + vget_lane_f32::<1>(acc_m)
    } else {
        s
    }
}

/// Defines the `sdot` and `smull` entry points of one format.
macro_rules! entry {
    ($sdot:ident, $mull:ident, $fmt:ty, $what:literal) => {
        #[doc = concat!($what, " with `sdot`.")]
        ///
        /// # Safety
        /// The CPU must support NEON and the dot-product extension. Panics unless `x` and `y`
        /// hold `n / 32` blocks each.
        #[target_feature(enable = "neon,dotprod")]
        unsafe fn $sdot(n: usize, x: &[u8], y: &[u8]) -> f32 {
            run::<$fmt, Sdot>(n, x, y)
        }

        #[doc = concat!($what, " with `smull` / `sadalp`.")]
        ///
        /// # Safety
        /// The CPU must support NEON. Panics unless `x` and `y` hold `n / 32` blocks each.
        #[target_feature(enable = "neon")]
        unsafe fn $mull(n: usize, x: &[u8], y: &[u8]) -> f32 {
            run::<$fmt, Mull>(n, x, y)
        }
    };
}

entry!(q4_0_q8_0_sdot, q4_0_q8_0_mull, Q4_0, "Q4_0 weights · Q8_0 activations");
entry!(q4_1_q8_1_sdot, q4_1_q8_1_mull, Q4_1, "Q4_1 weights · Q8_1 activations");
entry!(q5_0_q8_0_sdot, q5_0_q8_0_mull, Q5_0, "Q5_0 weights · Q8_0 activations");
entry!(q5_1_q8_1_sdot, q5_1_q8_1_mull, Q5_1, "Q5_1 weights · Q8_1 activations");
entry!(q8_0_q8_0_sdot, q8_0_q8_0_mull, Q8_0, "Q8_0 weights · Q8_0 activations");
entry!(iq4_nl_q8_0_sdot, iq4_nl_q8_0_mull, IQ4NL, "IQ4_NL weights · Q8_0 activations");

/// 8 halves at `p` as f32: elements 0..4 and 4..8.
#[inline(always)]
unsafe fn cvt_f16(p: *const u8) -> (float32x4_t, float32x4_t) {
    let h = vreinterpretq_f16_u16(vld1q_u16(p as *const u16));
    (vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h))
}

/// F16 · F16: `fcvtl`/`fcvtl2` conversions, four f32 accumulators, zero-padded tail.
///
/// # Safety
/// The CPU must support NEON. Panics unless `x` and `y` hold `n` halves each.
#[target_feature(enable = "neon")]
unsafe fn f16_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    halves(n, x, y, "F16");
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let step = |acc: &mut [float32x4_t; 4], k: usize, px: *const u8, py: *const u8| {
        let ((x0, x1), (y0, y1)) = (cvt_f16(px), cvt_f16(py));
        acc[k] = vfmaq_f32(acc[k], x0, y0);
        acc[k + 1] = vfmaq_f32(acc[k + 1], x1, y1);
    };
    let mut i = 0;
    while i + 16 <= n {
        step(&mut acc, 0, xp.add(2 * i), yp.add(2 * i));
        step(&mut acc, 2, xp.add(2 * i + 16), yp.add(2 * i + 16));
        i += 16;
    }
    if i + 8 <= n {
        step(&mut acc, 0, xp.add(2 * i), yp.add(2 * i));
        i += 8;
    }
    if i < n {
        // The padding adds 0 * 0.
        let (mut bx, mut by) = ([0u8; 16], [0u8; 16]);
        bx[..2 * (n - i)].copy_from_slice(&x[2 * i..]);
        by[..2 * (n - i)].copy_from_slice(&y[2 * i..]);
        step(&mut acc, 2, bx.as_ptr(), by.as_ptr());
    }
    vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])))
}

/// `(even, odd)` elements of 8 bf16 as f32: each 32-bit lane holds two bf16, `lane << 16` is
/// the even one and `lane & 0xFFFF0000` the odd one, so no shuffles are needed.
#[inline(always)]
unsafe fn split_bf16(p: *const u8) -> (float32x4_t, float32x4_t) {
    let v = vld1q_u32(p as *const u32);
    (vreinterpretq_f32_u32(vshlq_n_u32::<16>(v)), vreinterpretq_f32_u32(vandq_u32(v, vdupq_n_u32(0xFFFF_0000))))
}

/// BF16 · BF16 with the even/odd split of [`split_bf16`], four f32 accumulators.
///
/// # Safety
/// The CPU must support NEON. Panics unless `x` and `y` hold `n` halves each.
#[target_feature(enable = "neon")]
unsafe fn bf16_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    halves(n, x, y, "BF16");
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let step = |acc: &mut [float32x4_t; 4], k: usize, px: *const u8, py: *const u8| {
        let ((xe, xo), (ye, yo)) = (split_bf16(px), split_bf16(py));
        acc[k] = vfmaq_f32(acc[k], xe, ye);
        acc[k + 1] = vfmaq_f32(acc[k + 1], xo, yo);
    };
    let mut i = 0;
    while i + 16 <= n {
        step(&mut acc, 0, xp.add(2 * i), yp.add(2 * i));
        step(&mut acc, 2, xp.add(2 * i + 16), yp.add(2 * i + 16));
        i += 16;
    }
    if i + 8 <= n {
        step(&mut acc, 0, xp.add(2 * i), yp.add(2 * i));
        i += 8;
    }
    if i < n {
        let (mut bx, mut by) = ([0u8; 16], [0u8; 16]);
        bx[..2 * (n - i)].copy_from_slice(&x[2 * i..]);
        by[..2 * (n - i)].copy_from_slice(&y[2 * i..]);
        step(&mut acc, 2, bx.as_ptr(), by.as_ptr());
    }
    vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::traits;
    use crate::kernels::isa::Isa;
    use half::f16;

    const FAMILY: [GgmlType; 8] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::F16,
        GgmlType::BF16,
    ];

    /// A kernel to test and whether it is exact for activation quants of -128 (all NEON
    /// kernels are).
    struct Variant {
        name: String,
        ty: GgmlType,
        f: VecDotFn,
        y_min_128: bool,
    }

    /// Every variant this CPU can run: `smull` always, `sdot` with the dot-product extension.
    fn variants() -> Vec<Variant> {
        let mut v = Vec::new();
        if !Isa::Neon.is_available() {
            return v;
        }
        let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
        for ty in FAMILY {
            let mut push = |name: &str, f: Option<VecDotFn>| {
                if let Some(f) = f {
                    v.push(Variant { name: format!("{ty}/{name}"), ty, f, y_min_128: true });
                }
            };
            push("neon", pick(ty, false));
            if dotprod && ty.block_size() == 32 {
                push("neon-sdot", pick(ty, true));
            }
        }
        v
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Uniform in [-1, 1).
        fn f(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    fn quantize(ty: GgmlType, v: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; v.len() / ty.block_size() * ty.block_bytes()];
        (traits(ty).quantize.unwrap())(v, &mut out);
        out
    }

    /// The tolerance: the integer parts are exact and only the order of the f32 additions
    /// differs (plus FMA's single rounding), so |simd - scalar| <= 1e-5 * (sum over blocks of
    /// |block term|) + 1e-6, where a block term is the scalar dot product of one block (one
    /// element for F16/BF16) and Q4_1/Q5_1 count |d_x*d_y*sumi| and |m_x*s_y| separately.
    fn tolerance(ty: GgmlType, n: usize, x: &[u8], y: &[u8]) -> f64 {
        let t = traits(ty);
        let reference = t.vec_dot.unwrap();
        let (qk, xb, yb) = (ty.block_size(), ty.block_bytes(), t.vec_dot_type.block_bytes());
        let mut mag = 0f64;
        for (bx, by) in x.chunks_exact(xb).zip(y.chunks_exact(yb)).take(n / qk) {
            let term = reference(qk, bx, by) as f64;
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                let ms = f16::from_le_bytes([bx[2], bx[3]]).to_f64() * f16::from_le_bytes([by[2], by[3]]).to_f64();
                mag += (term - ms).abs() + ms.abs();
            } else {
                mag += term.abs();
            }
        }
        1e-5 * mag + 1e-6
    }

    fn check(v: &Variant, n: usize, x: &[u8], y: &[u8], what: &str) {
        let want = (traits(v.ty).vec_dot.unwrap())(n, x, y);
        let got = (v.f)(n, x, y);
        let tol = tolerance(v.ty, n, x, y);
        assert!(
            ((got as f64) - (want as f64)).abs() <= tol,
            "{} {what} n={n}: simd {got} scalar {want} (tolerance {tol})",
            v.name
        );
    }

    #[test]
    fn vec_dot_neon_legacy_random_rows() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for v in variants() {
            let vdt = traits(v.ty).vec_dot_type;
            let lens: &[usize] = if v.ty.block_size() == 1 {
                &[0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 576, 1000, 4099]
            } else {
                &[32, 64, 96, 128, 160, 224, 576, 1024]
            };
            for &n in lens {
                for trial in 0..4 {
                    // Per-block magnitudes spread over a few orders to exercise the scales.
                    let scale: Vec<f32> = (0..n.div_ceil(32)).map(|_| 10f32.powf(rng.f() * 2.0)).collect();
                    let xf: Vec<f32> = (0..n).map(|i| rng.f() * scale[i / 32]).collect();
                    let mut yf: Vec<f32> = (0..n).map(|_| rng.f() * 3.0).collect();
                    if trial == 3 {
                        // Non-negative activations: Q4_1 / Q5_1 m*s terms then do not cancel.
                        yf.iter_mut().for_each(|a| *a = a.abs());
                    }
                    check(&v, n, &quantize(v.ty, &xf), &quantize(vdt, &yf), &format!("trial {trial}"));
                }
            }
        }
    }

    /// Fills one weight block's bytes: f16 scale(s) from `d`, quant bytes from `pat`.
    fn weight_block(ty: GgmlType, d: f32, m: f32, pat: u8, qh: u32, out: &mut [u8]) {
        out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        let qs_at = match ty {
            GgmlType::Q4_0 | GgmlType::IQ4_NL | GgmlType::Q8_0 => 2,
            GgmlType::Q4_1 => 4,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 8,
            _ => unreachable!(),
        };
        if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
            out[2..4].copy_from_slice(&f16::from_f32(m).to_le_bytes());
        }
        match ty {
            GgmlType::Q5_0 => out[2..6].copy_from_slice(&qh.to_le_bytes()),
            GgmlType::Q5_1 => out[4..8].copy_from_slice(&qh.to_le_bytes()),
            _ => {}
        }
        out[qs_at..].fill(pat);
    }

    #[test]
    fn vec_dot_neon_legacy_adversarial_blocks() {
        // Weight byte patterns: all-zero nibbles, all 15 (0xFF; Q8_0: -1), 0x80 (Q8_0: -128;
        // nibbles 0 and 8), 0x7F (Q8_0: 127), alternating nibbles 0x0F / 0xF0.
        let x_pats: [u8; 6] = [0x00, 0xFF, 0x80, 0x7F, 0x0F, 0xF0];
        let qhs: [u32; 4] = [0, u32::MAX, 0xAAAA_AAAA, 1 << 31];
        let scales: [(f32, f32); 3] = [(1.0, -8.0), (-0.5, 3.0), (0.0123, 0.0)];
        for v in variants().into_iter().filter(|v| v.ty.block_size() == 32) {
            let vdt = traits(v.ty).vec_dot_type;
            let (xb, yb) = (v.ty.block_bytes(), vdt.block_bytes());
            let y_vals: Vec<i8> = if v.y_min_128 { vec![0, 127, -127, -128] } else { vec![0, 127, -127] };
            // Build rows of 7 blocks cycling through every combination.
            let mut combos = Vec::new();
            for &p in &x_pats {
                for &qh in &qhs {
                    for &(d, m) in &scales {
                        for &yv in &y_vals {
                            combos.push((p, qh, d, m, yv));
                        }
                    }
                }
            }
            for chunk in combos.chunks(7) {
                let nb = chunk.len();
                let (mut x, mut y) = (vec![0u8; nb * xb], vec![0u8; nb * yb]);
                for (k, &(p, qh, d, m, yv)) in chunk.iter().enumerate() {
                    weight_block(v.ty, d, m, p, qh, &mut x[k * xb..(k + 1) * xb]);
                    let by = &mut y[k * yb..(k + 1) * yb];
                    let dy = 0.25 + k as f32;
                    by[..2].copy_from_slice(&f16::from_f32(dy).to_le_bytes());
                    let qs_at = if vdt == GgmlType::Q8_1 { 4 } else { 2 };
                    for (j, q) in by[qs_at..].iter_mut().enumerate() {
                        // Alternate the sign on odd blocks so sign tricks see both signs.
                        *q = if k % 2 == 1 && j % 3 == 0 { yv.saturating_neg() as u8 } else { yv as u8 };
                    }
                    if vdt == GgmlType::Q8_1 {
                        let s: i32 = by[4..].iter().map(|&q| q as i8 as i32).sum();
                        by[2..4].copy_from_slice(&f16::from_f32(dy * s as f32).to_le_bytes());
                    }
                }
                for len in 1..=nb {
                    check(&v, 32 * len, &x[..len * xb], &y[..len * yb], "adversarial");
                }
            }
            // Single outlier: random small quants plus one extreme weight and activation.
            let mut rng = Rng(7);
            for nb in [1usize, 2, 3, 5, 18] {
                let xf: Vec<f32> = (0..32 * nb).map(|i| if i == 32 * nb - 5 { 50.0 } else { rng.f() * 0.01 }).collect();
                let yf: Vec<f32> = (0..32 * nb).map(|i| if i == 3 { -40.0 } else { rng.f() }).collect();
                check(&v, 32 * nb, &quantize(v.ty, &xf), &quantize(vdt, &yf), "outlier");
            }
        }
    }

    #[test]
    fn vec_dot_neon_legacy_float_extremes() {
        // Large, tiny (including subnormal) and mixed-sign values for F16 and BF16.
        let vals = [65504.0f32, -65504.0, 6.1e-5, 5.96e-8, -1.0, 0.0, 3.3e-39, 1.0e30, -2.5e-20];
        for v in variants().into_iter().filter(|v| v.ty.block_size() == 1) {
            for n in [1usize, 9, 33, 200] {
                let xf: Vec<f32> = (0..n).map(|i| vals[i % vals.len()]).collect();
                let yf: Vec<f32> =
                    (0..n).map(|i| vals[(i * 7 + 3) % vals.len()] * if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
                let (x, y) = (quantize(v.ty, &xf), quantize(v.ty, &yf));
                let want = (traits(v.ty).vec_dot.unwrap())(n, &x, &y);
                if want.is_finite() {
                    check(&v, n, &x, &y, "extremes");
                }
            }
        }
    }

    #[test]
    fn vec_dot_neon_legacy_tables_cover_family() {
        for ty in FAMILY {
            assert!(pick(ty, false).is_some() && pick(ty, true).is_some(), "{ty}");
            if Isa::Neon.is_available() {
                assert!(neon(ty).is_some(), "{ty}: no NEON kernel");
                assert_eq!(super::super::implementation(ty, Isa::Neon), "neon", "{ty}");
            }
        }
        assert!(neon(GgmlType::Q4_K).is_none() && neon(GgmlType::Q8_1).is_none());
    }

    #[test]
    fn vec_dot_neon_legacy_rejects_bad_lengths() {
        for v in variants() {
            let vdt = traits(v.ty).vec_dot_type;
            let n = 64;
            let (xl, yl) = (n / v.ty.block_size() * v.ty.block_bytes(), n / vdt.block_size() * vdt.block_bytes());
            let f = v.f;
            assert!(std::panic::catch_unwind(|| f(n, &vec![0u8; xl - 1], &vec![0u8; yl])).is_err(), "{}", v.name);
            assert!(std::panic::catch_unwind(|| f(n, &vec![0u8; xl], &vec![0u8; yl + 1])).is_err(), "{}", v.name);
            assert_eq!(f(n, &vec![0u8; xl], &vec![0u8; yl]), 0.0, "{}", v.name);
        }
    }
}
