//! `enforcer ca`: the CA of a fleet of agents.
//!
//! ```text
//! enforcer ca init --dir DIR                                 # ca.key (0600) and ca.pub in DIR
//! enforcer ca issue --dir DIR --state STATE_DIR [--name N]   # STATE_DIR/agent.cert
//! ```
//! Point every agent's `[cluster] trust` at `DIR/ca.pub`; keep `ca.key` off the hosts.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cluster::ca;

/// Arguments of `enforcer ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CaCommand,
}

/// `ca` subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a CA key pair in DIR (refuses to replace an existing one).
    Init {
        /// Directory for ca.key (mode 0600) and ca.pub.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Certify the agent whose state directory is STATE (its keys are created if absent).
    Issue {
        /// The CA's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The agent's `state_dir`; `agent.cert` is written there.
        #[arg(long)]
        state: PathBuf,
        /// The agent's name, shown by `enforcer peers` and in remote workload names (default:
        /// this host's name).
        #[arg(long)]
        name: Option<String>,
    },
}

/// Runs `enforcer ca`.
///
/// # Errors
/// When the CA or the certificate cannot be written.
pub fn run(args: &CaArgs) -> anyhow::Result<i32> {
    match &args.command {
        CaCommand::Init { dir } => {
            let public = ca::init(dir)?;
            println!("CA created; agents trust {} (`[cluster] trust`); keep {} secret", public.display(), dir.join(ca::CA_PRIVATE).display());
        }
        CaCommand::Issue { dir, state, name } => {
            let name = name.clone().unwrap_or_else(|| {
                nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "agent".to_owned())
            });
            let cert = ca::issue(dir, state, &name, crate::profile::now())?;
            println!(
                "certified {} (agent id {}) until {}: {}",
                cert.name,
                cert.agent_id,
                humantime::format_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(cert.expires_at)),
                state.join(ca::CERT_FILE).display()
            );
        }
    }
    Ok(0)
}
