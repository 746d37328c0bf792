//! The files `evalq run` writes (CSV, JSON, charts, markdown, HTML), rendered from a synthetic
//! [`RunResults`]: this tests the rendering, not the measurements, so made-up figures are fine.
//! The HTML report is also opened in headless Chromium when one is installed (required in CI:
//! `apt-get install -y chromium`). To look at the sample outputs, set EVALQ_REPORT_SAMPLE_DIR to a
//! directory and they are written there too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evalq::report::charts::{CHARTS, SIZE};
use evalq::report::{write_all, CSV_COLUMNS};
use evalq::run::results::{
    BaselineInfo, DatasetInfo, FormatResult, MachineInfo, ModelInfo, Provenance, Quality, RunResults, Speed,
    SCHEMA_VERSION,
};

const SOURCE: &str =
    "GGUF /models/smollm2-135m-instruct-q4_1.gguf (210×q4_1, 1×q8_0, 61×f32), dequantized to an F32 source";

/// One format's figures; the derived speed fields are computed the way the runner does.
fn format(name: &str, bpw: f64, dppl: f64, half_ci: f64, kld: f64, pp: f64, tg: f64) -> FormatResult {
    let n_weights = 134_515_008.0;
    let file_bytes = (n_weights * bpw / 8.0) as u64 + 1_500_000;
    let base_ppl = 20.0;
    let bytes_per_token = file_bytes as f64 * 0.95;
    let peak = 12.5;
    FormatResult {
        format: name.into(),
        file_bytes,
        bpw,
        type_mix: format!("{}:210 f32:61", name.to_ascii_lowercase()),
        fallbacks: vec![],
        quantize_s: 3.25,
        quantize_cached: false,
        quality: Quality {
            n_tokens: 16_320,
            ppl: base_ppl + dppl,
            ppl_err: 0.21,
            ln_ppl_ratio: ((base_ppl + dppl) / base_ppl).ln(),
            ln_ppl_ratio_err: 0.0009,
            dppl,
            dppl_err: half_ci / 1.96,
            dppl_ci_low: dppl - half_ci,
            dppl_ci_high: dppl + half_ci,
            distinguishable: (dppl - half_ci) * (dppl + half_ci) > 0.0,
            kld_mean: kld,
            kld_err: kld * 0.02,
            kld_median: kld * 0.6,
            kld_p99: kld * 9.0,
            kld_max: kld * 40.0,
            same_top_pct: 100.0 - 60.0 * kld.sqrt(),
            same_top_err: 0.08,
            rms_dp: 100.0 * kld.sqrt() / 3.0,
            rms_dp_err: 0.02,
            chunk_nll: vec![3.0, 3.1],
            chunk_kld: vec![kld, kld],
            chunk_top1: vec![0.95, 0.96],
        },
        speed: Speed {
            pp_tokens: 512,
            tg_tokens: 128,
            pp_runs: vec![pp; 3],
            pp_tps: pp,
            tg_runs: vec![tg; 3],
            tg_tps: tg,
            tg_bytes_per_token: bytes_per_token,
            tg_gbps: bytes_per_token * tg / 1e9,
            bw_util_pct: 100.0 * bytes_per_token * tg / 1e9 / peak,
            roofline_tg_tps: peak * 1e9 / bytes_per_token,
            peak_rss_bytes: file_bytes + 200_000_000,
        },
    }
}

/// Four formats: Q4_1 not distinguishable from the baseline (its CI straddles zero), Q4_K_M with
/// fallbacks and a type mix that needs CSV quoting.
fn synthetic() -> RunResults {
    let mut q4km = format("Q4_K_M", 5.12, 0.41, 0.08, 0.031, 96.0, 38.0);
    q4km.type_mix = "q4_K:90, q5_0:120 \"mixed\" q6_K:31 f32:61".into();
    q4km.fallbacks = vec!["120 tensors: q4_K -> q5_0 (576 columns)".into()];
    RunResults {
        schema_version: SCHEMA_VERSION,
        created: "2026-11-27T17:40:00Z".into(),
        model: ModelInfo {
            name: "SmolLM2-135M-Instruct".into(),
            path: "/models/smollm2-135m-instruct-q4_1.gguf".into(),
            sha256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            source: SOURCE.into(),
            architecture: "llama".into(),
            n_params: 134_515_008,
        },
        dataset: DatasetInfo {
            name: "wikitext-2-raw test".into(),
            path: "/data/wiki.test.raw".into(),
            sha256: "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210".into(),
            n_ctx: 512,
            n_chunks: 64,
            n_tokens_scored: 16_320,
        },
        machine: MachineInfo {
            cpu: "AMD EPYC 7B13, 2 cores".into(),
            cores: 2,
            threads: 2,
            isa: "avx2".into(),
            peak_read_gbps: 12.5,
            os: "linux".into(),
        },
        provenance: Provenance { evalq_version: "0.1.0".into(), git_commit: "abc1234".into() },
        baseline: BaselineInfo { format: "F32".into(), ppl: 20.0, ppl_err: 0.2, chunk_nll: vec![3.0, 3.0] },
        formats: vec![
            format("Q8_0", 8.5, 0.012, 0.004, 0.0011, 110.0, 24.0),
            format("Q4_1", 5.0, 0.002, 0.006, 0.0009, 120.0, 41.0),
            q4km,
            format("Q2_K", 3.0, 4.9, 0.4, 0.42, 80.0, 52.0),
        ],
    }
}

fn outdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("evalq-report-").tempdir().expect("a temporary directory")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Splits CSV text into records of fields, honouring quotes (with doubled quotes inside and line
/// breaks inside quoted fields), as RFC 4180 reads it.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, _) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, '\r') => {}
            (false, _) => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quoted field");
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records
}

/// (width, height) from a PNG's IHDR chunk, after checking the signature.
fn png_dims(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 33, "too short for a PNG: {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The trimmed contents of an SVG's `<text>` elements.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

/// Asserts two JSON values are equal, numbers to within a few ulps: serde_json's default float
/// parser may land one ulp off the shortest representation it printed.
fn assert_same_json(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-14 * x.abs().max(y.abs()), "{at}: {x} != {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: array lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_same_json(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{at}: keys");
            for (k, v) in x {
                assert_same_json(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

#[test]
fn every_output_is_written_and_reads_back() {
    let r = synthetic();
    let dir = outdir();
    let written = write_all(dir.path(), &r).expect("write_all");
    // To look at the sample report: EVALQ_REPORT_SAMPLE_DIR=/some/dir cargo test --test report_outputs
    if let Some(keep) = std::env::var_os("EVALQ_REPORT_SAMPLE_DIR") {
        write_all(Path::new(&keep), &r).expect("write_all into EVALQ_REPORT_SAMPLE_DIR");
    }

    // 2 data files, 2 files per chart, 2 reports; all there, none empty, no temporaries left.
    assert_eq!(written.len(), 4 + 2 * CHARTS.len(), "{written:?}");
    for p in &written {
        let len = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).len();
        assert!(len > 0, "{} is empty", p.display());
    }
    for name in ["results.csv", "results.json", "report.md", "report.html"] {
        assert!(written.contains(&dir.path().join(name)), "{name} missing from {written:?}");
    }
    for sub in [dir.path().to_path_buf(), dir.path().join("charts")] {
        for e in std::fs::read_dir(&sub).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.ends_with(".tmp") && !name.contains(".tmp."), "temporary file left: {name}");
        }
    }

    // CSV: the documented header, then one parseable row per format.
    let csv = parse_csv(&read(&dir.path().join("results.csv")));
    let names: Vec<&str> = CSV_COLUMNS.iter().map(|c| c.0).collect();
    assert_eq!(csv[0], names);
    assert_eq!(csv.len(), 1 + r.formats.len());
    let col = |name: &str| names.iter().position(|n| *n == name).unwrap();
    for (row, f) in csv[1..].iter().zip(&r.formats) {
        assert_eq!(row.len(), names.len(), "{row:?}");
        assert_eq!(row[col("format")], f.format);
        assert_eq!(row[col("type_mix")], f.type_mix, "quoting must round-trip");
        assert_eq!(row[col("file_bytes")].parse::<u64>().unwrap(), f.file_bytes);
        assert_eq!(row[col("bpw")].parse::<f64>().unwrap(), f.bpw);
        assert_eq!(row[col("kld_p99")].parse::<f64>().unwrap(), f.quality.kld_p99);
        assert_eq!(row[col("tg_gbps")].parse::<f64>().unwrap(), f.speed.tg_gbps);
        assert_eq!(row[col("distinguishable")], f.quality.distinguishable.to_string());
        assert_eq!(row[col("model_sha256")], r.model.sha256);
        assert_eq!(row[col("n_ctx")], "512");
        assert_eq!(row[col("git_commit")], "abc1234");
    }

    // JSON: reads back into the same results.
    let json = read(&dir.path().join("results.json"));
    let back: RunResults = serde_json::from_str(&json).expect("results.json parses as RunResults");
    assert_same_json(&serde_json::to_value(&back).unwrap(), &serde_json::to_value(&r).unwrap(), "results");

    // Charts: both files per chart; PNGs of the declared size with real content.
    for c in CHARTS {
        let svg = read(&dir.path().join(format!("charts/{}.svg", c.stem)));
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{}.svg", c.stem);
        let png = std::fs::read(dir.path().join(format!("charts/{}.png", c.stem))).unwrap();
        assert_eq!(png_dims(&png), SIZE, "{}.png", c.stem);
        assert!(png.len() > 10_000, "{}.png is only {} bytes: blank?", c.stem, png.len());
    }
    // Every format is labelled in the scatter charts.
    for stem in ["ppl_vs_bpw", "kld_vs_bpw", "size_vs_quality"] {
        let texts = svg_texts(&read(&dir.path().join(format!("charts/{stem}.svg"))));
        for f in &r.formats {
            assert!(texts.contains(&f.format), "{} is not labelled in {stem}.svg: {texts:?}", f.format);
        }
    }

    // Markdown: every format, the source sentence, the caveats the data calls for, chart links.
    let md = read(&dir.path().join("report.md"));
    for f in &r.formats {
        assert!(md.contains(&format!("| {} |", f.format)), "{} not in the table", f.format);
    }
    assert!(md.contains(SOURCE), "the model.source sentence is missing");
    assert!(md.contains("dequantized to an F32 source"));
    assert!(md.contains("published Q4_1 model"), "the Q4_1 caveat is missing");
    assert!(md.contains("Not distinguishable from the F32 baseline"), "the distinguishability caveat is missing");
    let caveats = &md[md.find("## Caveats").unwrap()..md.find("## Recommendation").unwrap()];
    assert!(caveats.contains("Q4_1 (ΔPPL"), "Q4_1 should be listed as not distinguishable:\n{caveats}");
    assert!(!caveats.contains("Q2_K (ΔPPL"), "Q2_K is distinguishable:\n{caveats}");
    assert!(caveats.contains("q4_K -> q5_0"), "the fallback of Q4_K_M is missing:\n{caveats}");
    let rec = &md[md.find("## Recommendation").unwrap()..];
    assert!(rec.contains("smallest format not distinguishable from the F32 baseline at 95% is Q4_1"), "{rec}");
    assert!(rec.contains("Q2_K is fastest"), "{rec}");
    for c in CHARTS {
        let link = format!("(charts/{}.png)", c.stem);
        assert!(md.contains(&link), "{link} missing");
    }
    assert!(md.contains("0123456789ab"), "short model sha256 missing");

    // HTML: self-contained, with the table and every chart inlined.
    let html = read(&dir.path().join("report.html"));
    assert!(html.contains("<table>") && html.contains("</table>"));
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), CHARTS.len());
    assert_eq!(html.matches("src=\"").count(), CHARTS.len(), "only inlined images may be referenced");
    assert!(!html.contains("href=") && !html.contains("http://") && !html.contains("https://"));
    assert!(html.contains("dequantized to an F32 source"));
    for f in &r.formats {
        assert!(html.contains(&format!("<td>{}</td>", f.format)), "{} not in the HTML table", f.format);
    }
}

/// A run with one format whose speeds and KLD were never measured, one where all formats are
/// identical, and one with no format at all: every output is still written and nothing panics.
#[test]
fn degenerate_runs_do_not_panic() {
    let mut one = synthetic();
    one.formats.truncate(1);
    let f = &mut one.formats[0];
    f.speed.pp_tps = f64::NAN;
    f.speed.tg_tps = 0.0;
    f.speed.tg_gbps = f64::NAN;
    f.speed.bw_util_pct = f64::NAN;
    f.speed.roofline_tg_tps = f64::INFINITY;
    f.quality.kld_mean = 0.0;
    one.machine.peak_read_gbps = f64::NAN;

    let mut same = synthetic();
    let first = same.formats[0].clone();
    for f in &mut same.formats {
        let name = f.format.clone();
        *f = first.clone();
        f.format = name;
    }

    let mut none = synthetic();
    none.formats.clear();

    let mut nan_quality = synthetic();
    for f in &mut nan_quality.formats {
        f.quality.ppl = f64::NAN;
        f.bpw = f64::NAN;
    }

    for (what, r) in
        [("single format", one), ("identical formats", same), ("no formats", none), ("NaN quality", nan_quality)]
    {
        let dir = outdir();
        let written = write_all(dir.path(), &r).unwrap_or_else(|e| panic!("{what}: {e}"));
        if let Some(keep) = std::env::var_os("EVALQ_REPORT_SAMPLE_DIR") {
            write_all(&Path::new(&keep).join(what.replace(' ', "_")), &r).expect("write_all into the sample dir");
        }
        assert_eq!(written.len(), 4 + 2 * CHARTS.len(), "{what}");
        for p in &written {
            assert!(std::fs::metadata(p).unwrap().len() > 0, "{what}: {} is empty", p.display());
        }
        for c in CHARTS {
            let png = std::fs::read(dir.path().join(format!("charts/{}.png", c.stem))).unwrap();
            assert_eq!(png_dims(&png), SIZE, "{what}: {}.png", c.stem);
        }
        let csv = parse_csv(&read(&dir.path().join("results.csv")));
        assert_eq!(csv.len(), 1 + r.formats.len(), "{what}");
        assert!(csv.iter().all(|row| row.len() == CSV_COLUMNS.len()), "{what}");
        let md = read(&dir.path().join("report.md"));
        assert!(md.contains(SOURCE), "{what}");
        let raw = md.split(|c: char| !c.is_alphanumeric()).find(|w| matches!(*w, "NaN" | "inf"));
        assert_eq!(raw, None, "{what}: unformatted number in report.md");
    }
}

/// The chromium binary on PATH, if any.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs `cmd` to completion with a deadline, returning its stdout; kills it when it hangs.
fn run_with_deadline(mut cmd: Command, limit: Duration) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdout(Stdio::from(out.reopen().unwrap()))
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium failed: {status}");
            return std::fs::read(out.path()).unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens report.html in headless Chromium: the DOM must hold the table and the charts, and a
/// screenshot must show a page rather than a blank one.
#[test]
fn html_report_renders_in_chromium() {
    let Some(chrome) = chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!("chromium is not installed (apt-get install -y chromium)");
        }
        eprintln!("note: skipping, chromium is not on PATH (apt-get install -y chromium)");
        return;
    };
    let r = synthetic();
    let dir = outdir();
    write_all(dir.path(), &r).expect("write_all");
    let html = dir.path().join("report.html");
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let profile = dir.path().join("chromium-profile");
    let common = |cmd: &mut Command| {
        cmd.args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", profile.display()));
    };

    let mut dump = Command::new(&chrome);
    common(&mut dump);
    dump.args(["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&run_with_deadline(dump, Duration::from_secs(120))).into_owned();
    assert!(dom.contains("<table>"), "no table in the DOM:\n{}", &dom[..dom.len().min(2000)]);
    // One header row plus one row per format.
    assert_eq!(dom.matches("<tr>").count(), 1 + r.formats.len());
    for f in &r.formats {
        assert!(dom.contains(&format!("<td>{}</td>", f.format)), "{} missing from the DOM", f.format);
    }
    assert_eq!(dom.matches("<img ").count(), CHARTS.len(), "every chart is an image in the DOM");

    let shot = dir.path().join("screenshot.png");
    let mut cap = Command::new(&chrome);
    common(&mut cap);
    cap.arg(format!("--screenshot={}", shot.display())).args(["--window-size=1280,2000", &url]);
    run_with_deadline(cap, Duration::from_secs(120));
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert_eq!(png_dims(&png), (1280, 2000));
    // A blank 1280×2000 page compresses to about 12 KB; this report's first screen to about 180 KB.
    assert!(png.len() > 50_000, "the screenshot is only {} bytes: a blank page?", png.len());
}
