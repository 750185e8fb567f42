//! The `enforcer` command line: clap types here, one file per verb that is built.
//!
//! Query verbs talk only to a running daemon over its socket; they never open daemon state.

mod ca;
mod client;
mod explain;
mod flows;
mod label;
mod observe;
mod peers;
mod policy;
mod policy_remote;
mod profile;
mod run;
mod status;
mod uninstall;
mod workloads;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Per-host workload identity and eBPF enforcement agent.
///
/// Run the daemon with `enforcer run`; query it with the other commands.
#[derive(Debug, Parser)]
#[command(name = "enforcer", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of query commands.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for programs.
    Json,
}

/// Options every query command takes.
#[derive(Debug, Args)]
pub struct Query {
    /// The agent's local API socket.
    #[arg(long, default_value = "/run/enforcer/enforcer.sock", env = "ENFORCER_SOCKET")]
    pub socket: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// The subcommands of the contract.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in the foreground.
    Run(run::RunArgs),
    /// Version, uptime, and each enforcement point with its mode.
    Status(Query),
    /// Enrolled workloads: cgroup, tags, identity number.
    Workloads(Query),
    /// A workload's signed Trust Profile, or `profile verify FILE [--key PUBKEY]`.
    Profile(profile::ProfileArgs),
    /// Validate (offline), apply, list or delete policies.
    Policy(policy::PolicyArgs),
    /// Network and file events (`--follow`, `--since DURATION`, `-o json`).
    Flows(flows::FlowsArgs),
    /// Which policy and rule decide a connection (`--to ADDR:PORT/PROTO` or `--from ...`).
    Explain(explain::ExplainArgs),
    /// Assign operator labels to a workload (`enforcer label web tier=frontend`).
    Label(label::LabelArgs),
    /// Learn what a workload does (`start WORKLOAD [--duration D] | stop WORKLOAD | status`);
    /// then `enforcer policy suggest WORKLOAD`.
    Observe(observe::ObserveArgs),
    /// Other agents, their certificates and key epochs.
    Peers(Query),
    /// A CA for a fleet of agents (`ca init --dir DIR`, `ca issue --dir DIR --state STATE_DIR`).
    Ca(ca::CaArgs),
    /// Remove everything the agent pinned (programs, links, maps): enforcement stops.
    Uninstall(uninstall::UninstallArgs),
}

/// Runs the parsed command; returns the process exit code.
///
/// # Errors
/// Any failure of the command, with its cause chain.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Uninstall(args) => uninstall::run(&args),
        Command::Status(q) => status::run(&q),
        Command::Workloads(q) => workloads::run(&q),
        Command::Peers(q) => peers::run(&q),
        Command::Profile(args) => profile::run(&args),
        Command::Policy(args) => policy::run(&args),
        Command::Flows(args) => flows::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Label(args) => label::run(&args),
        Command::Observe(args) => observe::run(&args),
        Command::Ca(args) => ca::run(&args),
    }
}
