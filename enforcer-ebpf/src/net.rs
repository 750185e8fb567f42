//! Egress: `cgroup/connect4`, `connect6`, `sendmsg4`, `sendmsg6`, attached to the managed
//! cgroup root. Returning 0 makes `connect(2)` or `sendmsg(2)` fail with `EPERM`; 1 lets it
//! proceed. A UDP exchange the policy allowed is remembered (`UDP_FLOWS`), so its replies pass
//! and a server's `sendto` back to an admitted client is not judged as a new flow.

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_get_socket_cookie,
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use enforcer_common::{
    EventHeader, FlowKey, NetEvent,
    event::KIND_NETWORK,
    net::{DIR_EGRESS, PROTO_TCP, PROTO_UDP, from_words, v4_mapped},
};

use crate::{decide, maps::UDP_FLOWS, report, token, workload};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    v4(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    v4(&ctx)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    v6(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    v6(&ctx)
}

#[inline(always)]
fn v4(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the kernel passes a valid `bpf_sock_addr`; these are 4-byte context reads.
    let (ip, port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip4, sa.user_port, sa.protocol)
    };
    egress(ctx, v4_mapped(ip.to_ne_bytes()), port, proto, 4)
}

#[inline(always)]
fn v6(ctx: &SockAddrContext) -> i32 {
    // SAFETY: as in `v4`; the verifier requires the address to be read a word at a time.
    let (words, port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        ([sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]], sa.user_port, sa.protocol)
    };
    let addr = from_words(words);
    // An IPv4-mapped destination is IPv4 traffic: the same trie entries and rules apply.
    let family = if is_v4_mapped(&addr) { 4 } else { 6 };
    egress(ctx, addr, port, proto, family)
}

#[inline(always)]
fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff
}

#[inline(always)]
fn egress(ctx: &SockAddrContext, dst: [u8; 16], user_port: u32, proto: u32, family: u8) -> i32 {
    let Some((w, cgroup_id)) = workload::current() else {
        return ALLOW;
    };
    #[expect(clippy::cast_possible_truncation, reason = "the port is the low 16 bits, network order")]
    let port = u16::from_be(user_port as u16);
    #[expect(clippy::cast_possible_truncation, reason = "IP protocol numbers fit in a byte")]
    let (proto, port) = decide::normalize(proto as u8, port);
    let flow = (proto == PROTO_UDP).then(|| FlowKey {
        // SAFETY: the context pointer is valid for the program's run.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        remote: dst,
        remote_port: port,
        _pad: [0; 6],
    });
    // A reply within a UDP exchange the policy already allowed.
    if let Some(f) = &flow
        // SAFETY: the value is not read.
        && unsafe { UDP_FLOWS.get(f) }.is_some()
    {
        return ALLOW;
    }
    let generation = decide::generation();
    let remote = decide::remote_identity(generation, dst);
    let (verdict, rule_id) = decide::decide(generation, DIR_EGRESS, &w, remote, proto, port);
    report::count(KIND_NETWORK, verdict as u8);
    if report::wanted(verdict, &w) {
        let header = EventHeader {
            detail: DIR_EGRESS,
            proto,
            rule_id,
            remote_identity: remote,
            ..report::header(KIND_NETWORK, verdict, &w, cgroup_id, true)
        };
        let event = NetEvent { header, family, token: 0, _pad: [0; 2], src_port: 0, dst_port: port, src: [0; 16], dst };
        report::emit(KIND_NETWORK, &event);
    }
    if !verdict.passes() {
        return DENY;
    }
    if let Some(f) = &flow {
        let _ = UDP_FLOWS.insert(f, 0, 0);
    }
    if proto == PROTO_TCP && token::enabled() && token::to_peer(&dst) {
        // SAFETY: the context pointer is valid for the program's run.
        token::remember(unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }, w.identity);
    }
    ALLOW
}
