//! The model: config, checkpoints (GGUF or Hugging Face), weights, tokenizer and forward pass.

pub mod checkpoint;
pub mod config;
pub mod forward;
pub mod hf;
pub mod hugemem;
pub mod tokenizer;
pub mod weights;

pub use checkpoint::Checkpoint;
pub use config::LlamaConfig;
pub use weights::LlamaWeights;
