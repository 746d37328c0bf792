//! `evalq compare` end to end through the binary, on a real run's results.json (SmolLM2-135M,
//! 13 formats, 20 chunks; `tests/data/compare/results.json`) and edited copies of it: verdicts,
//! exit codes, refused inputs and the report files.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/compare/results.json");

fn real() -> Value {
    serde_json::from_str(&std::fs::read_to_string(DATA).unwrap()).unwrap()
}

/// Writes `v` as `<tmp>/<name>/results.json` and returns the run directory.
fn run_dir(tmp: &Path, name: &str, v: &Value) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(v).unwrap()).unwrap();
    dir
}

fn format_mut<'a>(v: &'a mut Value, name: &str) -> &'a mut Value {
    v["formats"].as_array_mut().unwrap().iter_mut().find(|f| f["format"] == name).unwrap()
}

/// Adds `nats` to every chunk NLL of `format`, and updates the figures derived from them.
fn shift_nll(v: &mut Value, format: &str, nats: f64) {
    let base_ppl = v["baseline"]["ppl"].as_f64().unwrap();
    let f = format_mut(v, format);
    let q = &mut f["quality"];
    let nll: Vec<f64> = q["chunk_nll"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() + nats).collect();
    let ppl = (nll.iter().sum::<f64>() / nll.len() as f64).exp();
    q["chunk_nll"] = nll.into();
    q["ppl"] = ppl.into();
    q["dppl"] = (ppl - base_ppl).into();
    q["ln_ppl_ratio"] = (ppl / base_ppl).ln().into();
}

/// Multiplies every tg repetition of `format` by `factor`.
fn scale_tg(v: &mut Value, format: &str, factor: f64) {
    let s = &mut format_mut(v, format)["speed"];
    let runs: Vec<f64> = s["tg_runs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() * factor).collect();
    s["tg_runs"] = runs.into();
    s["tg_tps"] = (s["tg_tps"].as_f64().unwrap() * factor).into();
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn evalq(args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_evalq")).args(args).output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn compare(base: &Path, cur: &Path, extra: &[&str]) -> Out {
    let mut args = vec!["compare", base.to_str().unwrap(), cur.to_str().unwrap()];
    args.extend_from_slice(extra);
    evalq(&args)
}

/// format → overall verdict, from compare.json.
fn verdicts(json: &Path) -> Vec<(String, String, Value)> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    v["formats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["format"].as_str().unwrap().to_string(), f["verdict"].as_str().unwrap().to_string(), f.clone()))
        .collect()
}

#[test]
fn the_test_data_is_a_real_run() {
    let v = real();
    assert_eq!(v["formats"].as_array().unwrap().len(), 13);
    assert_eq!(v["dataset"]["n_chunks"], 20);
    for f in v["formats"].as_array().unwrap() {
        assert_eq!(f["quality"]["chunk_nll"].as_array().unwrap().len(), 20);
        assert_eq!(f["speed"]["tg_runs"].as_array().unwrap().len(), 5);
    }
}

#[test]
fn a_run_against_itself_is_unchanged_and_writes_every_report() {
    let tmp = tempfile::tempdir().unwrap();
    let a = run_dir(tmp.path(), "2026-11-27-run-a", &real());
    let o = compare(&a, &a, &[]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let lines: Vec<&str> = o.stdout.lines().filter(|l| l.contains("quality")).collect();
    assert_eq!(lines.len(), 13, "{}", o.stdout);
    assert!(lines.iter().all(|l| l.split_whitespace().nth(1) == Some("unchanged")), "{}", o.stdout);

    // Default output directory: inside the current run, named after the baseline.
    let out = a.join("compare-vs-2026-11-27-run-a");
    let v = verdicts(&out.join("compare.json"));
    assert_eq!(v.len(), 13);
    for (f, verdict, full) in &v {
        assert_eq!(verdict, "unchanged", "{f}");
        assert_eq!(full["quality"]["dppl_pct"], 0.0, "{f}");
        assert_eq!(full["quality"]["nll_test"]["significant"], false, "{f}");
    }
    let png = std::fs::read(out.join("compare.png")).unwrap();
    assert!(png.len() > 20_000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} bytes", png.len());
    let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Q4_K_M") && svg.contains("IQ4_XS"));
    let html = std::fs::read_to_string(out.join("compare.html")).unwrap();
    assert!(html.contains("data:image/png;base64,iVBOR") && !html.contains("src=\"compare"));
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(md.contains("| Q2_K | unchanged |") && md.contains("How the verdicts are made"), "{md}");
}

#[test]
fn a_worse_format_regresses_and_fail_on_picks_what_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let a = run_dir(tmp.path(), "base", &real());
    let mut v = real();
    shift_nll(&mut v, "Q4_K_M", 0.01);
    let b = run_dir(tmp.path(), "worse", &v);
    let out = tmp.path().join("out");
    let o = compare(&a, &b, &["--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    for (f, verdict, full) in verdicts(&out.join("compare.json")) {
        if f == "Q4_K_M" {
            assert_eq!(verdict, "regressed");
            assert_eq!(full["quality"]["ppl_verdict"], "regressed");
            // exp(0.01) − 1 = 1.005%.
            let pct = full["quality"]["dppl_pct"].as_f64().unwrap();
            assert!((pct - 100.0 * 0.01f64.exp_m1()).abs() < 1e-9, "{pct}");
        } else {
            assert_eq!(verdict, "unchanged", "{f}");
        }
    }
    assert!(o.stdout.lines().any(|l| l.starts_with("Q4_K_M") && l.contains("regressed")), "{}", o.stdout);

    // The same pair, only speed counted: exit 0, the verdict is still reported.
    let o = compare(&a, &b, &["--out", out.to_str().unwrap(), "--fail-on", "speed"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.lines().any(|l| l.starts_with("Q4_K_M") && l.contains("regressed")));

    // A change below the relevance threshold (0.1% < 0.2%) is significant but not a regression.
    let mut v = real();
    shift_nll(&mut v, "Q4_K_M", 0.001);
    let c = run_dir(tmp.path(), "tiny", &v);
    let o = compare(&a, &c, &["--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let (_, verdict, full) = verdicts(&out.join("compare.json")).into_iter().find(|x| x.0 == "Q4_K_M").unwrap();
    assert_eq!(verdict, "unchanged");
    assert_eq!(full["quality"]["nll_test"]["significant"], true);

    // And a better format is improved, which does not fail.
    let mut v = real();
    shift_nll(&mut v, "Q2_K", -0.02);
    let d = run_dir(tmp.path(), "better", &v);
    let o = compare(&a, &d, &["--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.lines().any(|l| l.starts_with("Q2_K") && l.contains("improved")), "{}", o.stdout);
}

#[test]
fn slower_generation_regresses_only_outside_the_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let a = run_dir(tmp.path(), "base", &real());
    let out = tmp.path().join("out");
    let mut v = real();
    scale_tg(&mut v, "Q2_K", 0.7);
    let b = run_dir(tmp.path(), "slow", &v);
    let o = compare(&a, &b, &["--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    for (f, verdict, full) in verdicts(&out.join("compare.json")) {
        if f == "Q2_K" {
            assert_eq!(verdict, "regressed");
            assert_eq!(full["tg"]["verdict"], "regressed");
            assert_eq!(full["pp"]["verdict"], "unchanged");
            assert_eq!(full["quality"]["verdict"], "unchanged");
        } else {
            assert_eq!(verdict, "unchanged", "{f}");
        }
    }
    assert_eq!(compare(&a, &b, &["--out", out.to_str().unwrap(), "--fail-on", "quality"]).code, 0);

    // 2% slower is inside the repetitions' spread.
    let mut v = real();
    scale_tg(&mut v, "Q2_K", 0.98);
    let c = run_dir(tmp.path(), "noise", &v);
    let o = compare(&a, &c, &["--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(verdicts(&out.join("compare.json")).iter().all(|x| x.1 == "unchanged"));

    // On another machine the 30% drop is not comparable, never regressed; quality still is.
    let mut v = real();
    scale_tg(&mut v, "Q2_K", 0.7);
    shift_nll(&mut v, "Q6_K", 0.01);
    v["machine"]["cpu"] = "Intel Xeon".into();
    let d = run_dir(tmp.path(), "elsewhere", &v);
    let o = compare(&a, &d, &["--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("different machines"), "{}", o.stdout);
    let v = verdicts(&out.join("compare.json"));
    let q2k = &v.iter().find(|x| x.0 == "Q2_K").unwrap().2;
    assert_eq!(q2k["tg"]["verdict"], "not_comparable");
    assert_eq!(q2k["verdict"], "unchanged");
    assert_eq!(v.iter().find(|x| x.0 == "Q6_K").unwrap().1, "regressed");
    assert_eq!(compare(&a, &d, &["--out", out.to_str().unwrap(), "--fail-on", "speed"]).code, 0);

    // A run made with --no-speed: not measured.
    let mut v = real();
    for f in v["formats"].as_array_mut().unwrap() {
        f["speed"]["tg_runs"] = Value::Array(vec![]);
        f["speed"]["tg_tps"] = Value::Null;
    }
    let e = run_dir(tmp.path(), "nospeed", &v);
    let o = compare(&a, &e, &["--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(verdicts(&out.join("compare.json")).iter().all(|x| x.2["tg"]["verdict"] == "not_measured"));
}

#[test]
fn fewer_chunks_pair_the_common_prefix_and_formats_may_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let a = run_dir(tmp.path(), "base", &real());
    let mut v = real();
    v["dataset"]["n_chunks"] = 12.into();
    let cut = |x: &mut Value| {
        let arr = x.as_array_mut().unwrap();
        arr.truncate(12);
    };
    cut(&mut v["baseline"]["chunk_nll"]);
    for f in v["formats"].as_array_mut().unwrap() {
        for k in ["chunk_nll", "chunk_kld", "chunk_top1"] {
            cut(&mut f["quality"][k]);
        }
    }
    // One format dropped, one added under a new name.
    let formats = v["formats"].as_array_mut().unwrap();
    formats.retain(|f| f["format"] != "IQ4_XS");
    let mut extra = formats[0].clone();
    extra["format"] = "Q4_K_L".into();
    formats.push(extra);
    let b = run_dir(tmp.path(), "short", &v);
    let out = tmp.path().join("out");
    let o = compare(&a, &b, &["--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("first 12 chunks"), "{}", o.stdout);
    assert!(o.stdout.contains("added (only in current): Q4_K_L"), "{}", o.stdout);
    assert!(o.stdout.contains("removed (only in baseline): IQ4_XS"), "{}", o.stdout);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(json["n_chunks_paired"], 12);
    assert_eq!(json["formats"].as_array().unwrap().len(), 12);
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(md.contains("first 12 chunks") && md.contains("IQ4_XS"));

    // No chunk in common: refused.
    let mut v = real();
    v["dataset"]["n_chunks"] = 0.into();
    let z = run_dir(tmp.path(), "empty", &v);
    let o = compare(&a, &z, &["--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("no chunk in common"), "{}", o.stderr);
}

#[test]
fn runs_that_measure_different_things_are_refused_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let a = run_dir(tmp.path(), "base", &real());
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap();

    let mut v = real();
    v["dataset"]["sha256"] = "0".repeat(64).into();
    let b = run_dir(tmp.path(), "otherdata", &v);
    let o = compare(&a, &b, &["--out", out]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("dataset sha256"), "{}", o.stderr);

    let mut v = real();
    v["dataset"]["n_ctx"] = 256.into();
    v["model"]["sha256"] = "f".repeat(64).into();
    let c = run_dir(tmp.path(), "otherctx", &v);
    let o = compare(&a, &c, &["--out", out]);
    assert_eq!(o.code, 2);
    // Every mismatch is named, with both values.
    assert!(o.stderr.contains("n_ctx differs (baseline 512, current 256)"), "{}", o.stderr);
    assert!(o.stderr.contains("model sha256"), "{}", o.stderr);

    let text = std::fs::read_to_string(DATA).unwrap();
    let d = tmp.path().join("truncated");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("results.json"), &text[..text.len() / 2]).unwrap();
    let o = compare(&a, &d, &["--out", out]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains(&d.join("results.json").display().to_string()), "{}", o.stderr);
    assert!(o.stderr.contains("malformed"), "{}", o.stderr);

    let missing = tmp.path().join("nowhere");
    let o = compare(&missing, &a, &["--out", out]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("nowhere"), "{}", o.stderr);

    // A results.json file instead of a directory works, and is written to --out.
    let o = compare(&a.join("results.json"), &a.join("results.json"), &["--out", out]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(Path::new(out).join("compare.md").exists());
}
