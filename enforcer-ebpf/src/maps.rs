//! The maps, declared once. Names and capacities must match `enforcer_common::maps`; the agent
//! looks every one of them up by that name when it loads the object and fails loudly if one is
//! missing.
//!
//! All maps are pinned by name, so a restarted agent reuses them and the kernel state survives.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use enforcer_common::{
    AgentConfig, ClusterConfig, FileKey, FileValue, FlowKey, IpcacheKey, NetRuleKey, NetRuleValue, PeerKey, RangeKey,
    RemoteKey, Workload,
    maps::{
        COUNTERS_LEN, EVENTS_BYTES, FILE_RULES_MAX, IPCACHE_MAX, NET_RANGES_MAX, NET_RULES_MAX, PEER_ADDRS_MAX,
        PEER_KEYS_MAX, REMOTE_IDS_MAX, SOCK_SERIALS_MAX, UDP_FLOWS_MAX, WORKLOADS_MAX,
    },
    token::counter,
};

#[map(name = "ENF_WORKLOADS")]
pub static WORKLOADS: HashMap<u64, Workload> = HashMap::pinned(WORKLOADS_MAX, 0);

#[map(name = "ENF_CONFIG")]
pub static CONFIG: Array<AgentConfig> = Array::pinned(1, 0);

#[map(name = "ENF_HEARTBEAT")]
pub static HEARTBEAT: Array<u64> = Array::pinned(1, 0);

#[map(name = "ENF_NET_RULES")]
pub static NET_RULES: HashMap<NetRuleKey, NetRuleValue> = HashMap::pinned(NET_RULES_MAX, 0);

#[map(name = "ENF_NET_RANGES")]
pub static NET_RANGES: LpmTrie<RangeKey, NetRuleValue> = LpmTrie::pinned(NET_RANGES_MAX, 0);

#[map(name = "ENF_FILE_RULES")]
pub static FILE_RULES: LpmTrie<FileKey, FileValue> = LpmTrie::pinned(FILE_RULES_MAX, 0);

/// Not pinned: scratch space only.
#[map(name = "ENF_FILE_SCR")]
pub static FILE_SCRATCH: PerCpuArray<aya_ebpf::maps::lpm_trie::Key<FileKey>> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "ENF_IPCACHE")]
pub static IPCACHE: LpmTrie<IpcacheKey, u32> = LpmTrie::pinned(IPCACHE_MAX, 0);

#[map(name = "ENF_IPCACHE_H")]
pub static IPCACHE_HOSTS: HashMap<IpcacheKey, u32> = HashMap::pinned(IPCACHE_MAX, 0);

#[map(name = "ENF_UDP_FLOWS")]
pub static UDP_FLOWS: LruHashMap<FlowKey, u8> = LruHashMap::pinned(UDP_FLOWS_MAX, 0);

#[map(name = "ENF_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

#[map(name = "ENF_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTERS_LEN, 0);



#[map(name = "ENF_CLUSTER")]
pub static CLUSTER: Array<ClusterConfig> = Array::pinned(1, 0);

#[map(name = "ENF_PEER_KEYS")]
pub static PEER_KEYS: HashMap<u32, PeerKey> = HashMap::pinned(PEER_KEYS_MAX, 0);

#[map(name = "ENF_PEER_ADDRS")]
pub static PEER_ADDRS: HashMap<[u8; 16], u32> = HashMap::pinned(PEER_ADDRS_MAX, 0);

#[map(name = "ENF_REMOTE_IDS")]
pub static REMOTE_IDS: HashMap<RemoteKey, u32> = HashMap::pinned(REMOTE_IDS_MAX, 0);

#[map(name = "ENF_SOCK_SERIAL")]
pub static SOCK_SERIALS: LruHashMap<u64, u32> = LruHashMap::pinned(SOCK_SERIALS_MAX, 0);

#[map(name = "ENF_TOKEN_CNT")]
pub static TOKEN_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(counter::LEN, 0);
