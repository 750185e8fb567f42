//! Reads decisions from the kernel's ring buffer (and from the fanotify fallback), names what decided and who was involved,
//! logs them, and keeps the recent ones for `enforcer flows` (with a live feed for `--follow`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use enforcer_common::FileEvent;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{broadcast, mpsc},
};

use super::{
    AgentError,
    flowlog::FlowLog,
    observe::{self, Observations},
};
use crate::{
    events,
    policy::compile::{RuleInfo, files::FileRuleInfo},
};

/// How many events `enforcer flows` can show without `--follow`.
const KEPT: usize = 10_000;

/// What the reader needs to put names on kernel numbers; the agent updates it as workloads
/// and policies change.
#[derive(Debug, Default)]
pub struct Names {
    /// cgroup id → workload name.
    pub cgroups: HashMap<u64, String>,
    /// identity → workload name (`PEER/NAME` for workloads of other agents).
    pub identities: HashMap<u32, String>,
    /// identity → tags, for workloads of other agents.
    pub remote_tags: HashMap<u32, std::collections::BTreeMap<String, String>>,
    /// identity → tags, for the workloads here.
    pub tags: HashMap<u32, std::collections::BTreeMap<String, String>>,
    /// Network rule id `n` → `rules[n - 1]`.
    pub rules: Vec<RuleInfo>,
    /// File rule id `n` → `file_rules[n - 1]`.
    pub file_rules: Vec<FileRuleInfo>,
}

/// Shared, updatable [`Names`].
pub type SharedNames = Arc<RwLock<Names>>;

/// Recent events and the live feed.
pub struct EventLog {
    recent: Mutex<VecDeque<(SystemTime, events::Event)>>,
    live: broadcast::Sender<events::Event>,
    delivered: std::sync::atomic::AtomicU64,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            recent: Mutex::new(VecDeque::with_capacity(1024)),
            live: broadcast::channel(4096).0,
            delivered: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl EventLog {
    /// Events delivered since the agent started.
    #[must_use]
    pub fn delivered(&self) -> u64 {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn push(&self, e: events::Event) {
        self.delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back((SystemTime::now(), e.clone()));
        let _ = self.live.send(e);
    }

    /// Kept events newer than `since` ago (all with `None`), oldest first.
    #[must_use]
    pub fn recent(&self, since: Option<Duration>) -> Vec<events::Event> {
        let cutoff = since.and_then(|d| SystemTime::now().checked_sub(d));
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(t, _)| cutoff.is_none_or(|c| *t >= c))
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Events from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<events::Event> {
        self.live.subscribe()
    }
}

/// Reads the ring buffer, and the fanotify fallback's decisions when it runs, until the task is
/// dropped.
///
/// # Errors
/// When the ring buffer cannot be polled.
pub(super) async fn read(
    ring: RingBuf<MapData>,
    mut user: Option<mpsc::Receiver<FileEvent>>,
    names: SharedNames,
    log: Arc<EventLog>,
    mut file: Option<FlowLog>,
    observations: Arc<Mutex<Observations>>,
) -> Result<(), AgentError> {
    let clock = events::Clock::now().map_err(|e| AgentError::Events(e.into()))?;
    let handle = |record: &events::Record, file: &mut Option<FlowLog>| {
        let event = describe(record, &clock, &names);
        log_event(&event);
        {
            let mut obs = observations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if event.workload.as_ref().is_some_and(|w| obs.active(w)) {
                let remote = record.header().remote_identity;
                let n = names.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                let peer = n.tags.get(&remote).or_else(|| n.remote_tags.get(&remote)).and_then(observe::stable_labels);
                obs.record(&event, peer);
            }
        }
        if let Some(f) = file
            && let Err(error) = serde_json::to_string(&event).map_err(std::io::Error::from).and_then(|l| f.write(&l))
        {
            tracing::error!(%error, "writing the flow log");
        }
        log.push(event);
    };
    let flush = |file: &mut Option<FlowLog>| {
        if let Some(f) = file
            && let Err(error) = f.flush()
        {
            tracing::error!(%error, "writing the flow log");
        }
    };
    // SAFETY: the ring buffer owns its map fd for its whole life and `as_raw_fd` always
    // returns that same fd, which is what `register_with_interest` requires.
    #[expect(unsafe_code, reason = "tokio's I/O-safety contract for registering a raw fd")]
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| AgentError::Events(e.into()))?;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard.map_err(AgentError::Events)?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    match events::decode(&item) {
                        Ok(record) => handle(&record, &mut file),
                        Err(error) => tracing::error!(%error, "undecodable kernel event"),
                    }
                }
                guard.clear_ready();
                flush(&mut file);
            }
            Some(event) = async { user.as_mut()?.recv().await }, if user.is_some() => {
                handle(&events::Record::File(event), &mut file);
                flush(&mut file);
            }
        }
    }
}

/// A decision record with the names the agent knows: workload, deciding rule, remote.
fn describe(record: &events::Record, clock: &events::Clock, names: &SharedNames) -> events::Event {
    let n = names.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let h = record.header();
    let mut e = events::describe(record, clock, n.cgroups.get(&h.cgroup_id).cloned());
    let index = usize::try_from(h.rule_id).ok().and_then(|i| i.checked_sub(1));
    let decided_by = match (index, record) {
        (None, _) => "default posture".to_owned(),
        (Some(i), events::Record::Network(_)) => n.rules.get(i).map_or_else(|| format!("rule {}", h.rule_id), ToString::to_string),
        (Some(i), events::Record::File(_)) => {
            n.file_rules.get(i).map_or_else(|| format!("rule {}", h.rule_id), ToString::to_string)
        }
    };
    e.annotate(
        decided_by,
        n.identities.get(&h.remote_identity).cloned(),
        n.remote_tags.get(&h.remote_identity).cloned(),
    );
    e
}

fn log_event(e: &events::Event) {
    let workload = e.workload.as_deref().unwrap_or("-");
    match &e.detail {
        events::Detail::Network { direction, protocol, src, dst, remote_identity, policy, remote_workload, .. } => {
            tracing::info!(
                target: "enforcer::flow",
                kind = e.kind, verdict = e.verdict, workload, identity = e.identity,
                pid = e.pid, uid = e.uid, comm = %e.comm, direction, protocol = %protocol,
                src = %src, dst = %dst, remote_identity, remote_workload = ?remote_workload, policy = ?policy,
                "flow"
            );
        }
        events::Detail::File { access, path, policy } => {
            tracing::info!(
                target: "enforcer::flow",
                kind = e.kind, verdict = e.verdict, workload, identity = e.identity,
                pid = e.pid, uid = e.uid, comm = %e.comm, path = %path, access = ?access, policy = ?policy,
                "file"
            );
        }
    }
}
