//! The CLI's connection to the agent.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use super::proto::agent_client::AgentClient;

/// Why the agent could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the agent at {socket}: {source} (is `enforcer run` running? pass --socket PATH)")]
pub struct ConnectError {
    /// The socket tried.
    pub socket: PathBuf,
    /// Why.
    pub source: tonic::transport::Error,
}

/// Connects to the agent's socket.
///
/// # Errors
/// [`ConnectError`] when nothing answers there.
pub async fn connect(socket: &Path) -> Result<AgentClient<Channel>, ConnectError> {
    let path = socket.to_owned();
    // The URI is required by the API but unused: every connection goes to the socket.
    let channel = Endpoint::from_static("http://enforcer.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|source| ConnectError { socket: socket.to_owned(), source })?;
    Ok(AgentClient::new(channel))
}
