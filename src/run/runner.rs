//! The `evalq run` pipeline: quantize (cached), evaluate every format against the baseline in
//! lockstep, measure speed, write the outputs.
//!
//! Lockstep means one pass over the chunks: for each chunk the baseline's logits are computed
//! once and compared at once with every pending format's logits for the same chunk, so no
//! logits file is ever written (llama.cpp's `--kl-divergence-base` files reach tens of GiB).
//!
//! Resuming: everything a run has finished lives in its directory. A format's final figures are
//! `formats/<FORMAT>.json`; quality in progress is checkpointed per chunk in `state/`. Every
//! file is written atomically, so a run killed at any point is resumed by running the same
//! command again: finished formats are skipped and the lockstep pass restarts at the first
//! chunk some pending format lacks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::bench::{bandwidth, machine};
use crate::data::datasets::ResolvedDataset;
use crate::error::{Error, Result};
use crate::eval::kld::{token_stats_vs, BaseRow, QualityAccumulator};
use crate::eval::perplexity::{nll, plan, NllStats, PplParams};
use crate::gguf::{GgmlType, GgufFile};
use crate::model::forward::{forward, State};
use crate::model::{Checkpoint, LlamaConfig, LlamaWeights};
use crate::quant::mix;
use crate::quant::quantize::{quantize_checkpoint, write_gguf};
use crate::run::results::*;
use crate::run::speed::{self, SpeedParams};
use crate::util::{sha256_bytes, write_bytes_atomic};

/// The formats `--formats all` runs: the llama.cpp GGUF family most people choose from.
pub const ALL_FORMATS: &[&str] =
    &["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q3_K_M", "Q2_K", "IQ4_NL", "IQ4_XS"];

/// Set by the Ctrl-C handler; the run stops at the next chunk or format boundary.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub formats: Vec<String>,
    /// F32, F16 or BF16.
    pub baseline: String,
    pub n_ctx: usize,
    pub max_chunks: Option<usize>,
    /// Where run directories go (`reports/`).
    pub out_root: PathBuf,
    /// Recompute formats even when the run directory has them.
    pub force: bool,
    pub speed: SpeedParams,
    /// Skip the speed measurements (quality only).
    pub no_speed: bool,
    /// Measure the machine's bandwidth again instead of using the cached figure.
    pub remeasure_bandwidth: bool,
    /// Where quantized files and the bandwidth figure are cached.
    pub cache_dir: PathBuf,
}

/// Progress callbacks, so the library stays free of terminal code.
pub trait Progress {
    /// A stage begins: `len` steps.
    fn stage(&mut self, name: &str, len: u64);
    /// One step of the current stage is done; `msg` says what.
    fn step(&mut self, msg: &str);
    /// A line for the log (shown above the bars).
    fn note(&mut self, msg: &str);
    fn finish(&mut self);
}

/// Expands `all`, `every` and comma lists into canonical file-type names, checking each.
pub fn parse_format_list(spec: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let names: Vec<String> = match item.to_ascii_lowercase().as_str() {
            "all" => ALL_FORMATS.iter().map(|s| s.to_string()).collect(),
            "every" => mix::file_type_names().into_iter().filter(|n| *n != "F32").map(String::from).collect(),
            _ => {
                mix::parse_file_type(item)?;
                vec![canonical_name(item)]
            }
        };
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!("--formats '{spec}' names no format")));
    }
    Ok(out)
}

/// `q4_k_m_pure` → `Q4_K_M_pure`.
fn canonical_name(s: &str) -> String {
    let upper = s.trim().to_ascii_uppercase();
    match upper.strip_suffix("_PURE") {
        Some(b) => format!("{b}_pure"),
        None => upper,
    }
}

/// The inputs a run needs, resolved by the caller.
pub struct RunInputs<'a> {
    pub ckpt: &'a Checkpoint,
    pub tokens: &'a [u32],
    pub add_bos: bool,
    pub bos_id: Option<u32>,
    pub dataset: &'a ResolvedDataset,
}

/// Checkpointed quality of one format.
#[derive(Serialize, Deserialize)]
struct QualityState {
    chunks_done: usize,
    acc: QualityAccumulator,
}

/// Checkpointed baseline NLL.
#[derive(Serialize, Deserialize, Default)]
struct BaselineState {
    chunks_done: usize,
    sum: f64,
    sum2: f64,
    count: usize,
    chunk_nll: Vec<f64>,
}

/// What the quantize cache remembers about a file next to it.
#[derive(Serialize, Deserialize, Clone)]
struct QuantMeta {
    format: String,
    quantize_s: f64,
    file_bytes: u64,
    bpw: f64,
    type_mix: String,
    fallbacks: Vec<String>,
}

/// Runs everything and returns the run directory and its results.
pub fn run(inputs: &RunInputs, opts: &RunOptions, progress: &mut dyn Progress) -> Result<(PathBuf, RunResults)> {
    let ckpt = inputs.ckpt;
    let config = ckpt.config()?;
    let model_path = ckpt.path().to_path_buf();
    let model_sha = if model_path.is_file() {
        crate::data::fetch::sha256_with_stamp(&model_path)?
    } else {
        // A Hugging Face directory: hash the tensor files' names and sizes plus config.
        directory_fingerprint(&model_path)?
    };
    let params = PplParams { n_ctx: opts.n_ctx, max_chunks: opts.max_chunks, add_bos: inputs.add_bos, bos_id: inputs.bos_id };
    let n_chunks = plan(inputs.tokens.len(), &params)?;
    let baseline = canonical_name(&opts.baseline);
    if !["F32", "F16", "BF16"].contains(&baseline.as_str()) {
        return Err(Error::Invalid(format!("--baseline must be F32, F16 or BF16, not '{}'", opts.baseline)));
    }

    let model_name = model_short_name(&model_path);
    let run_key = sha256_bytes(
        format!(
            "{model_sha}\0{}\0{}\0{n_chunks}\0{baseline}\0{}\0{}",
            inputs.dataset.sha256,
            opts.n_ctx,
            env!("CARGO_PKG_VERSION"),
            machine::git_commit()
        )
        .as_bytes(),
    );
    let dir = run_dir(&opts.out_root, &model_name, &run_key[..8])?;
    std::fs::create_dir_all(dir.join("formats")).map_err(|e| Error::io(&dir, e))?;
    std::fs::create_dir_all(dir.join("state")).map_err(|e| Error::io(&dir, e))?;
    progress.note(&format!("run directory: {}", dir.display()));

    let threads = rayon::current_num_threads();
    let bw = if opts.no_speed {
        None
    } else {
        let bw_dir = opts.cache_dir.join("machine");
        if opts.remeasure_bandwidth {
            let _ = std::fs::remove_file(bandwidth::cache_path(&bw_dir, threads));
        }
        // EVALQ_BANDWIDTH_BYTES makes a small uncached probe (tests use it to stay fast).
        match std::env::var("EVALQ_BANDWIDTH_BYTES") {
            Ok(v) => Some(bandwidth::measure_read_bandwidth(threads, crate::util::parse_size(&v)? as usize, 2)?),
            Err(_) => {
                progress.note("peak read bandwidth: measured once per machine and cached");
                Some(bandwidth::cached_or_measure(&bw_dir, threads)?)
            }
        }
    };
    let peak_gbps = bw.as_ref().map_or(f64::NAN, |b| b.best_gbps);

    let pending: Vec<String> =
        opts.formats.iter().filter(|f| opts.force || !dir.join("formats").join(format!("{f}.json")).exists()).cloned().collect();
    if opts.force {
        for f in &pending {
            let _ = std::fs::remove_file(dir.join("state").join(format!("quality-{f}.json")));
        }
    }

    // 1. Quantize (or find in the cache) every pending format and the baseline.
    progress.stage("quantize", pending.len() as u64 + u64::from(baseline != "F32"));
    let mut metas: BTreeMap<String, (PathBuf, QuantMeta, bool)> = BTreeMap::new();
    for f in pending.iter().chain(std::iter::once(&baseline).filter(|b| *b != "F32")) {
        let (path, meta, cached) = quantized_file(ckpt, &model_sha, f, &opts.cache_dir)?;
        progress.step(&format!("{f}: {:.2} bpw{}", meta.bpw, if cached { " (cached)" } else { "" }));
        metas.insert(f.clone(), (path, meta, cached));
        if STOP.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
    }

    // 2. Quality, all pending formats in one lockstep pass.
    let base_weights = load_weights(ckpt, &config, &baseline, &metas)?;
    let base_state_path = dir.join("state").join("baseline.json");
    let mut base_state: BaselineState = read_json(&base_state_path)?.unwrap_or_default();
    let mut quality: Vec<(String, QualityState)> = Vec::new();
    for f in &pending {
        let p = dir.join("state").join(format!("quality-{f}.json"));
        let st = read_json::<QualityState>(&p)?.unwrap_or(QualityState { chunks_done: 0, acc: QualityAccumulator::new() });
        quality.push((f.clone(), st));
    }
    let need: Vec<usize> = quality.iter().map(|(_, s)| s.chunks_done).collect();
    let first_chunk = need.iter().copied().chain(std::iter::once(base_state.chunks_done)).min().unwrap_or(n_chunks);
    let todo_formats: Vec<usize> = (0..quality.len()).filter(|&i| quality[i].1.chunks_done < n_chunks).collect();
    if first_chunk < n_chunks && (!todo_formats.is_empty() || base_state.chunks_done < n_chunks) {
        let weights: Vec<LlamaWeights> =
            todo_formats.iter().map(|&i| load_weights(ckpt, &config, &quality[i].0, &metas)).collect::<Result<_>>()?;
        progress.stage("quality", (n_chunks - first_chunk) as u64);
        let mut base_s = State::new(&config, opts.n_ctx);
        let mut q_s = State::new(&config, opts.n_ctx);
        let half = opts.n_ctx / 2;
        let vocab = config.vocab_size;
        let mut batch = vec![0u32; opts.n_ctx];
        let mut last_save = Instant::now();
        for chunk in first_chunk..n_chunks {
            batch.copy_from_slice(&inputs.tokens[chunk * opts.n_ctx..(chunk + 1) * opts.n_ctx]);
            if inputs.add_bos {
                batch[0] = inputs.bos_id.ok_or_else(|| Error::Invalid("the vocabulary adds BOS but has no BOS id".into()))?;
            }
            forward(&base_weights, &mut base_s, &batch, half);
            let rows: Vec<BaseRow> = (half..opts.n_ctx - 1)
                .map(|pos| BaseRow::new(&base_s.logits[(pos - half) * vocab..(pos - half + 1) * vocab], batch[pos + 1] as usize))
                .collect();
            let base_nll: Vec<f64> = (half..opts.n_ctx - 1)
                .map(|pos| nll(&base_s.logits[(pos - half) * vocab..(pos - half + 1) * vocab], batch[pos + 1] as usize))
                .collect();
            if base_state.chunks_done == chunk {
                let mut c = NllStats::default();
                for &v in &base_nll {
                    base_state.sum += v;
                    base_state.sum2 += v * v;
                    base_state.count += 1;
                    c.push(v);
                }
                base_state.chunk_nll.push(c.sum / c.count as f64);
                base_state.chunks_done += 1;
            }
            for (wi, &qi) in todo_formats.iter().enumerate() {
                let st = &mut quality[qi].1;
                if st.chunks_done != chunk {
                    continue;
                }
                forward(&weights[wi], &mut q_s, &batch, half);
                for (j, pos) in (half..opts.n_ctx - 1).enumerate() {
                    let ql = &q_s.logits[(pos - half) * vocab..(pos - half + 1) * vocab];
                    let target = batch[pos + 1] as usize;
                    let mut ts = token_stats_vs(&rows[j], ql, target);
                    // PPL exactly as `evalq ppl` and llama-perplexity's default mode compute
                    // it (f64 log-sum-exp), so the two commands agree to the bit.
                    ts.nll_q = nll(ql, target);
                    ts.nll_base = base_nll[j];
                    st.acc.push(&ts);
                }
                st.acc.end_chunk();
                st.chunks_done += 1;
            }
            let base_ppl = (base_state.sum / base_state.count as f64).exp();
            progress.step(&format!("chunk {}/{n_chunks}, baseline PPL {base_ppl:.4}", chunk + 1));
            let stopping = STOP.load(Ordering::Relaxed);
            if stopping || chunk + 1 == n_chunks || last_save.elapsed().as_secs() >= 20 {
                save_quality(&dir, &base_state, &quality)?;
                last_save = Instant::now();
            }
            if stopping {
                return Err(Error::Interrupted);
            }
        }
    }
    drop(base_weights);
    let base_ppl = (base_state.sum / base_state.count.max(1) as f64).exp();
    let base_err = {
        let s = NllStats { sum: base_state.sum, sum2: base_state.sum2, count: base_state.count };
        s.ppl_stderr()
    };

    // 3. Speed, one format at a time, and the final per-format files.
    progress.stage("speed", pending.len() as u64);
    let n_pos = opts.speed.pp_tokens.max(opts.speed.tg_tokens);
    for (f, st) in &quality {
        let (_, meta, cached) = &metas[f];
        let speed = if opts.no_speed {
            let nan = f64::NAN;
            Speed { pp_tps: nan, tg_tps: nan, tg_bytes_per_token: nan, tg_gbps: nan, bw_util_pct: nan, roofline_tg_tps: nan, ..Speed::default() }
        } else {
            machine::release_free_memory();
            machine::reset_peak_rss();
            let w = load_weights(ckpt, &config, f, &metas)?;
            let mut s = State::new(&config, n_pos);
            let mut sp = speed::measure(&w, &mut s, &opts.speed, peak_gbps);
            sp.peak_rss_bytes = machine::peak_rss_bytes().unwrap_or(0);
            sp
        };
        let r = FormatResult {
            format: f.clone(),
            file_bytes: meta.file_bytes,
            bpw: meta.bpw,
            type_mix: meta.type_mix.clone(),
            fallbacks: meta.fallbacks.clone(),
            quantize_s: meta.quantize_s,
            quantize_cached: *cached,
            quality: st.acc.finish(),
            speed,
        };
        let bytes = serde_json::to_vec_pretty(&r).map_err(|e| Error::Invalid(e.to_string()))?;
        write_bytes_atomic(&dir.join("formats").join(format!("{f}.json")), &bytes)?;
        progress.step(&format!(
            "{f}: PPL {:.4}, KLD {:.5}, pp {:.1} t/s, tg {:.1} t/s",
            r.quality.ppl, r.quality.kld_mean, r.speed.pp_tps, r.speed.tg_tps
        ));
        if STOP.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
    }
    progress.finish();

    let results = assemble(&dir, inputs, opts, ckpt, &config, &model_name, &model_sha, n_chunks, peak_gbps, &baseline, base_ppl, base_err, &base_state.chunk_nll)?;
    // One row per format in <out>/history.csv for `evalq history` (a rerun replaces its rows).
    crate::history::append_history(&opts.out_root, &dir, &results)?;
    Ok((dir, results))
}

/// Builds `RunResults` from the finished per-format files of `dir` (those asked for, in order).
#[allow(clippy::too_many_arguments)]
fn assemble(
    dir: &Path,
    inputs: &RunInputs,
    opts: &RunOptions,
    ckpt: &Checkpoint,
    config: &LlamaConfig,
    model_name: &str,
    model_sha: &str,
    n_chunks: usize,
    peak_gbps: f64,
    baseline: &str,
    base_ppl: f64,
    base_err: f64,
    base_chunk_nll: &[f64],
) -> Result<RunResults> {
    let mut formats = Vec::new();
    for f in &opts.formats {
        if let Some(r) = read_json::<FormatResult>(&dir.join("formats").join(format!("{f}.json")))? {
            formats.push(r);
        }
    }
    let n_params: u64 = ckpt.tensor_names().iter().filter_map(|n| ckpt.tensor_meta(n).ok()).map(|(_, dims)| dims.iter().product::<u64>()).sum();
    let scored = n_chunks * (opts.n_ctx - 1 - opts.n_ctx / 2);
    Ok(RunResults {
        schema_version: SCHEMA_VERSION,
        created: rfc3339_now(),
        model: ModelInfo {
            name: model_name.to_string(),
            path: ckpt.path().display().to_string(),
            sha256: model_sha.to_string(),
            source: ckpt.describe_source()?,
            architecture: config.arch.clone(),
            n_params,
        },
        dataset: DatasetInfo {
            name: inputs.dataset.name.clone(),
            path: inputs.dataset.path.display().to_string(),
            sha256: inputs.dataset.sha256.clone(),
            n_ctx: opts.n_ctx,
            n_chunks,
            n_tokens_scored: scored,
        },
        machine: MachineInfo {
            cpu: machine::cpu_model(),
            cores: machine::physical_cores(),
            threads: rayon::current_num_threads(),
            isa: crate::kernels::isa::active().name().to_string(),
            peak_read_gbps: peak_gbps,
            os: machine::os_description(),
        },
        provenance: Provenance { evalq_version: env!("CARGO_PKG_VERSION").to_string(), git_commit: machine::git_commit() },
        baseline: BaselineInfo { format: baseline.to_string(), ppl: base_ppl, ppl_err: base_err, chunk_nll: base_chunk_nll.to_vec() },
        formats,
    })
}

fn save_quality(dir: &Path, base: &BaselineState, quality: &[(String, QualityState)]) -> Result<()> {
    let enc = |v: &dyn erased::Ser| v.to_json();
    write_bytes_atomic(&dir.join("state").join("baseline.json"), &enc(base)?)?;
    for (f, st) in quality {
        write_bytes_atomic(&dir.join("state").join(format!("quality-{f}.json")), &enc(st)?)?;
    }
    Ok(())
}

/// A tiny object-safe JSON encoder, so `save_quality` can take either state type.
mod erased {
    use crate::error::{Error, Result};

    pub trait Ser {
        fn to_json(&self) -> Result<Vec<u8>>;
    }

    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> Result<Vec<u8>> {
            serde_json::to_vec(self).map_err(|e| Error::Invalid(format!("cannot encode the run state: {e}")))
        }
    }
}

/// Reads a JSON file written by an earlier (possibly interrupted) run; `None` when absent.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{}: unreadable run state ({e}); delete it or rerun with --force", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The weights of `format`: the F32 source itself, or the quantized file from the cache.
fn load_weights(
    ckpt: &Checkpoint,
    config: &LlamaConfig,
    format: &str,
    metas: &BTreeMap<String, (PathBuf, QuantMeta, bool)>,
) -> Result<LlamaWeights> {
    if format == "F32" {
        return LlamaWeights::load_f32(ckpt, config);
    }
    let (path, _, _) = metas.get(format).ok_or_else(|| Error::Invalid(format!("format {format} was not quantized")))?;
    let file = GgufFile::open(path)?;
    LlamaWeights::load_native(&file, config)
}

/// Returns the cached quantized file of `format`, making it first when missing.
/// The cache key is a content hash of (source sha256, format, evalq version).
fn quantized_file(ckpt: &Checkpoint, model_sha: &str, format: &str, cache_dir: &Path) -> Result<(PathBuf, QuantMeta, bool)> {
    let key = sha256_bytes(format!("{model_sha}\0{format}\0{}", env!("CARGO_PKG_VERSION")).as_bytes());
    let qdir = cache_dir.join("quantized");
    let gguf = qdir.join(format!("{}-{format}.gguf", &key[..16]));
    let meta_path = qdir.join(format!("{}-{format}.json", &key[..16]));
    if let (true, Ok(Some(meta))) = (gguf.is_file(), read_json::<QuantMeta>(&meta_path)) {
        if std::fs::metadata(&gguf).map(|m| m.len()).ok() == Some(meta.file_bytes) {
            return Ok((gguf, meta, true));
        }
    }
    let Checkpoint::Gguf(src) = ckpt else {
        return Err(Error::Invalid(
            "evalq run writes GGUF files whose metadata is copied from a GGUF source; convert the Hugging Face model to GGUF first"
                .into(),
        ));
    };
    let (ftype, mopts) = mix::parse_file_type(format)?;
    let q = quantize_checkpoint(ckpt, ftype, &mopts, |_, _, _| {})?;
    std::fs::create_dir_all(&qdir).map_err(|e| Error::io(&qdir, e))?;
    let tmp = qdir.join(format!(".{}-{format}.{}.tmp", &key[..16], std::process::id()));
    let file_bytes = write_gguf(src, &q, &tmp)?;
    std::fs::rename(&tmp, &gguf).map_err(|e| Error::io(&gguf, e))?;
    let type_mix = q.histogram().iter().map(|(t, n)| format!("{}:{n}", t.name())).collect::<Vec<_>>().join(" ");
    let mut falls: BTreeMap<(GgmlType, GgmlType, u64), usize> = BTreeMap::new();
    for t in &q.tensors {
        if let Some(from) = t.fallback_from {
            *falls.entry((from, t.ty, t.dims[0])).or_default() += 1;
        }
    }
    let fallbacks = falls
        .iter()
        .map(|((from, to, cols), n)| format!("{n} tensors: {} -> {} ({cols} columns, not a multiple of 256)", from.name(), to.name()))
        .collect();
    let meta = QuantMeta { format: format.to_string(), quantize_s: q.seconds, file_bytes, bpw: q.bits_per_weight(), type_mix, fallbacks };
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Invalid(e.to_string()))?;
    write_bytes_atomic(&meta_path, &bytes)?;
    Ok((gguf, meta, false))
}

/// `reports/<date>-<model>-<key>`, reusing an existing directory with the same key (a resumed
/// run keeps its directory even past midnight).
fn run_dir(root: &Path, model: &str, key: &str) -> Result<PathBuf> {
    let suffix = format!("-{model}-{key}");
    if let Ok(rd) = std::fs::read_dir(root) {
        let mut found: Vec<PathBuf> =
            rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir() && p.to_string_lossy().ends_with(&suffix)).collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Ok(p);
        }
    }
    Ok(root.join(format!("{}{suffix}", utc_date())))
}

/// Points `root/latest` at `dir` (a relative symlink, replaced atomically).
pub fn update_latest(root: &Path, dir: &Path) -> Result<()> {
    let name = dir.file_name().ok_or_else(|| Error::Invalid(format!("{} has no name", dir.display())))?;
    let link = root.join("latest");
    let tmp = root.join(format!(".latest.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(name, &tmp).map_err(|e| Error::io(&tmp, e))?;
    #[cfg(not(unix))]
    std::fs::write(&tmp, name.to_string_lossy().as_bytes()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &link).map_err(|e| Error::io(&link, e))
}

/// `SmolLM2-135M-Instruct.Q4_1.gguf` → `SmolLM2-135M-Instruct`.
fn model_short_name(path: &Path) -> String {
    let stem = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let stem = stem.strip_suffix(".gguf").unwrap_or(&stem).to_string();
    let base = match stem.rsplit_once('.') {
        Some((b, q)) if q.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && q.len() <= 8 => b.to_string(),
        _ => stem,
    };
    base.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

/// A fingerprint for a Hugging Face directory: the sha256 of config.json plus every
/// safetensors file's name and size (hashing gigabytes of weights on every run is too slow).
fn directory_fingerprint(dir: &Path) -> Result<String> {
    let mut parts = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name == "config.json" || name == "tokenizer.json" {
            parts.push(format!("{name}:{}", crate::util::sha256_file(&p)?));
        } else if name.ends_with(".safetensors") {
            let len = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len();
            parts.push(format!("{name}:{len}"));
        }
    }
    Ok(sha256_bytes(parts.join("\n").as_bytes()))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Today's UTC date, `YYYY-MM-DD`.
pub fn utc_date() -> String {
    let (y, m, d) = civil_from_days((unix_now() / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Now in UTC, RFC 3339 to the second.
pub fn rfc3339_now() -> String {
    let t = unix_now();
    let (y, m, d) = civil_from_days((t / 86_400) as i64);
    let s = t % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_follow_the_civil_calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
    }

    #[test]
    fn format_lists_expand_and_reject_unknown_names() {
        assert_eq!(parse_format_list("all").unwrap().len(), ALL_FORMATS.len());
        assert_eq!(parse_format_list("q4_k_m, Q8_0,q4_k_m").unwrap(), vec!["Q4_K_M", "Q8_0"]);
        assert_eq!(parse_format_list("q6_k_pure").unwrap(), vec!["Q6_K_pure"]);
        let e = parse_format_list("Q4_K_M,Q9_9").unwrap_err().to_string();
        assert!(e.contains("Q9_9"), "{e}");
        assert!(parse_format_list(" , ").is_err());
        assert!(parse_format_list("every").unwrap().contains(&"Q4_K_L".to_string()));
    }

    #[test]
    fn model_names_drop_the_quant_suffix() {
        assert_eq!(model_short_name(Path::new("/x/SmolLM2-135M-Instruct.Q4_1.gguf")), "SmolLM2-135M-Instruct");
        assert_eq!(model_short_name(Path::new("/x/my model")), "my_model");
    }
}
