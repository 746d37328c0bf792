//! x86-64 dot products of the K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and IQ4_XS against Q8_K
//! activations, fused: the quants are unpacked to bytes in registers and multiplied there, never
//! expanded to f32 per weight.
//!
//! * AVX2 (+FMA, F16C): 32 weights per register, `maddubs` (unsigned weight byte × signed
//!   activation byte, pairs summed to i16) then `madd` with the sub-block scales (pairs summed to
//!   i32), as ggml's x86 kernels.
//! * AVX-512 (F, BW, VL, DQ): 64 weights per register, the same two steps.
//! * AVX-512 VNNI: the scale step becomes one `vpdpwssd` (multiply by the scales and accumulate),
//!   in 512-bit and in 256-bit (AVX-512VL) form; Q4_K and IQ4_XS use `vpdpbusd` (unsigned byte ×
//!   signed byte, summed to i32 without saturation) instead of `maddubs`. [`avx512`] picks, per
//!   format, the variant that measured fastest; all of them are tested.
//!
//! Integer arithmetic is exact: `maddubs` never saturates because every weight byte is unsigned
//! and small (at most 63, or a |kvalue| <= 127 against |q8| <= 128 for IQ4_XS), and the integer
//! sums of a super-block fit easily in i32. The parts of the formula that are constant per
//! super-block are folded in from the Q8_K `bsums` (sums of 16 activations), as ggml does:
//!
//! * Q2_K, Q4_K, Q5_K: the `- dmin * m` term, `dmin * sum(m * bsum)`.
//! * Q3_K: quants are stored as `q - 4` when the high bit is clear; we multiply the unsigned
//!   `q + 4*hbit` in 0..8 and subtract `4 * sum(scale * bsum)` (one `maddubs` per register
//!   instead of ggml's two).
//! * Q6_K: the unsigned 6-bit `q` and `- 32 * sum(scale * bsum)`.
//! * Q4_K (512-bit VNNI): high nibbles stay in place (16 × the quant, still a byte), which
//!   `vpdpbusd` can take without saturating; the factor 16 is folded into the scales.
//! * IQ4_XS (VNNI): the table lookup yields `kvalue + 128` (unsigned) and
//!   `- 128 * sum(scale * bsum)` corrects it. Without VNNI the signed kvalues are multiplied as
//!   `|q8| × sign(kvalue, q8)`, which is exact even for q8 = -128.
//!
//! Only the float part differs from the scalar twins: each super-block's integer sums are
//! converted and scaled per lane and the lanes are added at the end, so results agree with
//! `formats::*::vec_dot_*` up to float summation order (see the tests for the tolerance).

use std::arch::x86_64::*;

use crate::formats::VecDotFn;
use crate::gguf::{GgmlType, QK_K};

// Block layouts (byte offsets), as in `formats::k_quants` / `formats::iq4`.
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

/// [`super_blocks`] for one weight row against several activation rows (all checked).
#[inline]
fn super_blocks_each(n: usize, x: &[u8], ys: &[&[u8]], x_bytes: usize) -> usize {
    let mut nb = 0;
    for y in ys {
        nb = super_blocks(n, x, y, x_bytes);
    }
    nb
}

// --------------------------------------------------------------------------------------------
// Constant tables (loaded as memory operands or hoisted into registers by the compiler).
// --------------------------------------------------------------------------------------------

#[repr(C, align(64))]
struct Align64<T>(T);

/// AVX2, 8 i16 scales broadcast to both halves: entry `i` (0..8) is a `vpshufb` control that
/// repeats scale `i` over all 16 i16 lanes.
static PICK1_256: Align64<[[u8; 32]; 8]> = Align64(pick1_256());
const fn pick1_256() -> [[u8; 32]; 8] {
    let mut t = [[0u8; 32]; 8];
    let mut i = 0;
    while i < 8 {
        let mut b = 0;
        while b < 32 {
            t[i][b] = (2 * i + b % 2) as u8;
            b += 1;
        }
        i += 1;
    }
    t
}

/// AVX2, 8 i16 scales broadcast to both halves: entry `k` (0..4) repeats scale `2k` over the low
/// 128-bit half and `2k + 1` over the high half (16-weight sub-blocks, two per register).
static PICK2_256: Align64<[[u8; 32]; 4]> = Align64(pick2_256());
const fn pick2_256() -> [[u8; 32]; 4] {
    let mut t = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut b = 0;
        while b < 32 {
            t[k][b] = (4 * k + 2 * (b / 16) + b % 2) as u8;
            b += 1;
        }
        k += 1;
    }
    t
}

/// AVX-512, 8 i16 scales broadcast to all four 128-bit lanes: entry `c` (0..4) repeats scale `2c`
/// over the low 256 bits and `2c + 1` over the high 256 bits (32-weight sub-blocks).
static PICK2_512: Align64<[[u8; 64]; 4]> = Align64(pick2_512());
const fn pick2_512() -> [[u8; 64]; 4] {
    let mut t = [[0u8; 64]; 4];
    let mut c = 0;
    while c < 4 {
        let mut b = 0;
        while b < 64 {
            t[c][b] = (4 * c + 2 * (b / 32) + b % 2) as u8;
            b += 1;
        }
        c += 1;
    }
    t
}

/// AVX-512 `vpermw` indices into 16 i16 scales: entry `m` (0..4) gives 128-bit lane `l` scale
/// `4m + l` (16-weight sub-blocks, four per register).
static IDX4_512: Align64<[[u16; 32]; 4]> = Align64(idx4_512());
const fn idx4_512() -> [[u16; 32]; 4] {
    let mut t = [[0u16; 32]; 4];
    let mut m = 0;
    while m < 4 {
        let mut l = 0;
        while l < 32 {
            t[m][l] = (4 * m + l / 8) as u16;
            l += 1;
        }
        m += 1;
    }
    t
}

/// AVX-512 `vpermd` indices into 8 i32 scales: entry `m` (0..4) gives the low 256 bits scale
/// `2m` and the high 256 bits scale `2m + 1`.
static IDX2_512_D: Align64<[[u32; 16]; 4]> = Align64(idx2_512_d());
const fn idx2_512_d() -> [[u32; 16]; 4] {
    let mut t = [[0u32; 16]; 4];
    let mut m = 0;
    while m < 4 {
        let mut l = 0;
        while l < 16 {
            t[m][l] = (2 * m + l / 8) as u32;
            l += 1;
        }
        m += 1;
    }
    t
}

/// AVX-512 high-bit selectors: entry `m` (0..4) has bit `2m` in every byte of the low 256 bits
/// and bit `2m + 1` in every byte of the high 256 bits (weights `64m..64m+32` and
/// `64m+32..64m+64` of Q3_K's `hmask` and Q5_K's `qh`).
static HBIT_512: Align64<[[u8; 64]; 4]> = Align64(hbit_512());
const fn hbit_512() -> [[u8; 64]; 4] {
    let mut t = [[0u8; 64]; 4];
    let mut m = 0;
    while m < 4 {
        let mut b = 0;
        while b < 64 {
            t[m][b] = 1u8 << (2 * m + b / 32);
            b += 1;
        }
        m += 1;
    }
    t
}

/// `kvalues_iq4nl + 128` as unsigned bytes (for `vpdpbusd`).
static KVALUES_U8: [u8; 16] = kvalues_u8();
const fn kvalues_u8() -> [u8; 16] {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (KVALUES[i] as i16 + 128) as u8;
        i += 1;
    }
    t
}

// --------------------------------------------------------------------------------------------
// Small helpers. `#[inline]` with a subset of the callers' features, so they inline.
// --------------------------------------------------------------------------------------------

#[inline(always)]
unsafe fn rd_u32(p: *const u8) -> u32 {
    (p as *const u32).read_unaligned()
}

#[inline(always)]
unsafe fn rd_f32(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn ld128(p: *const u8) -> __m128i {
    _mm_loadu_si128(p as *const __m128i)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn ld256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn ld512(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p.cast())
}

/// The two f16 values at `p` (unaligned) as lanes 0 and 1.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16x2(p: *const u8) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128(rd_u32(p) as i32))
}

/// The f16 at `p` (unaligned). Reads the following byte too, which must exist.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Shifts every byte's bit `from` to bit `to` (other bits are garbage; callers mask). Correct
/// per byte as long as the bits in between stay inside the byte, which holds for all uses here.
/// `from`/`to` are constants after unrolling, so this is one immediate shift.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn move_bit256(v: __m256i, from: u32, to: u32) -> __m256i {
    if from < to {
        _mm256_sll_epi16(v, _mm_cvtsi32_si128((to - from) as i32))
    } else if from > to {
        _mm256_srl_epi16(v, _mm_cvtsi32_si128((from - to) as i32))
    } else {
        v
    }
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn srl16_256(v: __m256i, s: u32) -> __m256i {
    _mm256_srl_epi16(v, _mm_cvtsi32_si128(s as i32))
}

/// Q4_K/Q5_K: the packed 6-bit scales and mins (12 bytes at `p`; 16 are read, the 4 after are
/// the block's quants) → bytes 0..8 the eight scales, bytes 8..16 the eight mins
/// (`get_scale_min_k4` for all `j` at once).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn k4_scales_mins(p: *const u8) -> __m128i {
    let v = ld128(p);
    // a = [q0..4, q8..12, q4..8, q8..12]; b = [0, q0..4, 0, q4..8]
    let a = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    let b = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    // Scales 0..4 and mins 0..4: low 6 bits. Scales 4..8: low nibble of q8..12; mins 4..8: high
    // nibble of q8..12. Their top two bits are the top bits of q0..4 (scales) and q4..8 (mins).
    let lo = _mm_and_si128(
        _mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
        _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f),
    );
    let hi = _mm_and_si128(_mm_srli_epi32::<2>(b), _mm_set1_epi8(0x30));
    _mm_or_si128(lo, hi)
}

/// Q3_K: the sixteen 6-bit scales minus 32, as i8 (`q3k_scales`). `p` points 2 bytes before the
/// 12 scale bytes, so the 16-byte load stays inside the 110-byte block.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q3k_scales_i8(p: *const u8) -> __m128i {
    let v = ld128(p);
    // Scale i: low nibble of s[i % 8] (low for i < 8, high otherwise), top bits from
    // s[8 + i % 4] at bit 2 * (i / 4). s[j] is v[j + 2].
    let a = _mm_shuffle_epi8(v, _mm_setr_epi8(2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 6, 7, 8, 9));
    let b = _mm_shuffle_epi8(v, _mm_setr_epi8(10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13));
    let lo = _mm_and_si128(_mm_srlv_epi64(a, _mm_set_epi64x(4, 0)), _mm_set1_epi8(0x0f));
    let hi = _mm_and_si128(_mm_srlv_epi32(b, _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(0x03));
    let hi = _mm_slli_epi32::<4>(hi);
    _mm_sub_epi8(_mm_or_si128(lo, hi), _mm_set1_epi8(32))
}

/// IQ4_XS: the eight sub-block scales `ls - 32` as i32 lanes (block at `p`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn iq4xs_scales_i32(p: *const u8) -> __m256i {
    let sh = (p.add(2) as *const u16).read_unaligned() as i32;
    let sl = rd_u32(p.add(4)) as i32;
    let lo = _mm256_srlv_epi32(_mm256_set1_epi32(sl), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    let hi = _mm256_srlv_epi32(_mm256_set1_epi32(sh << 4), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
    let ls =
        _mm256_or_si256(_mm256_and_si256(lo, _mm256_set1_epi32(0x0f)), _mm256_and_si256(hi, _mm256_set1_epi32(0x30)));
    _mm256_sub_epi32(ls, _mm256_set1_epi32(32))
}

/// IQ4_XS: the eight scales `ls - 32` as i16 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn iq4xs_scales_i16(p: *const u8) -> __m128i {
    let ls = iq4xs_scales_i32(p);
    _mm_packs_epi32(_mm256_castsi256_si128(ls), _mm256_extracti128_si256::<1>(ls))
}

// --------------------------------------------------------------------------------------------
// AVX2
// --------------------------------------------------------------------------------------------

macro_rules! q2k_256_body {
    ($n:ident, $x:ident, $y:ident, $dp:ident) => {{
        let (n, x, y) = ($n, $x, $y);
        let nb = super_blocks(n, x, y, Q2K_BYTES);
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0x0f);
        let mut acc = _mm256_setzero_ps();
        for i in 0..nb {
            let xb = x.as_ptr().add(i * Q2K_BYTES);
            let yb = y.as_ptr().add(i * Q8K_BYTES);
            let yd = rd_f32(yb);
            let dd = f16x2(xb.add(80));
            let d = yd * _mm_cvtss_f32(dd);
            let dmin = -yd * _mm_cvtss_f32(_mm_movehdup_ps(dd));
            let q8 = yb.add(Q8K_QS);

            let sc = ld128(xb);
            let scales = _mm256_cvtepu8_epi16(_mm_and_si128(sc, m4));
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sc), m4));
            let summ = _mm256_madd_epi16(mins, ld256(yb.add(Q8K_BSUMS)));

            let mut sumi = _mm256_setzero_si256();
            for j in 0..2 {
                // Scales 8j..8j+8 in both halves.
                let sc_j = if j == 0 {
                    _mm256_permute4x64_epi64::<0x44>(scales)
                } else {
                    _mm256_permute4x64_epi64::<0xee>(scales)
                };
                let bits = ld256(xb.add(16 + 32 * j));
                for k in 0..4 {
                    let q = _mm256_and_si256(srl16_256(bits, 2 * k as u32), m3);
                    let p = _mm256_maddubs_epi16(q, ld256(q8.add(128 * j + 32 * k)));
                    let s = _mm256_shuffle_epi8(sc_j, ld256(PICK2_256.0[k].as_ptr()));
                    sumi = $dp(sumi, s, p);
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(summ), acc);
        }
        hsum256(acc)
    }};
}

/// The Q3_K 256-bit kernel for one weight row against `T` activation rows, with `vpdpwssd`
/// (AVX-512VL + VNNI) as the scale step when `VNNI`, `madd` + `add` otherwise. The weight-only
/// work (unpacking the 2 + 1 bit quants and the scales) is done once per super-block for all `T`
/// tokens; each token goes through the one-token (`T = 1`) kernel's operations in its order.
#[inline(always)]
unsafe fn q3k_256_rows<const T: usize, const VNNI: bool>(n: usize, x: &[u8], ys: [&[u8]; T]) -> [f32; T] {
    let nb = super_blocks_each(n, x, &ys, Q3K_BYTES);
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm256_set1_epi8(4);
    let mut acc = [_mm256_setzero_ps(); T];
    for i in 0..nb {
        let xb = x.as_ptr().add(i * Q3K_BYTES);
        let yb = ys.map(|y| y.as_ptr().add(i * Q8K_BYTES));
        let dx = f16_at(xb.add(108));

        let scales = _mm256_cvtepi8_epi16(q3k_scales_i8(xb.add(94)));
        let hbits = ld256(xb);

        let mut sumi = [_mm256_setzero_si256(); T];
        for j in 0..2 {
            let sc_j = if j == 0 {
                _mm256_permute4x64_epi64::<0x44>(scales)
            } else {
                _mm256_permute4x64_epi64::<0xee>(scales)
            };
            let bits = ld256(xb.add(32 + 32 * j));
            for k in 0..4 {
                let lo = _mm256_and_si256(srl16_256(bits, 2 * k as u32), m3);
                let hi = _mm256_and_si256(move_bit256(hbits, (4 * j + k) as u32, 2), m4);
                let q = _mm256_or_si256(lo, hi);
                let s = _mm256_shuffle_epi8(sc_j, ld256(PICK2_256.0[k].as_ptr()));
                for t in 0..T {
                    let p = _mm256_maddubs_epi16(q, ld256(yb[t].add(Q8K_QS + 128 * j + 32 * k)));
                    sumi[t] = if VNNI { dp256_vnni(sumi[t], s, p) } else { dp256_avx2(sumi[t], s, p) };
                }
            }
        }
        for t in 0..T {
            let d = rd_f32(yb[t]) * dx;
            // Quants are multiplied as q + 4 (0..8); take 4 * sum(scale * bsum) back off.
            let corr = _mm256_slli_epi32::<2>(_mm256_madd_epi16(scales, ld256(yb[t].add(Q8K_BSUMS))));
            let s = _mm256_sub_epi32(sumi[t], corr);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    acc.map(|a| hsum256(a))
}

/// `acc + madd(a, b)`: `vpdpwssd` (AVX-512VL + VNNI) when `VNNI`, `madd` + `add` otherwise.
#[inline(always)]
unsafe fn dp256<const VNNI: bool>(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    if VNNI {
        dp256_vnni(acc, a, b)
    } else {
        dp256_avx2(acc, a, b)
    }
}

/// The Q4_K and Q5_K (`HIGH`: the fifth bit) 256-bit kernel for one weight row against `T`
/// activation rows; as [`q3k_256_rows`], the weight-only work is done once per super-block and
/// each token goes through the one-token kernel's operations in its order.
#[inline(always)]
unsafe fn q45k_256_rows<const T: usize, const VNNI: bool, const HIGH: bool>(
    n: usize,
    x: &[u8],
    ys: [&[u8]; T],
) -> [f32; T] {
    let (bytes, qs_off) = if HIGH { (Q5K_BYTES, 48) } else { (Q4K_BYTES, 16) };
    let nb = super_blocks_each(n, x, &ys, bytes);
    let m4 = _mm256_set1_epi8(0x0f);
    let m16 = _mm256_set1_epi8(0x10);
    let mut acc = [_mm256_setzero_ps(); T];
    for i in 0..nb {
        let xb = x.as_ptr().add(i * bytes);
        let yb = ys.map(|y| y.as_ptr().add(i * Q8K_BYTES));
        let dd = f16x2(xb);
        let qs = xb.add(qs_off);

        let sm = k4_scales_mins(xb.add(4));
        let scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        // Each min twice, against the two bsums of its 32-weight sub-block.
        let mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
        let hbits = if HIGH { ld256(xb.add(16)) } else { _mm256_setzero_si256() };

        let mut sumi = [_mm256_setzero_si256(); T];
        for j in 0..4 {
            let bits = ld256(qs.add(32 * j));
            let mut lo = _mm256_and_si256(bits, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
            if HIGH {
                lo = _mm256_or_si256(lo, _mm256_and_si256(move_bit256(hbits, 2 * j as u32, 4), m16));
                hi = _mm256_or_si256(hi, _mm256_and_si256(move_bit256(hbits, 2 * j as u32 + 1, 4), m16));
            }
            let s_lo = _mm256_shuffle_epi8(scales, ld256(PICK1_256.0[2 * j].as_ptr()));
            let s_hi = _mm256_shuffle_epi8(scales, ld256(PICK1_256.0[2 * j + 1].as_ptr()));
            for t in 0..T {
                let q8 = yb[t].add(Q8K_QS);
                let pl = _mm256_maddubs_epi16(lo, ld256(q8.add(64 * j)));
                let ph = _mm256_maddubs_epi16(hi, ld256(q8.add(64 * j + 32)));
                sumi[t] = dp256::<VNNI>(dp256::<VNNI>(sumi[t], s_lo, pl), s_hi, ph);
            }
        }
        for t in 0..T {
            let yd = rd_f32(yb[t]);
            let d = yd * _mm_cvtss_f32(dd);
            let dmin = -yd * _mm_cvtss_f32(_mm_movehdup_ps(dd));
            let summ = _mm256_madd_epi16(mins, ld256(yb[t].add(Q8K_BSUMS)));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(summ), acc[t]);
        }
    }
    acc.map(|a| hsum256(a))
}

/// The Q6_K 256-bit kernel for one weight row against `T` activation rows (see
/// [`q45k_256_rows`]).
#[inline(always)]
unsafe fn q6k_256_rows<const T: usize, const VNNI: bool>(n: usize, x: &[u8], ys: [&[u8]; T]) -> [f32; T] {
    let nb = super_blocks_each(n, x, &ys, Q6K_BYTES);
    let m15 = _mm256_set1_epi8(0x0f);
    let m48 = _mm256_set1_epi8(0x30);
    let mut acc = [_mm256_setzero_ps(); T];
    for i in 0..nb {
        let xb = x.as_ptr().add(i * Q6K_BYTES);
        let yb = ys.map(|y| y.as_ptr().add(i * Q8K_BYTES));
        let dx = f16_at(xb.add(208));
        let scales = _mm256_cvtepi8_epi16(ld128(xb.add(192)));

        let mut sumi = [_mm256_setzero_si256(); T];
        for h in 0..2 {
            let sc_h = if h == 0 {
                _mm256_permute4x64_epi64::<0x44>(scales)
            } else {
                _mm256_permute4x64_epi64::<0xee>(scales)
            };
            let ql0 = ld256(xb.add(64 * h));
            let ql1 = ld256(xb.add(64 * h + 32));
            let qh = ld256(xb.add(128 + 32 * h));
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql0, m15), _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m48)),
                _mm256_or_si256(_mm256_and_si256(ql1, m15), _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m48)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m15), _mm256_and_si256(qh, m48)),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m15),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m48),
                ),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let s = _mm256_shuffle_epi8(sc_h, ld256(PICK2_256.0[k].as_ptr()));
                for t in 0..T {
                    let p = _mm256_maddubs_epi16(qk, ld256(yb[t].add(Q8K_QS + 128 * h + 32 * k)));
                    sumi[t] = dp256::<VNNI>(sumi[t], s, p);
                }
            }
        }
        for t in 0..T {
            let d = rd_f32(yb[t]) * dx;
            // Quants are multiplied unsigned (0..64); take 32 * sum(scale * bsum) back off.
            let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(scales, ld256(yb[t].add(Q8K_BSUMS))));
            let s = _mm256_sub_epi32(sumi[t], corr);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    acc.map(|a| hsum256(a))
}

/// The IQ4_XS 256-bit kernel for one weight row against `T` activation rows (see
/// [`q45k_256_rows`]).
#[inline(always)]
unsafe fn iq4xs_256_rows<const T: usize, const VNNI: bool>(n: usize, x: &[u8], ys: [&[u8]; T]) -> [f32; T] {
    let nb = super_blocks_each(n, x, &ys, IQ4XS_BYTES);
    let m4 = _mm256_set1_epi8(0x0f);
    let values = _mm256_broadcastsi128_si256(ld128(KVALUES.as_ptr() as *const u8));
    let mut acc = [_mm256_setzero_ps(); T];
    for i in 0..nb {
        let xb = x.as_ptr().add(i * IQ4XS_BYTES);
        let yb = ys.map(|y| y.as_ptr().add(i * Q8K_BYTES));
        let dx = f16_at(xb);
        let scales = _mm256_broadcastsi128_si256(iq4xs_scales_i16(xb));

        let mut sumi = [_mm256_setzero_si256(); T];
        for m in 0..4 {
            // 32 index bytes: sub-block 2m in the low 16, 2m + 1 in the high 16.
            let bits = ld256(xb.add(8 + 32 * m));
            let lo = _mm256_shuffle_epi8(values, _mm256_and_si256(bits, m4));
            let hi = _mm256_shuffle_epi8(values, _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4));
            let k0 = _mm256_permute2x128_si256::<0x20>(lo, hi);
            let k1 = _mm256_permute2x128_si256::<0x31>(lo, hi);
            let s0 = _mm256_shuffle_epi8(scales, ld256(PICK1_256.0[2 * m].as_ptr()));
            let s1 = _mm256_shuffle_epi8(scales, ld256(PICK1_256.0[2 * m + 1].as_ptr()));
            for t in 0..T {
                let q8 = yb[t].add(Q8K_QS);
                let y0 = ld256(q8.add(64 * m));
                let y1 = ld256(q8.add(64 * m + 32));
                // |q8| (<= 128, unsigned) × kvalue with q8's sign (|kvalue| <= 127): exact.
                let p0 = _mm256_maddubs_epi16(_mm256_abs_epi8(y0), _mm256_sign_epi8(k0, y0));
                let p1 = _mm256_maddubs_epi16(_mm256_abs_epi8(y1), _mm256_sign_epi8(k1, y1));
                sumi[t] = dp256::<VNNI>(dp256::<VNNI>(sumi[t], s0, p0), s1, p1);
            }
        }
        for t in 0..T {
            let d = rd_f32(yb[t]) * dx;
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        }
    }
    acc.map(|a| hsum256(a))
}

/// `acc + madd(a, b)` with AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dp256_avx2(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
}

/// `acc + madd(a, b)` in one 256-bit `vpdpwssd` (AVX-512VL + VNNI).
#[inline]
#[target_feature(enable = "avx512vnni,avx512vl")]
unsafe fn dp256_vnni(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, a, b)
}

/// Defines the AVX2 instantiation of a 256-bit kernel body and its AVX-512VL + VNNI twin.
macro_rules! avx2_pair {
    ($what:literal, $avx2:ident, $vnni:ident, $body:ident $(, $arg:expr)*) => {
        #[doc = concat!($what, " · Q8_K with AVX2.")]
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $avx2(n: usize, x: &[u8], y: &[u8]) -> f32 {
            $body!(n, x, y, dp256_avx2 $(, $arg)*)
        }

        #[doc = concat!($what, " · Q8_K with 256-bit registers and AVX-512VL + VNNI `vpdpwssd`.")]
        ///
        /// # Safety
        /// The CPU must support AVX-512 F, BW, VL, DQ, VNNI and F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")]
        unsafe fn $vnni(n: usize, x: &[u8], y: &[u8]) -> f32 {
            $body!(n, x, y, dp256_vnni $(, $arg)*)
        }
    };
}

/// Defines the AVX2 one-token and four-token kernels of a token-generic 256-bit body and its
/// AVX-512VL + VNNI one-token twin.
macro_rules! avx2_rows {
    ($what:literal, $avx2:ident, $avx2_x4:ident, $vnni:ident, $rows:ident $(, $arg:expr)*) => {
        #[doc = concat!($what, " · Q8_K with AVX2.")]
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $avx2(n: usize, x: &[u8], y: &[u8]) -> f32 {
            $rows::<1, false $(, $arg)*>(n, x, [y])[0]
        }

        #[doc = concat!($what, " · Q8_K with AVX2, one weight row against four activation rows.")]
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $avx2_x4(n: usize, x: &[u8], ys: [&[u8]; 4]) -> [f32; 4] {
            $rows::<4, false $(, $arg)*>(n, x, ys)
        }

        #[doc = concat!($what, " · Q8_K with 256-bit registers and AVX-512VL + VNNI `vpdpwssd`.")]
        ///
        /// # Safety
        /// The CPU must support AVX-512 F, BW, VL, DQ, VNNI and F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")]
        unsafe fn $vnni(n: usize, x: &[u8], y: &[u8]) -> f32 {
            $rows::<1, true $(, $arg)*>(n, x, [y])[0]
        }
    };
}

avx2_pair!("Q2_K", q2k_avx2, q2k_vnni256, q2k_256_body);
avx2_rows!("Q3_K", q3k_avx2, q3k_avx2_x4, q3k_vnni256, q3k_256_rows);
avx2_rows!("Q4_K", q4k_avx2, q4k_avx2_x4, q4k_vnni256, q45k_256_rows, false);
avx2_rows!("Q5_K", q5k_avx2, q5k_avx2_x4, q5k_vnni256, q45k_256_rows, true);
avx2_rows!("Q6_K", q6k_avx2, q6k_avx2_x4, q6k_vnni256, q6k_256_rows);
avx2_rows!("IQ4_XS", iq4xs_avx2, iq4xs_avx2_x4, iq4xs_vnni256, iq4xs_256_rows);

// --------------------------------------------------------------------------------------------
// AVX-512: each kernel body is a macro instantiated twice, with the scale step `$dp` either
// `madd` + `add` (AVX-512BW) or `vpdpwssd` (AVX-512 VNNI).
// --------------------------------------------------------------------------------------------

/// `acc + madd(a, b)` with AVX-512BW.
#[inline]
#[target_feature(enable = "avx512bw")]
unsafe fn dp_bw(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(acc, _mm512_madd_epi16(a, b))
}

/// `acc + madd(a, b)` in one `vpdpwssd`.
#[inline]
#[target_feature(enable = "avx512vnni")]
unsafe fn dp_vnni(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    _mm512_dpwssd_epi32(acc, a, b)
}

/// The 32 bytes at `p` in both 256-bit halves, the high copy shifted right by `s` bits in each
/// 64-bit lane.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn bcast_shift(p: *const u8, s: i64) -> __m512i {
    let v = _mm512_broadcast_i64x4(ld256(p));
    _mm512_srlv_epi64(v, _mm512_set_epi64(s, s, s, s, 0, 0, 0, 0))
}

macro_rules! q2k_512_body {
    ($n:ident, $x:ident, $y:ident, $dp:ident) => {{
        let nb = super_blocks($n, $x, $y, Q2K_BYTES);
        let m3 = _mm512_set1_epi8(3);
        let m4 = _mm_set1_epi8(0x0f);
        let mut acc = _mm512_setzero_ps();
        let mut accm = _mm256_setzero_ps();
        for i in 0..nb {
            let xb = $x.as_ptr().add(i * Q2K_BYTES);
            let yb = $y.as_ptr().add(i * Q8K_BYTES);
            let yd = rd_f32(yb);
            let dd = f16x2(xb.add(80));
            let d = yd * _mm_cvtss_f32(dd);
            let dmin = -yd * _mm_cvtss_f32(_mm_movehdup_ps(dd));
            let q8 = yb.add(Q8K_QS);

            let sc = ld128(xb);
            let scales = _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(sc, m4)));
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sc), m4));
            let summ = _mm256_madd_epi16(mins, ld256(yb.add(Q8K_BSUMS)));

            let mut s0 = _mm512_setzero_si512();
            let mut s1 = _mm512_setzero_si512();
            for j in 0..2 {
                // Weights 128j + [0, 64): shifts 0 and 2; 128j + [64, 128): shifts 4 and 6.
                let v = bcast_shift(xb.add(16 + 32 * j), 2);
                let qa = _mm512_and_si512(v, m3);
                let qb = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m3);
                let pa = _mm512_maddubs_epi16(qa, ld512(q8.add(128 * j)));
                let pb = _mm512_maddubs_epi16(qb, ld512(q8.add(128 * j + 64)));
                let sa = _mm512_permutexvar_epi16(ld512(IDX4_512.0[2 * j].as_ptr() as *const u8), scales);
                let sb = _mm512_permutexvar_epi16(ld512(IDX4_512.0[2 * j + 1].as_ptr() as *const u8), scales);
                s0 = $dp(s0, sa, pa);
                s1 = $dp(s1, sb, pb);
            }
            let sumi = _mm512_add_epi32(s0, s1);
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(summ), accm);
        }
        _mm512_reduce_add_ps(acc) + hsum256(accm)
    }};
}

macro_rules! q3k_512_body {
    ($n:ident, $x:ident, $y:ident, $dp:ident) => {{
        let nb = super_blocks($n, $x, $y, Q3K_BYTES);
        let m3 = _mm512_set1_epi8(3);
        let four = _mm512_set1_epi8(4);
        let mut acc = _mm512_setzero_ps();
        for i in 0..nb {
            let xb = $x.as_ptr().add(i * Q3K_BYTES);
            let yb = $y.as_ptr().add(i * Q8K_BYTES);
            let d = rd_f32(yb) * f16_at(xb.add(108));
            let q8 = yb.add(Q8K_QS);

            let sc16 = _mm256_cvtepi8_epi16(q3k_scales_i8(xb.add(94)));
            let scales = _mm512_zextsi256_si512(sc16);
            // Quants are multiplied as q + 4 (0..8); take 4 * sum(scale * bsum) back off.
            let corr = _mm256_slli_epi32::<2>(_mm256_madd_epi16(sc16, ld256(yb.add(Q8K_BSUMS))));
            let hbits = _mm512_broadcast_i64x4(ld256(xb));

            let mut s0 = _mm512_setzero_si512();
            let mut s1 = _mm512_setzero_si512();
            for j in 0..2 {
                let v = bcast_shift(xb.add(32 + 32 * j), 2);
                let lo = [_mm512_and_si512(v, m3), _mm512_and_si512(_mm512_srli_epi16::<4>(v), m3)];
                for (t, &l) in lo.iter().enumerate() {
                    let m = 2 * j + t;
                    let h = _mm512_test_epi8_mask(hbits, ld512(HBIT_512.0[m].as_ptr()));
                    let q = _mm512_mask_add_epi8(l, h, l, four);
                    let p = _mm512_maddubs_epi16(q, ld512(q8.add(64 * m)));
                    let s = _mm512_permutexvar_epi16(ld512(IDX4_512.0[m].as_ptr() as *const u8), scales);
                    if t == 0 {
                        s0 = $dp(s0, s, p);
                    } else {
                        s1 = $dp(s1, s, p);
                    }
                }
            }
            let sumi = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_zextsi256_si512(corr));
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
        }
        _mm512_reduce_add_ps(acc)
    }};
}

macro_rules! q45k_512_body {
    ($n:ident, $x:ident, $y:ident, $dp:ident, $bytes:expr, $qs_off:expr, $high:expr) => {{
        let nb = super_blocks($n, $x, $y, $bytes);
        let m4 = _mm512_set1_epi8(0x0f);
        let sixteen = _mm512_set1_epi8(16);
        let mut acc = _mm512_setzero_ps();
        let mut accm = _mm256_setzero_ps();
        for i in 0..nb {
            let xb = $x.as_ptr().add(i * $bytes);
            let yb = $y.as_ptr().add(i * Q8K_BYTES);
            let yd = rd_f32(yb);
            let dd = f16x2(xb);
            let d = yd * _mm_cvtss_f32(dd);
            let dmin = -yd * _mm_cvtss_f32(_mm_movehdup_ps(dd));
            let q8 = yb.add(Q8K_QS);
            let qs = xb.add($qs_off);

            let sm = k4_scales_mins(xb.add(4));
            let scales = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(sm));
            let mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
            let summ = _mm256_madd_epi16(mins, ld256(yb.add(Q8K_BSUMS)));
            let hbits = if $high { _mm512_broadcast_i64x4(ld256(xb.add(16))) } else { _mm512_setzero_si512() };

            let mut s0 = _mm512_setzero_si512();
            let mut s1 = _mm512_setzero_si512();
            for c in 0..4 {
                // Low nibbles (sub-block 2c) in the low half, high nibbles (2c + 1) in the high.
                let mut q = _mm512_and_si512(bcast_shift(qs.add(32 * c), 4), m4);
                if $high {
                    let h = _mm512_test_epi8_mask(hbits, ld512(HBIT_512.0[c].as_ptr()));
                    q = _mm512_mask_add_epi8(q, h, q, sixteen);
                }
                let p = _mm512_maddubs_epi16(q, ld512(q8.add(64 * c)));
                let s = _mm512_shuffle_epi8(scales, ld512(PICK2_512.0[c].as_ptr()));
                if c % 2 == 0 {
                    s0 = $dp(s0, s, p);
                } else {
                    s1 = $dp(s1, s, p);
                }
            }
            let sumi = _mm512_add_epi32(s0, s1);
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(summ), accm);
        }
        _mm512_reduce_add_ps(acc) + hsum256(accm)
    }};
}

macro_rules! q6k_512_body {
    ($n:ident, $x:ident, $y:ident, $dp:ident) => {{
        let nb = super_blocks($n, $x, $y, Q6K_BYTES);
        let m15 = _mm512_set1_epi8(0x0f);
        let m48 = _mm512_set1_epi8(0x30);
        let mut acc = _mm512_setzero_ps();
        for i in 0..nb {
            let xb = $x.as_ptr().add(i * Q6K_BYTES);
            let yb = $y.as_ptr().add(i * Q8K_BYTES);
            let d = rd_f32(yb) * f16_at(xb.add(208));
            let q8 = yb.add(Q8K_QS);

            let sc16 = _mm256_cvtepi8_epi16(ld128(xb.add(192)));
            let scales = _mm512_zextsi256_si512(sc16);
            // Quants are multiplied unsigned (0..64); take 32 * sum(scale * bsum) back off.
            let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, ld256(yb.add(Q8K_BSUMS))));

            let mut s0 = _mm512_setzero_si512();
            let mut s1 = _mm512_setzero_si512();
            for h in 0..2 {
                // ql bytes 64h..64h+64: low nibbles are weights 128h + [0, 64), high nibbles
                // 128h + [64, 128). Their top bits: qh bits 0-1 | 2-3 and 4-5 | 6-7.
                let ql = ld512(xb.add(64 * h));
                let qh = bcast_shift(xb.add(128 + 32 * h), 2);
                let ha = _mm512_and_si512(_mm512_slli_epi16::<4>(qh), m48);
                let hb = _mm512_and_si512(qh, m48);
                // (a & c) | b
                let qa = _mm512_ternarylogic_epi32::<0xec>(ql, ha, m15);
                let qb = _mm512_ternarylogic_epi32::<0xec>(_mm512_srli_epi16::<4>(ql), hb, m15);
                let pa = _mm512_maddubs_epi16(qa, ld512(q8.add(128 * h)));
                let pb = _mm512_maddubs_epi16(qb, ld512(q8.add(128 * h + 64)));
                let sa = _mm512_permutexvar_epi16(ld512(IDX4_512.0[2 * h].as_ptr() as *const u8), scales);
                let sb = _mm512_permutexvar_epi16(ld512(IDX4_512.0[2 * h + 1].as_ptr() as *const u8), scales);
                s0 = $dp(s0, sa, pa);
                s1 = $dp(s1, sb, pb);
            }
            let sumi = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_zextsi256_si512(corr));
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
        }
        _mm512_reduce_add_ps(acc)
    }};
}

/// The IQ4_XS indices of weights `64m..64m+64` (32 bytes at `p`) as one register: sub-block
/// `2m` (low then high nibbles) in the low half, `2m + 1` in the high half.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn iq4xs_idx_512(p: *const u8, m4: __m512i) -> __m512i {
    let v = _mm512_castsi256_si512(ld256(p));
    let v = _mm512_shuffle_i64x2::<0x50>(v, v); // 128-bit lanes [A, A, B, B]
    _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0)), m4)
}

/// IQ4_XS · Q8_K with AVX-512BW: signed kvalues, `|q8| × sign(kvalue, q8)`.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL, DQ and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,f16c")]
unsafe fn iq4xs_avx512(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let nb = super_blocks(n, x, y, IQ4XS_BYTES);
    let m4 = _mm512_set1_epi8(0x0f);
    let values = _mm512_broadcast_i32x4(ld128(KVALUES.as_ptr() as *const u8));
    let zero = _mm512_setzero_si512();
    let mut acc = _mm512_setzero_ps();
    for i in 0..nb {
        let xb = x.as_ptr().add(i * IQ4XS_BYTES);
        let yb = y.as_ptr().add(i * Q8K_BYTES);
        let d = rd_f32(yb) * f16_at(xb);
        let q8 = yb.add(Q8K_QS);
        let scales = _mm512_broadcast_i32x4(iq4xs_scales_i16(xb));

        let mut s0 = _mm512_setzero_si512();
        let mut s1 = _mm512_setzero_si512();
        for m in 0..4 {
            let kv = _mm512_shuffle_epi8(values, iq4xs_idx_512(xb.add(8 + 32 * m), m4));
            let yv = ld512(q8.add(64 * m));
            let neg = _mm512_movepi8_mask(yv);
            let kv = _mm512_mask_sub_epi8(kv, neg, zero, kv);
            let p = _mm512_maddubs_epi16(_mm512_abs_epi8(yv), kv);
            let s = _mm512_shuffle_epi8(scales, ld512(PICK2_512.0[m].as_ptr()));
            if m % 2 == 0 {
                s0 = dp_bw(s0, s, p);
            } else {
                s1 = dp_bw(s1, s, p);
            }
        }
        let sumi = _mm512_add_epi32(s0, s1);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// IQ4_XS · Q8_K with AVX-512 VNNI: `vpdpbusd` of `kvalue + 128` (unsigned) against q8, scaled
/// per sub-block, minus `128 * sum(scale * bsum)`.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL, DQ, VNNI and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")]
unsafe fn iq4xs_avx512vnni(n: usize, x: &[u8], y: &[u8]) -> f32 {
    iq4xs_vnni_rows::<1>(n, x, [y])[0]
}

/// Defines the AVX-512BW and AVX-512 VNNI instantiations of a kernel body.
macro_rules! avx512_pair {
    ($what:literal, $bw:ident, $vnni:ident, $body:ident $(, $arg:expr)*) => {
        #[doc = concat!($what, " · Q8_K with AVX-512BW.")]
        ///
        /// # Safety
        /// The CPU must support AVX-512 F, BW, VL, DQ and F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,f16c")]
        unsafe fn $bw(n: usize, x: &[u8], y: &[u8]) -> f32 {
            $body!(n, x, y, dp_bw $(, $arg)*)
        }

        #[doc = concat!($what, " · Q8_K with AVX-512 VNNI.")]
        ///
        /// # Safety
        /// The CPU must support AVX-512 F, BW, VL, DQ, VNNI and F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")]
        unsafe fn $vnni(n: usize, x: &[u8], y: &[u8]) -> f32 {
            $body!(n, x, y, dp_vnni $(, $arg)*)
        }
    };
}

avx512_pair!("Q2_K", q2k_avx512, q2k_avx512vnni, q2k_512_body);
avx512_pair!("Q3_K", q3k_avx512, q3k_avx512vnni, q3k_512_body);

/// Q4_K · Q8_K with AVX-512BW.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL, DQ and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,f16c")]
unsafe fn q4k_avx512(n: usize, x: &[u8], y: &[u8]) -> f32 {
    q45k_512_body!(n, x, y, dp_bw, Q4K_BYTES, 16, false)
}
avx512_pair!("Q5_K", q5k_avx512, q5k_avx512vnni, q45k_512_body, Q5K_BYTES, 48, true);
avx512_pair!("Q6_K", q6k_avx512, q6k_avx512vnni, q6k_512_body);

/// Q4_K · Q8_K with AVX-512 VNNI. The high nibbles are left in place (16 × their value, still
/// a byte) and `vpdpbusd` multiplies both nibble halves without a shift: register `c` holds
/// sub-block `2c` (low nibbles) in its low half and `16 ×` sub-block `2c + 1` in its high half.
/// The four registers of 4-weight sums are transposed and added so that each i32 lane holds a
/// 16-weight partial sum of one sub-block, and one multiplication by the (matching) scales
/// finishes the super-block; the even sub-blocks' scales are taken 16 times and `d / 16` is
/// used, so every lane carries the same factor 16 (at most 16 · 63 · 15 · 128 · 256 < 2^31).
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL, DQ, VNNI and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")]
unsafe fn q4k_avx512vnni(n: usize, x: &[u8], y: &[u8]) -> f32 {
    q4k_vnni_rows::<1>(n, x, [y])[0]
}

// --------------------------------------------------------------------------------------------
// Several tokens per weight row (prompt processing)
// --------------------------------------------------------------------------------------------
//
// The kernels below are the one-token kernels chosen for Zen-class AVX-512 (`q6k_avx512`,
// `q4k_avx512vnni`, `iq4xs_avx512vnni`; the last two are these with T = 1) with the weight-only work of each super-block (unpacking quants, scales
// and mins) done once for `T` tokens. Every token goes through the one-token kernel's
// operations in its order, so each result is that kernel's bit for bit
// (`vec_dot_select4_matches_select_bits`).

/// `q6k_avx512` for one weight row against `T` activation rows.
#[inline(always)]
unsafe fn q6k_bw_rows<const T: usize>(n: usize, x: &[u8], ys: [&[u8]; T]) -> [f32; T] {
    let nb = super_blocks_each(n, x, &ys, Q6K_BYTES);
    let m15 = _mm512_set1_epi8(0x0f);
    let m48 = _mm512_set1_epi8(0x30);
    let mut acc = [_mm512_setzero_ps(); T];
    for i in 0..nb {
        let xb = x.as_ptr().add(i * Q6K_BYTES);
        let yb = ys.map(|y| y.as_ptr().add(i * Q8K_BYTES));
        let dx = f16_at(xb.add(208));
        let sc16 = _mm256_cvtepi8_epi16(ld128(xb.add(192)));
        let scales = _mm512_zextsi256_si512(sc16);
        let mut s0 = [_mm512_setzero_si512(); T];
        let mut s1 = [_mm512_setzero_si512(); T];
        for h in 0..2 {
            let ql = ld512(xb.add(64 * h));
            let qh = bcast_shift(xb.add(128 + 32 * h), 2);
            let ha = _mm512_and_si512(_mm512_slli_epi16::<4>(qh), m48);
            let hb = _mm512_and_si512(qh, m48);
            let qa = _mm512_ternarylogic_epi32::<0xec>(ql, ha, m15);
            let qb = _mm512_ternarylogic_epi32::<0xec>(_mm512_srli_epi16::<4>(ql), hb, m15);
            let sa = _mm512_permutexvar_epi16(ld512(IDX4_512.0[2 * h].as_ptr() as *const u8), scales);
            let sb = _mm512_permutexvar_epi16(ld512(IDX4_512.0[2 * h + 1].as_ptr() as *const u8), scales);
            for k in 0..T {
                let q8 = yb[k].add(Q8K_QS);
                let pa = _mm512_maddubs_epi16(qa, ld512(q8.add(128 * h)));
                let pb = _mm512_maddubs_epi16(qb, ld512(q8.add(128 * h + 64)));
                s0[k] = dp_bw(s0[k], sa, pa);
                s1[k] = dp_bw(s1[k], sb, pb);
            }
        }
        for k in 0..T {
            let d = rd_f32(yb[k]) * dx;
            let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, ld256(yb[k].add(Q8K_BSUMS))));
            let sumi = _mm512_sub_epi32(_mm512_add_epi32(s0[k], s1[k]), _mm512_zextsi256_si512(corr));
            acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc[k]);
        }
    }
    acc.map(|a| _mm512_reduce_add_ps(a))
}

/// `q4k_avx512vnni` for one weight row against `T` activation rows.
#[inline(always)]
unsafe fn q4k_vnni_rows<const T: usize>(n: usize, x: &[u8], ys: [&[u8]; T]) -> [f32; T] {
    let nb = super_blocks_each(n, x, &ys, Q4K_BYTES);
    let mlohi = _mm512_inserti64x4::<1>(_mm512_set1_epi8(0x0f), _mm256_set1_epi8(-16));
    let zero = _mm512_setzero_si512();
    let sidx = _mm512_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6, 1, 3, 5, 7, 1, 3, 5, 7);
    let sshift = _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut accm = [_mm256_setzero_ps(); T];
    for i in 0..nb {
        let xb = x.as_ptr().add(i * Q4K_BYTES);
        let dd = f16x2(xb);
        let qs = xb.add(16);
        let sm = k4_scales_mins(xb.add(4));
        let sc = _mm512_zextsi256_si512(_mm256_cvtepu8_epi32(sm));
        let scales = _mm512_sllv_epi32(_mm512_permutexvar_epi32(sidx, sc), sshift);
        let mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
        let w: [__m512i; 4] =
            std::array::from_fn(|c| _mm512_and_si512(_mm512_broadcast_i64x4(ld256(qs.add(32 * c))), mlohi));
        for k in 0..T {
            let yb = ys[k].as_ptr().add(i * Q8K_BYTES);
            let yd = rd_f32(yb);
            let d = yd * _mm_cvtss_f32(dd) * 0.0625;
            let dmin = -yd * _mm_cvtss_f32(_mm_movehdup_ps(dd));
            let q8 = yb.add(Q8K_QS);
            let summ = _mm256_madd_epi16(mins, ld256(yb.add(Q8K_BSUMS)));
            let p: [__m512i; 4] = std::array::from_fn(|c| _mm512_dpbusd_epi32(zero, w[c], ld512(q8.add(64 * c))));
            let a01 = _mm512_add_epi32(_mm512_unpacklo_epi32(p[0], p[1]), _mm512_unpackhi_epi32(p[0], p[1]));
            let a23 = _mm512_add_epi32(_mm512_unpacklo_epi32(p[2], p[3]), _mm512_unpackhi_epi32(p[2], p[3]));
            let b = _mm512_add_epi32(_mm512_unpacklo_epi64(a01, a23), _mm512_unpackhi_epi64(a01, a23));
            let sumi = _mm512_mullo_epi32(b, scales);
            acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc[k]);
            accm[k] = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(summ), accm[k]);
        }
    }
    std::array::from_fn(|k| _mm512_reduce_add_ps(acc[k]) + hsum256(accm[k]))
}

/// `iq4xs_avx512vnni` for one weight row against `T` activation rows.
#[inline(always)]
unsafe fn iq4xs_vnni_rows<const T: usize>(n: usize, x: &[u8], ys: [&[u8]; T]) -> [f32; T] {
    let nb = super_blocks_each(n, x, &ys, IQ4XS_BYTES);
    let m4 = _mm512_set1_epi8(0x0f);
    let values = _mm512_broadcast_i32x4(ld128(KVALUES_U8.as_ptr()));
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); T];
    for i in 0..nb {
        let xb = x.as_ptr().add(i * IQ4XS_BYTES);
        let dx = f16_at(xb);
        let ls = iq4xs_scales_i32(xb);
        let scales = _mm512_zextsi256_si512(ls);
        let ls2 = _mm256_or_si256(_mm256_and_si256(ls, _mm256_set1_epi32(0xffff)), _mm256_slli_epi32::<16>(ls));
        let kv: [__m512i; 4] =
            std::array::from_fn(|m| _mm512_shuffle_epi8(values, iq4xs_idx_512(xb.add(8 + 32 * m), m4)));
        let sc: [__m512i; 4] =
            std::array::from_fn(|m| _mm512_permutexvar_epi32(ld512(IDX2_512_D.0[m].as_ptr() as *const u8), scales));
        for k in 0..T {
            let yb = ys[k].as_ptr().add(i * Q8K_BYTES);
            let d = rd_f32(yb) * dx;
            let q8 = yb.add(Q8K_QS);
            let corr = _mm256_slli_epi32::<7>(_mm256_madd_epi16(ls2, ld256(yb.add(Q8K_BSUMS))));
            let mut s0 = _mm512_setzero_si512();
            let mut s1 = _mm512_setzero_si512();
            for m in 0..4 {
                let p = _mm512_dpbusd_epi32(zero, kv[m], ld512(q8.add(64 * m)));
                let p = _mm512_mullo_epi32(p, sc[m]);
                if m % 2 == 0 {
                    s0 = _mm512_add_epi32(s0, p);
                } else {
                    s1 = _mm512_add_epi32(s1, p);
                }
            }
            let sumi = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_zextsi256_si512(corr));
            acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc[k]);
        }
    }
    acc.map(|a| _mm512_reduce_add_ps(a))
}

/// # Safety
/// The CPU must support AVX-512 F, BW, VL, DQ, VNNI and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")]
unsafe fn iq4xs_avx512vnni_x4(n: usize, x: &[u8], ys: [&[u8]; 4]) -> [f32; 4] {
    iq4xs_vnni_rows::<4>(n, x, ys)
}

fn iq4xs_avx512vnni_x4_s(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [f32; 4]) {
    // SAFETY: only handed out by `avx512_x4` where `avx512` hands out `iq4xs_avx512vnni`, whose
    // features (checked there) are these.
    *out = unsafe { iq4xs_avx512vnni_x4(n, x, ys) };
}

/// # Safety
/// The CPU must support AVX-512 F, BW, VL, DQ and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,f16c")]
unsafe fn q6k_avx512_x4(n: usize, x: &[u8], ys: [&[u8]; 4]) -> [f32; 4] {
    q6k_bw_rows::<4>(n, x, ys)
}

/// # Safety
/// The CPU must support AVX-512 F, BW, VL, DQ, VNNI and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")]
unsafe fn q4k_avx512vnni_x4(n: usize, x: &[u8], ys: [&[u8]; 4]) -> [f32; 4] {
    q4k_vnni_rows::<4>(n, x, ys)
}

/// # Safety
/// The CPU must support AVX-512 F, BW, VL, DQ, VNNI and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")]
unsafe fn q3k_vnni256_x4(n: usize, x: &[u8], ys: [&[u8]; 4]) -> [f32; 4] {
    q3k_256_rows::<4, true>(n, x, ys)
}

fn q3k_vnni256_x4_s(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [f32; 4]) {
    // SAFETY: only handed out by `avx512_x4` where `avx512` hands out `q3k_vnni256`, whose
    // features (checked there) are these.
    *out = unsafe { q3k_vnni256_x4(n, x, ys) };
}

fn q6k_avx512_x4_s(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [f32; 4]) {
    // SAFETY: only handed out by `avx512_x4` where `avx512` hands out `q6k_avx512`, whose
    // features (checked there) are these.
    *out = unsafe { q6k_avx512_x4(n, x, ys) };
}

fn q4k_avx512vnni_x4_s(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [f32; 4]) {
    // SAFETY: as above, for `q4k_avx512vnni`.
    *out = unsafe { q4k_avx512vnni_x4(n, x, ys) };
}

/// The four-token kernel matching what [`avx512`] hands out for `ty`, where this file has one
/// (Q6_K, Q4_K, IQ4_XS and Q3_K); callers have checked AVX-512 F, BW, VL, DQ as for [`avx512`].
pub(super) fn avx512_x4(ty: GgmlType) -> Option<super::VecDot4Fn> {
    // Only where `avx512` picks the one-token kernel these reproduce (its table: the BW kernel
    // for Q6_K, the VNNI kernels for Q4_K and IQ4_XS and the 256-bit VNNI kernel for Q3_K when the
    // CPU has VNNI).
    match ty {
        GgmlType::Q6_K if variant(ty, Variant::Avx512Bw).is_some() => Some(q6k_avx512_x4_s),
        GgmlType::Q4_K if variant(ty, Variant::Avx512Vnni).is_some() => Some(q4k_avx512vnni_x4_s),
        GgmlType::IQ4_XS if variant(ty, Variant::Avx512Vnni).is_some() => Some(iq4xs_avx512vnni_x4_s),
        GgmlType::Q3_K if variant(ty, Variant::Vnni256).is_some() => Some(q3k_vnni256_x4_s),
        _ => None,
    }
}

/// The AVX2 four-token kernel matching what [`avx2`] hands out for `ty` (Q3_K, Q4_K, Q5_K, Q6_K
/// and IQ4_XS; callers have checked AVX2 and FMA as for [`avx2`]).
pub(super) fn avx2_x4(ty: GgmlType) -> Option<super::VecDot4Fn> {
    macro_rules! x4 {
        ($kernel:ident) => {{
            fn safe(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [f32; 4]) {
                // SAFETY: only handed out where `avx2` hands out the one-token kernel, whose
                // features (AVX2, FMA, F16C; checked there) are these.
                *out = unsafe { $kernel(n, x, ys) };
            }
            safe as super::VecDot4Fn
        }};
    }
    variant(ty, Variant::Avx2)?;
    Some(match ty {
        GgmlType::Q3_K => x4!(q3k_avx2_x4),
        GgmlType::Q4_K => x4!(q4k_avx2_x4),
        GgmlType::Q5_K => x4!(q5k_avx2_x4),
        GgmlType::Q6_K => x4!(q6k_avx2_x4),
        GgmlType::IQ4_XS => x4!(iq4xs_avx2_x4),
        _ => return None,
    })
}

// --------------------------------------------------------------------------------------------
// Safe entry points and tables
// --------------------------------------------------------------------------------------------

macro_rules! safe_wrappers {
    ($($safe:ident => $kernel:ident),* $(,)?) => {$(
        fn $safe(n: usize, x: &[u8], y: &[u8]) -> f32 {
            // SAFETY: only handed out by `select` after `Isa::is_available` confirmed the
            // features (and by the tables below after checking F16C and, for the VNNI kernels,
            // AVX-512 VNNI).
            unsafe { $kernel(n, x, y) }
        }
    )*};
}

safe_wrappers! {
    q2k_avx2_s => q2k_avx2,
    q3k_avx2_s => q3k_avx2,
    q4k_avx2_s => q4k_avx2,
    q5k_avx2_s => q5k_avx2,
    q6k_avx2_s => q6k_avx2,
    iq4xs_avx2_s => iq4xs_avx2,
    q2k_avx512_s => q2k_avx512,
    q3k_avx512_s => q3k_avx512,
    q4k_avx512_s => q4k_avx512,
    q5k_avx512_s => q5k_avx512,
    q6k_avx512_s => q6k_avx512,
    iq4xs_avx512_s => iq4xs_avx512,
    q2k_avx512vnni_s => q2k_avx512vnni,
    q3k_avx512vnni_s => q3k_avx512vnni,
    q4k_avx512vnni_s => q4k_avx512vnni,
    q5k_avx512vnni_s => q5k_avx512vnni,
    q6k_avx512vnni_s => q6k_avx512vnni,
    iq4xs_avx512vnni_s => iq4xs_avx512vnni,
    q2k_vnni256_s => q2k_vnni256,
    q3k_vnni256_s => q3k_vnni256,
    q4k_vnni256_s => q4k_vnni256,
    q5k_vnni256_s => q5k_vnni256,
    q6k_vnni256_s => q6k_vnni256,
    iq4xs_vnni256_s => iq4xs_vnni256,
}

/// The kernel families of this file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// 256-bit, AVX2 + FMA + F16C.
    Avx2,
    /// 512-bit, AVX-512 F/BW/VL/DQ + F16C.
    Avx512Bw,
    /// 512-bit, plus AVX-512 VNNI.
    Avx512Vnni,
    /// 256-bit, AVX-512VL + VNNI (`vpdpwssd ymm`).
    Vnni256,
}

impl Variant {
    /// Whether this CPU has the features the variant's kernels are compiled with, beyond what
    /// the `Isa` it is handed out for guarantees (callers check that `Isa`).
    fn extra_features_present(self) -> bool {
        let vnni = matches!(self, Variant::Avx512Vnni | Variant::Vnni256);
        is_x86_feature_detected!("f16c") && (!vnni || is_x86_feature_detected!("avx512vnni"))
    }
}

fn variant(ty: GgmlType, v: Variant) -> Option<VecDotFn> {
    use GgmlType as T;
    use Variant as V;
    if !v.extra_features_present() {
        return None;
    }
    let f: VecDotFn = match (v, ty) {
        (V::Avx2, T::Q2_K) => q2k_avx2_s,
        (V::Avx2, T::Q3_K) => q3k_avx2_s,
        (V::Avx2, T::Q4_K) => q4k_avx2_s,
        (V::Avx2, T::Q5_K) => q5k_avx2_s,
        (V::Avx2, T::Q6_K) => q6k_avx2_s,
        (V::Avx2, T::IQ4_XS) => iq4xs_avx2_s,
        (V::Avx512Bw, T::Q2_K) => q2k_avx512_s,
        (V::Avx512Bw, T::Q3_K) => q3k_avx512_s,
        (V::Avx512Bw, T::Q4_K) => q4k_avx512_s,
        (V::Avx512Bw, T::Q5_K) => q5k_avx512_s,
        (V::Avx512Bw, T::Q6_K) => q6k_avx512_s,
        (V::Avx512Bw, T::IQ4_XS) => iq4xs_avx512_s,
        (V::Avx512Vnni, T::Q2_K) => q2k_avx512vnni_s,
        (V::Avx512Vnni, T::Q3_K) => q3k_avx512vnni_s,
        (V::Avx512Vnni, T::Q4_K) => q4k_avx512vnni_s,
        (V::Avx512Vnni, T::Q5_K) => q5k_avx512vnni_s,
        (V::Avx512Vnni, T::Q6_K) => q6k_avx512vnni_s,
        (V::Avx512Vnni, T::IQ4_XS) => iq4xs_avx512vnni_s,
        (V::Vnni256, T::Q2_K) => q2k_vnni256_s,
        (V::Vnni256, T::Q3_K) => q3k_vnni256_s,
        (V::Vnni256, T::Q4_K) => q4k_vnni256_s,
        (V::Vnni256, T::Q5_K) => q5k_vnni256_s,
        (V::Vnni256, T::Q6_K) => q6k_vnni256_s,
        (V::Vnni256, T::IQ4_XS) => iq4xs_vnni256_s,
        _ => return None,
    };
    Some(f)
}

/// AVX2 kernels (callers have checked AVX2 + FMA; F16C, present on every AVX2 CPU, is checked
/// here).
pub(super) fn avx2(ty: GgmlType) -> Option<VecDotFn> {
    variant(ty, Variant::Avx2)
}

/// AVX-512 kernels (callers have checked F, BW, VL, DQ).
///
/// Without AVX-512 VNNI: the 512-bit AVX-512BW kernels. With it, per format the variant that
/// measured fastest on AMD Zen 4 (which executes 512-bit instructions as two 256-bit halves, so
/// 512-bit registers save instructions, not ALU work): the 512-bit `vpdpbusd` kernels for Q4_K
/// and IQ4_XS, the 512-bit AVX-512BW kernel for Q6_K, and the 256-bit `vpdpwssd` kernels for
/// Q2_K, Q3_K and Q5_K (whose 512-bit bit-unpacking costs more shuffles than it saves). All
/// variants are tested against the scalar twins, so the choice is only about speed.
pub(super) fn avx512(ty: GgmlType) -> Option<VecDotFn> {
    use GgmlType as T;
    let best = match ty {
        T::Q2_K | T::Q3_K | T::Q5_K => Variant::Vnni256,
        T::Q6_K => Variant::Avx512Bw,
        _ => Variant::Avx512Vnni,
    };
    variant(ty, best).or_else(|| variant(ty, Variant::Avx512Bw))
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
        let mut v: Vec<(&'static str, Table)> = Vec::new();
        if Isa::Avx2.is_available() {
            v.push(("avx2", |t| variant(t, Variant::Avx2)));
        }
        if Isa::Avx512.is_available() {
            v.push(("avx512bw", |t| variant(t, Variant::Avx512Bw)));
            if is_x86_feature_detected!("avx512vnni") {
                v.push(("avx512vnni", |t| variant(t, Variant::Avx512Vnni)));
                v.push(("vnni256", |t| variant(t, Variant::Vnni256)));
            }
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
    fn x86_kquants_tables_cover_the_family() {
        for ty in TYPES {
            if Isa::Avx2.is_available() {
                assert!(avx2(ty).is_some(), "{ty:?}");
                assert_eq!(implementation(ty, Isa::Avx2), "avx2", "{ty:?}");
                assert!(select(ty, Isa::Avx2).is_some());
            }
            if Isa::Avx512.is_available() {
                assert!(avx512(ty).is_some(), "{ty:?}");
                assert!(variant(ty, Variant::Avx512Bw).is_some(), "{ty:?}");
                assert_eq!(implementation(ty, Isa::Avx512), "avx512", "{ty:?}");
            }
        }
        assert!(avx2(GgmlType::Q8_K).is_none() && avx512(GgmlType::Q8_K).is_none());
    }

    #[test]
    fn x86_kquants_match_scalar_on_quantized_data() {
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
    fn x86_kquants_match_scalar_on_adversarial_blocks() {
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
