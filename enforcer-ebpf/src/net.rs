//! Egress: `cgroup/connect4` and `cgroup/connect6`, attached to the managed cgroup root.
//!
//! Returning 0 makes `connect(2)` fail with `EPERM`; 1 lets it proceed.

use aya_ebpf::{
    macros::cgroup_sock_addr,
    maps::lpm_trie::Key,
    programs::SockAddrContext,
};
use enforcer_common::{
    EventHeader, NetEvent, NetRuleKey, Verdict, Workload,
    event::KIND_NETWORK,
    identity::{ANY, WORLD},
    net::{DIR_EGRESS, PROTO_ANY, v4_mapped},
};

use crate::{
    maps::{IPCACHE, NET_RULES},
    report, workload,
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel passes a valid `bpf_sock_addr`; these are 4-byte context reads.
    let (ip, port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip4, sa.user_port, sa.protocol)
    };
    egress(v4_mapped(ip.to_ne_bytes()), port, proto, 4)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in connect4; the verifier requires the address to be read a word at a time.
    let (words, port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (
            [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]],
            sa.user_port,
            sa.protocol,
        )
    };
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
        i += 1;
    }
    // An IPv4-mapped destination is IPv4 traffic: the same trie entries and rules apply.
    let family = if is_v4_mapped(&addr) { 4 } else { 6 };
    egress(addr, port, proto, family)
}

#[inline(always)]
fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff
}

#[inline(always)]
fn egress(dst: [u8; 16], user_port: u32, proto: u32, family: u8) -> i32 {
    let Some((w, cgroup_id)) = workload::current() else {
        return ALLOW;
    };
    #[expect(clippy::cast_possible_truncation, reason = "the port is the low 16 bits, network order")]
    let port = u16::from_be(user_port as u16);
    #[expect(clippy::cast_possible_truncation, reason = "IP protocol numbers fit in a byte")]
    let proto = proto as u8;
    let remote = IPCACHE.get(Key::new(128, dst)).copied().unwrap_or(WORLD);
    let (verdict, rule_id) = decide(&w, remote, port, proto);
    report::count(KIND_NETWORK, verdict as u8);
    if report::wanted(verdict, &w) {
        let header = EventHeader {
            detail: DIR_EGRESS,
            proto,
            rule_id,
            remote_identity: remote,
            ..report::header(KIND_NETWORK, verdict, &w, cgroup_id)
        };
        let event = NetEvent {
            header,
            family,
            _pad: [0; 3],
            src_port: 0,
            dst_port: port,
            src: [0; 16],
            dst,
        };
        report::emit(KIND_NETWORK, &event);
    }
    if verdict.passes() { ALLOW } else { DENY }
}

/// The most specific rule wins: exact remote before any remote, exact port before any port,
/// exact protocol before any protocol; the workload's posture applies when none matches.
#[inline(always)]
fn decide(w: &Workload, remote: u32, port: u16, proto: u8) -> (Verdict, u32) {
    let candidates = [
        (remote, port, proto),
        (remote, 0, proto),
        (ANY, port, proto),
        (ANY, 0, proto),
        (remote, 0, PROTO_ANY),
        (ANY, 0, PROTO_ANY),
    ];
    let mut i = 0;
    while i < candidates.len() {
        let (remote, port, proto) = candidates[i];
        let key = NetRuleKey { identity: w.identity, remote, port, proto, direction: DIR_EGRESS };
        // SAFETY: the map value is plain data, copied out at once.
        if let Some(v) = unsafe { NET_RULES.get(key) } {
            return (Verdict::from_u8(v.verdict).unwrap_or(Verdict::Deny), v.rule_id);
        }
        i += 1;
    }
    (Verdict::from_u8(w.egress_default).unwrap_or(Verdict::Deny), 0)
}
