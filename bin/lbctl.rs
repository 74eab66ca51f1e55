//! The `lbctl` binary: parses the command line and hands it to the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = lbctl::cli::Cli::parse();
    match lbctl::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lbctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
