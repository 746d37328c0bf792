//! Hugging Face checkpoints: a directory with `config.json`, `tokenizer.json` and
//! `model.safetensors` (or shards listed in `model.safetensors.index.json`), in F32, F16 or BF16.
//!
//! Tensor names are mapped to GGUF's, and llama's q/k projections are permuted from HF's
//! rotate-half order into the interleaved order that GGUF llama files use (the inverse of what
//! `export` writes), so the forward pass sees one layout whatever the source.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::model::checkpoint::{Checkpoint, F32Tensor};
use crate::model::config::{LlamaConfig, RopeMode};

/// An opened Hugging Face model directory.
pub struct HfCheckpoint {
    pub dir: PathBuf,
    pub config: LlamaConfig,
    files: Vec<(PathBuf, Mmap)>,
    /// GGUF name → (index into `files`, HF name).
    index: BTreeMap<String, (usize, String)>,
}

impl HfCheckpoint {
    pub fn open(dir: &Path) -> Result<HfCheckpoint> {
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            return Err(Error::Config {
                path: config_path,
                field: "(file)".into(),
                msg: "missing: a Hugging Face model directory needs config.json".into(),
            });
        }
        let config = LlamaConfig::from_hf_config(&config_path)?;
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = if single.exists() {
            vec!["model.safetensors".into()]
        } else if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Safetensors { path: index_path.clone(), msg: e.to_string() })?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::Safetensors {
                path: index_path.clone(),
                msg: "no 'weight_map' object".into(),
            })?;
            let mut shards: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
            shards.sort();
            shards.dedup();
            shards
        } else {
            return Err(Error::Safetensors {
                path: single,
                msg: "missing: neither model.safetensors nor model.safetensors.index.json exists".into(),
            });
        };
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for shard in shard_names {
            if shard.contains('/') || shard.contains("..") {
                return Err(Error::Safetensors { path: index_path.clone(), msg: format!("shard name '{shard}' is not a plain file name") });
            }
            let path = dir.join(&shard);
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: read-only private mapping; the safetensors parser bounds-checks every
            // offset against the mapping's length.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| Error::Safetensors { path: path.clone(), msg: e.to_string() })?;
            for hf_name in st.names() {
                let Some(gguf) = hf_to_gguf_name(hf_name) else { continue };
                index.insert(gguf, (files.len(), hf_name.clone()));
            }
            files.push((path, mmap));
        }
        Ok(HfCheckpoint { dir: dir.to_path_buf(), config, files, index })
    }

    pub fn tensor_names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn view(&self, name: &str) -> Result<(&Path, TensorView<'_>)> {
        let (fi, hf_name) = self.index.get(name).ok_or_else(|| Error::Tensor {
            path: self.dir.clone(),
            tensor: name.to_string(),
            msg: "missing from the model".into(),
        })?;
        let (path, mmap) = &self.files[*fi];
        let st = SafeTensors::deserialize(mmap).map_err(|e| Error::Safetensors { path: path.clone(), msg: e.to_string() })?;
        let view = st.tensor(hf_name).map_err(|e| Error::Safetensors { path: path.clone(), msg: format!("{hf_name}: {e}") })?;
        Ok((path, view))
    }

    pub fn tensor_meta(&self, name: &str) -> Result<(GgmlType, Vec<u64>)> {
        let (path, view) = self.view(name)?;
        let ty = match view.dtype() {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            d => return Err(Error::Tensor { path: path.to_path_buf(), tensor: name.into(), msg: format!("dtype {d:?} is not F32, F16 or BF16") }),
        };
        Ok((ty, view.shape().iter().rev().map(|&d| d as u64).collect()))
    }

    pub fn tensor_f32(&self, name: &str) -> Result<F32Tensor> {
        let (path, view) = self.view(name)?;
        let bytes = view.data();
        let mut data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            d => {
                return Err(Error::Tensor {
                    path: path.to_path_buf(),
                    tensor: name.into(),
                    msg: format!("dtype {d:?} is not F32, F16 or BF16"),
                })
            }
        };
        let dims: Vec<u64> = view.shape().iter().rev().map(|&d| d as u64).collect();
        if let Some(n_head) = rope_permute_heads(&self.config, name) {
            data = permute_rows(&data, dims.get(1).copied().unwrap_or(1) as usize, dims[0] as usize, n_head, false)
                .map_err(|msg| Error::Tensor { path: path.to_path_buf(), tensor: name.into(), msg })?;
        }
        Ok(F32Tensor { dims, data })
    }
}

/// For llama q/k projections, the head count their rows are grouped by; `None` for every other
/// tensor (and for qwen2, which keeps HF's order and uses NeoX rope instead).
fn rope_permute_heads(c: &LlamaConfig, gguf_name: &str) -> Option<usize> {
    if c.rope_mode != RopeMode::Normal {
        return None;
    }
    if gguf_name.ends_with("attn_q.weight") {
        Some(c.n_head)
    } else if gguf_name.ends_with("attn_k.weight") {
        Some(c.n_kv_head)
    } else {
        None
    }
}

/// Reorders the rows of a `(rows, cols)` matrix between HF's rotate-half order and GGUF's
/// interleaved order. Within each head, GGUF row `2i + h` is HF row `h * head_dim/2 + i`.
/// `to_hf` selects the direction.
fn permute_rows(data: &[f32], rows: usize, cols: usize, n_head: usize, to_hf: bool) -> std::result::Result<Vec<f32>, String> {
    if n_head == 0 || !rows.is_multiple_of(n_head) || !(rows / n_head).is_multiple_of(2) {
        return Err(format!("{rows} rows cannot be split into {n_head} heads of even size"));
    }
    let hd = rows / n_head;
    let mut out = vec![0f32; data.len()];
    for head in 0..n_head {
        for i in 0..hd / 2 {
            for h in 0..2 {
                let gguf_row = head * hd + 2 * i + h;
                let hf_row = head * hd + h * (hd / 2) + i;
                let (src, dst) = if to_hf { (gguf_row, hf_row) } else { (hf_row, gguf_row) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

/// The GGUF name for an HF tensor name, or `None` for tensors evalq does not use
/// (e.g. `rotary_emb.inv_freq`).
pub fn hf_to_gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let gguf = LAYER_NAMES.iter().find(|(h, _)| *h == module)?.1;
    Some(format!("blk.{layer}.{gguf}.{kind}"))
}

/// The HF tensor name for a GGUF name.
pub fn gguf_to_hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let hf = LAYER_NAMES.iter().find(|(_, g)| *g == module)?.0;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// (HF module, GGUF module) within a decoder layer.
const LAYER_NAMES: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Element type of an exported safetensors file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportDtype {
    F32,
    F16,
    BF16,
}

/// Writes `ckpt` as a Hugging Face directory: `model.safetensors`, `config.json`,
/// `tokenizer.json` and `tokenizer_config.json`. Every file is written atomically.
pub fn export_safetensors(ckpt: &Checkpoint, dir: &Path, dtype: ExportDtype) -> Result<()> {
    let config = ckpt.config()?;
    let tokenizer = ckpt.tokenizer()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in ckpt.tensor_names() {
        let Some(hf_name) = gguf_to_hf_name(&name) else { continue };
        let t = ckpt.tensor_f32(&name)?;
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        let data = match rope_permute_heads(&config, &name) {
            Some(n_head) => permute_rows(&t.data, shape[0], shape[1], n_head, true)
                .map_err(|msg| Error::Tensor { path: ckpt.path().to_path_buf(), tensor: name.clone(), msg })?,
            None => t.data,
        };
        let bytes: Vec<u8> = match dtype {
            ExportDtype::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ExportDtype::F16 => data.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            ExportDtype::BF16 => data.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        };
        tensors.push((hf_name, shape, bytes));
    }
    let st_dtype = match dtype {
        ExportDtype::F32 => Dtype::F32,
        ExportDtype::F16 => Dtype::F16,
        ExportDtype::BF16 => Dtype::BF16,
    };
    let views = tensors
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(st_dtype, s.clone(), b).map_err(|e| Error::Invalid(e.to_string()))?)))
        .collect::<Result<Vec<_>>>()?;
    let meta: Option<HashMap<String, String>> = Some([("format".to_string(), "pt".to_string())].into());
    let st_path = dir.join("model.safetensors");
    let bytes = safetensors::serialize(views, &meta).map_err(|e| Error::Safetensors { path: st_path.clone(), msg: e.to_string() })?;
    crate::util::write_bytes_atomic(&st_path, &bytes)?;

    let tied = !ckpt.has_tensor("output.weight");
    let torch_dtype = match dtype {
        ExportDtype::F32 => "float32",
        ExportDtype::F16 => "float16",
        ExportDtype::BF16 => "bfloat16",
    };
    let cfg = serde_json::json!({
        "architectures": [if config.arch == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "model_type": config.arch,
        "hidden_size": config.d_model,
        "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "rms_norm_eps": config.rms_eps as f64,
        "rope_theta": config.rope_base as f64,
        "max_position_embeddings": config.n_ctx_train,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "torch_dtype": torch_dtype,
        "bos_token_id": tokenizer.bos_id(),
        "eos_token_id": tokenizer.eos_id(),
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("json values serialize");
    crate::util::write_bytes_atomic(&dir.join("config.json"), pretty(&cfg).as_bytes())?;
    crate::util::write_bytes_atomic(&dir.join("tokenizer.json"), tokenizer.to_json()?.as_bytes())?;
    crate::util::write_bytes_atomic(&dir.join("tokenizer_config.json"), tokenizer.to_config_json()?.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for g in ["token_embd.weight", "output.weight", "output_norm.weight", "blk.7.attn_q.weight", "blk.29.ffn_down.weight", "blk.0.attn_k.bias"] {
            let hf = gguf_to_hf_name(g).unwrap();
            assert_eq!(hf_to_gguf_name(&hf).as_deref(), Some(g), "{hf}");
        }
        assert_eq!(hf_to_gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq"), None);
    }

    #[test]
    fn permutation_inverts() {
        let (rows, cols, heads) = (12, 3, 2);
        let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let hf = permute_rows(&data, rows, cols, heads, true).unwrap();
        assert_ne!(hf, data);
        assert_eq!(permute_rows(&hf, rows, cols, heads, false).unwrap(), data);
        // Head 0, HF row 1 (first half, i = 1) is GGUF row 2.
        assert_eq!(hf[cols..2 * cols], data[2 * cols..3 * cols]);
        assert!(permute_rows(&data, 10, cols, 4, true).is_err());
    }
}
