//! The addresses a workload is reachable at: the local addresses of its network namespace,
//! read through `/proc/PID/net` of one of its processes (a host-network workload therefore has
//! the host's addresses). Loopback and IPv6 link-local addresses are left out.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// Local IPv4 addresses from `/proc/net/fib_trie` text: an address line followed by a
/// `/32 host LOCAL` line.
fn fib_trie_locals(text: &str) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(a) = last
        {
            out.insert(a);
        }
    }
    out
}

/// Addresses from `/proc/net/if_inet6` text (32 hex digits first on each line).
fn if_inet6(text: &str) -> BTreeSet<Ipv6Addr> {
    text.lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            if hex.len() != 32 {
                return None;
            }
            u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
        })
        .collect()
}

fn reachable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_unspecified(),
        IpAddr::V6(a) => !a.is_loopback() && !a.is_unspecified() && (a.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The reachable local addresses of the network namespace of process `pid`, sorted.
/// A process that vanished yields none.
#[must_use]
pub fn of_process(pid: u32) -> Vec<IpAddr> {
    let v4 = std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")).map(|t| fib_trie_locals(&t)).unwrap_or_default();
    let v6 = std::fs::read_to_string(format!("/proc/{pid}/net/if_inet6")).map(|t| if_inet6(&t)).unwrap_or_default();
    v4.into_iter().map(IpAddr::V4).chain(v6.into_iter().map(IpAddr::V6)).filter(reachable).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fib_trie_locals() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.0.2.0/24 2 0 2\n        |-- 10.0.2.15\n           /32 host LOCAL\n        |-- 10.0.2.255\n           /32 link BROADCAST\n  +-- 127.0.0.0/8 2 0 2\n     |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n        |-- 10.0.2.15\n           /32 host LOCAL\n";
        let got: Vec<_> = fib_trie_locals(text).into_iter().collect();
        assert_eq!(got, [Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::LOCALHOST]);
    }

    #[test]
    fn parses_if_inet6_and_filters_unreachable() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo\nfd000000000000000000000000000002 02 40 00 80     eth0\nfe80000000000000020000fffe000001 02 40 20 80     eth0\n";
        let all: Vec<IpAddr> = if_inet6(text).into_iter().map(IpAddr::V6).filter(reachable).collect();
        assert_eq!(all, [IpAddr::V6("fd00::2".parse().expect("addr"))]);
    }

    #[test]
    fn own_namespace_has_no_loopback_in_the_result() {
        assert!(of_process(std::process::id()).iter().all(reachable));
    }
}
