//! `weir-sender`: parses the command line and runs it; see `cli.rs`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = weir_sender::cli::Cli::parse();
    match weir_sender::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir-sender: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
