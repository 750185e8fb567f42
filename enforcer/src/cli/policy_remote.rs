//! `enforcer policy apply|list|delete`: the verbs that talk to the agent. The agent validates
//! again (it trusts no client) and takes the files whole or not at all.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::{
    api::proto,
    cli::{Output, Query, client},
};

/// Sends policy files to the agent; they are in force when this returns 0.
///
/// # Errors
/// When a file cannot be read, the agent cannot be reached, or it rejects the files (every
/// problem is printed, with file, line and field).
pub fn apply(files: &[PathBuf], query: &Query) -> anyhow::Result<i32> {
    let mut request = proto::ApplyRequest::default();
    for f in files {
        let content = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        request.files.push(proto::PolicyFile { name: f.display().to_string(), content });
    }
    let reply = client::with_agent(&query.socket, |mut a| async move { Ok(a.apply_policies(request).await?.into_inner()) })?;
    match query.output {
        Output::Json => println!("{}", serde_json::json!({ "applied": reply.applied })),
        Output::Table => println!("applied: {}", reply.applied.join(", ")),
    }
    Ok(0)
}

/// Lists the policies in force, and errors that keep a change out (exit 1 when there are).
///
/// # Errors
/// When the agent cannot be reached.
pub fn list(query: &Query) -> anyhow::Result<i32> {
    let reply =
        client::with_agent(&query.socket, |mut a| async move { Ok(a.list_policies(proto::ListPoliciesRequest {}).await?.into_inner()) })?;
    match query.output {
        Output::Json => {
            let policies: Vec<_> = reply
                .policies
                .iter()
                .map(|p| serde_json::json!({ "name": p.name, "kind": p.kind, "mode": p.mode, "source": p.source }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "policies": policies, "errors": reply.errors }))?);
        }
        Output::Table => {
            let rows: Vec<Vec<String>> =
                reply.policies.iter().map(|p| vec![p.name.clone(), p.kind.clone(), p.mode.clone(), p.source.clone()]).collect();
            client::table(&["NAME", "KIND", "MODE", "SOURCE"], &rows);
            for e in &reply.errors {
                eprintln!("rejected (previous policies stay in force): {e}");
            }
        }
    }
    Ok(i32::from(!reply.errors.is_empty()))
}

/// Deletes a policy applied through the API; out of force when this returns 0.
///
/// # Errors
/// When the agent cannot be reached or refuses.
pub fn delete(name: &str, query: &Query) -> anyhow::Result<i32> {
    let request = proto::DeletePolicyRequest { name: name.to_owned() };
    client::with_agent(&query.socket, |mut a| async move { Ok(a.delete_policy(request).await?.into_inner()) })?;
    if matches!(query.output, Output::Table) {
        println!("deleted {name}");
    }
    Ok(0)
}

/// Prints the policies suggested for an observed workload.
///
/// # Errors
/// When the agent cannot be reached or refuses (unknown or never observed workload).
pub fn suggest(workload: &str, q: &Query) -> anyhow::Result<i32> {
    let req = proto::SuggestRequest { workload: workload.to_owned() };
    let r = client::with_agent(&q.socket, |mut a| async move { Ok(a.suggest_policy(req).await?.into_inner()) })?;
    print!("{}", r.yaml);
    Ok(0)
}
