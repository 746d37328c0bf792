//! Placeholder table: no kernels yet, so `select` falls back to the scalar reference.

use crate::formats::VecDotFn;
use crate::gguf::GgmlType;

pub(super) fn neon(_ty: GgmlType) -> Option<VecDotFn> {
    None
}
