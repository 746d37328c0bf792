//! Perplexity of every reference file type, quantized by evalq and evaluated on evalq's block
//! kernels, against llama-perplexity's figure for the same file type (20 chunks of 512 tokens
//! of WikiText-2). Slow (every format, 20 chunks each): `#[ignore]`d, and run by
//! scripts/test.sh, the test command CI uses.

use evalq::data::datasets;
use evalq::eval::perplexity::{perplexity, PplParams};
use evalq::model::{Checkpoint, LlamaWeights};
use evalq::quant::mix;
use evalq::quant::quantize::quantize_checkpoint;

/// The agreement issue 3 asks for: 0.3% relative over 20 chunks, against llama-perplexity.
///
/// llama-perplexity itself gives two figures for the same file, depending on its micro-batch:
/// at its default `-ub 512` (the reference file) the products go through tinyBLAS or repacked
/// tiles and attention through the batched flash-attention kernel; at `-ub 1` through the
/// one-token kernels. Only last bits differ per product, but the activations are re-quantized
/// to 8 bits at every product, so the 20-chunk PPL moves: by +0.56% on Q5_K_M, more than the
/// target. `scripts/llama-ppl-batch1` measures the `-ub 1` figure (tests/data/
/// llama-cpp-ppl-batch1.json) for the types it was run on. A type passes when evalq is within
/// 0.3% of either llama.cpp figure; where only the reference exists, of that one.
const TARGET: f64 = 3e-3;

/// llama-perplexity's `-ub 1` figures, by file type, where measured.
fn batch1_figures() -> serde_json::Map<String, serde_json::Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/llama-cpp-ppl-batch1.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    v.as_object().unwrap().clone()
}

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
    let batch1 = batch1_figures();
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
        let b1 = batch1.get(name).and_then(|v| v["ppl"].as_f64());
        let rel1 = b1.map(|b| r.ppl / b - 1.0);
        let ok = rel.abs() <= TARGET || rel1.is_some_and(|x| x.abs() <= TARGET);
        let line = format!(
            "| {name} | {:.4} | {want:.4} | {:+.3}% | {} | {} | {:.1} |{}",
            r.ppl,
            rel * 100.0,
            b1.map_or("-".into(), |b| format!("{b:.4}")),
            rel1.map_or("-".into(), |x| format!("{:+.3}%", x * 100.0)),
            t.elapsed().as_secs_f64(),
            if ok { "" } else { "  (outside 0.3% of both)" }
        );
        eprintln!("{line}");
        if !ok {
            failures.push(line.clone());
        }
        rows.push(line);
    }
    assert!(!rows.is_empty());
    // The table goes to target/ so CI's log and a developer can read it afterwards.
    let report = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/evalq-test-reports/ppl_formats.md");
    std::fs::create_dir_all(report.parent().unwrap()).unwrap();
    let header = "| file type | evalq PPL | llama.cpp PPL (-ub 512) | difference | llama.cpp PPL (-ub 1) | difference \
                  | seconds |\n|---|---|---|---|---|---|---|\n";
    std::fs::write(&report, format!("{header}{}\n", rows.join("\n"))).unwrap();
    println!("{header}{}", rows.join("\n"));
    assert!(failures.is_empty(), "outside {}% of llama.cpp:\n{}", TARGET * 100.0, failures.join("\n"));
}
