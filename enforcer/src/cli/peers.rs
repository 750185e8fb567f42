//! `enforcer peers`: the peer agents, their certificate names, key epochs and profile counts.

use crate::{
    api::proto,
    cli::{Output, Query, client},
};

/// Prints the peers.
///
/// # Errors
/// When the agent cannot be reached.
pub fn run(q: &Query) -> anyhow::Result<i32> {
    let r: proto::ListPeersReply =
        client::with_agent(&q.socket, |mut a| async move { Ok(a.list_peers(proto::ListPeersRequest {}).await?.into_inner()) })?;
    match q.output {
        Output::Json => {
            let peers: Vec<serde_json::Value> = r
                .peers
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "address": p.address, "name": p.name, "agent_id": p.agent_id, "epoch": p.epoch,
                        "profiles": p.profiles, "last_ok": p.last_ok,
                        "error": if p.error.is_empty() { None } else { Some(&p.error) },
                        "workloads": p.workloads.iter().map(|w| serde_json::json!({
                            "name": w.name, "serial": w.serial, "expires_at": w.expires_at,
                            "tags": w.tags.iter().collect::<std::collections::BTreeMap<_, _>>(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "name": r.name, "agent_id": r.agent_id, "peers": peers }))?);
        }
        Output::Table => {
            if r.name.is_empty() {
                println!("no [cluster] configured: this agent has no peers");
                return Ok(0);
            }
            println!("this agent: {} (agent id {})\n", r.name, r.agent_id);
            let rows: Vec<Vec<String>> = r
                .peers
                .iter()
                .map(|p| {
                    vec![
                        p.address.clone(),
                        if p.name.is_empty() { "-".into() } else { p.name.clone() },
                        p.agent_id.to_string(),
                        p.epoch.to_string(),
                        p.profiles.to_string(),
                        if p.error.is_empty() { "ok".into() } else { p.error.clone() },
                    ]
                })
                .collect();
            client::table(&["PEER", "NAME", "AGENT ID", "KEY EPOCH", "PROFILES", "STATE"], &rows);
        }
    }
    Ok(0)
}
