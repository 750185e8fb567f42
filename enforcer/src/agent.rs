//! The daemon: brings the datapath up on the managed cgroup root, keeps the kernel's workload
//! map and the workloads' tags in step with the system, serves the local API, and turns kernel
//! events into logged flow events.
//!
//! Start-up order matters for "no gap": the datapath is loaded first (reusing the pinned maps
//! of its layout, or creating fresh ones while an earlier version's programs keep enforcing
//! from theirs), then the root, the workloads and the compiled policies are written, and only
//! then are its programs attached in place of the earlier ones and the agent reports itself
//! live.

pub mod flowlog;
pub mod flows;
pub mod metrics;
mod notify;
pub mod observe;
mod policies;
mod state;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use enforcer_common::{Verdict, identity::PENDING};

pub use state::State;

use crate::{
    api,
    config::{AgentDown, Config, Posture},
    datapath::{self, Datapath, DatapathError},
    identity::{WorkloadInfo, aws, cgroup, enrol::Changes, watch::CgroupWatcher},
    profile::KeyError,
};

/// Fallback rescan period, also the period at which system tags are refreshed. New and
/// removed cgroups and changes in `policy_dir` are noticed at once through inotify.
const RESCAN_INTERVAL: Duration = Duration::from_millis(500);

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The cgroup root is unusable.
    #[error("cgroup root {path}: {source}")]
    Cgroup {
        /// The configured root.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The policy directory cannot be watched.
    #[error("policy_dir {path}: {source}")]
    PolicyDir {
        /// The configured directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel side failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// A network enforcement point could not attach: running would enforce nothing.
    #[error("network enforcement could not attach: {0}")]
    NetworkDown(String),
    /// The host key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The API socket could not be set up.
    #[error("API socket {path}: {source}")]
    Socket {
        /// The configured socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `[cluster]` configuration cannot be used.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The metrics address could not be bound.
    #[error("metrics_addr {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The flow log could not be opened.
    #[error("flow_log {path}: {source}")]
    FlowLog {
        /// The configured file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A thread of the agent could not be started.
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
    /// Reading kernel events failed.
    #[error("reading kernel events: {0}")]
    Events(std::io::Error),
}

/// Kernel verdict for a configured posture.
#[must_use]
pub fn verdict(p: Posture) -> Verdict {
    match p {
        Posture::Allow => Verdict::Allow,
        Posture::Deny => Verdict::Deny,
        Posture::Audit => Verdict::Audit,
    }
}

/// A started agent.
pub struct Agent {
    state: Arc<Mutex<State>>,
    /// Decisions of the fanotify fallback, when it runs.
    file_events: Option<tokio::sync::mpsc::Receiver<enforcer_common::FileEvent>>,
    /// Beats while the agent lives; dropping the agent stops it.
    _heartbeat: HeartbeatThread,
}

/// The thread that keeps the kernel's heartbeat fresh, on its own so that no lock or busy
/// runtime of the agent can make it look dead.
struct HeartbeatThread {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HeartbeatThread {
    fn start(mut heartbeat: datapath::Heartbeat) -> Result<Self, AgentError> {
        heartbeat.beat()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let period = Duration::from_nanos(enforcer_common::workload::HEARTBEAT_INTERVAL_NS);
        let thread = std::thread::Builder::new()
            .name("heartbeat".to_owned())
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Err(error) = heartbeat.beat() {
                        tracing::error!(%error, "writing the heartbeat");
                    }
                    std::thread::sleep(period);
                }
            })
            .map_err(AgentError::Thread)?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for HeartbeatThread {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Agent {
    /// Loads and attaches the datapath on `config.cgroup_root` (created if missing), loads the
    /// host key and enrols the workloads below the root.
    ///
    /// # Errors
    /// [`AgentError`] when the root, the datapath or the key cannot be brought up.
    pub fn start(config: Config) -> Result<Self, AgentError> {
        let root = config.cgroup_root.clone();
        let cg_err = |source| AgentError::Cgroup { path: root.clone(), source };
        let mount = cgroup::v2_mount().map_err(cg_err)?;
        let level = cgroup::level(&mount, &root).map_err(cg_err)?;
        std::fs::create_dir_all(&root).map_err(cg_err)?;
        let root_id = cgroup::id(&root).map_err(cg_err)?;

        let mut datapath =
            Datapath::open(&datapath::Options {
                bpffs_dir: config.bpffs_dir.clone(),
                cgroup_root: root.clone(),
                max_workloads: config.max_workloads,
            })?;
        // Beat before choosing the fail mode, so `open` never sees a stale heartbeat of ours.
        let heartbeat = HeartbeatThread::start(datapath.take_heartbeat()?)?;
        datapath.set_fail_open(config.on_agent_down == AgentDown::Open)?;
        // The root's own entry is what a not-yet-enrolled cgroup below it resolves to.
        datapath.set_workload(root_id, state::entry(&config, PENDING))?;
        datapath.set_root(root_id, level)?;
        let mut state = State::new(config, datapath, mount)?;
        state.reconcile()?;
        state.prune(root_id)?;
        // The maps hold this agent's state: now its programs replace any earlier agent's.
        state.datapath.attach();
        let down: Vec<String> = state
            .datapath
            .network_down()
            .map(|p| format!("{}: {}", p.hook, p.error.as_deref().unwrap_or_default()))
            .collect();
        if !down.is_empty() {
            return Err(AgentError::NetworkDown(down.join("; ")));
        }
        // Without BPF LSM, files are enforced by answering fanotify permission events.
        let file_events = state.start_file_fallback();
        Ok(Self { state: Arc::new(Mutex::new(state)), file_events, _heartbeat: heartbeat })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Rescans the cgroup tree and writes what changed to the kernel.
    ///
    /// # Errors
    /// When the root cannot be read or a map write fails.
    pub fn reconcile(&self) -> Result<Changes, AgentError> {
        self.lock().reconcile()
    }

    /// The enrolled workload `name`, if any.
    #[must_use]
    pub fn workload(&self, name: &str) -> Option<WorkloadInfo> {
        self.lock().workloads().into_iter().find(|w| w.name == name)
    }

    /// Serves until `shutdown` resolves: the local API, workload enrolment (inotify plus a
    /// periodic rescan that also refreshes tags) and flow events. The pinned datapath keeps
    /// enforcing after this returns.
    ///
    /// # Errors
    /// When the socket cannot be bound, or rescanning or reading events fails.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let (config, ring, names, log, observations) = {
            let mut s = self.lock();
            (s.config.clone(), s.datapath.take_events()?, Arc::clone(&s.names), Arc::clone(&s.events), Arc::clone(&s.observations))
        };
        let listener =
            api::server::bind(&config.socket).map_err(|source| AgentError::Socket { path: config.socket.clone(), source })?;
        let mut watcher = CgroupWatcher::new(&config.cgroup_root)
            .map_err(|source| AgentError::Cgroup { path: config.cgroup_root.clone(), source })?;
        let mut policy_watch = policies::watch::PolicyDirWatcher::new(&config.policy_dir)
            .map_err(|source| AgentError::PolicyDir { path: config.policy_dir.clone(), source })?;
        let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let api_task = tokio::spawn(api::server::serve(listener, Arc::clone(&self.state), async {
            let _ = api_stopped.await;
        }));
        let metrics = if config.metrics_addr.is_empty() {
            None
        } else {
            let listener = tokio::net::TcpListener::bind(&config.metrics_addr)
                .await
                .map_err(|source| AgentError::Metrics { addr: config.metrics_addr.clone(), source })?;
            self.lock().metrics_addr = listener.local_addr().ok();
            Some(tokio::spawn(metrics::serve(listener, Arc::clone(&self.state))))
        };
        let flow_log = if config.flow_log.is_empty() {
            None
        } else {
            let path = PathBuf::from(&config.flow_log);
            Some(flowlog::FlowLog::open(&path, config.flow_log_max_bytes).map_err(|source| AgentError::FlowLog { path, source })?)
        };
        let reader = tokio::spawn(flows::read(ring, self.file_events.take(), names, log, flow_log, observations));
        let aws = tokio::spawn(ec2_identity(config.imds_url.clone(), Arc::clone(&self.state)));
        let cluster = match &config.cluster {
            Some(c) => Some(serve_cluster(c.listen, &self.state).await?),
            None => None,
        };
        {
            let s = self.lock();
            let degraded: Vec<&str> = s.datapath.points().iter().filter(|p| !p.attached()).map(|p| p.hook).collect();
            tracing::info!(
                not_attached = ?degraded,
                cgroup_root = %config.cgroup_root.display(),
                socket = %config.socket.display(),
                workloads = s.workloads().len(),
                "enforcement live"
            );
        }
        notify::notify("READY=1\nSTATUS=enforcement live");
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(RESCAN_INTERVAL);
        let mut rewatch_failed = false;
        let result = loop {
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                changed = watcher.changed() => {
                    if let Err(source) = changed {
                        break Err(AgentError::Cgroup { path: config.cgroup_root.clone(), source });
                    }
                    if let Err(e) = self.reconcile() { break Err(e); }
                }
                changed = policy_watch.changed() => {
                    if let Err(source) = changed {
                        break Err(AgentError::PolicyDir { path: config.policy_dir.clone(), source });
                    }
                    self.lock().reload_policies();
                }
                _ = tick.tick() => {
                    if let Err(e) = self.reconcile() { break Err(e); }
                    match policy_watch.rewatch(&config.policy_dir) {
                        Err(error) if !rewatch_failed => {
                            rewatch_failed = true;
                            tracing::warn!(%error, policy_dir = %config.policy_dir.display(), "cannot watch the policy directory; changes are seen at the next rescan");
                        }
                        Err(_) => {}
                        Ok(()) => rewatch_failed = false,
                    }
                }
            }
        };
        notify::notify("STOPPING=1");
        let _ = stop_api.send(());
        let _ = api_task.await;
        reader.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        aws.abort();
        if let Some((server, exchange)) = cluster {
            server.abort();
            exchange.abort();
        }
        let _ = std::fs::remove_file(&config.socket);
        tracing::info!(
            bpffs_dir = %config.bpffs_dir.display(),
            "agent stopping; the pinned datapath keeps enforcing (`enforcer uninstall` removes it)"
        );
        result
    }
}

/// Serves `PeerExchange` on `listen` and starts asking the peers; returns both tasks.
async fn serve_cluster(
    listen: std::net::SocketAddr,
    state: &Arc<Mutex<State>>,
) -> Result<(tokio::task::JoinHandle<Result<(), tonic::transport::Error>>, tokio::task::JoinHandle<()>), AgentError> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| AgentError::Cluster(format!("[cluster] listen {listen}: {e}")))?;
    let server = tonic::transport::Server::builder()
        .add_service(crate::api::proto::peer_exchange_server::PeerExchangeServer::new(crate::cluster::service::Service::new(
            Arc::clone(state),
        )))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    Ok((tokio::spawn(server), tokio::spawn(exchange_with_peers(Arc::clone(state)))))
}

/// How often the agent exchanges profiles with its peers: changes reach them within this.
const PEER_EXCHANGE_INTERVAL: Duration = Duration::from_millis(500);

/// Asks every peer for its certificate and profiles every [`PEER_EXCHANGE_INTERVAL`], all at
/// once, and hands the round to the state.
async fn exchange_with_peers(state: Arc<Mutex<State>>) {
    let lock = || state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut tick = tokio::time::interval(PEER_EXCHANGE_INTERVAL);
    loop {
        tick.tick().await;
        let addrs = lock().peer_addrs();
        let mut round = tokio::task::JoinSet::new();
        for addr in addrs {
            round.spawn(async move {
                let result = crate::cluster::service::fetch(&addr).await;
                (addr, result)
            });
        }
        let results = round.join_all().await;
        lock().cluster_round(results);
    }
}

/// How long to wait before asking IMDS again after a failure, and between re-checks.
const IMDS_RETRY: Duration = Duration::from_mins(5);
const IMDS_RECHECK: Duration = Duration::from_hours(1);

/// Keeps the host's verified EC2 identity in the state: one attempt, then a re-check every
/// hour (every five minutes while it fails). Without IMDS the agent runs without `@aws:*`
/// tags and `status` says why.
async fn ec2_identity(url: String, state: Arc<Mutex<State>>) {
    let set = |tags, status: String| state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).set_aws(tags, status);
    if url.is_empty() {
        set(crate::identity::Tags::new(), "disabled (imds_url is empty)".to_owned());
        return;
    }
    let certs = match aws::TrustedCerts::aws() {
        Ok(c) => c,
        Err(error) => {
            set(crate::identity::Tags::new(), format!("unavailable: shipped AWS certificates: {error}"));
            return;
        }
    };
    let imds = match aws::Imds::new(&url) {
        Ok(i) => i,
        Err(error) => {
            set(crate::identity::Tags::new(), format!("unavailable: {error}"));
            return;
        }
    };
    loop {
        let wait = match aws::fetch_identity(&imds, &certs).await {
            Ok(id) => {
                tracing::info!(account = %id.account_id, region = %id.region, instance = %id.instance_id, "EC2 identity verified");
                let status = format!("verified: account {}, region {}, instance {}", id.account_id, id.region, id.instance_id);
                set(id.tags(), status);
                IMDS_RECHECK
            }
            Err(error) => {
                tracing::warn!(%error, "no verified EC2 identity; running without @aws tags");
                set(crate::identity::Tags::new(), format!("unavailable: {error}; retrying every {}s", IMDS_RETRY.as_secs()));
                IMDS_RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Removes everything the agent pinned under `bpffs_dir`.
///
/// # Errors
/// When the pin tree exists but cannot be removed.
pub fn uninstall(bpffs_dir: &Path) -> std::io::Result<bool> {
    datapath::uninstall(bpffs_dir)
}
