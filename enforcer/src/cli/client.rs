//! What the query verbs share: a runtime, a connection, and readable gRPC errors.

use std::path::Path;

use anyhow::anyhow;
use tonic::transport::Channel;

use crate::api::{client, proto::agent_client::AgentClient};

/// Runs `f` with a connection to the agent at `socket`, on a small runtime.
///
/// # Errors
/// When the agent cannot be reached or the call fails; gRPC errors keep their message.
pub fn with_agent<T, F>(socket: &Path, f: impl FnOnce(AgentClient<Channel>) -> F) -> anyhow::Result<T>
where
    F: Future<Output = Result<T, tonic::Status>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let agent = client::connect(socket).await?;
        f(agent).await.map_err(|s| anyhow!("{}: {}", code_text(s.code()), s.message()))
    })
}

fn code_text(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => "permission denied",
        tonic::Code::Unavailable => "agent unavailable",
        _ => "agent error",
    }
}

/// Prints rows under `headers` in aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}
