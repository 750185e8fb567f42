//! The `enforcer` binary: parse arguments, hand over to the library.
#![forbid(unsafe_code)]

use clap::Parser as _;

fn main() {
    let cli = enforcer::cli::Cli::parse();
    let code = match enforcer::cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("enforcer: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
