//! Placeholder table: no kernels yet, so `select` falls back to the scalar reference.

use crate::formats::VecDotFn;
use crate::gguf::GgmlType;

pub(super) fn avx2(_ty: GgmlType) -> Option<VecDotFn> {
    None
}

pub(super) fn avx512(_ty: GgmlType) -> Option<VecDotFn> {
    None
}
