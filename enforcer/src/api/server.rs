//! Serving the local API from the agent's state.

use std::{
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use std::{pin::Pin, time::Duration};

use tokio::{
    net::{UnixListener, UnixStream},
    sync::broadcast::error::RecvError,
};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{
    ApiError,
    proto::{self, agent_server},
};
use crate::agent::State;

/// The gRPC service over the shared agent state.
pub struct Service {
    state: Arc<Mutex<State>>,
}

impl Service {
    /// A service answering from `state`.
    #[must_use]
    pub fn new(state: Arc<Mutex<State>>) -> Self {
        Self { state }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn workload(w: &crate::identity::WorkloadInfo) -> proto::Workload {
    proto::Workload {
        name: w.name.clone(),
        cgroup_id: w.cgroup_id,
        identity: w.identity,
        tags: w.tags.clone().into_iter().collect(),
    }
}

#[tonic::async_trait]
impl agent_server::Agent for Service {
    async fn status(&self, _: Request<proto::StatusRequest>) -> Result<Response<proto::StatusReply>, Status> {
        Ok(Response::new(self.state().status()?))
    }

    async fn list_workloads(
        &self,
        _: Request<proto::ListWorkloadsRequest>,
    ) -> Result<Response<proto::ListWorkloadsReply>, Status> {
        let workloads = self.state().workloads().iter().map(workload).collect();
        Ok(Response::new(proto::ListWorkloadsReply { workloads }))
    }

    async fn get_profile(
        &self,
        req: Request<proto::GetProfileRequest>,
    ) -> Result<Response<proto::GetProfileReply>, Status> {
        let name = req.into_inner().workload;
        let signed = self.state().profile(&name)?;
        let json = serde_json::to_string_pretty(&signed).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Response::new(proto::GetProfileReply { json }))
    }

    async fn label(&self, req: Request<proto::LabelRequest>) -> Result<Response<proto::LabelReply>, Status> {
        let req = req.into_inner();
        let labels = req.labels.into_iter().collect();
        let w = self.state().label(&req.workload, &labels)?;
        Ok(Response::new(proto::LabelReply { workload: Some(workload(&w)) }))
    }

    async fn apply_policies(&self, req: Request<proto::ApplyRequest>) -> Result<Response<proto::ApplyReply>, Status> {
        let files: Vec<(String, String)> = req.into_inner().files.into_iter().map(|f| (f.name, f.content)).collect();
        let applied = self.state().apply_policies(&files)?;
        Ok(Response::new(proto::ApplyReply { applied }))
    }

    async fn list_policies(
        &self,
        _: Request<proto::ListPoliciesRequest>,
    ) -> Result<Response<proto::ListPoliciesReply>, Status> {
        Ok(Response::new(self.state().list_policies()))
    }

    async fn delete_policy(
        &self,
        req: Request<proto::DeletePolicyRequest>,
    ) -> Result<Response<proto::DeletePolicyReply>, Status> {
        self.state().delete_policy(&req.into_inner().name)?;
        Ok(Response::new(proto::DeletePolicyReply {}))
    }

    type FlowsStream = Pin<Box<dyn Stream<Item = Result<proto::FlowEvent, Status>> + Send>>;

    async fn flows(&self, req: Request<proto::FlowsRequest>) -> Result<Response<Self::FlowsStream>, Status> {
        let req = req.into_inner();
        let log = self.state().event_log();
        // Subscribe before reading the backlog, so nothing falls between the two.
        let mut live = req.follow.then(|| log.subscribe());
        let since = (req.since_seconds > 0).then(|| Duration::from_secs(req.since_seconds));
        let backlog = log.recent(since);
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let json = |e: &crate::events::Event| serde_json::to_string(e).unwrap_or_default();
            for e in &backlog {
                if tx.send(Ok(proto::FlowEvent { json: json(e) })).await.is_err() {
                    return;
                }
            }
            let Some(live) = live.as_mut() else { return };
            loop {
                let item = match live.recv().await {
                    Ok(e) => Ok(proto::FlowEvent { json: json(&e) }),
                    Err(RecvError::Lagged(n)) => Err(Status::data_loss(format!("{n} events were dropped: the client read too slowly"))),
                    Err(RecvError::Closed) => return,
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn observe_start(&self, req: Request<proto::ObserveRequest>) -> Result<Response<proto::ObserveReply>, Status> {
        let req = req.into_inner();
        self.state().observe_start(&req.workload, req.duration_seconds)?;
        Ok(Response::new(proto::ObserveReply {}))
    }

    async fn observe_stop(&self, req: Request<proto::ObserveRequest>) -> Result<Response<proto::ObserveReply>, Status> {
        self.state().observe_stop(&req.into_inner().workload)?;
        Ok(Response::new(proto::ObserveReply {}))
    }

    async fn observe_status(
        &self,
        _: Request<proto::ObserveStatusRequest>,
    ) -> Result<Response<proto::ObserveStatusReply>, Status> {
        Ok(Response::new(self.state().observe_status()))
    }

    async fn suggest_policy(&self, req: Request<proto::SuggestRequest>) -> Result<Response<proto::SuggestReply>, Status> {
        let yaml = self.state().suggest(&req.into_inner().workload)?;
        Ok(Response::new(proto::SuggestReply { yaml }))
    }

    async fn list_peers(&self, _: Request<proto::ListPeersRequest>) -> Result<Response<proto::ListPeersReply>, Status> {
        Ok(Response::new(self.state().list_peers()))
    }

    async fn explain(&self, req: Request<proto::ExplainRequest>) -> Result<Response<proto::ExplainReply>, Status> {
        Ok(Response::new(self.state().explain(&req.into_inner())?))
    }

    async fn trusted_keys(
        &self,
        _: Request<proto::TrustedKeysRequest>,
    ) -> Result<Response<proto::TrustedKeysReply>, Status> {
        let public_keys = self.state().trusted_keys().iter().map(crate::profile::PublicKey::to_text).collect();
        Ok(Response::new(proto::TrustedKeysReply { public_keys }))
    }
}

/// Binds the socket at `path`: its directory is created 0700, a stale socket is replaced, and
/// the socket itself is 0600.
///
/// # Errors
/// When the directory or socket cannot be created.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections from root peers only (checked with `SO_PEERCRED`); others are closed
/// at once and logged.
fn root_peers(listener: UnixListener) -> ReceiverStream<std::io::Result<UnixStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let conn = listener.accept().await;
            let item = match conn {
                Ok((stream, _)) => match stream.peer_cred() {
                    Ok(cred) if cred.uid() == 0 => Ok(stream),
                    Ok(cred) => {
                        tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "refused a non-root API client");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read an API client's credentials; refused");
                        continue;
                    }
                },
                Err(e) => Err(e),
            };
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Serves the API on `listener` until `shutdown` resolves.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: UnixListener,
    state: Arc<Mutex<State>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(agent_server::AgentServer::new(Service::new(state)))
        .serve_with_incoming_shutdown(root_peers(listener), shutdown)
        .await
}
