//! Quantization: deciding, tensor by tensor, which ggml type each weight gets ([`mix`]: llama.cpp's
//! file types and its per-tensor type rules from `src/llama-quant.cpp`).

pub mod mix;
pub mod quantize;
