//! `enforcer status`: version, uptime, each enforcement point and its state.

use crate::{
    api::proto,
    cli::{Output, Query, client},
};

/// Prints the agent's status.
///
/// # Errors
/// When the agent cannot be reached.
pub fn run(q: &Query) -> anyhow::Result<i32> {
    let s: proto::StatusReply =
        client::with_agent(&q.socket, |mut a| async move { Ok(a.status(proto::StatusRequest {}).await?.into_inner()) })?;
    match q.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&json(&s))?),
        Output::Table => {
            println!("version       {}", s.version);
            println!("uptime        {}s", s.uptime_seconds);
            println!("cgroup root   {}", s.cgroup_root);
            println!("workloads     {}", s.workloads);
            println!("host key      {}", s.key_id);
            println!("ec2 identity  {}", s.aws);
            println!("files         {}", s.file_enforcement);
            println!("agent down    {} (what the kernel does while no agent runs)", s.on_agent_down);
            println!("metrics       {}", s.metrics);
            println!("events        {} delivered", s.events_delivered);
            if !s.tokens.is_empty() {
                let tokens: std::collections::BTreeMap<_, _> = s.tokens.iter().collect();
                let text: Vec<String> = tokens.iter().map(|(k, v)| format!("{k} {v}")).collect();
                println!("tokens        {}", text.join(", "));
            }
            println!("policies      {} (last applied: {})", s.policies, s.last_apply);
            for e in &s.policy_errors {
                println!("policy error  {e}");
            }
            let rows: Vec<Vec<String>> = s
                .points
                .iter()
                .map(|p| {
                    let state = if p.attached { "attached".to_owned() } else { format!("error: {}", p.error) };
                    vec![p.hook.clone(), state]
                })
                .collect();
            println!();
            client::table(&["ENFORCEMENT POINT", "STATE"], &rows);
            let counters = |name: &str, c: Option<&proto::Counters>| {
                let c = c.copied().unwrap_or_default();
                vec![name.to_owned(), c.allow.to_string(), c.deny.to_string(), c.audit.to_string(), c.lost.to_string()]
            };
            println!();
            client::table(
                &["DECISIONS", "ALLOW", "DENY", "AUDIT", "EVENTS LOST"],
                &[counters("network", s.network.as_ref()), counters("file", s.file.as_ref())],
            );
        }
    }
    for p in &s.problems {
        eprintln!("problem: {p}");
    }
    Ok(i32::from(!s.problems.is_empty()))
}

fn json(s: &proto::StatusReply) -> serde_json::Value {
    let counters = |c: Option<&proto::Counters>| {
        let c = c.copied().unwrap_or_default();
        serde_json::json!({ "allow": c.allow, "deny": c.deny, "audit": c.audit, "lost": c.lost })
    };
    serde_json::json!({
        "version": s.version,
        "uptime_seconds": s.uptime_seconds,
        "cgroup_root": s.cgroup_root,
        "workloads": s.workloads,
        "key_id": s.key_id,
        "host_tags": s.host_tags.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "aws": s.aws,
        "policies": s.policies,
        "policy_errors": s.policy_errors,
        "last_apply": s.last_apply,
        "file_enforcement": s.file_enforcement,
        "on_agent_down": s.on_agent_down,
        "metrics": s.metrics,
        "events_delivered": s.events_delivered,
        "tokens": s.tokens.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "problems": s.problems,
        "enforcement_points": s.points.iter().map(|p| serde_json::json!({
            "name": p.name, "hook": p.hook, "attached": p.attached,
            "error": if p.error.is_empty() { None } else { Some(&p.error) },
        })).collect::<Vec<_>>(),
        "counters": { "network": counters(s.network.as_ref()), "file": counters(s.file.as_ref()) },
    })
}
