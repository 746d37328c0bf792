//! The whole pipeline on a tiny synthetic model: fast, and independent of the real model.

mod common;

use common::{evalq, sample_text, tiny_llama};

#[test]
fn ppl_json_has_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    tiny_llama().write(&model).unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, sample_text()).unwrap();
    let out = evalq(&["ppl", "--model", model.to_str().unwrap(), "--dataset", text.to_str().unwrap(), "--ctx", "64", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["ppl", "ppl_stderr", "n_chunks", "n_ctx", "n_tokens_scored", "seconds", "tokens_per_second"] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    let ppl = v["ppl"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
    assert_eq!(v["n_ctx"], 64);
    assert_eq!(v["n_tokens_scored"].as_u64().unwrap(), v["n_chunks"].as_u64().unwrap() * 31);
}

#[test]
fn hf_export_round_trip_gives_identical_perplexity_for_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    tiny_llama().write(&model).unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, sample_text()).unwrap();
    let ppl = |m: &str| {
        let out = evalq(&["ppl", "--model", m, "--dataset", text.to_str().unwrap(), "--ctx", "64", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["ppl"].as_f64().unwrap()
    };
    let base = ppl(model.to_str().unwrap());
    let hf = dir.path().join("hf32");
    assert!(evalq(&["export", "--model", model.to_str().unwrap(), "--to", "safetensors", hf.to_str().unwrap()]).status.success());
    assert_eq!(ppl(hf.to_str().unwrap()).to_bits(), base.to_bits());
    // Half-precision exports are lossy but must load and stay close.
    for dtype in ["f16", "bf16"] {
        let hf = dir.path().join(dtype);
        assert!(evalq(&["export", "--model", model.to_str().unwrap(), "--to", "safetensors", "--dtype", dtype, hf.to_str().unwrap()]).status.success());
        let p = ppl(hf.to_str().unwrap());
        assert!((p / base - 1.0).abs() < 0.05, "{dtype}: {p} vs {base}");
    }
}

#[test]
fn sharded_hf_directory_loads() {
    // A shard index pointing at the single file is the smallest sharded layout.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    tiny_llama().write(&model).unwrap();
    let hf = dir.path().join("hf");
    assert!(evalq(&["export", "--model", model.to_str().unwrap(), "--to", "safetensors", hf.to_str().unwrap()]).status.success());
    std::fs::rename(hf.join("model.safetensors"), hf.join("model-00001-of-00001.safetensors")).unwrap();
    let index = serde_json::json!({ "weight_map": { "model.embed_tokens.weight": "model-00001-of-00001.safetensors" } });
    std::fs::write(hf.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let out = evalq(&["info", "--model", hf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("blk.1.attn_q.weight"));
}

#[test]
fn quantized_tiny_model_runs_on_every_isa_with_close_perplexity() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    tiny_llama().write(&model).unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, sample_text()).unwrap();
    let ppl = |args: &[&str]| {
        let mut all = vec!["ppl", "--model", model.to_str().unwrap(), "--dataset", text.to_str().unwrap(), "--ctx", "64", "--json"];
        all.extend_from_slice(args);
        let out = evalq(&all);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["ppl"].as_f64().unwrap()
    };
    // The tiny model's rows are 32 or 64 wide, so every K-quant falls back to a 32-block type.
    for format in ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "F16", "BF16"] {
        let scalar = ppl(&["--isa", "scalar", "--format", format]);
        for isa in evalq::kernels::Isa::available() {
            let p = ppl(&["--isa", isa.name(), "--format", format]);
            // The random tiny model is confidently wrong (PPL in the tens of thousands), so the
            // last-bit differences of summation order grow through its logits; 2e-3 still
            // catches a kernel that is wrong rather than reordered (the kernel unit tests bound
            // each dot product to 1e-5 of its terms).
            assert!((p / scalar - 1.0).abs() < 2e-3, "{format} on {}: {p} vs scalar {scalar}", isa.name());
        }
    }
}

/// The KV cache: a text fed as one batch, or as a prompt followed by one token at a time (the
/// generation path), gives the same logits. Quantized products use one dot kernel per output in
/// both paths, so they agree bit for bit; the F32 path sums in a different order per path.
#[test]
fn incremental_decoding_with_the_kv_cache_matches_one_batch() {
    use evalq::model::forward::{forward, forward_next, State};

    let (_dir, config, load) = tiny_weights();
    let vocab = config.vocab_size;
    let tokens: Vec<u32> = (0..48u32).map(|i| (i * 7 + 3) % vocab as u32).collect();
    // Q8_0 and Q4_1 run the packed kernels where the instruction set has them, F16 its
    // prepared rows, Q4_K_M (K-quant fallbacks at this width) the row kernels.
    let mut cases = vec![("F32", load("F32"), 1e-4f32)];
    for name in ["Q8_0", "Q4_1", "F16", "Q4_K_M"] {
        cases.push((name, load(name), 0.0));
    }
    for (name, w, tol) in cases {
        let mut s = State::new(&config, 64);
        forward(&w, &mut s, &tokens, 0);
        let whole = s.logits[..tokens.len() * vocab].to_vec();

        let prompt = 40;
        forward(&w, &mut s, &tokens[..prompt], prompt - 1);
        let mut rows = vec![s.logits[..vocab].to_vec()];
        for &t in &tokens[prompt..] {
            forward_next(&w, &mut s, &[t], 0);
            rows.push(s.logits[..vocab].to_vec());
        }
        assert_eq!(s.pos(), tokens.len());
        for (i, row) in rows.iter().enumerate() {
            let want = &whole[(prompt - 1 + i) * vocab..(prompt + i) * vocab];
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = want.iter().zip(row).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= tol * scale, "{name}: position {}: max |Δlogit| {worst} (scale {scale})", prompt - 1 + i);
        }
    }
}

/// Generation runs as one team per token (`forward/decode.rs`): the logits of every generated
/// token are the same bits with 1, 2 or 3 threads, with the team entered from inside the pool
/// (as every CLI command runs) or from outside it.
#[test]
fn generated_logits_do_not_depend_on_the_thread_count() {
    use evalq::model::forward::{forward, forward_next, State};

    let (_dir, config, load) = tiny_weights();
    let vocab = config.vocab_size;
    let tokens: Vec<u32> = (0..40u32).map(|i| (i * 11 + 5) % vocab as u32).collect();
    for name in ["Q8_0", "F16", "Q4_K_M"] {
        let w = load(name);
        let generate = || {
            let mut s = State::new(&config, 64);
            forward(&w, &mut s, &tokens[..8], 7);
            let mut out = Vec::new();
            for &t in &tokens[8..] {
                forward_next(&w, &mut s, &[t], 0);
                out.extend(s.logits[..vocab].iter().map(|v| v.to_bits()));
            }
            out
        };
        let outside = generate();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let inside = pool.install(generate);
            assert!(inside == outside, "{name}: generated logits differ with {threads} threads");
        }
    }
}

/// The tiny model written to a temporary directory: its config, and a loader of the weights
/// quantized to a file type (or the F32 source for "F32").
fn tiny_weights() -> (tempfile::TempDir, evalq::model::LlamaConfig, impl Fn(&str) -> evalq::model::weights::LlamaWeights) {
    use evalq::model::weights::LlamaWeights;
    use evalq::model::Checkpoint;
    use evalq::quant::{mix, quantize::quantize_checkpoint};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    tiny_llama().write(&path).unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    let config = ckpt.config().unwrap();
    let c = config.clone();
    let load = move |name: &str| {
        if name == "F32" {
            return LlamaWeights::load_f32(&ckpt, &c).unwrap();
        }
        let (ftype, opts) = mix::parse_file_type(name).unwrap();
        let q = quantize_checkpoint(&ckpt, ftype, &opts, |_, _, _| {}).unwrap();
        LlamaWeights::from_quantized(&q, &c, &path).unwrap()
    };
    (dir, config, load)
}
