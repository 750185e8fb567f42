//! `enforcer policy check|apply|list|delete`.
//!
//! `check` runs offline: it parses the files exactly as the agent will and prints every error
//! with its file, line and field. The other verbs go to the agent.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::{
    cli::{Query, policy_remote},
    policy::{Policy, parse},
};

/// Arguments of `enforcer policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// What to do with policies.
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// The `policy` verbs.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files offline; exit 0 only if all are valid. Names must be unique across
    /// them. A directory stands for its `*.yaml` and `*.yml` files.
    Check {
        /// Policy files (YAML, several documents each) or directories of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate policy files and hand them to the agent, which enforces them at once.
    Apply {
        /// Policy files (YAML, several documents each).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        query: Query,
    },
    /// The policies the agent enforces.
    List {
        #[command(flatten)]
        query: Query,
    },
    /// Print a `NetworkPolicy` and a `FilePolicy` allowing exactly what WORKLOAD was seen doing
    /// while observed (`enforcer observe start WORKLOAD`); review, then `policy apply` them.
    Suggest {
        /// The observed workload.
        workload: String,
        #[command(flatten)]
        query: Query,
    },
    /// Remove a policy from the agent by name.
    Delete {
        /// The policy's name.
        name: String,
        #[command(flatten)]
        query: Query,
    },
}

/// Runs a `policy` verb; returns the exit code.
///
/// # Errors
/// When a directory given to `check` cannot be listed, or the agent cannot be reached or
/// refuses a request.
pub fn run(args: &PolicyArgs) -> anyhow::Result<i32> {
    match &args.command {
        PolicyCommand::Check { files } => check(files),
        PolicyCommand::Apply { files, query } => policy_remote::apply(files, query),
        PolicyCommand::List { query } => policy_remote::list(query),
        PolicyCommand::Delete { name, query } => policy_remote::delete(name, query),
        PolicyCommand::Suggest { workload, query } => policy_remote::suggest(workload, query),
    }
}

/// Parses `args` (files, or directories of them) as one set and reports the outcome.
fn check(args: &[PathBuf]) -> anyhow::Result<i32> {
    let mut files = Vec::new();
    for arg in args {
        if arg.is_dir() {
            files.extend(parse::policy_files(arg).with_context(|| format!("listing {}", arg.display()))?);
        } else {
            files.push(arg.clone());
        }
    }
    match parse::parse_files(&files) {
        Ok(policies) => {
            let network = policies.iter().filter(|p| matches!(p, Policy::Network(_))).count();
            println!(
                "ok: {} policies ({network} network, {} file) in {} files",
                policies.len(),
                policies.len() - network,
                files.len()
            );
            Ok(0)
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            Ok(1)
        }
    }
}
