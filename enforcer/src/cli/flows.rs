//! `enforcer flows [--follow] [--since DURATION]`: network and file events.

use std::time::Duration;

use clap::Args;
use tokio_stream::StreamExt as _;

use crate::{
    api::proto,
    cli::{Output, Query, client},
};

/// Arguments of `enforcer flows`.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Keep printing new events as they happen.
    #[arg(long, short)]
    pub follow: bool,
    /// Only events from this long ago on (e.g. `30s`, `5m`, `1h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    #[command(flatten)]
    pub query: Query,
}

/// Prints events.
///
/// # Errors
/// When the agent cannot be reached or the stream breaks.
pub fn run(args: &FlowsArgs) -> anyhow::Result<i32> {
    let request = proto::FlowsRequest { since_seconds: args.since.map_or(0, |d| d.as_secs().max(1)), follow: args.follow };
    let output = args.query.output;
    client::with_agent(&args.query.socket, |mut a| async move {
        let mut stream = a.flows(request).await?.into_inner();
        while let Some(item) = stream.next().await {
            let item = item?;
            match output {
                Output::Json => println!("{}", item.json),
                Output::Table => match serde_json::from_str::<serde_json::Value>(&item.json) {
                    Ok(v) => println!("{}", table_line(&v)),
                    Err(_) => println!("{}", item.json),
                },
            }
        }
        Ok(())
    })?;
    Ok(0)
}

/// One event as a line for people, from its JSON form (the contract `-o json` prints).
fn table_line(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    if v["kind"] == "file" {
        let access: Vec<&str> = v["access"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
        format!("{} {:<5} {} file {} pid={} {}", s("time"), s("verdict"), s("workload"), access.join(","), v["pid"], s("comm"))
    } else {
        let remote = v["remote_workload"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
        format!(
            "{} {:<5} {} {} {} {} -> {}{remote} [{}]",
            s("time"),
            s("verdict"),
            s("workload"),
            s("direction"),
            s("protocol"),
            s("src"),
            s("dst"),
            s("policy")
        )
    }
}
