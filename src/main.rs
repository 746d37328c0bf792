//! The `evalq` command line. Argument parsing lives in `cli`; all work is in the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) if matches!(err.downcast_ref::<evalq::Error>(), Some(evalq::Error::Interrupted)) => {
            eprintln!("evalq: {err}");
            ExitCode::from(130)
        }
        Err(err) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("evalq: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
