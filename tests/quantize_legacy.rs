//! Quantization to the 32-weight block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and the Q8_1
//! activations) and to F16/BF16: byte-identical to llama.cpp on the real model, byte-identical to
//! ggml's C reference on adversarial synthetic data, within ggml's own error thresholds
//! (`tests/test-quantize-fns.cpp`), and robust to zeros, outliers, subnormals and non-finite
//! values. Also the scalar dot products against f32/f64 references.

use std::collections::BTreeMap;
use std::path::PathBuf;

use half::f16;
use rayon::prelude::*;

use evalq::formats::{dequantize_to_vec, float, legacy};
use evalq::gguf::{GgmlType, GgufFile};
use evalq::model::Checkpoint;
use evalq::util::sha256_bytes;

/// The types this file covers, in the order results are reported.
const TYPES: [GgmlType; 7] =
    [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::F16, GgmlType::BF16];

/// Quantizes `src` (a whole number of blocks) to `ty` the way llama-quantize does without an
/// importance matrix.
fn quantize(ty: GgmlType, src: &[f32]) -> Vec<u8> {
    let f: fn(&[f32], &mut [u8]) = match ty {
        GgmlType::F32 => float::quantize_row_f32,
        GgmlType::F16 => float::quantize_row_f16,
        GgmlType::BF16 => float::quantize_row_bf16,
        GgmlType::Q4_0 => legacy::quantize_row_q4_0,
        GgmlType::Q4_1 => legacy::quantize_row_q4_1,
        GgmlType::Q5_0 => legacy::quantize_row_q5_0,
        GgmlType::Q5_1 => legacy::quantize_row_q5_1,
        GgmlType::Q8_0 => legacy::quantize_row_q8_0,
        GgmlType::Q8_1 => legacy::quantize_row_q8_1,
        _ => panic!("{ty} is not covered here"),
    };
    let mut dst = vec![0u8; src.len() / ty.block_size() * ty.block_bytes()];
    f(src, &mut dst);
    dst
}

/// ggml's `vec_dot_type`: the activation type each weight type is multiplied with.
fn vec_dot_type(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::F16 => GgmlType::F16,
        GgmlType::BF16 => GgmlType::BF16,
        _ => panic!("{ty} has no vec_dot here"),
    }
}

/// The scalar dot product of `n` weights `x` of type `ty` with activations `y` of
/// [`vec_dot_type`]`(ty)`.
fn vec_dot(ty: GgmlType, n: usize, x: &[u8], y: &[u8]) -> f32 {
    match ty {
        GgmlType::Q4_0 => legacy::vec_dot_q4_0_q8_0(n, x, y),
        GgmlType::Q4_1 => legacy::vec_dot_q4_1_q8_1(n, x, y),
        GgmlType::Q5_0 => legacy::vec_dot_q5_0_q8_0(n, x, y),
        GgmlType::Q5_1 => legacy::vec_dot_q5_1_q8_1(n, x, y),
        GgmlType::Q8_0 => legacy::vec_dot_q8_0_q8_0(n, x, y),
        GgmlType::F16 => float::vec_dot_f16(n, x, y),
        GgmlType::BF16 => float::vec_dot_bf16(n, x, y),
        _ => panic!("{ty} has no vec_dot here"),
    }
}

/// Dequantizes, including Q8_1 (`q * d`), which the crate-wide dispatch does not offer.
fn dequant(ty: GgmlType, data: &[u8], n: usize) -> Vec<f32> {
    if ty == GgmlType::Q8_1 {
        use evalq::formats::Block;
        let mut out = vec![0f32; n];
        for (b, y) in data.chunks_exact(36).zip(out.chunks_exact_mut(32)) {
            legacy::BlockQ8_1::read(b).dequantize(y);
        }
        return out;
    }
    dequantize_to_vec(ty, data, n).unwrap()
}

// ------------------------------------------------------------------------------------------------
// The real model against llama.cpp's reference files.
// ------------------------------------------------------------------------------------------------

/// The `../shared` folder beside the crate.
fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The real default model, or `None` (with a note) when it is absent outside CI.
fn real_model() -> Option<PathBuf> {
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

/// One (tensor, type) pair to check: the reference sha256 and the file types that hold it.
struct Expected {
    sha256: String,
    file_types: Vec<String>,
}

/// Every tensor of every reference file type whose ggml type is one of [`TYPES`], deduplicated:
/// tensor → type → expectation. Panics if two file types disagree about the same pair.
fn expected_pairs() -> BTreeMap<String, BTreeMap<GgmlType, Expected>> {
    let p = shared().join("reference/llama-cpp-tensors.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let json: BTreeMap<String, BTreeMap<String, (String, String)>> = serde_json::from_str(&text).unwrap();
    let mut out: BTreeMap<String, BTreeMap<GgmlType, Expected>> = BTreeMap::new();
    for (file_type, tensors) in &json {
        for (tensor, (ty_name, sha)) in tensors {
            let ty = GgmlType::from_name(ty_name).unwrap_or_else(|| panic!("unknown type {ty_name}"));
            if !TYPES.contains(&ty) {
                continue;
            }
            let e = out
                .entry(tensor.clone())
                .or_default()
                .entry(ty)
                .or_insert_with(|| Expected { sha256: sha.clone(), file_types: vec![] });
            assert_eq!(&e.sha256, sha, "{tensor} as {ty} differs between reference file types");
            e.file_types.push(file_type.clone());
        }
    }
    out
}

/// With `EVALQ_REF_GGUF_DIR` pointing at llama-quantize outputs named `<FILE_TYPE>.gguf`, the
/// index of the first block of `ours` that differs from the reference tensor.
fn first_differing_block(tensor: &str, ty: GgmlType, file_types: &[String], ours: &[u8]) -> String {
    let Some(dir) = std::env::var_os("EVALQ_REF_GGUF_DIR") else {
        return "set EVALQ_REF_GGUF_DIR to a folder of llama-quantize outputs <TYPE>.gguf to locate it".into();
    };
    for ft in file_types {
        let path = PathBuf::from(&dir).join(format!("{ft}.gguf"));
        let Ok(file) = GgufFile::open(&path) else { continue };
        let Some(t) = file.tensor(tensor) else { continue };
        let theirs = file.tensor_data(t);
        if theirs.len() != ours.len() {
            return format!("{}: {} bytes vs our {}", path.display(), theirs.len(), ours.len());
        }
        let bb = ty.block_bytes();
        return match ours.chunks(bb).zip(theirs.chunks(bb)).position(|(a, b)| a != b) {
            Some(i) => format!("first differing block {i} (of {})", ours.len() / bb),
            None => "no differing block in the reference file (stale sha256?)".into(),
        };
    }
    format!("no reference file for {tensor} in {}", PathBuf::from(dir).display())
}

#[test]
fn legacy_and_float_quantization_is_byte_identical_to_llama_cpp() {
    let Some(path) = real_model() else { return };
    let expected = expected_pairs();
    let ckpt = Checkpoint::open(&path).unwrap();
    let names: Vec<&String> = expected.keys().collect();
    // Largest tensors first so the two threads finish together.
    let mut work: Vec<(&String, usize)> =
        names.iter().map(|n| (*n, ckpt.tensor_meta(n).unwrap().1.iter().product::<u64>() as usize)).collect();
    work.sort_by_key(|w| std::cmp::Reverse(w.1));

    // (tensor, type, None when matched or Some(diagnostic)).
    let results: Vec<(String, GgmlType, Option<String>)> = work
        .par_iter()
        .flat_map_iter(|(name, _)| {
            let t = ckpt.tensor_f32(name).unwrap();
            assert_eq!(t.data.len() % t.dims[0] as usize, 0);
            expected[*name]
                .iter()
                .map(|(&ty, e)| {
                    let ours = quantize(ty, &t.data);
                    let got = sha256_bytes(&ours);
                    let diag = (got != e.sha256).then(|| first_differing_block(name, ty, &e.file_types, &ours));
                    ((*name).clone(), ty, diag)
                })
                .collect::<Vec<_>>()
        })
        .collect();

    let mut per_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (_, ty, diag) in &results {
        let c = per_type.entry(ty.name()).or_default();
        c.1 += 1;
        c.0 += diag.is_none() as usize;
    }
    let matched = results.iter().filter(|r| r.2.is_none()).count();
    eprintln!("byte-identical (tensor, type) pairs: {matched}/{}", results.len());
    for ty in TYPES {
        if let Some((m, t)) = per_type.get(ty.name()) {
            eprintln!("  {:5} {m}/{t}", ty.name());
        }
    }
    let mismatches: Vec<String> =
        results.iter().filter_map(|(name, ty, diag)| diag.as_ref().map(|d| format!("{name} as {ty}: {d}"))).collect();
    for m in &mismatches {
        eprintln!("MISMATCH {m}");
    }
    assert!(results.len() >= 7 * 200, "only {} pairs in the reference", results.len());
    assert!(mismatches.is_empty(), "{} of {} pairs differ from llama.cpp", mismatches.len(), results.len());
}

// ------------------------------------------------------------------------------------------------
// Adversarial synthetic data against ggml's C reference.
// ------------------------------------------------------------------------------------------------

/// Blocks in the synthetic adversarial input.
const FUZZ_BLOCKS: usize = 4096;

/// xorshift64, reproducible in any language (the expected hashes below came from feeding the same
/// sequence to llama.cpp's `quantize_row_*_ref`, `ggml_fp32_to_fp16_row` and
/// `ggml_fp32_to_bf16_row_ref` in the reference build's libggml-base).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// 4096 blocks in eight styles (block index mod 8): 0 ordinary magnitudes (2^-8..8), 1 any
/// finite exponent (up to f32::MAX), 2 subnormals, 3 quarter-integers (rounding ties),
/// 4 integers in [-127, 127] with one 127, 5 constant blocks (a quarter of them zero),
/// 6 one outlier among zeros of both signs and small values, 7 ±inf, NaNs, -0 and normals.
fn fuzz_input() -> Vec<f32> {
    let mut r = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(FUZZ_BLOCKS * 32);
    for b in 0..FUZZ_BLOCKS {
        let c = r.next();
        for j in 0..32u64 {
            let u = r.next();
            let sign = ((u >> 63) as u32) << 31;
            let mant = u as u32 & 0x7f_ffff;
            let hi = u >> 32;
            let bits = match b % 8 {
                0 => sign | ((119 + hi % 11) as u32) << 23 | mant,
                1 => sign | ((1 + hi % 254) as u32) << 23 | mant,
                2 => sign | mant,
                3 => (((hi % 65) as i32 - 32) as f32 * 0.25).to_bits(),
                4 if j == c % 32 => 127f32.to_bits(),
                4 => (((hi % 255) as i32 - 127) as f32).to_bits(),
                5 if c.is_multiple_of(4) => 0,
                5 => (c >> 32) as u32 & 0x8000_0000 | ((100 + (c >> 8) % 50) as u32) << 23 | c as u32 & 0x7f_ffff,
                6 if j == c % 32 => sign | ((100 + hi % 100) as u32) << 23 | mant,
                6 if u.is_multiple_of(3) => (u & 8 != 0) as u32 * 0x8000_0000,
                6 => sign | 120 << 23 | mant,
                _ => match hi % 6 {
                    0 => 0x7f80_0000,
                    1 => 0xff80_0000,
                    2 => 0x7f80_0000 | sign | mant | 1,
                    3 => 0x8000_0000,
                    _ => sign | 125 << 23 | mant,
                },
            };
            out.push(f32::from_bits(bits));
        }
    }
    out
}

#[test]
fn quantize_fuzz_matches_ggml_reference_bytes() {
    let expected = [
        (GgmlType::Q4_0, "8987b361f42c6c42bf271eebc66f977e0d0352c56e909dce04d8241fec512b48"),
        (GgmlType::Q4_1, "2b17bd3a02472348a7290e35508b650cb7ce93d7d79573c5714cf28898a5cb8d"),
        (GgmlType::Q5_0, "5257beaf15e15d7aa53ceb8266cb31dd389129cbd24f4129f6db37661e1ab8d3"),
        (GgmlType::Q5_1, "868bd9a209af4680040c2ebcc5d2c1f038feeb7c90b422d1e74e62596c71fafa"),
        (GgmlType::Q8_0, "9fab9303c64006e5fdd83b364ed5e459e29f766aa43d48f0a57ecba60556f12b"),
        (GgmlType::Q8_1, "cc9388d11f133e1a1e425fea5ce8a771c74ef435ab4670c418e0f8143c466940"),
        (GgmlType::F16, "cd8cd3e55a292b3d78f80de0b493e152a039d2aa9549071f07ae41d03ab6b84b"),
        (GgmlType::BF16, "2b6609edec92d366b25a3c13ecab7b75b589761869235abfaed3e88bb6d83924"),
    ];
    let x = fuzz_input();
    let bad: Vec<GgmlType> =
        expected.iter().filter(|(ty, sha)| sha256_bytes(&quantize(*ty, &x)) != *sha).map(|e| e.0).collect();
    assert!(bad.is_empty(), "differs from ggml's C reference: {bad:?}");
}

/// The f16 fields (scale, min, sum) of each block of `ty`.
fn f16_fields(ty: GgmlType, block: &[u8]) -> Vec<f16> {
    let n = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => 1,
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => 2,
        _ => unreachable!(),
    };
    (0..n).map(|i| f16::from_le_bytes([block[2 * i], block[2 * i + 1]])).collect()
}

const BLOCK_TYPES: [GgmlType; 6] =
    [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q8_1];

#[test]
fn quantize_finite_input_never_stores_nan() {
    // Styles 0-6 of the fuzz input are finite, including f32::MAX-sized and subnormal weights.
    let x: Vec<f32> =
        fuzz_input().chunks(32).enumerate().filter(|(b, _)| b % 8 != 7).flat_map(|c| c.1.to_vec()).collect();
    assert!(x.iter().all(|v| v.is_finite()));
    for ty in BLOCK_TYPES {
        let q = quantize(ty, &x);
        for (b, block) in q.chunks_exact(ty.block_bytes()).enumerate() {
            for h in f16_fields(ty, block) {
                assert!(!h.is_nan(), "{ty} block {b}: NaN field");
            }
        }
        // Where every scale fits in f16 (styles 0, 2, 3, 4, and 6 with modest outliers) the
        // dequantized weights are finite too.
        let y = dequant(ty, &q, x.len());
        for (b, (xs, ys)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let span = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            if span < 1000.0 {
                assert!(ys.iter().all(|v| v.is_finite()), "{ty} block {b}: non-finite output");
            }
        }
    }
    for ty in [GgmlType::F16, GgmlType::BF16] {
        let y = dequant(ty, &quantize(ty, &x), x.len());
        assert!(y.iter().all(|v| !v.is_nan()), "{ty}");
    }
}

#[test]
fn quantize_non_finite_input_does_not_panic() {
    let specials = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, f32::from_bits(0x7f80_0001)];
    for s in specials {
        for pos in [0, 7, 31] {
            let mut x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
            x[pos] = s;
            let all: Vec<f32> = vec![s; 32];
            for ty in BLOCK_TYPES.iter().chain(&[GgmlType::F16, GgmlType::BF16]) {
                let _ = quantize(*ty, &x);
                let _ = quantize(*ty, &all);
            }
        }
    }
}

#[test]
fn quantize_all_zero_blocks_give_zero_scales_and_zeros() {
    for zero in [0.0f32, -0.0] {
        let x = vec![zero; 64];
        for ty in BLOCK_TYPES {
            let q = quantize(ty, &x);
            for block in q.chunks_exact(ty.block_bytes()) {
                let fields = f16_fields(ty, block);
                assert_eq!(fields[0].to_f32(), 0.0, "{ty} scale");
                // ggml's Q4_0/Q5_0 scale is `max / -8` (`/ -16`), which for max = +0 is -0.
                let neg = matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0);
                assert_eq!(fields[0].is_sign_negative(), neg, "{ty} scale sign");
                if fields.len() == 2 {
                    assert_eq!(fields[1].to_f32(), 0.0, "{ty} min / sum");
                }
            }
            let y = dequant(ty, &q, 64);
            assert!(y.iter().all(|v| *v == 0.0), "{ty}: {y:?}");
        }
        for ty in [GgmlType::F16, GgmlType::BF16] {
            let y = dequant(ty, &quantize(ty, &x), 64);
            assert!(y.iter().all(|v| *v == 0.0 && v.is_sign_negative() == zero.is_sign_negative()));
        }
    }
}

#[test]
fn quantize_single_outlier_is_kept_and_small_weights_stay_small() {
    for (pos, big) in [(0usize, 1000.0f32), (5, -1000.0), (31, 3.5e4)] {
        let mut x: Vec<f32> = (0..32).map(|i| 1e-3 * (i as f32).cos()).collect();
        x[pos] = big;
        for ty in BLOCK_TYPES {
            let y = dequant(ty, &quantize(ty, &x), 32);
            assert!(y.iter().all(|v| v.is_finite()), "{ty}");
            // The outlier is reproduced to within one quantization step, the rest to within one
            // step of their true values too (they round to the level nearest zero or the min).
            let levels = match ty {
                GgmlType::Q4_0 => 8.0,
                GgmlType::Q5_0 => 16.0,
                GgmlType::Q4_1 => 15.0,
                GgmlType::Q5_1 => 31.0,
                _ => 127.0,
            };
            let step = big.abs() / levels * 1.01;
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= step, "{ty}: {a} -> {b} (step {step})");
            }
            assert!((y[pos] - big).abs() <= big.abs() * 2e-3, "{ty}: outlier {big} -> {}", y[pos]);
        }
    }
}

#[test]
fn quantize_outlier_beyond_f16_range_gives_infinite_scale_like_ggml() {
    // Documented behaviour, same as llama.cpp: the scale overflows f16 to -inf (Q4_0: d = max / -8).
    let mut x = vec![0.5f32; 32];
    x[3] = 1.0e6;
    let q = quantize(GgmlType::Q4_0, &x);
    let d = f16_fields(GgmlType::Q4_0, &q)[0];
    assert!(d.is_infinite() && d.is_sign_negative(), "{d}");
    // Q8_0 still fits: 1e6 / 127 < 65504.
    let q = quantize(GgmlType::Q8_0, &x);
    assert!(f16_fields(GgmlType::Q8_0, &q)[0].is_finite());
}

#[test]
fn quantize_subnormal_blocks_are_zero_without_nan() {
    for m in [1u32, 0x7f, 0x40_0000, 0x7f_ffff] {
        for sign in [0u32, 0x8000_0000] {
            let x: Vec<f32> = (0..32u32).map(|i| f32::from_bits(sign | (m >> (i % 5)))).collect();
            for ty in BLOCK_TYPES {
                let q = quantize(ty, &x);
                assert!(f16_fields(ty, &q).iter().all(|h| h.to_f32() == 0.0), "{ty}");
                let y = dequant(ty, &q, 32);
                assert!(y.iter().all(|v| *v == 0.0), "{ty} {y:?}");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// ggml's test-quantize-fns thresholds.
// ------------------------------------------------------------------------------------------------

/// test-quantize-fns: MAX_QUANTIZATION_TOTAL_ERROR.
const MAX_QUANTIZATION_TOTAL_ERROR: f32 = 0.002;
/// test-quantize-fns: MAX_DOT_PRODUCT_ERROR.
const MAX_DOT_PRODUCT_ERROR: f32 = 0.02;
/// test-quantize-fns' size: 32 * 128.
const TEST_SIZE: usize = 32 * 128;

/// test-quantize-fns' `generate_data`: `0.1 + amplitude * cosf(i + offset)`, in double then f32.
fn generate_data(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n).map(|i| (0.1f64 + (amplitude * (i as f32 + offset).cos()) as f64) as f32).collect()
}

/// test-quantize-fns' `array_rmse`: `sqrt(sum of squares) / n` (sic).
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    (sum.sqrt() as f32) / a.len() as f32
}

/// test-quantize-fns' `dot_product`: f32 products summed in f64.
fn dot_product(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>() as f32
}

#[test]
fn quantize_total_error_within_ggml_threshold() {
    let x = generate_data(0.0, TEST_SIZE, 2.0);
    for ty in TYPES.iter().copied().chain([GgmlType::Q8_1]) {
        let y = dequant(ty, &quantize(ty, &x), TEST_SIZE);
        let err = array_rmse(&x, &y);
        eprintln!("{:5} total quantization error {err:.6}", ty.name());
        assert!(err < MAX_QUANTIZATION_TOTAL_ERROR, "{ty}: {err}");
    }
}

#[test]
fn vec_dot_error_within_ggml_threshold() {
    let x = generate_data(0.0, TEST_SIZE, 2.0);
    let y = generate_data(1.0, TEST_SIZE, 2.0);
    let want = dot_product(&x, &y);
    for ty in TYPES {
        let qx = quantize(ty, &x);
        let qy = quantize(vec_dot_type(ty), &y);
        let got = vec_dot(ty, TEST_SIZE, &qx, &qy);
        let err = (got - want).abs() / TEST_SIZE as f32;
        eprintln!("{:5} dot product error {err:.6} ({got} vs {want})", ty.name());
        assert!(err < MAX_DOT_PRODUCT_ERROR, "{ty}: {err}");
    }
}

#[test]
fn vec_dot_equals_dot_of_dequantized_blocks() {
    // Tighter than ggml's threshold: the block-wise integer dot product must agree with the f64
    // dot product of the dequantized operands, up to f32 accumulation and, for the Q8_1 pairs,
    // the f16 rounding of `s`. Catches any nibble, fifth-bit or pairing mistake.
    let n = 32 * 64;
    for seed in 0..4u32 {
        let x = generate_data(seed as f32 * 0.7, n, 1.0 + seed as f32);
        let y = generate_data(2.0 + seed as f32, n, 0.5 + seed as f32);
        for ty in TYPES {
            let yt = vec_dot_type(ty);
            let (qx, qy) = (quantize(ty, &x), quantize(yt, &y));
            let (dx, dy) = (dequant(ty, &qx, n), dequant(yt, &qy, n));
            let exact: f64 = dx.iter().zip(&dy).map(|(a, b)| *a as f64 * *b as f64).sum();
            let scale: f64 = dx.iter().zip(&dy).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
            let got = vec_dot(ty, n, &qx, &qy) as f64;
            let tol = scale * if matches!(yt, GgmlType::Q8_1) { 2e-3 } else { 1e-5 };
            assert!((got - exact).abs() <= tol, "{ty} seed {seed}: {got} vs {exact} (tol {tol})");
        }
    }
}

#[test]
fn vec_dot_of_a_single_block_by_hand() {
    // x = weights 1..=32 scaled by 1/4, y = all ones: sum = (1 + ... + 32) / 4 = 132.
    let x: Vec<f32> = (1..=32).map(|i| i as f32 * 0.25).collect();
    let y = vec![1.0f32; 32];
    let q8 = quantize(GgmlType::Q8_0, &x);
    let ones = quantize(GgmlType::Q8_0, &y);
    let got = legacy::vec_dot_q8_0_q8_0(32, &q8, &ones);
    assert!((got - 132.0).abs() < 0.2, "{got}");
    let f16x = quantize(GgmlType::F16, &x);
    let f16y = quantize(GgmlType::F16, &y);
    assert_eq!(float::vec_dot_f16(32, &f16x, &f16y), 132.0);
    let bx = quantize(GgmlType::BF16, &x);
    let by = quantize(GgmlType::BF16, &y);
    assert_eq!(float::vec_dot_bf16(32, &bx, &by), 132.0);
}

#[test]
#[should_panic(expected = "vec_dot Q4_0·Q8_0")]
fn vec_dot_rejects_mismatched_lengths() {
    legacy::vec_dot_q4_0_q8_0(64, &[0u8; 36], &[0u8; 34]);
}

#[test]
#[should_panic(expected = "Q5_1")]
fn quantize_rejects_partial_blocks() {
    legacy::quantize_row_q5_1(&[0f32; 33], &mut [0u8; 24]);
}
