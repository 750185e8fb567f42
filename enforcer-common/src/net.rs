//! Network rule and ipcache keys.

use crate::identity::Identity;

/// `direction` of a [`NetRuleKey`]: traffic the workload initiates or sends.
pub const DIR_EGRESS: u8 = 1;
/// `direction` of a [`NetRuleKey`]: traffic the workload accepts or receives.
pub const DIR_INGRESS: u8 = 2;

/// IP protocol numbers used in rule keys; 0 means any protocol.
pub const PROTO_ANY: u8 = 0;
/// TCP.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

/// Key of the `NET_RULES` map. `remote == identity::ANY`, `port == 0` and
/// `proto == PROTO_ANY` are wildcards the kernel falls back to, most specific first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetRuleKey {
    /// The local workload's identity.
    pub identity: Identity,
    /// The remote side's identity.
    pub remote: Identity,
    /// Remote port for egress, local port for ingress, host byte order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`DIR_EGRESS`] or [`DIR_INGRESS`].
    pub direction: u8,
}
const _: () = assert!(core::mem::size_of::<NetRuleKey>() == 12);

/// Value of the `NET_RULES` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetRuleValue {
    /// A [`crate::Verdict`] value.
    pub verdict: u8,
    /// Reserved, zero.
    pub _pad: [u8; 3],
    /// Which compiled rule decided, reported in events (0: none).
    pub rule_id: u32,
}
const _: () = assert!(core::mem::size_of::<NetRuleValue>() == 8);

/// Data of an `IPCACHE` LPM key: an IPv6 address, or an IPv4 address in IPv4-mapped form
/// (`::ffff:a.b.c.d`), so one trie serves both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpcacheKey {
    /// Number of leading bits of `addr` that matter (0..=128).
    pub prefix_len: u32,
    /// Network byte order.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<IpcacheKey>() == 20);

/// Maps an IPv4 address (network byte order bytes) into the IPv4-mapped IPv6 form.
#[must_use]
pub const fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
}
