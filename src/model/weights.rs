//! The weights the forward pass runs on, in ggml layout: a matrix is `(rows = outputs,
//! cols = inputs)`, row-major, so `y = x · Wᵀ` reads each weight row contiguously.

use crate::error::{Error, Result};
use crate::kernels::matmul_f32;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::LlamaConfig;

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
}

impl Matrix {
    /// `y (n_tokens, rows) = x (n_tokens, cols) · selfᵀ`.
    pub fn matmul(&self, x: &[f32], y: &mut [f32], n_tokens: usize) {
        match &self.data {
            MatrixData::F32(w) => matmul_f32::matmul(x, w, y, n_tokens, self.cols, self.rows),
        }
    }

    /// Copies row `r` into `out` as f32 (used for embedding look-ups).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        match &self.data {
            MatrixData::F32(w) => out.copy_from_slice(&w[r * self.cols..(r + 1) * self.cols]),
        }
    }

    /// Bytes of weight storage.
    pub fn n_bytes(&self) -> usize {
        match &self.data {
            MatrixData::F32(w) => w.len() * 4,
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
    /// Loads every tensor from `ckpt` as f32, checking each shape against the config.
    pub fn load_f32(ckpt: &Checkpoint, config: &LlamaConfig) -> Result<LlamaWeights> {
        let c = config;
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<Matrix> {
            let t = ckpt.tensor_f32(name)?;
            check_shape(ckpt, name, &t.dims, &[cols as u64, rows as u64])?;
            Ok(Matrix { rows, cols, data: MatrixData::F32(t.data) })
        };
        let vector = |name: &str, n: usize| -> Result<Vec<f32>> {
            let t = ckpt.tensor_f32(name)?;
            check_shape(ckpt, name, &t.dims, &[n as u64])?;
            Ok(t.data)
        };
        let optional = |name: &str, n: usize| -> Result<Option<Vec<f32>>> {
            if ckpt.has_tensor(name) { vector(name, n).map(Some) } else { Ok(None) }
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
        let output = if ckpt.has_tensor("output.weight") {
            Some(matrix("output.weight", c.vocab_size, c.d_model)?)
        } else {
            None
        };
        Ok(LlamaWeights {
            config: c.clone(),
            tok_embd: matrix("token_embd.weight", c.vocab_size, c.d_model)?,
            layers,
            output_norm: vector("output_norm.weight", c.d_model)?,
            output,
        })
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
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down].iter().map(|m| m.n_bytes()).sum::<usize>()
                    + (l.attn_norm.len() + l.ffn_norm.len()) * 4
            })
            .sum();
        l + self.tok_embd.n_bytes() + self.output.as_ref().map_or(0, |m| m.n_bytes()) + self.output_norm.len() * 4
    }
}

fn check_shape(ckpt: &Checkpoint, name: &str, got: &[u64], want: &[u64]) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Tensor {
            path: ckpt.path().to_path_buf(),
            tensor: name.to_string(),
            msg: format!("shape {got:?} does not match the config, which implies {want:?}"),
        })
    }
}
