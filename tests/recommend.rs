//! `evalq recommend` end to end, through the binary. The fixture tests/data/recommend/results.json
//! is the real 2026-11-27 SmolLM2-135M run (13 formats, 20 chunks) with the per-chunk arrays cut
//! to two entries and the model path made unreachable, so the shape comes from the 135M preset.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/recommend")
}

fn evalq(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evalq"));
    cmd.arg("recommend").arg("--results").arg(fixture()).args(args);
    cmd.output().expect("evalq runs")
}

fn ok(args: &[&str]) -> String {
    let o = evalq(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let o = evalq(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8(o.stderr).unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&ok(&a)).expect("valid JSON")
}

#[test]
fn text_output_names_the_winner_first_and_marks_it_in_the_table() {
    let out = ok(&["--ram", "300MB"]);
    let first = out.lines().next().unwrap();
    assert_eq!(first, "Recommendation: SmolLM2-135M-Instruct Q4_1 (needs 153.9 MB, headroom 146.1 MB)");
    assert!(out
        .contains("why: Q4_1 fits with 146.1 MB headroom and has the lowest KLD (0.0030) of the 12 formats that fit"));
    assert!(out.lines().any(|l| l.starts_with("* Q4_1 ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("  F16 ") && l.contains(" no ")), "{out}");
    assert!(out.contains("overhead = 32 MiB + 1% of the rest"));
}

/// The arithmetic of the winner, by hand: weights are results.json's file_bytes, the KV cache
/// 2 × 30 × 512 × 3 × 64 × 2, the resident compute buffer 4 × 512 × (2 × 576 + 2 × 1536) +
/// 4 × 49152, the output buffer 4 × 49152, the overhead 32 MiB + 1%.
#[test]
fn json_has_the_documented_keys_and_the_hand_computed_need() {
    let v = json(&["--ram", "300MB"]);
    for k in [
        "budget_bytes",
        "ctx",
        "ctx_padded",
        "kv_type",
        "n_ubatch",
        "overhead_fixed_bytes",
        "overhead_percent",
        "formula",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["budget_bytes"], 300_000_000u64);
    assert_eq!(v["ctx"], 512);
    assert_eq!(v["kv_type"], "f16");
    assert_eq!(v["recommended"]["format"], "Q4_1");
    let cands = v["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 13);
    let q41 = cands.iter().find(|c| c["format"] == "Q4_1").unwrap();
    let weights = 98_362_432u64;
    let kv = 2 * 30 * 512 * 3 * 64 * 2;
    let compute = 4 * 512 * (2 * 576 + 2 * 1536) + 4 * 49_152;
    let output = 4 * 49_152;
    let sum = weights + kv + compute + output;
    let total = sum + (32 << 20) + (sum as f64 * 0.01).round() as u64;
    assert_eq!(q41["need"]["total"], total);
    assert_eq!(q41["headroom_bytes"], 300_000_000i64 - total as i64);
    assert_eq!(q41["fits"], true);
    for k in ["kld", "ppl", "pp_tps", "tg_tps", "bpw", "quality_kind"] {
        assert!(q41.get(k).is_some(), "missing candidate key {k}");
    }
    assert!((q41["kld"].as_f64().unwrap() - 0.003003658249115539).abs() < 1e-15);
}

#[test]
fn a_budget_below_every_need_names_the_smallest() {
    // Q2_K: 88,201,792 + 11,796,480 (KV) + 8,847,360 (compute) + 196,608 (output) = 109,042,240,
    // plus 32 MiB and 1%: 143,686,994 bytes.
    let e = fails(&["--ram", "100MB"]);
    assert!(e.contains("smallest need is SmolLM2-135M-Instruct Q2_K at 143.7 MB"), "{e}");
    // Counting llama.cpp's full reservation (f32 logits for 512 tokens), 150 MB fits nothing.
    let e = fails(&["--ram", "150MB", "--reserve"]);
    assert!(e.contains("smallest need is SmolLM2-135M-Instruct Q2_K at 238.8 MB"), "{e}");
    // A quantized KV cache and a short context shrink the need; 140 MB then fits Q4_1.
    let v = json(&["--ram", "140MB", "--ctx", "256", "--kv-type", "q4_0"]);
    assert_eq!(v["recommended"]["format"], "Q4_1");
    let q41 = v["candidates"].as_array().unwrap().iter().find(|c| c["format"] == "Q4_1").unwrap().clone();
    assert_eq!(q41["need"]["kv_cache"], 2 * 30 * 256 * 192 * 18 / 32);
    assert_eq!(q41["need"]["compute"], 4 * 256 * (2 * 576 + 2 * 1536) + 4 * 49_152);
    // llama.cpp's -ub 32 shrinks the compute buffer with it, resident or reserved.
    let v = json(&["--ram", "250MB", "--ubatch", "32"]);
    let q41 = v["candidates"].as_array().unwrap().iter().find(|c| c["format"] == "Q4_1").unwrap().clone();
    assert_eq!(q41["need"]["compute"], 4 * 32 * (2 * 576 + 2 * 1536) + 4 * 49_152);
    assert_eq!(v["n_ubatch"], 32);
    let v = json(&["--ram", "250MB", "--ubatch", "32", "--reserve"]);
    let q41 = v["candidates"].as_array().unwrap().iter().find(|c| c["format"] == "Q4_1").unwrap().clone();
    assert_eq!(q41["need"]["compute"], 4 * 32 * (49_152 + 2 * 576));
}

#[test]
fn bad_sizes_and_options_exit_2_with_a_clear_message() {
    assert!(fails(&["--ram", "-8GiB"]).contains("must be positive"));
    assert!(fails(&["--ram", "8XB"]).contains("unknown unit 'xb'"));
    assert!(fails(&["--ram", "GiB"]).contains("is not a number"));
    assert!(fails(&["--ram", "8GiB", "--kv-type", "q5_1"]).contains("unknown KV cache type"));
    assert!(fails(&["--ram", "8GiB", "--ubatch", "0"]).contains("--ubatch must be at least 1"));
    let e = fails(&["--ram", "8GiB", "--params", "6B"]);
    assert!(e.contains("unknown model size '6B'") && e.contains("135M, 1B, 3B, 7B, 8B, 13B, 70B"), "{e}");
}

#[test]
fn seven_b_at_6_gib_and_4096_tokens_gets_its_published_q4_k_m_size() {
    let v = json(&["--params", "7B", "--ram", "6GiB", "--ctx", "4096"]);
    assert_eq!(v["recommended"]["model"], "Llama-2-7B");
    let f = v["recommended"]["format"].as_str().unwrap().to_string();
    let c = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == "Llama-2-7B" && c["format"] == f.as_str())
        .unwrap()
        .clone();
    assert_eq!(f, "Q4_K_M");
    // llama-2-7b.Q4_K_M.gguf is 4.08 GB; the KV cache at 4096 tokens is 2 GiB.
    let w = c["need"]["weights"].as_f64().unwrap() / 1e9;
    assert!((w - 4.08).abs() < 0.01, "{w}");
    assert_eq!(c["need"]["kv_cache"], 2u64 << 30);
    let text = ok(&["--params", "7B", "--ram", "6GiB", "--ctx", "4096"]);
    assert!(text.contains("extrapolated (not published): Q5_K_M"), "{text}");
    assert!(text.contains("Across sizes: within a family"));
}

#[test]
fn a_config_json_is_sized_like_the_matching_preset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,
            "num_attention_heads":32,"num_key_value_heads":32,"vocab_size":32000,
            "tie_word_embeddings":false,"max_position_embeddings":4096,"rms_norm_eps":1e-5}"#,
    )
    .unwrap();
    let a = json(&["--config", cfg.to_str().unwrap(), "--ram", "16GiB"]);
    let b = json(&["--params", "7B", "--ram", "16GiB"]);
    let w = |v: &serde_json::Value, model: &str| -> Vec<u64> {
        v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["model"] == model)
            .map(|c| c["need"]["total"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(w(&a, cfg.to_str().unwrap()), w(&b, "Llama-2-7B"));
    std::fs::write(&cfg, r#"{"model_type":"llama","hidden_size":"big"}"#).unwrap();
    let e = fails(&["--config", cfg.to_str().unwrap(), "--ram", "16GiB"]);
    assert!(e.contains("config.json") && e.contains("hidden_size"), "{e}");
}

#[test]
fn reference_points_file_overrides_and_its_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("points.csv");
    std::fs::write(&csv, "model,format,metric,value,source_url,note\nLlama-2-7B,Q4_K_M,ppl,oops,https://x,n\n")
        .unwrap();
    let e = fails(&["--params", "7B", "--ram", "8GiB", "--reference-points", csv.to_str().unwrap()]);
    assert!(e.contains("points.csv: line 2: value 'oops' is not a number"), "{e}");
    // With only a Q2_K figure for 7B, nothing else can be ranked or extrapolated.
    std::fs::write(&csv, "model,format,metric,value,source_url,note\nLlama-2-7B,Q2_K,ppl,6.42,https://x,n\n").unwrap();
    let v = json(&["--params", "7B", "--ram", "8GiB", "--reference-points", csv.to_str().unwrap()]);
    assert_eq!(v["recommended"]["format"], "Q2_K");
}
