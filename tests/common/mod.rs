//! Shared helpers for the integration tests: the real model's location, the shared data, and a
//! tiny synthetic llama GGUF for tests that must not depend on the real model.
#![allow(dead_code)]

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use evalq::gguf::{GgmlType, GgufWriter, Value, WriterTensor};

/// The `../shared` folder beside the crate.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The real default model, provisioned by `evalq fetch` (CI runs it first). Returns `None`
/// (and the test skips with a note) outside CI when it is absent; in CI its absence fails.
pub fn real_model() -> Option<PathBuf> {
    let p = evalq::data::fetch::default_model_path();
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("the default model is missing at {} (CI must run `evalq fetch` first)", p.display());
    }
    eprintln!("note: skipping, the default model is not at {} (run `evalq fetch`)", p.display());
    None
}

/// Runs the evalq binary with `args`.
pub fn evalq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evalq")).args(args).output().expect("the evalq binary runs")
}

/// Asserts a failed run with a clear message: non-zero exit, `needles` in stderr, no panic.
pub fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked instead of a clear error: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
}

/// GPT-2's byte → printable-char map, so a byte-level vocabulary can be written.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars = vec!['\0'; 256];
    for &b in &printable {
        chars[b as usize] = char::from_u32(b).unwrap();
    }
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            chars[b as usize] = char::from_u32(256 + n).unwrap();
            n += 1;
            printable.push(b);
        }
    }
    chars
}

/// Deterministic pseudo-random values in [-scale, scale].
pub fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A tiny llama model (2 layers, d 32, 4 heads / 2 kv heads, a 256-byte vocabulary + 2 merges)
/// in F32, as a GGUF writer ready to modify and write.
pub fn tiny_llama() -> GgufWriter<'static> {
    let (d, ff, n_layer, vocab) = (32u64, 64u64, 2usize, 258u64);
    let mut w = GgufWriter::default();
    let s = |x: &str| Value::String(x.into());
    w.set("general.architecture", s("llama"));
    w.set("general.name", s("tiny"));
    w.set("llama.block_count", Value::U32(n_layer as u32));
    w.set("llama.context_length", Value::U32(256));
    w.set("llama.embedding_length", Value::U32(d as u32));
    w.set("llama.feed_forward_length", Value::U32(ff as u32));
    w.set("llama.attention.head_count", Value::U32(4));
    w.set("llama.attention.head_count_kv", Value::U32(2));
    w.set("llama.rope.freq_base", Value::F32(10000.0));
    w.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    w.set("llama.vocab_size", Value::U32(vocab as u32));
    let chars = byte_chars();
    let mut tokens: Vec<Value> = chars.iter().map(|c| Value::String(c.to_string())).collect();
    tokens.push(s("th"));
    tokens.push(s("Ġt"));
    w.set("tokenizer.ggml.model", s("gpt2"));
    w.set("tokenizer.ggml.pre", s("gpt-2"));
    w.set("tokenizer.ggml.tokens", Value::Array(tokens));
    w.set("tokenizer.ggml.token_type", Value::Array(vec![Value::I32(1); vocab as usize]));
    w.set("tokenizer.ggml.merges", Value::Array(vec![s("t h"), s("Ġ t")]));
    w.set("tokenizer.ggml.bos_token_id", Value::U32(0));
    w.set("tokenizer.ggml.eos_token_id", Value::U32(1));
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(false));

    let mut seed = 1u64;
    let mut add = |w: &mut GgufWriter<'static>, name: String, dims: Vec<u64>, scale: f32| {
        seed += 1;
        let n: u64 = dims.iter().product();
        let data: Vec<u8> = if scale == 0.0 {
            (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect()
        } else {
            noise(n as usize, seed, scale).iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        w.tensors.push(WriterTensor { name, dims, ty: GgmlType::F32, data: Cow::Owned(data) });
    };
    add(&mut w, "token_embd.weight".into(), vec![d, vocab], 1.0);
    for i in 0..n_layer {
        add(&mut w, format!("blk.{i}.attn_norm.weight"), vec![d], 0.0);
        add(&mut w, format!("blk.{i}.attn_q.weight"), vec![d, d], 0.3);
        add(&mut w, format!("blk.{i}.attn_k.weight"), vec![d, d / 2], 0.3);
        add(&mut w, format!("blk.{i}.attn_v.weight"), vec![d, d / 2], 0.3);
        add(&mut w, format!("blk.{i}.attn_output.weight"), vec![d, d], 0.3);
        add(&mut w, format!("blk.{i}.ffn_norm.weight"), vec![d], 0.0);
        add(&mut w, format!("blk.{i}.ffn_gate.weight"), vec![d, ff], 0.3);
        add(&mut w, format!("blk.{i}.ffn_up.weight"), vec![d, ff], 0.3);
        add(&mut w, format!("blk.{i}.ffn_down.weight"), vec![ff, d], 0.3);
    }
    add(&mut w, "output_norm.weight".into(), vec![d], 0.0);
    w
}

/// A text long enough for a few chunks of a small context.
pub fn sample_text() -> String {
    "the theory that the three thin things thrive there is thoroughly tested. ".repeat(40)
}
