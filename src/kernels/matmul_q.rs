//! Products with block-quantized weights, `y = x · Wᵀ`, computed on the blocks directly as
//! llama.cpp does: each activation row is quantized once to the format's `vec_dot_type`
//! (Q8_0, Q8_1 or Q8_K), then every output is an integer-domain dot product of two rows of
//! blocks. No weight matrix is ever expanded to f32.

use rayon::prelude::*;

use super::isa::{self, Isa};
use super::vec_dot;
use crate::formats;
use crate::gguf::GgmlType;

/// Tokens per parallel task (the activation rows stay in L1/L2 while weight rows stream).
const TOKEN_BLOCK: usize = 32;
/// Weight rows per inner block: each row's blocks are reused across the token block.
const ROW_BLOCK: usize = 16;

/// `y (n_tokens, rows) = x (n_tokens, cols) · Wᵀ` for weights `w` of type `ty`, `rows` rows of
/// `cols` weights. `scratch` holds the quantized activations between calls (grown, never shrunk).
#[allow(clippy::too_many_arguments)]
pub fn matmul(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], y: &mut [f32], n_tokens: usize, scratch: &mut Vec<u8>) {
    matmul_with(isa::active(), ty, w, rows, cols, x, y, n_tokens, scratch)
}

/// [`matmul`] on a chosen instruction set.
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    n_tokens: usize,
    scratch: &mut Vec<u8>,
) {
    let traits = formats::traits(ty);
    let vdt = traits.vec_dot_type;
    let quantize_act = activation_quantizer(vdt);
    let dot = vec_dot::select(ty, isa).expect("matrices are only built from types with a vec_dot");
    let w_row = ty.row_bytes(cols as u64).expect("matrix rows are whole blocks") as usize;
    let x_row = vdt.row_bytes(cols as u64).expect("activation rows are whole blocks") as usize;
    assert_eq!(w.len(), rows * w_row, "weights have the wrong length");
    assert_eq!(x.len(), n_tokens * cols, "x has the wrong length");
    assert_eq!(y.len(), n_tokens * rows, "y has the wrong length");

    scratch.resize(n_tokens * x_row, 0);
    let xq = &mut scratch[..n_tokens * x_row];
    xq.par_chunks_mut(x_row).zip(x.par_chunks(cols)).for_each(|(q, xr)| quantize_act(xr, q));
    let xq = &scratch[..n_tokens * x_row];

    if n_tokens >= TOKEN_BLOCK / 2 {
        y.par_chunks_mut(TOKEN_BLOCK * rows).enumerate().for_each(|(b, yb)| {
            let t0 = b * TOKEN_BLOCK;
            let nt = yb.len() / rows;
            for r0 in (0..rows).step_by(ROW_BLOCK) {
                for r in r0..(r0 + ROW_BLOCK).min(rows) {
                    let wr = &w[r * w_row..(r + 1) * w_row];
                    for t in 0..nt {
                        yb[t * rows + r] = dot(cols, wr, &xq[(t0 + t) * x_row..(t0 + t + 1) * x_row]);
                    }
                }
            }
        });
    } else {
        // Generation: few tokens, so split the weight rows across threads. Each task writes
        // its own columns of y, gathered per task to keep writes disjoint and safe.
        const GEN_ROWS: usize = 64;
        let n_tasks = rows.div_ceil(GEN_ROWS);
        let parts: Vec<Vec<f32>> = (0..n_tasks)
            .into_par_iter()
            .map(|task| {
                let r0 = task * GEN_ROWS;
                let r1 = (r0 + GEN_ROWS).min(rows);
                let mut part = Vec::with_capacity((r1 - r0) * n_tokens);
                for t in 0..n_tokens {
                    let xr = &xq[t * x_row..(t + 1) * x_row];
                    for r in r0..r1 {
                        part.push(dot(cols, &w[r * w_row..(r + 1) * w_row], xr));
                    }
                }
                part
            })
            .collect();
        for (task, part) in parts.iter().enumerate() {
            let r0 = task * GEN_ROWS;
            let width = part.len() / n_tokens;
            for t in 0..n_tokens {
                y[t * rows + r0..t * rows + r0 + width].copy_from_slice(&part[t * width..(t + 1) * width]);
            }
        }
    }
}

/// The activation quantizer for `vdt`, as llama.cpp's CPU backend runs it. For Q8_0 and Q8_1
/// that is not the reference `quantize_row_*_ref` (which weights use) but ggml-cpu's runtime
/// version: the inverse scale is `127/amax` rather than `1/(amax/127)`, and values round half
/// to even rather than away from zero. The rare values where the two disagree change the
/// perplexity in the fourth digit, so evalq follows the runtime version.
pub fn activation_quantizer(vdt: GgmlType) -> formats::QuantizeRowFn {
    match vdt {
        GgmlType::Q8_0 => quantize_row_q8_0_runtime,
        GgmlType::Q8_1 => quantize_row_q8_1_runtime,
        other => formats::traits(other).quantize.expect("every vec_dot_type quantizes"),
    }
}

/// One 32-block of activations: the f16 scale, the quants and their sum.
fn q8_runtime_block(x: &[f32], q: &mut [i8; 32]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (qi, &v) in q.iter_mut().zip(x) {
        // round_ties_even is `_mm256_round_ps(_MM_ROUND_NEAREST)`; results lie in [-127, 127].
        let r = (v * id).round_ties_even() as i32;
        *qi = r as i8;
        sum += r;
    }
    (d, sum)
}

fn quantize_row_q8_0_runtime(src: &[f32], dst: &mut [u8]) {
    let mut q = [0i8; 32];
    for (x, out) in src.chunks_exact(32).zip(dst.chunks_exact_mut(34)) {
        let (d, _) = q8_runtime_block(x, &mut q);
        out[..2].copy_from_slice(&formats::float::fp32_to_fp16(d).to_le_bytes());
        for (o, &v) in out[2..].iter_mut().zip(&q) {
            *o = v as u8;
        }
    }
}

fn quantize_row_q8_1_runtime(src: &[f32], dst: &mut [u8]) {
    let mut q = [0i8; 32];
    for (x, out) in src.chunks_exact(32).zip(dst.chunks_exact_mut(36)) {
        let (d, sum) = q8_runtime_block(x, &mut q);
        out[..2].copy_from_slice(&formats::float::fp32_to_fp16(d).to_le_bytes());
        out[2..4].copy_from_slice(&formats::float::fp32_to_fp16(d * sum as f32).to_le_bytes());
        for (o, &v) in out[4..].iter_mut().zip(&q) {
            *o = v as u8;
        }
    }
}
