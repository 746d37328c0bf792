//! Model hyper-parameters as runtime data, read from GGUF metadata or a Hugging Face config.json.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// llama.cpp's "normal" mode: dimensions (2i, 2i+1) rotate together. GGUF llama checkpoints
    /// store q/k rows permuted so that this equals HF's rotate-half.
    Normal,
    /// GPT-NeoX mode: dimensions (i, i + n_rot/2) rotate together (qwen2 and HF order).
    Neox,
}

/// The shape of a llama-family decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// The GGUF architecture name (`llama` or `qwen2`).
    pub arch: String,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Dimensions of each head that rotate (`rope.dimension_count`), at most `head_dim`.
    pub rope_dim: usize,
    pub rope_mode: RopeMode,
    /// The context length the model was trained with.
    pub n_ctx_train: usize,
}

/// Architectures whose forward pass evalq implements.
pub const SUPPORTED_ARCHS: &[&str] = &["llama", "qwen2"];

impl LlamaConfig {
    /// Reads `{arch}.*` keys from a GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<LlamaConfig> {
        let arch = f.get_str("general.architecture")?.to_string();
        if !SUPPORTED_ARCHS.contains(&arch.as_str()) {
            return Err(Error::Config {
                path: f.path.clone(),
                field: "general.architecture".into(),
                msg: format!("unknown architecture '{arch}' (supported: {})", SUPPORTED_ARCHS.join(", ")),
            });
        }
        let prefix = arch.clone();
        let key = |k: &str| format!("{prefix}.{k}");
        let d_model = f.get_u64(&key("embedding_length"))? as usize;
        let n_head = f.get_u64(&key("attention.head_count"))? as usize;
        let n_kv_head = match f.get(&key("attention.head_count_kv")) {
            Some(_) => f.get_u64(&key("attention.head_count_kv"))? as usize,
            None => n_head,
        };
        let head_dim = if n_head > 0 { d_model / n_head } else { 0 };
        let rope_dim = match f.get(&key("rope.dimension_count")) {
            Some(_) => f.get_u64(&key("rope.dimension_count"))? as usize,
            None => head_dim,
        };
        let vocab_size = match f.get(&key("vocab_size")) {
            Some(_) => f.get_u64(&key("vocab_size"))? as usize,
            None => f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map_or(0, |a| a.len()),
        };
        let rope_base = match f.get(&key("rope.freq_base")) {
            Some(_) => f.get_f64(&key("rope.freq_base"))? as f32,
            None => 10000.0,
        };
        let cfg = LlamaConfig {
            rope_mode: if arch == "qwen2" { RopeMode::Neox } else { RopeMode::Normal },
            arch,
            n_layer: f.get_u64(&key("block_count"))? as usize,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            ffn_dim: f.get_u64(&key("feed_forward_length"))? as usize,
            vocab_size,
            rms_eps: f.get_f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
            rope_base,
            rope_dim,
            n_ctx_train: f.get_u64(&key("context_length"))? as usize,
        };
        cfg.validate(&f.path)?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_config(path: &Path) -> Result<LlamaConfig> {
        LlamaConfig::from_hf_json(path, &read_hf_json(path)?)
    }

    /// [`LlamaConfig::from_hf_config`] on a `config.json` already parsed (`v`, read from `path`).
    pub fn from_hf_json(path: &Path, v: &serde_json::Value) -> Result<LlamaConfig> {
        let field = |name: &str| -> Result<&serde_json::Value> {
            v.get(name).ok_or_else(|| Error::Config {
                path: path.to_path_buf(),
                field: name.into(),
                msg: "missing".into(),
            })
        };
        let uint = |name: &str| -> Result<usize> {
            field(name)?.as_u64().map(|x| x as usize).ok_or_else(|| Error::Config {
                path: path.to_path_buf(),
                field: name.into(),
                msg: "not a non-negative integer".into(),
            })
        };
        let float = |name: &str, default: f64| -> Result<f64> {
            match v.get(name) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(x) => x.as_f64().ok_or_else(|| Error::Config {
                    path: path.to_path_buf(),
                    field: name.into(),
                    msg: "not a number".into(),
                }),
            }
        };
        let model_type = field("model_type")?.as_str().unwrap_or("").to_string();
        let arch = match model_type.as_str() {
            "llama" | "mistral" => "llama",
            "qwen2" => "qwen2",
            other => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    field: "model_type".into(),
                    msg: format!("unknown architecture '{other}' (supported: llama, mistral, qwen2)"),
                })
            }
        };
        let d_model = uint("hidden_size")?;
        let n_head = uint("num_attention_heads")?;
        let n_kv_head = if v.get("num_key_value_heads").is_some() { uint("num_key_value_heads")? } else { n_head };
        let head_dim = if v.get("head_dim").is_some() { uint("head_dim")? } else if n_head > 0 { d_model / n_head } else { 0 };
        let cfg = LlamaConfig {
            arch: arch.to_string(),
            n_layer: uint("num_hidden_layers")?,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            ffn_dim: uint("intermediate_size")?,
            vocab_size: uint("vocab_size")?,
            rms_eps: float("rms_norm_eps", 1e-6)? as f32,
            rope_base: float("rope_theta", 10000.0)? as f32,
            rope_dim: head_dim,
            // HF q/k are in rotate-half order; the loader permutes llama's into GGUF order, so the
            // forward pass sees the same layout as for GGUF input.
            rope_mode: if arch == "qwen2" { RopeMode::Neox } else { RopeMode::Normal },
            n_ctx_train: if v.get("max_position_embeddings").is_some() { uint("max_position_embeddings")? } else { 2048 },
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Rejects shapes the forward pass cannot run, naming the field.
    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, msg: String| Err(Error::Config { path: path.to_path_buf(), field: field.into(), msg });
        // 1 << 20 is far beyond any real model and keeps buffer sizes bounded.
        let sane = |x: usize| x > 0 && x <= 1 << 20;
        if !sane(self.n_layer) || self.n_layer > 4096 {
            return bad("block_count", format!("{} is out of range", self.n_layer));
        }
        if !sane(self.d_model) {
            return bad("embedding_length", format!("{} is out of range", self.d_model));
        }
        if !sane(self.n_head) || !self.d_model.is_multiple_of(self.n_head) {
            return bad("attention.head_count", format!("{} does not divide embedding_length {}", self.n_head, self.d_model));
        }
        if !sane(self.n_kv_head) || !self.n_head.is_multiple_of(self.n_kv_head) {
            return bad("attention.head_count_kv", format!("{} does not divide head_count {}", self.n_kv_head, self.n_head));
        }
        if self.rope_dim == 0 || self.rope_dim > self.head_dim || !self.rope_dim.is_multiple_of(2) {
            return bad("rope.dimension_count", format!("{} must be even and at most head_dim {}", self.rope_dim, self.head_dim));
        }
        if !sane(self.ffn_dim) {
            return bad("feed_forward_length", format!("{} is out of range", self.ffn_dim));
        }
        if !sane(self.vocab_size) || self.vocab_size > 1 << 24 {
            return bad("vocab_size", format!("{} is out of range", self.vocab_size));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return bad("attention.layer_norm_rms_epsilon", format!("{} must be positive", self.rms_eps));
        }
        if !(self.rope_base.is_finite() && self.rope_base > 0.0) {
            return bad("rope.freq_base", format!("{} must be positive", self.rope_base));
        }
        Ok(())
    }

    /// Width of the key/value projections.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Width of the query projection.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}

/// Reads and parses a Hugging Face `config.json`; a syntax error names the file.
pub fn read_hf_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        field: "(json)".into(),
        msg: e.to_string(),
    })
}
