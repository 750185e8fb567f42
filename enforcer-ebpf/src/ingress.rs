//! Ingress: `cgroup_skb/ingress` on the managed cgroup root judges each inbound TCP SYN and
//! UDP datagram for an enrolled workload's socket by its source; 0 drops it, 1 passes it.
//! Everything else passes: packets of established TCP connections (their SYN was judged on
//! the way out or in), non-first fragments, ICMP (neighbour discovery must keep working).
//!
//! With a cluster configured, a SYN's sender is the workload its identity token names once the
//! token verifies (`token::check`); otherwise it is judged by its source address alone.

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_get_socket_cookie,
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use enforcer_common::{
    EventHeader, FlowKey, NetEvent,
    event::KIND_NETWORK,
    net::{DIR_INGRESS, PROTO_TCP, PROTO_UDP, v4_mapped},
};

use crate::{decide, maps::UDP_FLOWS, report, token, workload};

const PASS: i32 = 1;
const DROP: i32 = 0;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

#[cgroup_skb(ingress)]
pub fn ingress(ctx: SkBuffContext) -> i32 {
    // A packet the program cannot read is one the stack cannot use either.
    try_ingress(&ctx).unwrap_or(PASS)
}

/// Source and destination address (IPv4-mapped for IPv4), protocol and transport offset.
struct Header {
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    l4: usize,
    family: u8,
}

#[inline(always)]
fn header(ctx: &SkBuffContext) -> Option<Header> {
    let first: u8 = ctx.load(0).ok()?;
    match first >> 4 {
        4 => {
            let frag: u16 = u16::from_be(ctx.load(6).ok()?);
            if frag & 0x1fff != 0 {
                return None;
            }
            let src: [u8; 4] = ctx.load(12).ok()?;
            let dst: [u8; 4] = ctx.load(16).ok()?;
            Some(Header {
                src: v4_mapped(src),
                dst: v4_mapped(dst),
                proto: ctx.load(9).ok()?,
                l4: usize::from(first & 0x0f) * 4,
                family: 4,
            })
        }
        6 => Some(Header { src: ctx.load(8).ok()?, dst: ctx.load(24).ok()?, proto: ctx.load(6).ok()?, l4: 40, family: 6 }),
        _ => None,
    }
}

#[inline(always)]
fn try_ingress(ctx: &SkBuffContext) -> Option<i32> {
    let (w, cgroup_id) = workload::resolve(&workload::Packet(ctx.skb.skb))?;
    let h = header(ctx)?;
    if h.proto != PROTO_TCP && h.proto != PROTO_UDP {
        return None;
    }
    if h.l4 < 20 || h.l4 > 60 {
        return None;
    }
    let sport = u16::from_be(ctx.load(h.l4).ok()?);
    let dport = u16::from_be(ctx.load(h.l4 + 2).ok()?);
    let mut flow = None;
    let generation = decide::generation();
    let mut remote = decide::remote_identity(generation, h.src);
    // 0: no token check (UDP, or no cluster); otherwise the `token::counter` slot + 1.
    let mut token_result = 0u8;
    if h.proto == PROTO_TCP {
        let flags: u8 = ctx.load(h.l4 + 13).ok()?;
        if flags & TCP_SYN == 0 || flags & TCP_ACK != 0 {
            return None;
        }
        if token::enabled() {
            let syn = token::Syn { l4: h.l4, src: h.src, dst: h.dst, sport, dport };
            let (slot, id) = token::check(ctx, &syn);
            // Verified: the sender is the workload its token names. Otherwise it is judged by
            // its address alone, so only CIDR rules admit it.
            if slot == enforcer_common::token::counter::VERIFIED {
                remote = id;
            }
            token::count(slot);
            #[expect(clippy::cast_possible_truncation, reason = "fewer than 255 slots")]
            {
                token_result = slot as u8 + 1;
            }
        }
    } else {
        let key = FlowKey {
            // SAFETY: the context pointer is valid for the program's run.
            cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
            remote: h.src,
            remote_port: sport,
            _pad: [0; 6],
        };
        // SAFETY: the value is not read.
        if unsafe { UDP_FLOWS.get(key) }.is_some() {
            return Some(PASS);
        }
        flow = Some(key);
    }
    let (verdict, rule_id) = decide::decide(generation, DIR_INGRESS, &w, remote, h.proto, dport);
    report::count(KIND_NETWORK, verdict as u8);
    if report::wanted(verdict, &w) {
        let header = EventHeader {
            detail: DIR_INGRESS,
            proto: h.proto,
            rule_id,
            remote_identity: remote,
            ..report::header(KIND_NETWORK, verdict, &w, cgroup_id, false)
        };
        let event =
            NetEvent { header, family: h.family, token: token_result, _pad: [0; 2], src_port: sport, dst_port: dport, src: h.src, dst: h.dst };
        report::emit(KIND_NETWORK, &event);
    }
    if !verdict.passes() {
        return Some(DROP);
    }
    if let Some(f) = &flow {
        let _ = UDP_FLOWS.insert(f, 0, 0);
    }
    Some(PASS)
}
