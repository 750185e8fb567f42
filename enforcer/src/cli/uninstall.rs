//! `enforcer uninstall`: remove everything pinned, which ends enforcement.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::agent;

/// Arguments of `enforcer uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Configuration whose `bpffs_dir` to clear (default: /etc/enforcer/enforcer.toml or defaults).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// Removes the pin tree.
///
/// # Errors
/// When the configuration is invalid or the tree cannot be removed.
pub fn run(args: &UninstallArgs) -> anyhow::Result<i32> {
    let config = super::run::load_config(args.config.as_ref())?;
    let dir = &config.bpffs_dir;
    if agent::uninstall(dir).with_context(|| format!("removing {}", dir.display()))? {
        println!("removed {}: programs detached, maps freed", dir.display());
    } else {
        println!("nothing pinned at {}", dir.display());
    }
    Ok(0)
}
