//! Bad input gets a clear error naming the file and the field or tensor, and a non-zero exit;
//! never a panic and never an unbounded allocation.

mod common;

use std::path::Path;

use common::{assert_clean_failure, evalq, tiny_llama};
use evalq::gguf::{GgufFile, Value};

fn write_tiny(dir: &Path, edit: impl FnOnce(&mut evalq::gguf::GgufWriter<'static>)) -> std::path::PathBuf {
    let mut w = tiny_llama();
    edit(&mut w);
    let p = dir.join("model.gguf");
    w.write(&p).unwrap();
    p
}

/// A GGUF header written by hand, for corruptions the writer cannot produce.
fn raw_gguf(n_tensors: u64, n_kv: u64, body: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b.extend_from_slice(body);
    b
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

#[test]
fn the_tiny_model_itself_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |_| {});
    let out = evalq(&["info", "--model", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("blk.1.ffn_down.weight"));
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |_| {});
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let out = evalq(&["info", "--model", p.to_str().unwrap()]);
    assert_clean_failure(&out, &["model.gguf", "output_norm.weight", "runs past the end"]);

    // Cut inside the metadata: the message names the field being read.
    std::fs::write(&p, &bytes[..200]).unwrap();
    assert_clean_failure(&evalq(&["info", "--model", p.to_str().unwrap()]), &["model.gguf", "truncated"]);
}

#[test]
fn every_truncation_and_byte_flip_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |_| {});
    let bytes = std::fs::read(&p).unwrap();
    let q = dir.path().join("cut.gguf");
    let header_end = GgufFile::open(&p).unwrap().data_offset as usize;
    for len in (0..header_end).step_by(7).chain([header_end - 1]) {
        std::fs::write(&q, &bytes[..len]).unwrap();
        assert!(GgufFile::open(&q).is_err(), "a {len}-byte prefix parsed");
    }
    // Flipping header bytes may give another valid file, but must never panic or over-allocate.
    for pos in (0..header_end).step_by(3) {
        let mut b = bytes.clone();
        b[pos] ^= 0xA5;
        std::fs::write(&q, &b).unwrap();
        let _ = GgufFile::open(&q);
    }
}

#[test]
fn bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |_| {});
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[..4].copy_from_slice(b"GGML");
    std::fs::write(&p, &bytes).unwrap();
    assert_clean_failure(&evalq(&["info", "--model", p.to_str().unwrap()]), &["model.gguf", "bad magic"]);
}

#[test]
fn unsupported_version() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |_| {});
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[4..8].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    assert_clean_failure(&evalq(&["info", "--model", p.to_str().unwrap()]), &["unsupported gguf version 7"]);
}

#[test]
fn tensor_offset_past_the_end() {
    let mut body = Vec::new();
    put_str(&mut body, "general.architecture");
    body.extend_from_slice(&8u32.to_le_bytes());
    put_str(&mut body, "llama");
    put_str(&mut body, "token_embd.weight");
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&32u64.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // F32
    body.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let mut bytes = raw_gguf(1, 1, &body);
    bytes.resize(bytes.len().div_ceil(32) * 32 + 128, 0);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("offset.gguf");
    std::fs::write(&p, &bytes).unwrap();
    assert_clean_failure(&evalq(&["info", "--model", p.to_str().unwrap()]), &["offset.gguf", "token_embd.weight", "runs past the end"]);
}

#[test]
fn absurd_tensor_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("count.gguf");
    std::fs::write(&p, raw_gguf(u64::MAX / 3, 0, &[0u8; 64])).unwrap();
    assert_clean_failure(&evalq(&["info", "--model", p.to_str().unwrap()]), &["count.gguf", "tensor count", "cannot fit"]);
    std::fs::write(&p, raw_gguf(0, 1 << 50, &[0u8; 64])).unwrap();
    assert_clean_failure(&evalq(&["info", "--model", p.to_str().unwrap()]), &["metadata count", "cannot fit"]);
}

#[test]
fn absurd_string_and_array_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("string.gguf");
    let mut body = Vec::new();
    body.extend_from_slice(&(1u64 << 60).to_le_bytes());
    body.extend_from_slice(b"general.architecture");
    std::fs::write(&p, raw_gguf(0, 1, &body)).unwrap();
    assert_clean_failure(&evalq(&["info", "--model", p.to_str().unwrap()]), &["string.gguf", "string length", "past the end"]);

    let mut body = Vec::new();
    put_str(&mut body, "tokenizer.ggml.tokens");
    body.extend_from_slice(&9u32.to_le_bytes()); // array
    body.extend_from_slice(&8u32.to_le_bytes()); // of strings
    body.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
    body.extend_from_slice(&[0u8; 32]);
    std::fs::write(&p, raw_gguf(0, 1, &body)).unwrap();
    assert_clean_failure(&evalq(&["info", "--model", p.to_str().unwrap()]), &["tokenizer.ggml.tokens", "array length", "cannot fit"]);
}

#[test]
fn missing_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |w| w.metadata.retain(|(k, _)| k != "tokenizer.ggml.tokens"));
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "hello").unwrap();
    let out = evalq(&["tokenize", "--model", p.to_str().unwrap(), "--file", text.to_str().unwrap()]);
    assert_clean_failure(&out, &["model.gguf", "tokenizer.ggml.tokens"]);

    // A Hugging Face directory without tokenizer.json.
    let hf = dir.path().join("hf");
    let p = write_tiny(dir.path(), |_| {});
    let out = evalq(&["export", "--model", p.to_str().unwrap(), "--to", "safetensors", hf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(hf.join("tokenizer.json")).unwrap();
    let out = evalq(&["tokenize", "--model", hf.to_str().unwrap(), "--file", text.to_str().unwrap()]);
    assert_clean_failure(&out, &["tokenizer.json", "missing"]);
}

#[test]
fn wrong_hf_config() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    let p = write_tiny(dir.path(), |_| {});
    assert!(evalq(&["export", "--model", p.to_str().unwrap(), "--to", "safetensors", hf.to_str().unwrap()]).status.success());
    let cfg = std::fs::read_to_string(hf.join("config.json")).unwrap();
    std::fs::write(hf.join("config.json"), cfg.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5")).unwrap();
    assert_clean_failure(&evalq(&["info", "--model", hf.to_str().unwrap()]), &["config.json", "attention.head_count"]);
    std::fs::write(hf.join("config.json"), "{ not json").unwrap();
    assert_clean_failure(&evalq(&["info", "--model", hf.to_str().unwrap()]), &["config.json"]);
    std::fs::write(hf.join("config.json"), cfg).unwrap();
    let st = std::fs::read(hf.join("model.safetensors")).unwrap();
    std::fs::write(hf.join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    assert_clean_failure(&evalq(&["info", "--model", hf.to_str().unwrap()]), &["model.safetensors"]);
}

#[test]
fn unknown_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |w| w.set("general.architecture", Value::String("mamba9".into())));
    assert_clean_failure(&evalq(&["info", "--model", p.to_str().unwrap()]), &["model.gguf", "general.architecture", "unknown architecture 'mamba9'"]);
}

#[test]
fn missing_config_field_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |w| w.metadata.retain(|(k, _)| k != "llama.embedding_length"));
    assert_clean_failure(&evalq(&["info", "--model", p.to_str().unwrap()]), &["llama.embedding_length", "missing"]);
    let p = write_tiny(dir.path(), |w| w.tensors.retain(|t| t.name != "blk.1.ffn_up.weight"));
    let text = dir.path().join("t.txt");
    std::fs::write(&text, common::sample_text()).unwrap();
    let out = evalq(&["ppl", "--model", p.to_str().unwrap(), "--dataset", text.to_str().unwrap(), "--ctx", "64"]);
    assert_clean_failure(&out, &["blk.1.ffn_up.weight", "missing"]);
}

#[test]
fn dataset_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |_| {});
    let out = evalq(&["ppl", "--model", p.to_str().unwrap(), "--dataset", "/nonexistent/wiki.txt"]);
    assert_clean_failure(&out, &["/nonexistent/wiki.txt", "does not exist"]);
    let out = evalq(&["ppl", "--model", p.to_str().unwrap(), "--dataset", "wikitext-103"]);
    assert_clean_failure(&out, &["wikitext-103", "wikitext-2"]);
}

#[test]
fn dataset_sha256_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |_| {});
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("wikitext-2-raw")).unwrap();
    std::fs::write(data.join("wikitext-2-raw/wiki.test.raw"), "not the real file").unwrap();
    let out = evalq(&["ppl", "--model", p.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    assert_clean_failure(&out, &["wiki.test.raw", "sha256 mismatch", "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"]);
}

#[test]
fn model_that_does_not_exist_and_bad_flags() {
    assert_clean_failure(&evalq(&["info", "--model", "/nonexistent/m.gguf"]), &["/nonexistent/m.gguf", "does not exist"]);
    assert_clean_failure(&evalq(&["--isa", "sse9", "info"]), &["unknown instruction set 'sse9'"]);
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |_| {});
    let text = dir.path().join("short.txt");
    std::fs::write(&text, "too short").unwrap();
    let out = evalq(&["ppl", "--model", p.to_str().unwrap(), "--dataset", text.to_str().unwrap()]);
    assert_clean_failure(&out, &["tokens", "at least"]);
}

#[test]
fn non_finite_weights_are_a_clear_quantization_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |w| {
        let t = w.tensors.iter_mut().find(|t| t.name == "blk.1.ffn_up.weight").unwrap();
        let mut bytes = t.data.to_vec();
        bytes[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
        t.data = std::borrow::Cow::Owned(bytes);
    });
    let out_path = dir.path().join("q.gguf");
    for format in ["Q4_0", "Q4_K_M", "IQ4_XS"] {
        let out = evalq(&["quantize", p.to_str().unwrap(), out_path.to_str().unwrap(), "--format", format]);
        assert_clean_failure(&out, &["blk.1.ffn_up.weight", "NaN", "finite"]);
        assert!(!out_path.exists(), "a failed quantization left {}", out_path.display());
    }
}

#[test]
fn unknown_file_type_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tiny(dir.path(), |_| {});
    let out = evalq(&["quantize", p.to_str().unwrap(), dir.path().join("q.gguf").to_str().unwrap(), "--format", "Q7_K"]);
    assert_clean_failure(&out, &["unknown file type 'Q7_K'", "Q4_K_M"]);
    let text = dir.path().join("t.txt");
    std::fs::write(&text, common::sample_text()).unwrap();
    let out = evalq(&["ppl", "--model", p.to_str().unwrap(), "--dataset", text.to_str().unwrap(), "--format", "q9"]);
    assert_clean_failure(&out, &["unknown file type 'q9'"]);
}
