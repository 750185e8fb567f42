//! Scalar values of the policy format: names, modes, actions, ports, prefixes, paths and file
//! access words. Each parser returns the model value or a message that says what was expected.

use std::net::IpAddr;

use crate::policy::{Access, Action, Cidr, Mode, PortSpec, Protocol};

/// Longest name accepted, as for Kubernetes object names.
const MAX_NAME: usize = 253;

/// A name like a Kubernetes object name: `[a-z0-9]([-a-z0-9.]*[a-z0-9])?`, at most 253 chars.
pub(super) fn name(text: &str) -> Result<String, String> {
    let ok_inner = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let ok_end = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if text.len() > MAX_NAME {
        return Err(format!("is {} characters long; at most {MAX_NAME} are allowed", text.len()));
    }
    let first = text.chars().next().is_some_and(ok_end);
    let last = text.chars().last().is_some_and(ok_end);
    if !(first && last && text.chars().all(ok_inner)) {
        return Err(format!(
            "{text:?} is not a valid name: use lowercase letters, digits, `-` and `.`, \
             starting and ending with a letter or digit"
        ));
    }
    Ok(text.to_owned())
}

/// `enforce` or `audit`.
pub(super) fn mode(text: &str) -> Result<Mode, String> {
    match text {
        "enforce" => Ok(Mode::Enforce),
        "audit" => Ok(Mode::Audit),
        _ => Err(format!("unknown mode {text:?}; expected `enforce` or `audit`")),
    }
}

/// `allow` or `deny`.
pub(super) fn action(text: &str) -> Result<Action, String> {
    match text {
        "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        _ => Err(format!("unknown action {text:?}; expected `allow` or `deny`")),
    }
}

/// `read`, `write` or `exec`.
pub(super) fn access(text: &str) -> Result<Access, String> {
    match text {
        "read" => Ok(Access::Read),
        "write" => Ok(Access::Write),
        "exec" => Ok(Access::Exec),
        _ => Err(format!("unknown access {text:?}; expected `read`, `write` or `exec`")),
    }
}

fn protocol(text: &str) -> Result<Protocol, String> {
    if text.eq_ignore_ascii_case("tcp") {
        Ok(Protocol::Tcp)
    } else if text.eq_ignore_ascii_case("udp") {
        Ok(Protocol::Udp)
    } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        Err(format!("{text:?} has no protocol; write tcp/{text} or udp/{text}"))
    } else {
        Err(format!("unknown protocol {text:?}; expected `tcp` or `udp`"))
    }
}

fn port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {text:?} is not a number"));
    }
    match text.parse::<u32>() {
        Ok(n @ 1..=65535) => u16::try_from(n).map_err(|e| e.to_string()),
        _ => Err(format!("port {text} is out of range 1-65535")),
    }
}

/// `tcp`, `udp/53` or `tcp/8000-8080`; the protocol in any case.
pub(super) fn port_spec(text: &str) -> Result<PortSpec, String> {
    let (proto, ports) = match text.split_once('/') {
        Some((p, ports)) => (protocol(p)?, Some(ports)),
        None => (protocol(text)?, None),
    };
    let (lo, hi) = match ports {
        None => (1, u16::MAX),
        Some(ports) => match ports.split_once('-') {
            None => {
                let p = port(ports)?;
                (p, p)
            }
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(format!("port range {lo}-{hi} is reversed; write {hi}-{lo}"));
                }
                (lo, hi)
            }
        },
    };
    Ok(PortSpec { proto, lo, hi })
}

/// `10.0.0.0/8` or `fd00::/8`: an address and a prefix length, with no host bits set.
pub(super) fn cidr(text: &str) -> Result<Cidr, String> {
    let Some((addr, len)) = text.split_once('/') else {
        return Err(match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => format!("{text:?} has no prefix length; did you mean {text}/32?"),
            Ok(IpAddr::V6(_)) => format!("{text:?} has no prefix length; did you mean {text}/128?"),
            Err(_) => format!("{text:?} is not an IP prefix like 10.0.0.0/8 or fd00::/8"),
        });
    };
    let addr: IpAddr = addr.parse().map_err(|_| format!("{addr:?} in {text:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len.parse::<u8>() {
        Ok(n) if n <= max && len.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return Err(format!("prefix length {len:?} in {text:?} is not a number from 0 to {max}")),
    };
    let network = mask(addr, len);
    if network != addr {
        return Err(format!("{text} has host bits set; did you mean {network}/{len}?"));
    }
    Ok(Cidr { addr, len })
}

/// `addr` with every bit past the first `len` cleared.
fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// An absolute path as the kernel reports it: no `..`, `.` or empty components (so it can
/// match at all), no NUL. A trailing `/` (the whole subtree) is kept.
pub(super) fn path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("{text:?} is not absolute; paths start with `/`"));
    }
    if text.contains('\0') {
        return Err(format!("{text:?} contains a NUL character"));
    }
    let inner = text.strip_suffix('/').unwrap_or(text);
    for component in inner.split('/').skip(1) {
        match component {
            ".." => return Err(format!("{text:?} has a `..` component; write the path it leads to")),
            "." => return Err(format!("{text:?} has a `.` component; the kernel never reports one")),
            "" => {
                return Err(format!("{text:?} has an empty component (`//`); the kernel never reports one"));
            }
            _ => {}
        }
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let spec = |proto, lo, hi| Ok(PortSpec { proto, lo, hi });
        assert_eq!(port_spec("tcp/443"), spec(Protocol::Tcp, 443, 443));
        assert_eq!(port_spec("UDP/1000-2000"), spec(Protocol::Udp, 1000, 2000));
        assert_eq!(port_spec("tcp"), spec(Protocol::Tcp, 1, 65535));
        assert_eq!(port_spec("tcp/65535"), spec(Protocol::Tcp, 65535, 65535));
        for (bad, says) in [
            ("tcp/0", "out of range"),
            ("tcp/99999", "out of range"),
            ("tcp/99999999999999999999", "out of range"),
            ("tcp/2000-1000", "reversed"),
            ("tcp/", "not a number"),
            ("tcp/+1", "not a number"),
            ("tcp/1-", "not a number"),
            ("sctp/1", "unknown protocol"),
            ("443", "has no protocol; write tcp/443"),
        ] {
            let e = port_spec(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn cidrs() {
        let ok = |t: &str| cidr(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(ok("10.0.0.0/8"), Cidr { addr: "10.0.0.0".parse().expect("ip"), len: 8 });
        assert_eq!(ok("0.0.0.0/0").len, 0);
        assert_eq!(ok("169.254.169.254/32").len, 32);
        assert_eq!(ok("fd00::/8").len, 8);
        assert_eq!(ok("::1/128").len, 128);
        assert_eq!(
            cidr("10.0.0.1/8").expect_err("host bits"),
            "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"
        );
        assert!(cidr("fd00::1/8").expect_err("host bits").contains("did you mean fd00::/8?"));
        for bad in
            ["10.0.0.0/33", "fd00::/129", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0/8", "10.0.0.1", "x", "/8"]
        {
            assert!(cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_paths() {
        for good in ["a", "web-egress", "a.b-c9", &"a".repeat(253)] {
            assert!(name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a b", &"a".repeat(254)] {
            assert!(name(bad).is_err(), "{bad}");
        }
        for good in ["/", "/etc/ssl/", "/etc/shadow", "/a..b/c"] {
            assert_eq!(path(good).as_deref(), Ok(good));
        }
        for bad in ["etc/x", "", "/a/../b", "/a/..", "/a/./b", "/a//b", "//", "/a\0b"] {
            assert!(path(bad).is_err(), "{bad:?}");
        }
    }
}
