//! Cross-checks evalq's dequantization bit for bit against the Python `gguf` package (gguf-py),
//! through `scripts/crosscheck_dequant.py`:
//!
//! * pseudo-random blocks of every supported type (scale fields forced to finite f16 values);
//! * real tensors from the SmolLM2-135M Q4_1 GGUF in the evalq cache.
//!
//! When python3 with `gguf` and `numpy`, or the model file, is missing, the tests print a note and
//! pass, unless the `CI` environment variable is set, in which case they fail. `PYTHON` selects
//! the interpreter (default `python3`); `EVALQ_DEQUANT_DIR` keeps the random test files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use evalq::formats::dequantize_to_vec;
use evalq::gguf::{GgmlType, GgufFile};
use half::f16;

/// Types the random cross-check must cover (Q8_K is checked as well, but optional).
const REQUIRED: [GgmlType; 15] = [
    GgmlType::F32,
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

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Returns false (after printing why) when a prerequisite is missing outside CI; panics in CI.
fn prerequisite(ok: bool, what: &str) -> bool {
    if !ok {
        if in_ci() {
            panic!("CI is set but {what}");
        }
        eprintln!("note: skipping dequant cross-check: {what}");
    }
    ok
}

fn have_gguf_py() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import gguf, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    prerequisite(
        ok,
        &format!(
            "`{} -c \"import gguf, numpy\"` failed (pip install gguf numpy)",
            python()
        ),
    )
}

/// Runs the Python script on `dir`, panics on any mismatch and returns the values compared per
/// file stem (e.g. `"Q4_K"`).
fn run_crosscheck(dir: &Path) -> BTreeMap<String, (usize, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/crosscheck_dequant.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "crosscheck_dequant.py failed ({}):\n{stdout}{stderr}",
        out.status
    );
    let mut compared = BTreeMap::new();
    for line in stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"OK") {
            let stem = f[1].trim_end_matches(".bin").to_string();
            compared.insert(stem, (f[3].parse::<usize>().unwrap(), f[4].to_string()));
        }
    }
    compared
}

/// Writes `<stem>.bin` and evalq's dequantization of it as `<stem>.f32`; returns the count.
fn write_pair(dir: &Path, stem: &str, ty: GgmlType, data: &[u8]) -> usize {
    let n = data.len() / ty.block_bytes() * ty.block_size();
    let values = dequantize_to_vec(ty, data, n).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join(format!("{stem}.bin")), data).unwrap();
    std::fs::write(dir.join(format!("{stem}.f32")), f32_bytes).unwrap();
    n
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    /// Uniform in [-2, 2).
    fn unit2(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }

    /// A finite f16 scale: usually in [-2, 2], sometimes any finite bit pattern (zeros,
    /// subnormals, 65504) to cover the corners of the f16 conversion.
    fn scale(&mut self) -> f16 {
        if self.next().is_multiple_of(8) {
            loop {
                let h = f16::from_bits(self.next() as u16);
                if h.is_finite() {
                    return h;
                }
            }
        }
        f16::from_f32(self.unit2())
    }
}

/// Byte offsets of the f16 scale fields of each block type (ggml-common.h).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
            &[0]
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// Deterministic test data for `ty`: every bit pattern for F16/BF16, random bits for F32
/// (NaNs included), random blocks with finite scales for the quantized types.
fn random_data(ty: GgmlType, rng: &mut Rng) -> Vec<u8> {
    match ty {
        GgmlType::F16 | GgmlType::BF16 => (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect(),
        GgmlType::F32 => {
            let mut v = vec![0u8; 4 * 65536];
            rng.fill(&mut v);
            v
        }
        _ => {
            let n_blocks = if ty.block_size() == 32 { 4096 } else { 1024 };
            let bb = ty.block_bytes();
            let mut v = vec![0u8; n_blocks * bb];
            rng.fill(&mut v);
            for block in v.chunks_exact_mut(bb) {
                for &off in f16_fields(ty) {
                    block[off..off + 2].copy_from_slice(&rng.scale().to_le_bytes());
                }
                if ty == GgmlType::Q8_K {
                    block[0..4].copy_from_slice(&rng.unit2().to_le_bytes());
                }
            }
            v
        }
    }
}

#[test]
fn random_blocks_match_gguf_py_bitwise() {
    if !have_gguf_py() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // EVALQ_DEQUANT_DIR keeps the files, e.g. to compare them with other implementations.
    let dir = std::env::var_os("EVALQ_DEQUANT_DIR").map(PathBuf::from);
    let dir = dir.as_deref().unwrap_or(tmp.path());
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(0x5EED_0FE7_A100_0001);
    let mut written = BTreeMap::new();
    for ty in REQUIRED.iter().copied().chain([GgmlType::Q8_K]) {
        let data = random_data(ty, &mut rng);
        written.insert(ty.name().to_string(), write_pair(dir, ty.name(), ty, &data));
    }
    let compared = run_crosscheck(dir);
    println!("values compared bit for bit, per type:");
    for (name, n) in &written {
        let (got, src) = compared
            .get(name)
            .unwrap_or_else(|| panic!("{name}: the script did not report a comparison"));
        assert_eq!(got, n, "{name}: value count");
        println!("  {name:7} {n:7} ({src})");
    }
    for ty in REQUIRED {
        assert_eq!(
            compared[ty.name()].1,
            "gguf-py",
            "{ty} must be checked against gguf-py"
        );
    }
}

fn model_path() -> PathBuf {
    let cache = std::env::var_os("EVALQ_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/evalq")
        });
    cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[test]
fn model_tensors_match_gguf_py_bitwise() {
    let path = model_path();
    if !prerequisite(
        path.exists(),
        &format!("model file {} is absent", path.display()),
    ) {
        return;
    }
    if !have_gguf_py() {
        return;
    }
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dir = tempfile::tempdir().unwrap();
    let wanted = [
        ("token_embd.weight", GgmlType::Q8_0),
        ("blk.0.attn_q.weight", GgmlType::Q4_1),
        ("blk.0.attn_norm.weight", GgmlType::F32),
    ];
    let mut written = Vec::new();
    for (name, ty) in wanted {
        let info = file
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{}: no tensor {name}", path.display()));
        assert_eq!(info.ty, ty, "{name}: unexpected type");
        let data = file.tensor_data(info);
        let stem = format!("{name}.{}", ty.name());
        let n = write_pair(dir.path(), &stem, ty, data);
        assert_eq!(n as u64, info.n_elements, "{name}: element count");
        written.push((stem, n));
    }
    let compared = run_crosscheck(dir.path());
    for (stem, n) in written {
        let (got, _) = compared
            .get(&stem)
            .unwrap_or_else(|| panic!("{stem}: not compared"));
        assert_eq!(*got, n, "{stem}: value count");
        println!("  {stem}: {n} values bit-identical");
    }
}
