//! The weights the forward pass runs on, in ggml layout: a matrix is `(rows = outputs,
//! cols = inputs)`, row-major, so `y = x · Wᵀ` reads each weight row contiguously.

use crate::error::{Error, Result};
use std::path::Path;

use crate::formats;
use crate::gguf::GgmlType;
use crate::kernels::matmul_q::OneToken;
use crate::kernels::{isa, matmul_f32, matmul_q, packed};
use crate::quant::quantize::QuantizedModel;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::LlamaConfig;
use crate::model::hugemem::{self, WeightBytes};

/// A weight matrix. The storage is an enum so that quantized block storage can sit beside f32
/// without changing the forward pass: dispatch happens once per product, never per block.
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: MatrixData,
}

pub enum MatrixData {
    /// `rows * cols` f32 values.
    F32(Vec<f32>),
    /// ggml blocks of `ty`, `rows` rows of `cols / block_size` blocks. Any type with a dot
    /// product (F16 and BF16 included) is held this way and computed on directly.
    Blocks { ty: GgmlType, data: WeightBytes },
    /// Blocks of a packable format (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, IQ4_XS) repacked
    /// 16 rows at a time for the packed kernels
    /// (`kernels::packed`): the same bytes, rearranged, chosen at load where the instruction
    /// set has those kernels.
    Packed { ty: GgmlType, data: WeightBytes },
}

impl Matrix {
    /// `y (n_tokens, rows) = x (n_tokens, cols) · selfᵀ`. `scratch` holds quantized activations.
    pub fn matmul(&self, x: &[f32], y: &mut [f32], n_tokens: usize, scratch: &mut Vec<u8>) {
        match &self.data {
            MatrixData::F32(w) => matmul_f32::matmul(x, w, y, n_tokens, self.cols, self.rows),
            MatrixData::Blocks { ty, data } => matmul_q::matmul(*ty, data, self.rows, self.cols, x, y, n_tokens, scratch),
            MatrixData::Packed { ty, data } => {
                matmul_q::matmul_packed(isa::active(), *ty, data, self.rows, self.cols, x, y, n_tokens, scratch)
            }
        }
    }

    /// This matrix's one-token product in pieces ([`OneToken`]), for the generation team.
    pub fn one_token(&self) -> OneToken {
        let isa = isa::active();
        match &self.data {
            MatrixData::F32(_) => OneToken::f32(isa, self.cols),
            MatrixData::Blocks { ty, .. } => OneToken::blocks(isa, *ty, self.cols),
            MatrixData::Packed { ty, .. } => OneToken::packed(isa, *ty, self.cols),
        }
    }

    /// Rows `r0..r0 + y.len()` of the one-token product with `x`, whose bytes `act` came from
    /// `ot.prepare` (`ot` from [`Matrix::one_token`]); see [`OneToken::rows`].
    pub fn one_token_rows(&self, ot: &OneToken, x: &[f32], act: &[u8], r0: usize, y: &mut [f32]) {
        match &self.data {
            MatrixData::F32(w) => ot.rows(&[], w, x, act, r0, y),
            MatrixData::Blocks { data, .. } | MatrixData::Packed { data, .. } => ot.rows(data, &[], x, act, r0, y),
        }
    }

    /// Copies row `r` into `out` as f32 (embedding look-ups: ggml's `get_rows` dequantizes the
    /// row, so the values are exact).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        match &self.data {
            MatrixData::F32(w) => out.copy_from_slice(&w[r * self.cols..(r + 1) * self.cols]),
            MatrixData::Blocks { ty, data } => {
                let rb = ty.row_bytes(self.cols as u64).expect("whole blocks") as usize;
                formats::dequantize(*ty, &data[r * rb..(r + 1) * rb], out).expect("row lengths were checked at load");
            }
            MatrixData::Packed { ty, data } => packed::dequantize_row(*ty, self.cols, data, r, out),
        }
    }

    /// Where rows `r0..r1` of the weights lie in memory: a start address and a length in bytes,
    /// for prefetching. `r0` and `r1` must be multiples of 16 or `rows` (packed matrices hold
    /// 16-row groups of equal size, the other layouts rows of equal size).
    pub fn rows_span(&self, r0: usize, r1: usize) -> (*const u8, usize) {
        assert!(r0 <= r1 && r1 <= self.rows, "rows {r0}..{r1} of {}", self.rows);
        let base = match &self.data {
            MatrixData::F32(w) => w.as_ptr() as *const u8,
            MatrixData::Blocks { data, .. } | MatrixData::Packed { data, .. } => data.as_ptr(),
        };
        let at = |r: usize| r * self.n_bytes() / self.rows;
        // `wrapping_add` keeps this safe code: the address is only ever prefetched, never read.
        (base.wrapping_add(at(r0)), at(r1) - at(r0))
    }

    /// Bytes of weight storage.
    pub fn n_bytes(&self) -> usize {
        match &self.data {
            MatrixData::F32(w) => w.len() * 4,
            MatrixData::Blocks { data, .. } | MatrixData::Packed { data, .. } => data.len(),
        }
    }

    /// The storage type.
    pub fn ty(&self) -> GgmlType {
        match &self.data {
            MatrixData::F32(_) => GgmlType::F32,
            MatrixData::Blocks { ty, .. } | MatrixData::Packed { ty, .. } => *ty,
        }
    }
}

/// A tensor as the loader receives it: f32 values, or raw blocks of a ggml type.
pub enum RawTensor {
    F32 { dims: Vec<u64>, data: Vec<f32> },
    Blocks { dims: Vec<u64>, ty: GgmlType, data: Vec<u8> },
}

impl RawTensor {
    fn dims(&self) -> &[u64] {
        match self {
            RawTensor::F32 { dims, .. } | RawTensor::Blocks { dims, .. } => dims,
        }
    }
}

/// One decoder layer.
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub wo: Matrix,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Matrix,
    pub w_up: Matrix,
    pub w_down: Matrix,
}

impl LayerWeights {
    /// The layer's seven matrices.
    pub fn matrices(&self) -> [&Matrix; 7] {
        [&self.wq, &self.wk, &self.wv, &self.wo, &self.w_gate, &self.w_up, &self.w_down]
    }

    /// Bytes of the layer's seven matrices: what one generated token reads from this layer.
    pub fn n_matrix_bytes(&self) -> usize {
        self.matrices().iter().map(|m| m.n_bytes()).sum()
    }
}

/// A whole llama-family model.
pub struct LlamaWeights {
    pub config: LlamaConfig,
    pub tok_embd: Matrix,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>,
    /// `None` when the output projection is tied to `tok_embd`.
    pub output: Option<Matrix>,
}

impl LlamaWeights {
    /// Loads every tensor from `ckpt` expanded to f32 (the F32 source).
    pub fn load_f32(ckpt: &Checkpoint, config: &LlamaConfig) -> Result<LlamaWeights> {
        Self::build(config, ckpt.path(), |n| ckpt.has_tensor(n), |n| {
            let t = ckpt.tensor_f32(n)?;
            Ok(RawTensor::F32 { dims: t.dims, data: t.data })
        })
    }

    /// Loads a GGUF file's tensors as stored: quantized matrices stay in their blocks and run on
    /// the block kernels.
    pub fn load_native(file: &crate::gguf::GgufFile, config: &LlamaConfig) -> Result<LlamaWeights> {
        Self::build(config, &file.path, |n| file.tensor(n).is_some(), |n| {
            let info = file.tensor(n).ok_or_else(|| Error::Tensor {
                path: file.path.clone(),
                tensor: n.to_string(),
                msg: "missing from the model".into(),
            })?;
            let bytes = file.tensor_data(info);
            Ok(match info.ty {
                GgmlType::F32 => RawTensor::F32 {
                    dims: info.dims.clone(),
                    data: bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                },
                ty => RawTensor::Blocks { dims: info.dims.clone(), ty, data: bytes.to_vec() },
            })
        })
    }

    /// Takes the tensors of a model quantized in memory.
    pub fn from_quantized(q: &QuantizedModel, config: &LlamaConfig, path: &Path) -> Result<LlamaWeights> {
        Self::build(config, path, |n| q.tensor(n).is_some(), |n| {
            let t = q.tensor(n).ok_or_else(|| Error::Tensor { path: path.to_path_buf(), tensor: n.into(), msg: "missing from the model".into() })?;
            Ok(match t.ty {
                GgmlType::F32 => RawTensor::F32 {
                    dims: t.dims.clone(),
                    data: t.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                },
                ty => RawTensor::Blocks { dims: t.dims.clone(), ty, data: t.data.clone() },
            })
        })
    }

    /// Assembles the model from a tensor source, checking every shape against the config.
    fn build(
        config: &LlamaConfig,
        path: &Path,
        has: impl Fn(&str) -> bool,
        get: impl Fn(&str) -> Result<RawTensor>,
    ) -> Result<LlamaWeights> {
        let c = config;
        let terr = |name: &str, msg: String| Error::Tensor { path: path.to_path_buf(), tensor: name.to_string(), msg };
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<Matrix> {
            let t = get(name)?;
            check_shape(path, name, t.dims(), &[cols as u64, rows as u64])?;
            let data = match t {
                RawTensor::F32 { data, .. } => MatrixData::F32(data),
                RawTensor::Blocks { ty, data, .. } => {
                    if formats::traits(ty).vec_dot.is_none() {
                        return Err(terr(name, format!("type {ty} cannot be used as a weight matrix")));
                    }
                    if packed::packable(ty, rows, isa::active()) {
                        if data.len() != ty.row_bytes(cols as u64).unwrap_or(0) as usize * rows {
                            return Err(terr(name, format!("{} bytes of {ty} data for {rows}x{cols}", data.len())));
                        }
                        MatrixData::Packed { ty, data: packed::pack(ty, rows, cols, &data).into() }
                    } else {
                        MatrixData::Blocks { ty, data: data.into() }
                    }
                }
            };
            Ok(Matrix { rows, cols, data })
        };
        let vector = |name: &str, n: usize| -> Result<Vec<f32>> {
            let t = get(name)?;
            check_shape(path, name, t.dims(), &[n as u64])?;
            match t {
                RawTensor::F32 { data, .. } => Ok(data),
                RawTensor::Blocks { ty, data, .. } => formats::dequantize_to_vec(ty, &data, n).map_err(|m| terr(name, m)),
            }
        };
        let optional = |name: &str, n: usize| -> Result<Option<Vec<f32>>> {
            if has(name) { vector(name, n).map(Some) } else { Ok(None) }
        };
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            layers.push(LayerWeights {
                attn_norm: vector(&p("attn_norm.weight"), c.d_model)?,
                wq: matrix(&p("attn_q.weight"), c.q_dim(), c.d_model)?,
                wk: matrix(&p("attn_k.weight"), c.kv_dim(), c.d_model)?,
                wv: matrix(&p("attn_v.weight"), c.kv_dim(), c.d_model)?,
                bq: optional(&p("attn_q.bias"), c.q_dim())?,
                bk: optional(&p("attn_k.bias"), c.kv_dim())?,
                bv: optional(&p("attn_v.bias"), c.kv_dim())?,
                wo: matrix(&p("attn_output.weight"), c.d_model, c.q_dim())?,
                ffn_norm: vector(&p("ffn_norm.weight"), c.d_model)?,
                w_gate: matrix(&p("ffn_gate.weight"), c.ffn_dim, c.d_model)?,
                w_up: matrix(&p("ffn_up.weight"), c.ffn_dim, c.d_model)?,
                w_down: matrix(&p("ffn_down.weight"), c.d_model, c.ffn_dim)?,
            });
        }
        let output = if has("output.weight") {
            Some(matrix("output.weight", c.vocab_size, c.d_model)?)
        } else {
            None
        };
        let mut w = LlamaWeights {
            config: c.clone(),
            tok_embd: matrix("token_embd.weight", c.vocab_size, c.d_model)?,
            layers,
            output_norm: vector("output_norm.weight", c.d_model)?,
            output,
        };
        w.gather_block_matrices();
        Ok(w)
    }

    /// Moves the block matrices into one mapping advised for huge pages
    /// ([`hugemem::gather`]), in the order a generated token reads them. f32 matrices (the F32
    /// source, never generated with in a speed run) stay where they are.
    fn gather_block_matrices(&mut self) {
        fn bytes(m: &mut Matrix) -> Option<&mut WeightBytes> {
            match &mut m.data {
                MatrixData::Blocks { data, .. } | MatrixData::Packed { data, .. } => Some(data),
                MatrixData::F32(_) => None,
            }
        }
        let mut order: Vec<&mut Matrix> = Vec::new();
        for l in &mut self.layers {
            order.extend([&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down]);
        }
        // The output projection is read last; tied, it is the embedding.
        order.extend(self.output.as_mut());
        order.push(&mut self.tok_embd);
        let mut parts: Vec<&mut WeightBytes> = order.into_iter().filter_map(bytes).collect();
        hugemem::gather(&mut parts);
    }

    /// The output projection (tied to the embedding when the model has no `output.weight`).
    pub fn output(&self) -> &Matrix {
        self.output.as_ref().unwrap_or(&self.tok_embd)
    }

    /// Bytes of all weights held.
    pub fn n_bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| l.n_matrix_bytes() + (l.attn_norm.len() + l.ffn_norm.len()) * 4)
            .sum();
        l + self.tok_embd.n_bytes() + self.output.as_ref().map_or(0, |m| m.n_bytes()) + self.output_norm.len() * 4
    }
}

fn check_shape(path: &Path, name: &str, got: &[u64], want: &[u64]) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Tensor {
            path: path.to_path_buf(),
            tensor: name.to_string(),
            msg: format!("shape {got:?} does not match the config, which implies {want:?}"),
        })
    }
}
