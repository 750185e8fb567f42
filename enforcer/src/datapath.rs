//! The datapath: loads the kernel programs, attaches and pins them, and applies state to maps.
//!
//! It decides nothing: callers hand it compiled entries and it writes them. Everything it loads
//! is pinned under `bpffs_dir` (`maps/`, `progs/`, `links/`), so enforcement outlives the agent
//! process; a new agent reuses the pinned maps and swaps in its links over the old ones.

mod attach;
pub mod btf;
pub mod cluster;
pub mod bpffs;
pub mod fanotify;
pub mod layout;
pub mod probe;
pub mod tables;

use std::{
    collections::BTreeMap,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
};
use enforcer_common::{
    AgentConfig, NetRuleKey, NetRuleValue, Workload,
    event::KIND_COUNT,
    maps::{self, COUNTER_LOST, COUNTER_STRIDE},
};
use serde::Serialize;

pub use attach::EnforcementPoint;
pub use tables::ApplyStats;
use tables::Tables;

use crate::policy::compile::{Compiled, files::FileCompiled};

/// The kernel object built from `enforcer-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-ebpf"));

/// A datapath operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The bpf filesystem directory could not be prepared.
    #[error("bpffs directory {path}: {source}")]
    Bpffs {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The object shipped in this binary cannot be read.
    #[error("{0}")]
    Object(String),
    /// The object could not be loaded (maps created or reused).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// The object lacks a map the agent needs: the object and the agent are out of step.
    #[error("the eBPF object has no map {name}")]
    MissingMap {
        /// Map name.
        name: &'static str,
    },
    /// A map operation failed.
    #[error("map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Why.
        source: MapError,
    },
    /// The managed cgroup root is unusable.
    #[error("cgroup root {path}: {source}")]
    Cgroup {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What the datapath needs to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where programs, links and maps are pinned.
    pub bpffs_dir: PathBuf,
    /// The managed cgroup root, where the network programs are attached.
    pub cgroup_root: PathBuf,
    /// Capacity of the workload map.
    pub max_workloads: u32,
}

/// Decision counters summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindCounters {
    /// Operations allowed.
    pub allow: u64,
    /// Operations denied.
    pub deny: u64,
    /// Operations that would have been denied and were let through.
    pub audit: u64,
    /// Events dropped because the ring buffer was full.
    pub lost: u64,
}

/// Counters of both kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Network decisions.
    pub network: KindCounters,
    /// File decisions.
    pub file: KindCounters,
}

/// The loaded, attached and pinned kernel side.
/// How long after a generation flip the generation given up is left alone: decisions read
/// the generation once and finish within microseconds.
pub const FLIP_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

pub struct Datapath {
    ebpf: Ebpf,
    points: Vec<EnforcementPoint>,
    workloads: HashMap<MapData, u64, Workload>,
    config: Array<MapData, AgentConfig>,
    tables: Tables,
    counters: PerCpuArray<MapData, u64>,
    /// File enforcement by fanotify, where `lsm/file_open` is not attached.
    file_fallback: Option<fanotify::FileFallback>,
    /// Why the fallback is not running, when it was wanted or disabled.
    file_fallback_error: Option<String>,
    /// What [`Datapath::attach`] needs, until it has run.
    pending_attach: Option<PendingAttach>,
    max_workloads: u32,
    /// When this agent last flipped the generation (see [`Datapath::trim_inactive`]).
    flipped_at: Option<std::time::Instant>,
    /// Identity across hosts: token keys, peer addresses, remote identities.
    pub cluster: cluster::ClusterMaps,
}

struct PendingAttach {
    layout: bpffs::Layout,
    cgroup: std::fs::File,
    file_offsets: Option<String>,
}

/// How files are enforced on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileEnforcement {
    /// `lsm/file_open` is attached.
    BpfLsm,
    /// The fanotify fallback answers opens; the text says what it marks.
    Fanotify(String),
    /// Nothing enforces file policy; the text says why.
    Unavailable(String),
}

impl std::fmt::Display for FileEnforcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BpfLsm => f.write_str("bpf-lsm"),
            Self::Fanotify(detail) => f.write_str(detail),
            Self::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::MissingMap { name })?;
    T::try_from(map).map_err(|source| DatapathError::Map { name, source })
}

impl Datapath {
    /// Loads the object, reusing the pinned maps of its layout (and the state in them) or
    /// creating fresh ones beside another layout's. Nothing is attached yet: an earlier
    /// agent's programs keep enforcing until [`Datapath::attach`], which the agent calls once
    /// the maps hold its state.
    ///
    /// # Errors
    /// When bpffs cannot be prepared, the object cannot be loaded or a map is missing.
    pub fn open(opts: &Options) -> Result<Self, DatapathError> {
        let capacities = [(maps::WORKLOADS, opts.max_workloads)];
        let maps_layout = layout::id(OBJECT, &capacities).map_err(DatapathError::Object)?;
        let layout = bpffs::Layout::prepare(&opts.bpffs_dir, &maps_layout)
            .map_err(|source| DatapathError::Bpffs { path: opts.bpffs_dir.clone(), source })?;
        let reused = layout.has_maps();
        // The file program reaches into `struct file`: its member offsets come from the running
        // kernel's BTF. Without them the file program is not attached (and says why).
        let offsets = btf::kernel_member_offset("file", "f_path")
            .and_then(|p| Ok((p, btf::kernel_member_offset("file", "f_mode")?, btf::kernel_member_offset("file", "f_flags")?)));
        let (f_path, f_mode, f_flags) = offsets.clone().unwrap_or((0, 0, 0));
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(layout.maps())
            .override_global("F_PATH_OFFSET", &f_path, true)
            .override_global("F_MODE_OFFSET", &f_mode, true)
            .override_global("F_FLAGS_OFFSET", &f_flags, true)
            .map_max_entries(maps::WORKLOADS, opts.max_workloads)
            .load(OBJECT)?;
        tracing::info!(layout = %maps_layout, reused, "datapath maps {}", if reused { "reused" } else { "created" });
        let cgroup = std::fs::File::open(&opts.cgroup_root)
            .map_err(|source| DatapathError::Cgroup { path: opts.cgroup_root.clone(), source })?;
        let tables = Tables::adopt(
            take_map(&mut ebpf, maps::NET_RULES)?,
            take_map(&mut ebpf, maps::NET_RANGES)?,
            take_map(&mut ebpf, maps::IPCACHE)?,
            take_map(&mut ebpf, maps::IPCACHE_HOSTS)?,
            take_map(&mut ebpf, maps::FILE_RULES)?,
        )?;
        let cluster = cluster::ClusterMaps {
            config: take_map(&mut ebpf, maps::CLUSTER)?,
            keys: take_map(&mut ebpf, maps::PEER_KEYS)?,
            addrs: take_map(&mut ebpf, maps::PEER_ADDRS)?,
            remote: take_map(&mut ebpf, maps::REMOTE_IDS)?,
            counters: take_map(&mut ebpf, maps::TOKEN_COUNTERS)?,
        };
        Ok(Self {
            workloads: take_map(&mut ebpf, maps::WORKLOADS)?,
            config: take_map(&mut ebpf, maps::CONFIG)?,
            tables,
            counters: take_map(&mut ebpf, maps::COUNTERS)?,
            points: Vec::new(),
            ebpf,
            file_fallback: None,
            file_fallback_error: None,
            pending_attach: Some(PendingAttach { layout, cgroup, file_offsets: offsets.err() }),
            max_workloads: opts.max_workloads,
            flipped_at: None,
            cluster,
        })
    }

    /// Attaches the network programs to the cgroup root and the file program to its LSM hook,
    /// replacing an earlier agent's links without a gap, pins programs and links, and removes
    /// maps of other layouts (no program reads them any more). A no-op the second time.
    ///
    /// An enforcement point that cannot attach does not fail the call: it is recorded with its
    /// error in [`Datapath::points`] so `status` reports it.
    pub fn attach(&mut self) {
        let Some(p) = self.pending_attach.take() else { return };
        self.points = attach::all(&mut self.ebpf, p.cgroup.as_fd(), &p.layout, p.file_offsets);
        match p.layout.remove_other_maps() {
            Ok(removed) if !removed.is_empty() => tracing::info!(?removed, "maps of other layouts removed"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "removing maps of other layouts"),
        }
    }

    fn agent_config(&self) -> Result<AgentConfig, DatapathError> {
        self.config.get(&0, 0).map_err(|source| DatapathError::Map { name: maps::CONFIG, source })
    }

    /// The generation of compiled state in force.
    ///
    /// # Errors
    /// When the config map cannot be read.
    pub fn generation(&self) -> Result<u8, DatapathError> {
        Ok(self.agent_config()?.generation)
    }

    /// Writes `compiled` into the generation not in force, then makes it the one in force:
    /// every decision sees either the previous state or this one as a whole.
    ///
    /// # Errors
    /// When a map write fails; the previous state then stays in force.
    pub fn apply(&mut self, compiled: &Compiled, files: &FileCompiled) -> Result<ApplyStats, DatapathError> {
        let mut cfg = self.agent_config()?;
        let next = (cfg.generation ^ 1) & 1;
        let mut stats = ApplyStats { generation: next, ..ApplyStats::default() };
        self.tables.fill(next, compiled, files, &mut stats)?;
        cfg.generation = next;
        self.config.set(0, cfg, 0).map_err(|source| DatapathError::Map { name: maps::CONFIG, source })?;
        self.flipped_at = Some(std::time::Instant::now());
        if let Some(f) = &self.file_fallback {
            f.update(files);
        }
        Ok(stats)
    }

    /// Removes up to `budget` entries of the generation not in force, once no decision can
    /// still be reading it ([`FLIP_GRACE`] after the flip; a program run takes microseconds).
    /// Called on every rescan, so the next change writes into an emptied generation instead of
    /// first deleting the whole previous policy (100k entries: about a second) on its own
    /// latency. Returns how many were removed.
    ///
    /// # Errors
    /// When the config map cannot be read or a removal fails; what the generation holds is
    /// then still known (a superset), so nothing is lost.
    pub fn trim_inactive(&mut self, budget: usize) -> Result<usize, DatapathError> {
        if self.flipped_at.is_some_and(|t| t.elapsed() < FLIP_GRACE) {
            return Ok(0);
        }
        let inactive = (self.generation()? ^ 1) & 1;
        self.tables.trim(inactive, budget)
    }

    /// What the generation in force holds (for `explain` and tests).
    ///
    /// # Errors
    /// When the config map cannot be read.
    pub fn in_force(&self) -> Result<&tables::Mirror, DatapathError> {
        Ok(self.tables.mirror(self.generation()?))
    }

    /// Each enforcement point and whether it is live.
    #[must_use]
    pub fn points(&self) -> &[EnforcementPoint] {
        &self.points
    }

    /// The network enforcement points (the cgroup programs) that are not attached: with any,
    /// the agent would enforce nothing it promises.
    pub fn network_down(&self) -> impl Iterator<Item = &EnforcementPoint> {
        self.points.iter().filter(|p| p.hook.starts_with("cgroup") && !p.attached())
    }

    /// Starts the fanotify fallback when `lsm/file_open` is not attached (a no-op when it is),
    /// seeded with the workload entries in the kernel map; `None` settings: the fallback is
    /// disabled by configuration. Returns the receiving end of its decision events.
    ///
    /// # Errors
    /// Why fanotify is unavailable; file enforcement is then [`FileEnforcement::Unavailable`]
    /// with that reason.
    pub fn start_file_fallback(
        &mut self,
        cgroup_mount: &Path,
        cgroup_root: &Path,
        settings: Option<fanotify::Settings>,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<enforcer_common::FileEvent>>, String> {
        if self.file_enforcement() == FileEnforcement::BpfLsm || self.file_fallback.is_some() {
            return Ok(None);
        }
        let Some(settings) = settings else {
            self.file_fallback_error = Some("the fanotify fallback is disabled (file_fallback = false)".to_owned());
            return Ok(None);
        };
        let started = fanotify::FileFallback::start(cgroup_mount, cgroup_root, settings).and_then(|(fallback, events)| {
            for (id, w) in self.workloads().map_err(|e| e.to_string())? {
                fallback.set_workload(id, Some(w));
            }
            Ok((fallback, events))
        });
        match started {
            Ok((fallback, events)) => {
                self.file_fallback = Some(fallback);
                Ok(Some(events))
            }
            Err(e) => {
                self.file_fallback_error = Some(format!("fanotify: {e}"));
                Err(e)
            }
        }
    }

    /// How files are enforced.
    #[must_use]
    pub fn file_enforcement(&self) -> FileEnforcement {
        if let Some(f) = &self.file_fallback {
            return FileEnforcement::Fanotify(f.describe());
        }
        let lsm = match self.points.iter().find(|p| p.name == "file_open") {
            Some(p) if p.attached() => return FileEnforcement::BpfLsm,
            Some(p) => p.error.clone().unwrap_or_else(|| "not attached".to_owned()),
            None => "no file program".to_owned(),
        };
        FileEnforcement::Unavailable(match &self.file_fallback_error {
            Some(fallback) => format!("{lsm}; {fallback}"),
            None => lsm,
        })
    }

    /// The event ring buffer, for one reader.
    ///
    /// # Errors
    /// When it was taken already.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        take_map(&mut self.ebpf, maps::EVENTS)
    }

    /// Tells the kernel which cgroup is the managed root.
    ///
    /// # Errors
    /// When the map write fails.
    pub fn set_root(&mut self, root_cgroup_id: u64, root_level: u32) -> Result<(), DatapathError> {
        let cfg = AgentConfig { root_cgroup_id, root_level, ..self.agent_config()? };
        self.config.set(0, cfg, 0).map_err(|source| DatapathError::Map { name: maps::CONFIG, source })
    }

    /// What the pinned datapath does while no agent beats: `true` enforces nothing until an
    /// agent is back (`on_agent_down = "open"`), `false` keeps enforcing the last state.
    ///
    /// # Errors
    /// When the map write fails.
    pub fn set_fail_open(&mut self, open: bool) -> Result<(), DatapathError> {
        let cfg = AgentConfig { fail_open: u8::from(open), ..self.agent_config()? };
        self.config.set(0, cfg, 0).map_err(|source| DatapathError::Map { name: maps::CONFIG, source })
    }

    /// The heartbeat map, for the thread that keeps it fresh.
    ///
    /// # Errors
    /// When it was taken already.
    pub fn take_heartbeat(&mut self) -> Result<Heartbeat, DatapathError> {
        take_map(&mut self.ebpf, maps::HEARTBEAT).map(Heartbeat)
    }

    /// Enrols (or updates) the workload whose cgroup id is `cgroup_id`.
    ///
    /// # Errors
    /// When the map write fails (for instance, the map is full).
    pub fn set_workload(&mut self, cgroup_id: u64, w: Workload) -> Result<(), DatapathError> {
        self.workloads
            .insert(cgroup_id, w, 0)
            .map_err(|source| DatapathError::Map { name: maps::WORKLOADS, source })?;
        if let Some(f) = &self.file_fallback {
            f.set_workload(cgroup_id, Some(w));
        }
        Ok(())
    }

    /// Removes a workload's entry; a missing entry is not an error.
    ///
    /// # Errors
    /// When the map operation fails otherwise.
    pub fn remove_workload(&mut self, cgroup_id: u64) -> Result<(), DatapathError> {
        ignore_missing(self.workloads.remove(&cgroup_id), maps::WORKLOADS)?;
        if let Some(f) = &self.file_fallback {
            f.set_workload(cgroup_id, None);
        }
        Ok(())
    }

    /// All workload entries in the kernel.
    ///
    /// # Errors
    /// When iteration fails.
    pub fn workloads(&self) -> Result<BTreeMap<u64, Workload>, DatapathError> {
        self.workloads
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|source| DatapathError::Map { name: maps::WORKLOADS, source })
    }

    /// Writes one exact-port rule straight into the generation in force, outside any compiled
    /// state (for tests of the kernel side; the agent uses [`Datapath::apply`]).
    ///
    /// # Errors
    /// When the map write fails.
    pub fn set_net_rule(&mut self, key: NetRuleKey, value: NetRuleValue) -> Result<(), DatapathError> {
        let key = NetRuleKey { generation: self.generation()?, ..key };
        self.tables.rules.insert(key, value, 0).map_err(|source| DatapathError::Map { name: maps::NET_RULES, source })
    }

    /// How full each pinned map is: (name, entries, capacity).
    #[must_use]
    pub fn fill_levels(&self) -> Vec<(&'static str, usize, u32)> {
        let workloads = self.workloads.keys().flatten().count();
        let mut out = vec![(maps::WORKLOADS, workloads, self.max_workloads)];
        out.extend(self.tables.fill_levels());
        out
    }

    /// Decision counters, summed over CPUs.
    ///
    /// # Errors
    /// When a counter cannot be read.
    pub fn counters(&self) -> Result<Counters, DatapathError> {
        const _: () = assert!(KIND_COUNT == 2, "Counters has one field per event kind");
        let read = |kind: u8| -> Result<KindCounters, DatapathError> {
            let mut slots = [0u64; COUNTER_STRIDE];
            for (slot, total) in slots.iter_mut().enumerate() {
                #[expect(clippy::cast_possible_truncation, reason = "COUNTER_STRIDE is 4")]
                let index = maps::counter_index(kind, slot as u8);
                let per_cpu = self
                    .counters
                    .get(&index, 0)
                    .map_err(|source| DatapathError::Map { name: maps::COUNTERS, source })?;
                *total = per_cpu.iter().sum();
            }
            Ok(KindCounters { lost: slots[COUNTER_LOST], allow: slots[1], deny: slots[2], audit: slots[3] })
        };
        let mut file = read(enforcer_common::event::KIND_FILE)?;
        if let Some(f) = &self.file_fallback {
            let user = f.counters();
            file = KindCounters {
                allow: file.allow + user.allow,
                deny: file.deny + user.deny,
                audit: file.audit + user.audit,
                lost: file.lost + user.lost,
            };
        }
        Ok(Counters { network: read(enforcer_common::event::KIND_NETWORK)?, file })
    }
}

/// The agent's heartbeat in the kernel: the time of its last beat, which the programs compare
/// with theirs when `on_agent_down = "open"`.
pub struct Heartbeat(Array<MapData, u64>);

impl Heartbeat {
    /// Records "alive now".
    ///
    /// # Errors
    /// When the clock or the map write fails.
    pub fn beat(&mut self) -> Result<(), DatapathError> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_err(|e| DatapathError::Map { name: maps::HEARTBEAT, source: MapError::SyscallError(aya::sys::SyscallError { call: "clock_gettime", io_error: e.into() }) })?;
        let ns = u64::try_from(std::time::Duration::from(now).as_nanos()).unwrap_or(u64::MAX);
        self.0.set(0, ns, 0).map_err(|source| DatapathError::Map { name: maps::HEARTBEAT, source })
    }
}

fn ignore_missing(r: Result<(), MapError>, name: &'static str) -> Result<(), DatapathError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(source) => Err(DatapathError::Map { name, source }),
    }
}

/// Removes everything pinned under `bpffs_dir`: links detach, programs unload, maps go away.
///
/// # Errors
/// When the directory exists but cannot be removed.
pub fn uninstall(bpffs_dir: &Path) -> std::io::Result<bool> {
    bpffs::remove_all(bpffs_dir)
}
