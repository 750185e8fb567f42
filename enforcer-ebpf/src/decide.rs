//! The network verdict: a few map lookups over what the agent compiled.
//!
//! The remote's identity comes from the ipcache: whole addresses in a hash, CIDR blocks in a
//! trie. Most specific first: the exact port with the remote identity (hash), the port blocks with
//! the remote identity (LPM, whose 0-bit block is that pair's default), then the same two with
//! any remote, and finally the workload's posture. The generation byte read once per decision
//! keeps every lookup in one policy version.

use aya_ebpf::maps::lpm_trie::Key;
use enforcer_common::{
    IpcacheKey, NetRuleKey, NetRuleValue, RangeKey, Verdict, Workload,
    identity::{ANY, WORLD},
    net::{DIR_EGRESS, PROTO_ANY, PROTO_TCP, PROTO_UDP, RANGE_FIXED_BITS},
};

use crate::maps::{CONFIG, IPCACHE, IPCACHE_HOSTS, NET_RANGES, NET_RULES};

/// The generation in force.
#[inline(always)]
pub fn generation() -> u8 {
    CONFIG.get(0).map_or(0, |c| c.generation)
}

/// The identity of remote address `addr` (IPv4-mapped for IPv4), or `WORLD`: the whole
/// address first (a hash probe), then the longest CIDR block holding it (a trie walk).
#[inline(always)]
pub fn remote_identity(generation: u8, addr: [u8; 16]) -> u32 {
    let key = IpcacheKey { generation, addr };
    // SAFETY: the value is plain data, copied out at once.
    if let Some(id) = unsafe { IPCACHE_HOSTS.get(key) } {
        return *id;
    }
    IPCACHE.get(Key::new(8 + 128, key)).copied().unwrap_or(WORLD)
}

/// Protocols other than TCP and UDP are decided by the rules that name no protocol.
#[inline(always)]
pub fn normalize(proto: u8, port: u16) -> (u8, u16) {
    if proto == PROTO_TCP || proto == PROTO_UDP { (proto, port) } else { (PROTO_ANY, 0) }
}

#[inline(always)]
fn lookup(generation: u8, direction: u8, w: u32, remote: u32, proto: u8, port: u16) -> Option<NetRuleValue> {
    let exact = NetRuleKey { identity: w, remote, port, proto, direction, generation, _pad: [0; 3] };
    // SAFETY: the value is plain data, copied out at once.
    if let Some(v) = unsafe { NET_RULES.get(exact) } {
        return Some(*v);
    }
    let range = RangeKey {
        generation,
        direction,
        proto,
        _pad: 0,
        identity: w.to_be_bytes(),
        remote: remote.to_be_bytes(),
        port: port.to_be_bytes(),
    };
    NET_RANGES.get(Key::new(RANGE_FIXED_BITS + 16, range)).copied()
}

/// The verdict for workload `w` talking to `remote` on `proto`/`port` in `direction`, and the
/// compiled rule that decided (0: the posture).
#[inline(always)]
pub fn decide(generation: u8, direction: u8, w: &Workload, remote: u32, proto: u8, port: u16) -> (Verdict, u32) {
    let found = match lookup(generation, direction, w.identity, remote, proto, port) {
        Some(v) => Some(v),
        None => lookup(generation, direction, w.identity, ANY, proto, port),
    };
    if let Some(v) = found {
        return (w.applied(Verdict::from_u8(v.verdict).unwrap_or(Verdict::Deny)), v.rule_id);
    }
    let posture = if direction == DIR_EGRESS { w.egress_default } else { w.ingress_default };
    (w.applied(Verdict::from_u8(posture).unwrap_or(Verdict::Deny)), 0)
}
