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

/// Key of the `NET_RULES` hash: the verdict for one exact port.
///
/// The kernel looks up, in order: this map with the remote identity, `NET_RANGES` with it, then
/// both with `remote == identity::ANY`, and falls back to the workload's posture. Protocols
/// other than TCP and UDP are looked up as [`PROTO_ANY`] with port 0.
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
    /// Generation (see `AgentConfig::generation`).
    pub generation: u8,
    /// Reserved, zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<NetRuleKey>() == 16);

/// Data of a `NET_RANGES` LPM key: the verdict for a block of ports. The first
/// [`RANGE_FIXED_BITS`] bits (everything but the port) are always part of the prefix; the port
/// (big-endian) adds 0 to 16 more, so a block is a power-of-two aligned run of ports and the
/// longest match is the most specific block, with a 0-bit block as the pair's default.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RangeKey {
    /// Generation.
    pub generation: u8,
    /// [`DIR_EGRESS`] or [`DIR_INGRESS`].
    pub direction: u8,
    /// IP protocol number.
    pub proto: u8,
    /// Reserved, zero.
    pub _pad: u8,
    /// Local identity, big-endian.
    pub identity: [u8; 4],
    /// Remote identity, big-endian.
    pub remote: [u8; 4],
    /// Port, big-endian.
    pub port: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<RangeKey>() == 14);

/// Prefix bits of a [`RangeKey`] before the port.
pub const RANGE_FIXED_BITS: u32 = 96;

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

/// Data of an `IPCACHE` LPM key: the generation, then an IPv6 address or an IPv4 address in
/// IPv4-mapped form (`::ffff:a.b.c.d`), so one trie serves both families. The prefix length
/// counts the 8 generation bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpcacheKey {
    /// Generation.
    pub generation: u8,
    /// Network byte order.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<IpcacheKey>() == 17);

/// Key of the `UDP_FLOWS` LRU map: a UDP exchange the policy allowed, so the answer passes
/// the other direction (a reply datagram in, or a server's `sendto` back).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The local socket's cookie.
    pub cookie: u64,
    /// The remote address (IPv4-mapped for IPv4).
    pub remote: [u8; 16],
    /// The remote port, host byte order.
    pub remote_port: u16,
    /// Reserved, zero.
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 32);

/// An IPv6 address from the four 32-bit words the kernel's contexts hold it in (each word in
/// network byte order as stored).
#[must_use]
pub const fn from_words(words: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = words[i / 4].to_ne_bytes()[i % 4];
        i += 1;
    }
    out
}

/// Maps an IPv4 address (network byte order bytes) into the IPv4-mapped IPv6 form.
#[must_use]
pub const fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_as_stored_give_the_address_bytes() {
        let addr: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 200, 0, 1];
        let words = [0, 4, 8, 12].map(|i| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]));
        assert_eq!(from_words(words), addr);
        assert_eq!(v4_mapped([10, 200, 0, 1])[10..], addr[10..]);
    }
}
