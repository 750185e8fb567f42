//! `cargo xtask`: everything needed to build, run and test enforcer on a fresh machine.
//!
//! - `setup`: installs what is missing (rust-src for nightly, bpf-linker, QEMU and friends, the
//!   VM test kernel), idempotently, caching downloads under `~/.cache/enforcer`.
//! - `build`: the eBPF object and the agent.
//! - `run`: builds, then runs the agent on `examples/enforcer.toml`.
//! - `test`: setup when needed, then unit, host and VM tiers, and one summary.
//! - `vm-test`: only the VM tier.
#![forbid(unsafe_code)]

mod bench;
mod process;
mod run;
mod setup;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install everything the build and the tests need (idempotent; a second run is quick).
    Setup,
    /// Build the eBPF object and the agent.
    Build {
        /// Optimised build.
        #[arg(long)]
        release: bool,
    },
    /// Build the release binary statically linked into target/dist/enforcer, for the container
    /// image (deploy/container/Containerfile) and for copying to hosts.
    Dist,
    /// Build, then run the agent in the foreground on examples/enforcer.toml.
    Run {
        /// Configuration file to run with instead of the example.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Unit tests, privileged host tests and VM tests, then a summary `N passed, N failed`.
    Test,
    /// Only the VM tier: integration tests built static and run under QEMU on the test kernel.
    VmTest,
    /// Side-by-side benchmarks against their baselines (no hook, nftables); writes
    /// target/bench/results.{md,json}.
    Bench {
        /// Shorter run (under five minutes).
        #[arg(long)]
        quick: bool,
        /// Only these rows, comma-separated: connect, nft, update, events, files, memory, tokens,
        /// vm-files.
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|_| 0),
        Command::Build { release } => process::build_agent(release).map(|_| 0),
        Command::Dist => process::build_dist().map(|p| {
            println!("{}", p.display());
            0
        }),
        Command::Run { config } => run::run(config),
        Command::Test => Ok(test::run(test::Tiers::All)),
        Command::VmTest => Ok(test::run(test::Tiers::VmOnly)),
        Command::Bench { quick, only } => bench::run(quick, only.as_deref()),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::exit(1);
        }
    }
}
