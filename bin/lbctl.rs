//! The `lbctl` binary: parses the command line and hands it to the library.
//! Exit codes: 0 ok, 1 invalid config or usage (`status --check`: not
//! serving), 2 runtime error.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match lbctl::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match lbctl::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lbctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
