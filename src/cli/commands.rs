//! One function per subcommand: resolve inputs, call the library, print.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use evalq::data::{datasets, fetch};
use evalq::eval::perplexity::{perplexity, PplParams};
use evalq::kernels::isa;
use evalq::model::hf::{export_safetensors, ExportDtype};
use evalq::model::{Checkpoint, LlamaWeights};

use evalq::quant::mix;
use evalq::quant::quantize::{quantize_checkpoint, write_gguf};

use super::{progress, BandwidthArgs, CompareArgs, CompareRules, FailOnArg, HistoryArgs, NightlyArgs, RecommendArgs, RunSettings, EvalDataArgs, SpeedArgs, ExportDtypeArg, ExportArgs, InfoArgs, PplArgs, QuantizeArgs, RunArgs, TokenizeArgs};

fn open_model(arg: Option<&str>) -> anyhow::Result<Checkpoint> {
    let path = fetch::resolve_model(arg)?;
    Ok(Checkpoint::open(&path)?)
}

pub fn fetch(_quiet: bool) -> anyhow::Result<()> {
    let path = fetch::fetch_default_model(false)?;
    println!("{}", path.display());
    Ok(())
}

pub fn info(a: InfoArgs) -> anyhow::Result<()> {
    let ckpt = open_model(a.model_pos.as_deref().or(a.model.model.as_deref()))?;
    let c = ckpt.config()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "model:        {}", ckpt.path().display())?;
    if let Checkpoint::Gguf(f) = &ckpt {
        writeln!(out, "container:    GGUF v{}, {} tensors, {} metadata keys, alignment {}", f.version, f.tensors.len(), f.metadata.len(), f.alignment)?;
        if let Ok(name) = f.get_str("general.name") {
            writeln!(out, "name:         {name}")?;
        }
    } else {
        writeln!(out, "container:    Hugging Face directory (safetensors)")?;
    }
    writeln!(out, "architecture: {} ({} layers, d_model {}, {} heads / {} kv heads, head_dim {}, ffn {}, vocab {})",
        c.arch, c.n_layer, c.d_model, c.n_head, c.n_kv_head, c.head_dim, c.ffn_dim, c.vocab_size)?;
    writeln!(out, "rope:         {:?}, base {}, {} dims; rms eps {:e}; trained context {}", c.rope_mode, c.rope_base, c.rope_dim, c.rms_eps, c.n_ctx_train)?;
    writeln!(out, "output:       {}", if ckpt.has_tensor("output.weight") { "separate output.weight" } else { "tied to token_embd" })?;
    if a.metadata {
        if let Checkpoint::Gguf(f) = &ckpt {
            writeln!(out, "\nmetadata:")?;
            for (k, v) in &f.metadata {
                writeln!(out, "  {k:<40} {}", v.display_short())?;
            }
        }
    }
    writeln!(out, "\n{:<32} {:>18} {:>8} {:>12}", "tensor", "shape", "type", "bytes")?;
    let mut params = 0u64;
    let mut bytes = 0u64;
    for name in ckpt.tensor_names() {
        let (ty, dims) = ckpt.tensor_meta(&name)?;
        let n: u64 = dims.iter().product();
        let b = ty.row_bytes(n).unwrap_or(0);
        params += n;
        bytes += b;
        let shape = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
        writeln!(out, "{name:<32} {shape:>18} {ty:>8} {b:>12}")?;
    }
    writeln!(out, "\ntypes:")?;
    for (ty, (count, n)) in ckpt.type_histogram()? {
        writeln!(out, "  {ty:<8} {count:>4} tensors {n:>12} weights ({:.1}%)", 100.0 * n as f64 / params as f64)?;
    }
    writeln!(out, "parameters:   {params} ({:.1} M)", params as f64 / 1e6)?;
    writeln!(out, "tensor bytes: {bytes} ({:.2} MiB), {:.3} bits per weight", bytes as f64 / (1 << 20) as f64, bytes as f64 * 8.0 / params as f64)?;
    Ok(())
}

pub fn tokenize(a: TokenizeArgs) -> anyhow::Result<()> {
    let ckpt = open_model(a.model.model.as_deref())?;
    let tok = ckpt.tokenizer()?;
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let mut ids = Vec::new();
    if tok.add_bos() {
        ids.extend(tok.bos_id());
    }
    ids.extend(tok.encode(&text)?);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.json {
        serde_json::to_writer(&mut out, &ids)?;
        writeln!(out)?;
    } else {
        for id in ids {
            writeln!(out, "{id}")?;
        }
    }
    Ok(())
}

/// Finds and reads the dataset, and tokenizes it as llama-perplexity does (BOS first when the
/// vocabulary adds one).
fn dataset_tokens(
    tok: &evalq::model::tokenizer::Tokenizer,
    d: &EvalDataArgs,
) -> anyhow::Result<(datasets::ResolvedDataset, Vec<u32>)> {
    let dataset = datasets::resolve_dataset(&d.dataset, d.data_dir.as_deref())?;
    let text = datasets::read_text(&dataset)?;
    let mut tokens = Vec::new();
    if tok.add_bos() {
        tokens.extend(tok.bos_id());
    }
    tokens.extend(tok.encode(&text)?);
    Ok((dataset, tokens))
}

pub fn ppl(a: PplArgs, quiet: bool) -> anyhow::Result<()> {
    let ckpt = open_model(a.model.model.as_deref())?;
    let config = ckpt.config()?;
    let tok = ckpt.tokenizer()?;
    let t0 = Instant::now();
    let (dataset, tokens) = dataset_tokens(&tok, &a.data)?;
    let tokenize_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let (weights, evaluated) = match a.format.as_deref() {
        None => (LlamaWeights::load_f32(&ckpt, &config)?, "F32 source".to_string()),
        Some(f) if f.eq_ignore_ascii_case("native") => match &ckpt {
            Checkpoint::Gguf(file) => (LlamaWeights::load_native(file, &config)?, "native tensor types".to_string()),
            Checkpoint::Hf(_) => anyhow::bail!("--format native needs a GGUF model"),
        },
        Some(f) => {
            let (ftype, opts) = mix::parse_file_type(f)?;
            let q = quantize_checkpoint(&ckpt, ftype, &opts, |_, _, _| {})?;
            let name = q.mix_name();
            (LlamaWeights::from_quantized(&q, &config, ckpt.path())?, format!("{name} (quantized in memory, {:.3} bpw)", q.bits_per_weight()))
        }
    };
    let load_s = t1.elapsed().as_secs_f64();
    let source = ckpt.describe_source()?;

    let params = PplParams { n_ctx: a.data.ctx, max_chunks: a.data.chunks, add_bos: tok.add_bos(), bos_id: tok.bos_id() };
    let n_chunks = evalq::eval::perplexity::plan(tokens.len(), &params)?;
    if !a.json && !quiet {
        eprintln!("model:   {source}");
        eprintln!("weights: {evaluated}");
        eprintln!("dataset: {} ({}, sha256 {}{})", dataset.name, dataset.path.display(), &dataset.sha256[..12],
            if dataset.verified { ", verified" } else { "" });
        eprintln!("tokens:  {} (tokenized in {tokenize_s:.2} s); {n_chunks} chunks of {}; isa {}, {} threads",
            tokens.len(), a.data.ctx, isa::active().name(), rayon::current_num_threads());
    }
    let pb = progress::bar(n_chunks as u64, "ppl", quiet || a.json);
    let t2 = Instant::now();
    let r = perplexity(&weights, &tokens, &params, |c, _| {
        pb.set_message(format!("ppl {:.4}", c.ppl));
        pb.inc(1);
    })?;
    pb.finish_and_clear();
    let seconds = t2.elapsed().as_secs_f64();
    let tps = r.n_tokens_scored as f64 / seconds;
    let ctx_tps = (r.n_chunks * r.n_ctx) as f64 / seconds;

    if a.json {
        let v = json!({
            "ppl": r.ppl,
            "ppl_stderr": r.ppl_stderr,
            "n_chunks": r.n_chunks,
            "n_ctx": r.n_ctx,
            "n_tokens_scored": r.n_tokens_scored,
            "n_tokens_total": r.n_tokens_total,
            "seconds": seconds,
            "tokens_per_second": tps,
            "context_tokens_per_second": ctx_tps,
            "load_seconds": load_s,
            "tokenize_seconds": tokenize_s,
            "chunks": r.chunks.iter().map(|c| c.ppl).collect::<Vec<_>>(),
            "model": ckpt.path().display().to_string(),
            "source": source,
            "format": evaluated,
            "dataset": dataset.name,
            "dataset_path": dataset.path.display().to_string(),
            "dataset_sha256": dataset.sha256,
            "isa": isa::active().name(),
            "threads": rayon::current_num_threads(),
            "evalq_version": env!("CARGO_PKG_VERSION"),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let running: Vec<String> = r.chunks.iter().map(|c| format!("[{}]{:.4}", c.chunk, c.ppl)).collect();
        println!("{}", running.join(","));
        println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_stderr);
        println!(
            "{} chunks × {} scored tokens (n_ctx {}) in {seconds:.2} s: {tps:.1} scored tokens/s, {ctx_tps:.1} context tokens/s",
            r.n_chunks, r.n_tokens_scored / r.n_chunks.max(1), r.n_ctx
        );
    }
    Ok(())
}

pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let ckpt = open_model(a.model.model.as_deref())?;
    let dtype = match a.dtype {
        ExportDtypeArg::F32 => ExportDtype::F32,
        ExportDtypeArg::F16 => ExportDtype::F16,
        ExportDtypeArg::Bf16 => ExportDtype::BF16,
    };
    export_safetensors(&ckpt, &a.dir, dtype)?;
    println!("wrote {}", a.dir.display());
    Ok(())
}

pub fn quantize(a: QuantizeArgs, quiet: bool) -> anyhow::Result<()> {
    let ckpt = open_model(Some(&a.input))?;
    let (ftype, mut opts) = mix::parse_file_type(&a.format)?;
    opts.pure |= a.pure;
    let t0 = Instant::now();
    let mut out = std::io::stdout().lock();
    let pb = progress::bar(ckpt.tensor_names().len() as u64, "quantize", quiet);
    let mut lines = Vec::new();
    let q = quantize_checkpoint(&ckpt, ftype, &opts, |t, i, n| {
        let shape = t.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        let why = t.reason.as_deref().map(|r| format!("  ({r})")).unwrap_or_default();
        lines.push(format!("[{:>3}/{n}] {:<28} {:>12} {:>7}{why}", i + 1, t.name, shape, t.ty.name()));
        pb.inc(1);
    })?;
    pb.finish_and_clear();
    for l in &lines {
        writeln!(out, "{l}")?;
    }
    let Checkpoint::Gguf(src) = &ckpt else {
        anyhow::bail!("quantize writes GGUF metadata copied from a GGUF source; convert the Hugging Face model to GGUF first");
    };
    let size = write_gguf(src, &q, &a.output)?;
    let hist: Vec<String> = q.histogram().iter().map(|(t, n)| format!("{t}: {n}")).collect();
    writeln!(out, "\nwrote {} ({})", a.output.display(), q.mix_name())?;
    writeln!(out, "file size:   {size} bytes ({:.2} MiB)", size as f64 / (1 << 20) as f64)?;
    writeln!(out, "tensor data: {} bytes, {:.4} bits per weight over {} weights", q.tensor_bytes(), q.bits_per_weight(), q.n_weights())?;
    writeln!(out, "types:       {}", hist.join(", "))?;
    writeln!(out, "fallbacks:   {}", q.tensors.iter().filter(|t| t.fallback_from.is_some()).count())?;
    writeln!(out, "wall time:   {:.2} s (quantization {:.2} s)", t0.elapsed().as_secs_f64(), q.seconds)?;
    Ok(())
}

/// Progress for `evalq run`: a bar per stage on a terminal, plain lines otherwise, nothing with
/// `--quiet`.
struct RunProgress {
    quiet: bool,
    tty: bool,
    bar: Option<indicatif::ProgressBar>,
    stage: String,
    t0: Instant,
}

impl evalq::run::runner::Progress for RunProgress {
    fn stage(&mut self, name: &str, len: u64) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        self.stage = name.to_string();
        if !self.quiet && self.tty && len > 0 {
            self.bar = Some(progress::bar(len, name, false));
        }
    }

    fn step(&mut self, msg: &str) {
        if let Some(b) = &self.bar {
            b.println(format!("{:>8}: {msg}", self.stage));
            b.inc(1);
        } else if !self.quiet {
            eprintln!("[{:>6.1}s] {:>8}: {msg}", self.t0.elapsed().as_secs_f64(), self.stage);
        }
    }

    fn note(&mut self, msg: &str) {
        if let Some(b) = &self.bar {
            b.println(msg);
        } else if !self.quiet {
            eprintln!("{msg}");
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

pub fn run(a: RunArgs, quiet: bool) -> anyhow::Result<()> {
    run_and_report(a.run, &a.baseline, quiet).map(|_| ())
}

/// `evalq run` against the reference format `baseline`, returning the run directory and the
/// root it lives in.
fn run_and_report(a: RunSettings, baseline: &str, quiet: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    use evalq::run::runner::{self, RunInputs, RunOptions};
    use std::io::IsTerminal;

    let ckpt = open_model(a.model.model.as_deref())?;
    let tok = ckpt.tokenizer()?;
    let (dataset, tokens) = dataset_tokens(&tok, &a.data)?;
    let opts = RunOptions {
        formats: runner::parse_format_list(&a.formats)?,
        baseline: baseline.to_string(),
        n_ctx: a.data.ctx,
        max_chunks: a.data.chunks,
        out_root: a.out.clone(),
        force: a.force,
        speed: evalq::run::speed::SpeedParams { pp_tokens: a.pp, tg_tokens: a.tg, reps: a.reps.max(1) },
        no_speed: a.no_speed,
        remeasure_bandwidth: a.remeasure_bandwidth,
        cache_dir: fetch::cache_dir(),
    };
    if a.pp == 0 || a.tg == 0 || a.pp > 8192 || a.tg > 8192 {
        anyhow::bail!("--pp and --tg must be between 1 and 8192");
    }
    // Ctrl-C: stop at the next chunk or format boundary, after saving what finished. A second
    // Ctrl-C exits at once (every file on disk is complete, as each is written atomically).
    let _ = ctrlc::set_handler(|| {
        if runner::STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nevalq: stopping after the current step (Ctrl-C again to quit now)");
    });
    if !quiet {
        eprintln!("model:   {}", ckpt.describe_source()?);
        eprintln!("dataset: {} ({}, sha256 {})", dataset.name, dataset.path.display(), &dataset.sha256[..12]);
        eprintln!("formats: {} against {}", opts.formats.join(" "), opts.baseline);
        eprintln!("threads: {}, isa {}", rayon::current_num_threads(), isa::active().name());
    }
    let t0 = Instant::now();
    let mut prog = RunProgress { quiet, tty: std::io::stderr().is_terminal(), bar: None, stage: String::new(), t0 };
    let inputs = RunInputs { ckpt: &ckpt, tokens: &tokens, add_bos: tok.add_bos(), bos_id: tok.bos_id(), dataset: &dataset };
    let (dir, results) = runner::run(&inputs, &opts, &mut prog)?;
    let files = evalq::report::write_all(&dir, &results)?;
    runner::update_latest(&opts.out_root, &dir)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<10} {:>6} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8}", "format", "bpw", "PPL", "ΔPPL", "KLD", "pp t/s", "tg t/s", "tg GB/s")?;
    for f in &results.formats {
        writeln!(
            out,
            "{:<10} {:>6.3} {:>10.4} {:>+9.4} {:>9.5} {:>8.1} {:>8.1} {:>8.2}",
            f.format, f.bpw, f.quality.ppl, f.quality.dppl, f.quality.kld_mean, f.speed.pp_tps, f.speed.tg_tps, f.speed.tg_gbps
        )?;
    }
    writeln!(out, "baseline {} PPL {:.4} ± {:.4}; wrote {} files to {} in {:.1} s", results.baseline.format,
        results.baseline.ppl, results.baseline.ppl_err, files.len(), dir.display(), t0.elapsed().as_secs_f64())?;
    Ok((dir, opts.out_root))
}

pub fn bench_bandwidth(a: BandwidthArgs) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    let bytes = match &a.bytes {
        Some(s) => evalq::util::parse_size(s)? as usize,
        None => evalq::bench::bandwidth::default_bytes(),
    };
    let r = evalq::bench::bandwidth::measure_read_bandwidth(threads, bytes, a.runs.max(1))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("cpu:            {}", evalq::bench::machine::cpu_model());
        println!("array:          {:.0} MiB, {} threads, {} runs", bytes as f64 / (1 << 20) as f64, r.threads, r.runs_gbps.len());
        println!("read bandwidth: best {:.2} GB/s, median {:.2} GB/s", r.best_gbps, r.median_gbps);
        println!("single thread:  {:.2} GB/s", r.single_thread_gbps);
    }
    Ok(())
}

pub fn bench_speed(a: SpeedArgs) -> anyhow::Result<()> {
    use evalq::run::speed::{measure, SpeedParams};
    if a.pp == 0 || a.tg == 0 || a.pp > 8192 || a.tg > 8192 {
        anyhow::bail!("--pp and --tg must be between 1 and 8192");
    }
    let ckpt = open_model(a.model.model.as_deref())?;
    let config = ckpt.config()?;
    let (weights, what) = if a.format.eq_ignore_ascii_case("native") {
        match &ckpt {
            Checkpoint::Gguf(file) => (LlamaWeights::load_native(file, &config)?, "native tensor types".to_string()),
            Checkpoint::Hf(_) => (LlamaWeights::load_f32(&ckpt, &config)?, "F32".to_string()),
        }
    } else {
        let (ftype, opts) = mix::parse_file_type(&a.format)?;
        let q = quantize_checkpoint(&ckpt, ftype, &opts, |_, _, _| {})?;
        (LlamaWeights::from_quantized(&q, &config, ckpt.path())?, q.mix_name())
    };
    // The machine's peak, when `evalq bench bandwidth` or a run has cached it.
    let threads = rayon::current_num_threads();
    let cached = evalq::bench::bandwidth::cache_path(&fetch::cache_dir().join("machine"), threads);
    let peak = std::fs::read(&cached)
        .ok()
        .and_then(|b| serde_json::from_slice::<evalq::bench::bandwidth::BandwidthResult>(&b).ok())
        .map_or(f64::NAN, |r| r.best_gbps);
    let mut state = evalq::model::forward::State::new(&config, a.pp.max(a.tg));
    let p = SpeedParams { pp_tokens: a.pp, tg_tokens: a.tg, reps: a.reps.max(1) };
    let s = measure(&weights, &mut state, &p, peak);
    if a.json {
        let mut v = serde_json::to_value(&s)?;
        v["model"] = json!(ckpt.path().display().to_string());
        v["weights"] = json!(what);
        v["threads"] = json!(threads);
        v["isa"] = json!(isa::active().name());
        v["peak_read_gbps"] = json!(peak);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let spread = |r: &[f64]| {
            let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.iter().copied().fold(0.0, f64::max);
            format!("[{lo:.1}–{hi:.1}]")
        };
        println!("model:   {} ({what}), {threads} threads, isa {}", ckpt.path().display(), isa::active().name());
        println!("pp{}:   {:.1} t/s {} over {} runs", a.pp, s.pp_tps, spread(&s.pp_runs), s.pp_runs.len());
        println!("tg{}:   {:.1} t/s {} over {} runs", a.tg, s.tg_tps, spread(&s.tg_runs), s.tg_runs.len());
        println!(
            "bandwidth: {:.1} MB per token, {:.2} GB/s = {:.1}% of the measured peak {:.2} GB/s; roofline {:.1} t/s",
            s.tg_bytes_per_token / 1e6, s.tg_gbps, s.bw_util_pct, peak, s.roofline_tg_tps
        );
    }
    Ok(())
}

/// `evalq compare`: exit code 0 (nothing counted regressed) or 1; errors (unusable inputs) are 2.
pub fn compare(a: CompareArgs) -> anyhow::Result<std::process::ExitCode> {
    compare_runs(&a.baseline, &a.current, a.out.clone(), &a.rules, a.json)
}

/// Compares two runs, writes the reports and prints the verdicts; exit code 1 on a regression.
fn compare_runs(
    baseline: &Path,
    current: &Path,
    out: Option<PathBuf>,
    rules: &CompareRules,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    use evalq::compare::{self, CompareOptions, FailOn};
    let opts = CompareOptions {
        alpha: rules.alpha,
        min_ppl_rel: rules.min_ppl_change / 100.0,
        min_kld_rel: rules.min_kld_change / 100.0,
        min_kld_abs: rules.min_kld_abs,
        speed_threshold: rules.speed_threshold / 100.0,
        tg_threshold: rules.tg_threshold / 100.0,
        fail_on: match rules.fail_on {
            FailOnArg::Quality => FailOn::Quality,
            FailOnArg::Speed => FailOn::Speed,
            FailOnArg::Any => FailOn::Any,
        },
    };
    // Both files are read before either is judged, so one message names every unreadable one.
    let (base, cur) = (compare::load_results(baseline), compare::load_results(current));
    let (base, cur) = match (base, cur) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e.into()),
        (Err(b), Err(c)) => anyhow::bail!("{b}; {c}"),
    };
    let mut c = compare::compare(&base, &cur, &opts)?;
    c.baseline.name = compare::side_name(baseline);
    c.current.name = compare::side_name(current);
    let out = out.unwrap_or_else(|| compare::default_out_dir(baseline, current));
    let files = compare::write_reports(&out, &c)?;
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, &c)?;
        writeln!(stdout)?;
    } else {
        writeln!(stdout, "baseline {}\ncurrent  {}", c.baseline.name, c.current.name)?;
        for note in &c.notes {
            writeln!(stdout, "note: {note}")?;
        }
        for line in compare::report::summary_lines(&c) {
            writeln!(stdout, "{line}")?;
        }
        writeln!(stdout, "wrote {} files to {}", files.len(), out.display())?;
    }
    Ok(if c.regressed { std::process::ExitCode::from(1) } else { std::process::ExitCode::SUCCESS })
}

/// `evalq nightly`: run, compare against the baseline, redraw the history charts. The baseline
/// is read first, so an unusable one fails in a second rather than after the run.
pub fn nightly(a: NightlyArgs, quiet: bool) -> anyhow::Result<std::process::ExitCode> {
    let reference = evalq::compare::load_results(&a.baseline)?.baseline.format;
    let (dir, root) = run_and_report(a.run, &reference, quiet)?;
    let code = compare_runs(&a.baseline, &dir, None, &a.rules, false)?;
    history(HistoryArgs { file: root.join(evalq::history::FILE_NAME), out: None, formats: None, add: Vec::new() })?;
    Ok(code)
}

/// `evalq history`: the trend chart of a history.csv.
pub fn history(a: HistoryArgs) -> anyhow::Result<()> {
    let root = a.file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !a.add.is_empty() && a.file.file_name() != Some(std::ffi::OsStr::new(evalq::history::FILE_NAME)) {
        anyhow::bail!("--add writes {}; --file {} has another name", evalq::history::FILE_NAME, a.file.display());
    }
    for dir in &a.add {
        let dir = std::fs::canonicalize(dir).with_context(|| format!("--add {}", dir.display()))?;
        let r = evalq::compare::load_results(&dir)?;
        evalq::history::append_history(root, &dir, &r)?;
    }
    let rows = evalq::history::read_history(&a.file)?;
    let formats: Option<Vec<String>> =
        a.formats.as_deref().map(|s| s.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect());
    let out = a.out.clone().unwrap_or_else(|| {
        a.file.parent().filter(|p| !p.as_os_str().is_empty()).map(|p| p.to_path_buf()).unwrap_or_else(|| ".".into())
    });
    let t = evalq::history::charts::write_trend_charts(&out, &rows, formats.as_deref())?;
    let mut stdout = std::io::stdout().lock();
    for note in &t.notes {
        writeln!(stdout, "note: {note}")?;
    }
    writeln!(stdout, "{} runs, {} formats ({})", t.runs, t.formats.len(), t.formats.join(" "))?;
    for f in &t.files {
        writeln!(stdout, "wrote {}", f.display())?;
    }
    Ok(())
}

/// `evalq recommend`: the measured run (if any) and the requested sizes, ranked for the budget.
pub fn recommend(a: RecommendArgs) -> anyhow::Result<()> {
    use evalq::recommend::{self as rec, models::ModelShape, refpoints};
    let budget = evalq::util::parse_size(&a.ram).context("--ram")?;
    if a.ctx == 0 {
        anyhow::bail!("--ctx must be at least 1");
    }
    if a.ubatch == 0 {
        anyhow::bail!("--ubatch must be at least 1");
    }
    let st = rec::Settings { n_ctx: a.ctx, kv_type: rec::KvType::parse(&a.kv_type)?, n_ubatch: a.ubatch, reserve: a.reserve };
    let points = match &a.reference_points {
        Some(p) => refpoints::load(p)?,
        None => refpoints::builtin(),
    };
    let mut shapes: Vec<ModelShape> = Vec::new();
    for p in &a.params {
        shapes.push(rec::models::preset(p)?);
    }
    for c in &a.config {
        shapes.push(ModelShape::from_hf_config(c)?);
    }
    let with_sizes = !shapes.is_empty();
    // The measured run is required unless sizes were asked for; then a missing default is skipped.
    let explicit_results = a.results != std::path::Path::new("reports/latest");
    let results = if with_sizes && !explicit_results && !a.results.exists() {
        None
    } else {
        Some(rec::load_results(&a.results)?)
    };
    let mut answers = Vec::new();
    if let Some(r) = &results {
        let shape = match a.model.as_deref().or(Some(r.model.path.as_str()).filter(|p| std::path::Path::new(p).exists())) {
            Some(m) => {
                let ckpt = open_model(Some(m))?;
                let tied = !ckpt.has_tensor("output.weight");
                ModelShape::from_config(&r.model.name, &r.model.name, &ckpt.config()?, tied)
            }
            None => rec::shape_for_results(r).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: model {} ({} params) is not at {} and matches no preset; pass --model FILE for its shape",
                    a.results.display(), r.model.name, r.model.n_params, r.model.path
                )
            })?,
        };
        answers.push(rec::measured_answer(r, &shape, &st, budget, &a.results.display().to_string()));
    }
    for s in &shapes {
        answers.push(rec::shape_answer(s, &points, results.as_ref(), &st, budget)?);
    }
    let r = rec::recommend(budget, &st, answers, with_sizes)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", rec::render_text(&r));
    }
    Ok(())
}
