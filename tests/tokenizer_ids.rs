//! Golden test: the tokenizer built from the default model's GGUF gives exactly llama.cpp's ids
//! on the whole of wikitext-2's test file (`llama-tokenize -f wiki.test.raw --ids`, see
//! `../shared/reference/README.md`).
//!
//! The model is looked up in `$EVALQ_CACHE_DIR/models` (default `~/.cache/evalq/models`). When it
//! is missing, the test fails if `CI` is set and is skipped with a note otherwise.

use std::path::PathBuf;
use std::time::Instant;

use evalq::gguf::GgufFile;
use evalq::model::tokenizer::Tokenizer;

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared").join(rel)
}

fn model_path() -> PathBuf {
    let cache = match std::env::var_os("EVALQ_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/evalq"),
    };
    cache.join("models").join(MODEL_FILE)
}

/// The tokenizer of the default model, or `None` (with a note) when the model is absent outside CI.
fn tokenizer() -> Option<Tokenizer> {
    let path = model_path();
    if !path.is_file() {
        if std::env::var_os("CI").is_some() {
            panic!("{} is missing (CI is set, so this is a failure)", path.display());
        }
        eprintln!("note: skipping, {} is missing (set EVALQ_CACHE_DIR to the cache that holds it)", path.display());
        return None;
    }
    let file = GgufFile::open(&path).expect("open gguf");
    Some(Tokenizer::from_gguf(&file).expect("tokenizer from gguf"))
}

/// Ids `lo..hi` of `ids`, clamped, with their decoded text.
fn window(tok: &Tokenizer, ids: &[u32], lo: usize, hi: usize) -> String {
    let hi = hi.min(ids.len());
    let lo = lo.min(hi);
    let slice = &ids[lo..hi];
    let text = tok.decode(slice).unwrap_or_else(|e| format!("<decode failed: {e}>"));
    format!("{slice:?} {text:?}")
}

#[test]
fn wiki_test_raw_ids_match_llama_cpp() {
    let Some(tok) = tokenizer() else { return };
    assert!(!tok.add_bos(), "SmolLM2's vocabulary does not add BOS");

    let text = std::fs::read_to_string(shared("datasets/wikitext-2-raw/wiki.test.raw")).expect("read wiki.test.raw");
    let expected: Vec<u32> = std::fs::read_to_string(shared("reference/wiki.test.raw.ids.txt"))
        .expect("read reference ids")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().expect("an id per line"))
        .collect();
    assert_eq!(expected.len(), 303_415, "reference file");

    let start = Instant::now();
    let ids = tok.encode(&text).expect("encode");
    let elapsed = start.elapsed();
    eprintln!(
        "encoded {} bytes into {} ids in {:.2?} ({:.1} MB/s)",
        text.len(),
        ids.len(),
        elapsed,
        text.len() as f64 / 1e6 / elapsed.as_secs_f64()
    );

    if let Some(i) = (0..ids.len().min(expected.len())).find(|&i| ids[i] != expected[i]) {
        let (lo, hi) = (i.saturating_sub(8), i + 8);
        panic!(
            "first difference at index {i}: ours {} vs llama.cpp {}\n  ours:      {}\n  llama.cpp: {}",
            ids[i],
            expected[i],
            window(&tok, &ids, lo, hi),
            window(&tok, &expected, lo, hi),
        );
    }
    assert_eq!(ids.len(), expected.len(), "same prefix, different lengths");
}

#[test]
fn json_round_trip_on_the_real_vocabulary() {
    let Some(tok) = tokenizer() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, tok.to_json().unwrap()).unwrap();
    let back = Tokenizer::from_file(&path).unwrap();

    let text = std::fs::read_to_string(shared("datasets/wikitext-2-raw/wiki.test.raw")).unwrap();
    let paragraph: String = text.chars().take(20_000).collect();
    let paragraph = format!("{paragraph}\n<|im_start|>user\nHi there, it's 2024!<|im_end|>\n");
    assert_eq!(back.encode(&paragraph).unwrap(), tok.encode(&paragraph).unwrap());
    assert_eq!(back.vocab_size(), tok.vocab_size());
    assert_eq!(back.add_bos(), tok.add_bos());
    assert_eq!(tok.decode(&tok.encode(&paragraph).unwrap()).unwrap(), paragraph);
}
