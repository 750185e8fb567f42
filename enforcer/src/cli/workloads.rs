//! `enforcer workloads`: enrolled workloads with their identity numbers and tags.

use std::collections::BTreeMap;

use crate::{
    api::proto,
    cli::{Output, Query, client},
};

/// JSON form of one workload.
pub fn json(w: &proto::Workload) -> serde_json::Value {
    serde_json::json!({
        "name": w.name,
        "identity": w.identity,
        "cgroup_id": w.cgroup_id,
        "tags": w.tags.iter().collect::<BTreeMap<_, _>>(),
    })
}

/// Lists the workloads.
///
/// # Errors
/// When the agent cannot be reached.
pub fn run(q: &Query) -> anyhow::Result<i32> {
    let reply = client::with_agent(&q.socket, |mut a| async move {
        Ok(a.list_workloads(proto::ListWorkloadsRequest {}).await?.into_inner())
    })?;
    match q.output {
        Output::Json => {
            let all: Vec<_> = reply.workloads.iter().map(json).collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = reply
                .workloads
                .iter()
                .map(|w| {
                    let tags: Vec<String> =
                        w.tags.iter().collect::<BTreeMap<_, _>>().iter().map(|(k, v)| format!("{k}={v}")).collect();
                    vec![w.name.clone(), w.identity.to_string(), w.cgroup_id.to_string(), tags.join(",")]
                })
                .collect();
            client::table(&["WORKLOAD", "IDENTITY", "CGROUP ID", "TAGS"], &rows);
        }
    }
    Ok(0)
}
