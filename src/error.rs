//! The library's error type. Every variant carries enough context (file, tensor, field) for a user
//! to find the problem without a debugger; messages are lowercase with no trailing period.

use std::path::PathBuf;

/// Errors raised by the evalq library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A GGUF file whose header, metadata or tensor table is malformed.
    #[error("{path}: malformed gguf: {msg}")]
    Gguf { path: PathBuf, msg: String },

    /// A tensor that is missing, has the wrong shape or type, or whose data is unusable.
    #[error("{path}: tensor '{tensor}': {msg}")]
    Tensor { path: PathBuf, tensor: String, msg: String },

    /// A model configuration value that is missing or out of range.
    #[error("{path}: config field '{field}': {msg}")]
    Config { path: PathBuf, field: String, msg: String },

    /// A tokenizer that is missing or cannot be built.
    #[error("{path}: tokenizer: {msg}")]
    Tokenizer { path: PathBuf, msg: String },

    /// A safetensors file that cannot be read.
    #[error("{path}: safetensors: {msg}")]
    Safetensors { path: PathBuf, msg: String },

    /// A dataset that cannot be found, fetched or verified.
    #[error("dataset '{name}': {msg}")]
    Dataset { name: String, msg: String },

    /// A downloaded or provided file whose content hash is not the expected one.
    #[error("{path}: sha256 mismatch: expected {expected}, got {actual}")]
    Sha256Mismatch { path: PathBuf, expected: String, actual: String },

    /// The default model could not be provisioned.
    #[error("fetch: {0}")]
    Fetch(String),

    /// The user asked the run to stop (Ctrl-C); what finished has been saved.
    #[error("interrupted: finished work is saved; run the same command again to resume")]
    Interrupted,

    /// A value passed by the user that evalq does not accept.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
