//! The dataset manifest and the rules that turn `--dataset NAME|PATH` into a verified file.
//!
//! `datasets/manifest.json` is compiled into the binary, so names resolve the same from any
//! working directory. A manifest name is looked up, in order, under `--data-dir`,
//! `$EVALQ_DATA_DIR`, `./datasets`, `<crate>/datasets`, `./../shared/datasets`,
//! `<crate>/../shared/datasets` and finally the download cache `<cache>/datasets`; in each root
//! both `ROOT/<file>` (e.g. `wikitext-2-raw/wiki.test.raw`) and `ROOT/<name>/<basename>` are
//! tried. The first file found must hash to the manifest's sha256: a mismatch is an error, never
//! a silent fall-through to the next root. When nothing is found the archive is downloaded into
//! the cache, the member extracted and verified. Anything that is not a manifest name is taken as
//! a path to a text file, used unverified.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::data::fetch::{self, Downloader};
use crate::error::{Error, Result};
use crate::util::{sha256_file, verify_sha256};

/// The manifest text, embedded at compile time.
pub const MANIFEST_JSON: &str = include_str!("../../datasets/manifest.json");

/// Where a dataset file can be downloaded from: a zip archive and the member inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSource {
    /// URL of the zip archive.
    pub url: String,
    /// sha256 of the archive, when published; `None` means only the member is verified.
    pub archive_sha256: Option<String>,
    /// Size of the archive in bytes, when known.
    #[serde(default)]
    pub archive_size: Option<u64>,
    /// Path of the dataset file inside the archive.
    pub member: String,
}

/// One entry of `datasets/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// Name accepted by `--dataset`.
    pub name: String,
    /// Path of the file relative to a dataset directory, e.g. `wikitext-2-raw/wiki.test.raw`.
    pub file: String,
    /// Which split of the corpus this is (`test`, `valid`, ...), if meaningful.
    #[serde(default)]
    pub split: Option<String>,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// Licence the text is distributed under.
    pub licence: String,
    /// What the file is and what it is for.
    pub description: String,
    /// Where to download it.
    pub source: DatasetSource,
}

impl DatasetSpec {
    /// The file name without its directory, e.g. `wiki.test.raw`.
    pub fn basename(&self) -> &str {
        self.file.rsplit('/').next().unwrap_or(&self.file)
    }

    /// The places this dataset may sit under `root`: `root/<file>` and `root/<name>/<basename>`.
    pub fn candidates(&self, root: &Path) -> Vec<PathBuf> {
        let a = root.join(&self.file);
        let b = root.join(&self.name).join(self.basename());
        if a == b {
            vec![a]
        } else {
            vec![a, b]
        }
    }
}

#[derive(Deserialize)]
struct ManifestFile {
    #[allow(dead_code)]
    version: u32,
    datasets: Vec<DatasetSpec>,
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses and checks manifest JSON (unique names, well-formed hashes, relative paths).
pub fn parse_manifest(json: &str) -> Result<Vec<DatasetSpec>> {
    let bad = |name: &str, msg: String| Error::Dataset { name: name.to_string(), msg };
    let m: ManifestFile =
        serde_json::from_str(json).map_err(|e| bad("manifest", format!("invalid manifest json: {e}")))?;
    for (i, d) in m.datasets.iter().enumerate() {
        if m.datasets[..i].iter().any(|o| o.name == d.name) {
            return Err(bad(&d.name, "duplicate name in manifest".into()));
        }
        if !is_sha256(&d.sha256) {
            return Err(bad(&d.name, format!("manifest sha256 '{}' is not 64 hex digits", d.sha256)));
        }
        if let Some(a) = &d.source.archive_sha256 {
            if !is_sha256(a) {
                return Err(bad(&d.name, format!("manifest archive_sha256 '{a}' is not 64 hex digits")));
            }
        }
        let rel = Path::new(&d.file);
        if d.file.is_empty()
            || rel.is_absolute()
            || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad(&d.name, format!("manifest file '{}' must be a plain relative path", d.file)));
        }
    }
    Ok(m.datasets)
}

/// The datasets evalq knows by name.
pub fn manifest() -> &'static [DatasetSpec] {
    static MANIFEST: OnceLock<Vec<DatasetSpec>> = OnceLock::new();
    MANIFEST.get_or_init(|| parse_manifest(MANIFEST_JSON).expect("embedded datasets/manifest.json is valid"))
}

/// The manifest entry called `name`.
pub fn find_dataset(name: &str) -> Option<&'static DatasetSpec> {
    manifest().iter().find(|d| d.name == name)
}

/// The names in the manifest, in manifest order.
pub fn known_names() -> Vec<&'static str> {
    manifest().iter().map(|d| d.name.as_str()).collect()
}

/// A dataset file ready to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDataset {
    /// Manifest name, or the argument as given for a path dataset.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Its sha256 (lowercase hex).
    pub sha256: String,
    /// Whether the hash was checked against the manifest (false for path datasets).
    pub verified: bool,
}

/// Where and how [`resolve_dataset_with`] looks for and fetches dataset files.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Roots to search, in order. `<cache_dir>/datasets` is always searched last.
    pub search_roots: Vec<PathBuf>,
    /// The cache directory; downloads go to `<cache_dir>/datasets/`.
    pub cache_dir: PathBuf,
    /// Programs to download with, tried in order; empty disables downloading.
    pub downloaders: Vec<Downloader>,
    /// Suppress progress messages on stderr.
    pub quiet: bool,
}

impl ResolveOptions {
    /// The standard options: [`default_search_roots`], [`fetch::cache_dir`],
    /// [`Downloader::defaults`].
    pub fn from_env(data_dir: Option<&Path>) -> Self {
        ResolveOptions {
            search_roots: default_search_roots(data_dir),
            cache_dir: fetch::cache_dir(),
            downloaders: Downloader::defaults(),
            quiet: false,
        }
    }
}

/// Makes a root absolute (relative to the current directory) and canonical when it exists, so
/// the paths shown in messages are unambiguous.
fn tidy_root(p: PathBuf) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    if p.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            return cwd.join(p);
        }
    }
    p
}

/// `--data-dir`, `$EVALQ_DATA_DIR`, `./datasets`, `<crate>/datasets`, `./../shared/datasets`,
/// `<crate>/../shared/datasets`, with duplicates removed.
pub fn default_search_roots(data_dir: Option<&Path>) -> Vec<PathBuf> {
    let crate_root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut roots = Vec::new();
    roots.extend(data_dir.map(Path::to_path_buf));
    roots.extend(std::env::var_os("EVALQ_DATA_DIR").filter(|v| !v.is_empty()).map(PathBuf::from));
    roots.push(PathBuf::from("datasets"));
    roots.push(crate_root.join("datasets"));
    roots.push(Path::new("..").join("shared").join("datasets"));
    roots.push(crate_root.join("..").join("shared").join("datasets"));
    dedup(roots.into_iter().map(tidy_root).collect())
}

fn dedup(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Resolves `--dataset NAME|PATH` with the standard search roots (see the module docs),
/// downloading manifest datasets into the cache when they are not found.
pub fn resolve_dataset(name_or_path: &str, data_dir: Option<&Path>) -> Result<ResolvedDataset> {
    resolve_dataset_with(name_or_path, manifest(), &ResolveOptions::from_env(data_dir))
}

/// [`resolve_dataset`] with an explicit manifest and options (no environment lookups).
pub fn resolve_dataset_with(
    name_or_path: &str,
    specs: &[DatasetSpec],
    opts: &ResolveOptions,
) -> Result<ResolvedDataset> {
    match specs.iter().find(|d| d.name == name_or_path) {
        Some(spec) => resolve_named(spec, opts),
        None => resolve_path(name_or_path, specs),
    }
}

fn resolve_path(arg: &str, specs: &[DatasetSpec]) -> Result<ResolvedDataset> {
    let path = PathBuf::from(arg);
    let known = specs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ");
    if !path.exists() {
        return Err(Error::Dataset {
            name: arg.to_string(),
            msg: format!(
                "dataset file {} does not exist, and '{arg}' is not a known dataset name \
                 (known: {known})",
                path.display()
            ),
        });
    }
    if path.is_dir() {
        return Err(Error::Dataset {
            name: arg.to_string(),
            msg: format!("{} is a directory; --dataset takes a text file or a known name ({known})", path.display()),
        });
    }
    let sha256 = sha256_file(&path)?;
    Ok(ResolvedDataset { name: arg.to_string(), path, sha256, verified: false })
}

fn resolve_named(spec: &DatasetSpec, opts: &ResolveOptions) -> Result<ResolvedDataset> {
    let cache_root = opts.cache_dir.join("datasets");
    let mut roots = opts.search_roots.clone();
    roots.push(cache_root.clone());
    let roots = dedup(roots);

    let mut searched = Vec::new();
    for root in &roots {
        for cand in spec.candidates(root) {
            if cand.is_file() {
                verify_sha256(&cand, &spec.sha256)?;
                return Ok(found(spec, cand));
            }
            searched.push(cand);
        }
    }

    let dest = cache_root.join(&spec.file);
    match download_and_extract(spec, &cache_root, &dest, opts) {
        Ok(()) => Ok(found(spec, dest)),
        Err(e) => {
            let list: String = searched.iter().map(|p| format!("\n  {}", p.display())).collect();
            Err(Error::Dataset {
                name: spec.name.clone(),
                msg: format!(
                    "{} ({} bytes, sha256 {}) not found; searched:{list}\n\
                     and downloading it failed: {e}\n\
                     provide the file: download {} and extract {}, then pass --data-dir DIR \
                     with the file at DIR/{} (or set $EVALQ_DATA_DIR), or pass --dataset PATH \
                     (a path is used without checksum verification)",
                    spec.file, spec.size, spec.sha256, spec.source.url, spec.source.member, spec.file
                ),
            })
        }
    }
}

fn found(spec: &DatasetSpec, path: PathBuf) -> ResolvedDataset {
    ResolvedDataset { name: spec.name.clone(), path, sha256: spec.sha256.to_ascii_lowercase(), verified: true }
}

/// The archive's file name from its URL (`.../wikitext-2-raw-v1.zip` → `wikitext-2-raw-v1.zip`).
fn archive_name(spec: &DatasetSpec) -> String {
    let tail = spec.source.url.rsplit('/').next().unwrap_or("");
    let tail = tail.split(['?', '#']).next().unwrap_or("");
    if tail.is_empty() {
        format!("{}.zip", spec.name)
    } else {
        tail.to_string()
    }
}

/// Downloads (or reuses) the archive in `cache_root`, checks it when its hash is known, and
/// extracts the verified member to `dest`.
fn download_and_extract(spec: &DatasetSpec, cache_root: &Path, dest: &Path, opts: &ResolveOptions) -> Result<()> {
    let archive = cache_root.join(archive_name(spec));
    let archive_sha = spec.source.archive_sha256.as_deref();
    let reusable = archive.is_file() && archive_sha.is_none_or(|h| verify_sha256(&archive, h).is_ok());
    if !reusable {
        fetch::download_url(&spec.source.url, &archive, &opts.downloaders, opts.quiet)?;
        if let Some(h) = archive_sha {
            if let Err(e) = verify_sha256(&archive, h) {
                let _ = std::fs::remove_file(&archive);
                return Err(e);
            }
        }
    }
    match fetch::extract_member_verified(&archive, &spec.source.member, dest, &spec.sha256) {
        Ok(()) => {
            if !opts.quiet {
                eprintln!("evalq: dataset {} ready at {}", spec.name, dest.display());
            }
            Ok(())
        }
        Err(e) => {
            // A bad archive would fail the same way next time: drop it so it is fetched again.
            let _ = std::fs::remove_file(&archive);
            Err(e)
        }
    }
}

/// Reads a resolved dataset as UTF-8 text; invalid UTF-8 is an error giving the byte offset.
pub fn read_text(resolved: &ResolvedDataset) -> Result<String> {
    let bytes = std::fs::read(&resolved.path).map_err(|e| Error::io(&resolved.path, e))?;
    String::from_utf8(bytes).map_err(|e| Error::Dataset {
        name: resolved.name.clone(),
        msg: format!(
            "{} is not valid UTF-8: invalid byte sequence at byte offset {}",
            resolved.path.display(),
            e.utf8_error().valid_up_to()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_manifest_parses() {
        let names = known_names();
        assert_eq!(names, ["wikitext-2", "wikitext-2-valid-tokens"]);
        let w = find_dataset("wikitext-2").unwrap();
        assert_eq!(w.file, "wikitext-2-raw/wiki.test.raw");
        assert_eq!(w.size, 1_290_590);
        assert_eq!(w.basename(), "wiki.test.raw");
        assert_eq!(archive_name(w), "wikitext-2-raw-v1.zip");
        assert!(w.source.archive_sha256.is_some());
        let v = find_dataset("wikitext-2-valid-tokens").unwrap();
        assert_eq!(v.source.archive_sha256, None);
        assert_eq!(v.source.member, "wikitext-2/wiki.valid.tokens");
    }

    #[test]
    fn candidates_cover_both_layouts() {
        let w = find_dataset("wikitext-2").unwrap();
        let c = w.candidates(Path::new("/r"));
        assert_eq!(c, [PathBuf::from("/r/wikitext-2-raw/wiki.test.raw"), PathBuf::from("/r/wikitext-2/wiki.test.raw")]);
    }

    #[test]
    fn bad_manifests_are_rejected() {
        let ok = r#"{"version":1,"datasets":[{"name":"a","file":"x/y.txt","sha256":"SHA","size":1,
            "licence":"l","description":"d","source":{"url":"u","archive_sha256":null,"member":"y.txt"}}]}"#;
        let good = ok.replace("SHA", &"0".repeat(64));
        assert_eq!(parse_manifest(&good).unwrap().len(), 1);
        assert!(parse_manifest(&ok.replace("SHA", "abc")).is_err());
        assert!(parse_manifest(&good.replace("x/y.txt", "../y.txt")).is_err());
        assert!(parse_manifest("[]").is_err());
    }

    #[test]
    fn read_text_reports_offset_of_invalid_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, b"abc\xffdef").unwrap();
        let r = ResolvedDataset { name: "t".into(), path: p, sha256: String::new(), verified: false };
        let err = read_text(&r).unwrap_err().to_string();
        assert!(err.contains("byte offset 3"), "{err}");
        std::fs::write(&r.path, "héllo").unwrap();
        assert_eq!(read_text(&r).unwrap(), "héllo");
    }

    #[test]
    fn search_roots_are_absolute_and_unique() {
        let roots = default_search_roots(Some(Path::new("some-data-dir")));
        assert!(roots[0].is_absolute() && roots[0].ends_with("some-data-dir"));
        assert!(roots.iter().all(|r| r.is_absolute()));
        let uniq: std::collections::HashSet<_> = roots.iter().collect();
        assert_eq!(uniq.len(), roots.len());
    }
}
