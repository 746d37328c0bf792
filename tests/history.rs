//! `history.csv` and `evalq history` end to end: three runs' rows built from a real run's
//! results (with different times and slightly different figures), appended through the library
//! as `evalq run` does, then charted through the binary.

mod common;

use std::path::Path;
use std::process::Command;

use evalq::history::{append_history, read_history, COLUMNS};
use evalq::run::results::RunResults;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/compare/results.json");

fn real() -> RunResults {
    serde_json::from_str(&std::fs::read_to_string(DATA).unwrap()).unwrap()
}

fn evalq(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_evalq")).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Three nightly runs: each a day later, a new commit, PPL creeping up and tg drifting.
fn three_runs(root: &Path) -> Vec<RunResults> {
    let mut out = Vec::new();
    for (i, (day, commit)) in
        [("2026-11-25", "aaaa111"), ("2026-11-26", "bbbb222"), ("2026-11-27", "cccc333")].into_iter().enumerate()
    {
        let mut r = real();
        r.created = format!("{day}T02:00:00Z");
        r.provenance.git_commit = commit.into();
        for f in &mut r.formats {
            f.quality.ppl *= 1.0 + 0.002 * i as f64;
            f.quality.kld_mean *= 1.0 + 0.05 * i as f64;
            f.speed.tg_tps *= 1.0 - 0.03 * i as f64;
        }
        append_history(root, &root.join(format!("{day}-SmolLM2-135M-Instruct-{commit}")), &r).unwrap();
        out.push(r);
    }
    out
}

#[test]
fn three_runs_make_a_history_and_a_trend_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("reports");
    let runs = three_runs(&root);
    let file = root.join("history.csv");
    let rows = read_history(&file).unwrap();
    assert_eq!(rows.len(), 3 * 13);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
    // Appending the middle run again replaces its rows.
    append_history(&root, &root.join("2026-11-26-SmolLM2-135M-Instruct-bbbb222"), &runs[1]).unwrap();
    assert_eq!(read_history(&file).unwrap().len(), 3 * 13);
    let q4 = rows.iter().find(|r| r.format == "Q4_K_M" && r.git_commit == "cccc333").unwrap();
    assert_eq!(q4.ppl, runs[2].formats.iter().find(|f| f.format == "Q4_K_M").unwrap().quality.ppl);

    let (code, stdout, stderr) = evalq(&["history", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("3 runs, 13 formats"), "{stdout}");
    // Default output: next to the history file.
    let png = std::fs::read(root.join("history.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 50_000, "{} bytes", png.len());
    // IHDR: width and height as drawn.
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 1200);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 1350);
    let svg = std::fs::read_to_string(root.join("history.svg")).unwrap();
    for f in &runs[0].formats {
        assert!(svg.contains(&format!(">{}<", f.format)) || svg.contains(&f.format), "{} missing", f.format);
    }
    assert!(svg.contains("11-27 cccc333") && svg.contains("11-25 aaaa111"));
    assert!(!stdout.contains("no trend yet"));

    // A subset into another directory.
    let out = tmp.path().join("charts");
    let (code, stdout, stderr) =
        evalq(&["history", "--file", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--formats", "Q8_0,Q2_K"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let svg = std::fs::read_to_string(out.join("history.svg")).unwrap();
    assert!(svg.contains("Q8_0") && svg.contains("Q2_K") && !svg.contains("IQ4_NL"));
    let (code, _, stderr) = evalq(&["history", "--file", file.to_str().unwrap(), "--formats", "Q9_9"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("Q9_9"), "{stderr}");
}

#[test]
fn one_run_still_draws_and_says_so_and_bad_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    append_history(root, &root.join("2026-11-27-run"), &real()).unwrap();
    let file = root.join("history.csv");
    let (code, stdout, stderr) = evalq(&["history", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("no trend yet"), "{stdout}");
    assert!(root.join("history.png").exists());

    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("garbage,row\n");
    std::fs::write(&file, text).unwrap();
    let (code, _, stderr) = evalq(&["history", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("history.csv") && stderr.contains("line 15"), "{stderr}");

    let (code, _, stderr) = evalq(&["history", "--file", root.join("missing.csv").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("missing.csv"), "{stderr}");
}

/// The nightly chain on the tiny model: `evalq run` appends to `<out>/history.csv`, running the
/// same command again replaces that run's rows, and compare and history read what run wrote.
#[test]
fn evalq_run_appends_to_the_history_once_per_run() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    common::tiny_llama().write(&model).unwrap();
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, common::sample_text()).unwrap();
    let out = tmp.path().join("reports");
    let args = [
        "run",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        text.to_str().unwrap(),
        "--ctx",
        "64",
        "--formats",
        "Q8_0,Q4_0",
        "--reps",
        "2",
        "--pp",
        "32",
        "--tg",
        "8",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ];
    let run = || {
        let o = Command::new(env!("CARGO_BIN_EXE_evalq"))
            .args(args)
            .env("EVALQ_CACHE_DIR", tmp.path().join("cache"))
            .env("EVALQ_BANDWIDTH_BYTES", "64MiB")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run();
    let file = out.join("history.csv");
    let rows = read_history(&file).unwrap();
    assert_eq!(rows.iter().map(|r| r.format.as_str()).collect::<Vec<_>>(), ["Q8_0", "Q4_0"]);
    let dir = std::fs::canonicalize(out.join("latest")).unwrap();
    assert_eq!(rows[0].run_dir, dir.file_name().unwrap().to_string_lossy());
    assert!(rows.iter().all(|r| r.ppl.is_finite() && r.tg_tps > 0.0 && r.n_ctx == 64));
    run();
    assert_eq!(read_history(&file).unwrap().len(), 2, "a rerun replaces its rows");

    let (code, stdout, stderr) = evalq(&["history", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("no trend yet"), "{stdout}");
    let (code, stdout, stderr) = evalq(&["compare", dir.to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.contains(" unchanged ")).count(), 2, "{stdout}");
}

/// `evalq nightly` chains run, compare and history: against an unchanged baseline every format
/// is unchanged (exit 0); against a baseline made better for one format (so the new run looks
/// worse) that format is regressed (exit 1); an unusable baseline is refused before any run.
#[test]
fn nightly_runs_compares_and_draws_the_history() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    common::tiny_llama().write(&model).unwrap();
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, common::sample_text().repeat(4)).unwrap();
    let run_args = |out: &Path| -> Vec<String> {
        let mut v: Vec<String> = ["--model", model.to_str().unwrap(), "--dataset", text.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(["--ctx", "32", "--formats", "Q8_0,Q4_0", "--no-speed", "-q", "--out"].map(String::from));
        v.push(out.to_str().unwrap().to_string());
        v
    };
    let evalq_env = |args: Vec<String>| {
        let o = Command::new(env!("CARGO_BIN_EXE_evalq"))
            .args(&args)
            .env("EVALQ_CACHE_DIR", tmp.path().join("cache"))
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let base_root = tmp.path().join("base");
    let mut args = vec!["run".to_string()];
    args.extend(run_args(&base_root));
    let (code, out, err) = evalq_env(args);
    assert_eq!(code, 0, "{out}{err}");
    let base = std::fs::canonicalize(base_root.join("latest")).unwrap();
    let n_chunks = RunResults::clone(&evalq::compare::load_results(&base).unwrap()).dataset.n_chunks;
    assert!(n_chunks >= 4, "the paired test needs several chunks, got {n_chunks}");

    let nightly = |baseline: &Path, root: &Path| {
        let mut args = vec!["nightly".to_string(), "--baseline".to_string(), baseline.to_str().unwrap().to_string()];
        args.extend(run_args(root));
        evalq_env(args)
    };
    // Unchanged code: unchanged, exit 0, and the history chart is drawn.
    let root = tmp.path().join("nightly");
    let (code, out, err) = nightly(&base, &root);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.contains(" unchanged ")).count(), 2, "{out}");
    assert!(root.join("history.png").is_file() && root.join("history.svg").is_file());
    let cur = std::fs::canonicalize(root.join("latest")).unwrap();
    assert!(std::fs::read_dir(&cur).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("compare-vs-")));

    // A baseline whose Q4_0 was 0.05 nats per chunk better: tonight's Q4_0 regressed.
    let better = tmp.path().join("better.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(base.join("results.json")).unwrap()).unwrap();
    for f in v["formats"].as_array_mut().unwrap() {
        if f["format"] == "Q4_0" {
            let q = &mut f["quality"];
            let nll: Vec<f64> = q["chunk_nll"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() - 0.05).collect();
            q["ppl"] = serde_json::json!((nll.iter().sum::<f64>() / nll.len() as f64).exp());
            q["chunk_nll"] = serde_json::json!(nll);
        }
    }
    std::fs::write(&better, serde_json::to_vec(&v).unwrap()).unwrap();
    let (code, out, err) = nightly(&better, &root);
    assert_eq!(code, 1, "{out}{err}");
    let verdict =
        |f: &str| out.lines().find(|l| l.starts_with(f) && l.contains("quality")).unwrap_or_default().to_string();
    assert!(verdict("Q4_0").contains("regressed"), "{out}");
    assert!(verdict("Q8_0").contains("unchanged"), "{out}");

    // `history --add` puts runs made elsewhere into a history, once each.
    let file = tmp.path().join("other").join("history.csv");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    for _ in 0..2 {
        let (code, out, err) = evalq(&[
            "history",
            "--file",
            file.to_str().unwrap(),
            "--add",
            base.to_str().unwrap(),
            "--add",
            cur.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
    }
    assert_eq!(read_history(&file).unwrap().len(), 2, "one run (both directories have the same name), two formats");

    // An unusable baseline fails at once, before a run directory is made.
    let fresh = tmp.path().join("never");
    let (code, _, err) = nightly(&tmp.path().join("missing.json"), &fresh);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.json") && !fresh.exists(), "{err}");
}
