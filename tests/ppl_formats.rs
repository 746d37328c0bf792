//! Perplexity of every reference file type, quantized by evalq and evaluated on evalq's block
//! kernels, against llama-perplexity's figure for the same file type (20 chunks of 512 tokens
//! of WikiText-2). Slow (every format, 20 chunks each): `#[ignore]`d, and run by
//! scripts/test.sh, the test command CI uses.

use evalq::data::datasets;
use evalq::eval::perplexity::{perplexity, PplParams};
use evalq::model::{Checkpoint, LlamaWeights};
use evalq::quant::mix;
use evalq::quant::quantize::quantize_checkpoint;

/// The agreement issue 3 asks for: 0.3% relative over 20 chunks.
const TOLERANCE: f64 = 3e-3;

#[test]
#[ignore = "slow: every file type, 20 chunks each; run by scripts/test.sh"]
fn every_file_type_matches_llama_perplexity_within_0_3_percent() {
    let path = evalq::data::fetch::default_model_path();
    if !path.exists() {
        assert!(std::env::var_os("CI").is_none(), "model missing at {}", path.display());
        eprintln!("note: skipping, no model at {}", path.display());
        return;
    }
    let ckpt = Checkpoint::open(&path).unwrap();
    let config = ckpt.config().unwrap();
    let tok = ckpt.tokenizer().unwrap();
    let ds = datasets::resolve_dataset("wikitext-2", None).unwrap();
    let tokens = tok.encode(&datasets::read_text(&ds).unwrap()).unwrap();
    let params = PplParams { n_ctx: 512, max_chunks: Some(20), add_bos: tok.add_bos(), bos_id: tok.bos_id() };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference/llama-cpp-ppl.json")).unwrap(),
    )
    .unwrap();
    let only = std::env::var("EVALQ_PPL_FORMATS").ok();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (key, want) in reference.as_object().unwrap() {
        let Some(name) = key.strip_suffix("_c512_ch20") else { continue };
        if name == "F32" || only.as_deref().is_some_and(|o| !o.split(',').any(|f| f == name)) {
            continue; // F32 is real_model.rs's test
        }
        let want = want.as_f64().unwrap();
        let (ftype, opts) = mix::parse_file_type(name).unwrap();
        let q = quantize_checkpoint(&ckpt, ftype, &opts, |_, _, _| {}).unwrap();
        let weights = LlamaWeights::from_quantized(&q, &config, &path).unwrap();
        let t = std::time::Instant::now();
        let r = perplexity(&weights, &tokens, &params, |_, _| {}).unwrap();
        let rel = r.ppl / want - 1.0;
        let line = format!("{name:12} evalq {:9.4}  llama.cpp {want:9.4}  {:+.3}%  ({:.1} s)", r.ppl, rel * 100.0, t.elapsed().as_secs_f64());
        eprintln!("{line}");
        if rel.abs() > TOLERANCE {
            failures.push(line.clone());
        }
        rows.push(line);
    }
    assert!(!rows.is_empty());
    assert!(failures.is_empty(), "outside {}%:\n{}", TOLERANCE * 100.0, failures.join("\n"));
}
