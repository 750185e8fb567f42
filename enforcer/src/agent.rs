//! The daemon: brings the datapath up on the managed cgroup root, keeps the kernel's workload
//! map in step with the cgroup tree, and turns kernel events into logged flow events.
//!
//! Start-up order matters for "no gap": the datapath is loaded and attached first (reusing
//! pinned maps, so the previous agent's state keeps applying), then the root and workloads are
//! (re)written, and only then does the agent report itself live.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use enforcer_common::{Verdict, Workload, identity::PENDING, workload::WORKLOAD_F_LOG_ALLOWED};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    config::{Config, Posture},
    datapath::{self, Datapath, DatapathError},
    events,
    identity::{Enrolment, cgroup, enrol::Changes},
};

/// How often the cgroup tree is rescanned for new and removed workloads.
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
    /// The kernel side failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// A network enforcement point could not attach: running would enforce nothing.
    #[error("network enforcement could not attach: {0}")]
    NetworkDown(String),
    /// Reading kernel events failed.
    #[error("reading kernel events: {0}")]
    Events(std::io::Error),
}

/// Kernel verdict byte for a configured posture.
#[must_use]
pub fn verdict(p: Posture) -> Verdict {
    match p {
        Posture::Allow => Verdict::Allow,
        Posture::Deny => Verdict::Deny,
        Posture::Audit => Verdict::Audit,
    }
}

/// A running agent.
pub struct Agent {
    config: Config,
    datapath: Datapath,
    enrolment: Enrolment,
    names: Arc<RwLock<HashMap<u64, String>>>,
}

impl Agent {
    /// Loads and attaches the datapath on `config.cgroup_root` (created if missing) and enrols
    /// the workloads below it.
    ///
    /// # Errors
    /// [`AgentError`] when the root or the datapath cannot be brought up.
    pub fn start(config: Config) -> Result<Self, AgentError> {
        let root = config.cgroup_root.clone();
        let cg_err = |source| AgentError::Cgroup { path: root.clone(), source };
        let mount = cgroup::v2_mount().map_err(cg_err)?;
        let level = cgroup::level(&mount, &root).map_err(cg_err)?;
        std::fs::create_dir_all(&root).map_err(cg_err)?;
        let root_id = cgroup::id(&root).map_err(cg_err)?;

        let mut datapath =
            Datapath::open(&datapath::Options { bpffs_dir: config.bpffs_dir.clone(), cgroup_root: root.clone() })?;
        let down: Vec<String> = datapath
            .points()
            .iter()
            .filter(|p| p.hook.starts_with("cgroup/") && !p.attached())
            .map(|p| format!("{}: {}", p.hook, p.error.as_deref().unwrap_or_default()))
            .collect();
        if !down.is_empty() {
            return Err(AgentError::NetworkDown(down.join("; ")));
        }
        // The root's own entry is what a not-yet-enrolled cgroup below it resolves to.
        datapath.set_workload(root_id, entry(&config, PENDING))?;
        datapath.set_root(root_id, level)?;
        let enrolment = Enrolment::new(&root, &config.workloads);
        let mut agent = Self { config, datapath, enrolment, names: Arc::default() };
        agent.reconcile()?;
        Ok(agent)
    }

    /// The datapath, for callers that apply compiled state.
    pub fn datapath(&mut self) -> &mut Datapath {
        &mut self.datapath
    }

    /// The enrolled workloads.
    #[must_use]
    pub fn enrolment(&self) -> &Enrolment {
        &self.enrolment
    }

    /// Rescans the cgroup tree and writes what changed to the kernel.
    ///
    /// # Errors
    /// When the root cannot be read or a map write fails.
    pub fn reconcile(&mut self) -> Result<Changes, AgentError> {
        let changes = self
            .enrolment
            .rescan()
            .map_err(|source| AgentError::Cgroup { path: self.config.cgroup_root.clone(), source })?;
        for w in &changes.removed {
            self.datapath.remove_workload(w.cgroup_id)?;
            tracing::info!(workload = %w.name, identity = w.identity, "workload removed");
        }
        for w in &changes.added {
            self.datapath.set_workload(w.cgroup_id, entry(&self.config, w.identity))?;
            tracing::info!(workload = %w.name, identity = w.identity, cgroup_id = w.cgroup_id, labels = ?w.labels, "workload enrolled");
        }
        if !changes.added.is_empty() || !changes.removed.is_empty() {
            let mut names = self.names.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for w in &changes.removed {
                names.remove(&w.cgroup_id);
            }
            for w in &changes.added {
                names.insert(w.cgroup_id, w.name.clone());
            }
        }
        Ok(changes)
    }

    /// Serves until `shutdown` resolves: rescans workloads and logs kernel events. The pinned
    /// datapath keeps enforcing after this returns.
    ///
    /// # Errors
    /// When rescanning or reading events fails.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let ring = self.datapath.take_events()?;
        let reader = tokio::spawn(read_events(ring, Arc::clone(&self.names)));
        let degraded: Vec<&str> =
            self.datapath.points().iter().filter(|p| !p.attached()).map(|p| p.hook).collect();
        tracing::info!(
            not_attached = ?degraded,
            cgroup_root = %self.config.cgroup_root.display(),
            bpffs_dir = %self.config.bpffs_dir.display(),
            workloads = self.enrolment.workloads().len(),
            "enforcement live"
        );
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(RESCAN_INTERVAL);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => { self.reconcile()?; }
            }
        }
        reader.abort();
        tracing::info!(
            bpffs_dir = %self.config.bpffs_dir.display(),
            "agent stopping; the pinned datapath keeps enforcing (`enforcer uninstall` removes it)"
        );
        Ok(())
    }
}

/// The kernel entry for a workload with `identity` under the configured defaults.
fn entry(config: &Config, identity: u32) -> Workload {
    Workload {
        identity,
        egress_default: verdict(config.default_network) as u8,
        ingress_default: verdict(config.default_network) as u8,
        file_default: verdict(config.default_file) as u8,
        flags: if config.log_allowed { WORKLOAD_F_LOG_ALLOWED } else { 0 },
    }
}

async fn read_events(ring: RingBuf<MapData>, names: Arc<RwLock<HashMap<u64, String>>>) -> Result<(), AgentError> {
    let clock = events::Clock::now().map_err(|e| AgentError::Events(e.into()))?;
    // SAFETY: the ring buffer owns its map fd for its whole life and `as_raw_fd` always
    // returns that same fd, which is what `register_with_interest` requires.
    #[expect(unsafe_code, reason = "tokio's I/O-safety contract for registering a raw fd")]
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| AgentError::Events(e.into()))?;
    loop {
        let mut guard = fd.readable_mut().await.map_err(AgentError::Events)?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            match events::decode(&item) {
                Ok(record) => {
                    let cgroup_id = record.header().cgroup_id;
                    let workload = names
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get(&cgroup_id)
                        .cloned();
                    log_event(&events::describe(&record, &clock, workload));
                }
                Err(error) => tracing::error!(%error, "undecodable kernel event"),
            }
        }
        guard.clear_ready();
    }
}

fn log_event(e: &events::Event) {
    let workload = e.workload.as_deref().unwrap_or("-");
    match &e.detail {
        events::Detail::Network { direction, protocol, src, dst, remote_identity, rule_id } => {
            tracing::info!(
                target: "enforcer::flow",
                kind = e.kind, verdict = e.verdict, workload, identity = e.identity,
                pid = e.pid, uid = e.uid, comm = %e.comm, direction, protocol = %protocol,
                src = %src, dst = %dst, remote_identity, rule_id = ?rule_id,
                "flow"
            );
        }
        events::Detail::File { access } => {
            tracing::info!(
                target: "enforcer::flow",
                kind = e.kind, verdict = e.verdict, workload, identity = e.identity,
                pid = e.pid, uid = e.uid, comm = %e.comm, access = ?access,
                "file"
            );
        }
    }
}

/// Removes everything the agent pinned under `bpffs_dir`.
///
/// # Errors
/// When the pin tree exists but cannot be removed.
pub fn uninstall(bpffs_dir: &Path) -> std::io::Result<bool> {
    datapath::uninstall(bpffs_dir)
}
