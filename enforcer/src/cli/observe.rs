//! `enforcer observe start|stop|status`: learn what a workload does.
//!
//! While observed, a workload is never blocked (what its policies would deny is audited) and
//! everything it does is summarised; `enforcer policy suggest WORKLOAD` then prints policies
//! allowing exactly that.

use std::time::Duration;

use clap::{Args, Subcommand};

use crate::{
    api::proto,
    cli::{Output, Query, client},
};

/// Arguments of `enforcer observe`.
#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ObserveCommand,
}

/// `observe` subcommands.
#[derive(Debug, Subcommand)]
pub enum ObserveCommand {
    /// Start observing WORKLOAD: nothing it does is blocked, everything is recorded.
    Start {
        /// The workload (cgroup path below the managed root).
        workload: String,
        /// End by itself after this long (`30m`, `2h`); without it, until `observe stop`.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        #[command(flatten)]
        query: Query,
    },
    /// Stop observing WORKLOAD; its policies apply again and what was seen is kept.
    Stop {
        /// The workload.
        workload: String,
        #[command(flatten)]
        query: Query,
    },
    /// Observed workloads and how much was seen.
    Status {
        #[command(flatten)]
        query: Query,
    },
}

/// Runs `enforcer observe`.
///
/// # Errors
/// When the agent cannot be reached or refuses the request.
pub fn run(args: &ObserveArgs) -> anyhow::Result<i32> {
    match &args.command {
        ObserveCommand::Start { workload, duration, query } => {
            let req = proto::ObserveRequest { workload: workload.clone(), duration_seconds: duration.map_or(0, |d| d.as_secs().max(1)) };
            client::with_agent(&query.socket, |mut a| async move { Ok(a.observe_start(req).await?.into_inner()) })?;
            let until = duration.map_or_else(|| "until `enforcer observe stop`".to_owned(), |d| format!("for {}", humantime::format_duration(d)));
            println!("observing {workload} {until}: it runs in audit mode; `enforcer policy suggest {workload}` shows what it did");
        }
        ObserveCommand::Stop { workload, query } => {
            let req = proto::ObserveRequest { workload: workload.clone(), duration_seconds: 0 };
            client::with_agent(&query.socket, |mut a| async move { Ok(a.observe_stop(req).await?.into_inner()) })?;
            println!("stopped observing {workload}; its policies apply again");
        }
        ObserveCommand::Status { query } => {
            let r = client::with_agent(&query.socket, |mut a| async move {
                Ok(a.observe_status(proto::ObserveStatusRequest {}).await?.into_inner())
            })?;
            match query.output {
                Output::Json => {
                    let list: Vec<serde_json::Value> = r
                        .observations
                        .iter()
                        .map(|o| {
                            serde_json::json!({
                                "workload": o.workload, "active": o.active, "since": o.since,
                                "until": (o.until != 0).then_some(o.until), "flows": o.flows,
                                "distinct_flows": o.distinct_flows, "files": o.files, "dropped": o.dropped,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                }
                Output::Table => {
                    let rows: Vec<Vec<String>> = r
                        .observations
                        .iter()
                        .map(|o| {
                            vec![
                                o.workload.clone(),
                                if o.active { "observing".into() } else { "stopped".into() },
                                o.flows.to_string(),
                                o.distinct_flows.to_string(),
                                o.files.to_string(),
                                o.dropped.to_string(),
                            ]
                        })
                        .collect();
                    client::table(&["WORKLOAD", "STATE", "FLOWS", "DISTINCT", "PATHS", "DROPPED"], &rows);
                }
            }
        }
    }
    Ok(0)
}
