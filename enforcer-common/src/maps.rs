//! Names and capacities of every map, declared once for both sides.
//!
//! Names are at most 15 bytes so `bpftool map` shows them whole (`BPF_OBJ_NAME_LEN` is 16).

/// cgroup id (`u64`) → [`crate::Workload`].
pub const WORKLOADS: &str = "ENF_WORKLOADS";
/// Capacity of [`WORKLOADS`].
pub const WORKLOADS_MAX: u32 = 65_536;

/// One-element array holding [`crate::AgentConfig`].
pub const CONFIG: &str = "ENF_CONFIG";

/// One-element array: the agent's last heartbeat, `CLOCK_MONOTONIC` nanoseconds (`u64`).
pub const HEARTBEAT: &str = "ENF_HEARTBEAT";

/// One-element array holding [`crate::ClusterConfig`] (this agent's id for tokens).
pub const CLUSTER: &str = "ENF_CLUSTER";

/// Peer agent id (`u32`) → [`crate::PeerKey`]: pairwise token keys.
pub const PEER_KEYS: &str = "ENF_PEER_KEYS";
/// Capacity of [`PEER_KEYS`].
pub const PEER_KEYS_MAX: u32 = 4096;

/// Address (IPv4-mapped for IPv4, 16 bytes) → agent id (`u32`) of the peer whose workloads
/// have it: whom a SYN to that address is stamped for.
pub const PEER_ADDRS: &str = "ENF_PEER_ADDRS";
/// Capacity of [`PEER_ADDRS`].
pub const PEER_ADDRS_MAX: u32 = 65_536;

/// [`crate::RemoteKey`] → local identity (`u32`) of a verified remote workload.
pub const REMOTE_IDS: &str = "ENF_REMOTE_IDS";
/// Capacity of [`REMOTE_IDS`].
pub const REMOTE_IDS_MAX: u32 = 65_536;

/// LRU hash: socket cookie (`u64`) → profile serial (`u32`) of the workload that connected it,
/// for stamping its SYN (retransmissions run outside the workload's context).
pub const SOCK_SERIALS: &str = "ENF_SOCK_SERIAL";
/// Capacity of [`SOCK_SERIALS`].
pub const SOCK_SERIALS_MAX: u32 = 65_536;

/// Per-CPU array of token counters, indexed by [`crate::token::counter`].
pub const TOKEN_COUNTERS: &str = "ENF_TOKEN_CNT";

/// [`crate::NetRuleKey`] → [`crate::NetRuleValue`].
pub const NET_RULES: &str = "ENF_NET_RULES";
/// Capacity of [`NET_RULES`].
pub const NET_RULES_MAX: u32 = 262_144;

/// LPM trie [`crate::RangeKey`] → [`crate::NetRuleValue`].
pub const NET_RANGES: &str = "ENF_NET_RANGES";
/// Capacity of [`NET_RANGES`].
pub const NET_RANGES_MAX: u32 = 262_144;

/// LRU hash [`crate::FlowKey`] → `u8` (unused): UDP exchanges the policy allowed.
pub const UDP_FLOWS: &str = "ENF_UDP_FLOWS";
/// Capacity of [`UDP_FLOWS`].
pub const UDP_FLOWS_MAX: u32 = 65_536;

/// LPM trie [`crate::FileKey`] → [`crate::FileValue`].
pub const FILE_RULES: &str = "ENF_FILE_RULES";
/// Capacity of [`FILE_RULES`].
pub const FILE_RULES_MAX: u32 = 65_536;

/// One-element per-CPU array: scratch space for building a [`crate::FileKey`].
pub const FILE_SCRATCH: &str = "ENF_FILE_SCR";

/// LPM trie [`crate::IpcacheKey`] → remote identity (`u32`): the prefixes shorter than a
/// whole address (CIDR blocks).
pub const IPCACHE: &str = "ENF_IPCACHE";
/// Capacity of [`IPCACHE`] and of [`IPCACHE_HOSTS`].
pub const IPCACHE_MAX: u32 = 65_536;
/// Hash [`crate::IpcacheKey`] → remote identity (`u32`): whole addresses (a workload's, a
/// `/32` or `/128` rule). Looked up before [`IPCACHE`]: a whole address is the longest prefix
/// there is, and one hash probe costs far less than a trie walk.
pub const IPCACHE_HOSTS: &str = "ENF_IPCACHE_H";

/// Ring buffer of [`crate::NetEvent`] and [`crate::FileEvent`] records.
pub const EVENTS: &str = "ENF_EVENTS";
/// Size of [`EVENTS`] in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 22;

/// Per-CPU array of decision counters, indexed by [`counter_index`].
pub const COUNTERS: &str = "ENF_COUNTERS";
/// Number of counter slots: for each event kind, one per verdict plus one for lost events.
#[expect(clippy::cast_possible_truncation, reason = "a handful of slots")]
pub const COUNTERS_LEN: u32 = (crate::event::KIND_COUNT * COUNTER_STRIDE) as u32;

/// Slots per event kind in [`COUNTERS`]: `Verdict::Allow`, `Deny`, `Audit` (1..=3) and
/// [`COUNTER_LOST`] (0).
pub const COUNTER_STRIDE: usize = 4;
/// Offset, within a kind's slots, of the count of events dropped because the ring buffer was full.
pub const COUNTER_LOST: usize = 0;

/// The counter slot for `kind` (an `event::KIND_*`) and `slot` (a verdict value or
/// [`COUNTER_LOST`]).
#[must_use]
#[expect(clippy::cast_possible_truncation, reason = "COUNTER_STRIDE is 4")]
pub const fn counter_index(kind: u8, slot: u8) -> u32 {
    (kind as u32 - 1) * COUNTER_STRIDE as u32 + slot as u32
}
