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

#[cfg(target_arch = "x86_64")]
mod x86_legacy;
#[cfg(target_arch = "x86_64")]
mod x86_kquants;
#[cfg(target_arch = "aarch64")]
mod neon_legacy;
#[cfg(target_arch = "aarch64")]
mod neon_kquants;

/// The fastest kernel for weights of type `ty` on `isa`, falling back to slower instruction sets
/// and finally to the scalar reference. `None` for types without a dot product (Q8_1, Q8_K).
///
/// `isa` must be available on this CPU (`Isa::is_available`); the SIMD kernels returned rely
/// on it.
pub fn select(ty: GgmlType, isa: Isa) -> Option<VecDotFn> {
    simd(ty, isa).or(formats::traits(ty).vec_dot)
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
