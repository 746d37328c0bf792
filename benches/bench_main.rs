//! Criterion benchmarks, one entry point. Throughput is labelled honestly: dequantization,
//! quantized dot products and quantized matrix products in bytes of weight blocks read (once
//! per call), f32 matrix products in elements (multiply-adds).
//!
//! Every kernel is measured on every instruction set this CPU has (scalar, AVX2, AVX-512 or
//! NEON), each under its own name, so a regression in one path shows on its own.
//!
//! Run: `cargo bench --bench bench_main` (add a filter such as `matmul_q/avx512` to narrow).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use std::time::Duration;

use evalq::formats::{self, dequantize};
use evalq::gguf::GgmlType;
use evalq::kernels::matmul_f32::matmul_with;
use evalq::kernels::matmul_q::{self, activation_quantizer_with};
use evalq::kernels::{packed, vec_dot, Isa};

/// The weight types with block kernels, as evalq's file types use them.
const QUANTIZED: [GgmlType; 14] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// Real blocks: `values` quantized with the format's own quantizer.
fn quantized(ty: GgmlType, values: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; values.len() / ty.block_size() * ty.block_bytes()];
    (formats::traits(ty).quantize.expect("quantizable"))(values, &mut out);
    out
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// Random block bytes with every 16-bit scale field replaced by a sane f16, so no block holds
/// NaN or inf (those would make the timing unrepresentative on some CPUs).
fn blocks(ty: GgmlType, n_weights: usize) -> Vec<u8> {
    let n_blocks = n_weights / ty.block_size();
    let raw = noise(n_blocks * ty.block_bytes(), 7);
    let mut b: Vec<u8> = raw.iter().map(|v| (v.to_bits() >> 3) as u8).collect();
    let sane = half::f16::from_f32(0.01).to_le_bytes();
    for blk in b.chunks_exact_mut(ty.block_bytes()) {
        match ty {
            GgmlType::F16 | GgmlType::BF16 | GgmlType::F32 => {}
            GgmlType::Q6_K => blk[208..210].copy_from_slice(&sane),
            GgmlType::Q3_K => blk[108..110].copy_from_slice(&sane),
            GgmlType::Q2_K => {
                blk[80..82].copy_from_slice(&sane);
                blk[82..84].copy_from_slice(&sane);
            }
            GgmlType::Q8_K => blk[..4].copy_from_slice(&0.01f32.to_le_bytes()),
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => {
                blk[..2].copy_from_slice(&sane);
                blk[2..4].copy_from_slice(&sane);
            }
            _ => blk[..2].copy_from_slice(&sane),
        }
    }
    if matches!(ty, GgmlType::F16 | GgmlType::BF16 | GgmlType::F32) {
        let vals = noise(n_weights, 9);
        b = match ty {
            GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => vals.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
            _ => vals.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        };
    }
    b
}

fn bench_dequantize(c: &mut Criterion) {
    let n = 576 * 1536; // one SmolLM2 ffn matrix
    let mut g = c.benchmark_group("dequantize");
    for ty in QUANTIZED {
        let data = blocks(ty, n);
        let mut out = vec![0f32; n];
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(ty.name()), |b| {
            b.iter(|| dequantize(ty, &data, &mut out).unwrap())
        });
    }
    g.finish();
}

fn bench_matmul_f32(c: &mut Criterion) {
    // The SmolLM2 ffn_up product over a 512-token chunk, and a single generation token.
    let (k, n) = (576, 1536);
    let w = noise(n * k, 1);
    let mut g = c.benchmark_group("matmul_f32");
    g.sample_size(10);
    for isa in Isa::available() {
        for nt in [1usize, 512] {
            if isa == Isa::Scalar && nt > 1 {
                continue; // the scalar reference is for correctness, not speed
            }
            let x = noise(nt * k, 2);
            let mut y = vec![0f32; nt * n];
            g.throughput(Throughput::Elements((nt * n * k) as u64));
            g.bench_function(BenchmarkId::new(isa.name(), format!("{nt}x{k}x{n}")), |b| {
                b.iter(|| matmul_with(isa, &x, &w, &mut y, nt, k, n))
            });
        }
    }
    g.finish();
}

/// One dot product per weight row of SmolLM2's ffn_down (576 rows of 1536 weights) against one
/// quantized activation row: the generation inner loop without threads or activation work.
fn bench_vec_dot(c: &mut Criterion) {
    let (rows, cols) = (576, 1536);
    let mut g = c.benchmark_group("vec_dot");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for isa in Isa::available() {
        for ty in QUANTIZED {
            let w = quantized(ty, &noise(rows * cols, 3));
            let vdt = formats::traits(ty).vec_dot_type;
            let mut y = vec![0u8; vdt.row_bytes(cols as u64).unwrap() as usize];
            activation_quantizer_with(isa, vdt)(&noise(cols, 4), &mut y);
            let dot = vec_dot::select(ty, isa).expect("a dot product");
            let w_row = w.len() / rows;
            g.throughput(Throughput::Bytes(w.len() as u64));
            g.bench_function(BenchmarkId::new(isa.name(), ty.name()), |b| {
                b.iter(|| w.chunks_exact(w_row).map(|r| dot(cols, r, &y)).sum::<f32>())
            });
        }
    }
    g.finish();
}

/// The whole quantized product `y = x · Wᵀ` for ffn_down (576 × 1536) as the forward pass runs
/// it (activation quantization, threads, the four- and eight-token kernels), for one token
/// (generation) and for 64 (a slice of a prompt). Bytes are the weights, read once per call.
/// Where the instruction set repacks a format (`kernels::packed`), the packed product is what
/// the forward pass runs, and it is measured under `<isa>/<type>/packed` beside the row-major
/// one.
fn bench_matmul_q(c: &mut Criterion) {
    let (rows, cols) = (576, 1536);
    let mut g = c.benchmark_group("matmul_q");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for isa in Isa::available() {
        for ty in QUANTIZED {
            let w = quantized(ty, &noise(rows * cols, 5));
            let p = packed::packable(ty, rows, isa).then(|| packed::pack(ty, rows, cols, &w));
            for nt in [1usize, 64] {
                let x = noise(nt * cols, 6);
                let mut y = vec![0f32; nt * rows];
                let mut scratch = Vec::new();
                g.throughput(Throughput::Bytes(w.len() as u64));
                g.bench_function(BenchmarkId::new(format!("{}/{}", isa.name(), ty.name()), format!("{nt}tok")), |b| {
                    b.iter(|| matmul_q::matmul_with(isa, ty, &w, rows, cols, &x, &mut y, nt, &mut scratch))
                });
                if let Some(p) = &p {
                    let id = BenchmarkId::new(format!("{}/{}/packed", isa.name(), ty.name()), format!("{nt}tok"));
                    g.bench_function(id, |b| {
                        b.iter(|| matmul_q::matmul_packed(isa, ty, p, rows, cols, &x, &mut y, nt, &mut scratch))
                    });
                }
            }
        }
    }
    g.finish();
}

/// Generation through the tied output projection (49152 × 576, 28-54 MB): one token, weights
/// streamed from memory rather than cache, in bytes of weights per second, the figure to hold
/// against `evalq bench bandwidth`. Q8_0 (token_embd of every mix) and F16, through the path
/// the forward pass takes on each instruction set (packed where that exists).
fn bench_matmul_q_output(c: &mut Criterion) {
    let (rows, cols) = (49152, 576);
    let mut g = c.benchmark_group("matmul_q_output");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for isa in Isa::available() {
        for ty in [GgmlType::Q8_0, GgmlType::F16] {
            let w = quantized(ty, &noise(rows * cols, 5));
            let p = packed::packable(ty, rows, isa).then(|| packed::pack(ty, rows, cols, &w));
            let x = noise(cols, 6);
            let mut y = vec![0f32; rows];
            let mut scratch = Vec::new();
            g.throughput(Throughput::Bytes(w.len() as u64));
            g.bench_function(BenchmarkId::new(isa.name(), ty.name()), |b| {
                b.iter(|| match &p {
                    Some(p) => matmul_q::matmul_packed(isa, ty, p, rows, cols, &x, &mut y, 1, &mut scratch),
                    None => matmul_q::matmul_with(isa, ty, &w, rows, cols, &x, &mut y, 1, &mut scratch),
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_dequantize, bench_matmul_f32, bench_vec_dot, bench_matmul_q, bench_matmul_q_output);
criterion_main!(benches);
