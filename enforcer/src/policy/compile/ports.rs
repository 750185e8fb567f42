//! Port arithmetic: which ports a rule covers, the segments where verdicts can change, and
//! aligned power-of-two blocks for the kernel's LPM trie.

use enforcer_common::net::PROTO_ANY;

use super::{PortBlock, proto_byte};
use crate::policy::{NetRule, PortSpec};

/// Whether a rule's `ports` cover `proto`/`port` (`proto == PROTO_ANY`: another protocol,
/// which only a rule naming no ports covers).
pub(super) fn covers(ports: &[PortSpec], proto: u8, port: u16) -> bool {
    ports.is_empty() || (proto != PROTO_ANY && ports.iter().any(|p| proto_byte(p.proto) == proto && p.lo <= port && port <= p.hi))
}

/// Sorted start points of the segments over 0..=65535 on which no rule's coverage changes.
pub(super) fn boundaries<'a>(rules: impl Iterator<Item = &'a NetRule>, proto: u8) -> Vec<u32> {
    let mut b = vec![0u32];
    if proto != PROTO_ANY {
        for r in rules {
            for p in r.ports.iter().filter(|p| proto_byte(p.proto) == proto) {
                b.push(u32::from(p.lo));
                b.push(u32::from(p.hi) + 1);
            }
        }
    }
    b.sort_unstable();
    b.dedup();
    b.retain(|x| *x <= 65535);
    b
}

/// The segments `(lo, hi)` between consecutive boundaries, up to 65535.
pub(super) fn segments(bounds: &[u32]) -> impl Iterator<Item = (u16, u16)> + '_ {
    bounds.iter().enumerate().map(move |(i, &lo)| {
        let hi = bounds.get(i + 1).map_or(65535, |n| n - 1);
        (u16::try_from(lo).unwrap_or(u16::MAX), u16::try_from(hi).unwrap_or(u16::MAX))
    })
}

/// The aligned power-of-two blocks that exactly cover `lo..=hi`.
pub(super) fn blocks(lo: u16, hi: u16) -> Vec<PortBlock> {
    let mut out = Vec::new();
    let (mut a, b) = (u32::from(lo), u32::from(hi));
    while a <= b {
        let mut size = if a == 0 { 1u32 << 16 } else { 1u32 << a.trailing_zeros() };
        while a + size - 1 > b {
            size >>= 1;
        }
        let bits = 16 - u8::try_from(size.trailing_zeros()).unwrap_or(16);
        out.push(PortBlock { port: u16::try_from(a).unwrap_or(u16::MAX), bits });
        a += size;
    }
    out
}
