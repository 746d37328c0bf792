//! `evalq run`: every format, quality against the baseline in lockstep, speed and bandwidth,
//! written as CSV, JSON, charts and a report.

pub mod results;
pub mod speed;
pub mod runner;
