//! Dot-product kernels for block-quantized weights against quantized activations, per
//! instruction set. The scalar reference of every format lives with the format
//! (`formats::*::vec_dot_*`, listed in `formats::traits`); this module adds SIMD versions and
//! chooses one per tensor (never per block).
//!
//! Each SIMD kernel computes the same integer dot products as its scalar twin; only the order in
//! which the per-block float terms are added differs, so results agree within a few ulps of the
//! sum of the absolute block terms (the tolerance the tests document and check).

use super::isa::Isa;
use crate::formats::{self, VecDotFn};
use crate::gguf::GgmlType;

#[cfg(target_arch = "aarch64")]
mod neon_kquants;
#[cfg(target_arch = "aarch64")]
mod neon_legacy;
#[cfg(target_arch = "x86_64")]
mod x86_kquants;
#[cfg(target_arch = "x86_64")]
mod x86_legacy;

/// The fastest kernel for weights of type `ty` on `isa`, falling back to slower instruction sets
/// and finally to the scalar reference. `None` for types without a dot product (Q8_1, Q8_K).
///
/// `isa` must be available on this CPU (`Isa::is_available`); the SIMD kernels returned rely
/// on it.
pub fn select(ty: GgmlType, isa: Isa) -> Option<VecDotFn> {
    simd(ty, isa).or(formats::traits(ty).vec_dot)
}

/// One weight row against four activation rows: `out[k]` is the dot product of the `n`
/// weights in `x` with the activations in `ys[k]`, exactly as the matching [`VecDotFn`] computes
/// it. Panics unless every row holds `n / block_size` blocks.
pub type VecDot4Fn = fn(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [f32; 4]);

/// Rearranges one quantized activation row of `n` values into a prepared kernel's layout.
pub type PrepareFn = fn(n: usize, y: &[u8], out: &mut [u8]);

/// [`PrepareFn`] straight from the f32 activations: the bytes that quantizing `x` to the
/// format's `vec_dot_type` and then preparing that row give, in one pass.
pub type PrepareF32Fn = fn(x: &[f32], out: &mut [u8]);

/// Every weight row in `x` (rows of `n` weights, `out.len()` of them) against four prepared
/// activation rows: `out[r][k]` is row `r` dotted with `ys[k]`. Panics unless the lengths agree.
pub type RowsDot4Fn = fn(n: usize, x: &[u8], ys: [&[u8]; 4], out: &mut [[f32; 4]]);

/// [`RowsDot4Fn`] for eight activation rows.
pub type RowsDot8Fn = fn(n: usize, x: &[u8], ys: [&[u8]; 8], out: &mut [[f32; 8]]);

/// Every weight row in `x` against one prepared activation row, row `r`'s result in `out[r]`.
pub type RowsDot1Fn = fn(n: usize, x: &[u8], y: &[u8], out: &mut [f32]);

/// Four-token and one-token kernels that read activation rows rearranged once per matrix
/// product ([`Prepared4::prepare`]) rather than the quantized rows themselves, so the per-token
/// work in the inner loop shrinks; each result is bit-identical to [`select`]'s kernel on the
/// raw row. Both take a run of weight rows per call, so lengths are checked once per run.
#[derive(Clone, Copy)]
pub struct Prepared4 {
    pub prepare: PrepareFn,
    /// `prepare` fused with the activation quantizer, where there is one (F16: the rounding to
    /// f16 and back in registers, so no f16 row is written and read again).
    pub prepare_f32: Option<PrepareF32Fn>,
    /// Eight tokens at once, where the register file holds their accumulators.
    pub dot8: Option<RowsDot8Fn>,
    pub dot4: RowsDot4Fn,
    pub dot1: RowsDot1Fn,
    /// Bytes of one prepared row of `n` values.
    pub row_bytes: fn(usize) -> usize,
    /// Weight rows the kernels compute together (register tiles): runs of rows handed to
    /// them should be multiples of it, or the last tile repeats a row for nothing.
    pub tile_rows: usize,
}

impl Prepared4 {
    /// Bytes of one prepared row of `n` values.
    pub fn row_bytes(&self, n: usize) -> usize {
        (self.row_bytes)(n)
    }
}

/// The prepared four-row kernel for weights of type `ty` on `isa`, where one exists (AVX-512
/// with VNNI for the 32-block formats; F16 wherever `select` gives the AVX2 F16 kernel); `isa`
/// must be available, as for [`select`].
pub fn select4_prepared(ty: GgmlType, isa: Isa) -> Option<Prepared4> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if ty == GgmlType::F16 => {
            x86_legacy::avx512_f16_is_avx2().then(|| x86_legacy::f16_prepared(true)).flatten()
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86_legacy::avx512(ty).and(x86_legacy::avx512_x4_prepared(ty)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if ty == GgmlType::F16 => x86_legacy::f16_prepared(false),
        _ => {
            let _ = ty;
            None
        }
    }
}

/// A kernel that dots one weight row of type `ty` with four activation rows at once, unpacking
/// each weight block once for all four (the prompt path's main cost otherwise), or `None` where
/// none exists for `isa` (then call [`select`]'s kernel per row).
///
/// Each of the four results is bit-identical to what `select(ty, isa)` returns for that row,
/// so callers may mix the two freely and results never depend on how tokens are grouped.
/// `isa` must be available on this CPU, as for [`select`].
pub fn select4(ty: GgmlType, isa: Isa) -> Option<VecDot4Fn> {
    match isa {
        // Only where `select` returns the AVX-512 kernel of this very format: the x4 table
        // mirrors that table's choices (and is `None` for F16 / BF16 and the K-quants without one).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => match x86_legacy::avx512(ty) {
            Some(_) => x86_legacy::avx512_x4(ty),
            None => x86_kquants::avx512_x4(ty),
        },
        // The K-quants; the 32-block formats are repacked on AVX2 (`kernels::packed`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86_kquants::avx2_x4(ty),
        _ => {
            let _ = ty;
            None
        }
    }
}

/// Which implementation [`select`] returns for reports: the instruction set, or "scalar".
pub fn implementation(ty: GgmlType, isa: Isa) -> &'static str {
    let mut cur = Some(isa);
    while let Some(i) = cur {
        if simd_exact(ty, i).is_some() {
            return i.name();
        }
        cur = fallback(i);
    }
    "scalar"
}

fn fallback(isa: Isa) -> Option<Isa> {
    match isa {
        Isa::Avx512 => Some(Isa::Avx2),
        _ => None,
    }
}

fn simd(ty: GgmlType, isa: Isa) -> Option<VecDotFn> {
    let mut cur = Some(isa);
    while let Some(i) = cur {
        if let Some(f) = simd_exact(ty, i) {
            return Some(f);
        }
        cur = fallback(i);
    }
    None
}

/// The kernel written for exactly `isa`, if any.
fn simd_exact(ty: GgmlType, isa: Isa) -> Option<VecDotFn> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86_legacy::avx2(ty).or_else(|| x86_kquants::avx2(ty)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86_legacy::avx512(ty).or_else(|| x86_kquants::avx512(ty)),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon_legacy::neon(ty).or_else(|| neon_kquants::neon(ty)),
        _ => {
            let _ = ty;
            None
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1), shared with the matmul tests.
    pub(crate) fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn quantize(ty: GgmlType, v: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; v.len() / ty.block_size() * ty.block_bytes()];
        (formats::traits(ty).quantize.expect("quantizable"))(v, &mut out);
        out
    }

    /// `prepare_f32` writes what quantizing to the `vec_dot_type` and `prepare` write, for
    /// ordinary values and for those the f16 rounding treats specially (ties, overflow to
    /// infinity, subnormals, NaN with a payload), in whole groups of eight and in a tail.
    #[test]
    fn vec_dot_prepare_f32_matches_quantize_then_prepare() {
        let mut seen = 0;
        let special = [
            1.0 + 1.0 / 2048.0, // a tie: rounds to even
            1.0 + 3.0 / 2048.0, // a tie: rounds up
            65504.0,
            65520.0, // rounds to infinity
            -1e9,
            f32::INFINITY,
            f32::from_bits(0x7fc0_1234), // NaN with a payload
            f32::from_bits(0xffa0_0001), // negative signalling NaN
            1e-6,                        // an f16 subnormal
            -3e-8,                       // rounds to -0
            0.0,
            -0.0,
        ];
        for isa in Isa::available() {
            for ty in GgmlType::ALL {
                let Some(p) = select4_prepared(ty, isa) else { continue };
                let Some(prepare_f32) = p.prepare_f32 else { continue };
                seen += 1;
                let vdt = formats::traits(ty).vec_dot_type;
                let quantize_act = crate::kernels::matmul_q::activation_quantizer_with(isa, vdt);
                for (seed, n) in [(1u64, 576usize), (2, 1536), (3, 40), (4, 8)] {
                    let mut x = values(seed, n);
                    for (i, v) in special.iter().enumerate() {
                        // Some groups of eight with one special value, some without.
                        x[(i * 13 + seed as usize) % n] = *v;
                    }
                    let mut q = vec![0u8; vdt.row_bytes(n as u64).unwrap() as usize];
                    quantize_act(&x, &mut q);
                    let (mut want, mut got) = (vec![0u8; p.row_bytes(n)], vec![0xAAu8; p.row_bytes(n)]);
                    (p.prepare)(n, &q, &mut want);
                    prepare_f32(&x, &mut got);
                    assert!(want == got, "{ty} {} n={n}", isa.name());
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c") && is_x86_feature_detected!("fma") {
            assert!(seen > 0, "F16 has a fused preparation on this CPU");
        }
    }

    /// Every prepared kernel gives, for every weight row of a run and every token, the bits of
    /// `select`'s one-row kernel on the raw rows (F16 here on AVX2, and on AVX-512 on Zen 4).
    #[test]
    fn vec_dot_prepared_matches_select_bits() {
        let mut seen = 0;
        for isa in Isa::available() {
            for ty in GgmlType::ALL {
                let Some(p) = select4_prepared(ty, isa) else { continue };
                seen += 1;
                let one = select(ty, isa).expect("a one-row kernel");
                let vdt = formats::traits(ty).vec_dot_type;
                let bs = ty.block_size().max(vdt.block_size());
                for (seed, n) in
                    [(1u64, 32usize), (2, 64), (3, 96), (4, 160), (5, 576), (6, 1536), (7, 8), (8, 40), (9, 100)]
                {
                    if n % bs != 0 {
                        continue;
                    }
                    // Row counts around the multi-row kernels' tiles (F16 takes three rows per
                    // pass): a whole tile, a partial last one, a single row.
                    let rows = [3u64, 4, 5, 1][seed as usize % 4];
                    let w: Vec<u8> = (0..rows).flat_map(|r| quantize(ty, &values(seed * 31 + r, n))).collect();
                    let acts: Vec<Vec<u8>> = (0..4)
                        .map(|k| quantize(vdt, &values(seed * 97 + k, n).iter().map(|v| v * 4.0).collect::<Vec<_>>()))
                        .collect();
                    let prep: Vec<Vec<u8>> = acts
                        .iter()
                        .map(|a| {
                            let mut o = vec![0u8; p.row_bytes(n)];
                            (p.prepare)(n, a, &mut o);
                            o
                        })
                        .collect();
                    let wr = w.len() / rows as usize;
                    if let Some(dot8) = p.dot8 {
                        let mut got8 = vec![[f32::NAN; 8]; rows as usize];
                        let ys: [&[u8]; 8] = std::array::from_fn(|k| prep[k % 4].as_slice());
                        dot8(n, &w, ys, &mut got8);
                        for r in 0..rows as usize {
                            for k in 0..8 {
                                let want = one(n, &w[r * wr..(r + 1) * wr], &acts[k % 4]);
                                assert_eq!(
                                    got8[r][k].to_bits(),
                                    want.to_bits(),
                                    "{ty} {} n={n} row {r} token {k} (x8)",
                                    isa.name()
                                );
                            }
                        }
                    }
                    let mut got4 = vec![[f32::NAN; 4]; rows as usize];
                    (p.dot4)(n, &w, [&prep[0], &prep[1], &prep[2], &prep[3]], &mut got4);
                    for k in 0..4 {
                        let mut got1 = vec![f32::NAN; rows as usize];
                        (p.dot1)(n, &w, &prep[k], &mut got1);
                        for r in 0..rows as usize {
                            let want = one(n, &w[r * wr..(r + 1) * wr], &acts[k]);
                            assert_eq!(
                                got4[r][k].to_bits(),
                                want.to_bits(),
                                "{ty} {} n={n} row {r} token {k}",
                                isa.name()
                            );
                            assert_eq!(
                                got1[r].to_bits(),
                                want.to_bits(),
                                "{ty} {} n={n} row {r} token {k} (x1)",
                                isa.name()
                            );
                        }
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx2.is_available() {
            assert!(seen > 0, "no prepared kernel on an AVX2 machine");
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = seen; // no prepared kernels off x86 yet
    }

    /// `select4` exists exactly for the 32-block legacy formats on AVX-512 and for the K-quants
    /// this model uses on AVX2 and AVX-512, and gives, for each of its four rows, the bits of
    /// `select`'s kernel on the same instruction set.
    #[test]
    fn vec_dot_select4_matches_select_bits() {
        use GgmlType as T;
        let legacy = [T::Q4_0, T::Q4_1, T::Q5_0, T::Q5_1, T::Q8_0, T::IQ4_NL];
        for isa in Isa::available() {
            for ty in GgmlType::ALL {
                let four = select4(ty, isa);
                let kquant = [T::Q3_K, T::Q4_K, T::Q6_K, T::IQ4_XS].contains(&ty) && select(ty, isa).is_some();
                let want_some = cfg!(target_arch = "x86_64")
                    && ((isa == Isa::Avx512 && (legacy.contains(&ty) || kquant))
                        || (isa == Isa::Avx2 && [T::Q3_K, T::Q4_K, T::Q5_K, T::Q6_K, T::IQ4_XS].contains(&ty)));
                assert_eq!(four.is_some(), want_some, "{ty} on {}", isa.name());
                let Some(four) = four else { continue };
                let one = select(ty, isa).expect("a one-row kernel");
                let vdt = formats::traits(ty).vec_dot_type;
                for (seed, nb) in [(1u64, 1usize), (2, 2), (3, 3), (4, 5), (5, 18), (6, 48)] {
                    let n = ty.block_size().max(vdt.block_size()) * nb;
                    let x = quantize(ty, &values(seed, n));
                    let rows: Vec<Vec<u8>> = (0..4)
                        .map(|k| quantize(vdt, &values(seed * 97 + k, n).iter().map(|v| v * 4.0).collect::<Vec<_>>()))
                        .collect();
                    let ys = [rows[0].as_slice(), rows[1].as_slice(), rows[2].as_slice(), rows[3].as_slice()];
                    let mut got = [f32::NAN; 4];
                    four(n, &x, ys, &mut got);
                    for k in 0..4 {
                        let want = one(n, &x, ys[k]);
                        assert_eq!(got[k].to_bits(), want.to_bits(), "{ty} {} blocks={nb} row {k}", isa.name());
                    }
                }
            }
        }
    }
}
