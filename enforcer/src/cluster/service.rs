//! The peer API: serving this agent's certificate and signed profiles on `[cluster] listen`,
//! and fetching a peer's.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tonic::{Request, Response, Status, transport::Endpoint};

use crate::{
    agent::State,
    api::proto::{self, peer_exchange_client::PeerExchangeClient, peer_exchange_server},
};

/// How long one exchange with a peer may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);

/// The peer service over the agent's state.
pub struct Service {
    state: Arc<Mutex<State>>,
}

impl Service {
    /// A service answering from `state`.
    #[must_use]
    pub fn new(state: Arc<Mutex<State>>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl peer_exchange_server::PeerExchange for Service {
    async fn exchange(&self, _: Request<proto::ExchangeRequest>) -> Result<Response<proto::ExchangeReply>, Status> {
        let reply = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).exchange_reply()?;
        Ok(Response::new(reply))
    }
}

/// Asks the peer at `addr` for its certificate and profiles.
///
/// # Errors
/// A sentence saying why the peer did not answer.
pub async fn fetch(addr: &str) -> Result<proto::ExchangeReply, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("peer address {addr}: {e}"))?
        .connect_timeout(EXCHANGE_TIMEOUT)
        .timeout(EXCHANGE_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| format!("connecting to {addr}: {e}"))?;
    let reply = PeerExchangeClient::new(channel)
        .exchange(proto::ExchangeRequest {})
        .await
        .map_err(|s| format!("{addr}: {}", s.message()))?;
    Ok(reply.into_inner())
}
