//! `enforcer explain WORKLOAD --to ADDR:PORT/PROTO | --from ADDR:PORT/PROTO`: which policy and
//! rule decide, read from the state in force in the kernel.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{
    api::proto,
    cli::{Output, Query, client},
};

/// Arguments of `enforcer explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Workload name (cgroup path below the managed root) or identity number.
    pub workload: String,
    /// An outgoing connection: `ADDR:PORT/PROTO`, e.g. `10.0.0.5:5432/tcp` or `[fd00::1]:53/udp`.
    #[arg(long, conflicts_with = "from", required_unless_present = "from")]
    pub to: Option<String>,
    /// An incoming connection: the source as `ADDR:PORT/PROTO` (PORT is the workload's own port).
    #[arg(long)]
    pub from: Option<String>,
    #[command(flatten)]
    pub query: Query,
}

/// Parses `ADDR:PORT/PROTO`.
fn target(text: &str) -> anyhow::Result<(SocketAddr, String)> {
    let (addr, proto) = text.rsplit_once('/').with_context(|| format!("{text:?}: expected ADDR:PORT/PROTO"))?;
    let proto = proto.to_ascii_lowercase();
    if proto != "tcp" && proto != "udp" {
        bail!("{text:?}: protocol must be tcp or udp");
    }
    let addr: SocketAddr = addr.parse().with_context(|| format!("{addr:?}: expected ADDR:PORT (IPv6 as [ADDR]:PORT)"))?;
    Ok((addr, proto))
}

/// Prints the verdict and what decides it.
///
/// # Errors
/// For a malformed target or when the agent cannot be reached or refuses.
pub fn run(args: &ExplainArgs) -> anyhow::Result<i32> {
    let (direction, text) = match (&args.to, &args.from) {
        (Some(t), None) => ("egress", t),
        (None, Some(f)) => ("ingress", f),
        _ => bail!("give exactly one of --to or --from"),
    };
    let (addr, protocol) = target(text)?;
    let request = proto::ExplainRequest {
        workload: args.workload.clone(),
        direction: direction.to_owned(),
        address: addr.ip().to_string(),
        port: u32::from(addr.port()),
        protocol,
    };
    let r = client::with_agent(&args.query.socket, |mut a| async move { Ok(a.explain(request).await?.into_inner()) })?;
    match args.query.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "verdict": r.verdict, "reason": r.reason, "remote": r.remote, "remote_identity": r.remote_identity })
        ),
        Output::Table => {
            println!("verdict  {}", r.verdict);
            println!("because  {}", r.reason);
            println!("remote   {} (identity {})", r.remote, r.remote_identity);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target("10.0.0.5:5432/tcp").expect("v4").0.port(), 5432);
        assert_eq!(target("[fd00::1]:53/UDP").expect("v6").1, "udp");
        assert!(target("10.0.0.5:5432").is_err());
        assert!(target("10.0.0.5/tcp").is_err());
        assert!(target("10.0.0.5:1/icmp").is_err());
    }
}
