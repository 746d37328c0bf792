//! Products with block-quantized weights, `y = x · Wᵀ`, computed on the blocks directly as
//! llama.cpp does: each activation row is quantized once to the format's `vec_dot_type`
//! (Q8_0, Q8_1 or Q8_K), then every output is an integer-domain dot product of two rows of
//! blocks. No weight matrix is ever expanded to f32.
//!
//! With many tokens (a prompt), where the instruction set has them, one kernel call dots a
//! weight row with four tokens' activation rows, unpacking its blocks once for the four
//! ([`vec_dot::select4`]); its results are the one-row kernel's bits, so every output is the
//! same whatever the grouping of tokens and the number of threads.

use rayon::prelude::*;

use super::isa::{self, Isa};
use super::matmul_f32;
use super::packed;
use super::vec_dot::{self, Prepared4, VecDot4Fn};
use crate::formats::{self, VecDotFn};
use crate::gguf::GgmlType;
use crate::par;

/// Tokens per parallel task of the prompt path: their quantized activation rows stay in L2
/// while the weight rows stream past. A multiple of 4, so that only a batch's last block can
/// have tokens left over for the one-row kernel.
const TOKEN_BLOCK: usize = 32;
/// Bytes of weight rows dotted with one group of 4 tokens before moving to the next group:
/// the rows stay in the 32 KiB L1 data cache together with the 4 activation rows (at most
/// 4 × 1.7 KiB for this model's widest rows), and are read from farther away only once per
/// token block.
const WEIGHT_BLOCK_BYTES: usize = 16 * 1024;
/// Weight rows per call of a prepared kernel (its results wait on the stack to be stored).
const PREPARED_ROWS: usize = 64;
/// Task boundaries of the generation path fall on multiples of this many rows.
pub const GEN_ALIGN: usize = 16;
/// Matrices with at least this many rows get more, smaller tasks per thread in generation.
const GEN_MANY_ROWS: usize = 4096;

/// `y (n_tokens, rows) = x (n_tokens, cols) · Wᵀ` for weights `w` of type `ty`, `rows` rows of
/// `cols` weights. `scratch` holds the quantized activations between calls (grown, never shrunk).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    n_tokens: usize,
    scratch: &mut Vec<u8>,
) {
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
    let quantize_act = activation_quantizer_with(isa, vdt);
    let dot = vec_dot::select(ty, isa).expect("matrices are only built from types with a vec_dot");
    let w_row = ty.row_bytes(cols as u64).expect("matrix rows are whole blocks") as usize;
    let x_row = vdt.row_bytes(cols as u64).expect("activation rows are whole blocks") as usize;
    assert_eq!(w.len(), rows * w_row, "weights have the wrong length");
    assert_eq!(x.len(), n_tokens * cols, "x has the wrong length");
    assert_eq!(y.len(), n_tokens * rows, "y has the wrong length");
    let prompt = n_tokens >= TOKEN_BLOCK / 2;
    // Both paths prefer the kernels on prepared activation rows where there are some.
    let prepared = vec_dot::select4_prepared(ty, isa);
    let p_row = prepared.map_or(0, |p| p.row_bytes(cols));
    let k = Kernels { dot, dot4: vec_dot::select4(ty, isa), prepared, cols, w_row, x_row, p_row };

    scratch.resize(n_tokens * (x_row + p_row), 0);
    let (xq, xp) = scratch.split_at_mut(n_tokens * x_row);
    // With a fused preparation the quantized rows are never written: the prepared kernels are
    // the only readers.
    if !prompt {
        // A few rows: a parallel call would cost more than it shares out.
        k.prepare_rows(quantize_act, x, xq, xp);
    } else if let Some(prepare_f32) = prepared.and_then(|p| p.prepare_f32) {
        par::for_each_row(xp, p_row, |t, o| prepare_f32(&x[t * cols..(t + 1) * cols], o));
    } else {
        par::for_each_row(xq, x_row, |t, q| quantize_act(&x[t * cols..(t + 1) * cols], q));
        if let Some(p) = prepared {
            let xq = &*xq;
            par::for_each_row(xp, p_row, |t, o| (p.prepare)(cols, &xq[t * x_row..(t + 1) * x_row], o));
        }
    }
    let (xq, xp) = (&*xq, &*xp);

    // Every output is computed by exactly one kernel call whose inputs (one weight row, one or
    // four activation rows) do not depend on how the work is split, and the four-row kernel
    // gives the one-row kernel's bits: results do not depend on the thread count.
    if prompt {
        // Prompt: split the tokens across threads; each task streams all weight rows.
        let tile = prepared.map_or(1, |p| p.tile_rows);
        // F16's prepared activations (f32) are twice its weight bytes, so its rows are not
        // blocked: each call's four activation rows then stay in L1 while the weights, the
        // smaller stream, come from L2 (576x1536 and 1536x576 products at 512 tokens: 3-5%
        // faster, alternated in one process). Measured on AVX2 only, so only for F16.
        let f16_prepared = ty == GgmlType::F16 && prepared.is_some();
        let row_block = if f16_prepared { rows } else { (WEIGHT_BLOCK_BYTES / w_row / tile * tile).max(tile) };
        par::for_each_chunk(y, TOKEN_BLOCK * rows, |b, yb| {
            let t0 = b * TOKEN_BLOCK;
            let nt = yb.len() / rows;
            let xb = &xq[t0 * x_row..(t0 + nt) * x_row];
            let pb = &xp[t0 * p_row..(t0 + nt) * p_row];
            // Zeroed once per task, not once per block of rows (that memset was 1.3% of an
            // F16 pp512).
            let mut outs = Outs::new();
            for r0 in (0..rows).step_by(row_block) {
                let r1 = (r0 + row_block).min(rows);
                // A `move` closure: `rows` and `r0` are then values, not references that the
                // compiler reloaded after every store into `yb` (5% of a Q4_0 pp512).
                let yb = &mut *yb;
                k.products_into(&mut outs, &w[r0 * w_row..r1 * w_row], xb, pb, move |t, r, v| yb[t * rows + r0 + r] = v);
            }
        });
    } else if n_tokens == 1 {
        // Generation of one token: y is one row, so each task writes its own contiguous rows.
        let bounds = row_split(rows, rayon::current_num_threads());
        let mut parts = Vec::with_capacity(bounds.len() - 1);
        let mut rest = &mut y[..];
        for r in bounds.windows(2) {
            let (part, tail) = rest.split_at_mut(r[1] - r[0]);
            parts.push((r[0], part));
            rest = tail;
        }
        parts.into_par_iter().for_each(|(r0, part)| {
            let r1 = r0 + part.len();
            k.products(&w[r0 * w_row..r1 * w_row], xq, xp, |_, r, v| part[r] = v);
        });
    } else {
        // Generation: few tokens, so split the weight rows across threads. Each task writes
        // its own columns of y, gathered per task to keep writes disjoint and safe.
        let bounds = row_split(rows, rayon::current_num_threads());
        let parts: Vec<Vec<f32>> = bounds
            .par_windows(2)
            .map(|r| {
                let width = r[1] - r[0];
                let mut part = vec![0f32; width * n_tokens];
                k.products(&w[r[0] * w_row..r[1] * w_row], xq, xp, |t, r, v| part[t * width + r] = v);
                part
            })
            .collect();
        for (r, part) in bounds.windows(2).zip(&parts) {
            let width = r[1] - r[0];
            for t in 0..n_tokens {
                y[t * rows + r[0]..t * rows + r[1]].copy_from_slice(&part[t * width..(t + 1) * width]);
            }
        }
    }
}

/// `y (n_tokens, rows) = x (n_tokens, cols) · Wᵀ` for weights packed by [`packed::pack`]
/// (a 32-block format or IQ4_XS, `rows` a multiple of 16) on `isa`, which must have packed kernels
/// ([`packed::packable`]). Every output is the format's scalar `vec_dot` bit for bit, so
/// neither the grouping of tokens nor the thread count changes a result.
#[allow(clippy::too_many_arguments)]
pub fn matmul_packed(
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
    assert!(packed::packable(ty, rows, isa), "{ty} with {rows} rows has no packed kernel on {}", isa.name());
    let act = packed::activation_type(ty);
    let quantize_act = activation_quantizer_with(isa, act);
    let ks = PackedKernels {
        k1: packed::kernel(ty, isa, 1).expect("packable"),
        k4: packed::kernel(ty, isa, 4),
        k8: packed::kernel(ty, isa, 8),
    };
    let nb = packed::blocks(ty, cols);
    let x_row = act.row_bytes(cols as u64).expect("activation rows are whole blocks") as usize;
    let p_row = packed::prepared_row_bytes(ty, cols);
    let ng = rows / packed::ROWS;
    assert_eq!(w.len(), ng * nb * packed::ROWS * (ty.block_bytes()), "packed weights have the wrong length");
    assert_eq!(x.len(), n_tokens * cols, "x has the wrong length");
    assert_eq!(y.len(), n_tokens * rows, "y has the wrong length");
    let group_bytes = w.len() / ng;
    let prompt = n_tokens >= TOKEN_BLOCK / 2;

    scratch.resize(n_tokens * (x_row + p_row), 0);
    let (xq, xp) = scratch.split_at_mut(n_tokens * x_row);
    let prep = |(o, (q, xr)): (&mut [u8], (&mut [u8], &[f32]))| {
        quantize_act(xr, q);
        packed::prepare(ty, cols, q, o);
    };
    if prompt {
        // One task per token: its quantized row goes only to its own prepared row.
        let xq = SendPtr(xq.as_mut_ptr());
        par::for_each_row(xp, p_row, |t, o| {
            // SAFETY: row `t` of `xq` (n_tokens rows of x_row bytes) is touched by task `t` only.
            let q = unsafe { std::slice::from_raw_parts_mut(xq.get().add(t * x_row), x_row) };
            prep((o, (q, &x[t * cols..(t + 1) * cols])));
        });
    } else {
        xp.chunks_mut(p_row).zip(xq.chunks_mut(x_row).zip(x.chunks(cols))).for_each(prep);
    }
    let xp = &*xp;

    if prompt {
        // Split the tokens across threads; each task streams all weight groups, a few at a
        // time against every 8 of its tokens, so those groups stay in L1.
        let gblock = (WEIGHT_BLOCK_BYTES / group_bytes).max(1);
        par::for_each_chunk(y, TOKEN_BLOCK * rows, |b, yb| {
            let t0 = b * TOKEN_BLOCK;
            let nt = yb.len() / rows;
            let pb = &xp[t0 * p_row..(t0 + nt) * p_row];
            for g0 in (0..ng).step_by(gblock) {
                let g1 = (g0 + gblock).min(ng);
                // SAFETY: `w` holds `ng` groups and `pb` `nt` prepared rows; the outputs of
                // groups g0..g1 for the `nt` tokens lie inside `yb`, which this task owns.
                unsafe {
                    ks.run(nb, g1 - g0, w[g0 * group_bytes..].as_ptr(), pb.as_ptr(), p_row, nt, yb.as_mut_ptr().add(g0 * packed::ROWS), rows)
                };
            }
        });
    } else {
        // Generation: split the rows (whole groups) across threads; each task writes its own
        // rows of every token.
        let bounds = row_split(rows, rayon::current_num_threads());
        let yp = SendPtr(y.as_mut_ptr());
        bounds.par_windows(2).for_each(|r| {
            let (g0, g1) = (r[0] / packed::ROWS, r[1] / packed::ROWS);
            // SAFETY: the bounds are multiples of 16 (GEN_ALIGN) ending at `rows`, so tasks
            // own disjoint whole groups; every output they write, `t * rows + r` for their
            // rows `r`, lies inside `y`, which outlives the parallel loop.
            unsafe {
                ks.run(nb, g1 - g0, w[g0 * group_bytes..].as_ptr(), xp.as_ptr(), p_row, n_tokens, yp.get().add(r[0]), rows)
            };
        });
    }
}

/// The one-token product in pieces, for callers that share its rows among threads of their own
/// (the forward pass's generation team): [`OneToken::prepare`] turns the activation row into
/// the bytes the kernels read (each thread does it once, privately), and [`OneToken::rows`]
/// computes any run of rows starting at a multiple of [`GEN_ALIGN`]. Every output is the
/// kernel call [`matmul`] or [`matmul_packed`] makes for one token, so the bits are theirs
/// whatever the split.
#[derive(Clone, Copy)]
pub struct OneToken {
    kind: OneKind,
    cols: usize,
    /// Bytes of the prepared activation ([`OneToken::act_bytes`]).
    act_bytes: usize,
}

#[derive(Clone, Copy)]
enum OneKind {
    /// f32 weights: the activation is used as it is.
    F32 { isa: Isa },
    /// Row-major blocks: the row quantized to `vdt`, then (with `k.prepared`) its prepared form.
    Blocks { ty: GgmlType, vdt: GgmlType, quantize: formats::QuantizeRowFn, k: Kernels },
    /// Packed 16-row groups: the prepared row, then the quantized one it came from. `group`
    /// is the bytes of one 16-row group.
    /// `nb` is the blocks per row.
    Packed { ty: GgmlType, quantize: formats::QuantizeRowFn, k1: packed::KernelFn, p_row: usize, group: usize, nb: usize },
}

/// Which activation bytes a [`OneToken`] reads: products with the same key (and the same
/// activation row) can share one prepared row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ActKey {
    F32,
    /// Quantized to this `vec_dot_type`, not prepared further.
    Quantized(GgmlType),
    /// Quantized and prepared for the row-major kernels of this weight type.
    Prepared(GgmlType),
    /// Quantized and prepared for the packed kernels of this weight type.
    Packed(GgmlType),
}

impl OneToken {
    /// f32 weights of `cols` columns.
    pub fn f32(isa: Isa, cols: usize) -> OneToken {
        OneToken { kind: OneKind::F32 { isa }, cols, act_bytes: 0 }
    }

    /// Row-major weights of `ty` (a type with a `vec_dot`), `cols` columns, on `isa`.
    pub fn blocks(isa: Isa, ty: GgmlType, cols: usize) -> OneToken {
        let vdt = formats::traits(ty).vec_dot_type;
        let dot = vec_dot::select(ty, isa).expect("matrices are only built from types with a vec_dot");
        let w_row = ty.row_bytes(cols as u64).expect("matrix rows are whole blocks") as usize;
        let x_row = vdt.row_bytes(cols as u64).expect("activation rows are whole blocks") as usize;
        let prepared = vec_dot::select4_prepared(ty, isa);
        let p_row = prepared.map_or(0, |p| p.row_bytes(cols));
        // `dot4` is never used for one token.
        let k = Kernels { dot, dot4: None, prepared, cols, w_row, x_row, p_row };
        let kind = OneKind::Blocks { ty, vdt, quantize: activation_quantizer_with(isa, vdt), k };
        OneToken { kind, cols, act_bytes: x_row + p_row }
    }

    /// Weights of `ty` packed by [`packed::pack`], which `isa` has packed kernels for.
    pub fn packed(isa: Isa, ty: GgmlType, cols: usize) -> OneToken {
        let act = packed::activation_type(ty);
        let x_row = act.row_bytes(cols as u64).expect("activation rows are whole blocks") as usize;
        let p_row = packed::prepared_row_bytes(ty, cols);
        let k1 = packed::kernel(ty, isa, 1).expect("packed weights only exist where the kernels do");
        let nb = packed::blocks(ty, cols);
        let group = nb * packed::ROWS * ty.block_bytes();
        let kind = OneKind::Packed { ty, quantize: activation_quantizer_with(isa, act), k1, p_row, group, nb };
        OneToken { kind, cols, act_bytes: p_row + x_row }
    }

    /// What [`OneToken::prepare`] writes.
    pub fn key(&self) -> ActKey {
        match self.kind {
            OneKind::F32 { .. } => ActKey::F32,
            OneKind::Blocks { vdt, k, .. } if k.prepared.is_none() => ActKey::Quantized(vdt),
            OneKind::Blocks { ty, .. } => ActKey::Prepared(ty),
            OneKind::Packed { ty, .. } => ActKey::Packed(ty),
        }
    }

    /// Bytes [`OneToken::prepare`] needs.
    pub fn act_bytes(&self) -> usize {
        self.act_bytes
    }

    /// Writes the bytes the kernels read for the activation row `x` into `act`
    /// ([`OneToken::act_bytes`] long).
    pub fn prepare(&self, x: &[f32], act: &mut [u8]) {
        assert!(x.len() == self.cols && act.len() == self.act_bytes, "one-token activation lengths");
        match self.kind {
            OneKind::F32 { .. } => {}
            OneKind::Blocks { quantize, k, .. } => {
                let (q, p) = act.split_at_mut(k.x_row);
                k.prepare_rows(quantize, x, q, p);
            }
            OneKind::Packed { ty, quantize, p_row, .. } => {
                let (p, q) = act.split_at_mut(p_row);
                quantize(x, q);
                packed::prepare(ty, self.cols, q, p);
            }
        }
    }

    /// `y[i]` = row `r0 + i` of the weights · `x`, for `y.len()` rows: `w` holds the matrix's
    /// blocks (or packed groups) and `wf` its f32 values, whichever it has (the other empty),
    /// `x` is the activation row and `act` its bytes from [`OneToken::prepare`]. `r0` must be
    /// a multiple of [`GEN_ALIGN`], and the run must end at one or at the last row.
    pub fn rows(&self, w: &[u8], wf: &[f32], x: &[f32], act: &[u8], r0: usize, y: &mut [f32]) {
        let r1 = r0 + y.len();
        assert!(r0.is_multiple_of(GEN_ALIGN) && act.len() == self.act_bytes && x.len() == self.cols, "one-token run");
        match self.kind {
            OneKind::F32 { isa } => matmul_f32::one_token_rows(isa, x, &wf[r0 * self.cols..r1 * self.cols], y),
            OneKind::Blocks { k, .. } => {
                let (xq, xp) = act.split_at(k.x_row);
                k.products(&w[r0 * k.w_row..r1 * k.w_row], xq, xp, |_, r, v| y[r] = v);
            }
            OneKind::Packed { k1, p_row, group, nb, .. } => {
                assert!(r1.is_multiple_of(packed::ROWS) && r1 / packed::ROWS * group <= w.len(), "packed one-token run");
                let (g0, g1) = (r0 / packed::ROWS, r1 / packed::ROWS);
                // SAFETY: `w` holds groups g0..g1 (checked above), `act` starts with one
                // prepared row of `nb` blocks, and the kernel writes 16 outputs per group,
                // `y.len()` in all.
                unsafe { k1(nb, g1 - g0, w[g0 * group..].as_ptr(), act.as_ptr(), p_row, y.as_mut_ptr(), 0) };
            }
        }
    }
}

/// A pointer to a buffer that parallel tasks write at disjoint positions.
struct SendPtr<T>(*mut T);
// SAFETY: only used where each task writes positions no other task touches (see the callers).
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// The packed kernels of one matrix, by tokens per call.
struct PackedKernels {
    k1: packed::KernelFn,
    k4: Option<packed::KernelFn>,
    k8: Option<packed::KernelFn>,
}

impl PackedKernels {
    /// `nt` tokens against `ng` groups, eight, then four, then one token per call.
    ///
    /// # Safety
    /// As for [`packed::KernelFn`] with `nt` activation rows.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn run(&self, nb: usize, ng: usize, w: *const u8, a: *const u8, a_stride: usize, nt: usize, y: *mut f32, y_stride: usize) {
        let mut t = 0;
        for (size, k) in [(8, self.k8), (4, self.k4)] {
            if let Some(k) = k {
                while t + size <= nt {
                    k(nb, ng, w, a.add(t * a_stride), a_stride, y.add(t * y_stride), y_stride);
                    t += size;
                }
            }
        }
        for t in t..nt {
            (self.k1)(nb, ng, w, a.add(t * a_stride), a_stride, y.add(t * y_stride), y_stride);
        }
    }
}

/// Row boundaries `0 = b[0] < b[1] < ... = rows` of the generation path's tasks: a few tasks
/// per thread of nearly equal size (multiples of [`GEN_ALIGN`] rows but for the last), so that
/// no thread waits at the end of a small matrix (192 rows into 64-row tasks left one of two
/// threads idle for a third of the product). A pure function of `rows` and `threads`; the
/// results never depend on it.
fn row_split(rows: usize, threads: usize) -> Vec<usize> {
    let per_thread = if rows >= GEN_MANY_ROWS { 8 } else { 4 };
    let tasks = (threads.max(1) * per_thread).min(rows.div_ceil(GEN_ALIGN)).max(1);
    let mut b: Vec<usize> = (0..tasks).map(|i| (i * rows / tasks) / GEN_ALIGN * GEN_ALIGN).collect();
    b.push(rows);
    b.dedup();
    b
}

/// The dot-product kernels of one matrix and the row sizes they work on.
#[derive(Clone, Copy)]
struct Kernels {
    dot: VecDotFn,
    /// One weight row against four activation rows, where the instruction set has one.
    dot4: Option<VecDot4Fn>,
    /// The kernels on prepared activation rows, preferred where they exist.
    prepared: Option<Prepared4>,
    cols: usize,
    /// Bytes per weight row, per quantized activation row and per prepared activation row.
    w_row: usize,
    x_row: usize,
    p_row: usize,
}

/// Where the prepared kernels leave the results of one call (up to [`PREPARED_ROWS`] rows of
/// 8, 4 or 1 tokens) before they are handed out; every call overwrites the rows it uses.
struct Outs {
    v8: [[f32; 8]; PREPARED_ROWS],
    v: [[f32; 4]; PREPARED_ROWS],
    v1: [f32; PREPARED_ROWS],
}

impl Outs {
    fn new() -> Outs {
        Outs { v8: [[0.0; 8]; PREPARED_ROWS], v: [[0.0; 4]; PREPARED_ROWS], v1: [0.0; PREPARED_ROWS] }
    }
}

impl Kernels {
    /// Writes the bytes the kernels read for the activation rows `x` (a few tokens): the
    /// quantized rows `xq`, and the prepared rows `xp` where the kernels read those. With a fused
    /// preparation (`prepare_f32`) `xq` is left alone: only the prepared kernels would read it.
    fn prepare_rows(&self, quantize: formats::QuantizeRowFn, x: &[f32], xq: &mut [u8], xp: &mut [u8]) {
        if let Some(prepare_f32) = self.prepared.and_then(|p| p.prepare_f32) {
            for (o, xr) in xp.chunks_mut(self.p_row).zip(x.chunks(self.cols)) {
                prepare_f32(xr, o);
            }
            return;
        }
        for (q, xr) in xq.chunks_mut(self.x_row).zip(x.chunks(self.cols)) {
            quantize(xr, q);
        }
        if let Some(p) = self.prepared {
            for (o, q) in xp.chunks_mut(self.p_row).zip(xq.chunks(self.x_row)) {
                (p.prepare)(self.cols, q, o);
            }
        }
    }

    /// Every product of the weight rows `w` with the quantized activation rows `xq`, handed to
    /// `out(token, row, value)` (indices relative to the slices). Tokens go in groups of four
    /// through `dot4`, each group against all rows, so each pair of weight blocks is unpacked
    /// once per four tokens; leftover tokens (or all, without `dot4`) go through `dot`.
    /// `xp` holds the same rows prepared for `self.prepared`, when that is set; its kernels
    /// then take up to [`PREPARED_ROWS`] weight rows per call.
    #[inline]
    fn products(&self, w: &[u8], xq: &[u8], xp: &[u8], out: impl FnMut(usize, usize, f32)) {
        self.products_into(&mut Outs::new(), w, xq, xp, out)
    }

    /// [`Kernels::products`] with the prepared kernels' results staged in `outs`.
    #[inline]
    fn products_into(&self, outs: &mut Outs, w: &[u8], xq: &[u8], xp: &[u8], mut out: impl FnMut(usize, usize, f32)) {
        let (rows, nt) = (w.len() / self.w_row, xq.len() / self.x_row);
        let w_at = |r: usize| &w[r * self.w_row..(r + 1) * self.w_row];
        let x_at = |t: usize| &xq[t * self.x_row..(t + 1) * self.x_row];
        let mut t0 = 0;
        if let Some(p) = self.prepared {
            let p_at = |t: usize| &xp[t * self.p_row..(t + 1) * self.p_row];
            let Outs { v8, v, v1 } = outs;
            for r0 in (0..rows).step_by(PREPARED_ROWS) {
                let nr = PREPARED_ROWS.min(rows - r0);
                let wr = &w[r0 * self.w_row..(r0 + nr) * self.w_row];
                let mut t = 0;
                if let Some(dot8) = p.dot8 {
                    while t + 8 <= nt {
                        dot8(self.cols, wr, std::array::from_fn(|j| p_at(t + j)), &mut v8[..nr]);
                        // Token by token, so that consecutive outputs are neighbours in `y`.
                        for j in 0..8 {
                            for (r, vr) in v8[..nr].iter().enumerate() {
                                out(t + j, r0 + r, vr[j]);
                            }
                        }
                        t += 8;
                    }
                }
                while t + 4 <= nt {
                    (p.dot4)(self.cols, wr, [p_at(t), p_at(t + 1), p_at(t + 2), p_at(t + 3)], &mut v[..nr]);
                    for j in 0..4 {
                        for (r, vr) in v[..nr].iter().enumerate() {
                            out(t + j, r0 + r, vr[j]);
                        }
                    }
                    t += 4;
                }
                for t in t..nt {
                    (p.dot1)(self.cols, wr, p_at(t), &mut v1[..nr]);
                    for (r, &vr) in v1[..nr].iter().enumerate() {
                        out(t, r0 + r, vr);
                    }
                }
            }
            return;
        }
        if let Some(dot4) = self.dot4 {
            while t0 + 4 <= nt {
                let ys = [x_at(t0), x_at(t0 + 1), x_at(t0 + 2), x_at(t0 + 3)];
                let mut v = [0f32; 4];
                for r in 0..rows {
                    dot4(self.cols, w_at(r), ys, &mut v);
                    for (j, &vj) in v.iter().enumerate() {
                        out(t0 + j, r, vj);
                    }
                }
                t0 += 4;
            }
        }
        for t in t0..nt {
            let xr = x_at(t);
            for r in 0..rows {
                out(t, r, (self.dot)(self.cols, w_at(r), xr));
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
    activation_quantizer_with(isa::active(), vdt)
}

/// [`activation_quantizer`] on a chosen instruction set: every one gives the same bytes.
pub fn activation_quantizer_with(isa: Isa, vdt: GgmlType) -> formats::QuantizeRowFn {
    match (vdt, isa) {
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q8_0, Isa::Avx512) => x86_act::q8_0_avx512,
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q8_1, Isa::Avx512) => x86_act::q8_1_avx512,
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q8_K, Isa::Avx512) => x86_act::q8_k_avx512,
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q8_0, Isa::Avx2) => x86_act::q8_0_avx2,
        #[cfg(target_arch = "x86_64")]
        (GgmlType::Q8_1, Isa::Avx2) => x86_act::q8_1_avx2,
        (GgmlType::Q8_0, _) => quantize_row_q8_0_runtime,
        (GgmlType::Q8_1, _) => quantize_row_q8_1_runtime,
        (other, _) => formats::traits(other).quantize.expect("every vec_dot_type quantizes"),
    }
}

/// The runtime Q8_0 / Q8_1 activation quantizers with AVX-512: the same bytes as the scalar
/// ones (`quantize_act_avx512_matches_scalar`). Per block, the largest magnitude is a lane-wise
/// max (exact), the scale and its inverse are the scalar code's, each product `x * id` is the
/// same single rounding, and `vcvtps2dq` rounds to nearest even under the default MXCSR, as the
/// scalar `round_ties_even_small` does for these magnitudes. A block holding a NaN or an
/// infinity goes through the scalar code, whose `max` and conversions treat them their own way.
#[cfg(target_arch = "x86_64")]
mod x86_act {
    use std::arch::x86_64::*;

    use crate::formats::float::fp32_to_fp16;

    pub(super) fn q8_0_avx512(src: &[f32], dst: &mut [u8]) {
        // SAFETY: handed out only for `Isa::Avx512`, which is active or forced only after
        // `Isa::is_available` confirmed AVX-512 F/BW/VL/DQ.
        unsafe { rows::<false>(src, dst) }
    }

    pub(super) fn q8_1_avx512(src: &[f32], dst: &mut [u8]) {
        // SAFETY: as above.
        unsafe { rows::<true>(src, dst) }
    }

    pub(super) fn q8_0_avx2(src: &[f32], dst: &mut [u8]) {
        // SAFETY: handed out only for `Isa::Avx2`, which is active or forced only after
        // `Isa::is_available` confirmed AVX2 and FMA (the f16 conversion is plain Rust).
        unsafe { rows_avx2::<false>(src, dst) }
    }

    pub(super) fn q8_1_avx2(src: &[f32], dst: &mut [u8]) {
        // SAFETY: as above.
        unsafe { rows_avx2::<true>(src, dst) }
    }

    /// [`rows`] with AVX2: the same steps on four 8-lane registers per block; the quants are
    /// narrowed with saturating packs (a no-op for values in `[-127, 127]`) and put back in
    /// order with one lane permutation.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2<const SUM: bool>(src: &[f32], dst: &mut [u8]) {
        let bytes = if SUM { 36 } else { 34 };
        let head = bytes - 32;
        assert!(
            src.len().is_multiple_of(32) && dst.len() == src.len() / 32 * bytes,
            "activation row: {} values into {} bytes",
            src.len(),
            dst.len()
        );
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        for (x, out) in src.chunks_exact(32).zip(dst.chunks_exact_mut(bytes)) {
            let v: [__m256; 4] = std::array::from_fn(|j| _mm256_loadu_ps(x.as_ptr().add(8 * j)));
            let m = _mm256_max_ps(
                _mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
                _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)),
            );
            let nan = _mm256_or_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v[0], v[1]), _mm256_cmp_ps::<_CMP_UNORD_Q>(v[2], v[3]));
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
            if !amax.is_finite() || _mm256_movemask_ps(nan) != 0 {
                if SUM {
                    super::quantize_row_q8_1_runtime(x, out);
                } else {
                    super::quantize_row_q8_0_runtime(x, out);
                }
                continue;
            }
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let q: [__m256i; 4] = std::array::from_fn(|j| _mm256_cvtps_epi32(_mm256_mul_ps(v[j], id)));
            out[..2].copy_from_slice(&fp32_to_fp16(d).to_le_bytes());
            if SUM {
                let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
                let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
                let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
                let sum = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32::<1>(s2)));
                out[2..4].copy_from_slice(&fp32_to_fp16(d * sum as f32).to_le_bytes());
            }
            let p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(out[head..].as_mut_ptr() as *mut __m256i, p);
        }
    }

    pub(super) fn q8_k_avx512(src: &[f32], dst: &mut [u8]) {
        // SAFETY: as above.
        unsafe { rows_q8_k(src, dst) }
    }

    /// `quantize_block_q8_k` per 256 values, with the same bytes: the largest magnitude is a
    /// lane-wise max (exact), and `max` is the first value of that magnitude, as the scalar
    /// loop's strict `>` keeps; `iscale = -127 / max` and `d = 1 / iscale` are the scalar
    /// code's; each quant is `nearest_int(iscale * x)` (one product, then the 1.5 · 2^23 add
    /// whose mantissa bits are the integer, as there) capped at 127; the block sums are exact.
    /// A block holding a NaN or an infinity goes through the scalar code.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    unsafe fn rows_q8_k(src: &[f32], dst: &mut [u8]) {
        use crate::formats::k_quants::{quantize_block_q8_k, BlockQ8K};
        use crate::formats::Block;
        use crate::gguf::QK_K;
        let bytes = BlockQ8K::BYTES;
        assert!(
            src.len().is_multiple_of(QK_K) && dst.len() == src.len() / QK_K * bytes,
            "Q8_K activation row: {} values into {} bytes",
            src.len(),
            dst.len()
        );
        for (x, out) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(bytes)) {
            let v: [__m512; 16] = std::array::from_fn(|j| _mm512_loadu_ps(x.as_ptr().add(16 * j)));
            let mut m = _mm512_abs_ps(v[0]);
            let mut bad = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v[0], v[0]);
            for vj in &v[1..] {
                m = _mm512_max_ps(m, _mm512_abs_ps(*vj));
                bad |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(*vj, *vj);
            }
            let amax = _mm512_reduce_max_ps(m);
            if bad != 0 || !amax.is_finite() || amax == 0.0 {
                quantize_block_q8_k(x.try_into().expect("256 values")).write(out);
                continue;
            }
            let target = _mm512_set1_ps(amax);
            let first = v
                .iter()
                .enumerate()
                .find_map(|(j, vj)| {
                    let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(*vj), target);
                    (hit != 0).then(|| 16 * j + hit.trailing_zeros() as usize)
                })
                .expect("the largest magnitude is one of the values");
            let iscale = -127.0 / x[first];
            let sc = _mm512_set1_ps(iscale);
            let magic = _mm512_set1_ps(12_582_912.0);
            let mant = _mm512_set1_epi32(0x007f_ffff);
            let bias = _mm512_set1_epi32(0x0040_0000);
            let cap = _mm512_set1_epi32(127);
            out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
            let q = out[4..].as_mut_ptr();
            let mut sums = [0i16; 16];
            for (j, vj) in v.iter().enumerate() {
                let t = _mm512_add_ps(_mm512_mul_ps(*vj, sc), magic);
                let n = _mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(t), mant), bias);
                let n = _mm512_min_epi32(n, cap);
                _mm_storeu_si128(q.add(16 * j) as *mut __m128i, _mm512_cvtepi32_epi8(n));
                sums[j] = _mm512_reduce_add_epi32(n) as i16;
            }
            for (o, s) in out[4 + QK_K..].chunks_exact_mut(2).zip(sums) {
                o.copy_from_slice(&s.to_le_bytes());
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    unsafe fn rows<const SUM: bool>(src: &[f32], dst: &mut [u8]) {
        let bytes = if SUM { 36 } else { 34 };
        let head = bytes - 32;
        assert!(
            src.len().is_multiple_of(32) && dst.len() == src.len() / 32 * bytes,
            "activation row: {} values into {} bytes",
            src.len(),
            dst.len()
        );
        for (x, out) in src.chunks_exact(32).zip(dst.chunks_exact_mut(bytes)) {
            let a = _mm512_loadu_ps(x.as_ptr());
            let b = _mm512_loadu_ps(x.as_ptr().add(16));
            let abs = _mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b));
            let amax = _mm512_reduce_max_ps(abs);
            if !amax.is_finite() || _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, b) != 0 {
                if SUM {
                    super::quantize_row_q8_1_runtime(x, out);
                } else {
                    super::quantize_row_q8_0_runtime(x, out);
                }
                continue;
            }
            let d = amax / 127.0;
            let id = _mm512_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, id));
            let qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, id));
            out[..2].copy_from_slice(&fp32_to_fp16(d).to_le_bytes());
            if SUM {
                let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
                out[2..4].copy_from_slice(&fp32_to_fp16(d * sum as f32).to_le_bytes());
            }
            let q = out[head..].as_mut_ptr();
            _mm_storeu_si128(q as *mut __m128i, _mm512_cvtepi32_epi8(qa));
            _mm_storeu_si128(q.add(16) as *mut __m128i, _mm512_cvtepi32_epi8(qb));
        }
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
        let r = round_ties_even_small(v * id) as i32;
        *qi = r as i8;
        sum += r;
    }
    (d, sum)
}

/// `x.round_ties_even() as i32` for `|x| <= 2^22` and for non-finite `x`, without the libm
/// call that `round_ties_even` becomes on baseline x86-64 (one per activation, which made
/// quantizing the activations a quarter of a 1536-column product). Adding 1.5 · 2^23 leaves
/// no fraction bits, so the addition itself rounds to an integer, ties to even as the default
/// rounding mode does (1.5 · 2^23 is even, so the parity is that of `x`'s integer part), and
/// subtracting it again is exact. Only the sign of a zero result can differ, which the
/// integer conversion drops; infinities and NaN pass through unchanged.
#[inline(always)]
fn round_ties_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC) - MAGIC
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::vec_dot::tests::values;

    /// A `rows x cols` matrix of type `ty` with per-row magnitudes spread over two decades.
    fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
        let mut v = values(17, rows * cols);
        for (r, row) in v.chunks_mut(cols).enumerate() {
            let s = 10f32.powf((r % 7) as f32 / 3.0 - 1.0);
            row.iter_mut().for_each(|a| *a *= s);
        }
        let mut out = vec![0u8; ty.row_bytes((rows * cols) as u64).unwrap() as usize];
        (formats::traits(ty).quantize.unwrap())(&v, &mut out);
        out
    }

    /// One one-row kernel call per output, in the simplest order.
    fn naive(isa: Isa, ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], n_tokens: usize) -> Vec<f32> {
        let vdt = formats::traits(ty).vec_dot_type;
        let dot = vec_dot::select(ty, isa).unwrap();
        let (w_row, x_row) = (w.len() / rows, vdt.row_bytes(cols as u64).unwrap() as usize);
        let mut y = vec![0f32; n_tokens * rows];
        for t in 0..n_tokens {
            let mut xq = vec![0u8; x_row];
            activation_quantizer(vdt)(&x[t * cols..(t + 1) * cols], &mut xq);
            for r in 0..rows {
                y[t * rows + r] = dot(cols, &w[r * w_row..(r + 1) * w_row], &xq);
            }
        }
        y
    }

    /// `matmul_with` (four-row kernels where they exist, any grouping of tokens, several
    /// threads) gives bit for bit what one one-row kernel call per output gives, on both the
    /// generation path (under 16 tokens) and the prompt path, including leftover tokens.
    #[test]
    fn matmul_q_matches_one_row_kernels_bits() {
        use GgmlType as T;
        let types = [T::Q4_0, T::Q4_1, T::Q5_0, T::Q5_1, T::Q8_0, T::IQ4_NL, T::Q4_K, T::Q6_K, T::F16, T::BF16];
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for isa in Isa::available() {
            for ty in types {
                // 576 columns is 18 legacy blocks; Q4_K needs whole 256-weight blocks. 70 rows
                // make two generation tasks and, for 576 columns, two weight blocks.
                let cols = if ty.block_size() == 256 { 512 } else { 576 };
                let rows = 70;
                let w = weights(ty, rows, cols);
                for n_tokens in [1usize, 3, 4, 7, 16, 17, 35, 70] {
                    let x: Vec<f32> =
                        values(n_tokens as u64 * 31 + 5, n_tokens * cols).iter().map(|v| v * 3.0).collect();
                    let mut y = vec![f32::NAN; n_tokens * rows];
                    let mut scratch = Vec::new();
                    pool.install(|| matmul_with(isa, ty, &w, rows, cols, &x, &mut y, n_tokens, &mut scratch));
                    let want = naive(isa, ty, &w, rows, cols, &x, n_tokens);
                    for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            e.to_bits(),
                            "{ty} {} n_tokens={n_tokens} token {} row {}: {g} vs {e}",
                            isa.name(),
                            i / rows,
                            i % rows
                        );
                    }
                }
            }
        }
    }

    /// `matmul_packed` on repacked weights gives, for every token count (generation and prompt
    /// paths, leftover tokens) and on several threads, the bits of the format's scalar
    /// reference called once per output on the raw rows.
    #[test]
    fn matmul_packed_matches_scalar_reference_bits() {
        use GgmlType as T;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let mut checked = 0;
        for isa in Isa::available() {
            for ty in [T::Q4_0, T::Q4_1, T::Q5_0, T::Q5_1, T::Q8_0, T::IQ4_NL, T::IQ4_XS] {
                // 80 rows: five groups, split unevenly over three threads in generation.
                let (rows, cols) = (80, if ty == T::IQ4_XS { 768 } else { 576 });
                if !packed::packable(ty, rows, isa) {
                    continue;
                }
                checked += 1;
                let w = weights(ty, rows, cols);
                let p = packed::pack(ty, rows, cols, &w);
                for n_tokens in [1usize, 2, 5, 16, 37, 70] {
                    let x: Vec<f32> =
                        values(n_tokens as u64 * 13 + 1, n_tokens * cols).iter().map(|v| v * 3.0).collect();
                    let mut y = vec![f32::NAN; n_tokens * rows];
                    let mut scratch = Vec::new();
                    pool.install(|| matmul_packed(isa, ty, &p, rows, cols, &x, &mut y, n_tokens, &mut scratch));
                    let want = naive(Isa::Scalar, ty, &w, rows, cols, &x, n_tokens);
                    if n_tokens == 1 {
                        // The generation team's pieces: one prepared row, runs of rows.
                        let ot = OneToken::packed(isa, ty, cols);
                        let mut act = vec![0u8; ot.act_bytes()];
                        ot.prepare(&x, &mut act);
                        let mut y1 = vec![f32::NAN; rows];
                        for (r0, r1) in [(0, 32), (32, 48), (48, rows)] {
                            ot.rows(&p, &[], &x, &act, r0, &mut y1[r0..r1]);
                        }
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&y1), bits(&want), "{ty} {} one-token runs", isa.name());
                    }
                    for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            e.to_bits(),
                            "{ty} {} n_tokens={n_tokens} token {} row {}",
                            isa.name(),
                            i / rows,
                            i % rows
                        );
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx2.is_available() {
            assert!(checked > 0, "no packed product ran on an AVX2 machine");
        }
        let _ = checked;
    }

    /// The libm-free rounding agrees with `round_ties_even` after the integer conversion on
    /// every value the activation quantizer can produce: all halves and quarters in
    /// [-130, 130], values next to them, random values, and the non-finite ones.
    #[test]
    fn matmul_q_round_ties_even_small_matches_std() {
        let mut xs: Vec<f32> = (-520..=520).map(|k| k as f32 / 4.0).collect();
        for k in -260..=260 {
            let h = k as f32 / 2.0;
            xs.extend([h.next_up(), h.next_down()]);
        }
        xs.extend(values(9, 10_000).iter().map(|v| v * 128.0));
        xs.extend([
            0.0,
            -0.0,
            127.00001,
            -127.00001,
            4194304.0,
            -4194303.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        for x in xs {
            assert_eq!(round_ties_even_small(x) as i32, x.round_ties_even() as i32, "{x:e}");
        }
    }

    /// The runtime activation quantizers against a transcription with `round_ties_even`, on
    /// rows whose scaled values hit exact ties (amax 127 makes the inverse scale 1).
    #[test]
    fn matmul_q_runtime_quantizers_round_ties_to_even() {
        fn reference(x: &[f32], with_sum: bool) -> Vec<u8> {
            let mut out = Vec::new();
            for b in x.chunks_exact(32) {
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                let q: Vec<i32> = b.iter().map(|&v| (v * id).round_ties_even() as i32).collect();
                out.extend(formats::float::fp32_to_fp16(d).to_le_bytes());
                if with_sum {
                    let sum: i32 = q.iter().sum();
                    out.extend(formats::float::fp32_to_fp16(d * sum as f32).to_le_bytes());
                }
                out.extend(q.iter().map(|&v| v as i8 as u8));
            }
            out
        }
        let mut x: Vec<f32> = (0..32 * 8).map(|i| ((i % 64) as f32 - 32.0) + 0.5).collect();
        for b in x.chunks_exact_mut(64) {
            b[0] = 127.0;
        }
        x.extend(values(11, 32 * 20).iter().map(|v| v * 7.0));
        x.extend([0.0; 32]);
        for (vdt, with_sum, bytes) in [(GgmlType::Q8_0, false, 34), (GgmlType::Q8_1, true, 36)] {
            for isa in Isa::available() {
                let mut got = vec![0u8; x.len() / 32 * bytes];
                activation_quantizer_with(isa, vdt)(&x, &mut got);
                assert_eq!(got, reference(&x, with_sum), "{vdt} {}", isa.name());
            }
        }
    }

    /// Every instruction set's activation quantizer writes the scalar one's bytes, also for
    /// blocks with NaN, infinities, subnormals, zeros and ties at every magnitude.
    #[test]
    fn quantize_act_simd_matches_scalar() {
        let mut x: Vec<f32> =
            values(5, 32 * 64).iter().enumerate().map(|(i, v)| v * 10f32.powi(i as i32 / 256 - 4)).collect();
        x[40] = f32::NAN;
        x[70] = f32::INFINITY;
        x[100] = f32::NEG_INFINITY;
        x[130] = 1e-40;
        x[160..192].fill(0.0);
        x[192..224].fill(-0.0);
        for (i, v) in x[224..256].iter_mut().enumerate() {
            *v = (i as f32 - 16.0) * 0.5; // ties to even once scaled by 127 / 8 ... and exact halves
        }
        x[256..288]
            .copy_from_slice(&std::array::from_fn::<f32, 32, _>(|i| if i == 3 { 127.0 } else { i as f32 + 0.5 }));
        // Q8_K (256-blocks): the largest magnitude twice with opposite signs, in both orders
        // (the first one's sign sets the scale's), and an all-zero block.
        (x[600], x[700]) = (-50.0, 50.0);
        (x[800], x[900]) = (3.0, -3.0);
        x[1024..1280].fill(0.0);
        for vdt in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
            let bytes = vdt.row_bytes(x.len() as u64).unwrap() as usize;
            let mut want = vec![0u8; bytes];
            activation_quantizer_with(Isa::Scalar, vdt)(&x, &mut want);
            for isa in Isa::available() {
                let mut got = vec![0u8; bytes];
                activation_quantizer_with(isa, vdt)(&x, &mut got);
                assert_eq!(got, want, "{vdt} {}", isa.name());
            }
        }
    }
}
