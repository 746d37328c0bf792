//! IQ4_NL / IQ4_XS quantization and dot products:
//!
//! * byte-identical to llama-quantize on every IQ4 tensor of the real model (sha256 of each
//!   tensor's data against `reference/llama-cpp-tensors.json`, every file type);
//! * round-trip and dot-product errors within ggml's `tests/test-quantize-fns.cpp` thresholds;
//! * adversarial blocks (zeros, one outlier, denormals, huge values, non-finite values) against
//!   golden bytes computed with ggml's own `quantize_iq4_nl` / `quantize_iq4_xs`.
//!
//! The real-model test skips with a note when the model is missing, unless `CI` is set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use evalq::formats::dequantize_to_vec;
use evalq::formats::iq4::{quantize_row_iq4_nl, quantize_row_iq4_xs, vec_dot_iq4_nl_q8_0, vec_dot_iq4_xs_q8_k};
use evalq::gguf::{GgmlType, QK_K};
use evalq::model::Checkpoint;
use evalq::util::sha256_bytes;
use half::f16;
use rayon::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The real F32 source model, or `None` (with a note) when absent outside CI.
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

fn quantize(ty: GgmlType, src: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; src.len() / ty.block_size() * ty.block_bytes()];
    match ty {
        GgmlType::IQ4_NL => quantize_row_iq4_nl(src, &mut out),
        GgmlType::IQ4_XS => quantize_row_iq4_xs(src, &mut out),
        _ => unreachable!("{ty}"),
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Test-only `quantize_row_q8_0_ref` (ggml-quants.c): `d = amax / 127`, `q = roundf(x / d)`.
fn q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

/// Test-only `quantize_row_q8_K_ref` (ggml-quants.c): `iscale = -127 / max` (max: the signed
/// value of largest magnitude), `d = 1 / iscale`, plus the 16 bsums.
fn q8_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * 292);
    for b in x.chunks_exact(QK_K) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in b {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            out.extend_from_slice(&[0u8; 292]);
            continue;
        }
        let iscale = -127.0 / max;
        let qs: Vec<i8> = b.iter().map(|&v| ((v * iscale).round_ties_even() as i32).min(127) as i8).collect();
        out.extend_from_slice(&(1.0 / iscale).to_le_bytes());
        out.extend(qs.iter().map(|&q| q as u8));
        for g in qs.chunks_exact(16) {
            out.extend_from_slice(&(g.iter().map(|&q| q as i16).sum::<i16>()).to_le_bytes());
        }
    }
    out
}

/// `generate_data` of test-quantize-fns.cpp: `0.1 + amplitude * cos(i + offset)`.
fn generate_data(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n).map(|i| 0.1 + amplitude * (i as f32 + offset).cos()).collect()
}

/// `array_rmse` of test-quantize-fns.cpp (note: sqrt of the sum, divided by n).
fn array_rmse(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    (sum.sqrt() as f32) / a.len() as f32
}

fn dot_f64(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() as f32
}

// ---------------------------------------------------------------------------------------------
// Byte-identical on the real model
// ---------------------------------------------------------------------------------------------

/// Every distinct (tensor, IQ4 type) of the reference, with its sha256 and the file types using it.
fn reference_iq4() -> BTreeMap<(String, GgmlType), (String, Vec<String>)> {
    let p = shared().join("reference/llama-cpp-tensors.json");
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let mut out: BTreeMap<(String, GgmlType), (String, Vec<String>)> = BTreeMap::new();
    for (ftype, tensors) in j.as_object().unwrap() {
        for (name, v) in tensors.as_object().unwrap() {
            let ty = GgmlType::from_name(v[0].as_str().unwrap());
            let Some(ty) = ty.filter(|t| matches!(t, GgmlType::IQ4_NL | GgmlType::IQ4_XS)) else { continue };
            let sha = v[1].as_str().unwrap().to_string();
            let e = out.entry((name.clone(), ty)).or_insert_with(|| (sha.clone(), vec![]));
            assert_eq!(e.0, sha, "{name} {ty}: two different reference hashes");
            e.1.push(ftype.clone());
        }
    }
    out
}

#[test]
fn iq4_quantization_is_byte_identical_to_llama_quantize_on_the_real_model() {
    let refs = reference_iq4();
    let n_nl = refs.keys().filter(|k| k.1 == GgmlType::IQ4_NL).count();
    let n_xs = refs.len() - n_nl;
    assert!(n_nl > 0 && n_xs > 0, "the reference lists {n_nl} IQ4_NL and {n_xs} IQ4_XS tensors");
    let Some(path) = real_model() else { return };
    let ckpt = Checkpoint::open(&path).unwrap();

    // Group by tensor so each F32 source is loaded once.
    let mut by_tensor: BTreeMap<&str, Vec<(GgmlType, &str)>> = BTreeMap::new();
    for ((name, ty), (sha, _)) in &refs {
        by_tensor.entry(name).or_default().push((*ty, sha));
    }
    let tensors: Vec<_> = by_tensor.into_iter().collect();
    let results: Vec<(String, GgmlType, Option<String>)> = tensors
        .par_iter()
        .flat_map_iter(|(name, wants)| {
            let t = ckpt.tensor_f32(name).unwrap();
            let n_per_row = t.dims[0] as usize;
            wants
                .iter()
                .map(|&(ty, sha)| {
                    assert_eq!(n_per_row % ty.block_size(), 0, "{name}: {n_per_row} columns for {ty}");
                    let q = quantize(ty, &t.data);
                    let ok = sha256_bytes(&q) == sha;
                    let note = (!ok).then(|| {
                        // No reference bytes are kept, only hashes: describe our first block.
                        let b = ty.block_bytes();
                        format!("dims {:?}, our first block {}", t.dims, hex(&q[..b]))
                    });
                    (name.to_string(), ty, note)
                })
                .collect::<Vec<_>>()
        })
        .collect();

    let mut counts: BTreeMap<GgmlType, (usize, usize)> = BTreeMap::new();
    let mut bad = vec![];
    for (name, ty, note) in &results {
        let c = counts.entry(*ty).or_default();
        c.1 += 1;
        match note {
            None => c.0 += 1,
            Some(n) => bad.push(format!("{name} {ty} (in {:?}): {n}", refs[&(name.clone(), *ty)].1)),
        }
    }
    for (ty, (ok, total)) in &counts {
        eprintln!("{ty}: {ok}/{total} tensors byte-identical to llama-quantize");
    }
    assert_eq!(results.len(), refs.len());
    assert!(bad.is_empty(), "{} mismatches:\n{}", bad.len(), bad.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// ggml's thresholds on synthetic data (tests/test-quantize-fns.cpp)
// ---------------------------------------------------------------------------------------------

const MAX_QUANTIZATION_TOTAL_ERROR: f32 = 0.002;
const MAX_DOT_PRODUCT_ERROR: f32 = 0.02;
const TEST_SIZE: usize = 32 * 128;

#[test]
fn iq4_round_trip_error_within_ggml_threshold() {
    let x = generate_data(0.0, TEST_SIZE, 2.0);
    for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS] {
        let y = dequantize_to_vec(ty, &quantize(ty, &x), x.len()).unwrap();
        let err = array_rmse(&x, &y);
        eprintln!("{ty}: total quantization error {err}");
        assert!(err < MAX_QUANTIZATION_TOTAL_ERROR, "{ty}: error {err}");
        // And per-weight: the worst error stays within a step of the coarsest level spacing.
        let worst = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 0.2, "{ty}: worst weight error {worst}");
    }
}

#[test]
fn iq4_vec_dot_error_within_ggml_threshold() {
    let (a, b) = (generate_data(0.0, TEST_SIZE, 2.0), generate_data(1.0, TEST_SIZE, 2.0));
    let (c, d) = (generate_data(3.0, TEST_SIZE, 1.0), generate_data(4.0, TEST_SIZE, 1.5));
    for (x, y) in [(&a, &b), (&c, &d), (&a, &d), (&c, &b)] {
        let want = dot_f64(x, y);
        let nl = vec_dot_iq4_nl_q8_0(TEST_SIZE, &quantize(GgmlType::IQ4_NL, x), &q8_0(y));
        let xs = vec_dot_iq4_xs_q8_k(TEST_SIZE, &quantize(GgmlType::IQ4_XS, x), &q8_k(y));
        for (ty, got) in [("IQ4_NL", nl), ("IQ4_XS", xs)] {
            let err = (got - want).abs() / TEST_SIZE as f32;
            assert!(err < MAX_DOT_PRODUCT_ERROR, "{ty}: dot {got} vs {want}, error {err}");
        }
    }
}

/// The scalar dot products equal the dot product of the dequantized blocks, accumulated the
/// same way (per block / sub-block, in f32), exactly.
#[test]
fn iq4_vec_dot_matches_dequantized_blocks() {
    let x = generate_data(0.5, 4 * QK_K, 1.3);
    let y = generate_data(2.5, 4 * QK_K, 0.7);

    let (qx, qy) = (quantize(GgmlType::IQ4_NL, &x), q8_0(&y));
    let mut want = 0f32;
    for (bx, by) in qx.chunks_exact(18).zip(qy.chunks_exact(34)) {
        let d = f16::from_le_bytes([by[0], by[1]]).to_f32() * f16::from_le_bytes([bx[0], bx[1]]).to_f32();
        let xi = dequantize_to_vec(GgmlType::IQ4_NL, &[&[0x00, 0x3c], &bx[2..]].concat(), 32).unwrap();
        let sumi: i32 = xi.iter().zip(&by[2..]).map(|(&v, &q)| v as i32 * q as i8 as i32).sum();
        want += d * sumi as f32;
    }
    assert_eq!(vec_dot_iq4_nl_q8_0(x.len(), &qx, &qy).to_bits(), want.to_bits());

    let (qx, qy) = (quantize(GgmlType::IQ4_XS, &x), q8_k(&y));
    let mut want = 0f32;
    for (bx, by) in qx.chunks_exact(136).zip(qy.chunks_exact(292)) {
        let d4d8 = f16::from_le_bytes([bx[0], bx[1]]).to_f32() * f32::from_le_bytes(by[0..4].try_into().unwrap());
        // Dequantize with d = 1 to read each weight's (ls - 32) * kvalue as an exact integer.
        let xi = dequantize_to_vec(GgmlType::IQ4_XS, &[&[0x00, 0x3c], &bx[2..]].concat(), QK_K).unwrap();
        for ib in 0..8 {
            let ls = ((bx[4 + ib / 2] >> (4 * (ib % 2))) & 0xF)
                | ((((bx[2] as u16 | (bx[3] as u16) << 8) >> (2 * ib)) & 3) << 4) as u8;
            let dl = d4d8 * (ls as i32 - 32) as f32;
            let sumi: i32 = (32 * ib..32 * ib + 32)
                .map(|i| {
                    let k = if ls == 32 { 0 } else { xi[i] as i32 / (ls as i32 - 32) };
                    k * by[4 + i] as i8 as i32
                })
                .sum();
            want += dl * sumi as f32;
        }
    }
    assert_eq!(vec_dot_iq4_xs_q8_k(x.len(), &qx, &qy).to_bits(), want.to_bits());
}

// ---------------------------------------------------------------------------------------------
// Adversarial blocks, against golden bytes from ggml's own quantize_iq4_nl / quantize_iq4_xs
// ---------------------------------------------------------------------------------------------

/// Deterministic pseudo-random values in [-scale, scale): xorshift64, every step exact in f32
/// (so the golden values' generator reproduces them bit for bit).
fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
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

/// The adversarial inputs, 256 weights each (8 IQ4_NL blocks or 1 IQ4_XS super-block).
fn adversarial_inputs() -> Vec<(&'static str, Vec<f32>)> {
    let base = noise(QK_K, 7, 0.05);
    let with = |f: &dyn Fn(usize, f32) -> f32| -> Vec<f32> { base.iter().enumerate().map(|(i, &v)| f(i, v)).collect() };
    vec![
        ("zeros", vec![0.0; QK_K]),
        ("negative zeros", vec![-0.0; QK_K]),
        ("one outlier", (0..QK_K).map(|i| if i == 77 { 1000.0 } else { 0.0 }).collect()),
        ("one negative outlier in noise", with(&|i, v| if i == 200 { -37.5 } else { v })),
        ("one empty sub-block", with(&|i, v| if (64..96).contains(&i) { 0.0 } else { v })),
        ("denormals", (0..QK_K).map(|i| f32::from_bits(1 + i as u32 * 3)).collect()),
        ("tiny normals", with(&|_, v| v * 1e-12)),
        ("below group eps", with(&|_, v| v * 1e-16)),
        ("huge", with(&|_, v| v * 1e30)),
        ("f16 overflow", with(&|_, v| v * 1e7)),
        ("constant", vec![0.75; QK_K]),
        ("alternating", (0..QK_K).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect()),
        ("one NaN", with(&|i, v| if i == 5 { f32::NAN } else { v })),
        ("one +inf", with(&|i, v| if i == 40 { f32::INFINITY } else { v })),
        ("one -inf", with(&|i, v| if i == 100 { f32::NEG_INFINITY } else { v })),
        ("all NaN", vec![f32::NAN; QK_K]),
        ("f32::MAX", with(&|i, v| if i % 32 == 3 { f32::MAX } else { v })),
    ]
}

/// sha256 of the bytes that ggml's `quantize_iq4_nl` / `quantize_iq4_xs` (ggml-quants.c of the
/// reference llama.cpp, built `-O3 -DNDEBUG` like a Release build, `quant_weights = NULL`) write
/// for each adversarial input, as (name, IQ4_NL, IQ4_XS). Non-finite inputs give garbage blocks,
/// but the same garbage as ggml.
const GOLDEN: &[(&str, &str, &str)] = &[
    (
        "zeros",
        "1748f91eae214a48880fe81b1289f3a7973f8b038286bee19900beb01b24f4db",
        "d859cb8aab1ae9c9eed9bc05fc34ce1252bcfe1a6dbd36e309a8c2aad46b34b8",
    ),
    (
        "negative zeros",
        "1748f91eae214a48880fe81b1289f3a7973f8b038286bee19900beb01b24f4db",
        "d859cb8aab1ae9c9eed9bc05fc34ce1252bcfe1a6dbd36e309a8c2aad46b34b8",
    ),
    (
        "one outlier",
        "8776c5536713ad9d53981e82ef88a11aaa6e62d4641f9091b6df2e784c277b5c",
        "ff0c40b3f8eb731312835101fb0b5fbf0bede4498c76ab6bf8ab75a8446e90ee",
    ),
    (
        "one negative outlier in noise",
        "3ca9685dd6d8acfff6ee15b974028f72366ba42d6416ddd342f970e680bb4bb7",
        "82d8e309efaccfd400010ef5ff38a58b319bd9a3810446f86cb86e94347509dd",
    ),
    (
        "one empty sub-block",
        "ddd839715d8a95e9b096a6fd447e613438318038f87de7928969c95bd2d524e2",
        "1f3b7bc0960f3ef46d31cf3e68179a60346fe3f18b70e4b4cdcf3fe0d696631c",
    ),
    (
        "denormals",
        "1748f91eae214a48880fe81b1289f3a7973f8b038286bee19900beb01b24f4db",
        "d859cb8aab1ae9c9eed9bc05fc34ce1252bcfe1a6dbd36e309a8c2aad46b34b8",
    ),
    (
        "tiny normals",
        "804b12750f2f20d0bb293c764ca053cb60ab73d88007fbcc99e9067c44d9c584",
        "00a872a5502c3b2a75c7c3fa8e829fa77a944cb1980a5b95884338950b69b42a",
    ),
    (
        "below group eps",
        "1748f91eae214a48880fe81b1289f3a7973f8b038286bee19900beb01b24f4db",
        "d859cb8aab1ae9c9eed9bc05fc34ce1252bcfe1a6dbd36e309a8c2aad46b34b8",
    ),
    (
        "huge",
        "ea43c2ed15d2ae2096bbb8e49beb41df2cdf9652a19b29b2dd3fc0bb696f11f5",
        "d859cb8aab1ae9c9eed9bc05fc34ce1252bcfe1a6dbd36e309a8c2aad46b34b8",
    ),
    (
        "f16 overflow",
        "9607e74b3e5e97900718094fb91abc48d31dcff0a0ba3800c4a4a4b07eceaedc",
        "44b377bdfd6daec15acd39642bf98ab16bd93433da58fcdfc7678676111cf1d6",
    ),
    (
        "constant",
        "7193b34eb7db54dc546e24773e6364e397d214fadaeec95c996c3a7b0227f173",
        "570f7133cd2202a1e261db45aa5fc4a0934c8024c2bd66894b4ab4e9228839ba",
    ),
    (
        "alternating",
        "6090023dbe18460149401e5f2605af84e3f1d462eee7b6c0ae79d6e4f17a84ae",
        "62a48708f26e06ad46626084dcda7c4d343fa4b76ae9f95ecb7d053a29a29d25",
    ),
    (
        "one NaN",
        "0d7477d1ff83628dc9cf6b3a531646ecfb75063af43424c7300c46c034b0d18c",
        "618a1ec43851b080e1135d4333b804a2496fbc1d0ab06be49a51979af06b3e6a",
    ),
    (
        "one +inf",
        "bd6649a0889478ee1afa7bed1d59c51f0916b8faebd9d5ff0e0a206c5d6e4f3f",
        "bbfab44dbc6643d72a38ecc53dbbcc4209c16b20a463a38d7e972320d5ef1f65",
    ),
    (
        "one -inf",
        "57e2fbb2446ac073477e6bfa079f162a396cfd93631b6a13695647049e2d3205",
        "6387a072e1824a5528228a8e4260531ab68bf11c925b11eb7724c639889f3b20",
    ),
    (
        "all NaN",
        "23b2b90d47c68a56757a7e788efed5027b0e48e251fc94f3855d409bf08b63c2",
        "cc5d18858969bb061c575b2d54a585f0c4a692c779eb9d62e08dad747db17199",
    ),
    (
        "f32::MAX",
        "ea43c2ed15d2ae2096bbb8e49beb41df2cdf9652a19b29b2dd3fc0bb696f11f5",
        "d859cb8aab1ae9c9eed9bc05fc34ce1252bcfe1a6dbd36e309a8c2aad46b34b8",
    ),
];

#[test]
fn iq4_adversarial_blocks_match_ggml_and_never_panic() {
    for (name, x) in adversarial_inputs() {
        for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS] {
            let q = quantize(ty, &x);
            let y = dequantize_to_vec(ty, &q, x.len()).unwrap();
            let finite = x.iter().all(|v| v.is_finite());
            if finite && x.iter().all(|v| v.abs() < 1e4) {
                assert!(y.iter().all(|v| v.is_finite()), "{name} {ty}: non-finite output");
            }
            // Dot products never panic either.
            let ones = vec![1.0f32; x.len()];
            let _ = if ty == GgmlType::IQ4_NL {
                vec_dot_iq4_nl_q8_0(x.len(), &q, &q8_0(&ones))
            } else {
                vec_dot_iq4_xs_q8_k(x.len(), &q, &q8_k(&ones))
            };
            let g = GOLDEN.iter().find(|g| g.0 == name).expect("a golden value for every input");
            let want = if ty == GgmlType::IQ4_NL { g.1 } else { g.2 };
            assert_eq!(sha256_bytes(&q), want, "{name} {ty}: {}", hex(&q));
        }
    }
}

#[test]
fn iq4_zero_blocks_have_exact_bytes() {
    // IQ4_NL: d = +0, every index 8 (level 1, the nearest to 0).
    let q = quantize(GgmlType::IQ4_NL, &[0.0; 64]);
    assert_eq!(q, [[&[0u8, 0][..], &[0x88; 16]].concat(), [&[0u8, 0][..], &[0x88; 16]].concat()].concat());
    // IQ4_XS: d = -max_scale / 32 = -0.0 (f16 0x8000), every 6-bit scale 32 (0 - (-32)).
    let q = quantize(GgmlType::IQ4_XS, &[0.0; QK_K]);
    assert_eq!(&q[..8], &[0x00, 0x80, 0xAA, 0xAA, 0, 0, 0, 0]);
    assert!(q[8..].iter().all(|&b| b == 0x88));
    for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS] {
        let y = dequantize_to_vec(ty, &quantize(ty, &[0.0; QK_K]), QK_K).unwrap();
        assert!(y.iter().all(|&v| v == 0.0), "{ty}");
    }
}

#[test]
fn iq4_single_outlier_is_reconstructed() {
    for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS] {
        // Magnitudes whose scales stay normal f16 (IQ4_XS's super-block scale is about
        // |v| / 3600, so a small outlier like 0.01 loses precision to f16 subnormals, as in ggml).
        for v in [1000.0f32, -3.25, 0.5] {
            let mut x = vec![0f32; QK_K];
            x[77] = v;
            let y = dequantize_to_vec(ty, &quantize(ty, &x), QK_K).unwrap();
            assert!((y[77] - v).abs() <= v.abs() * 2e-3, "{ty} {v}: {}", y[77]);
            // The zeros of the outlier's block land on the smallest level (±d), the rest on 0.
            for (i, &w) in y.iter().enumerate().filter(|&(i, _)| i != 77) {
                assert!(w.abs() <= v.abs() / 50.0, "{ty} {v}: weight {i} = {w}");
            }
        }
    }
}

#[test]
fn iq4_non_finite_blocks_do_not_disturb_their_neighbours() {
    let good = generate_data(0.0, QK_K, 1.0);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for ty in [GgmlType::IQ4_NL, GgmlType::IQ4_XS] {
            let mut x = good.clone();
            x.extend(std::iter::repeat_n(bad, QK_K));
            x.extend_from_slice(&good);
            let q = quantize(ty, &x);
            let g = quantize(ty, &good);
            assert_eq!(&q[..g.len()], &g[..], "{ty} {bad}");
            assert_eq!(&q[q.len() - g.len()..], &g[..], "{ty} {bad}");
        }
    }
}

#[test]
#[should_panic(expected = "cannot quantize")]
fn iq4_xs_rejects_partial_super_blocks() {
    let mut out = vec![0u8; 136];
    quantize_row_iq4_xs(&[0.0; 255], &mut out);
}

#[test]
#[should_panic(expected = "cannot quantize")]
fn iq4_nl_rejects_wrong_output_length() {
    let mut out = vec![0u8; 17];
    quantize_row_iq4_nl(&[0.0; 32], &mut out);
}
