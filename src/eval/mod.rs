//! Evaluation: perplexity with llama-perplexity's protocol, and its statistics.

pub mod perplexity;
