//! llama.cpp's file types ("mixes") and its per-tensor type rules.
//!
//! A file type such as `Q4_K_M` is not one block format: llama-quantize picks a type per tensor
//! from the file type's base type, the tensor's role (attention V, FFN down, output, ...), its
//! position among the layers, and its row length. This module reproduces that choice exactly as
//! `src/llama-quant.cpp` makes it (`llama_tensor_get_type`, `llama_tensor_get_type_impl`,
//! `tensor_type_fallback`, `tensor_allows_quantization`, `llama_ftype_get_default_type`) for the
//! file types evalq writes, for llama-architecture models without an importance matrix. It only
//! decides types; the quantization itself lives elsewhere.
//!
//! The rules that matter, in llama.cpp's order:
//! 1. Only tensors whose name ends in `weight`, with at least two non-trivial dimensions, that are
//!    not norms (`*_norm.weight`) nor a handful of small special tensors, are quantized; every
//!    other tensor keeps its type (F32 here: the pipeline's source is F32, as llama.cpp's
//!    reference files are made from an F32 GGUF).
//! 2. `--token-embedding-type` / `--output-tensor-type` ([`MixOptions`]) win outright, with no
//!    shape fallback.
//! 3. F32, F16 and BF16 file types give every quantizable tensor the base type and stop there.
//! 4. Unless `pure`, the mix rules of `llama_tensor_get_type_impl` adjust the type. The output
//!    tensor, and `token_embd` when the model has no `output.weight` (tied embeddings), gets
//!    Q8_0 if its row length is not a multiple of the base type's block, else Q6_K (unless the
//!    base type is already Q8_0). Attention-V and FFN-down get more bits in some layers; the
//!    layer is a running counter over the tensors of that role in llama.cpp's processing order
//!    (`use_more_bits`: the first and last eighth of the layers and every third one between).
//! 5. Finally a row length that is not a multiple of the chosen type's block falls back to a
//!    32-block type (q2_K/q3_K → q4_0, q4_K → q5_0, q5_K → q5_1, q6_K → q8_0, iq4_xs → iq4_nl),
//!    or to F16 when even that does not fit.
//!
//! llama-quantize processes tensors sorted by layer number, then by name
//! ([`llama_tensor_order`]), not in file order; the counters above depend on it.

use std::cmp::Ordering;
use std::fmt;

use crate::gguf::GgmlType;
use crate::{Error, Result};

/// A llama.cpp file type (`enum llama_ftype`), as passed to llama-quantize.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q6_K,
    Q5_K_M,
    Q5_K_S,
    Q5_0,
    Q5_1,
    Q4_K_M,
    Q4_K_S,
    Q4_0,
    Q4_1,
    Q3_K_L,
    Q3_K_M,
    Q3_K_S,
    Q2_K,
    IQ4_NL,
    IQ4_XS,
}

const ALL_FILE_TYPES: [FileType; 19] = [
    FileType::F32,
    FileType::F16,
    FileType::BF16,
    FileType::Q8_0,
    FileType::Q6_K,
    FileType::Q5_K_M,
    FileType::Q5_K_S,
    FileType::Q5_0,
    FileType::Q5_1,
    FileType::Q4_K_M,
    FileType::Q4_K_S,
    FileType::Q4_0,
    FileType::Q4_1,
    FileType::Q3_K_L,
    FileType::Q3_K_M,
    FileType::Q3_K_S,
    FileType::Q2_K,
    FileType::IQ4_NL,
    FileType::IQ4_XS,
];

impl FileType {
    /// Every file type evalq knows, from the largest to the smallest.
    pub fn all() -> &'static [FileType] {
        &ALL_FILE_TYPES
    }

    /// The name llama-quantize uses (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::BF16 => "BF16",
            FileType::Q8_0 => "Q8_0",
            FileType::Q6_K => "Q6_K",
            FileType::Q5_K_M => "Q5_K_M",
            FileType::Q5_K_S => "Q5_K_S",
            FileType::Q5_0 => "Q5_0",
            FileType::Q5_1 => "Q5_1",
            FileType::Q4_K_M => "Q4_K_M",
            FileType::Q4_K_S => "Q4_K_S",
            FileType::Q4_0 => "Q4_0",
            FileType::Q4_1 => "Q4_1",
            FileType::Q3_K_L => "Q3_K_L",
            FileType::Q3_K_M => "Q3_K_M",
            FileType::Q3_K_S => "Q3_K_S",
            FileType::Q2_K => "Q2_K",
            FileType::IQ4_NL => "IQ4_NL",
            FileType::IQ4_XS => "IQ4_XS",
        }
    }

    /// The file type named `name` (case-insensitive), also accepting llama-quantize's aliases
    /// `Q3_K`, `Q4_K` and `Q5_K` for the `_M` variants. `Q4_K_L` and `_pure` are options, not file
    /// types: see [`parse_file_type`].
    pub fn from_name(name: &str) -> Option<FileType> {
        let name = name.trim();
        let alias = match name.to_ascii_uppercase().as_str() {
            "Q3_K" => Some(FileType::Q3_K_M),
            "Q4_K" => Some(FileType::Q4_K_M),
            "Q5_K" => Some(FileType::Q5_K_M),
            _ => None,
        };
        alias.or_else(|| ALL_FILE_TYPES.into_iter().find(|t| t.name().eq_ignore_ascii_case(name)))
    }

    /// The value of `general.file_type` (`LLAMA_FTYPE_*`).
    pub fn gguf_id(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2_K => 10,
            FileType::Q3_K_S => 11,
            FileType::Q3_K_M => 12,
            FileType::Q3_K_L => 13,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_S => 16,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::IQ4_NL => 25,
            FileType::IQ4_XS => 30,
            FileType::BF16 => 32,
        }
    }

    /// The file type with `general.file_type` `id`, if evalq knows it.
    pub fn from_gguf_id(id: u32) -> Option<FileType> {
        ALL_FILE_TYPES.into_iter().find(|t| t.gguf_id() == id)
    }

    /// The default tensor type (`llama_ftype_get_default_type`).
    pub fn base_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q6_K => GgmlType::Q6_K,
            FileType::Q5_K_M | FileType::Q5_K_S => GgmlType::Q5_K,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q4_K_M | FileType::Q4_K_S => GgmlType::Q4_K,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q3_K_L | FileType::Q3_K_M | FileType::Q3_K_S => GgmlType::Q3_K,
            FileType::Q2_K => GgmlType::Q2_K,
            FileType::IQ4_NL => GgmlType::IQ4_NL,
            FileType::IQ4_XS => GgmlType::IQ4_XS,
        }
    }

    /// Whether the base type is a block-quantized one (not F32/F16/BF16); only then do the mix
    /// rules and the shape fallback apply.
    pub fn is_quantized(self) -> bool {
        is_quantized(self.base_type())
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// llama-quantize's options that change the per-tensor choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MixOptions {
    /// `--pure`: no mix rules; every quantizable tensor gets the base type (shape fallback still
    /// applies).
    pub pure: bool,
    /// `--token-embedding-type`: the type of `token_embd.weight`, used as is.
    pub token_embd_type: Option<GgmlType>,
    /// `--output-tensor-type`: the type of `output.weight`, used as is.
    pub output_type: Option<GgmlType>,
}

/// The decision for one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    /// The tensor's name.
    pub name: String,
    /// Its ggml dimensions (`dims[0]` is the row length).
    pub dims: Vec<u64>,
    /// The type it is stored in.
    pub ty: GgmlType,
    /// Why `ty` is not simply the file type's base type, if it is not, in llama.cpp's words where
    /// it has them (`ncols    576 not divisible by 256 (required for type q4_K) -> falling back
    /// to q5_0`).
    pub reason: Option<String>,
    /// When the shape fallback applied (llama-quantize's "falling back" warning): the type the
    /// rules chose before it.
    pub fallback_from: Option<GgmlType>,
}

/// Parses a file-type name as evalq accepts it: any [`FileType`] name (case-insensitive, with
/// the `Q3_K`/`Q4_K`/`Q5_K` aliases), `Q4_K_L` (Q4_K_M with a Q8_0 `token_embd`, llama-quantize
/// `--token-embedding-type q8_0`), each optionally suffixed `_pure` (`--pure`).
pub fn parse_file_type(name: &str) -> Result<(FileType, MixOptions)> {
    let upper = name.trim().to_ascii_uppercase();
    let (base, pure) = match upper.strip_suffix("_PURE") {
        Some(b) => (b, true),
        None => (upper.as_str(), false),
    };
    let mut opts = MixOptions { pure, ..MixOptions::default() };
    let ftype = if base == "Q4_K_L" {
        opts.token_embd_type = Some(GgmlType::Q8_0);
        Some(FileType::Q4_K_M)
    } else {
        FileType::from_name(base)
    };
    match ftype {
        Some(t) => Ok((t, opts)),
        None => Err(Error::Invalid(format!(
            "unknown file type '{}'; valid: {} (any of them may end in _pure for llama-quantize --pure)",
            name.trim(),
            file_type_names().join(", ")
        ))),
    }
}

/// The names [`parse_file_type`] accepts (without `_pure` and aliases), largest first.
pub fn file_type_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for t in ALL_FILE_TYPES {
        if t == FileType::Q4_K_S {
            v.push("Q4_K_L");
        }
        v.push(t.name());
    }
    v
}

/// The inverse of [`parse_file_type`] for the combinations it produces (`Q4_K_L`,
/// `Q4_K_M_pure`); other option combinations are spelled out.
pub fn mix_name(ftype: FileType, opts: &MixOptions) -> String {
    let mut s = match (ftype, opts.token_embd_type, opts.output_type) {
        (FileType::Q4_K_M, Some(GgmlType::Q8_0), None) => "Q4_K_L".to_string(),
        (t, None, None) => t.name().to_string(),
        (t, te, out) => {
            let mut s = t.name().to_string();
            if let Some(te) = te {
                s.push_str(&format!("+token_embd={}", ggml_type_name(te)));
            }
            if let Some(o) = out {
                s.push_str(&format!("+output={}", ggml_type_name(o)));
            }
            s
        }
    };
    if opts.pure {
        s.push_str("_pure");
    }
    s
}

/// A type's name as ggml prints it (`ggml_type_name`: `q4_K`, `q5_0`, `iq4_xs`, `f32`).
pub fn ggml_type_name(t: GgmlType) -> String {
    let lower = t.name().to_ascii_lowercase();
    match lower.strip_suffix("_k") {
        Some(stem) => format!("{stem}_K"),
        None => lower,
    }
}

/// The order llama-quantize processes (and writes) tensors in: by the layer number of a
/// `blk.N.` prefix (tensors without one first), then by name. Returns indices into `names`.
pub fn llama_tensor_order<S: AsRef<str>>(names: &[S]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..names.len()).collect();
    idx.sort_by(|&a, &b| compare_weight_names(names[a].as_ref(), names[b].as_ref()));
    idx
}

/// `llama_model_loader::weight_name_comparer`.
fn compare_weight_names(a: &str, b: &str) -> Ordering {
    let la = scan_layer(a).unwrap_or(-1);
    let lb = scan_layer(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// `sscanf(name, "blk.%d.", &layer)`: the integer after a `blk.` prefix.
fn scan_layer(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    let v: i64 = digits[..n].parse().unwrap_or(i64::MAX);
    Some(if neg { -v } else { v })
}

fn is_quantized(t: GgmlType) -> bool {
    !matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// `tensor_category` in llama-quant.cpp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    fn of(name: &str) -> Category {
        if name == "output.weight" {
            Category::Output
        } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            Category::TokenEmbd
        } else if name.contains("attn_qkv.weight") {
            Category::AttnQkv
        } else if name.contains("attn_kv_b.weight") {
            Category::AttnKvB
        } else if name.contains("attn_v.weight") {
            Category::AttnV
        } else if name.contains("attn_k.weight") {
            Category::AttnK
        } else if name.contains("attn_q.weight") {
            Category::AttnQ
        } else if name.contains("attn_output.weight") {
            Category::AttnOutput
        } else if name.contains("ffn_up") {
            Category::FfnUp
        } else if name.contains("ffn_gate") {
            Category::FfnGate
        } else if name.contains("ffn_down") {
            Category::FfnDown
        } else {
            Category::Other
        }
    }

    /// `category_is_attn_v`: the tensors holding V, which are more sensitive to quantization.
    fn is_attn_v(self) -> bool {
        matches!(self, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
    }
}

/// `ggml_n_dims`: 1 + the index of the last dimension larger than 1.
fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// Name fragments of 2-D weights that llama.cpp never quantizes (`tensor_allows_quantization`,
/// minus the entries specific to architectures evalq does not load).
const NEVER_QUANTIZED: &[(&str, &str)] = &[
    ("_norm.weight", "norm tensor"),
    ("ffn_gate_inp.weight", "expert gating tensor"),
    ("ffn_gate_tid2eid.weight", "expert routing table"),
    ("altup", "small altup tensor"),
    ("laurel", "small laurel tensor"),
    ("per_layer_model_proj", "per-layer model projection"),
    ("ssm_conv1d", "small conv1d tensor"),
    ("shortconv.conv.weight", "small conv tensor"),
    ("indexer.k_proj.weight", "small indexer projection"),
    ("indexer.q_proj.weight", "small indexer projection"),
    ("time_mix_first.weight", "small RWKV tensor"),
    ("time_mix_w0.weight", "small RWKV tensor"),
    ("time_mix_w1.weight", "small RWKV tensor"),
    ("time_mix_w2.weight", "small RWKV tensor"),
    ("time_mix_v0.weight", "small RWKV tensor"),
    ("time_mix_v1.weight", "small RWKV tensor"),
    ("time_mix_v2.weight", "small RWKV tensor"),
    ("time_mix_a0.weight", "small RWKV tensor"),
    ("time_mix_a1.weight", "small RWKV tensor"),
    ("time_mix_a2.weight", "small RWKV tensor"),
    ("time_mix_g1.weight", "small RWKV tensor"),
    ("time_mix_g2.weight", "small RWKV tensor"),
    ("time_mix_decay_w1.weight", "small RWKV tensor"),
    ("time_mix_decay_w2.weight", "small RWKV tensor"),
    ("time_mix_lerp_fused.weight", "small RWKV tensor"),
    ("attn_rel_b.weight", "relative position bias"),
    (".position_embd", "multimodal position embedding"),
    ("sam.pos_embd", "multimodal position embedding"),
    ("sam.neck.", "multimodal tensor"),
    ("sam.net_", "multimodal tensor"),
    (".rel_pos", "multimodal tensor"),
    (".patch_embd", "multimodal patch embedding"),
    (".patch_merger", "multimodal patch merger"),
    ("a.rvq.codebook", "audio codebook"),
    ("mm.a.code_embd", "audio codebook"),
];

/// `tensor_allows_quantization`: `Err(why not)` for tensors that keep their type.
fn allows_quantization(name: &str, dims: &[u64]) -> std::result::Result<(), &'static str> {
    if n_dims(dims) < 2 {
        return Err("1-D tensor");
    }
    if !name.ends_with("weight") {
        return Err("not a weight");
    }
    if let Some((_, why)) = NEVER_QUANTIZED.iter().find(|(frag, _)| name.contains(frag)) {
        return Err(why);
    }
    if name == "position_embd.weight" || name == "token_types.weight" {
        return Err("position/token-type embedding");
    }
    Ok(())
}

/// `use_more_bits`: the first and last eighth of the layers, and every third layer between.
fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// `quantize_state_impl`: the counters and model facts the rules look at.
struct State {
    n_attention_wv: i64,
    i_attention_wv: i64,
    n_ffn_down: i64,
    i_ffn_down: i64,
    n_ffn_gate: i64,
    i_ffn_gate: i64,
    n_ffn_up: i64,
    i_ffn_up: i64,
    has_tied_embeddings: bool,
    n_gqa: u64,
    n_expert: u64,
    /// `model.type == LLM_TYPE_70B` (llama: 80 layers with grouped-query attention, no 8 experts).
    is_70b: bool,
}

impl State {
    /// `layer_info`: the counter, except for MoE models where the layer comes from the name.
    fn layer_info(&self, counter: i64, n_layer: i64, name: &str) -> Result<(i64, i64)> {
        if self.n_expert.max(1) > 1 {
            let i = scan_layer(name)
                .ok_or_else(|| Error::Invalid(format!("failed to determine layer for tensor {name}")))?;
            if i < 0 || i >= n_layer {
                return Err(Error::Invalid(format!("bad layer {i} for tensor {name}; must be in [0, {n_layer})")));
            }
            return Ok((i, n_layer));
        }
        Ok((counter, n_layer))
    }
}

/// `llama_tensor_get_type_impl` for llama-architecture models and evalq's file types, without an
/// importance matrix. Returns the type and, when the rules changed it, why.
fn mix_rule(
    qs: &mut State,
    new_type: GgmlType,
    name: &str,
    nx: u64,
    ftype: FileType,
    opts: &MixOptions,
    cat: Category,
) -> Result<(GgmlType, Option<String>)> {
    use FileType as F;
    use GgmlType as G;
    let mut ty = new_type;
    let mut why: Option<String> = None;
    let mut set = |t: GgmlType, w: String, ty: &mut GgmlType| {
        *ty = t;
        why = Some(w);
    };

    if cat == Category::Output || (qs.has_tied_embeddings && cat == Category::TokenEmbd) {
        let role = if cat == Category::Output { "output tensor" } else { "token_embd tied to the output" };
        if let Some(t) = opts.output_type {
            set(t, format!("{role}: --output-tensor-type {}", ggml_type_name(t)), &mut ty);
        } else {
            let qk = ty.block_size() as u64;
            if !nx.is_multiple_of(qk) {
                set(
                    G::Q8_0,
                    format!("{role}: ncols {nx} not divisible by {qk} ({}) -> q8_0", ggml_type_name(ty)),
                    &mut ty,
                );
            } else if ty != G::Q8_0 {
                set(G::Q6_K, format!("{role} -> q6_K"), &mut ty);
            }
        }
    } else if cat == Category::TokenEmbd {
        // An explicit --token-embedding-type returned earlier; no evalq file type changes it.
        if let Some(t) = opts.token_embd_type {
            set(t, format!("--token-embedding-type {}", ggml_type_name(t)), &mut ty);
        }
    } else if cat.is_attn_v() {
        let (i, n) = (qs.i_attention_wv, qs.n_attention_wv);
        let more = use_more_bits(i, n);
        let rule = match ftype {
            F::Q2_K => Some((if qs.n_gqa >= 4 { G::Q4_K } else { G::Q3_K }, "Q2_K attn_v".to_string())),
            F::Q3_K_M => Some(if i < 2 {
                (G::Q5_K, format!("Q3_K_M attn_v #{i} < 2"))
            } else {
                (G::Q4_K, "Q3_K_M attn_v".to_string())
            }),
            F::Q3_K_L => Some((G::Q5_K, "Q3_K_L attn_v".to_string())),
            F::IQ4_NL | F::IQ4_XS if qs.n_gqa >= 4 => Some((G::Q5_K, format!("{ftype} attn_v with n_gqa >= 4"))),
            F::Q4_K_M | F::Q5_K_M if more => {
                Some((G::Q6_K, format!("{ftype} attn_v #{i} of {n}: use_more_bits layer")))
            }
            F::Q4_K_S if i < 4 => Some((G::Q5_K, format!("Q4_K_S attn_v #{i} < 4"))),
            _ => None,
        };
        if let Some((t, w)) = rule {
            set(t, format!("{w} -> {}", ggml_type_name(t)), &mut ty);
        }
        if qs.is_70b && (ty == G::Q3_K || ty == G::Q4_K) {
            set(G::Q5_K, "70B model attn_v -> q5_K".to_string(), &mut ty);
        }
        if qs.n_expert == 8 {
            set(G::Q8_0, "8-expert model attn_v -> q8_0".to_string(), &mut ty);
        }
        qs.i_attention_wv += 1;
    } else if cat == Category::AttnK {
        if qs.n_expert == 8 {
            set(G::Q8_0, "8-expert model attn_k -> q8_0".to_string(), &mut ty);
        }
    } else if cat == Category::AttnQ {
        // Only the IQ3 file types change attn_q.
    } else if cat == Category::FfnDown {
        let (i, n) = qs.layer_info(qs.i_ffn_down, qs.n_ffn_down, name)?;
        let rule = match ftype {
            F::Q2_K => Some((G::Q3_K, "Q2_K ffn_down".to_string())),
            F::Q3_K_M => Some(if i < n / 16 {
                (G::Q5_K, format!("Q3_K_M ffn_down layer {i} < n_layer/16"))
            } else {
                (G::Q4_K, "Q3_K_M ffn_down".to_string())
            }),
            F::Q3_K_L => Some((G::Q5_K, "Q3_K_L ffn_down".to_string())),
            F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => {
                Some((G::Q6_K, format!("{ftype} ffn_down layer {i} of {n}: use_more_bits layer")))
            }
            F::IQ4_NL | F::IQ4_XS if i < n / 8 => {
                Some((G::Q5_K, format!("{ftype} ffn_down layer {i} < n_layer/8 (no imatrix)")))
            }
            F::Q4_K_S if i < n / 8 => Some((G::Q5_K, format!("Q4_K_S ffn_down layer {i} < n_layer/8"))),
            _ => None,
        };
        if let Some((t, w)) = rule {
            set(t, format!("{w} -> {}", ggml_type_name(t)), &mut ty);
        }
        qs.i_ffn_down += 1;
    } else if cat == Category::AttnOutput {
        if qs.n_expert == 8 {
            if matches!(ftype, F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::IQ4_NL | F::Q4_K_S | F::Q4_K_M | F::IQ4_XS) {
                set(G::Q5_K, format!("8-expert model {ftype} attn_output -> q5_K"), &mut ty);
            }
        } else {
            let t = match ftype {
                F::Q2_K => Some(G::Q3_K),
                F::Q3_K_M => Some(G::Q4_K),
                F::Q3_K_L => Some(G::Q5_K),
                _ => None,
            };
            if let Some(t) = t {
                set(t, format!("{ftype} attn_output -> {}", ggml_type_name(t)), &mut ty);
            }
        }
    } else if cat == Category::FfnGate {
        // Only IQ3_XS changes ffn_gate, but the counter (and MoE layer check) runs regardless.
        qs.layer_info(qs.i_ffn_gate, qs.n_ffn_gate, name)?;
        qs.i_ffn_gate += 1;
    } else if cat == Category::FfnUp {
        qs.layer_info(qs.i_ffn_up, qs.n_ffn_up, name)?;
        qs.i_ffn_up += 1;
    }
    // (llama.cpp's separate attn_qkv branch is unreachable: attn_qkv is caught as attn_v above.)
    Ok((ty, why))
}

/// `tensor_type_fallback`: a type whose block does not divide the row length falls back to a
/// 32-block type, or F16. Returns the type and llama.cpp's warning when it applied.
fn shape_fallback(nx: u64, target: GgmlType) -> Result<(GgmlType, Option<String>)> {
    let qk = target.block_size() as u64;
    if nx.is_multiple_of(qk) {
        return Ok((target, None));
    }
    let mut ret = match target {
        GgmlType::IQ4_XS => GgmlType::IQ4_NL,
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        t if qk <= 32 => t,
        t => return Err(Error::Invalid(format!("no tensor type fallback is defined for type {}", ggml_type_name(t)))),
    };
    let mut msg = format!("ncols {nx:6} not divisible by {qk:3} (required for type {:>7}) ", ggml_type_name(target));
    if !nx.is_multiple_of(ret.block_size() as u64) {
        msg.push_str("(WARNING: must use F16 due to unusual shape) ");
        ret = GgmlType::F16;
    }
    msg.push_str(&format!("-> falling back to {:>7}", ggml_type_name(ret)));
    Ok((ret, Some(msg)))
}

/// Plans every tensor of a model for `ftype`: `tensors` are (name, ggml dims) in any order (the
/// result keeps it); `n_layer`, `n_head`, `n_kv_head` and `n_expert` (0 for dense models) come
/// from the model's config. Tensors that are not quantized are planned as F32 (the source type
/// of evalq's pipeline). Errors only for MoE tensors whose layer cannot be read from the name.
pub fn plan(
    ftype: FileType,
    opts: &MixOptions,
    tensors: &[(String, Vec<u64>)],
    n_layer: usize,
    n_head: usize,
    n_kv_head: usize,
    n_expert: usize,
) -> Result<Vec<TensorPlan>> {
    let cats: Vec<Category> = tensors.iter().map(|(n, _)| Category::of(n)).collect();
    let n_layer = n_layer as i64;
    let mut qs = State {
        n_attention_wv: cats.iter().filter(|c| c.is_attn_v()).count() as i64,
        i_attention_wv: 0,
        n_ffn_down: n_layer,
        i_ffn_down: 0,
        n_ffn_gate: n_layer,
        i_ffn_gate: 0,
        n_ffn_up: n_layer,
        i_ffn_up: 0,
        has_tied_embeddings: !cats.contains(&Category::Output),
        n_gqa: n_head.checked_div(n_kv_head).unwrap_or(0) as u64,
        n_expert: n_expert as u64,
        is_70b: n_layer == 80 && n_head != n_kv_head && n_expert != 8,
    };
    let default_type = ftype.base_type();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let mut out: Vec<Option<TensorPlan>> = vec![None; tensors.len()];
    for i in llama_tensor_order(&names) {
        let (name, dims) = &tensors[i];
        let (ty, reason, fallback_from) = plan_one(&mut qs, ftype, opts, default_type, name, dims, cats[i])?;
        out[i] = Some(TensorPlan { name: name.clone(), dims: dims.clone(), ty, reason, fallback_from });
    }
    Ok(out.into_iter().map(|p| p.expect("every tensor is planned")).collect())
}

/// `llama_tensor_get_type` for one tensor.
fn plan_one(
    qs: &mut State,
    ftype: FileType,
    opts: &MixOptions,
    default_type: GgmlType,
    name: &str,
    dims: &[u64],
    cat: Category,
) -> Result<(GgmlType, Option<String>, Option<GgmlType>)> {
    if let Err(why) = allows_quantization(name, dims) {
        return Ok((GgmlType::F32, Some(format!("not quantized: {why}")), None));
    }
    if let (Some(t), Category::TokenEmbd) = (opts.token_embd_type, cat) {
        return Ok((t, Some(format!("--token-embedding-type {}", ggml_type_name(t))), None));
    }
    if let (Some(t), Category::Output) = (opts.output_type, cat) {
        return Ok((t, Some(format!("--output-tensor-type {}", ggml_type_name(t))), None));
    }
    if !is_quantized(default_type) {
        return Ok((default_type, None, None));
    }
    let nx = dims.first().copied().unwrap_or(1);
    let (chosen, why) =
        if opts.pure { (default_type, None) } else { mix_rule(qs, default_type, name, nx, ftype, opts, cat)? };
    let (ty, warn) = shape_fallback(nx, chosen)?;
    let fallback_from = warn.as_ref().map(|_| chosen);
    let reason = match (why, warn) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
    Ok((ty, reason, fallback_from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_matches_llama_cpp_for_30_layers() {
        let more: Vec<i64> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn order_is_by_layer_number_then_name() {
        let names = ["blk.10.a.weight", "token_embd.weight", "blk.2.b.weight", "blk.2.a.weight", "output_norm.weight"];
        let o = llama_tensor_order(&names);
        let sorted: Vec<&str> = o.iter().map(|&i| names[i]).collect();
        assert_eq!(
            sorted,
            ["output_norm.weight", "token_embd.weight", "blk.2.a.weight", "blk.2.b.weight", "blk.10.a.weight"]
        );
    }

    #[test]
    fn ggml_names_and_fallback_text() {
        assert_eq!(ggml_type_name(GgmlType::Q4_K), "q4_K");
        assert_eq!(ggml_type_name(GgmlType::IQ4_XS), "iq4_xs");
        let (t, msg) = shape_fallback(576, GgmlType::Q4_K).unwrap();
        assert_eq!(t, GgmlType::Q5_0);
        assert_eq!(
            msg.unwrap(),
            "ncols    576 not divisible by 256 (required for type    q4_K) -> falling back to    q5_0"
        );
        let (t, msg) = shape_fallback(100, GgmlType::Q6_K).unwrap();
        assert_eq!(t, GgmlType::F16);
        assert!(msg.unwrap().contains("must use F16"));
        assert_eq!(shape_fallback(100, GgmlType::Q4_0).unwrap().0, GgmlType::F16);
        assert!(shape_fallback(100, GgmlType::Q8_K).is_err());
    }

    #[test]
    fn n_dims_ignores_trailing_ones() {
        assert_eq!(n_dims(&[576]), 1);
        assert_eq!(n_dims(&[576, 1]), 1);
        assert_eq!(n_dims(&[576, 2]), 2);
        assert_eq!(n_dims(&[1, 1, 3]), 3);
    }
}
