//! The agent's state, shared by the run loop and the local API: enrolled workloads and their
//! tags, the datapath, the host key and the profiles it signed.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use enforcer_common::{
    Workload,
    workload::{WORKLOAD_F_LOG_ALLOWED, WORKLOAD_F_OBSERVE},
};

use super::{
    AgentError,
    flows::{EventLog, SharedNames},
    observe::{self, Observations},
    policies::{PolicyStore, Trigger},
    verdict,
};
use crate::{
    api::{ApiError, proto},
    config::Config,
    datapath::{Datapath, FileEnforcement},
    identity::{
        Enrolment, Tags, WorkloadInfo, addresses, cgroup,
        container::{self, RuntimeRoots},
        enrol::{Changes, LabelError},
        system::{self, ExeHashes, HostFacts},
    },
    policy::compile::{self, Compiled, Direction, Endpoint},
    profile::{self, HostKey, Profile, PublicKey, SignedProfile},
    cluster::{
        self, Membership,
        peers::{Peers, Remote},
    },
};
use enforcer_common::identity::{FIRST_CIDR, FIRST_REMOTE};

/// Entries of the generation not in force removed per rescan: a few milliseconds of map
/// writes, so a large policy's leftovers are gone within seconds without holding the state
/// for long at once.
const TRIM_PER_RESCAN: usize = 20_000;

/// Most labels one `label` request may assign.
const MAX_LABELS: usize = 64;

/// File in `state_dir` holding labels assigned with `enforcer label`.
const LABELS_FILE: &str = "labels.json";


/// Everything the agent knows and owns.
pub struct State {
    pub(super) config: Config,
    pub(super) datapath: Datapath,
    enrolment: Enrolment,
    host: HostFacts,
    /// Host-wide verified tags (EC2 identity), and what `status` says about them.
    pub(super) aws_tags: Tags,
    pub(super) aws_status: String,
    hashes: ExeHashes,
    /// The cgroup v2 mount, to name cgroups as container runtimes do.
    mount: PathBuf,
    runtimes: RuntimeRoots,
    /// Container tags by workload, with the container id they belong to.
    containers: HashMap<String, (String, Tags)>,
    key: HostKey,
    profiles: HashMap<String, SignedProfile>,
    pub(super) names: SharedNames,
    pub(super) events: Arc<EventLog>,
    policies: PolicyStore,
    compiled: Compiled,
    addresses: HashMap<String, Vec<IpAddr>>,
    /// Workloads, tags or addresses changed since the last compile.
    dirty: bool,
    last_apply: String,
    apply_error: Option<String>,
    started: Instant,
    /// The last compile and the last compile-and-write.
    compile_time: std::time::Duration,
    apply_time: std::time::Duration,
    applies: u64,
    apply_failures: u64,
    /// Where the metrics are served, once bound.
    pub(super) metrics_addr: Option<std::net::SocketAddr>,
    /// Identity across hosts, with `[cluster]`.
    cluster: Option<ClusterState>,
    /// Observed workloads and what they did (shared with the event reader).
    pub(super) observations: Arc<std::sync::Mutex<Observations>>,
}

/// This agent in its cluster: its certificate and keys, and what its peers said.
struct ClusterState {
    membership: Membership,
    peers: Peers,
    /// The key epoch written to the kernel.
    epoch: u64,
}

impl State {
    /// State over a started datapath; restores labels assigned by an earlier run.
    ///
    /// # Errors
    /// When the host key cannot be loaded or created.
    pub(super) fn new(config: Config, datapath: Datapath, mount: PathBuf) -> Result<Self, AgentError> {
        let key = HostKey::load_or_create(&config.state_dir)?;
        let cluster = match &config.cluster {
            Some(c) => {
                let membership = Membership::load(c, &config.state_dir, &key, profile::now()).map_err(AgentError::Cluster)?;
                let addrs: Vec<String> = c.peers.iter().map(ToString::to_string).collect();
                let peers = Peers::new(membership.trust.clone(), membership.cert.agent_id, &addrs);
                tracing::info!(name = %membership.cert.name, agent_id = membership.cert.agent_id, peers = addrs.len(), "cluster member");
                Some(ClusterState { membership, peers, epoch: 0 })
            }
            None => None,
        };
        let mut datapath = datapath;
        datapath.cluster.set_agent_id(cluster.as_ref().map_or(0, |c| c.membership.cert.agent_id))?;
        let runtimes = RuntimeRoots { docker: config.docker_root.clone(), containerd: config.containerd_root.clone() };
        let mut enrolment = Enrolment::new(&config.cgroup_root, &config.workloads);
        // A previous agent's numbering stays: the pinned rules are keyed by it.
        enrolment.adopt(datapath.workloads()?.into_iter().map(|(cgroup_id, w)| (cgroup_id, w.identity)));
        if let Some(assigned) = load_labels(&config.state_dir.join(LABELS_FILE)) {
            enrolment.restore_assigned(assigned);
        }
        Ok(Self {
            datapath,
            enrolment,
            host: HostFacts::read(),
            aws_tags: Tags::new(),
            aws_status: "not checked yet".to_owned(),
            hashes: ExeHashes::default(),
            mount,
            runtimes,
            containers: HashMap::new(),
            key,
            profiles: HashMap::new(),
            names: SharedNames::default(),
            events: Arc::default(),
            policies: PolicyStore::new(&config.policy_dir, &config.state_dir),
            compiled: Compiled::default(),
            addresses: HashMap::new(),
            dirty: true,
            last_apply: "never".to_owned(),
            apply_error: None,
            started: Instant::now(),
            compile_time: std::time::Duration::ZERO,
            apply_time: std::time::Duration::ZERO,
            applies: 0,
            apply_failures: 0,
            metrics_addr: None,
            cluster,
            observations: Arc::new(std::sync::Mutex::new(Observations::load(&config.state_dir))),
            config,
        })
    }

    /// Starts the fanotify file fallback when `lsm/file_open` did not attach (and the config
    /// allows it), and puts the compiled file rules in force there. Returns its events.
    pub(super) fn start_file_fallback(&mut self) -> Option<tokio::sync::mpsc::Receiver<enforcer_common::FileEvent>> {
        let settings = self.config.file_fallback.then(|| crate::datapath::fanotify::Settings {
            timeout: std::time::Duration::from_millis(self.config.file_timeout_ms),
            timeout_verdict: verdict(self.config.file_timeout_verdict),
        });
        match self.datapath.start_file_fallback(&self.mount, &self.config.cgroup_root, settings) {
            Ok(Some(events)) => {
                self.recompile();
                Some(events)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::error!(%error, "file enforcement unavailable: neither BPF LSM nor fanotify");
                None
            }
        }
    }

    /// Writes the token state: pairwise keys of the current epoch, peers' addresses and the
    /// identities of verified remote workloads.
    fn write_cluster(&mut self, remotes: &[Remote]) -> Result<(), crate::datapath::DatapathError> {
        let Some(c) = &mut self.cluster else { return Ok(()) };
        let now = profile::now();
        c.epoch = cluster::keys::epoch_at(now);
        self.datapath.cluster.set_peer_keys(&c.peers.kernel_keys(&c.membership.exchange, now))?;
        self.datapath.cluster.set_peer_addrs(&c.peers.kernel_addrs())?;
        self.datapath.cluster.set_remote_ids(&remotes.iter().map(|r| (r.key, r.identity)).collect())
    }

    /// Takes the outcome of one round of exchanges with the peers, drops expired profiles and
    /// moves to a new key epoch when one began; recompiles when anything changed.
    pub(super) fn cluster_round(&mut self, results: Vec<(String, Result<proto::ExchangeReply, String>)>) {
        let Some(c) = &mut self.cluster else { return };
        let now = profile::now();
        let mut changed = false;
        for (addr, result) in results {
            match result {
                Ok(reply) => {
                    if c.peers.accept(&addr, &reply.certificate, &reply.profiles, now) {
                        tracing::info!(peer = %addr, "peer profiles changed");
                        changed = true;
                    }
                    if let Some(e) = &c.peers.all().get(&addr).and_then(|p| p.error.clone()) {
                        tracing::warn!(peer = %addr, error = %e, "peer refused in part");
                    }
                }
                Err(error) => {
                    if c.peers.all().get(&addr).is_some_and(|p| p.error.as_ref() != Some(&error)) {
                        tracing::warn!(peer = %addr, %error, "peer unreachable");
                    }
                    c.peers.fail(&addr, error);
                }
            }
        }
        changed |= c.peers.expire(now);
        changed |= cluster::keys::epoch_at(now) != c.epoch;
        if changed {
            self.recompile();
        }
    }

    /// The configured peers' addresses.
    pub(super) fn peer_addrs(&self) -> Vec<String> {
        self.cluster.as_ref().map(|c| c.peers.all().keys().cloned().collect()).unwrap_or_default()
    }

    /// What this agent tells a peer: its certificate and every workload's signed profile.
    ///
    /// # Errors
    /// [`ApiError::FailedPrecondition`] without `[cluster]`.
    pub fn exchange_reply(&mut self) -> Result<proto::ExchangeReply, ApiError> {
        let Some(c) = &self.cluster else {
            return Err(ApiError::FailedPrecondition("this agent has no [cluster] configuration".into()));
        };
        let certificate = serde_json::to_string(&c.membership.cert).map_err(|e| ApiError::Internal(e.to_string()))?;
        let names: Vec<String> = self.enrolment.workloads().keys().cloned().collect();
        let mut profiles = Vec::with_capacity(names.len());
        for name in names {
            let signed = self.profile(&name)?;
            profiles.push(serde_json::to_string(&signed).map_err(|e| ApiError::Internal(e.to_string()))?);
        }
        Ok(proto::ExchangeReply { certificate, profiles })
    }

    /// Peers for `enforcer peers`.
    #[must_use]
    pub fn list_peers(&self) -> proto::ListPeersReply {
        let Some(c) = &self.cluster else { return proto::ListPeersReply::default() };
        proto::ListPeersReply {
            name: c.membership.cert.name.clone(),
            agent_id: c.membership.cert.agent_id,
            peers: c
                .peers
                .all()
                .iter()
                .map(|(addr, p)| proto::PeerInfo {
                    address: addr.clone(),
                    name: p.cert.as_ref().map(|x| x.name.clone()).unwrap_or_default(),
                    agent_id: p.cert.as_ref().map_or(0, |x| x.agent_id),
                    epoch: if p.cert.is_some() { c.epoch } else { 0 },
                    profiles: u32::try_from(p.profiles.len()).unwrap_or(u32::MAX),
                    last_ok: p.last_ok.unwrap_or(0),
                    error: p.error.clone().unwrap_or_default(),
                    workloads: p
                        .profiles
                        .iter()
                        .map(|w| proto::RemoteWorkload {
                            name: w.workload.clone(),
                            serial: w.identity,
                            tags: w.tags.clone().into_iter().collect(),
                            expires_at: w.expires_at,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Token counters by name (empty without `[cluster]`).
    fn token_counters(&self) -> std::collections::HashMap<String, u64> {
        if self.cluster.is_none() {
            return std::collections::HashMap::new();
        }
        match self.datapath.cluster.counters() {
            Ok(c) => enforcer_common::token::counter::NAMES.iter().zip(c).map(|(n, v)| ((*n).to_owned(), v)).collect(),
            Err(error) => {
                tracing::warn!(%error, "reading token counters");
                std::collections::HashMap::new()
            }
        }
    }

    fn observing(&self) -> std::sync::MutexGuard<'_, Observations> {
        self.observations.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The kernel entry of workload `w`: the configured postures, and the observe flag while
    /// it is observed.
    fn entry_of(&self, w: &WorkloadInfo) -> Workload {
        let mut e = entry(&self.config, w.identity);
        if self.observing().active(&w.name) {
            e.flags |= WORKLOAD_F_OBSERVE;
        }
        e
    }

    fn rewrite_entry(&mut self, name: &str) -> Result<(), AgentError> {
        if let Some(w) = self.enrolment.workloads().get(name).cloned() {
            let e = self.entry_of(&w);
            self.datapath.set_workload(w.cgroup_id, e)?;
        }
        Ok(())
    }

    /// Starts observing workload `name` (for `duration_seconds`, 0: until stopped): from now
    /// on nothing it does is blocked and everything is recorded.
    ///
    /// # Errors
    /// [`ApiError`] for an unknown workload or a failed kernel write.
    pub fn observe_start(&mut self, name: &str, duration_seconds: u64) -> Result<(), ApiError> {
        const MAX_SECS: u64 = 30 * 24 * 3600;
        if duration_seconds > MAX_SECS {
            return Err(ApiError::InvalidArgument(format!("duration {duration_seconds}s is longer than 30 days")));
        }
        let w = self.find(name)?.name.clone();
        let now = profile::now();
        self.observing().start(&w, now, (duration_seconds > 0).then(|| now + duration_seconds));
        self.rewrite_entry(&w).map_err(|e| ApiError::Internal(e.to_string()))?;
        self.observing().save().map_err(|e| ApiError::Internal(format!("saving observations: {e}")))?;
        tracing::info!(workload = %w, duration_seconds, "observation started: the workload runs in audit mode");
        Ok(())
    }

    /// Stops observing `name`; what was seen stays for `policy suggest`.
    ///
    /// # Errors
    /// [`ApiError`] for an unknown or unobserved workload, or a failed kernel write.
    pub fn observe_stop(&mut self, name: &str) -> Result<(), ApiError> {
        let w = self.find(name)?.name.clone();
        if !self.observing().stop(&w) {
            return Err(ApiError::FailedPrecondition(format!("workload {w:?} is not being observed")));
        }
        self.rewrite_entry(&w).map_err(|e| ApiError::Internal(e.to_string()))?;
        self.observing().save().map_err(|e| ApiError::Internal(format!("saving observations: {e}")))?;
        tracing::info!(workload = %w, "observation stopped: policies apply again");
        Ok(())
    }

    /// Every observation, for `observe status`.
    #[must_use]
    pub fn observe_status(&self) -> proto::ObserveStatusReply {
        let obs = self.observing();
        proto::ObserveStatusReply {
            observations: obs
                .all()
                .iter()
                .map(|(name, o)| proto::ObservationInfo {
                    workload: name.clone(),
                    active: o.active,
                    since: o.since,
                    until: o.until.unwrap_or(0),
                    flows: o.flows.iter().map(|(_, n)| *n).sum(),
                    distinct_flows: u32::try_from(o.flows.len()).unwrap_or(u32::MAX),
                    files: u32::try_from(o.files.len()).unwrap_or(u32::MAX),
                    dropped: o.dropped,
                })
                .collect(),
        }
    }

    /// The policies that allow what workload `name` was seen doing.
    ///
    /// # Errors
    /// [`ApiError`] for an unknown workload, one never observed, or one without labels.
    pub fn suggest(&self, name: &str) -> Result<String, ApiError> {
        let w = self.find(name)?.clone();
        let obs = self.observing();
        let Some(o) = obs.all().get(&w.name) else {
            return Err(ApiError::FailedPrecondition(format!(
                "workload {:?} was never observed; `enforcer observe start {}` first",
                w.name, w.name
            )));
        };
        let subject = observe::stable_labels(&w.labels).unwrap_or_default();
        crate::policy::suggest::suggest(&w.name, &subject, o).map_err(ApiError::FailedPrecondition)
    }

    /// Removes kernel workload entries of cgroups that are no longer enrolled (left by a
    /// previous agent for cgroups removed while it was down), keeping the root's.
    ///
    /// # Errors
    /// When the map cannot be read or written.
    pub(super) fn prune(&mut self, root_id: u64) -> Result<(), AgentError> {
        let enrolled: std::collections::HashSet<u64> = self.enrolment.workloads().values().map(|w| w.cgroup_id).collect();
        for id in self.datapath.workloads()?.into_keys() {
            if id != root_id && !enrolled.contains(&id) {
                self.datapath.remove_workload(id)?;
            }
        }
        Ok(())
    }

    /// Rescans the cgroup tree, writes membership changes to the kernel, and refreshes every
    /// workload's system tags.
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
            self.profiles.remove(&w.name);
            self.containers.remove(&w.name);
            tracing::info!(workload = %w.name, identity = w.identity, "workload removed");
        }
        for w in &changes.added {
            self.datapath.set_workload(w.cgroup_id, self.entry_of(w))?;
            tracing::info!(workload = %w.name, identity = w.identity, cgroup_id = w.cgroup_id, "workload enrolled");
        }
        if !changes.added.is_empty() || !changes.removed.is_empty() {
            self.dirty = true;
            let mut names = self.names.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for w in &changes.removed {
                names.cgroups.remove(&w.cgroup_id);
                names.identities.remove(&w.identity);
            }
            for w in &changes.added {
                names.cgroups.insert(w.cgroup_id, w.name.clone());
                names.identities.insert(w.identity, w.name.clone());
            }
        }
        self.refresh_tags();
        if self.policies.refresh(Trigger::Rescan) {
            self.dirty = true;
        }
        let ended = self.observing().expire(profile::now());
        for name in ended {
            tracing::info!(workload = %name, "observation ended (its duration is up)");
            self.rewrite_entry(&name)?;
        }
        if let Err(error) = self.observing().save() {
            tracing::error!(%error, "saving observations");
        }
        if self.dirty {
            self.recompile();
        }
        match self.datapath.trim_inactive(TRIM_PER_RESCAN) {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "emptied part of the generation not in force"),
            Err(error) => tracing::warn!(%error, "emptying the generation not in force (retried at the next rescan)"),
        }
        Ok(changes)
    }

    /// Reloads `policy_dir` (its watcher saw a change) and puts a changed set in force.
    pub fn reload_policies(&mut self) {
        if self.policies.refresh(Trigger::Watch) {
            self.dirty = true;
        }
        if self.dirty {
            self.recompile();
        }
    }

    /// Compiles the policies in force for the current workloads and writes the result to the
    /// kernel as a whole. A failure leaves the previous state in force, is reported by
    /// `status`, and is retried at the next rescan.
    fn recompile(&mut self) {
        let endpoints: Vec<Endpoint> = self
            .enrolment
            .workloads()
            .values()
            .map(|w| Endpoint {
                identity: w.identity,
                name: w.name.clone(),
                tags: w.tags.clone(),
                addresses: self.addresses.get(&w.name).cloned().unwrap_or_default(),
            })
            .collect();
        let remotes = self.cluster.as_mut().map(|c| c.peers.remotes()).unwrap_or_default();
        let remote_endpoints: Vec<Endpoint> = remotes
            .iter()
            .map(|r| Endpoint { identity: r.identity, name: r.name.clone(), tags: r.tags.clone(), addresses: Vec::new() })
            .collect();
        let started = Instant::now();
        let compiled = compile::compile_with_remotes(&self.policies.network(), &endpoints, &remote_endpoints);
        let files = compile::files::compile_files(&self.policies.file(), &endpoints);
        let compile_time = started.elapsed();
        let applied = self.datapath.apply(&compiled, &files);
        self.compile_time = compile_time;
        self.apply_time = started.elapsed();
        match applied {
            Ok(stats) => {
                self.applies += 1;
                let took = started.elapsed();
                tracing::info!(
                    written = stats.written, removed = stats.removed, generation = stats.generation,
                    compile_us = compile_time.as_micros(), total_us = took.as_micros(),
                    "policy state applied"
                );
                self.last_apply = format!(
                    "{} ({} written, {} removed, {:?})",
                    humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                    stats.written,
                    stats.removed,
                    took
                );
                {
                    let mut names = self.names.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                    names.rules.clone_from(&compiled.rules);
                    names.file_rules.clone_from(&files.rules);
                    names.tags = self.enrolment.workloads().values().map(|w| (w.identity, w.tags.clone())).collect();
                    names.identities.retain(|id, _| *id < FIRST_REMOTE || *id >= FIRST_CIDR);
                    names.remote_tags.clear();
                    for r in &remotes {
                        names.identities.insert(r.identity, r.name.clone());
                        names.remote_tags.insert(r.identity, r.tags.clone());
                    }
                }
                self.compiled = compiled;
                self.apply_error = None;
                self.dirty = false;
                // Remote identities go in after the rules that name them: until then a verified
                // sender is judged unauthenticated, never by a rule meant for someone else.
                if let Err(error) = self.write_cluster(&remotes) {
                    tracing::error!(%error, "writing the cluster's token state failed; retried at the next rescan");
                    self.apply_error = Some(format!("cluster token state: {error}"));
                    self.dirty = true;
                }
            }
            Err(error) => {
                self.apply_failures += 1;
                tracing::error!(%error, "writing policy state failed; the previous state stays in force");
                self.apply_error = Some(error.to_string());
            }
        }
    }

    /// Tags of the container whose cgroup is `dir`, if a runtime knows it. Found metadata is
    /// kept per workload until the container id changes; a lookup that fails is logged once.
    fn container_tags(&mut self, name: &str, dir: &Path) -> Tags {
        let Some(rel) = dir.strip_prefix(&self.mount).ok().and_then(Path::to_str) else {
            return Tags::new();
        };
        let Some(cref) = container::container_id(&format!("/{rel}")) else {
            return Tags::new();
        };
        if let Some((id, tags)) = self.containers.get(name)
            && *id == cref.id
        {
            return tags.clone();
        }
        let tags = match container::lookup(&self.runtimes, &cref) {
            Ok(Some(meta)) => meta.tags(),
            // Not (yet) known to a runtime: look again at the next refresh.
            Ok(None) => return Tags::new(),
            Err(error) => {
                tracing::error!(workload = %name, container = %cref.id, %error, "container metadata unreadable");
                Tags::new()
            }
        };
        self.containers.insert(name.to_owned(), (cref.id, tags.clone()));
        tags
    }

    /// Recomputes system tags from the facts: host, EC2, container runtime, and each
    /// workload's oldest process.
    fn refresh_tags(&mut self) {
        let root = self.enrolment.root().to_owned();
        let names: Vec<String> = self.enrolment.workloads().keys().cloned().collect();
        for name in names {
            let mut tags = self.host.tags();
            tags.extend(self.aws_tags.clone());
            let dir = root.join(&name);
            tags.extend(self.container_tags(&name, &dir));
            let pids = cgroup::procs(&dir).unwrap_or_default();
            let oldest = system::oldest(&pids);
            if let Some(pid) = oldest {
                match system::process(pid, &mut self.hashes) {
                    Ok(facts) => tags.extend(facts.tags()),
                    Err(error) => tracing::debug!(workload = %name, pid, %error, "process facts unavailable"),
                }
            }
            let addresses = oldest.map(addresses::of_process).unwrap_or_default();
            if self.addresses.get(&name) != Some(&addresses) {
                self.addresses.insert(name.clone(), addresses);
                self.dirty = true;
            }
            if self.enrolment.set_facts(&name, tags) {
                self.dirty = true;
                self.profiles.remove(&name);
                if let Some(w) = self.enrolment.workloads().get(&name) {
                    tracing::info!(workload = %name, tags = ?w.tags, "workload tags changed");
                }
            }
        }
    }

    /// The enrolled workloads, by name.
    #[must_use]
    pub fn workloads(&self) -> Vec<WorkloadInfo> {
        self.enrolment.workloads().values().cloned().collect()
    }

    fn find(&self, name: &str) -> Result<&WorkloadInfo, ApiError> {
        crate::identity::validate_workload_name(name)
            .or_else(|e| if name.parse::<u32>().is_ok() { Ok(()) } else { Err(e) })
            .map_err(|e| ApiError::InvalidArgument(format!("workload {name:?}: {e}")))?;
        self.enrolment.find(name).ok_or_else(|| {
            ApiError::NotFound(format!("no workload {name:?} is enrolled; `enforcer workloads` lists them"))
        })
    }

    /// The workload's current signed profile, issuing a new one when none is valid for at
    /// least a tenth of its validity.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] for an unknown workload.
    pub fn profile(&mut self, name: &str) -> Result<SignedProfile, ApiError> {
        let w = self.find(name)?.clone();
        let now = profile::now();
        if let Some(p) = self.profiles.get(&w.name)
            && p.profile.expires_at > now + profile::VALIDITY_SECS / 10
        {
            return Ok(p.clone());
        }
        let addresses = self.addresses.get(&w.name).cloned().unwrap_or_default();
        let signed = SignedProfile::sign(
            Profile {
                workload: w.name.clone(),
                identity: w.identity,
                tags: w.tags.clone(),
                addresses: addresses.iter().map(ToString::to_string).collect(),
                host: self.host.name.clone(),
                key_id: self.key.public().id(),
                issued_at: now,
                expires_at: now + profile::VALIDITY_SECS,
            },
            &self.key,
        );
        self.profiles.insert(w.name.clone(), signed.clone());
        Ok(signed)
    }

    /// Assigns operator labels and persists them.
    ///
    /// # Errors
    /// [`ApiError::InvalidArgument`] for a refused label, [`ApiError::NotFound`] for an
    /// unknown workload, [`ApiError::Internal`] when the labels cannot be saved.
    pub fn label(&mut self, name: &str, labels: &Tags) -> Result<WorkloadInfo, ApiError> {
        if labels.len() > MAX_LABELS {
            return Err(ApiError::InvalidArgument(format!("{} labels in one request, at most {MAX_LABELS}", labels.len())));
        }
        let w = self.find(name)?.name.clone();
        let changed = self.enrolment.assign(&w, labels).map_err(|e| match e {
            LabelError::UnknownWorkload(_) => ApiError::NotFound(e.to_string()),
            LabelError::Invalid(_) | LabelError::Empty => ApiError::InvalidArgument(e.to_string()),
        })?;
        for n in &changed {
            self.profiles.remove(n);
        }
        save_labels(&self.config.state_dir.join(LABELS_FILE), self.enrolment.assigned())
            .map_err(|e| ApiError::Internal(format!("saving labels: {e}")))?;
        tracing::info!(workload = %w, labels = ?labels, "labels assigned");
        self.enrolment.workloads().get(&w).cloned().ok_or_else(|| ApiError::NotFound(w.clone()))
    }

    /// Records the outcome of an EC2 identity check: verified tags, or why there are none.
    pub(super) fn set_aws(&mut self, tags: Tags, status: String) {
        if self.aws_tags != tags {
            self.aws_tags = tags;
            self.refresh_tags();
        }
        self.aws_status = status;
    }

    /// Recent flow events and the live feed.
    #[must_use]
    pub fn event_log(&self) -> Arc<EventLog> {
        Arc::clone(&self.events)
    }

    /// Keys whose profiles this agent trusts (its own, for now).
    #[must_use]
    pub fn trusted_keys(&self) -> Vec<PublicKey> {
        vec![self.key.public()]
    }

    /// Status for `enforcer status`.
    ///
    /// # Errors
    /// When the kernel counters cannot be read.
    pub fn status(&self) -> Result<proto::StatusReply, ApiError> {
        let counters = self.datapath.counters().map_err(|e| ApiError::Internal(e.to_string()))?;
        let c = |k: crate::datapath::KindCounters| proto::Counters {
            allow: k.allow,
            deny: k.deny,
            audit: k.audit,
            lost: k.lost,
        };
        Ok(proto::StatusReply {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            points: self
                .datapath
                .points()
                .iter()
                .map(|p| proto::EnforcementPoint {
                    name: p.name.to_owned(),
                    hook: p.hook.to_owned(),
                    attached: p.attached(),
                    error: p.error.clone().unwrap_or_default(),
                })
                .collect(),
            workloads: u32::try_from(self.enrolment.workloads().len()).unwrap_or(u32::MAX),
            cgroup_root: self.config.cgroup_root.display().to_string(),
            key_id: self.key.public().id(),
            host_tags: self.host.tags().into_iter().chain(self.aws_tags.clone()).collect(),
            aws: self.aws_status.clone(),
            network: Some(c(counters.network)),
            file: Some(c(counters.file)),
            file_enforcement: self.datapath.file_enforcement().to_string(),
            problems: self.problems(),
            policies: u32::try_from(self.policies.count()).unwrap_or(u32::MAX),
            policy_errors: self.policies.errors().iter().cloned().chain(self.apply_error.clone()).collect(),
            last_apply: self.last_apply.clone(),
            events_delivered: self.events.delivered(),
            on_agent_down: format!("{:?}", self.config.on_agent_down).to_lowercase(),
            metrics: self.metrics_addr.map_or_else(|| "disabled".to_owned(), |a| format!("http://{a}/metrics")),
            tokens: self.token_counters(),
        })
    }

    /// What the Prometheus endpoint reports.
    ///
    /// # Errors
    /// When the kernel counters cannot be read.
    pub fn metrics(&self) -> Result<super::metrics::Snapshot, crate::datapath::DatapathError> {
        Ok(super::metrics::Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            counters: self.datapath.counters()?,
            events_delivered: self.events.delivered(),
            workloads: self.enrolment.workloads().len(),
            policies: self.policies.count(),
            policy_errors: self.policies.errors().len() + usize::from(self.apply_error.is_some()),
            compile_seconds: self.compile_time.as_secs_f64(),
            apply_seconds: self.apply_time.as_secs_f64(),
            applies: self.applies,
            apply_failures: self.apply_failures,
            maps: self.datapath.fill_levels(),
            tokens: self.token_counters().into_iter().collect(),
            points: self.datapath.points().iter().map(|p| (p.hook.to_owned(), p.attached())).collect(),
            file_mechanism: match self.datapath.file_enforcement() {
                FileEnforcement::BpfLsm => "bpf-lsm",
                FileEnforcement::Fanotify(_) => "fanotify",
                FileEnforcement::Unavailable(_) => "unavailable",
            }
            .to_owned(),
        })
    }


    /// Enforcement that should be active and is not.
    fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .datapath
            .network_down()
            .map(|p| format!("{} is not attached: {}", p.hook, p.error.as_deref().unwrap_or_default()))
            .collect();
        let files = self.policies.file();
        if let FileEnforcement::Unavailable(why) = self.datapath.file_enforcement()
            && !files.is_empty()
        {
            let names: Vec<&str> = files.iter().map(|p| p.name.as_str()).collect();
            out.push(format!("file policies ({}) are not enforced: file enforcement is unavailable: {why}", names.join(", ")));
        }
        if let Some(e) = &self.apply_error {
            out.push(format!("policy state could not be written: {e}"));
        }
        out
    }

    /// Validates and applies policy files; in force when this returns.
    ///
    /// # Errors
    /// [`ApiError::InvalidArgument`] with every problem (nothing changes then), or
    /// [`ApiError::Internal`] when the kernel could not be written.
    pub fn apply_policies(&mut self, files: &[(String, String)]) -> Result<Vec<String>, ApiError> {
        let names = self.policies.apply(files)?;
        self.recompile();
        match &self.apply_error {
            Some(e) => Err(ApiError::Internal(format!("policies stored but not in force: {e}"))),
            None => Ok(names),
        }
    }

    /// Deletes a policy applied through the API; out of force when this returns.
    ///
    /// # Errors
    /// As [`PolicyStore::delete`], or [`ApiError::Internal`] when the kernel could not be written.
    pub fn delete_policy(&mut self, name: &str) -> Result<(), ApiError> {
        self.policies.delete(name)?;
        self.recompile();
        self.apply_error.as_ref().map_or(Ok(()), |e| Err(ApiError::Internal(e.clone())))
    }

    /// The policies in force and the errors keeping a change out.
    #[must_use]
    pub fn list_policies(&self) -> proto::ListPoliciesReply {
        proto::ListPoliciesReply {
            policies: self.policies.list(),
            errors: self.policies.errors().to_vec(),
        }
    }

    /// What decides a connection of workload `name` with `addr`:`port`/`proto`, answered from
    /// the state in force in the kernel.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] or [`ApiError::InvalidArgument`] for a bad workload or request.
    pub fn explain(&self, req: &proto::ExplainRequest) -> Result<proto::ExplainReply, ApiError> {
        let w = self.find(&req.workload)?;
        let direction = match req.direction.as_str() {
            "egress" => Direction::Egress,
            "ingress" => Direction::Ingress,
            other => return Err(ApiError::InvalidArgument(format!("direction {other:?}: use egress or ingress"))),
        };
        let addr: IpAddr = req
            .address
            .parse()
            .map_err(|_| ApiError::InvalidArgument(format!("{:?} is not an IP address", req.address)))?;
        let proto = match req.protocol.as_str() {
            "tcp" => enforcer_common::net::PROTO_TCP,
            "udp" => enforcer_common::net::PROTO_UDP,
            other => return Err(ApiError::InvalidArgument(format!("protocol {other:?}: use tcp or udp"))),
        };
        let port = u16::try_from(req.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ApiError::InvalidArgument(format!("port {} is not in 1..=65535", req.port)))?;
        let remote = compile::remote_of(&self.compiled, addr);
        let remote_name = self
            .enrolment
            .workloads()
            .values()
            .find(|x| x.identity == remote)
            .map(|x| format!("workload {}", x.name))
            .or_else(|| self.compiled.cidrs.iter().find(|(_, id)| **id == remote).map(|(c, _)| format!("CIDR {}/{}", c.addr, c.len)))
            .unwrap_or_else(|| "world (no single workload or policy CIDR)".to_owned());
        let posture = self.config.default_network;
        let (verdict, reason) = compile::lookup(&self.compiled, w.identity, remote, proto, port, direction.byte()).map_or_else(
            || {
                let why = format!("no policy selects {} for {}: default_network = {posture:?}", w.name, direction.name());
                (Some(verdict(posture)), why)
            },
            |v| {
                let why = compile::describe(&self.compiled, v.rule_id)
                    .map_or_else(|| format!("rule {}", v.rule_id), ToString::to_string);
                (enforcer_common::Verdict::from_u8(v.verdict), why)
            },
        );
        let verdict = match verdict {
            Some(enforcer_common::Verdict::Allow) => "allow",
            Some(enforcer_common::Verdict::Audit) => "audit",
            _ => "deny",
        };
        Ok(proto::ExplainReply { verdict: verdict.to_owned(), reason, remote_identity: remote, remote: remote_name })
    }
}

/// The kernel entry for a workload with `identity` under the configured defaults.
pub(super) fn entry(config: &Config, identity: u32) -> Workload {
    Workload {
        identity,
        egress_default: verdict(config.default_network) as u8,
        ingress_default: verdict(config.default_network) as u8,
        file_default: verdict(config.default_file) as u8,
        flags: if config.log_allowed { WORKLOAD_F_LOG_ALLOWED } else { 0 },
    }
}

fn load_labels(path: &Path) -> Option<BTreeMap<String, Tags>> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(labels) => Some(labels),
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "ignoring unreadable saved labels");
            None
        }
    }
}

fn save_labels(path: &Path, labels: &BTreeMap<String, Tags>) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(labels)?)?;
    std::fs::rename(tmp, path)
}
