//! `weir-receiver`: parses the command line and runs it; see `cli.rs`.

use std::process::ExitCode;

use clap::Parser;
use weir_receiver::cli::{Cli, Outcome, run};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Rejected) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("weir-receiver: error: {e:#}");
            // 2: could not run at all (bad store, missing file), as distinct
            // from 1: ran and rejected the bundle.
            ExitCode::from(2)
        }
    }
}
