//! K-quant quantization (Q2_K..Q6_K, Q8_K) and the scalar K-quant × Q8_K dot products:
//!
//! * byte-identical to llama-quantize on every K-quant tensor of the real model, against the
//!   sha256 digests in `../shared/reference/llama-cpp-tensors.json`;
//! * round-trip and dot-product errors within the thresholds of llama.cpp's
//!   `tests/test-quantize-fns.cpp`, on the same synthetic data;
//! * adversarial blocks: zeros, a huge outlier, denormals, non-finite values.
//!
//! The real-model test needs the default model (`evalq fetch`); without it the test prints a note
//! and passes, unless `CI` is set. To locate the first differing block of a mismatching tensor,
//! point `EVALQ_REF_GGUF_DIR` at a folder of llama-quantize outputs named `<FILE_TYPE>.gguf`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use evalq::formats::k_quants::{
    self, quantize_row_q2_k, quantize_row_q3_k, quantize_row_q4_k, quantize_row_q5_k, quantize_row_q6_k,
    quantize_row_q8_k, vec_dot_q2_k_q8_k, vec_dot_q3_k_q8_k, vec_dot_q4_k_q8_k, vec_dot_q5_k_q8_k, vec_dot_q6_k_q8_k,
};
use evalq::formats::{dequantize_to_vec, Block};
use evalq::gguf::{GgmlType, GgufFile, QK_K};
use evalq::model::Checkpoint;
use rayon::prelude::*;

type QuantizeFn = k_quants::QuantizeRowFn;
type DotFn = k_quants::VecDotFn;

/// The weight K-quants: type, quantizer, dot product with Q8_K.
const K_TYPES: [(GgmlType, QuantizeFn, DotFn); 5] = [
    (GgmlType::Q2_K, quantize_row_q2_k, vec_dot_q2_k_q8_k),
    (GgmlType::Q3_K, quantize_row_q3_k, vec_dot_q3_k_q8_k),
    (GgmlType::Q4_K, quantize_row_q4_k, vec_dot_q4_k_q8_k),
    (GgmlType::Q5_K, quantize_row_q5_k, vec_dot_q5_k_q8_k),
    (GgmlType::Q6_K, quantize_row_q6_k, vec_dot_q6_k_q8_k),
];

/// Every quantizer in this family, Q8_K included.
const ALL_QUANTIZERS: [(GgmlType, QuantizeFn); 6] = [
    (GgmlType::Q2_K, quantize_row_q2_k),
    (GgmlType::Q3_K, quantize_row_q3_k),
    (GgmlType::Q4_K, quantize_row_q4_k),
    (GgmlType::Q5_K, quantize_row_q5_k),
    (GgmlType::Q6_K, quantize_row_q6_k),
    (GgmlType::Q8_K, quantize_row_q8_k),
];

fn quantizer(ty: GgmlType) -> QuantizeFn {
    ALL_QUANTIZERS.iter().find(|(t, _)| *t == ty).map(|(_, f)| *f).expect("a K-quant type")
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / QK_K * ty.block_bytes()];
    quantizer(ty)(x, &mut out);
    out
}

// ------------------------------------------------------------------------------------------------
// Real model: byte-identical to llama-quantize
// ------------------------------------------------------------------------------------------------

/// The real default model, or `None` (with a note) when it is absent outside CI.
fn real_model() -> Option<PathBuf> {
    let p = evalq::data::fetch::default_model_path();
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("CI is set but the default model is missing at {} (run `evalq fetch`)", p.display());
    }
    eprintln!("note: skipping K-quant byte-identity test, the default model is not at {}", p.display());
    None
}

fn reference_json() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/llama-cpp-tensors.json")
}

/// One (tensor, ggml type) pair to check: the reference digest and the file types that hold it.
struct Expected {
    sha256: String,
    file_types: Vec<String>,
}

/// Every K-quant (tensor, type) pair in the reference json, deduplicated. Panics if two file types
/// disagree on the digest of the same pair (the quantization of a tensor does not depend on the
/// mix it is part of).
fn expected_k_tensors() -> BTreeMap<String, BTreeMap<GgmlType, Expected>> {
    let path = reference_json();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("reference json parses");
    let mut out: BTreeMap<String, BTreeMap<GgmlType, Expected>> = BTreeMap::new();
    for (file_type, tensors) in json.as_object().expect("object of file types") {
        for (name, entry) in tensors.as_object().expect("object of tensors") {
            let ty_name = entry[0].as_str().expect("type name");
            let sha = entry[1].as_str().expect("sha256");
            let Some(ty) = GgmlType::from_name(ty_name) else { continue };
            if !K_TYPES.iter().any(|(t, _, _)| *t == ty) {
                continue;
            }
            let e = out
                .entry(name.clone())
                .or_default()
                .entry(ty)
                .or_insert_with(|| Expected { sha256: sha.to_string(), file_types: vec![] });
            assert_eq!(e.sha256, sha, "{name} as {ty_name}: {file_type} disagrees with {:?}", e.file_types);
            e.file_types.push(file_type.clone());
        }
    }
    out
}

/// The first block where `ours` differs from llama-quantize's bytes, when a reference GGUF of one
/// of `file_types` is in `EVALQ_REF_GGUF_DIR`.
fn first_differing_block(name: &str, ty: GgmlType, ours: &[u8], file_types: &[String]) -> String {
    let Some(dir) = std::env::var_os("EVALQ_REF_GGUF_DIR") else {
        return "first differing block unknown (set EVALQ_REF_GGUF_DIR to llama-quantize outputs)".into();
    };
    for ft in file_types {
        let p = Path::new(&dir).join(format!("{ft}.gguf"));
        let Ok(f) = GgufFile::open(&p) else { continue };
        let Some(t) = f.tensor(name) else { continue };
        if t.ty != ty {
            continue;
        }
        let theirs = f.tensor_data(t);
        let bb = ty.block_bytes();
        if theirs.len() != ours.len() {
            return format!("{}: {} bytes, ours {}", p.display(), theirs.len(), ours.len());
        }
        let first = ours.chunks(bb).zip(theirs.chunks(bb)).position(|(a, b)| a != b);
        return match first {
            Some(b) => format!(
                "first differing block {b} of {} (row {}, block {} in the row)",
                ours.len() / bb,
                b * QK_K / t.dims[0] as usize,
                (b * QK_K % t.dims[0] as usize) / QK_K
            ),
            None => format!("identical to {} (reference digest stale?)", p.display()),
        };
    }
    format!("no reference GGUF of {file_types:?} in EVALQ_REF_GGUF_DIR")
}

#[test]
fn quantize_k_byte_identical_to_llama_cpp_on_real_model() {
    let Some(model) = real_model() else { return };
    let ckpt = Checkpoint::open(&model).expect("open the default model");
    let expected = expected_k_tensors();
    for (ty, _, _) in K_TYPES {
        assert!(expected.values().any(|m| m.contains_key(&ty)), "the reference has no {ty} tensor");
    }

    let tensors: Vec<(&String, &BTreeMap<GgmlType, Expected>)> = expected.iter().collect();
    // Per tensor: (type, matched, mismatch message).
    let results: Vec<Vec<(GgmlType, bool, String)>> = tensors
        .par_iter()
        .map(|(name, types)| {
            let t = ckpt.tensor_f32(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            let n_per_row = t.dims[0] as usize;
            assert_eq!(n_per_row % QK_K, 0, "{name}: {n_per_row} columns in a K-quant tensor");
            types
                .iter()
                .map(|(&ty, exp)| {
                    let q = quantize(ty, &t.data);
                    let sha = evalq::util::sha256_bytes(&q);
                    if sha == exp.sha256 {
                        (ty, true, String::new())
                    } else {
                        let why = first_differing_block(name, ty, &q, &exp.file_types);
                        (ty, false, format!("{name} as {ty} (in {:?}): {why}", exp.file_types))
                    }
                })
                .collect()
        })
        .collect();

    let mut per_type: BTreeMap<GgmlType, (usize, usize)> = BTreeMap::new();
    let mut mismatches = vec![];
    for (ty, ok, msg) in results.into_iter().flatten() {
        let e = per_type.entry(ty).or_default();
        e.1 += 1;
        if ok {
            e.0 += 1;
        } else {
            mismatches.push(msg);
        }
    }
    for (ty, (matched, total)) in &per_type {
        eprintln!("{ty}: {matched}/{total} tensors byte-identical to llama-quantize");
    }
    for m in &mismatches {
        eprintln!("MISMATCH {m}");
    }
    assert!(mismatches.is_empty(), "{} K-quant tensors differ from llama-quantize", mismatches.len());
}

// ------------------------------------------------------------------------------------------------
// Synthetic data: llama.cpp's test-quantize-fns thresholds
// ------------------------------------------------------------------------------------------------

const MAX_QUANTIZATION_TOTAL_ERROR: f32 = 0.002;
const MAX_QUANTIZATION_TOTAL_ERROR_2BITS: f32 = 0.0075;
const MAX_QUANTIZATION_TOTAL_ERROR_3BITS: f32 = 0.0040;
const MAX_DOT_PRODUCT_ERROR: f32 = 0.02;
const MAX_DOT_PRODUCT_ERROR_LOWBIT: f32 = 0.04;

/// test-quantize-fns' size: 32 * 128 weights (16 super-blocks).
const TEST_SIZE: usize = 32 * 128;

/// test-quantize-fns' `generate_data`: `0.1 + amplitude * cosf(i + offset)`, the sum in double.
fn generate_data(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n).map(|i| (0.1f64 + (amplitude * (i as f32 + offset).cos()) as f64) as f32).collect()
}

/// test-quantize-fns' `array_rmse` (which is `sqrt(sum of squares) / n`).
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64) * (x as f64 - y as f64)).sum();
    (sum.sqrt() as f32) / a.len() as f32
}

/// test-quantize-fns' `dot_product`: f32 products summed in double.
fn dot_product(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(&x, &y)| (x * y) as f64).sum::<f64>() as f32
}

fn total_quantization_error(ty: GgmlType, data: &[f32]) -> f32 {
    let q = quantize(ty, data);
    let back = dequantize_to_vec(ty, &q, data.len()).unwrap();
    array_rmse(data, &back)
}

#[test]
fn quantize_k_round_trip_error_within_ggml_thresholds() {
    let data = generate_data(0.0, TEST_SIZE, 2.0);
    for (ty, _) in ALL_QUANTIZERS {
        let max = match ty {
            GgmlType::Q2_K => MAX_QUANTIZATION_TOTAL_ERROR_2BITS,
            GgmlType::Q3_K => MAX_QUANTIZATION_TOTAL_ERROR_3BITS,
            _ => MAX_QUANTIZATION_TOTAL_ERROR,
        };
        let err = total_quantization_error(ty, &data);
        eprintln!("{ty} absolute quantization error: {err:.6} (max {max})");
        assert!(err < max, "{ty}: round-trip error {err} >= {max}");
    }
}

#[test]
fn quantize_k_vec_dot_error_within_ggml_thresholds() {
    let data1 = generate_data(0.0, TEST_SIZE, 2.0);
    let data2 = generate_data(1.0, TEST_SIZE, 2.0);
    let q8 = quantize(GgmlType::Q8_K, &data2);
    let reference = dot_product(&data1, &data2);
    for (ty, _, dot) in K_TYPES {
        let qx = quantize(ty, &data1);
        let got = dot(TEST_SIZE, &qx, &q8);
        let err = (got - reference).abs() / TEST_SIZE as f32;
        let max = if ty == GgmlType::Q2_K { MAX_DOT_PRODUCT_ERROR_LOWBIT } else { MAX_DOT_PRODUCT_ERROR };
        eprintln!("{ty} dot product error: {err:.6} (max {max}; ref {reference}, got {got})");
        assert!(err < max, "{ty}: vec_dot error {err} >= {max}");
    }
}

#[test]
fn quantize_k_vec_dot_equals_dequantized_dot() {
    // The integer kernels compute exactly sum(dequant(x) * dequant(y)) up to f32 rounding.
    let data1 = generate_data(0.5, TEST_SIZE, 1.5);
    let data2 = generate_data(2.5, TEST_SIZE, 3.0);
    let q8 = quantize(GgmlType::Q8_K, &data2);
    let y = dequantize_to_vec(GgmlType::Q8_K, &q8, TEST_SIZE).unwrap();
    for (ty, _, dot) in K_TYPES {
        let qx = quantize(ty, &data1);
        let x = dequantize_to_vec(ty, &qx, TEST_SIZE).unwrap();
        let exact: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
        let scale: f64 = x.iter().zip(&y).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
        let got = dot(TEST_SIZE, &qx, &q8) as f64;
        assert!((got - exact).abs() <= 1e-5 * scale, "{ty}: vec_dot {got} vs dequantized dot {exact}");
    }
}

#[test]
fn quantize_k_rows_and_whole_tensor_agree() {
    // Blocks are independent: quantizing row by row equals quantizing everything at once.
    let data = generate_data(7.0, 3 * 512, 0.7);
    for (ty, f) in ALL_QUANTIZERS {
        let whole = quantize(ty, &data);
        let mut rows = vec![];
        for r in data.chunks(512) {
            let mut out = vec![0u8; 2 * ty.block_bytes()];
            f(r, &mut out);
            rows.extend(out);
        }
        assert_eq!(whole, rows, "{ty}");
    }
}

#[test]
fn quantize_k_q8_k_bsums() {
    let data = generate_data(3.0, TEST_SIZE, 1.0);
    let q = quantize(GgmlType::Q8_K, &data);
    for b in q.chunks(GgmlType::Q8_K.block_bytes()) {
        let blk = k_quants::BlockQ8K::read(b);
        for g in 0..QK_K / 16 {
            let s: i32 = blk.qs[16 * g..16 * g + 16].iter().map(|&v| v as i32).sum();
            assert_eq!(blk.bsums[g] as i32, s);
        }
        // The value of largest magnitude becomes -127 or 127.
        assert!(blk.qs.iter().any(|&v| v.unsigned_abs() == 127));
    }
}

// ------------------------------------------------------------------------------------------------
// Adversarial blocks
// ------------------------------------------------------------------------------------------------

fn lcg(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed;
    move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

#[test]
fn quantize_k_all_zero_blocks_are_zero() {
    for zero in [0.0f32, -0.0] {
        let data = vec![zero; 2 * QK_K];
        for (ty, _) in ALL_QUANTIZERS {
            let q = quantize(ty, &data);
            assert!(q.iter().all(|&b| b == 0), "{ty}: zero input ({zero:?}) gives non-zero bytes");
            let back = dequantize_to_vec(ty, &q, data.len()).unwrap();
            assert!(back.iter().all(|&v| v == 0.0), "{ty}");
        }
        let q8 = quantize(GgmlType::Q8_K, &data);
        for (ty, _, dot) in K_TYPES {
            assert_eq!(dot(data.len(), &quantize(ty, &data), &q8), 0.0, "{ty}");
        }
    }
}

#[test]
fn quantize_k_single_huge_outlier() {
    let mut rnd = lcg(1);
    let mut data: Vec<f32> = (0..QK_K).map(|_| 0.01 * rnd()).collect();
    data[77] = 1000.0;
    let mut neg = data.clone();
    neg[77] = -1000.0;
    for (ty, _) in ALL_QUANTIZERS {
        for (x, v) in [(&data, 1000.0f32), (&neg, -1000.0)] {
            let back = dequantize_to_vec(ty, &quantize(ty, x), QK_K).unwrap();
            assert!(back.iter().all(|v| v.is_finite()), "{ty}: non-finite output");
            assert!((back[77] - v).abs() <= 0.15 * v.abs(), "{ty}: outlier {v} became {}", back[77]);
            // The small weights cannot be resolved next to it, but stay small.
            for (i, &b) in back.iter().enumerate() {
                if i != 77 {
                    assert!(b.abs() <= 0.15 * v.abs(), "{ty}: weight {i} = {b}");
                }
            }
        }
    }
    // Values far beyond f16's range: the scales overflow, but nothing panics.
    for big in [1e30f32, f32::MAX, -f32::MAX] {
        let mut x = vec![0.5f32; QK_K];
        x[3] = big;
        for (ty, _) in ALL_QUANTIZERS {
            let q = quantize(ty, &x);
            let _ = dequantize_to_vec(ty, &q, QK_K).unwrap();
        }
    }
}

#[test]
fn quantize_k_denormals() {
    let mut rnd = lcg(2);
    let tiny: Vec<f32> = (0..2 * QK_K).map(|_| rnd() * 1e-39).collect();
    assert!(tiny.iter().any(|v| v.is_subnormal()));
    // Half denormal, half ordinary: the ordinary sub-blocks must survive.
    let mut mixed: Vec<f32> = (0..QK_K).map(|_| rnd()).collect();
    for v in &mut mixed[..QK_K / 2] {
        *v *= 1e-40;
    }
    for (ty, _) in ALL_QUANTIZERS {
        let back = dequantize_to_vec(ty, &quantize(ty, &tiny), tiny.len()).unwrap();
        assert!(back.iter().all(|v| v.is_finite() && v.abs() < 1e-30), "{ty}: denormal block");
        let back = dequantize_to_vec(ty, &quantize(ty, &mixed), QK_K).unwrap();
        assert!(back.iter().all(|v| v.is_finite()), "{ty}: mixed block");
        let err = array_rmse(&mixed[QK_K / 2..], &back[QK_K / 2..]) * (QK_K / 2) as f32;
        assert!(err < 0.5 * (QK_K as f32 / 2.0).sqrt(), "{ty}: mixed block error {err}");
    }
}

#[test]
fn quantize_k_non_finite_input_does_not_panic() {
    // Callers reject non-finite tensors before quantizing; here we only require no panic.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = generate_data(0.0, 2 * QK_K, 1.0);
        x[5] = bad;
        x[QK_K + 200] = bad;
        let all_bad = vec![bad; QK_K];
        for (ty, _) in ALL_QUANTIZERS {
            for input in [&x, &all_bad] {
                let q = quantize(ty, input);
                let _ = dequantize_to_vec(ty, &q, input.len()).unwrap();
            }
        }
        let q8 = quantize(GgmlType::Q8_K, &x);
        for (ty, _, dot) in K_TYPES {
            let _ = dot(x.len(), &quantize(ty, &x), &q8);
        }
    }
}

#[test]
#[should_panic(expected = "cannot quantize")]
fn quantize_k_rejects_partial_blocks() {
    let mut out = vec![0u8; GgmlType::Q4_K.block_bytes()];
    quantize_row_q4_k(&[0.0; QK_K - 1], &mut out);
}

#[test]
#[should_panic(expected = "vec_dot")]
fn quantize_k_vec_dot_rejects_wrong_lengths() {
    let x = vec![0u8; GgmlType::Q6_K.block_bytes()];
    let y = vec![0u8; GgmlType::Q8_K.block_bytes()];
    vec_dot_q6_k_q8_k(2 * QK_K, &x, &y);
}
