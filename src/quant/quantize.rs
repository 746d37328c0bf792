//! Quantizing a whole model: plan every tensor's type with llama.cpp's rules ([`super::mix`]),
//! quantize the F32 source tensor by tensor, and write a GGUF file laid out as llama-quantize
//! lays it out (same metadata order, tensor order and alignment).

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::formats;
use crate::gguf::{GgmlType, GgufFile, GgufWriter, Value, WriterTensor};
use crate::model::Checkpoint;
use crate::quant::mix::{self, FileType, MixOptions};

/// ggml's `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// One tensor after quantization.
pub struct QuantizedTensor {
    pub name: String,
    /// ggml dims (`dims[0]` is the row length).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: Vec<u8>,
    /// Why the type differs from the file type's base type (llama.cpp's wording where it has one).
    pub reason: Option<String>,
    /// The type the rules chose before the row-length fallback replaced it.
    pub fallback_from: Option<GgmlType>,
}

impl QuantizedTensor {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A quantized model held in memory, tensors in llama-quantize's order.
pub struct QuantizedModel {
    pub ftype: FileType,
    pub opts: MixOptions,
    pub tensors: Vec<QuantizedTensor>,
    pub seconds: f64,
}

impl QuantizedModel {
    /// The name of the mix (`Q4_K_M`, `Q4_K_L`, `Q6_K_pure`).
    pub fn mix_name(&self) -> String {
        mix::mix_name(self.ftype, &self.opts)
    }

    /// Bytes of tensor data, without padding.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.data.len() as u64).sum()
    }

    pub fn n_weights(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_elements()).sum()
    }

    /// Bits per weight over every tensor, as llama.cpp's loader reports it.
    pub fn bits_per_weight(&self) -> f64 {
        self.tensor_bytes() as f64 * 8.0 / self.n_weights() as f64
    }

    /// Tensor count per type.
    pub fn histogram(&self) -> std::collections::BTreeMap<GgmlType, usize> {
        let mut h = std::collections::BTreeMap::new();
        for t in &self.tensors {
            *h.entry(t.ty).or_insert(0) += 1;
        }
        h
    }

    pub fn tensor(&self, name: &str) -> Option<&QuantizedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Quantizes every tensor of `ckpt` (expanded to its F32 source first) for `ftype`. `on_tensor`
/// sees each tensor as it completes.
pub fn quantize_checkpoint(
    ckpt: &Checkpoint,
    ftype: FileType,
    opts: &MixOptions,
    mut on_tensor: impl FnMut(&QuantizedTensor, usize, usize),
) -> Result<QuantizedModel> {
    let t0 = Instant::now();
    let config = ckpt.config()?;
    let names = ckpt.tensor_names();
    let mut metas = Vec::with_capacity(names.len());
    for n in &names {
        metas.push((n.clone(), ckpt.tensor_meta(n)?.1));
    }
    let plans = mix::plan(ftype, opts, &metas, config.n_layer, config.n_head, config.n_kv_head, 0)?;
    let order = mix::llama_tensor_order(&names);
    // Tensors are independent: a few at a time go in parallel (each is also split by rows
    // inside), so reading one tensor's f32 source overlaps with quantizing another. The tensors
    // and the callback stay in llama-quantize's order, and the bytes do not depend on the split.
    let quantize_one = |idx: usize| -> Result<QuantizedTensor> {
        let p = &plans[idx];
        let (dims, src) = ckpt.tensor_f32_cow(&p.name)?;
        let row_len = dims[0] as usize;
        let data = formats::quantize_to_vec(p.ty, &src, row_len).map_err(|msg| Error::Tensor {
            path: ckpt.path().to_path_buf(),
            tensor: p.name.clone(),
            msg,
        })?;
        Ok(QuantizedTensor {
            name: p.name.clone(),
            dims,
            ty: p.ty,
            data,
            reason: p.reason.clone(),
            fallback_from: p.fallback_from,
        })
    };
    let group = 2 * rayon::current_num_threads().max(1);
    let mut tensors = Vec::with_capacity(names.len());
    for chunk in order.chunks(group) {
        let done: Vec<Result<QuantizedTensor>> = chunk.par_iter().map(|&idx| quantize_one(idx)).collect();
        for t in done {
            let t = t?;
            on_tensor(&t, tensors.len(), order.len());
            tensors.push(t);
        }
    }
    Ok(QuantizedModel { ftype, opts: *opts, tensors, seconds: t0.elapsed().as_secs_f64() })
}

/// Writes `q` as a GGUF file with the metadata of `src`, as llama-quantize does: every key copied
/// in order, then `general.quantization_version` and `general.file_type` set (which moves them
/// to the end), split keys removed. Returns the file size.
pub fn write_gguf(src: &GgufFile, q: &QuantizedModel, out: &Path) -> Result<u64> {
    let mut w = GgufWriter::default();
    for (k, v) in &src.metadata {
        if !k.starts_with("split.") {
            w.metadata.push((k.clone(), v.clone()));
        }
    }
    w.set_last("general.quantization_version", Value::U32(QUANTIZATION_VERSION));
    w.set_last("general.file_type", Value::U32(q.ftype.gguf_id()));
    for t in &q.tensors {
        w.tensors.push(WriterTensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
            data: Cow::Borrowed(&t.data),
        });
    }
    w.write(out)?;
    Ok(std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len())
}
