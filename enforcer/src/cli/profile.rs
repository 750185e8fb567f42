//! `enforcer profile WORKLOAD` and `enforcer profile verify FILE [--key PUBKEY]`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use crate::{
    api::proto,
    cli::{Output, Query, client},
    profile::{self, PublicKey, SignedProfile},
};

/// Arguments of `enforcer profile`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ProfileArgs {
    /// Workload name (cgroup path below the managed root) or identity number.
    #[arg(required = true)]
    pub workload: Option<String>,
    #[command(subcommand)]
    pub verify: Option<Verify>,
    #[command(flatten)]
    query: Query,
}

/// `profile verify`.
#[derive(Debug, Subcommand)]
pub enum Verify {
    /// Exit 0 only if FILE is an intact, unexpired profile signed by a trusted key.
    Verify {
        /// A profile as printed by `enforcer profile WORKLOAD -o json`.
        file: PathBuf,
        /// Verify offline against this public key file (base64 of the raw Ed25519 key, like
        /// `host.pub` in the agent's `state_dir`) instead of asking the agent which keys it trusts.
        #[arg(long)]
        key: Option<PathBuf>,
        #[command(flatten)]
        query: Query,
    },
}

/// Prints a profile or verifies one.
///
/// # Errors
/// When the agent cannot be reached or a file cannot be read.
pub fn run(args: &ProfileArgs) -> anyhow::Result<i32> {
    match (&args.verify, &args.workload) {
        (Some(Verify::Verify { file, key, query }), _) => verify(file, key.as_ref(), query),
        (None, Some(workload)) => show(workload, &args.query),
        (None, None) => bail!("name a workload, or use `enforcer profile verify FILE`"),
    }
}

fn show(workload: &str, q: &Query) -> anyhow::Result<i32> {
    let workload = workload.to_owned();
    let reply = client::with_agent(&q.socket, |mut a| async move {
        Ok(a.get_profile(proto::GetProfileRequest { workload }).await?.into_inner())
    })?;
    match q.output {
        Output::Json => println!("{}", reply.json),
        Output::Table => {
            let s = SignedProfile::from_json(&reply.json)?;
            let p = &s.profile;
            println!("workload   {}", p.workload);
            println!("identity   {}", p.identity);
            println!("host       {}", p.host);
            println!("signed by  {}", p.key_id);
            println!("valid      {} .. {} (seconds since epoch)", p.issued_at, p.expires_at);
            println!("addresses  {}", p.addresses.join(", "));
            for (k, v) in &p.tags {
                println!("tag        {k}={v}");
            }
            println!("\n(-o json prints the signed document for `enforcer profile verify`)");
        }
    }
    Ok(0)
}

fn verify(file: &PathBuf, key: Option<&PathBuf>, q: &Query) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let keys = match key {
        Some(path) => vec![PublicKey::load(path)?],
        None => client::with_agent(&q.socket, |mut a| async move {
            Ok(a.trusted_keys(proto::TrustedKeysRequest {}).await?.into_inner())
        })?
        .public_keys
        .iter()
        .filter_map(|k| PublicKey::from_text(k))
        .collect(),
    };
    let result = SignedProfile::from_json(&text).and_then(|s| s.verify(&keys, profile::now()));
    match result {
        Ok(p) => {
            println!("valid: {} (identity {}) signed by {}, expires at {}", p.workload, p.identity, p.key_id, p.expires_at);
            Ok(0)
        }
        Err(e) => {
            eprintln!("invalid: {}: {e}", file.display());
            Ok(1)
        }
    }
}
