//! The whole quantization pipeline against llama-quantize: for every file type in the
//! reference (the mixes, Q4_K_L and the `_pure` variants), `evalq quantize`'s in-memory result
//! written as GGUF has llama-quantize's tensor types, every tensor's bytes (sha256), and the same
//! file size, header included.

use std::collections::BTreeMap;
use std::path::PathBuf;

use evalq::model::Checkpoint;
use evalq::quant::mix;
use evalq::quant::quantize::{quantize_checkpoint, write_gguf};
use evalq::util::sha256_bytes;
use rayon::prelude::*;

fn reference(file: &str) -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference").join(file);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[test]
fn every_reference_file_type_is_byte_identical_to_llama_quantize() {
    let path = evalq::data::fetch::default_model_path();
    if !path.exists() {
        assert!(std::env::var_os("CI").is_none(), "model missing at {}", path.display());
        eprintln!("note: skipping, no model at {}", path.display());
        return;
    }
    let ckpt = Checkpoint::open(&path).unwrap();
    let Checkpoint::Gguf(src) = &ckpt else { unreachable!() };
    let tensors = reference("llama-cpp-tensors.json");
    let files = reference("llama-cpp-files.json");
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = tensors.as_object().unwrap().keys().cloned().collect();

    // File types run one after another; each quantizes its tensors in parallel.
    let mut failures = Vec::new();
    for key in &keys {
        let (ftype, opts) = mix::parse_file_type(key).unwrap();
        let q = quantize_checkpoint(&ckpt, ftype, &opts, |_, _, _| {}).unwrap();
        let want = tensors[key].as_object().unwrap();
        assert_eq!(q.tensors.len(), want.len(), "{key}: tensor count");
        let bad: Vec<String> = q
            .tensors
            .par_iter()
            .filter_map(|t| {
                let w = &want[&t.name];
                let (wty, wsha) = (w[0].as_str().unwrap(), w[1].as_str().unwrap());
                let sha = sha256_bytes(&t.data);
                (t.ty.name() != wty || sha != wsha).then(|| format!("{key} {}: {} {sha} vs {wty} {wsha}", t.name, t.ty))
            })
            .collect();
        failures.extend(bad);
        let out = dir.path().join(format!("{key}.gguf"));
        let size = write_gguf(src, &q, &out).unwrap();
        std::fs::remove_file(&out).unwrap();
        if let Some(f) = files.get(key) {
            let want_size = f["file_bytes"].as_u64().unwrap();
            if size != want_size {
                failures.push(format!("{key}: file size {size} vs llama-quantize {want_size}"));
            }
            let mut hist = BTreeMap::new();
            for t in &q.tensors {
                *hist.entry(t.ty.name().to_string()).or_insert(0u64) += 1;
            }
            let want_hist: BTreeMap<String, u64> =
                f["tensor_types"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
            assert_eq!(hist, want_hist, "{key}: type histogram");
        }
        eprintln!("{key}: {} tensors checked, {:.2} bpw, {:.2} s", q.tensors.len(), q.bits_per_weight(), q.seconds);
    }
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}
