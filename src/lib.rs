//! evalq: which quantization format should I run this model in? Measured, not folklore.
//!
//! The pipeline: a model file ([`gguf`] or a Hugging Face directory) becomes a [`model::Checkpoint`]
//! of named tensors; [`formats`] dequantizes (and later quantizes) ggml blocks; [`model`] holds the
//! config, tokenizer and forward pass; [`eval`] computes perplexity with llama-perplexity's
//! protocol; [`data`] finds and verifies datasets and the default model.

pub mod bench;
pub mod compare;
pub mod data;
pub mod error;
pub mod eval;
pub mod formats;
pub mod gguf;
pub mod history;
pub mod kernels;
pub mod model;
pub mod par;
pub mod quant;
pub mod recommend;
pub mod report;
pub mod run;
pub mod util;

pub use error::{Error, Result};
