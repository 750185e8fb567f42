//! Identity tokens on the wire (see `enforcer_common::token`): `sock_ops` stamps the SYN of
//! every TCP connection an enrolled workload opens to a peer agent's workload; the ingress
//! program checks the token of every SYN it judges.
//!
//! Stamping: `connect4/6` records the workload's serial by socket cookie ([`remember`]); at
//! `TCP_CONNECT_CB` the program asks for the header-option callbacks when the destination
//! address belongs to a peer; it then reserves 20 option bytes on the SYN and writes the token.
//! A SYN with no room left for it goes out without one (counted), and is judged
//! unauthenticated by the receiver.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_HDR_OPT_LEN_CB, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_WRITE_HDR_OPT_CB,
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG,
    },
    helpers::{bpf_get_socket_cookie, bpf_reserve_hdr_opt, bpf_store_hdr_opt},
    macros::sock_ops,
    programs::{SkBuffContext, SockOpsContext},
};
use enforcer_common::{
    net::{from_words, v4_mapped},
    token::{self, EXID, OPTION_KIND, OPTION_LEN, counter},
};

use crate::maps::{CLUSTER, PEER_ADDRS, PEER_KEYS, REMOTE_IDS, SOCK_SERIALS, TOKEN_COUNTERS};

const TCP_SYN: u32 = 0x02;
const TCP_ACK: u32 = 0x10;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[inline(always)]
pub fn count(slot: u32) {
    if let Some(c) = TOKEN_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *c += 1 };
    }
}

/// Whether tokens are on (a cluster is configured).
#[inline(always)]
pub fn enabled() -> bool {
    agent_id().is_some()
}

/// This agent's id when tokens are on.
#[inline(always)]
fn agent_id() -> Option<u32> {
    CLUSTER.get(0).map(|c| c.agent_id).filter(|id| *id != 0)
}

/// Whether `addr` is a peer agent's workload address: only connections there are stamped, so
/// only theirs need [`remember`] (an LRU insert, the costliest step of a decision).
#[inline(always)]
pub fn to_peer(addr: &[u8; 16]) -> bool {
    // SAFETY: the value is not read.
    unsafe { PEER_ADDRS.get(addr) }.is_some()
}

/// Records that the socket `cookie` connects for the workload with `serial`, so its SYN can be
/// stamped (called by `connect4/6` for allowed TCP connects while tokens are [`enabled`], to
/// a [`to_peer`] address).
#[inline(always)]
pub fn remember(cookie: u64, serial: u32) {
    let _ = SOCK_SERIALS.insert(cookie, serial, 0);
}

#[sock_ops]
pub fn stamp(ctx: SockOpsContext) -> u32 {
    let _ = try_stamp(&ctx);
    1
}

/// The connection's addresses (IPv4-mapped for IPv4) and ports, from this side. Every field is
/// read once, up front, with a volatile read: the verifier only accepts context reads at a
/// constant offset from the context pointer, which code motion across branches can break.
#[inline(always)]
fn tuple(ctx: &SockOpsContext) -> Option<([u8; 16], [u8; 16], u16, u16)> {
    let ops = ctx.ops;
    // SAFETY: reads of the `bpf_sock_ops` context the kernel passed.
    let (family, l4, r4, l6, r6, lport, rport) = unsafe {
        use core::ptr::{addr_of, read_volatile as rd};
        (
            rd(addr_of!((*ops).family)),
            rd(addr_of!((*ops).local_ip4)),
            rd(addr_of!((*ops).remote_ip4)),
            [rd(addr_of!((*ops).local_ip6[0])), rd(addr_of!((*ops).local_ip6[1])), rd(addr_of!((*ops).local_ip6[2])), rd(addr_of!((*ops).local_ip6[3]))],
            [rd(addr_of!((*ops).remote_ip6[0])), rd(addr_of!((*ops).remote_ip6[1])), rd(addr_of!((*ops).remote_ip6[2])), rd(addr_of!((*ops).remote_ip6[3]))],
            rd(addr_of!((*ops).local_port)),
            rd(addr_of!((*ops).remote_port)),
        )
    };
    let (local, remote) = match family {
        AF_INET => (v4_mapped(l4.to_ne_bytes()), v4_mapped(r4.to_ne_bytes())),
        AF_INET6 => (from_words(l6), from_words(r6)),
        _ => return None,
    };
    #[expect(clippy::cast_possible_truncation, reason = "ports are 16 bits")]
    let ports = (lport as u16, u32::from_be(rport) as u16);
    Some((local, remote, ports.0, ports.1))
}

#[inline(always)]
fn is_syn(ctx: &SockOpsContext) -> bool {
    // SAFETY: a read of the context the kernel passed.
    let flags = unsafe { (*ctx.ops).skb_tcp_flags };
    flags & TCP_SYN != 0 && flags & TCP_ACK == 0
}

#[inline(always)]
fn try_stamp(ctx: &SockOpsContext) -> Option<()> {
    let me = agent_id()?;
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            let (_, remote, _, _) = tuple(ctx)?;
            // SAFETY: the value is not read.
            unsafe { PEER_ADDRS.get(remote) }?;
            #[expect(clippy::cast_possible_wrap, reason = "a flag bit")]
            let flags = (ctx.cb_flags() | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG) as i32;
            ctx.set_cb_flags(flags).ok()?;
        }
        // SAFETY (guard): the context is the kernel's `bpf_sock_ops`.
        BPF_SOCK_OPS_HDR_OPT_LEN_CB if is_syn(ctx) && unsafe { bpf_reserve_hdr_opt(ctx.ops, u32::from(OPTION_LEN), 0) } != 0 => {
            count(counter::NO_ROOM);
        }
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB if is_syn(ctx) => {
            let (local, remote, lport, rport) = tuple(ctx)?;
            // SAFETY: a helper taking the context.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            // SAFETY: plain values copied out.
            let serial = *unsafe { SOCK_SERIALS.get(cookie) }?;
            let peer = *unsafe { PEER_ADDRS.get(remote) }?;
            let keys = unsafe { PEER_KEYS.get(peer) }?;
            let mac = token::mac(&keys.key_cur, &token::message(&local, &remote, lport, rport, serial, keys.epoch_cur));
            let mut opt = [0u8; OPTION_LEN as usize];
            opt[0] = OPTION_KIND;
            opt[1] = OPTION_LEN;
            opt[2..4].copy_from_slice(&EXID.to_be_bytes());
            opt[4..8].copy_from_slice(&me.to_be_bytes());
            opt[8..12].copy_from_slice(&serial.to_be_bytes());
            opt[12..20].copy_from_slice(&mac.to_le_bytes());
            // SAFETY: `opt` is a readable 20-byte buffer.
            if unsafe { bpf_store_hdr_opt(ctx.ops, opt.as_ptr().cast_mut().cast(), u32::from(OPTION_LEN), 0) } == 0 {
                count(counter::STAMPED);
            } else {
                count(counter::NO_ROOM);
            }
        }
        _ => {}
    }
    Some(())
}

/// A SYN as the token check sees it: where its TCP header starts, and its addresses and ports.
pub struct Syn {
    /// Offset of the TCP header.
    pub l4: usize,
    /// Source address (IPv4-mapped for IPv4).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// Checks the token of `syn`: the `counter` slot of the result, and with `VERIFIED` the local
/// identity of the sending workload. Not inlined: its stack frame is its own, not added to the
/// ingress program's (and BPF calls take at most five register arguments, hence one struct).
#[inline(never)]
pub fn check(ctx: &SkBuffContext, syn: &Syn) -> (u32, u32) {
    let Some((agent, serial, mac)) = find(ctx, syn.l4) else {
        return (counter::ABSENT, 0);
    };
    if agent == 0 {
        return (counter::MALFORMED, 0);
    }
    // SAFETY: the value is read in place and not kept.
    let Some(keys) = (unsafe { PEER_KEYS.get(agent) }) else {
        return (counter::UNKNOWN_AGENT, 0);
    };
    let head = token::message(&syn.src, &syn.dst, syn.sport, syn.dport, serial, 0);
    let ok = token::mac_at(&keys.key_cur, &head, keys.epoch_cur) == mac
        || token::mac_at(&keys.key_prev, &head, keys.epoch_prev) == mac;
    if !ok {
        return (counter::BAD_MAC, 0);
    }
    let key = enforcer_common::RemoteKey { agent, serial };
    // SAFETY: as above.
    match unsafe { REMOTE_IDS.get(key) } {
        Some(id) => (counter::VERIFIED, *id),
        None => (counter::UNKNOWN_SERIAL, 0),
    }
}

/// Our option in the TCP header at `l4`: (agent id, serial, MAC). `agent` 0 for an option with
/// our `ExID` and a wrong length.
#[inline(always)]
fn find(ctx: &SkBuffContext, l4: usize) -> Option<(u32, u32, u64)> {
    let doff: u8 = ctx.load(l4 + 12).ok()?;
    let end = l4 + usize::from(doff >> 4) * 4;
    let mut at = l4 + 20;
    let mut n = 0;
    // At most 40 option bytes, so at most 40 options.
    while n < 40 && at < end {
        n += 1;
        let kind: u8 = ctx.load(at).ok()?;
        match kind {
            0 => return None,
            1 => at += 1,
            _ => {
                let len: u8 = ctx.load(at + 1).ok()?;
                if len < 2 {
                    return None;
                }
                if kind == OPTION_KIND {
                    let exid = u16::from_be(ctx.load(at + 2).ok()?);
                    if exid == EXID {
                        if len != OPTION_LEN {
                            return Some((0, 0, 0));
                        }
                        let agent = u32::from_be(ctx.load(at + 4).ok()?);
                        let serial = u32::from_be(ctx.load(at + 8).ok()?);
                        let mac = u64::from_le(ctx.load(at + 12).ok()?);
                        return Some((agent, serial, mac));
                    }
                }
                at += usize::from(len);
            }
        }
    }
    None
}
