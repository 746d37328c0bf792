//! Block formats: one file per family, each with `dequantize_row_*` (and later `quantize_row_*`
//! and `vec_dot_*`). [`dequantize`] dispatches once per tensor, never once per block.
//!
//! Every quantized block is an explicit `#[repr(C)]` struct mirroring ggml-common.h, with a
//! compile-time size check. Blocks are parsed from little-endian byte slices field by field (no
//! transmutes), so tensor data at any alignment works. The float arithmetic of each
//! `dequantize_row_*` follows ggml's C reference (`ggml/src/ggml-quants.c`) operation for
//! operation, in f32 and without fused multiply-adds, so results are identical bit for bit.

pub mod float;
pub mod iq4;
pub mod k_quants;
pub mod legacy;

use half::f16;
use rayon::prelude::*;

use crate::gguf::GgmlType;

/// A ggml block: `QK` weights stored in `BYTES` bytes.
pub trait Block: Copy {
    /// The ggml type this block belongs to.
    const TYPE: GgmlType;
    /// Weights per block (`QK*` in ggml-common.h).
    const QK: usize;
    /// Bytes per block (`sizeof(block_*)`).
    const BYTES: usize;

    /// Parses one block from exactly `BYTES` little-endian bytes (any alignment).
    fn read(bytes: &[u8]) -> Self;
    /// Serializes the block into exactly `BYTES` bytes, little-endian.
    fn write(&self, out: &mut [u8]);
    /// Dequantizes the block into exactly `QK` floats.
    fn dequantize(&self, out: &mut [f32]);
}

/// Dequantizes a run of whole `B` blocks. Panics when `data` and `out` do not describe the same
/// number of blocks (the public entry point [`dequantize`] checks this and returns an error).
#[inline]
pub(crate) fn dequantize_blocks<B: Block>(data: &[u8], out: &mut [f32]) {
    assert!(
        data.len().is_multiple_of(B::BYTES) && data.len() / B::BYTES * B::QK == out.len(),
        "{}: {} bytes cannot dequantize into {} weights",
        B::TYPE.name(),
        data.len(),
        out.len()
    );
    for (chunk, y) in data.chunks_exact(B::BYTES).zip(out.chunks_exact_mut(B::QK)) {
        B::read(chunk).dequantize(y);
    }
}

/// Reads a little-endian f16 at `off`.
#[inline(always)]
pub(crate) fn read_f16(b: &[u8], off: usize) -> f16 {
    f16::from_le_bytes([b[off], b[off + 1]])
}

/// Reads `N` bytes at `off`.
#[inline(always)]
pub(crate) fn read_array<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    b[off..off + N].try_into().expect("slice of length N")
}

/// Reads `N` signed bytes at `off`.
#[inline(always)]
pub(crate) fn read_i8_array<const N: usize>(b: &[u8], off: usize) -> [i8; N] {
    read_array::<N>(b, off).map(|x| x as i8)
}

/// Writes `N` signed bytes at `off`.
#[inline(always)]
pub(crate) fn write_i8_array<const N: usize>(out: &mut [u8], off: usize, v: &[i8; N]) {
    for (o, x) in out[off..off + N].iter_mut().zip(v) {
        *o = *x as u8;
    }
}

/// A row dequantizer: whole blocks of bytes in, one f32 per weight out.
pub type DequantizeRowFn = fn(&[u8], &mut [f32]);

/// A row quantizer: f32 weights in (a whole number of blocks), block bytes out.
pub type QuantizeRowFn = fn(&[f32], &mut [u8]);
/// A dot product of `n` weights: one row of blocks of the format against one row of blocks of
/// its activation type ([`FormatTraits::vec_dot_type`]).
pub type VecDotFn = fn(usize, &[u8], &[u8]) -> f32;

/// Everything evalq knows how to do with one ggml type: the single table where adding a format is
/// adding a row (ggml's `type_traits` and `type_traits_cpu` in one).
#[derive(Clone, Copy)]
pub struct FormatTraits {
    pub ty: GgmlType,
    pub quantize: Option<QuantizeRowFn>,
    pub dequantize: Option<DequantizeRowFn>,
    /// The scalar reference dot product; SIMD kernels in `kernels` are tested against it.
    pub vec_dot: Option<VecDotFn>,
    /// The type activations are quantized to for `vec_dot` (ggml's `vec_dot_type`).
    pub vec_dot_type: GgmlType,
}

/// The traits of `ty`.
pub fn traits(ty: GgmlType) -> FormatTraits {
    use GgmlType as T;
    let row = |quantize: QuantizeRowFn, dequantize: Option<DequantizeRowFn>, vec_dot: VecDotFn, vdt: GgmlType| FormatTraits {
        ty,
        quantize: Some(quantize),
        dequantize,
        vec_dot: Some(vec_dot),
        vec_dot_type: vdt,
    };
    match ty {
        T::F32 => row(float::quantize_row_f32, Some(float::dequantize_row_f32), vec_dot_f32_bytes, T::F32),
        T::F16 => row(float::quantize_row_f16, Some(float::dequantize_row_f16), float::vec_dot_f16, T::F16),
        T::BF16 => row(float::quantize_row_bf16, Some(float::dequantize_row_bf16), float::vec_dot_bf16, T::BF16),
        T::Q4_0 => row(legacy::quantize_row_q4_0, Some(legacy::dequantize_row_q4_0), legacy::vec_dot_q4_0_q8_0, T::Q8_0),
        T::Q4_1 => row(legacy::quantize_row_q4_1, Some(legacy::dequantize_row_q4_1), legacy::vec_dot_q4_1_q8_1, T::Q8_1),
        T::Q5_0 => row(legacy::quantize_row_q5_0, Some(legacy::dequantize_row_q5_0), legacy::vec_dot_q5_0_q8_0, T::Q8_0),
        T::Q5_1 => row(legacy::quantize_row_q5_1, Some(legacy::dequantize_row_q5_1), legacy::vec_dot_q5_1_q8_1, T::Q8_1),
        T::Q8_0 => row(legacy::quantize_row_q8_0, Some(legacy::dequantize_row_q8_0), legacy::vec_dot_q8_0_q8_0, T::Q8_0),
        // Q8_1 exists only as an activation type: ggml gives it no to_float and no vec_dot.
        T::Q8_1 => FormatTraits { ty, quantize: Some(legacy::quantize_row_q8_1), dequantize: None, vec_dot: None, vec_dot_type: T::Q8_1 },
        T::Q2_K => row(k_quants::quantize_row_q2_k, Some(k_quants::dequantize_row_q2_k), k_quants::vec_dot_q2_k_q8_k, T::Q8_K),
        T::Q3_K => row(k_quants::quantize_row_q3_k, Some(k_quants::dequantize_row_q3_k), k_quants::vec_dot_q3_k_q8_k, T::Q8_K),
        T::Q4_K => row(k_quants::quantize_row_q4_k, Some(k_quants::dequantize_row_q4_k), k_quants::vec_dot_q4_k_q8_k, T::Q8_K),
        T::Q5_K => row(k_quants::quantize_row_q5_k, Some(k_quants::dequantize_row_q5_k), k_quants::vec_dot_q5_k_q8_k, T::Q8_K),
        T::Q6_K => row(k_quants::quantize_row_q6_k, Some(k_quants::dequantize_row_q6_k), k_quants::vec_dot_q6_k_q8_k, T::Q8_K),
        T::Q8_K => FormatTraits {
            ty,
            quantize: Some(k_quants::quantize_row_q8_k),
            dequantize: Some(k_quants::dequantize_row_q8_k),
            vec_dot: None,
            vec_dot_type: T::Q8_K,
        },
        T::IQ4_NL => row(iq4::quantize_row_iq4_nl, Some(iq4::dequantize_row_iq4_nl), iq4::vec_dot_iq4_nl_q8_0, T::Q8_0),
        T::IQ4_XS => row(iq4::quantize_row_iq4_xs, Some(iq4::dequantize_row_iq4_xs), iq4::vec_dot_iq4_xs_q8_k, T::Q8_K),
    }
}

/// ggml's generic f32 dot product over little-endian bytes, accumulated in f64 (`ggml_float`).
fn vec_dot_f32_bytes(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let f = |b: &[u8], i: usize| f32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
    (0..n).map(|i| f64::from(f(x, i) * f(y, i))).sum::<f64>() as f32
}

/// The `dequantize_row_*` function for `ty`, or `None` when ggml has none (Q8_1).
pub fn dequantize_fn(ty: GgmlType) -> Option<DequantizeRowFn> {
    traits(ty).dequantize
}

/// Quantizes `src` (a whole number of `ty` blocks) into `dst`, rows in parallel. The bytes equal
/// llama-quantize's for the same f32 input (no importance matrix). Non-finite input is rejected,
/// with the index of the first bad value, before anything is written.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8], row_len: usize) -> Result<(), String> {
    let f = traits(ty).quantize.ok_or_else(|| format!("{ty}: quantization is not supported"))?;
    let qk = ty.block_size();
    if row_len == 0 || !row_len.is_multiple_of(qk) || !src.len().is_multiple_of(row_len) {
        return Err(format!("{ty}: rows of {row_len} weights are not whole blocks of {qk}"));
    }
    let row_bytes = row_len / qk * ty.block_bytes();
    if dst.len() != src.len() / row_len * row_bytes {
        return Err(format!("{ty}: {} output bytes for {} weights; expected {}", dst.len(), src.len(), src.len() / row_len * row_bytes));
    }
    // A branch-free scan per chunk (it vectorizes), in parallel; the message names the first.
    let bad = |c: &[f32]| c.iter().fold(false, |bad, v| bad | !v.is_finite());
    if let Some(c) = src.par_chunks(PARALLEL_CHUNK_WEIGHTS).position_first(bad) {
        let i = c * PARALLEL_CHUNK_WEIGHTS + src[c * PARALLEL_CHUNK_WEIGHTS..].iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(format!("weight {i} (row {}, column {}) is {}; quantization needs finite values", i / row_len, i % row_len, src[i]));
    }
    // Whole rows per task: llama.cpp quantizes row by row, so the split cannot change the bytes.
    let rows_per_task = (PARALLEL_CHUNK_WEIGHTS / row_len).max(1);
    src.par_chunks(rows_per_task * row_len)
        .zip(dst.par_chunks_mut(rows_per_task * row_bytes))
        .for_each(|(s, d)| {
            for (sr, dr) in s.chunks_exact(row_len).zip(d.chunks_exact_mut(row_bytes)) {
                f(sr, dr);
            }
        });
    Ok(())
}

/// Quantizes a tensor of rows of `row_len` weights into a new vector.
pub fn quantize_to_vec(ty: GgmlType, src: &[f32], row_len: usize) -> Result<Vec<u8>, String> {
    let n_rows = if row_len == 0 { 0 } else { src.len() / row_len };
    let row_bytes = ty.row_bytes(row_len as u64).ok_or_else(|| format!("{ty}: rows of {row_len} weights are not whole blocks of {}", ty.block_size()))?;
    let mut out = vec![0u8; n_rows * row_bytes as usize];
    quantize(ty, src, &mut out, row_len)?;
    Ok(out)
}

/// Tensors with at least this many weights are dequantized on several threads. Each thread
/// handles whole blocks, so the result is identical to the single-threaded one.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 18;
/// Weights per parallel work item (a multiple of every block size).
const PARALLEL_CHUNK_WEIGHTS: usize = 1 << 16;

/// Dequantizes `data`, a whole number of `ty` blocks, into `out` (one f32 per weight).
///
/// Returns an error message when the lengths disagree. The result equals ggml's
/// `dequantize_row_*` bit for bit.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), String> {
    let f = dequantize_fn(ty).ok_or_else(|| format!("{ty}: dequantization is not supported"))?;
    let qk = ty.block_size();
    let bytes = ty.block_bytes();
    let n = out.len();
    if !n.is_multiple_of(qk) {
        return Err(format!(
            "{ty}: {n} weights is not a whole number of blocks of {qk} weights"
        ));
    }
    let n_blocks = n / qk;
    let expected = n_blocks
        .checked_mul(bytes)
        .ok_or_else(|| format!("{ty}: {n} weights overflow the byte count"))?;
    if data.len() != expected {
        return Err(format!(
            "{ty}: {} bytes of data for {n} weights; expected {expected} ({n_blocks} blocks of {bytes} bytes)",
            data.len()
        ));
    }
    if n >= PARALLEL_MIN_WEIGHTS {
        debug_assert_eq!(PARALLEL_CHUNK_WEIGHTS % qk, 0);
        let chunk_bytes = PARALLEL_CHUNK_WEIGHTS / qk * bytes;
        data.par_chunks(chunk_bytes)
            .zip(out.par_chunks_mut(PARALLEL_CHUNK_WEIGHTS))
            .for_each(|(d, y)| f(d, y));
    } else {
        f(data, out);
    }
    Ok(())
}

/// Dequantizes `data` holding `n` weights of type `ty` into a new vector.
pub fn dequantize_to_vec(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>, String> {
    let mut out = vec![0f32; n];
    dequantize(ty, data, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_block<B: Block>() {
        assert_eq!(B::BYTES, B::TYPE.block_bytes(), "{}", B::TYPE);
        assert_eq!(B::QK, B::TYPE.block_size(), "{}", B::TYPE);
        assert_eq!(std::mem::size_of::<B>(), B::BYTES, "{}", B::TYPE);
    }

    #[test]
    fn formats_block_constants_match_types() {
        check_block::<legacy::BlockQ4_0>();
        check_block::<legacy::BlockQ4_1>();
        check_block::<legacy::BlockQ5_0>();
        check_block::<legacy::BlockQ5_1>();
        check_block::<legacy::BlockQ8_0>();
        check_block::<k_quants::BlockQ2K>();
        check_block::<k_quants::BlockQ3K>();
        check_block::<k_quants::BlockQ4K>();
        check_block::<k_quants::BlockQ5K>();
        check_block::<k_quants::BlockQ6K>();
        check_block::<k_quants::BlockQ8K>();
        check_block::<iq4::BlockIQ4NL>();
        check_block::<iq4::BlockIQ4XS>();
    }

    #[test]
    fn formats_dispatch_covers_every_readable_type() {
        for ty in GgmlType::ALL {
            assert_eq!(dequantize_fn(ty).is_none(), ty == GgmlType::Q8_1, "{ty}");
        }
    }

    #[test]
    fn formats_rejects_partial_blocks() {
        let mut out = vec![0f32; 33];
        let err = dequantize(GgmlType::Q4_0, &[0u8; 36], &mut out).unwrap_err();
        assert!(
            err.contains("Q4_0") && err.contains("whole number of blocks"),
            "{err}"
        );
    }

    #[test]
    fn formats_rejects_wrong_byte_count() {
        for ty in GgmlType::ALL {
            if ty == GgmlType::Q8_1 {
                continue;
            }
            let n = ty.block_size() * 2;
            let good = vec![0u8; ty.block_bytes() * 2];
            let mut out = vec![0f32; n];
            dequantize(ty, &good, &mut out).unwrap();
            for bad_len in [good.len() - 1, good.len() + 1, ty.block_bytes() * 3, 0] {
                let err = dequantize(ty, &vec![0u8; bad_len], &mut out).unwrap_err();
                assert!(err.contains(ty.name()) && err.contains("expected"), "{err}");
            }
        }
    }

    #[test]
    fn formats_rejects_q8_1() {
        let err = dequantize(GgmlType::Q8_1, &[0u8; 36], &mut [0f32; 32]).unwrap_err();
        assert!(
            err.contains("Q8_1") && err.contains("not supported"),
            "{err}"
        );
    }

    #[test]
    fn formats_empty_tensor_is_ok() {
        assert_eq!(
            dequantize_to_vec(GgmlType::Q4_K, &[], 0).unwrap(),
            Vec::<f32>::new()
        );
    }

    #[test]
    fn formats_parallel_path_equals_serial() {
        // Enough Q4_1 blocks to take the parallel path, with a pseudo-random fill.
        let n = PARALLEL_MIN_WEIGHTS * 2 + 32 * 7;
        let mut data = vec![0u8; n / 32 * 20];
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for (i, b) in data.iter_mut().enumerate() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Keep d and m finite: byte 1 and 3 of each block hold the f16 exponents.
            *b = if matches!(i % 20, 1 | 3) {
                (s as u8) & 0x3b
            } else {
                s as u8
            };
        }
        let par = dequantize_to_vec(GgmlType::Q4_1, &data, n).unwrap();
        let mut ser = vec![0f32; n];
        legacy::dequantize_row_q4_1(&data, &mut ser);
        assert!(par
            .iter()
            .zip(&ser)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn formats_unaligned_input() {
        // One Q8_0 block starting at an odd address.
        let mut buf = [0u8; 35];
        buf[1..3].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for j in 0..32 {
            buf[3 + j] = (j as i8 - 16) as u8;
        }
        let out = dequantize_to_vec(GgmlType::Q8_0, &buf[1..], 32).unwrap();
        for (j, v) in out.iter().enumerate() {
            assert_eq!(*v, (j as f32 - 16.0) * 0.5);
        }
    }
}
