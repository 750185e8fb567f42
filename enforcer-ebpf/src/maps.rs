//! The maps, declared once. Names and capacities must match `enforcer_common::maps`; the agent
//! looks every one of them up by that name when it loads the object and fails loudly if one is
//! missing.
//!
//! All maps are pinned by name, so a restarted agent reuses them and the kernel state survives.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use enforcer_common::{
    AgentConfig, IpcacheKey, NetRuleKey, NetRuleValue, Workload,
    maps::{COUNTERS_LEN, EVENTS_BYTES, IPCACHE_MAX, NET_RULES_MAX, WORKLOADS_MAX},
};

#[map(name = "ENF_WORKLOADS")]
pub static WORKLOADS: HashMap<u64, Workload> = HashMap::pinned(WORKLOADS_MAX, 0);

#[map(name = "ENF_CONFIG")]
pub static CONFIG: Array<AgentConfig> = Array::pinned(1, 0);

#[map(name = "ENF_NET_RULES")]
pub static NET_RULES: HashMap<NetRuleKey, NetRuleValue> = HashMap::pinned(NET_RULES_MAX, 0);

#[map(name = "ENF_IPCACHE")]
pub static IPCACHE: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(IPCACHE_MAX, 0);

#[map(name = "ENF_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

#[map(name = "ENF_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTERS_LEN, 0);

// The IPCACHE key type in the kernel is `Key<[u8; 16]>` = {prefix_len: u32, data: [u8; 16]},
// which is exactly `IpcacheKey`.
const _: () = assert!(
    core::mem::size_of::<aya_ebpf::maps::lpm_trie::Key<[u8; 16]>>()
        == core::mem::size_of::<IpcacheKey>()
);
