//! Measurements of the machine rather than of a model: its sustained read bandwidth (the roofline
//! that token generation is compared with) and the context a result file records (CPU, OS, cores,
//! peak memory, the evalq commit).

pub mod bandwidth;
pub mod machine;

pub use bandwidth::{cached_or_measure, measure_read_bandwidth, BandwidthResult};

/// Serializes the tests that allocate hundreds of MiB or read the process's RSS, since tests run
/// on parallel threads of one process and would otherwise disturb each other's RSS figures.
#[cfg(test)]
pub(crate) static MEMORY_TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
