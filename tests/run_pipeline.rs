//! `evalq run` end to end: the outputs, resuming, and interruption. The tiny model makes the
//! pipeline tests fast; one test runs the real model for a few chunks and checks the figures
//! against the plain perplexity path and the physics of bandwidth.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{evalq, real_model, sample_text, tiny_llama};
use evalq::run::results::RunResults;

/// A cache directory per test, so the quantize cache and the bandwidth figure start empty
/// (the bandwidth probe is made small through the environment).
fn env_cmd(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_evalq"));
    c.env("EVALQ_CACHE_DIR", cache).env("EVALQ_BANDWIDTH_BYTES", "64MiB");
    c
}

fn tiny_setup(dir: &Path) -> (PathBuf, PathBuf) {
    let model = dir.join("tiny.gguf");
    tiny_llama().write(&model).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(&text, sample_text()).unwrap();
    (model, text)
}

fn tiny_run_args<'a>(model: &'a Path, text: &'a Path, out: &'a Path, formats: &'a str) -> Vec<String> {
    [
        "run", "--model", model.to_str().unwrap(), "--dataset", text.to_str().unwrap(), "--ctx", "64",
        "--formats", formats, "--reps", "1", "--pp", "32", "--tg", "8", "--out", out.to_str().unwrap(), "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn load_results(dir: &Path) -> RunResults {
    serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap()
}

#[test]
fn run_writes_every_output_and_resumes_without_recomputing() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = tiny_setup(tmp.path());
    let out = tmp.path().join("reports");
    let cache = tmp.path().join("cache");
    let args = tiny_run_args(&model, &text, &out, "Q8_0,Q4_0,IQ4_NL");

    let o = env_cmd(&cache).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let latest = out.join("latest");
    let dir = std::fs::canonicalize(&latest).expect("reports/latest points at the run");
    for f in ["results.csv", "results.json", "report.md", "report.html"] {
        assert!(dir.join(f).metadata().map(|m| m.len() > 0).unwrap_or(false), "{f} missing or empty");
    }
    let r = load_results(&dir);
    assert_eq!(r.formats.iter().map(|f| f.format.as_str()).collect::<Vec<_>>(), ["Q8_0", "Q4_0", "IQ4_NL"]);
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "a header and one row per format:\n{csv}");
    for f in &r.formats {
        let q = &f.quality;
        assert_eq!(q.n_tokens, r.dataset.n_tokens_scored);
        assert_eq!(q.chunk_kld.len(), r.dataset.n_chunks);
        assert!(q.ppl.is_finite() && q.ppl > 1.0 && q.kld_mean >= 0.0, "{}: {q:?}", f.format);
        assert!((q.dppl - (q.ppl - r.baseline.ppl)).abs() < 1e-6 * q.ppl, "ΔPPL is PPL − base PPL");
        assert!(q.dppl_ci_low <= q.dppl && q.dppl <= q.dppl_ci_high);
        assert!(f.speed.pp_tps > 0.0 && f.speed.tg_tps > 0.0 && f.speed.tg_bytes_per_token > 0.0);
        assert!(f.file_bytes > 0 && f.bpw > 0.0);
    }
    // Q8_0 is closer to the F32 baseline than 4-bit formats.
    assert!(r.formats[0].quality.kld_mean < r.formats[1].quality.kld_mean);

    // Run again: nothing is recomputed (the per-format files keep their bytes and times).
    let before = std::fs::read(dir.join("formats/Q4_0.json")).unwrap();
    let t = Instant::now();
    let o = env_cmd(&cache).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(dir.join("formats/Q4_0.json")).unwrap(), before, "a finished format was redone");
    assert_eq!(load_results(&dir).formats.len(), 3);
    eprintln!("rerun took {:.2} s", t.elapsed().as_secs_f64());

    // Losing one format's result redoes that format only, from the cached quantized file.
    std::fs::remove_file(dir.join("formats/IQ4_NL.json")).unwrap();
    std::fs::remove_file(dir.join("state/quality-IQ4_NL.json")).unwrap();
    let o = env_cmd(&cache).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(dir.join("formats/Q4_0.json")).unwrap(), before);
    let r2 = load_results(&dir);
    let (a, b) = (&r.formats[2], &r2.formats[2]);
    assert!(b.quantize_cached, "the quantized file should come from the cache");
    assert_eq!(a.quality.ppl.to_bits(), b.quality.ppl.to_bits(), "the same inputs give the same perplexity");
    assert_eq!(a.quality.kld_mean.to_bits(), b.quality.kld_mean.to_bits());
}

#[test]
fn run_rejects_bad_arguments_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = tiny_setup(tmp.path());
    let out = tmp.path().join("reports");
    let m = model.to_str().unwrap();
    let t = text.to_str().unwrap();
    let o = evalq(&["run", "--model", m, "--dataset", t, "--ctx", "64", "--formats", "Q4_K_M,Q7_X", "--out", out.to_str().unwrap()]);
    common::assert_clean_failure(&o, &["Q7_X", "unknown file type"]);
    let o = evalq(&["run", "--model", m, "--dataset", t, "--ctx", "64", "--baseline", "Q8_0", "--out", out.to_str().unwrap()]);
    common::assert_clean_failure(&o, &["--baseline"]);
    let o = evalq(&["run", "--model", m, "--dataset", t, "--ctx", "4096", "--formats", "Q8_0", "--out", out.to_str().unwrap()]);
    common::assert_clean_failure(&o, &["needs at least"]);
}

/// SIGINT mid-run: exit 130, every file on disk complete, and the same command finishes the
/// run with the results an uninterrupted run gives.
#[test]
fn an_interrupted_run_resumes_to_the_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = tiny_setup(tmp.path());
    let cache = tmp.path().join("cache");
    // Enough chunks that the run is still busy when the signal arrives.
    let big = sample_text().repeat(40);
    std::fs::write(&text, big).unwrap();

    let out_a = tmp.path().join("a");
    let args_a = tiny_run_args(&model, &text, &out_a, "Q8_0,Q4_1");
    let o = env_cmd(&cache).args(&args_a).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let whole = load_results(&std::fs::canonicalize(out_a.join("latest")).unwrap());

    let out_b = tmp.path().join("b");
    let args_b = tiny_run_args(&model, &text, &out_b, "Q8_0,Q4_1");
    let mut interrupted = false;
    for delay_ms in [300u64, 700, 1500, 3000] {
        let _ = std::fs::remove_dir_all(&out_b);
        let child = env_cmd(&cache).args(&args_b).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc_kill(child.id() as i32, 2) };
        let o = child.wait_with_output().unwrap();
        if o.status.code() == Some(130) {
            interrupted = true;
            // Whatever is on disk parses: no torn files.
            for entry in walk(&out_b) {
                if entry.extension().is_some_and(|e| e == "json") {
                    let bytes = std::fs::read(&entry).unwrap();
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .unwrap_or_else(|e| panic!("{} is torn: {e}", entry.display()));
                }
                assert!(!entry.to_string_lossy().ends_with(".tmp"), "stray temporary file {}", entry.display());
            }
            break;
        }
        // Killed before the handler was installed (no exit code), or finished first: retry
        // with a later signal. Anything else is a failure.
        assert!(
            o.status.success() || o.status.code().is_none(),
            "neither finished nor interrupted: {:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(interrupted, "the run finished before any SIGINT arrived");
    let o = env_cmd(&cache).args(&args_b).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resumed = load_results(&std::fs::canonicalize(out_b.join("latest")).unwrap());
    for (a, b) in whole.formats.iter().zip(&resumed.formats) {
        assert_eq!(a.format, b.format);
        assert_eq!(a.quality.ppl.to_bits(), b.quality.ppl.to_bits(), "{}", a.format);
        assert_eq!(a.quality.kld_mean.to_bits(), b.quality.kld_mean.to_bits(), "{}", a.format);
        assert_eq!(a.quality.chunk_nll, b.quality.chunk_nll, "{}", a.format);
    }
    assert_eq!(whole.baseline.ppl.to_bits(), resumed.baseline.ppl.to_bits());
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The real model, three formats, two chunks: the lockstep PPL equals `evalq ppl` on the same
/// format bit for bit, and generation bandwidth stays under the measured peak.
#[test]
fn real_model_run_agrees_with_ppl_and_with_physics() {
    let Some(model) = real_model() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("reports");
    let m = model.to_str().unwrap();
    let o = evalq(&[
        "run", "--model", m, "--formats", "Q8_0,Q4_K_M,Q4_1", "--chunks", "2", "--reps", "2", "--out",
        out.to_str().unwrap(), "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = load_results(&std::fs::canonicalize(out.join("latest")).unwrap());
    assert!(r.model.source.contains("dequantized to an F32 source"), "{}", r.model.source);
    let report = std::fs::read_to_string(std::fs::canonicalize(out.join("latest")).unwrap().join("report.md")).unwrap();
    assert!(report.contains("dequantized to an F32 source"));
    // llama.cpp's reference running PPL after 2 chunks of the F32 source.
    let refs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(common::shared().join("reference/llama-cpp-ppl.json")).unwrap()).unwrap();
    let base2 = refs["F32_c512_ch20_chunks"][1].as_f64().unwrap();
    assert!((r.baseline.ppl / base2 - 1.0).abs() < 1e-3, "baseline {} vs llama.cpp {base2}", r.baseline.ppl);
    for f in &r.formats {
        let o = evalq(&["ppl", "--model", m, "--format", &f.format, "--chunks", "2", "--json", "-q"]);
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["ppl"].as_f64().unwrap().to_bits(), f.quality.ppl.to_bits(), "{}: lockstep PPL differs", f.format);
        let s = &f.speed;
        assert!(s.tg_gbps > 0.0 && s.tg_gbps < r.machine.peak_read_gbps * 1.5, "{}: {} GB/s vs peak {}", f.format, s.tg_gbps, r.machine.peak_read_gbps);
        assert!(s.roofline_tg_tps > s.tg_tps * 0.5, "{}: roofline {} vs measured {}", f.format, s.roofline_tg_tps, s.tg_tps);
    }
    let by = |n: &str| r.formats.iter().find(|f| f.format == n).unwrap();
    // Smaller weights stream fewer bytes per token.
    assert!(by("Q4_K_M").speed.tg_bytes_per_token < by("Q8_0").speed.tg_bytes_per_token);
    assert!(by("Q8_0").quality.kld_mean < by("Q4_K_M").quality.kld_mean);
    // The source is the published Q4_1 model: Q4_1 reproduces it almost exactly.
    assert!(by("Q4_1").quality.kld_mean < by("Q8_0").quality.kld_mean, "Q4_1 should be nearly lossless here");
}

/// `--baseline BF16` compares against the source rounded to BF16, and `--no-speed` leaves the
/// speed figures unmeasured (NaN in memory, null in JSON) without breaking the outputs.
#[test]
fn a_bf16_baseline_and_no_speed_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = tiny_setup(tmp.path());
    let out = tmp.path().join("reports");
    let cache = tmp.path().join("cache");
    let mut args = tiny_run_args(&model, &text, &out, "Q8_0,F16");
    args.extend(["--baseline", "bf16", "--no-speed"].map(String::from));
    let o = env_cmd(&cache).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = std::fs::canonicalize(out.join("latest")).unwrap();
    let r = load_results(&dir);
    assert_eq!(r.baseline.format, "BF16");
    assert!(r.formats.iter().all(|f| f.quality.ppl.is_finite() && f.speed.tg_tps.is_nan()));
    // F16 keeps more mantissa than the BF16 baseline, so both differ from it.
    assert!(r.formats.iter().all(|f| f.quality.kld_mean > 0.0));
    assert!(std::fs::read_to_string(dir.join("report.md")).unwrap().contains("BF16 baseline"));
}
