//! `enforcer label WORKLOAD KEY=VALUE...`: operator-assigned labels.

use std::collections::HashMap;

use anyhow::bail;
use clap::Args;

use crate::{
    api::proto,
    cli::{Output, Query, client, workloads},
};

/// Arguments of `enforcer label`.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// Workload name (cgroup path below the managed root) or identity number.
    pub workload: String,
    /// Labels to assign, as KEY=VALUE. Keys starting with `@` are system tags and are refused.
    #[arg(required = true)]
    pub labels: Vec<String>,
    #[command(flatten)]
    query: Query,
}

/// Assigns the labels.
///
/// # Errors
/// When an argument is not KEY=VALUE, or the agent refuses the labels.
pub fn run(args: &LabelArgs) -> anyhow::Result<i32> {
    let mut labels = HashMap::new();
    for pair in &args.labels {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("{pair:?} is not KEY=VALUE");
        };
        labels.insert(k.to_owned(), v.to_owned());
    }
    let workload = args.workload.clone();
    let reply = client::with_agent(&args.query.socket, |mut a| async move {
        Ok(a.label(proto::LabelRequest { workload, labels }).await?.into_inner())
    })?;
    let w = reply.workload.unwrap_or_default();
    match args.query.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&workloads::json(&w))?),
        Output::Table => println!("labelled {} (identity {})", w.name, w.identity),
    }
    Ok(0)
}
