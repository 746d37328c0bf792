//! Selection of the dot-product kernel for a weight format and an instruction set. The scalar
//! reference of every format lives with the format (`formats::*::vec_dot_*`); SIMD versions
//! live here, per instruction set, and are tested against it.

use super::isa::Isa;
use crate::formats::{self, VecDotFn};
use crate::gguf::GgmlType;

/// The dot-product kernel for weights of type `ty` on `isa`: the SIMD version where one exists,
/// otherwise the scalar reference. `None` for types that have no dot product (Q8_1, Q8_K).
pub fn select(ty: GgmlType, isa: Isa) -> Option<VecDotFn> {
    let _ = isa;
    formats::traits(ty).vec_dot
}

/// Which implementation [`select`] returns, for reports ("scalar" or the instruction set).
pub fn implementation(ty: GgmlType, isa: Isa) -> &'static str {
    let _ = (ty, isa);
    "scalar"
}
