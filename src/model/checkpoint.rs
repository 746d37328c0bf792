//! A checkpoint: named tensors plus config and tokenizer, from a GGUF file or a Hugging Face
//! directory. Tensor names are always GGUF's (`blk.0.attn_q.weight`), whatever the source.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::formats;
use crate::gguf::{GgmlType, GgufFile};
use crate::model::config::LlamaConfig;
use crate::model::hf::HfCheckpoint;
use crate::model::tokenizer::Tokenizer;

/// A tensor expanded to f32, with ggml dims (`dims[0]` is the contiguous dimension).
pub struct F32Tensor {
    pub dims: Vec<u64>,
    pub data: Vec<f32>,
}

/// A model on disk, opened.
pub enum Checkpoint {
    Gguf(GgufFile),
    Hf(HfCheckpoint),
}

impl Checkpoint {
    /// Opens a GGUF file, or a directory holding `config.json` and safetensors.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        if path.is_dir() {
            Ok(Checkpoint::Hf(HfCheckpoint::open(path)?))
        } else if path.exists() {
            Ok(Checkpoint::Gguf(GgufFile::open(path)?))
        } else {
            Err(Error::Invalid(format!("model '{}' does not exist", path.display())))
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Checkpoint::Gguf(f) => &f.path,
            Checkpoint::Hf(h) => &h.dir,
        }
    }

    pub fn config(&self) -> Result<LlamaConfig> {
        match self {
            Checkpoint::Gguf(f) => LlamaConfig::from_gguf(f),
            Checkpoint::Hf(h) => Ok(h.config.clone()),
        }
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        match self {
            Checkpoint::Gguf(f) => Tokenizer::from_gguf(f),
            Checkpoint::Hf(h) => {
                let p = h.dir.join("tokenizer.json");
                if !p.exists() {
                    return Err(Error::Tokenizer {
                        path: p,
                        msg: "missing: a Hugging Face model directory needs tokenizer.json".into(),
                    });
                }
                Tokenizer::from_file(&p)
            }
        }
    }

    /// GGUF names of every tensor, in file order.
    pub fn tensor_names(&self) -> Vec<String> {
        match self {
            Checkpoint::Gguf(f) => f.tensors.iter().map(|t| t.name.clone()).collect(),
            Checkpoint::Hf(h) => h.tensor_names(),
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        match self {
            Checkpoint::Gguf(f) => f.tensor(name).is_some(),
            Checkpoint::Hf(h) => h.has_tensor(name),
        }
    }

    /// The storage type and ggml dims of a tensor.
    pub fn tensor_meta(&self, name: &str) -> Result<(GgmlType, Vec<u64>)> {
        match self {
            Checkpoint::Gguf(f) => {
                let t = f.tensor(name).ok_or_else(|| self.missing(name))?;
                Ok((t.ty, t.dims.clone()))
            }
            Checkpoint::Hf(h) => h.tensor_meta(name),
        }
    }

    /// A tensor dequantized (or converted) to f32.
    pub fn tensor_f32(&self, name: &str) -> Result<F32Tensor> {
        match self {
            Checkpoint::Gguf(f) => {
                let t = f.tensor(name).ok_or_else(|| self.missing(name))?;
                let mut data = vec![0f32; t.n_elements as usize];
                formats::dequantize(t.ty, f.tensor_data(t), &mut data).map_err(|msg| Error::Tensor {
                    path: f.path.clone(),
                    tensor: name.to_string(),
                    msg,
                })?;
                Ok(F32Tensor { dims: t.dims.clone(), data })
            }
            Checkpoint::Hf(h) => h.tensor_f32(name),
        }
    }

    /// [`Checkpoint::tensor_f32`] without a copy where the file already holds the tensor as
    /// aligned little-endian f32 (a GGUF F32 source): its dims and values, borrowed from the
    /// mapped file or else converted.
    pub fn tensor_f32_cow(&self, name: &str) -> Result<(Vec<u64>, Cow<'_, [f32]>)> {
        if let Checkpoint::Gguf(f) = self {
            let t = f.tensor(name).ok_or_else(|| self.missing(name))?;
            if t.ty == GgmlType::F32 && cfg!(target_endian = "little") {
                let bytes = f.tensor_data(t);
                // SAFETY: every bit pattern is a valid f32; `align_to` only hands out the
                // aligned middle, and the prefix and suffix are checked to be empty.
                let (pre, data, post) = unsafe { bytes.align_to::<f32>() };
                if pre.is_empty() && post.is_empty() && data.len() as u64 == t.n_elements {
                    return Ok((t.dims.clone(), Cow::Borrowed(data)));
                }
            }
        }
        let t = self.tensor_f32(name)?;
        Ok((t.dims, Cow::Owned(t.data)))
    }

    fn missing(&self, name: &str) -> Error {
        Error::Tensor { path: self.path().to_path_buf(), tensor: name.to_string(), msg: "missing from the model".into() }
    }

    /// How many tensors of each storage type, and how many weights they hold.
    pub fn type_histogram(&self) -> Result<BTreeMap<GgmlType, (usize, u64)>> {
        let mut h = BTreeMap::new();
        for name in self.tensor_names() {
            let (ty, dims) = self.tensor_meta(&name)?;
            let e = h.entry(ty).or_insert((0usize, 0u64));
            e.0 += 1;
            e.1 += dims.iter().product::<u64>();
        }
        Ok(h)
    }

    /// One line saying where the weights came from and what evalq did to them, for reports.
    pub fn describe_source(&self) -> Result<String> {
        let hist = self.type_histogram()?;
        let types: Vec<String> = hist.iter().map(|(t, (n, _))| format!("{n}×{t}")).collect();
        let kind = match self {
            Checkpoint::Gguf(_) => "GGUF",
            Checkpoint::Hf(_) => "safetensors",
        };
        let lossy = hist.keys().any(|t| !matches!(t, GgmlType::F32));
        Ok(format!(
            "{kind} {} ({}){}",
            self.path().display(),
            types.join(", "),
            if lossy { ", dequantized to an F32 source" } else { "" }
        ))
    }

    /// The model's file, or for a directory the directory, for provenance.
    pub fn source_path(&self) -> PathBuf {
        self.path().to_path_buf()
    }
}
