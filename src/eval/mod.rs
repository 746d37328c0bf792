//! Evaluation: perplexity with llama-perplexity's protocol, and its statistics.

pub mod kld;
pub mod perplexity;
