//! `enforcer policy apply|list|delete`: the verbs that talk to the agent.
//!
//! A placeholder until the agent's policy API is wired in.

use std::path::PathBuf;

use crate::cli::Query;

/// Sends validated policies to the agent.
///
/// # Errors
/// Always, until the agent's policy API exists.
pub fn apply(files: &[PathBuf], query: &Query) -> anyhow::Result<i32> {
    let _ = (files, query);
    anyhow::bail!("`enforcer policy apply` is not available yet")
}

/// Lists the agent's policies.
///
/// # Errors
/// Always, until the agent's policy API exists.
pub fn list(query: &Query) -> anyhow::Result<i32> {
    let _ = query;
    anyhow::bail!("`enforcer policy list` is not available yet")
}

/// Deletes a policy by name.
///
/// # Errors
/// Always, until the agent's policy API exists.
pub fn delete(name: &str, query: &Query) -> anyhow::Result<i32> {
    let _ = (name, query);
    anyhow::bail!("`enforcer policy delete` is not available yet")
}
