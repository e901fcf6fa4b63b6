//! `watchnext`: see `watchnext --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = watchnext_server::cli::Cli::parse();
    match watchnext_server::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole chain: "what failed: why".
            eprintln!("watchnext: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
