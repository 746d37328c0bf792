//! AVX2 and AVX-512 dot products for the 32-weight block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! IQ4_NL against Q8_0 / Q8_1 activations) and for F16·F16 and BF16·BF16.
//!
//! Every quantized kernel computes each block's integer dot product exactly, then accumulates
//! `float(sumi) * (d_x * d_y)` with FMA in vector lanes, reducing horizontally once at the end;
//! Q4_1/Q5_1 add `m_x * s_y` per block. Only the order of the float additions differs from the
//! scalar twins in `formats::{legacy, iq4, float}`.
//!
//! Exactness of the integer part. The 4/5-bit weights are multiplied as unsigned values
//! (`maddubs` / `dpbusd`) and the offset is subtracted afterwards
//! (`sum((q - 8) * y) = sum(q * y) - sum(8 * y)`), which is exact for every representable byte
//! of both operands. IQ4_NL puts `|y|` on the unsigned side and `±value` on the signed side
//! (`|value| <= 127`), also exact for every byte. Q8_0·Q8_0 on AVX2 and plain AVX-512BW uses
//! llama.cpp's sign trick `maddubs(|x|, sign(y, x))`, exact for every weight byte provided the
//! activation quants lie in `[-127, 127]`, which is all `quantize_row_q8_0` produces; the VNNI
//! variant (`dpbusd(x ^ 0x80, y) - dpbusd(0x80, y)`) is exact for every byte. The VNNI
//! four-row kernels put the activations on the unsigned side instead, so that the weight-only
//! part is computed once per four tokens: `sum(w * y) = dpbusd(-128 * sum(w), y ^ 0x80, w)`
//! with the signed weights `w` (`q - 8`, `q - 16`, the quants, the table values), also exact
//! for every byte and hence giving the same integers.
//!
//! AVX-512 kernels work on two blocks per 512-bit register (block A's 32 weights in the low
//! half, block B's in the high half), with two accumulators over four blocks per iteration; an
//! odd last block is paired with an all-zero block (scale 0, quants 0), which adds exactly 0.
//! With AVX512-VNNI present (checked when the table is consulted) the products use
//! `vpdpbusd`, else `vpmaddubsw` + `vpmaddwd`. The `_x4` variants take one weight row
//! against four activation rows: each pair of weight blocks is unpacked (nibbles, fifth bits,
//! table lookups, scales) once and dotted with the four activation pairs, each token keeping
//! its own accumulators. They are the same generic block loop as the one-row kernels with four
//! tokens instead of one, so every token sees the same float operations in the same order and
//! gets the one-row kernel's result bit for bit (the prompt path mixes the two). BF16 uses `vdpbf16ps` when AVX512-BF16 is present:
//! bf16 products are exact in f32, so it differs from the plain path only in summation order
//! and in flushing subnormal inputs/products (magnitudes below 2^-126) to zero. F16 on Zen 4
//! uses the 256-bit conversion kernel even under AVX-512 (see [`avx512`]).

use std::arch::x86_64::*;

use super::VecDot4Fn;
use crate::formats::iq4::KVALUES_IQ4NL;
use crate::formats::VecDotFn;
use crate::gguf::GgmlType;

/// The AVX2 kernel for weights of type `ty`, if this file has one.
pub(super) fn avx2(ty: GgmlType) -> Option<VecDotFn> {
    // `Isa::Avx2` guarantees AVX2 and FMA; the f16 scales also need F16C (present on every
    // AVX2 CPU made, but checked rather than assumed).
    if !is_x86_feature_detected!("f16c") {
        return None;
    }
    use GgmlType as T;
    Some(match ty {
        T::Q4_0 => w_avx2_q4_0,
        T::Q4_1 => w_avx2_q4_1,
        T::Q5_0 => w_avx2_q5_0,
        T::Q5_1 => w_avx2_q5_1,
        T::Q8_0 => w_avx2_q8_0,
        T::IQ4_NL => w_avx2_iq4_nl,
        T::F16 => w_avx2_f16_acc1,
        T::BF16 => w_avx2_bf16,
        _ => return None,
    })
}

/// The AVX-512 kernel for weights of type `ty`: the VNNI variant when AVX512-VNNI is present,
/// else the AVX-512BW one (BF16: the AVX512-BF16 variant when present).
pub(super) fn avx512(ty: GgmlType) -> Option<VecDotFn> {
    if ty == GgmlType::F16 && is_zen4() && is_x86_feature_detected!("avx2") {
        // Zen 4 executes 512-bit `vcvtph2ps` in two halves at lower throughput than two 256-bit
        // ones: the 256-bit kernel measured 54 GB/s against 36 GB/s for the 512-bit one
        // (576x1536 F16 matrix times one row). Intel's AVX-512 cores convert 16 halves per cycle
        // with the 512-bit form, so everywhere else the 512-bit kernel is used.
        return Some(w_avx2_f16);
    }
    avx512_pick(ty, is_x86_feature_detected!("avx512vnni"), is_x86_feature_detected!("avx512bf16"))
}

/// An AMD family 19h CPU (Zen 3 / Zen 4; only Zen 4 has AVX-512), whose AVX-512 units are
/// 256 bits wide. Asked once: `cpuid` traps to the hypervisor in a virtual machine, and asking
/// on every F16 product (twice per matrix per token) cost 10% of F16 generation here.
fn is_zen4() -> bool {
    static ZEN4: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ZEN4.get_or_init(|| {
        let (v, f) = (__cpuid(0), __cpuid(1));
        let amd = (v.ebx, v.edx, v.ecx)
            == (u32::from_le_bytes(*b"Auth"), u32::from_le_bytes(*b"enti"), u32::from_le_bytes(*b"cAMD"));
        let family = ((f.eax >> 8) & 0xF) + ((f.eax >> 20) & 0xFF);
        amd && family == 0x19
    })
}

fn avx512_pick(ty: GgmlType, vnni: bool, bf16: bool) -> Option<VecDotFn> {
    if !is_x86_feature_detected!("f16c") || !is_x86_feature_detected!("fma") {
        return None;
    }
    use GgmlType as T;
    Some(match (ty, vnni) {
        (T::Q4_0, true) => w_vnni_q4_0,
        (T::Q4_0, false) => w_bw_q4_0,
        (T::Q4_1, true) => w_vnni_q4_1,
        (T::Q4_1, false) => w_bw_q4_1,
        (T::Q5_0, true) => w_vnni_q5_0,
        (T::Q5_0, false) => w_bw_q5_0,
        (T::Q5_1, true) => w_vnni_q5_1,
        (T::Q5_1, false) => w_bw_q5_1,
        (T::Q8_0, true) => w_vnni_q8_0,
        (T::Q8_0, false) => w_bw_q8_0,
        (T::IQ4_NL, true) => w_vnni_iq4_nl,
        (T::IQ4_NL, false) => w_bw_iq4_nl,
        (T::F16, _) => w_avx512_f16,
        (T::BF16, _) if bf16 => w_avx512bf16_bf16,
        (T::BF16, _) => w_avx512_bf16,
        _ => return None,
    })
}

/// The AVX-512 kernel taking one weight row against four activation rows for weights of type
/// `ty`, if this file has one: bit-identical per row to what [`avx512`] returns for `ty`
/// (the same VNNI / BW choice, the same float operations in the same order).
pub(super) fn avx512_x4(ty: GgmlType) -> Option<VecDot4Fn> {
    avx512_x4_pick(ty, is_x86_feature_detected!("avx512vnni"))
}

fn avx512_x4_pick(ty: GgmlType, vnni: bool) -> Option<VecDot4Fn> {
    // The same feature checks as `avx512_pick`, so both tables agree on every CPU.
    if !is_x86_feature_detected!("f16c") || !is_x86_feature_detected!("fma") {
        return None;
    }
    use GgmlType as T;
    Some(match (ty, vnni) {
        (T::Q4_0, true) => w4_vnni_q4_0,
        (T::Q4_0, false) => w4_bw_q4_0,
        (T::Q4_1, true) => w4_vnni_q4_1,
        (T::Q4_1, false) => w4_bw_q4_1,
        (T::Q5_0, true) => w4_vnni_q5_0,
        (T::Q5_0, false) => w4_bw_q5_0,
        (T::Q5_1, true) => w4_vnni_q5_1,
        (T::Q5_1, false) => w4_bw_q5_1,
        (T::Q8_0, true) => w4_vnni_q8_0,
        (T::Q8_0, false) => w4_bw_q8_0,
        (T::IQ4_NL, true) => w4_vnni_iq4_nl,
        (T::IQ4_NL, false) => w4_bw_iq4_nl,
        _ => return None,
    })
}

/// The prepared-activation four-row kernel for weights of type `ty` and the function that
/// prepares its activation rows, where this CPU has AVX512-VNNI (and `avx512_x4` would pick the
/// VNNI kernel, whose bits it reproduces).
pub(super) fn avx512_x4_prepared(ty: GgmlType) -> Option<super::Prepared4> {
    if !is_x86_feature_detected!("avx512vnni") || avx512_x4_pick(ty, true).is_none() {
        return None;
    }
    use GgmlType as T;
    type Fns = (super::PrepareFn, super::RowsDot8Fn, super::RowsDot4Fn, super::RowsDot1Fn);
    let (prepare, dot8, dot4, dot1): Fns = match ty {
        T::Q4_0 => (p_q4_0, w8p_q4_0, w4p_q4_0, w1p_q4_0),
        T::Q4_1 => (p_q4_1, w8p_q4_1, w4p_q4_1, w1p_q4_1),
        T::Q5_0 => (p_q5_0, w8p_q5_0, w4p_q5_0, w1p_q5_0),
        T::Q5_1 => (p_q5_1, w8p_q5_1, w4p_q5_1, w1p_q5_1),
        T::Q8_0 => (p_q8_0, w8p_q8_0, w4p_q8_0, w1p_q8_0),
        T::IQ4_NL => (p_iq4_nl, w8p_iq4_nl, w4p_iq4_nl, w1p_iq4_nl),
        _ => return None,
    };
    Some(super::Prepared4 {
        prepare,
        prepare_f32: None,
        dot8: Some(dot8),
        dot4,
        dot1,
        row_bytes: if avx512::spread_scales(ty) {
            |n| (n / QK).div_ceil(2) * avx512::PREP_PAIR_SPREAD
        } else {
            |n| (n / QK).div_ceil(2) * avx512::PREP_PAIR
        },
        tile_rows: 1,
    })
}

/// The prepared F16 kernels wherever `select(F16, isa)` is a 256-bit kernel, whose bits they
/// reproduce: on AVX2 (`vl` false) the one-accumulator `f16_f16_acc1`, in register tiles;
/// under AVX-512 on Zen 4 (`vl` true, see [`avx512`]) the four-accumulator `f16_f16`, with the
/// wider register file.
pub(super) fn f16_prepared(vl: bool) -> Option<super::Prepared4> {
    if !is_x86_feature_detected!("f16c") || !is_x86_feature_detected!("fma") {
        return None;
    }
    let (prepare, dot4, dot1): (super::PrepareFn, super::RowsDot4Fn, super::RowsDot1Fn) =
        if vl { (p_f16_vl, w4p_f16_zmm, w1p_f16_vl) } else { (p_f16, w4p_f16, w1p_f16) };
    // Both four-token kernels take three rows per pass (`f16_tile`, `f16_rows_x4_zmm`).
    Some(super::Prepared4 {
        prepare,
        prepare_f32: Some(p32_f16),
        dot8: None,
        dot4,
        dot1,
        row_bytes: |n| 4 * n,
        tile_rows: 3,
    })
}

/// F16's [`super::PrepareF32Fn`]. F16C and FMA were detected by [`f16_prepared`], the only
/// place that hands it out.
fn p32_f16(x: &[f32], out: &mut [u8]) {
    // SAFETY: see above (the kernel needs F16C and AVX only).
    unsafe { avx2::prep_f16_from_f32(x, out) }
}

/// Whether [`avx512`] gives F16 the AVX2 kernel (Zen 4).
pub(super) fn avx512_f16_is_avx2() -> bool {
    is_zen4() && is_x86_feature_detected!("avx2")
}

/// Safe wrappers of the prepared eight-token kernels.
macro_rules! wrappers_prepared8 {
    ($($w:ident => $inner:path;)*) => {$(
        fn $w(n: usize, x: &[u8], ys: [&[u8]; 8], out: &mut [[f32; 8]]) {
            // SAFETY: only handed out by `avx512_x4_prepared` after AVX512-VNNI was detected
            // and `select4`'s caller confirmed AVX-512 (the x4 table checked F16C and FMA).
            unsafe { $inner(n, x, ys, out) }
        }
    )*};
}

wrappers_prepared8! {
    w8p_q4_0 => avx512::q4_0_vnni_x8p;
    w8p_q4_1 => avx512::q4_1_vnni_x8p;
    w8p_q5_0 => avx512::q5_0_vnni_x8p;
    w8p_q5_1 => avx512::q5_1_vnni_x8p;
    w8p_q8_0 => avx512::q8_0_vnni_x8p;
    w8p_iq4_nl => avx512::iq4_nl_vnni_x8p;
}

/// Safe wrappers of the activation preparation and the prepared four-row kernels.
macro_rules! wrappers_prepared {
    ($($p:ident => $pinner:path, $w:ident => $winner:path, $w1:ident => $w1inner:path;)*) => {$(
        fn $p(n: usize, y: &[u8], out: &mut [u8]) {
            // SAFETY: only handed out by `avx512_x4_prepared` after AVX512-VNNI was detected
            // and `select4`'s caller confirmed AVX-512 (the x4 table checked F16C and FMA), or
            // by `f16_prepared` for an available AVX2 (or AVX-512 with VL), F16C and FMA.
            unsafe { $pinner(n, y, out) }
        }
        fn $w(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [[f32; 4]]) {
            // SAFETY: as above.
            unsafe { $winner(n, x, ys, out) }
        }
        fn $w1(n: usize, x: &[u8], y: &[u8], out: &mut [f32]) {
            // SAFETY: as above.
            unsafe { $w1inner(n, x, y, out) }
        }
    )*};
}

wrappers_prepared! {
    p_q4_0 => avx512::prep_q4_0, w4p_q4_0 => avx512::q4_0_vnni_x4p, w1p_q4_0 => avx512::q4_0_vnni_x1p;
    p_q4_1 => avx512::prep_q4_1, w4p_q4_1 => avx512::q4_1_vnni_x4p, w1p_q4_1 => avx512::q4_1_vnni_x1p;
    p_q5_0 => avx512::prep_q5_0, w4p_q5_0 => avx512::q5_0_vnni_x4p, w1p_q5_0 => avx512::q5_0_vnni_x1p;
    p_q5_1 => avx512::prep_q5_1, w4p_q5_1 => avx512::q5_1_vnni_x4p, w1p_q5_1 => avx512::q5_1_vnni_x1p;
    p_q8_0 => avx512::prep_q8_0, w4p_q8_0 => avx512::q8_0_vnni_x4p, w1p_q8_0 => avx512::q8_0_vnni_x1p;
    p_iq4_nl => avx512::prep_iq4_nl, w4p_iq4_nl => avx512::iq4_nl_vnni_x4p, w1p_iq4_nl => avx512::iq4_nl_vnni_x1p;
    p_f16 => avx2::prep_f16, w4p_f16 => avx2::f16_acc1_x4p, w1p_f16 => avx2::f16_acc1_x1p;
    p_f16_vl => avx2::prep_f16_vl, w4p_f16_zmm => avx2::f16_x4p_zmm, w1p_f16_vl => avx2::f16_x1p_vl;
}

/// Safe wrappers: the function pointers the tables hand out.
macro_rules! wrappers {
    ($($name:ident => $inner:path;)*) => {$(
        fn $name(n: usize, x: &[u8], y: &[u8]) -> f32 {
            // SAFETY: only handed out by `select` after `Isa::is_available` confirmed the
            // features of this kernel's instruction set (the table additionally checked F16C,
            // and AVX512-VNNI / AVX512-BF16 for those variants).
            unsafe { $inner(n, x, y) }
        }
    )*};
}

wrappers! {
    w_avx2_q4_0 => avx2::q4_0_q8_0;
    w_avx2_q4_1 => avx2::q4_1_q8_1;
    w_avx2_q5_0 => avx2::q5_0_q8_0;
    w_avx2_q5_1 => avx2::q5_1_q8_1;
    w_avx2_q8_0 => avx2::q8_0_q8_0;
    w_avx2_iq4_nl => avx2::iq4_nl_q8_0;
    w_avx2_f16 => avx2::f16_f16;
    w_avx2_f16_acc1 => avx2::f16_f16_acc1;
    w_avx2_bf16 => avx2::bf16_bf16;
    w_vnni_q4_0 => avx512::q4_0_q8_0_vnni;
    w_bw_q4_0 => avx512::q4_0_q8_0_bw;
    w_vnni_q4_1 => avx512::q4_1_q8_1_vnni;
    w_bw_q4_1 => avx512::q4_1_q8_1_bw;
    w_vnni_q5_0 => avx512::q5_0_q8_0_vnni;
    w_bw_q5_0 => avx512::q5_0_q8_0_bw;
    w_vnni_q5_1 => avx512::q5_1_q8_1_vnni;
    w_bw_q5_1 => avx512::q5_1_q8_1_bw;
    w_vnni_q8_0 => avx512::q8_0_q8_0_vnni;
    w_bw_q8_0 => avx512::q8_0_q8_0_bw;
    w_vnni_iq4_nl => avx512::iq4_nl_q8_0_vnni;
    w_bw_iq4_nl => avx512::iq4_nl_q8_0_bw;
    w_avx512_f16 => avx512::f16_f16;
    w_avx512_bf16 => avx512::bf16_bf16;
    w_avx512bf16_bf16 => avx512::bf16_bf16_dpbf16;
}

/// Safe wrappers of the four-row kernels.
macro_rules! wrappers_x4 {
    ($($name:ident => $inner:path;)*) => {$(
        fn $name(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [f32; 4]) {
            // SAFETY: only handed out by `select4` after `Isa::is_available` confirmed
            // AVX-512 (the table additionally checked F16C and FMA, and AVX512-VNNI for
            // those variants).
            *out = unsafe { $inner(n, x, ys) };
        }
    )*};
}

wrappers_x4! {
    w4_vnni_q4_0 => avx512::q4_0_q8_0_vnni_x4;
    w4_bw_q4_0 => avx512::q4_0_q8_0_bw_x4;
    w4_vnni_q4_1 => avx512::q4_1_q8_1_vnni_x4;
    w4_bw_q4_1 => avx512::q4_1_q8_1_bw_x4;
    w4_vnni_q5_0 => avx512::q5_0_q8_0_vnni_x4;
    w4_bw_q5_0 => avx512::q5_0_q8_0_bw_x4;
    w4_vnni_q5_1 => avx512::q5_1_q8_1_vnni_x4;
    w4_bw_q5_1 => avx512::q5_1_q8_1_bw_x4;
    w4_vnni_q8_0 => avx512::q8_0_q8_0_vnni_x4;
    w4_bw_q8_0 => avx512::q8_0_q8_0_bw_x4;
    w4_vnni_iq4_nl => avx512::iq4_nl_q8_0_vnni_x4;
    w4_bw_iq4_nl => avx512::iq4_nl_q8_0_bw_x4;
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

/// Reads 4 bytes (unaligned) as the low lane of a vector: at a block start, the f16 scale `d`
/// in halves lane 0 and the next 2 bytes (`m` / `s` for Q4_1, Q5_1, Q8_1) in lane 1.
///
/// # Safety
/// `p` must be valid for reading 4 bytes.
#[inline(always)]
unsafe fn rd32(p: *const u8) -> i32 {
    (p as *const i32).read_unaligned()
}

/// An all-zero block (f16 scale 0, quants 0) paired with an odd last block: adds exactly 0.
static ZERO_BLOCK: [u8; 64] = [0; 64];

/// The work of one quantized format, shared by the AVX2 and AVX-512 block loops: byte sizes,
/// where the quants sit, and whether lane 1 of the scale products (`m_x * s_y`) is added.
trait Format {
    const NAME: &'static str;
    const XB: usize;
    const YB: usize;
    /// Q4_1 / Q5_1: add `m_x * s_y` per block.
    const MS: bool;
}

macro_rules! block_format {
    ($ty:ident, $name:literal, $xb:expr, $yb:expr, $ms:literal) => {
        struct $ty;
        impl Format for $ty {
            const NAME: &'static str = $name;
            const XB: usize = $xb;
            const YB: usize = $yb;
            const MS: bool = $ms;
        }
    };
}

block_format!(Q4_0, "Q4_0·Q8_0", Q4_0_BYTES, Q8_0_BYTES, false);
block_format!(Q4_1, "Q4_1·Q8_1", Q4_1_BYTES, Q8_1_BYTES, true);
block_format!(Q5_0, "Q5_0·Q8_0", Q5_0_BYTES, Q8_0_BYTES, false);
block_format!(Q5_1, "Q5_1·Q8_1", Q5_1_BYTES, Q8_1_BYTES, true);
block_format!(Q8_0, "Q8_0·Q8_0", Q8_0_BYTES, Q8_0_BYTES, false);
block_format!(IQ4NL, "IQ4_NL·Q8_0", IQ4_NL_BYTES, Q8_0_BYTES, false);

// The helpers below are `#[inline(always)]` without target features (memchr's pattern): they are
// only called from the `#[target_feature]` entry points, into which they are always inlined and
// compiled with those features.

mod avx2 {
    use super::*;

    /// Pairs of i16 summed into i32 lanes.
    #[inline(always)]
    unsafe fn sum_pairs(p: __m256i) -> __m256i {
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }

    /// `sum(a * b) - sum(off * b)` per group of 4 bytes: `a`, `off` unsigned, `b` signed. Exact
    /// when `a` and `off` are at most 63 (pairs stay inside i16).
    #[inline(always)]
    unsafe fn dot_offset(a: __m256i, off: __m256i, b: __m256i) -> __m256i {
        sum_pairs(_mm256_sub_epi16(_mm256_maddubs_epi16(a, b), _mm256_maddubs_epi16(off, b)))
    }

    /// `sum(a * b)` per group of 4 bytes for signed `a`, `b`: `maddubs(|a|, sign(b, a))`. Exact
    /// unless some `b` is -128 where `a < 0` (the negation wraps).
    #[inline(always)]
    unsafe fn dot_signed(a: __m256i, b: __m256i) -> __m256i {
        sum_pairs(_mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(b, a)))
    }

    /// 16 packed bytes to 32 nibbles: low nibbles (weights 0..16) then high nibbles (16..32).
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let v = _mm_loadu_si128(p as *const __m128i);
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F))
    }

    /// `0x10` in byte `j` where bit `j` of the Q5 high-bit word at `p` is set, else 0.
    #[inline(always)]
    unsafe fn fifth_bits(p: *const u8) -> __m256i {
        let v = _mm256_set1_epi32(rd32(p));
        let spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
        let bytes = _mm256_shuffle_epi8(v, spread);
        let sel = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, sel), sel);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }

    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }

    /// `[d_x * d_y, second_x * second_y, ..]` from the first 4 bytes of the two blocks.
    #[inline(always)]
    unsafe fn scales(x: *const u8, y: *const u8) -> __m128 {
        _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(rd32(x))), _mm_cvtph_ps(_mm_cvtsi32_si128(rd32(y))))
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// One block's integer sums, 8 lanes.
    trait Block: Format {
        unsafe fn sums(x: *const u8, y: *const u8) -> __m256i;
    }

    impl Block for Q4_0 {
        #[inline(always)]
        unsafe fn sums(x: *const u8, y: *const u8) -> __m256i {
            dot_offset(nibbles(x.add(2)), _mm256_set1_epi8(8), load(y.add(2)))
        }
    }

    impl Block for Q4_1 {
        #[inline(always)]
        unsafe fn sums(x: *const u8, y: *const u8) -> __m256i {
            sum_pairs(_mm256_maddubs_epi16(nibbles(x.add(4)), load(y.add(4))))
        }
    }

    impl Block for Q5_0 {
        #[inline(always)]
        unsafe fn sums(x: *const u8, y: *const u8) -> __m256i {
            let q = _mm256_or_si256(nibbles(x.add(6)), fifth_bits(x.add(2)));
            dot_offset(q, _mm256_set1_epi8(16), load(y.add(2)))
        }
    }

    impl Block for Q5_1 {
        #[inline(always)]
        unsafe fn sums(x: *const u8, y: *const u8) -> __m256i {
            let q = _mm256_or_si256(nibbles(x.add(8)), fifth_bits(x.add(4)));
            sum_pairs(_mm256_maddubs_epi16(q, load(y.add(4))))
        }
    }

    impl Block for Q8_0 {
        #[inline(always)]
        unsafe fn sums(x: *const u8, y: *const u8) -> __m256i {
            dot_signed(load(x.add(2)), load(y.add(2)))
        }
    }

    impl Block for IQ4NL {
        #[inline(always)]
        unsafe fn sums(x: *const u8, y: *const u8) -> __m256i {
            let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
            let v = _mm256_shuffle_epi8(table, nibbles(x.add(2)));
            // |y| unsigned, ±value signed (|value| <= 127): exact for every activation byte.
            dot_signed(load(y.add(2)), v)
        }
    }

    /// The block loop: `float(sumi) * d_x*d_y` accumulated with FMA, two accumulators
    /// alternating; `m_x * s_y` collected in lane 1 of `acc_m` for Q4_1 / Q5_1.
    #[inline(always)]
    unsafe fn run<B: Block>(n: usize, x: &[u8], y: &[u8]) -> f32 {
        let nb = blocks(n, x, y, B::XB, B::YB, B::NAME);
        let (xp, yp) = (x.as_ptr(), y.as_ptr());
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut acc_m = _mm_setzero_ps();
        let mut i = 0;
        while i + 2 <= nb {
            let (x0, y0) = (xp.add(i * B::XB), yp.add(i * B::YB));
            let (x1, y1) = (x0.add(B::XB), y0.add(B::YB));
            let (d0, d1) = (scales(x0, y0), scales(x1, y1));
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(B::sums(x0, y0)), _mm256_broadcastss_ps(d0), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(B::sums(x1, y1)), _mm256_broadcastss_ps(d1), acc1);
            if B::MS {
                acc_m = _mm_add_ps(acc_m, _mm_add_ps(d0, d1));
            }
            i += 2;
        }
        if i < nb {
            let (x0, y0) = (xp.add(i * B::XB), yp.add(i * B::YB));
            let d0 = scales(x0, y0);
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(B::sums(x0, y0)), _mm256_broadcastss_ps(d0), acc0);
            if B::MS {
                acc_m = _mm_add_ps(acc_m, d0);
            }
        }
        let s = hsum(_mm256_add_ps(acc0, acc1));
        if B::MS {
            s + _mm_cvtss_f32(_mm_movehdup_ps(acc_m))
        } else {
            s
        }
    }

    macro_rules! entry {
        ($name:ident, $fmt:ty, $doc:literal) => {
            #[doc = $doc]
            ///
            /// # Safety
            /// The CPU must support AVX2, FMA and F16C. Panics unless `x` and `y` hold `n / 32`
            /// blocks each.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(in super::super) unsafe fn $name(n: usize, x: &[u8], y: &[u8]) -> f32 {
                run::<$fmt>(n, x, y)
            }
        };
    }

    entry!(q4_0_q8_0, Q4_0, "Q4_0 weights · Q8_0 activations.");
    entry!(q4_1_q8_1, Q4_1, "Q4_1 weights · Q8_1 activations.");
    entry!(q5_0_q8_0, Q5_0, "Q5_0 weights · Q8_0 activations.");
    entry!(q5_1_q8_1, Q5_1, "Q5_1 weights · Q8_1 activations.");
    entry!(q8_0_q8_0, Q8_0, "Q8_0 weights · Q8_0 activations (activation quants in `[-127, 127]`).");
    entry!(iq4_nl_q8_0, IQ4NL, "IQ4_NL weights · Q8_0 activations.");

    #[inline(always)]
    unsafe fn cvt_f16(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    /// F16 · F16: products of the converted halves accumulated in four f32 accumulators.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C. Panics unless `x`, `y` hold `n` halves each.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn f16_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
        halves(n, x, y, "F16");
        let (xp, yp) = (x.as_ptr(), y.as_ptr());
        let (mut a0, mut a1, mut a2, mut a3) =
            (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 32 <= n {
            let (px, py) = (xp.add(2 * i), yp.add(2 * i));
            a0 = _mm256_fmadd_ps(cvt_f16(px), cvt_f16(py), a0);
            a1 = _mm256_fmadd_ps(cvt_f16(px.add(16)), cvt_f16(py.add(16)), a1);
            a2 = _mm256_fmadd_ps(cvt_f16(px.add(32)), cvt_f16(py.add(32)), a2);
            a3 = _mm256_fmadd_ps(cvt_f16(px.add(48)), cvt_f16(py.add(48)), a3);
            i += 32;
        }
        while i + 8 <= n {
            a0 = _mm256_fmadd_ps(cvt_f16(xp.add(2 * i)), cvt_f16(yp.add(2 * i)), a0);
            i += 8;
        }
        if i < n {
            // Zero-padded tail: the padding adds 0 * 0.
            let (mut bx, mut by) = ([0u8; 16], [0u8; 16]);
            bx[..2 * (n - i)].copy_from_slice(&x[2 * i..]);
            by[..2 * (n - i)].copy_from_slice(&y[2 * i..]);
            a1 = _mm256_fmadd_ps(cvt_f16(bx.as_ptr()), cvt_f16(by.as_ptr()), a1);
        }
        hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)))
    }

    /// Converts one F16 activation row to f32 for [`f16_rows`] (exact: every half is an f32).
    #[inline(always)]
    pub(super) unsafe fn prepare_f16(n: usize, y: &[u8], out: &mut [u8]) {
        assert!(
            y.len() == 2 * n && out.len() == 4 * n,
            "prepare F16: n = {n} with {} and {} bytes",
            y.len(),
            out.len()
        );
        let (yp, op) = (y.as_ptr(), out.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(op.add(4 * i) as *mut f32, cvt_f16(yp.add(2 * i)));
            i += 8;
        }
        for j in i..n {
            let h = half::f16::from_bits(u16::from_le_bytes([y[2 * j], y[2 * j + 1]]));
            out[4 * j..4 * j + 4].copy_from_slice(&h.to_f32().to_le_bytes());
        }
    }

    /// [`prepare_f16`] of `quantize_row_f16(x)` in one pass: each group of eight rounded to f16
    /// by `vcvtps2ph` (nearest even) and widened back in registers. A group holding a NaN goes
    /// through the scalar rounding, whose NaN bits `quantize_row_f16` also uses.
    ///
    /// # Safety
    /// The CPU must support F16C (and so AVX). Panics unless `out` holds `4 * x.len()` bytes.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn prep_f16_from_f32(x: &[f32], out: &mut [u8]) {
        assert_eq!(out.len(), 4 * x.len(), "prepare F16: {} values and {} bytes", x.len(), out.len());
        let full = x.len() / 8 * 8;
        let (xp, op) = (x.as_ptr(), out.as_mut_ptr() as *mut f32);
        for i in (0..full).step_by(8) {
            let v = _mm256_loadu_ps(xp.add(i));
            if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) != 0 {
                round_trip_scalar(&x[i..i + 8], op.add(i));
            } else {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm256_storeu_ps(op.add(i), _mm256_cvtph_ps(h));
            }
        }
        round_trip_scalar(&x[full..], op.add(full));
    }

    /// `x` rounded to f16 by `fp32_to_fp16` and widened, stored at `out` (`x.len()` floats).
    #[inline(always)]
    unsafe fn round_trip_scalar(x: &[f32], out: *mut f32) {
        for (i, &v) in x.iter().enumerate() {
            out.add(i).write_unaligned(crate::formats::float::fp32_to_fp16(v).to_f32());
        }
    }

    /// F16 · F16 as the AVX2 path computes it: one 8-lane accumulator, `acc = x·y + acc` with
    /// FMA per eight halves in order, the zero-padded tail last, then [`hsum`]. One accumulator
    /// per output (rather than [`f16_f16`]'s four) is what lets [`f16_tile`] keep a whole tile
    /// of outputs in the sixteen registers.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C. Panics unless `x`, `y` hold `n` halves each.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn f16_f16_acc1(n: usize, x: &[u8], y: &[u8]) -> f32 {
        halves(n, x, y, "F16");
        let (xp, yp) = (x.as_ptr(), y.as_ptr());
        let mut acc = _mm256_setzero_ps();
        let n8 = n / 8 * 8;
        for i in (0..n8).step_by(8) {
            acc = _mm256_fmadd_ps(cvt_f16(xp.add(2 * i)), cvt_f16(yp.add(2 * i)), acc);
        }
        if n8 < n {
            let (mut bx, mut by) = ([0u8; 16], [0u8; 16]);
            bx[..2 * (n - n8)].copy_from_slice(&x[2 * n8..]);
            by[..2 * (n - n8)].copy_from_slice(&y[2 * n8..]);
            acc = _mm256_fmadd_ps(cvt_f16(bx.as_ptr()), cvt_f16(by.as_ptr()), acc);
        }
        hsum(acc)
    }

    /// [`f16_f16_acc1`] for every weight row in `x` (rows of `n` halves) against `T`
    /// activation rows converted to f32 by [`prepare_f16`], `R` weight rows at a time: per
    /// eight halves, `R` conversions and `T` loads feed `R × T` FMAs. Each output gets the
    /// same products (`cvt(x) * y`, `y` exact) into one accumulator in the same order as
    /// [`f16_f16_acc1`]: the same bits. `R = 3, T = 4` is 12 accumulators, 3 weight vectors
    /// and an activation vector, the sixteen registers.
    #[inline(always)]
    pub(super) unsafe fn f16_tile<const R: usize, const T: usize>(
        n: usize,
        x: &[u8],
        ys: [&[u8]; T],
        out: &mut [[f32; T]],
    ) {
        const PREFETCH_BYTES: usize = 512;
        assert!(x.len() == out.len() * 2 * n, "F16 (prepared): {} rows of n = {n} in {} bytes", out.len(), x.len());
        for y in ys {
            assert!(y.len() == 4 * n, "F16 (prepared): n = {n} with a {}-byte activation row", y.len());
        }
        let yp = ys.map(|y| y.as_ptr() as *const f32);
        let n8 = n / 8 * 8;
        let rows = out.len();
        let mut r = 0;
        while r < rows {
            // `R` rows, the last one repeated past the end (the copies' results are dropped).
            let rr: [usize; R] = std::array::from_fn(|j| (r + j).min(rows - 1));
            let xp = rr.map(|row| x.as_ptr().add(row * 2 * n));
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            for i in (0..n8).step_by(8) {
                if T == 1 && i % 32 == 0 {
                    // Generation streams the weights from memory once: ask for each row's line
                    // 512 bytes ahead (tg128 ~65 against ~58 t/s without).
                    for p in xp {
                        _mm_prefetch::<_MM_HINT_T0>(p.add(2 * i + PREFETCH_BYTES) as *const i8);
                    }
                }
                let w: [__m256; R] = std::array::from_fn(|j| cvt_f16(xp[j].add(2 * i)));
                for t in 0..T {
                    let y = _mm256_loadu_ps(yp[t].add(i));
                    for j in 0..R {
                        acc[j][t] = _mm256_fmadd_ps(w[j], y, acc[j][t]);
                    }
                }
            }
            if n8 < n {
                let w = rr.map(|row| {
                    let mut bx = [0u8; 16];
                    bx[..2 * (n - n8)].copy_from_slice(&x[row * 2 * n + 2 * n8..(row + 1) * 2 * n]);
                    cvt_f16(bx.as_ptr())
                });
                for t in 0..T {
                    let mut by = [0f32; 8];
                    by[..n - n8].copy_from_slice(std::slice::from_raw_parts(yp[t].add(n8), n - n8));
                    let y = _mm256_loadu_ps(by.as_ptr());
                    for j in 0..R {
                        acc[j][t] = _mm256_fmadd_ps(w[j], y, acc[j][t]);
                    }
                }
            }
            for (j, o) in out[r..].iter_mut().take(R).enumerate() {
                for t in 0..T {
                    o[t] = hsum(acc[j][t]);
                }
            }
            r += R;
        }
    }

    /// [`f16_f16`] for every weight row in `x` (rows of `n` halves) against `T` activation rows
    /// converted to f32 by [`prepare_f16`]: each weight vector is converted once for the `T`
    /// tokens, and each token gets the same products (`cvt(x) * y`, `y` exact), accumulators
    /// and reduction as [`f16_f16`], so the same bits.
    #[inline(always)]
    pub(super) unsafe fn f16_rows<const T: usize>(n: usize, x: &[u8], ys: [&[u8]; T], out: &mut [[f32; T]]) {
        assert!(x.len() == out.len() * 2 * n, "F16 (prepared): {} rows of n = {n} in {} bytes", out.len(), x.len());
        for y in ys {
            assert!(y.len() == 4 * n, "F16 (prepared): n = {n} with a {}-byte activation row", y.len());
        }
        let yp = ys.map(|y| y.as_ptr() as *const f32);
        for (r, o) in out.iter_mut().enumerate() {
            let xp = x.as_ptr().add(r * 2 * n);
            let mut a = [[_mm256_setzero_ps(); 4]; T];
            let mut i = 0;
            while i + 32 <= n {
                let w = [
                    cvt_f16(xp.add(2 * i)),
                    cvt_f16(xp.add(2 * i + 16)),
                    cvt_f16(xp.add(2 * i + 32)),
                    cvt_f16(xp.add(2 * i + 48)),
                ];
                for k in 0..T {
                    for (c, wc) in w.iter().enumerate() {
                        a[k][c] = _mm256_fmadd_ps(*wc, _mm256_loadu_ps(yp[k].add(i + 8 * c)), a[k][c]);
                    }
                }
                i += 32;
            }
            while i + 8 <= n {
                let w = cvt_f16(xp.add(2 * i));
                for k in 0..T {
                    a[k][0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(yp[k].add(i)), a[k][0]);
                }
                i += 8;
            }
            if i < n {
                // The zero-padded tail of `f16_f16`: the padding adds 0 * 0.
                let mut bx = [0u8; 16];
                bx[..2 * (n - i)].copy_from_slice(&x[r * 2 * n + 2 * i..(r + 1) * 2 * n]);
                let w = cvt_f16(bx.as_ptr());
                for k in 0..T {
                    let mut by = [0f32; 8];
                    by[..n - i].copy_from_slice(std::slice::from_raw_parts(yp[k].add(i), n - i));
                    a[k][1] = _mm256_fmadd_ps(w, _mm256_loadu_ps(by.as_ptr()), a[k][1]);
                }
            }
            for k in 0..T {
                o[k] = hsum(_mm256_add_ps(_mm256_add_ps(a[k][0], a[k][1]), _mm256_add_ps(a[k][2], a[k][3])));
            }
        }
    }

    /// [`f16_rows`] for four tokens with AVX-512 registers, `R` weight rows at a time so that
    /// each activation vector loaded serves all `R` (the four activation rows of a 1536-wide
    /// product do not stay in L1, and streaming them once per row was the bound). `R = 3`
    /// fills the 32 registers: 24 accumulators, 6 converted weight vectors, 2 activations.
    ///
    /// The lanes are `f16_f16`'s: one 512-bit accumulator holds two of its 256-bit ones
    /// (`A = [a0 | a1]`, `B = [a2 | a3]`), each lane taking the same products in the same
    /// order; the 8-half tail goes to the low half of `A` (`a0`) and the padded tail to its high
    /// half (`a1`), masked so the other half is untouched; the result is
    /// `hsum((a0 + a1) + (a2 + a3))` as there. Same bits.
    #[inline(always)]
    pub(super) unsafe fn f16_rows_x4_zmm<const R: usize>(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [[f32; 4]]) {
        assert!(x.len() == out.len() * 2 * n, "F16 (prepared): {} rows of n = {n} in {} bytes", out.len(), x.len());
        for y in ys {
            assert!(y.len() == 4 * n, "F16 (prepared): n = {n} with a {}-byte activation row", y.len());
        }
        let yp = ys.map(|y| y.as_ptr() as *const f32);
        let cvt16 = |p: *const u8| _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
        let rows = out.len();
        let mut r = 0;
        while r < rows {
            // `R` rows, the last one repeated past the end (the copies' results are dropped).
            let rr: [usize; R] = std::array::from_fn(|j| (r + j).min(rows - 1));
            let xp = rr.map(|row| x.as_ptr().add(row * 2 * n));
            let mut acc = [[[_mm512_setzero_ps(); 2]; 4]; R];
            let mut i = 0;
            while i + 32 <= n {
                let w = xp.map(|p| [cvt16(p.add(2 * i)), cvt16(p.add(2 * i + 32))]);
                for k in 0..4 {
                    let y0 = _mm512_loadu_ps(yp[k].add(i));
                    let y1 = _mm512_loadu_ps(yp[k].add(i + 16));
                    for j in 0..R {
                        acc[j][k][0] = _mm512_fmadd_ps(w[j][0], y0, acc[j][k][0]);
                        acc[j][k][1] = _mm512_fmadd_ps(w[j][1], y1, acc[j][k][1]);
                    }
                }
                i += 32;
            }
            // The accumulators go through the tails by value: behind a reference they lived on
            // the stack, zeroed by a `memset` call per pass (5% of an F16 pp512 on Zen 4).
            while i + 8 <= n {
                acc = f16_zmm_tail(x, n, rr, yp, i, 8, 0x00FF, acc);
                i += 8;
            }
            if i < n {
                acc = f16_zmm_tail(x, n, rr, yp, i, n - i, 0xFF00, acc);
            }
            for j in 0..R.min(rows - r) {
                for k in 0..4 {
                    let [a, b] = acc[j][k];
                    let s01 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps::<1>(a));
                    let s23 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps::<1>(b));
                    out[r + j][k] = hsum(_mm256_add_ps(s01, s23));
                }
            }
            r += R;
        }
    }

    /// The tail of [`f16_rows_x4_zmm`]: `len` halves at `i` of the rows `rr`, zero-padded to 8,
    /// added into the lanes of `mask` of each first accumulator.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn f16_zmm_tail<const R: usize>(
        x: &[u8],
        n: usize,
        rr: [usize; R],
        yp: [*const f32; 4],
        i: usize,
        len: usize,
        mask: __mmask16,
        mut acc: [[[__m512; 2]; 4]; R],
    ) -> [[[__m512; 2]; 4]; R] {
        let mut bx = [[0u8; 16]; R];
        let mut by = [[0f32; 8]; 4];
        for (b, row) in bx.iter_mut().zip(rr) {
            b[..2 * len].copy_from_slice(&x[row * 2 * n + 2 * i..row * 2 * n + 2 * (i + len)]);
        }
        for k in 0..4 {
            by[k][..len].copy_from_slice(std::slice::from_raw_parts(yp[k].add(i), len));
        }
        let w = bx.map(|b| _mm512_cvtph_ps(_mm256_broadcastsi128_si256(_mm_loadu_si128(b.as_ptr() as *const __m128i))));
        for k in 0..4 {
            let y = _mm512_castps256_ps512(_mm256_loadu_ps(by[k].as_ptr()));
            let y = _mm512_shuffle_f32x4::<0b01_00_01_00>(y, y);
            for j in 0..R {
                acc[j][k][0] = _mm512_mask3_fmadd_ps(w[j], y, acc[j][k][0], mask);
            }
        }
        acc
    }

    /// Entry points of the prepared F16 kernels of the Zen 4 path, compiled with AVX-512 (whose
    /// four-token kernel is [`f16_rows_x4_zmm`]).
    macro_rules! f16_entries {
        ($features:literal, $prep:ident, $x1:ident) => {
            /// # Safety
            /// The CPU must support the enabled features.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn $prep(n: usize, y: &[u8], out: &mut [u8]) {
                prepare_f16(n, y, out)
            }
            /// # Safety
            /// As above.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn $x1(n: usize, x: &[u8], y: &[u8], out: &mut [f32]) {
                // SAFETY: `[f32]` and `[[f32; 1]]` have the same layout.
                let out = std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut [f32; 1], out.len());
                f16_rows::<1>(n, x, [y], out)
            }
        };
    }

    f16_entries!("avx2,fma,f16c,avx512f,avx512vl,avx512dq", prep_f16_vl, f16_x1p_vl);

    /// The AVX2 prepared F16 kernels ([`f16_f16_acc1`]'s bits): activations, four tokens (3-row
    /// tiles), one token (a row at a time).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn prep_f16(n: usize, y: &[u8], out: &mut [u8]) {
        prepare_f16(n, y, out)
    }

    /// # Safety
    /// As for [`prep_f16`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn f16_acc1_x4p(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [[f32; 4]]) {
        f16_tile::<3, 4>(n, x, ys, out)
    }

    /// # Safety
    /// As for [`prep_f16`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn f16_acc1_x1p(n: usize, x: &[u8], y: &[u8], out: &mut [f32]) {
        // SAFETY: `[f32]` and `[[f32; 1]]` have the same layout.
        let out = std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut [f32; 1], out.len());
        // One row at a time: interleaving rows (several independent FMA chains) was slower
        // when the rows stream from memory (tg128 ~50 against ~65 t/s with R = 1).
        f16_tile::<1, 1>(n, x, [y], out)
    }

    /// Weight rows per pass of [`f16_rows_x4_zmm`].
    const F16_ZMM_ROWS: usize = 3;

    /// The multi-row AVX-512 four-token F16 kernel.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/VL/DQ, AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512dq")]
    pub(in super::super) unsafe fn f16_x4p_zmm(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [[f32; 4]]) {
        f16_rows_x4_zmm::<F16_ZMM_ROWS>(n, x, ys, out)
    }

    /// `(even, odd)` elements of 16 bf16 as f32: each 32-bit lane holds two bf16, `lane << 16`
    /// is the even one and `lane & 0xFFFF0000` the odd one, so no shuffles are needed.
    #[inline(always)]
    unsafe fn split_bf16(p: *const u8) -> (__m256, __m256) {
        let v = load(p);
        let odd = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF0000u32 as i32));
        (_mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)), _mm256_castsi256_ps(odd))
    }

    /// BF16 · BF16 with the even/odd split of [`split_bf16`].
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C. Panics unless `x`, `y` hold `n` halves each.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn bf16_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
        halves(n, x, y, "BF16");
        let (xp, yp) = (x.as_ptr(), y.as_ptr());
        let (mut a0, mut a1, mut a2, mut a3) =
            (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 32 <= n {
            let (px, py) = (xp.add(2 * i), yp.add(2 * i));
            let ((xe, xo), (ye, yo)) = (split_bf16(px), split_bf16(py));
            a0 = _mm256_fmadd_ps(xe, ye, a0);
            a1 = _mm256_fmadd_ps(xo, yo, a1);
            let ((xe, xo), (ye, yo)) = (split_bf16(px.add(32)), split_bf16(py.add(32)));
            a2 = _mm256_fmadd_ps(xe, ye, a2);
            a3 = _mm256_fmadd_ps(xo, yo, a3);
            i += 32;
        }
        while i + 16 <= n {
            let ((xe, xo), (ye, yo)) = (split_bf16(xp.add(2 * i)), split_bf16(yp.add(2 * i)));
            a0 = _mm256_fmadd_ps(xe, ye, a0);
            a1 = _mm256_fmadd_ps(xo, yo, a1);
            i += 16;
        }
        if i < n {
            let (mut bx, mut by) = ([0u8; 32], [0u8; 32]);
            bx[..2 * (n - i)].copy_from_slice(&x[2 * i..]);
            by[..2 * (n - i)].copy_from_slice(&y[2 * i..]);
            let ((xe, xo), (ye, yo)) = (split_bf16(bx.as_ptr()), split_bf16(by.as_ptr()));
            a2 = _mm256_fmadd_ps(xe, ye, a2);
            a3 = _mm256_fmadd_ps(xo, yo, a3);
        }
        hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)))
    }
}

mod avx512 {
    use super::*;

    /// The integer products of a pair of blocks: `vpdpbusd` (VNNI) or `vpmaddubsw` + `vpmaddwd`
    /// (AVX-512BW). Either gives, per 32-bit lane, the sum of 4 adjacent byte products, exactly;
    /// the strategies differ only in how, never in the lane values.
    ///
    /// Products with an offset or with signed weights are split into a weight-side preparation
    /// ([`Prepared`], once per pair of weight blocks) and the product with one activation pair,
    /// so that the four-row kernels prepare each pair once for all their tokens.
    trait Products {
        /// `sum(a * b)`, `a` unsigned and at most 63, `b` signed: exact.
        unsafe fn dot(a: __m512i, b: __m512i) -> __m512i;
        /// Prepares weights `a - off`, `a` and `off` unsigned and at most 63, for
        /// [`Products::dot_offset`].
        unsafe fn offset_weights(a: __m512i, off: __m512i) -> Prepared;
        /// `sum((a - off) * b)` for `w = offset_weights(a, off)`, `b` signed: exact.
        unsafe fn dot_offset(w: Prepared, b: __m512i) -> __m512i;
        /// Prepares signed weight bytes `a` (any byte) for [`Products::dot_signed`].
        unsafe fn signed_weights(a: __m512i) -> Prepared;
        /// `sum(a * b)` for `w = signed_weights(a)`, `b` signed. VNNI: exact for all bytes. BW:
        /// exact unless some `b` is -128 where `a < 0`.
        unsafe fn dot_signed(w: Prepared, b: __m512i) -> __m512i;
        /// The 16 IQ4_NL values as this strategy wants them in the lookup table.
        unsafe fn iq4nl_table() -> __m512i;
        /// Prepares the looked-up IQ4_NL values `v = table[idx]` for [`Products::dot_iq4nl`].
        unsafe fn iq4nl_weights(v: __m512i) -> Prepared;
        /// `sum(value * y)` for prepared IQ4_NL values and any activation bytes `y`: exact.
        unsafe fn dot_iq4nl(w: Prepared, y: __m512i) -> __m512i;
    }

    /// A pair of weight blocks prepared for one strategy's products: `w` the weight bytes (or
    /// what the strategy makes of them) and `c` a second operand derived from them (the offset
    /// bytes, or the per-lane correction of `Vnni<true>`).
    #[derive(Clone, Copy)]
    struct Prepared {
        w: __m512i,
        c: __m512i,
    }

    /// `vpdpbusd` products, in two exact formulations that differ in where the work sits.
    ///
    /// `Vnni<false>` (one token per weight row) keeps the weights on the unsigned side: offset
    /// weights as `dpbusd(a, y) - dpbusd(off, y)`, signed weights and IQ4_NL values biased by
    /// +128 (`x ^ 0x80`) as `dpbusd(x + 128, y) - dpbusd(128, y)`: two `vpdpbusd` per
    /// activation pair, and nothing else per weight pair.
    ///
    /// `Vnni<true>` (several tokens per weight row) puts the activations on the unsigned side:
    /// `sum(w * y) = sum((y + 128) * w) - 128 * sum(w)` for the signed weights `w` (`a - off`,
    /// the quants, the table values), with `y + 128` as `y ^ 0x80`. The correction depends on
    /// the weights alone and is computed once per weight pair; each activation pair then costs
    /// one XOR and one `vpdpbusd` that starts from the correction.
    ///
    /// `vpdpbusd` does not saturate and sums 4 products of at most 255 · 128 into i32, so both
    /// are exact for every byte and give the same lane values.
    struct Vnni<const SHARED: bool>;
    struct Bw;

    #[inline(always)]
    unsafe fn kvalues() -> __m512i {
        _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i))
    }

    impl<const SHARED: bool> Vnni<SHARED> {
        /// Signed weights `w` for the chosen formulation.
        #[inline(always)]
        unsafe fn signed(w: __m512i) -> Prepared {
            let (z, bias) = (_mm512_setzero_si512(), _mm512_set1_epi8(-128));
            if SHARED {
                Prepared { w, c: _mm512_sub_epi32(z, _mm512_dpbusd_epi32(z, bias, w)) }
            } else {
                Prepared { w: _mm512_xor_si512(w, bias), c: bias }
            }
        }
        /// `sum(w * b)` for weights prepared by [`Self::signed`] or [`Products::offset_weights`].
        #[inline(always)]
        unsafe fn prepared_dot(w: Prepared, b: __m512i) -> __m512i {
            let z = _mm512_setzero_si512();
            if SHARED {
                _mm512_dpbusd_epi32(w.c, _mm512_xor_si512(b, _mm512_set1_epi8(-128)), w.w)
            } else {
                _mm512_sub_epi32(_mm512_dpbusd_epi32(z, w.w, b), _mm512_dpbusd_epi32(z, w.c, b))
            }
        }
    }

    impl<const SHARED: bool> Products for Vnni<SHARED> {
        #[inline(always)]
        unsafe fn dot(a: __m512i, b: __m512i) -> __m512i {
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), a, b)
        }
        #[inline(always)]
        unsafe fn offset_weights(a: __m512i, off: __m512i) -> Prepared {
            if SHARED {
                // |a - off| <= 63: a valid signed byte.
                Self::signed(_mm512_sub_epi8(a, off))
            } else {
                Prepared { w: a, c: off }
            }
        }
        #[inline(always)]
        unsafe fn dot_offset(w: Prepared, b: __m512i) -> __m512i {
            Self::prepared_dot(w, b)
        }
        #[inline(always)]
        unsafe fn signed_weights(a: __m512i) -> Prepared {
            Self::signed(a)
        }
        #[inline(always)]
        unsafe fn dot_signed(w: Prepared, b: __m512i) -> __m512i {
            Self::prepared_dot(w, b)
        }
        #[inline(always)]
        unsafe fn iq4nl_table() -> __m512i {
            if SHARED {
                kvalues()
            } else {
                // value + 128, unsigned: biased once here rather than per lookup.
                _mm512_xor_si512(kvalues(), _mm512_set1_epi8(-128))
            }
        }
        #[inline(always)]
        unsafe fn iq4nl_weights(v: __m512i) -> Prepared {
            if SHARED {
                Self::signed(v)
            } else {
                Prepared { w: v, c: _mm512_set1_epi8(-128) }
            }
        }
        #[inline(always)]
        unsafe fn dot_iq4nl(w: Prepared, y: __m512i) -> __m512i {
            Self::prepared_dot(w, y)
        }
    }

    impl Bw {
        /// `sum(a * b)` for signed bytes: `maddubs(|a|, b negated where a < 0)` (AVX-512 has no
        /// `vpsignb`). Exact unless some `b` is -128 where `a < 0`.
        #[inline(always)]
        unsafe fn signed(a: __m512i, b: __m512i) -> __m512i {
            let neg = _mm512_movepi8_mask(a);
            let sb = _mm512_mask_sub_epi8(b, neg, _mm512_setzero_si512(), b);
            _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(a), sb), _mm512_set1_epi16(1))
        }
    }

    impl Products for Bw {
        #[inline(always)]
        unsafe fn dot(a: __m512i, b: __m512i) -> __m512i {
            _mm512_madd_epi16(_mm512_maddubs_epi16(a, b), _mm512_set1_epi16(1))
        }
        #[inline(always)]
        unsafe fn offset_weights(a: __m512i, off: __m512i) -> Prepared {
            Prepared { w: a, c: off }
        }
        #[inline(always)]
        unsafe fn dot_offset(w: Prepared, b: __m512i) -> __m512i {
            let p = _mm512_sub_epi16(_mm512_maddubs_epi16(w.w, b), _mm512_maddubs_epi16(w.c, b));
            _mm512_madd_epi16(p, _mm512_set1_epi16(1))
        }
        #[inline(always)]
        unsafe fn signed_weights(a: __m512i) -> Prepared {
            Prepared { w: a, c: _mm512_setzero_si512() }
        }
        #[inline(always)]
        unsafe fn dot_signed(w: Prepared, b: __m512i) -> __m512i {
            Self::signed(w.w, b)
        }
        #[inline(always)]
        unsafe fn iq4nl_table() -> __m512i {
            kvalues()
        }
        #[inline(always)]
        unsafe fn iq4nl_weights(v: __m512i) -> Prepared {
            Prepared { w: v, c: _mm512_setzero_si512() }
        }
        #[inline(always)]
        unsafe fn dot_iq4nl(w: Prepared, y: __m512i) -> __m512i {
            // |y| on the unsigned side, ±value (|value| <= 127) on the signed side.
            Self::signed(y, w.w)
        }
    }

    /// Two blocks' 16-byte nibble arrays to 64 weights: block A's 32 weights (low nibbles, then
    /// high nibbles) in the low half, block B's in the high half.
    #[inline(always)]
    unsafe fn nibbles_pair(a: *const u8, b: *const u8) -> __m512i {
        let v = _mm512_broadcast_i32x4(_mm_loadu_si128(a as *const __m128i));
        let v = _mm512_mask_broadcast_i32x4(v, 0xFF00, _mm_loadu_si128(b as *const __m128i));
        let v = _mm512_mask_srli_epi16::<4>(v, 0xFF00_FF00, v);
        _mm512_and_si512(v, _mm512_set1_epi8(0x0F))
    }

    /// 32 bytes at `a` in the low half, 32 bytes at `b` in the high half.
    #[inline(always)]
    unsafe fn load_pair(a: *const u8, b: *const u8) -> __m512i {
        let lo = _mm512_castsi256_si512(_mm256_loadu_si256(a as *const __m256i));
        _mm512_inserti64x4::<1>(lo, _mm256_loadu_si256(b as *const __m256i))
    }

    /// Adds 16 to weight `j` of the pair where bit `j` of its block's Q5 high-bit word is set.
    #[inline(always)]
    unsafe fn add_fifth_bits(q: __m512i, qh_a: *const u8, qh_b: *const u8) -> __m512i {
        let k: __mmask64 = (rd32(qh_a) as u32 as u64) | ((rd32(qh_b) as u32 as u64) << 32);
        _mm512_mask_add_epi8(q, k, q, _mm512_set1_epi8(16))
    }

    /// `[d_a, second_a, d_b, second_b]` from the first 4 bytes of blocks `a` and `b` (`second`
    /// is `m` / `s` for Q4_1, Q5_1, Q8_1 and meaningless otherwise).
    #[inline(always)]
    unsafe fn scales_pair(a: *const u8, b: *const u8) -> __m128 {
        _mm_cvtph_ps(_mm_insert_epi32::<1>(_mm_cvtsi32_si128(rd32(a)), rd32(b)))
    }

    /// Lanes 0 and 2 of a [`scales_pair`] (the two blocks' `d`) spread over their blocks'
    /// lanes: lane 0 into lanes 0..8, lane 2 into lanes 8..16.
    #[inline(always)]
    unsafe fn spread_ab(d: __m128) -> __m512 {
        let spread = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(d))
    }

    /// One pair of weight blocks, unpacked once ([`Pair::unpack`]) and then dotted with the
    /// matching pair of activation blocks of each token ([`Pair::sums`]).
    trait Pair: Format {
        /// Blocks `xa`, `xb` unpacked to 64 weights and prepared for `P`'s products (`t`: the
        /// IQ4_NL table of `P`).
        unsafe fn unpack<P: Products>(t: __m512i, xa: *const u8, xb: *const u8) -> Prepared;
        /// The integer sums of unpacked weights `w` against activation blocks `ya`, `yb`: block
        /// A in lanes 0..8, block B in lanes 8..16.
        unsafe fn sums<P: Products>(w: Prepared, ya: *const u8, yb: *const u8) -> __m512i;
        /// Whether the weights sit on the unsigned side of the products (Q4_1, Q5_1: plain
        /// `dpbusd(0, q, y)`), so prepared activations keep their raw bytes; the others take
        /// `Vnni<true>`'s `dpbusd(c, y ^ 0x80, w)`, so prepared activations carry the bias.
        const RAW_ACT: bool = false;
        /// Whether prepared activation pairs also carry their scales spread over the lanes
        /// (see [`prepare`]): worth it where unpacking the weights is most of a pair's work
        /// (Q4_0, Q5_0, IQ4_NL); for Q8_0 and the Q4_1 / Q5_1 min formats the larger rows
        /// cost more in loads than the permutation they save.
        const SPREAD: bool = true;
    }

    /// [`Pair::SPREAD`] by type, for the row sizes.
    pub(super) fn spread_scales(ty: GgmlType) -> bool {
        match ty {
            GgmlType::Q4_0 => <Q4_0 as Pair>::SPREAD,
            GgmlType::Q4_1 => <Q4_1 as Pair>::SPREAD,
            GgmlType::Q5_0 => <Q5_0 as Pair>::SPREAD,
            GgmlType::Q5_1 => <Q5_1 as Pair>::SPREAD,
            GgmlType::Q8_0 => <Q8_0 as Pair>::SPREAD,
            GgmlType::IQ4_NL => <IQ4NL as Pair>::SPREAD,
            _ => false,
        }
    }

    impl Pair for Q4_0 {
        #[inline(always)]
        unsafe fn unpack<P: Products>(_: __m512i, xa: *const u8, xb: *const u8) -> Prepared {
            P::offset_weights(nibbles_pair(xa.add(2), xb.add(2)), _mm512_set1_epi8(8))
        }
        #[inline(always)]
        unsafe fn sums<P: Products>(w: Prepared, ya: *const u8, yb: *const u8) -> __m512i {
            P::dot_offset(w, load_pair(ya.add(2), yb.add(2)))
        }
    }

    impl Pair for Q4_1 {
        const SPREAD: bool = false;
        const RAW_ACT: bool = true;
        #[inline(always)]
        unsafe fn unpack<P: Products>(_: __m512i, xa: *const u8, xb: *const u8) -> Prepared {
            let q = nibbles_pair(xa.add(4), xb.add(4));
            Prepared { w: q, c: q } // `c` unused: plain unsigned products
        }
        #[inline(always)]
        unsafe fn sums<P: Products>(w: Prepared, ya: *const u8, yb: *const u8) -> __m512i {
            P::dot(w.w, load_pair(ya.add(4), yb.add(4)))
        }
    }

    impl Pair for Q5_0 {
        #[inline(always)]
        unsafe fn unpack<P: Products>(_: __m512i, xa: *const u8, xb: *const u8) -> Prepared {
            let q = add_fifth_bits(nibbles_pair(xa.add(6), xb.add(6)), xa.add(2), xb.add(2));
            P::offset_weights(q, _mm512_set1_epi8(16))
        }
        #[inline(always)]
        unsafe fn sums<P: Products>(w: Prepared, ya: *const u8, yb: *const u8) -> __m512i {
            P::dot_offset(w, load_pair(ya.add(2), yb.add(2)))
        }
    }

    impl Pair for Q5_1 {
        const SPREAD: bool = false;
        const RAW_ACT: bool = true;
        #[inline(always)]
        unsafe fn unpack<P: Products>(_: __m512i, xa: *const u8, xb: *const u8) -> Prepared {
            let q = add_fifth_bits(nibbles_pair(xa.add(8), xb.add(8)), xa.add(4), xb.add(4));
            Prepared { w: q, c: q } // `c` unused: plain unsigned products
        }
        #[inline(always)]
        unsafe fn sums<P: Products>(w: Prepared, ya: *const u8, yb: *const u8) -> __m512i {
            P::dot(w.w, load_pair(ya.add(4), yb.add(4)))
        }
    }

    impl Pair for Q8_0 {
        const SPREAD: bool = false;
        #[inline(always)]
        unsafe fn unpack<P: Products>(_: __m512i, xa: *const u8, xb: *const u8) -> Prepared {
            P::signed_weights(load_pair(xa.add(2), xb.add(2)))
        }
        #[inline(always)]
        unsafe fn sums<P: Products>(w: Prepared, ya: *const u8, yb: *const u8) -> __m512i {
            P::dot_signed(w, load_pair(ya.add(2), yb.add(2)))
        }
    }

    impl Pair for IQ4NL {
        #[inline(always)]
        unsafe fn unpack<P: Products>(t: __m512i, xa: *const u8, xb: *const u8) -> Prepared {
            P::iq4nl_weights(_mm512_shuffle_epi8(t, nibbles_pair(xa.add(2), xb.add(2))))
        }
        #[inline(always)]
        unsafe fn sums<P: Products>(w: Prepared, ya: *const u8, yb: *const u8) -> __m512i {
            P::dot_iq4nl(w, load_pair(ya.add(2), yb.add(2)))
        }
    }

    /// One pair of weight blocks `(xa, xb)` against the activation pair `ys[k]` of each of `T`
    /// tokens: into `acc[k]`, and `m_x * s_y` into lanes 1 and 3 of `acc_m[k]`. The weights
    /// are unpacked once; each token's float operations are exactly those of `T = 1`.
    #[inline(always)]
    unsafe fn step<F: Pair, P: Products, const T: usize>(
        acc: &mut [__m512; T],
        acc_m: &mut [__m128; T],
        t: __m512i,
        (xa, xb): (*const u8, *const u8),
        ys: [(*const u8, *const u8); T],
    ) {
        let w = F::unpack::<P>(t, xa, xb);
        let dx = scales_pair(xa, xb);
        for k in 0..T {
            let (ya, yb) = ys[k];
            let q = F::sums::<P>(w, ya, yb);
            let d = _mm_mul_ps(dx, scales_pair(ya, yb));
            let dv = spread_ab(d);
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), dv, acc[k]);
            if F::MS {
                acc_m[k] = _mm_add_ps(acc_m[k], d);
            }
        }
    }

    /// Each token's result from its two accumulators (and, for Q4_1 / Q5_1, lanes 1 and 3 of its
    /// `m_x * s_y` sums): the one reduction order [`run`] and [`run_prepared`] share.
    #[inline(always)]
    unsafe fn finish<F: Format, const T: usize>(acc0: [__m512; T], acc1: [__m512; T], acc_m: [__m128; T]) -> [f32; T] {
        let mut out = [0f32; T];
        for k in 0..T {
            let s = _mm512_reduce_add_ps(_mm512_add_ps(acc0[k], acc1[k]));
            out[k] = if F::MS {
                let m = _mm_add_ps(acc_m[k], _mm_movehl_ps(acc_m[k], acc_m[k]));
                s + _mm_cvtss_f32(_mm_movehdup_ps(m))
            } else {
                s
            };
        }
        out
    }

    /// The block loop of one weight row against `T` activation rows: four blocks per
    /// iteration into two accumulators per token; an odd last block is paired with
    /// [`ZERO_BLOCK`]. Token `k`'s result depends on `ys[k]` alone, bit for bit: every token
    /// goes through the same float operations in the same order as with `T = 1`.
    #[inline(always)]
    unsafe fn run<F: Pair, P: Products, const T: usize>(n: usize, x: &[u8], ys: [&[u8]; T]) -> [f32; T] {
        let mut nb = 0;
        for y in ys {
            nb = blocks(n, x, y, F::XB, F::YB, F::NAME);
        }
        let xp = x.as_ptr();
        let yp = ys.map(|y| y.as_ptr());
        let t = P::iq4nl_table();
        let (mut acc0, mut acc1) = ([_mm512_setzero_ps(); T], [_mm512_setzero_ps(); T]);
        let mut acc_m = [_mm_setzero_ps(); T];
        let wx = |i: usize| (xp.add(i * F::XB), xp.add((i + 1) * F::XB));
        let wy = |i: usize| yp.map(|p| (p.add(i * F::YB), p.add((i + 1) * F::YB)));
        let mut i = 0;
        while i + 4 <= nb {
            step::<F, P, T>(&mut acc0, &mut acc_m, t, wx(i), wy(i));
            step::<F, P, T>(&mut acc1, &mut acc_m, t, wx(i + 2), wy(i + 2));
            i += 4;
        }
        if i + 2 <= nb {
            step::<F, P, T>(&mut acc0, &mut acc_m, t, wx(i), wy(i));
            i += 2;
        }
        if i < nb {
            let z = ZERO_BLOCK.as_ptr();
            step::<F, P, T>(&mut acc1, &mut acc_m, t, (xp.add(i * F::XB), z), yp.map(|p| (p.add(i * F::YB), z)));
        }
        finish::<F, T>(acc0, acc1, acc_m)
    }

    /// Bytes per pair of activation blocks in the prepared layout of [`prepare`], without and
    /// with the spread scales ([`Pair::SPREAD`]).
    pub(in super::super) const PREP_PAIR: usize = 80;
    pub(in super::super) const PREP_PAIR_SPREAD: usize = 144;

    /// [`PREP_PAIR`] or [`PREP_PAIR_SPREAD`] for `F`.
    const fn prep_pair<F: Pair>() -> usize {
        if F::SPREAD {
            PREP_PAIR_SPREAD
        } else {
            PREP_PAIR
        }
    }

    /// Rearranges one activation row (blocks of `F::YB` bytes, quants last) for
    /// [`run_prepared`]: per pair of blocks, the 64 quants (XOR 0x80 unless `F::RAW_ACT`), the
    /// 4 floats `scales_pair` makes of the pair's first bytes, and where `F::SPREAD` the two
    /// block scales spread over the lanes of their blocks (16 floats: block A's `d` in lanes
    /// 0..8, block B's in 8..16). An odd last block is paired with [`ZERO_BLOCK`], as the block
    /// loop pairs it. Per token and pair the kernel then makes one 64-byte load instead of two
    /// loads, an insert, an XOR and an f16 conversion, and with the spread scales one 512-bit
    /// multiply instead of a multiply and a lane permutation; each lane's product is the same,
    /// so are the results.
    #[inline(always)]
    unsafe fn prepare<F: Pair>(n: usize, y: &[u8], out: &mut [u8]) {
        let nb = n / QK;
        assert!(
            n.is_multiple_of(QK) && y.len() == nb * F::YB && out.len() == nb.div_ceil(2) * prep_pair::<F>(),
            "prepare {}: n = {n} with {} and {} bytes",
            F::NAME,
            y.len(),
            out.len()
        );
        let (yp, op) = (y.as_ptr(), out.as_mut_ptr());
        let bias = if F::RAW_ACT { _mm512_setzero_si512() } else { _mm512_set1_epi8(-128) };
        let q_off = F::YB - QK;
        for p in 0..nb.div_ceil(2) {
            let ya = yp.add(2 * p * F::YB);
            let yb = if 2 * p + 1 < nb { ya.add(F::YB) } else { ZERO_BLOCK.as_ptr() };
            let q = _mm512_xor_si512(load_pair(ya.add(q_off), yb.add(q_off)), bias);
            let d = scales_pair(ya, yb);
            let o = op.add(p * prep_pair::<F>());
            _mm512_storeu_si512(o as *mut __m512i, q);
            _mm_storeu_ps(o.add(64) as *mut f32, d);
            if F::SPREAD {
                _mm512_storeu_ps(o.add(80) as *mut f32, spread_ab(d));
            }
        }
    }

    /// [`step`] for `Vnni<true>` with prepared activation pairs `ys[k]`.
    #[inline(always)]
    unsafe fn step_prepared<F: Pair, const T: usize>(
        acc: &mut [__m512; T],
        acc_m: &mut [__m128; T],
        t: __m512i,
        (xa, xb): (*const u8, *const u8),
        ys: [*const u8; T],
    ) {
        let w = F::unpack::<Vnni<true>>(t, xa, xb);
        let dx = scales_pair(xa, xb);
        let dxv = spread_ab(dx);
        for k in 0..T {
            let y = _mm512_loadu_si512(ys[k] as *const __m512i);
            // The integers `F::sums::<Vnni<true>>` computes, from the same bytes pre-biased.
            let q = if F::RAW_ACT {
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), w.w, y)
            } else {
                _mm512_dpbusd_epi32(w.c, y, w.w)
            };
            let dv = if F::SPREAD {
                // Lane by lane the products `step` spreads after multiplying: the same bits.
                _mm512_mul_ps(dxv, _mm512_loadu_ps(ys[k].add(80) as *const f32))
            } else {
                spread_ab(_mm_mul_ps(dx, _mm_loadu_ps(ys[k].add(64) as *const f32)))
            };
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), dv, acc[k]);
            if F::MS {
                acc_m[k] = _mm_add_ps(acc_m[k], _mm_mul_ps(dx, _mm_loadu_ps(ys[k].add(64) as *const f32)));
            }
        }
    }

    /// [`run`] with `Vnni<true>` on activation rows made by [`prepare`]: the same integers and
    /// the same float operations in the same order, so the same bits.
    ///
    /// # Safety
    /// `x` must point to `nb` weight blocks and every `ys[k]` to `nb.div_ceil(2)` prepared
    /// pairs; the CPU must have what the entry points enable.
    #[inline(always)]
    unsafe fn run_prepared<F: Pair, const T: usize>(nb: usize, xp: *const u8, yp: [*const u8; T]) -> [f32; T] {
        let t = Vnni::<true>::iq4nl_table();
        let (mut acc0, mut acc1) = ([_mm512_setzero_ps(); T], [_mm512_setzero_ps(); T]);
        let mut acc_m = [_mm_setzero_ps(); T];
        let wx = |i: usize| (xp.add(i * F::XB), xp.add((i + 1) * F::XB));
        let wy = |i: usize| yp.map(|p| p.add(i / 2 * prep_pair::<F>()));
        let mut i = 0;
        while i + 4 <= nb {
            step_prepared::<F, T>(&mut acc0, &mut acc_m, t, wx(i), wy(i));
            step_prepared::<F, T>(&mut acc1, &mut acc_m, t, wx(i + 2), wy(i + 2));
            i += 4;
        }
        if i + 2 <= nb {
            step_prepared::<F, T>(&mut acc0, &mut acc_m, t, wx(i), wy(i));
            i += 2;
        }
        if i < nb {
            step_prepared::<F, T>(&mut acc1, &mut acc_m, t, (xp.add(i * F::XB), ZERO_BLOCK.as_ptr()), wy(i));
        }
        finish::<F, T>(acc0, acc1, acc_m)
    }

    /// [`run_prepared`] for every weight row in `x` (rows of `n` weights) against the same `T`
    /// prepared activation rows, row `r`'s results into `out[r]`. The lengths are checked once
    /// here, not per row: with rows of a few hundred weights, a call and its checks per row
    /// cost a third of the arithmetic.
    #[inline(always)]
    unsafe fn rows_prepared<F: Pair, const T: usize>(n: usize, x: &[u8], ys: [&[u8]; T], out: &mut [[f32; T]]) {
        let nb = n / QK;
        let row = nb * F::XB;
        assert!(
            n.is_multiple_of(QK) && x.len() == out.len() * row,
            "vec_dot {} (prepared): {} rows of n = {n} in {} bytes",
            F::NAME,
            out.len(),
            x.len()
        );
        for y in ys {
            assert!(
                y.len() == nb.div_ceil(2) * prep_pair::<F>(),
                "vec_dot {} (prepared): n = {n} with a {}-byte activation row",
                F::NAME,
                y.len()
            );
        }
        let yp = ys.map(|y| y.as_ptr());
        for (r, o) in out.iter_mut().enumerate() {
            *o = run_prepared::<F, T>(nb, x.as_ptr().add(r * row), yp);
        }
    }

    /// Defines the prepared-activation entry points of one format (AVX512-VNNI only).
    macro_rules! entry_prepared {
        ($prep:ident, $vnni8p:ident, $vnni4p:ident, $vnni1p:ident, $fmt:ty) => {
            /// The eight-token kernel on prepared activation rows for every weight row in `x`:
            /// each pair of weight blocks is unpacked once for eight tokens. Each result
            /// bit-identical to the one-row kernel's on the raw rows.
            ///
            /// # Safety
            /// The CPU must support AVX-512 F/BW/VL/DQ, AVX512-VNNI, FMA and F16C.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
            pub(in super::super) unsafe fn $vnni8p(n: usize, x: &[u8], ys: [&[u8]; 8], out: &mut [[f32; 8]]) {
                rows_prepared::<$fmt, 8>(n, x, ys, out)
            }

            /// Prepares one activation row for the prepared four-row kernel.
            ///
            /// # Safety
            /// The CPU must support AVX-512 F/BW/VL/DQ and F16C.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,f16c")]
            pub(in super::super) unsafe fn $prep(n: usize, y: &[u8], out: &mut [u8]) {
                prepare::<$fmt>(n, y, out)
            }

            /// The four-row kernel on prepared activation rows for every weight row in `x`;
            /// each result bit-identical to the one-row kernel's on the raw rows.
            ///
            /// # Safety
            /// The CPU must support AVX-512 F/BW/VL/DQ, AVX512-VNNI, FMA and F16C.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
            pub(in super::super) unsafe fn $vnni4p(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [[f32; 4]]) {
                rows_prepared::<$fmt, 4>(n, x, ys, out)
            }

            /// The one-row kernel on a prepared activation row for every weight row in `x`;
            /// bit-identical to the one-row kernel on the raw row.
            ///
            /// # Safety
            /// As for the four-row kernel.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
            pub(in super::super) unsafe fn $vnni1p(n: usize, x: &[u8], y: &[u8], out: &mut [f32]) {
                // SAFETY: `[f32]` and `[[f32; 1]]` have the same layout.
                let out = std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut [f32; 1], out.len());
                rows_prepared::<$fmt, 1>(n, x, [y], out)
            }
        };
    }

    entry_prepared!(prep_q4_0, q4_0_vnni_x8p, q4_0_vnni_x4p, q4_0_vnni_x1p, Q4_0);
    entry_prepared!(prep_q4_1, q4_1_vnni_x8p, q4_1_vnni_x4p, q4_1_vnni_x1p, Q4_1);
    entry_prepared!(prep_q5_0, q5_0_vnni_x8p, q5_0_vnni_x4p, q5_0_vnni_x1p, Q5_0);
    entry_prepared!(prep_q5_1, q5_1_vnni_x8p, q5_1_vnni_x4p, q5_1_vnni_x1p, Q5_1);
    entry_prepared!(prep_q8_0, q8_0_vnni_x8p, q8_0_vnni_x4p, q8_0_vnni_x1p, Q8_0);
    entry_prepared!(prep_iq4_nl, iq4_nl_vnni_x8p, iq4_nl_vnni_x4p, iq4_nl_vnni_x1p, IQ4NL);

    /// Defines the VNNI and BW entry points of one format, for one token and for four.
    macro_rules! entry {
        ($vnni:ident, $bw:ident, $vnni4:ident, $bw4:ident, $fmt:ty, $what:literal) => {
            #[doc = concat!($what, " with AVX512-VNNI.")]
            ///
            /// # Safety
            /// The CPU must support AVX-512 F/BW/VL/DQ, AVX512-VNNI, FMA and F16C. Panics unless
            /// `x` and `y` hold `n / 32` blocks each.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
            pub(in super::super) unsafe fn $vnni(n: usize, x: &[u8], y: &[u8]) -> f32 {
                run::<$fmt, Vnni<false>, 1>(n, x, [y])[0]
            }

            #[doc = concat!($what, " with AVX-512BW.")]
            ///
            /// # Safety
            /// The CPU must support AVX-512 F/BW/VL/DQ, FMA and F16C. Panics unless `x` and `y`
            /// hold `n / 32` blocks each.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
            pub(in super::super) unsafe fn $bw(n: usize, x: &[u8], y: &[u8]) -> f32 {
                run::<$fmt, Bw, 1>(n, x, [y])[0]
            }

            #[doc = concat!($what, " with AVX512-VNNI, one weight row against four activation rows;")]
            /// each result bit-identical to the one-row kernel's.
            ///
            /// # Safety
            /// As for the one-row kernel, for every row of `ys`.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
            pub(in super::super) unsafe fn $vnni4(n: usize, x: &[u8], ys: [&[u8]; 4]) -> [f32; 4] {
                run::<$fmt, Vnni<true>, 4>(n, x, ys)
            }

            #[doc = concat!($what, " with AVX-512BW, one weight row against four activation rows;")]
            /// each result bit-identical to the one-row kernel's.
            ///
            /// # Safety
            /// As for the one-row kernel, for every row of `ys`.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
            pub(in super::super) unsafe fn $bw4(n: usize, x: &[u8], ys: [&[u8]; 4]) -> [f32; 4] {
                run::<$fmt, Bw, 4>(n, x, ys)
            }
        };
    }

    entry!(q4_0_q8_0_vnni, q4_0_q8_0_bw, q4_0_q8_0_vnni_x4, q4_0_q8_0_bw_x4, Q4_0, "Q4_0 weights · Q8_0 activations");
    entry!(q4_1_q8_1_vnni, q4_1_q8_1_bw, q4_1_q8_1_vnni_x4, q4_1_q8_1_bw_x4, Q4_1, "Q4_1 weights · Q8_1 activations");
    entry!(q5_0_q8_0_vnni, q5_0_q8_0_bw, q5_0_q8_0_vnni_x4, q5_0_q8_0_bw_x4, Q5_0, "Q5_0 weights · Q8_0 activations");
    entry!(q5_1_q8_1_vnni, q5_1_q8_1_bw, q5_1_q8_1_vnni_x4, q5_1_q8_1_bw_x4, Q5_1, "Q5_1 weights · Q8_1 activations");
    entry!(
        q8_0_q8_0_vnni,
        q8_0_q8_0_bw,
        q8_0_q8_0_vnni_x4,
        q8_0_q8_0_bw_x4,
        Q8_0,
        "Q8_0 weights · Q8_0 activations (BW: activation quants in `[-127, 127]`)"
    );
    entry!(
        iq4_nl_q8_0_vnni,
        iq4_nl_q8_0_bw,
        iq4_nl_q8_0_vnni_x4,
        iq4_nl_q8_0_bw_x4,
        IQ4NL,
        "IQ4_NL weights · Q8_0 activations"
    );

    #[inline(always)]
    unsafe fn cvt_f16(p: *const u8) -> __m512 {
        _mm512_cvt_roundph_ps::<_MM_FROUND_CUR_DIRECTION>(_mm256_loadu_si256(p as *const __m256i))
    }

    /// Loads the first `len < 32` halves at `p`, zeros elsewhere (no read past them).
    #[inline(always)]
    unsafe fn load_partial(p: *const u8, len: usize) -> __m512i {
        _mm512_maskz_loadu_epi16(((1u64 << len) - 1) as __mmask32, p as *const i16)
    }

    /// F16 · F16: 16 halves per `vcvtph2ps`, four accumulators, masked tail.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/DQ, FMA and F16C. Panics unless `x`, `y` hold `n`
    /// halves each.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
    pub(in super::super) unsafe fn f16_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
        halves(n, x, y, "F16");
        let (xp, yp) = (x.as_ptr(), y.as_ptr());
        let (mut a0, mut a1, mut a2, mut a3) =
            (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 64 <= n {
            let (px, py) = (xp.add(2 * i), yp.add(2 * i));
            a0 = _mm512_fmadd_ps(cvt_f16(px), cvt_f16(py), a0);
            a1 = _mm512_fmadd_ps(cvt_f16(px.add(32)), cvt_f16(py.add(32)), a1);
            a2 = _mm512_fmadd_ps(cvt_f16(px.add(64)), cvt_f16(py.add(64)), a2);
            a3 = _mm512_fmadd_ps(cvt_f16(px.add(96)), cvt_f16(py.add(96)), a3);
            i += 64;
        }
        while i + 16 <= n {
            a0 = _mm512_fmadd_ps(cvt_f16(xp.add(2 * i)), cvt_f16(yp.add(2 * i)), a0);
            i += 16;
        }
        if i < n {
            // Masked-off halves load as +0.0 and add 0 * 0.
            let a = _mm512_cvtph_ps(_mm512_castsi512_si256(load_partial(xp.add(2 * i), n - i)));
            let b = _mm512_cvtph_ps(_mm512_castsi512_si256(load_partial(yp.add(2 * i), n - i)));
            a1 = _mm512_fmadd_ps(a, b, a1);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)))
    }

    /// `(even, odd)` elements of 32 bf16 as f32 (see `avx2::split_bf16`).
    #[inline(always)]
    unsafe fn split_bf16(v: __m512i) -> (__m512, __m512) {
        let odd = _mm512_and_si512(v, _mm512_set1_epi32(0xFFFF0000u32 as i32));
        (_mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)), _mm512_castsi512_ps(odd))
    }

    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512i {
        _mm512_loadu_si512(p as *const __m512i)
    }

    /// BF16 · BF16 with the even/odd split, 32 values a register, masked tail.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/DQ, FMA and F16C. Panics unless `x`, `y` hold `n`
    /// halves each.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
    pub(in super::super) unsafe fn bf16_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
        halves(n, x, y, "BF16");
        let (xp, yp) = (x.as_ptr(), y.as_ptr());
        let (mut a0, mut a1, mut a2, mut a3) =
            (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 64 <= n {
            let (px, py) = (xp.add(2 * i), yp.add(2 * i));
            let ((xe, xo), (ye, yo)) = (split_bf16(load(px)), split_bf16(load(py)));
            a0 = _mm512_fmadd_ps(xe, ye, a0);
            a1 = _mm512_fmadd_ps(xo, yo, a1);
            let ((xe, xo), (ye, yo)) = (split_bf16(load(px.add(64))), split_bf16(load(py.add(64))));
            a2 = _mm512_fmadd_ps(xe, ye, a2);
            a3 = _mm512_fmadd_ps(xo, yo, a3);
            i += 64;
        }
        if i + 32 <= n {
            let ((xe, xo), (ye, yo)) = (split_bf16(load(xp.add(2 * i))), split_bf16(load(yp.add(2 * i))));
            a0 = _mm512_fmadd_ps(xe, ye, a0);
            a1 = _mm512_fmadd_ps(xo, yo, a1);
            i += 32;
        }
        if i < n {
            let (xv, yv) = (load_partial(xp.add(2 * i), n - i), load_partial(yp.add(2 * i), n - i));
            let ((xe, xo), (ye, yo)) = (split_bf16(xv), split_bf16(yv));
            a2 = _mm512_fmadd_ps(xe, ye, a2);
            a3 = _mm512_fmadd_ps(xo, yo, a3);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)))
    }

    #[inline(always)]
    unsafe fn bh(v: __m512i) -> __m512bh {
        // SAFETY: both are 512 bits of plain data.
        std::mem::transmute::<__m512i, __m512bh>(v)
    }

    /// BF16 · BF16 with `vdpbf16ps` (AVX512-BF16): 32 products per instruction, each exact in
    /// f32; subnormal inputs and products are flushed to zero.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL/DQ, AVX512-BF16, FMA and F16C. Panics unless `x`, `y`
    /// hold `n` halves each.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")]
    pub(in super::super) unsafe fn bf16_bf16_dpbf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
        halves(n, x, y, "BF16");
        let (xp, yp) = (x.as_ptr(), y.as_ptr());
        let (mut a0, mut a1, mut a2, mut a3) =
            (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 128 <= n {
            let (px, py) = (xp.add(2 * i), yp.add(2 * i));
            a0 = _mm512_dpbf16_ps(a0, bh(load(px)), bh(load(py)));
            a1 = _mm512_dpbf16_ps(a1, bh(load(px.add(64))), bh(load(py.add(64))));
            a2 = _mm512_dpbf16_ps(a2, bh(load(px.add(128))), bh(load(py.add(128))));
            a3 = _mm512_dpbf16_ps(a3, bh(load(px.add(192))), bh(load(py.add(192))));
            i += 128;
        }
        while i + 32 <= n {
            a0 = _mm512_dpbf16_ps(a0, bh(load(xp.add(2 * i))), bh(load(yp.add(2 * i))));
            i += 32;
        }
        if i < n {
            let (xv, yv) = (load_partial(xp.add(2 * i), n - i), load_partial(yp.add(2 * i), n - i));
            a1 = _mm512_dpbf16_ps(a1, bh(xv), bh(yv));
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{self, traits};
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

    /// A kernel to test and whether it is exact for activation quants of -128 (only the sign
    /// trick of Q8_0·Q8_0 on AVX2 / AVX-512BW is not).
    struct Variant {
        name: String,
        ty: GgmlType,
        f: VecDotFn,
        y_min_128: bool,
    }

    /// Every variant this CPU can run, including the non-preferred AVX-512 ones.
    fn variants() -> Vec<Variant> {
        let mut v = Vec::new();
        let avail = Isa::available();
        for ty in FAMILY {
            let mut push = |name: &str, f: Option<VecDotFn>, y_min_128: bool| {
                if let Some(f) = f {
                    v.push(Variant { name: format!("{ty}/{name}"), ty, f, y_min_128 });
                }
            };
            let q8 = ty == GgmlType::Q8_0;
            if avail.contains(&Isa::Avx2) {
                push("avx2", avx2(ty), !q8);
                if ty == GgmlType::F16 {
                    // The four-accumulator AVX2 kernel that Zen 4 runs under AVX-512.
                    push("avx2-4acc", Some(w_avx2_f16), true);
                }
            }
            if avail.contains(&Isa::Avx512) {
                let name = if ty.block_size() == 32 { "avx512bw" } else { "avx512" };
                push(name, avx512_pick(ty, false, false), !q8);
                if is_x86_feature_detected!("avx512vnni") && ty.block_size() == 32 {
                    push("avx512vnni", avx512_pick(ty, true, false), true);
                }
                if ty == GgmlType::BF16 && is_x86_feature_detected!("avx512bf16") {
                    push("avx512bf16", avx512_pick(ty, false, true), true);
                }
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
    fn vec_dot_x86_legacy_random_rows() {
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
    fn vec_dot_x86_legacy_adversarial_blocks() {
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

    /// The four-row kernels against four calls of the one-row kernel of the same variant
    /// (VNNI and BW where this CPU has them), bit for bit: random rows, rows with an extreme
    /// block, all-zero rows (whose sign of zero must match too) and repeated rows.
    #[test]
    fn vec_dot_x86_legacy_x4_matches_one_row_bits() {
        if !Isa::Avx512.is_available() {
            return;
        }
        let legacy = &FAMILY[..6];
        let mut pairs: Vec<(String, GgmlType, VecDotFn, VecDot4Fn)> = Vec::new();
        for &ty in legacy {
            let mut kinds = vec![("avx512bw", false)];
            if is_x86_feature_detected!("avx512vnni") {
                kinds.push(("avx512vnni", true));
            }
            for (name, vnni) in kinds {
                let one = avx512_pick(ty, vnni, false).expect("one-row kernel");
                let four = avx512_x4_pick(ty, vnni).expect("four-row kernel");
                pairs.push((format!("{ty}/{name}"), ty, one, four));
            }
        }
        assert!(pairs.len() >= 6);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for (name, ty, one, four) in &pairs {
            let vdt = traits(*ty).vec_dot_type;
            for nb in [1usize, 2, 3, 4, 5, 6, 7, 18, 48] {
                let n = 32 * nb;
                for trial in 0..6 {
                    let scale: Vec<f32> = (0..nb).map(|_| 10f32.powf(rng.f() * 2.0)).collect();
                    let xf: Vec<f32> = (0..n).map(|i| rng.f() * scale[i / 32]).collect();
                    let x = quantize(*ty, &xf);
                    let rows: Vec<Vec<u8>> = (0..4)
                        .map(|k| {
                            let mut yf: Vec<f32> = (0..n).map(|_| rng.f() * 3.0).collect();
                            match (trial, k) {
                                (1, _) => yf.iter_mut().for_each(|a| *a = a.abs()),
                                (2, 1) => yf.iter_mut().for_each(|a| *a = 0.0),
                                (2, 3) => yf[n - 1] = 500.0,
                                _ => {}
                            }
                            quantize(vdt, &yf)
                        })
                        .collect();
                    let mut ys = [rows[0].as_slice(), rows[1].as_slice(), rows[2].as_slice(), rows[3].as_slice()];
                    if trial == 3 {
                        ys[2] = ys[0];
                    }
                    let x = if trial == 4 { vec![0u8; x.len()] } else { x };
                    let mut got = [f32::NAN; 4];
                    four(n, &x, ys, &mut got);
                    for k in 0..4 {
                        let want = one(n, &x, ys[k]);
                        assert_eq!(
                            got[k].to_bits(),
                            want.to_bits(),
                            "{name} blocks={nb} trial {trial} row {k}: x4 {} one-row {want}",
                            got[k]
                        );
                    }
                }
            }
            // Every row's length is checked.
            let (xb, yb) = (ty.block_bytes(), vdt.block_bytes());
            let (x, y, short) = (vec![0u8; 2 * xb], vec![0u8; 2 * yb], vec![0u8; 2 * yb - 1]);
            for bad in 0..4 {
                let mut ys = [y.as_slice(); 4];
                ys[bad] = &short;
                let f = *four;
                assert!(std::panic::catch_unwind(|| f(64, &x, ys, &mut [0.0; 4])).is_err(), "{name} row {bad}");
            }
        }
        // The prepared-activation kernels give the same bits as the one-row VNNI kernel.
        if is_x86_feature_detected!("avx512vnni") {
            for &ty in legacy {
                let p = avx512_x4_prepared(ty).expect("prepared kernel");
                let one = avx512_pick(ty, true, false).unwrap();
                let vdt = traits(ty).vec_dot_type;
                for nb in [1usize, 2, 3, 5, 7, 18, 48] {
                    let n = 32 * nb;
                    let xf: Vec<f32> = (0..n).map(|i| rng.f() * 10f32.powf((i / 32 % 3) as f32 - 1.0)).collect();
                    let x = quantize(ty, &xf);
                    let rows: Vec<Vec<u8>> = (0..4)
                        .map(|k| {
                            let yf: Vec<f32> =
                                (0..n).map(|i| if k == 2 { 0.0 } else { rng.f() * (1 + i % 5) as f32 }).collect();
                            quantize(vdt, &yf)
                        })
                        .collect();
                    let prepared: Vec<Vec<u8>> = rows
                        .iter()
                        .map(|r| {
                            let mut out = vec![0u8; p.row_bytes(n)];
                            (p.prepare)(n, r, &mut out);
                            out
                        })
                        .collect();
                    // Three weight rows: the row loop must step by whole rows.
                    let x2 = quantize(ty, &xf.iter().rev().copied().collect::<Vec<_>>());
                    let x3 = quantize(ty, &xf.iter().map(|v| -0.5 * v).collect::<Vec<_>>());
                    let ws = [x.clone(), x2, x3].concat();
                    let ys = [
                        prepared[0].as_slice(),
                        prepared[1].as_slice(),
                        prepared[2].as_slice(),
                        prepared[3].as_slice(),
                    ];
                    let mut got = [[f32::NAN; 4]; 3];
                    (p.dot4)(n, &ws, ys, &mut got);
                    let wrow = ws.len() / 3;
                    for r in 0..3 {
                        let mut got1 = [f32::NAN; 1];
                        for k in 0..4 {
                            let want = one(n, &ws[r * wrow..(r + 1) * wrow], &rows[k]);
                            assert_eq!(
                                got[r][k].to_bits(),
                                want.to_bits(),
                                "{ty} prepared blocks={nb} row {r} token {k}"
                            );
                            (p.dot1)(n, &ws[r * wrow..(r + 1) * wrow], &prepared[k], &mut got1);
                            assert_eq!(got1[0].to_bits(), want.to_bits(), "{ty} prepared x1 row {r} token {k}");
                        }
                    }
                    let short = vec![0u8; p.row_bytes(n) - 1];
                    let f = p.dot4;
                    let ys = [prepared[0].as_slice(), prepared[1].as_slice(), short.as_slice(), prepared[3].as_slice()];
                    assert!(std::panic::catch_unwind(|| f(n, &x, ys, &mut [[0.0; 4]])).is_err(), "{ty} short row");
                    let g = p.dot4;
                    let ys = [
                        prepared[0].as_slice(),
                        prepared[1].as_slice(),
                        prepared[2].as_slice(),
                        prepared[3].as_slice(),
                    ];
                    assert!(
                        std::panic::catch_unwind(|| g(n, &ws, ys, &mut [[0.0; 4]; 2])).is_err(),
                        "{ty} rows and outputs differ"
                    );
                }
            }
        }
        // Outside the legacy family there is no four-row kernel.
        for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::Q4_K, GgmlType::Q8_1] {
            assert!(avx512_x4_pick(ty, true).is_none() && avx512_x4_pick(ty, false).is_none(), "{ty}");
        }
    }

    #[test]
    fn vec_dot_x86_legacy_float_extremes() {
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
    fn vec_dot_x86_legacy_tables_cover_family() {
        let avail = Isa::available();
        for ty in FAMILY {
            if avail.contains(&Isa::Avx2) {
                assert!(avx2(ty).is_some(), "{ty}: no AVX2 kernel");
                assert_eq!(super::super::implementation(ty, Isa::Avx2), "avx2", "{ty}");
            }
            if avail.contains(&Isa::Avx512) {
                assert!(avx512(ty).is_some(), "{ty}: no AVX-512 kernel");
                assert!(avx512_pick(ty, false, false).is_some(), "{ty}: no AVX-512BW kernel");
                assert_eq!(super::super::implementation(ty, Isa::Avx512), "avx512", "{ty}");
            }
        }
        // Types outside the family are left to the other tables.
        assert!(avx2(GgmlType::Q4_K).is_none() && avx512(GgmlType::Q8_1).is_none());
        let _ = formats::dequantize_fn(GgmlType::Q4_0);
    }

    #[test]
    fn vec_dot_x86_legacy_rejects_bad_lengths() {
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
