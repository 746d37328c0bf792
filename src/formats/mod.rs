//! Block formats: one file per family, each with `dequantize_row_*` (and later `quantize_row_*`
//! and `vec_dot_*`). [`dequantize`] dispatches once per tensor, never once per block.

use crate::gguf::GgmlType;

/// Dequantizes `data`, a whole number of `ty` blocks, into `out` (one f32 per weight).
///
/// Returns an error message when the lengths disagree. The result equals ggml's
/// `dequantize_row_*` bit for bit.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), String> {
    let _ = (ty, data, out);
    Err("not yet".into())
}
