//! Raw arguments (clap derive) turned into calls into the library, one function per command.

mod commands;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Which quantization format should I run this model in? Measured against llama.cpp.
#[derive(Parser, Debug)]
#[command(name = "evalq", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Worker threads for the forward pass (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Force an instruction-set path: scalar, avx2, avx512 or neon (default: the best available).
    #[arg(long, global = true)]
    pub isa: Option<String>,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download and verify the default model (SmolLM2-135M-Instruct) into the cache.
    Fetch,
    /// Show a model's architecture, shapes, tensors and types.
    Info(InfoArgs),
    /// Tokenize a text file with a model's tokenizer.
    Tokenize(TokenizeArgs),
    /// Perplexity on a dataset, with llama-perplexity's protocol.
    Ppl(PplArgs),
    /// Write a model in another container format.
    Export(ExportArgs),
    /// Quantize a model into a llama.cpp file type, byte for byte as llama-quantize does.
    Quantize(QuantizeArgs),
    /// Every format: quantize, quality against the baseline, speed and bandwidth; CSV, JSON,
    /// charts and a report in reports/<date>-<model>-<hash>/.
    Run(RunArgs),
    /// Which format (and, with --params/--config, which model size) fits a RAM budget best.
    Recommend(RecommendArgs),
    /// Machine and kernel measurements.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Compare two runs: per format, quality and speed improved, unchanged or regressed; exit
    /// code 1 when something regressed, 2 when the runs are not comparable.
    Compare(CompareArgs),
    /// Trend charts of PPL, KLD and generation speed over the runs in history.csv.
    History(HistoryArgs),
    /// `run`, then `compare` against --baseline, then `history`: the nightly regression job.
    /// Exit code as for compare.
    Nightly(NightlyArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FailOnArg {
    Quality,
    Speed,
    Any,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The baseline run: a run directory or its results.json.
    pub baseline: PathBuf,
    /// The current run: a run directory or its results.json.
    pub current: PathBuf,
    /// Where compare.md|html|json|svg|png go (default: CURRENT/compare-vs-<baseline dir name>/,
    /// or ./compare/ when CURRENT is a file).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub rules: CompareRules,
    /// Print compare.json to stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// What counts as a regression, shared by `compare` and `nightly`.
#[derive(Args, Debug)]
pub struct CompareRules {
    /// Which regressions set exit code 1.
    #[arg(long, value_enum, default_value = "any")]
    pub fail_on: FailOnArg,
    /// Two-sided significance level of the quality tests (0.01: 99% intervals).
    #[arg(long, default_value_t = 0.01)]
    pub alpha: f64,
    /// Smallest relevant PPL change, percent of the baseline's PPL.
    #[arg(long, default_value_t = 0.2)]
    pub min_ppl_change: f64,
    /// Smallest relevant KLD change, percent of the baseline's KLD (and --min-kld-abs).
    #[arg(long, default_value_t = 10.0)]
    pub min_kld_change: f64,
    /// Smallest relevant KLD change in nats.
    #[arg(long, default_value_t = 1e-4)]
    pub min_kld_abs: f64,
    /// Smallest relevant prompt-processing (pp) change, percent, when repetitions spread less.
    #[arg(long, default_value_t = 10.0)]
    pub speed_threshold: f64,
    /// Smallest relevant generation (tg) change, percent: run-to-run noise of tg is larger than
    /// the spread of one run's repetitions (up to 23% between two runs of the same binary here).
    #[arg(long, default_value_t = 25.0)]
    pub tg_threshold: f64,
}

#[derive(Args, Debug)]
pub struct NightlyArgs {
    /// The run to compare against: a run directory or its results.json (e.g. the last good
    /// nightly's). Checked before the run starts.
    #[arg(long)]
    pub baseline: PathBuf,
    #[command(flatten)]
    pub run: RunSettings,
    #[command(flatten)]
    pub rules: CompareRules,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The history file that `evalq run` appends to.
    #[arg(long, default_value = "reports/history.csv")]
    pub file: PathBuf,
    /// Where history.svg and history.png go (default: the history file's directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only these formats (comma list).
    #[arg(long)]
    pub formats: Option<String>,
    /// Add these run directories to the history first (runs made before the history existed,
    /// or in another --out); a run already in it is replaced, not duplicated.
    #[arg(long)]
    pub add: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Sustained read bandwidth of this machine (STREAM-like, multi-threaded, best of several runs).
    Bandwidth(BandwidthArgs),
    /// Prompt-processing and generation speed of one model file, as llama-bench's pp512/tg128.
    Speed(SpeedArgs),
}

#[derive(Args, Debug)]
pub struct SpeedArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Run the file's own tensor types (`native`, the default for GGUF files), or quantize the
    /// F32 source in memory into this file type first.
    #[arg(long, default_value = "native")]
    pub format: String,
    /// Prompt tokens, processed as one batch.
    #[arg(long, default_value_t = 512)]
    pub pp: usize,
    /// Generated tokens, one at a time with the KV cache.
    #[arg(long, default_value_t = 128)]
    pub tg: usize,
    /// Timed repetitions of each test, after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BandwidthArgs {
    /// Total bytes of the array read (default: 1 GiB, at least 8× the last-level cache).
    #[arg(long)]
    pub bytes: Option<String>,
    /// Timed repetitions; the best is reported.
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The reference the formats are compared with: F32 (the source), F16 or BF16.
    #[arg(long, default_value = "F32")]
    pub baseline: String,
    #[command(flatten)]
    pub run: RunSettings,
}

/// Everything `run` takes except the reference format, which `nightly` reads from its baseline
/// run instead (a comparison needs the same reference on both sides).
#[derive(Args, Debug)]
pub struct RunSettings {
    #[command(flatten)]
    pub model: ModelArg,
    /// `all` (the llama.cpp family: F16 Q8_0 Q6_K Q5_K_M Q5_0 Q4_K_M Q4_K_S Q4_0 Q4_1 Q3_K_M Q2_K
    /// IQ4_NL IQ4_XS), `every` (every file type evalq knows), or a comma list (Q4_K_M,Q6_K_pure).
    #[arg(long, default_value = "all")]
    pub formats: String,
    #[command(flatten)]
    pub data: EvalDataArgs,
    /// Where run directories are written.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Recompute the formats even if this run's directory already has them.
    #[arg(long)]
    pub force: bool,
    /// Prompt tokens of the prompt-processing test (llama-bench's pp512).
    #[arg(long, default_value_t = 512)]
    pub pp: usize,
    /// Generated tokens of the generation test (llama-bench's tg128).
    #[arg(long, default_value_t = 128)]
    pub tg: usize,
    /// Timed repetitions of each speed test, after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Skip the speed and bandwidth measurements.
    #[arg(long)]
    pub no_speed: bool,
    /// Measure the machine's peak bandwidth again instead of using the cached figure.
    #[arg(long)]
    pub remeasure_bandwidth: bool,
}

#[derive(Args, Debug)]
pub struct RecommendArgs {
    /// The RAM budget: 8GiB, 8G (= 8 GiB: bare K/M/G/T are powers of 1024), 8GB or 8000MB
    /// (powers of 1000), 8e9 or 8000000000 (bytes).
    #[arg(long, allow_hyphen_values = true)]
    pub ram: String,
    /// Context length the KV cache is sized for (default: 512, the context quality was measured at).
    #[arg(long, default_value_t = evalq::recommend::DEFAULT_CTX)]
    pub ctx: u64,
    /// The measured run: a run directory or its results.json.
    #[arg(long, default_value = "reports/latest")]
    pub results: std::path::PathBuf,
    /// The measured model's file, for its shape (default: the run's model, or the preset with
    /// the same parameter count).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Also rank these model sizes: 135M, 1B, 3B, 7B, 8B, 13B, 70B (comma list or repeated).
    #[arg(long, value_delimiter = ',')]
    pub params: Vec<String>,
    /// Also rank the model described by this Hugging Face config.json (repeatable).
    #[arg(long)]
    pub config: Vec<std::path::PathBuf>,
    /// KV cache element type: f16 (llama.cpp's default), f32, q8_0 or q4_0.
    #[arg(long, default_value = "f16")]
    pub kv_type: String,
    /// llama.cpp's micro-batch (-ub); the compute buffer holds this many tokens' activations.
    #[arg(long, default_value_t = evalq::recommend::DEFAULT_UBATCH)]
    pub ubatch: u64,
    /// Count llama.cpp's worst-case compute reservation (f32 logits for a whole micro-batch),
    /// which must fit with --mlock or without memory overcommit, instead of what stays resident.
    #[arg(long)]
    pub reserve: bool,
    /// Published quality figures to use instead of the built-in datasets/reference-points.csv.
    #[arg(long)]
    pub reference_points: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ModelArg {
    /// A GGUF file, a Hugging Face directory, or `smollm2-135m` (the default, fetched if missing).
    #[arg(long, short)]
    pub model: Option<String>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The model (positional form of --model).
    pub model_pos: Option<String>,
    #[command(flatten)]
    pub model: ModelArg,
    /// Also list every metadata key.
    #[arg(long)]
    pub metadata: bool,
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The text file to tokenize.
    #[arg(long, short)]
    pub file: PathBuf,
    /// Print a JSON array instead of one id per line.
    #[arg(long)]
    pub json: bool,
}

/// The text a model is scored on and how it is cut into chunks (shared by ppl and run).
#[derive(Args, Debug)]
pub struct EvalDataArgs {
    /// A dataset name from datasets/manifest.json, or a path to any text file.
    #[arg(long, default_value = "wikitext-2")]
    pub dataset: String,
    /// Where to look for datasets first.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Context length of each chunk.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Evaluate at most this many chunks (default: the whole dataset).
    #[arg(long)]
    pub chunks: Option<usize>,
}

#[derive(Args, Debug)]
pub struct PplArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: EvalDataArgs,
    /// Evaluate in this file type, quantized in memory from the F32 source (e.g. Q4_K_M,
    /// Q4_K_L, Q6_K_pure); `native` runs the file's own tensor types; default: the F32 source.
    #[arg(long)]
    pub format: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The source model (a GGUF file, a Hugging Face directory, or `smollm2-135m`).
    pub input: String,
    /// The GGUF file to write.
    pub output: PathBuf,
    /// The file type: F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q5_0, Q5_1, Q4_K_M, Q4_K_S,
    /// Q4_0, Q4_1, Q3_K_L, Q3_K_M, Q3_K_S, Q2_K, IQ4_NL, IQ4_XS, or Q4_K_L.
    #[arg(long)]
    pub format: String,
    /// One type for every quantizable tensor (llama-quantize --pure).
    #[arg(long)]
    pub pure: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormat {
    /// A Hugging Face directory: model.safetensors, config.json, tokenizer.json.
    Safetensors,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ExportDtypeArg {
    F32,
    F16,
    Bf16,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The container to write.
    #[arg(long, value_enum)]
    pub to: ExportFormat,
    /// Element type of the written tensors.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: ExportDtypeArg,
    /// The output directory.
    pub dir: PathBuf,
}

/// Applies the global options, then runs the command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(name) = &cli.isa {
        let isa = evalq::kernels::Isa::from_name(name)
            .ok_or_else(|| anyhow::anyhow!("unknown instruction set '{name}' (known: scalar, avx2, avx512, neon)"))?;
        evalq::kernels::isa::force(isa).map_err(anyhow::Error::msg)?;
    }
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = cli.threads {
        if n == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        builder = builder.num_threads(n);
    }
    // The command runs on a worker of the pool, not on the main thread: a parallel loop with a
    // single item (every per-token step of generation) then runs inline instead of being sent
    // to the pool and waited for, which cost ~40% of generation time in scheduler calls.
    let pool = builder.build()?;
    let quiet = cli.quiet;
    let mut code = ExitCode::SUCCESS;
    pool.install(|| match cli.command {
        Command::Fetch => commands::fetch(quiet),
        Command::Info(a) => commands::info(a),
        Command::Tokenize(a) => commands::tokenize(a),
        Command::Ppl(a) => commands::ppl(a, quiet),
        Command::Export(a) => commands::export(a),
        Command::Quantize(a) => commands::quantize(a, quiet),
        Command::Run(a) => commands::run(a, quiet),
        Command::Recommend(a) => commands::recommend(a),
        Command::Bench(BenchCommand::Bandwidth(a)) => commands::bench_bandwidth(a),
        Command::Bench(BenchCommand::Speed(a)) => commands::bench_speed(a),
        Command::Compare(a) => commands::compare(a).map(|c| code = c),
        Command::History(a) => commands::history(a),
        Command::Nightly(a) => commands::nightly(a, quiet).map(|c| code = c),
    })?;
    Ok(code)
}
