//! The `keyscope` command-line interface.
//!
//! Exit codes, as grep's: 0 for success or allow, 1 for deny, 2 for any error.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("keyscope: error: {error:#}");
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
