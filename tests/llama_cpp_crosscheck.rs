//! Live cross-check against llama.cpp (through llama-cpp-python 0.3.36): for every reference
//! file type, the GGUF that `evalq quantize` writes is byte-identical to the one
//! `llama_model_quantize` writes from the same F32 source, and llama.cpp loads evalq's file and
//! computes the reference perplexity on it (within 0.2% on AVX-512 machines like the reference
//! one, 2% elsewhere, where llama.cpp's own kernels differ). The work is in
//! scripts/crosscheck_llama_cpp.py.

use std::process::Command;

#[test]
fn evalq_files_equal_llama_cpp_files_and_run_in_llama_cpp() {
    let have = Command::new("python3").args(["-c", "import llama_cpp, numpy"]).status().is_ok_and(|s| s.success());
    if !have {
        assert!(std::env::var_os("CI").is_none(), "llama-cpp-python is missing (scripts/test.sh installs it)");
        eprintln!("note: skipping, llama-cpp-python is not installed (scripts/test.sh installs it)");
        return;
    }
    if !evalq::data::fetch::default_model_path().exists() {
        assert!(std::env::var_os("CI").is_none(), "the default model is missing");
        eprintln!("note: skipping, no default model (run `evalq fetch`)");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .arg(format!("{root}/scripts/crosscheck_llama_cpp.py"))
        .args(["--evalq", env!("CARGO_BIN_EXE_evalq"), "--ppl-chunks", "2"])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "cross-check failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("25 passed, 0 failed"), "not every file type was checked:\n{stdout}");
}
