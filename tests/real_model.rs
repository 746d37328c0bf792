//! End-to-end on the real model and data: perplexity against llama.cpp's reference for the F32
//! source, determinism across thread counts, and the Hugging Face export round trip.

mod common;

use std::sync::OnceLock;

use evalq::data::datasets;
use evalq::eval::perplexity::{perplexity, PplParams, PplResult};
use evalq::model::{Checkpoint, LlamaWeights};

struct Fixture {
    weights: LlamaWeights,
    tokens: Vec<u32>,
    params: PplParams,
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let path = common::real_model()?;
        let ckpt = Checkpoint::open(&path).unwrap();
        let config = ckpt.config().unwrap();
        let tok = ckpt.tokenizer().unwrap();
        let ds = datasets::resolve_dataset("wikitext-2", None).unwrap();
        let tokens = tok.encode(&datasets::read_text(&ds).unwrap()).unwrap();
        let weights = LlamaWeights::load_f32(&ckpt, &config).unwrap();
        let params = PplParams { n_ctx: 512, max_chunks: Some(20), add_bos: tok.add_bos(), bos_id: tok.bos_id() };
        Some(Fixture { weights, tokens, params })
    })
    .as_ref()
}

fn reference() -> serde_json::Value {
    let p = common::shared().join("reference/llama-cpp-ppl.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn run(f: &Fixture, chunks: usize) -> PplResult {
    let p = PplParams { max_chunks: Some(chunks), ..f.params.clone() };
    perplexity(&f.weights, &f.tokens, &p, |_, _| {}).unwrap()
}

#[test]
fn f32_perplexity_matches_llama_cpp_within_0_1_percent() {
    let Some(f) = fixture() else { return };
    let r = run(f, 20);
    let refj = reference();
    let want = refj["F32_c512_ch20"].as_f64().unwrap();
    let want_err = refj["F32_c512_ch20_err"].as_f64().unwrap();
    let running = refj["F32_c512_ch20_chunks"].as_array().unwrap();
    eprintln!("evalq F32 PPL {:.4} ± {:.5}; llama.cpp {want} ± {want_err}", r.ppl, r.ppl_stderr);
    assert_eq!(r.n_chunks, 20);
    assert_eq!(r.n_tokens_scored, 20 * 255);
    assert!((r.ppl / want - 1.0).abs() < 1e-3, "PPL {} vs llama.cpp {want}", r.ppl);
    assert!((r.ppl_stderr / want_err - 1.0).abs() < 1e-2, "error {} vs {want_err}", r.ppl_stderr);
    for (c, w) in r.chunks.iter().zip(running) {
        let w = w.as_f64().unwrap();
        assert!((c.ppl / w - 1.0).abs() < 1e-3, "chunk {}: {} vs {w}", c.chunk, c.ppl);
    }
}

#[test]
fn perplexity_bits_do_not_depend_on_the_thread_count() {
    let Some(f) = fixture() else { return };
    let with = |n: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
        pool.install(|| run(f, 2))
    };
    let (one, two) = (with(1), with(2));
    assert_eq!(one.ppl.to_bits(), two.ppl.to_bits(), "1 thread {} vs 2 threads {}", one.ppl, two.ppl);
    assert_eq!(one.ppl_stderr.to_bits(), two.ppl_stderr.to_bits());
}

#[test]
fn hf_export_loads_back_to_the_same_perplexity() {
    let Some(f) = fixture() else { return };
    let path = common::real_model().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("smollm2-hf");
    let out = common::evalq(&["export", "--model", path.to_str().unwrap(), "--to", "safetensors", hf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert!(hf.join(file).exists(), "{file} missing");
    }
    let ckpt = Checkpoint::open(&hf).unwrap();
    let config = ckpt.config().unwrap();
    assert_eq!(config, f.weights.config);
    let tok = ckpt.tokenizer().unwrap();
    let ds = datasets::resolve_dataset("wikitext-2", None).unwrap();
    let tokens = tok.encode(&datasets::read_text(&ds).unwrap()).unwrap();
    assert_eq!(tokens, f.tokens, "the exported tokenizer.json tokenizes differently");
    let weights = LlamaWeights::load_f32(&ckpt, &config).unwrap();
    let params = PplParams { max_chunks: Some(2), ..f.params.clone() };
    let hf_r = perplexity(&weights, &tokens, &params, |_, _| {}).unwrap();
    let gguf_r = run(f, 2);
    assert_eq!(hf_r.ppl.to_bits(), gguf_r.ppl.to_bits(), "HF {} vs GGUF {}", hf_r.ppl, gguf_r.ppl);
}
