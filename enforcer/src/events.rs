//! Events from the kernel: decoding ring-buffer records into the flow events users see.
//!
//! Records come from the kernel but are still parsed defensively: a short or unknown record is
//! an error, never a panic or an out-of-bounds read.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use enforcer_common::{
    EventHeader, FileEvent, NetEvent, Verdict,
    event::{ACCESS_EXEC, ACCESS_READ, ACCESS_WRITE, KIND_FILE, KIND_NETWORK},
    net::{DIR_EGRESS, DIR_INGRESS, PROTO_TCP, PROTO_UDP},
};
use serde::Serialize;

/// A record that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its kind's layout.
    #[error("event record of {len} bytes is shorter than the {need} its kind needs")]
    Short {
        /// Bytes received.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The kind byte is not one this agent knows.
    #[error("event record of unknown kind {0}")]
    UnknownKind(u8),
}

/// A decoded kernel record (short-lived: decoded, described, dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(clippy::large_enum_variant, reason = "records live for one decode; boxing would allocate per event")]
pub enum Record {
    /// A network decision.
    Network(NetEvent),
    /// A file decision.
    File(FileEvent),
}

impl Record {
    /// The common header.
    #[must_use]
    pub fn header(&self) -> &EventHeader {
        match self {
            Self::Network(e) => &e.header,
            Self::File(e) => &e.header,
        }
    }
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short { len: bytes.len(), need });
    }
    // SAFETY: the length was checked above, `read_unaligned` has no alignment requirement, and
    // `T` is one of the `enforcer_common` records: integers and byte arrays only, for which
    // every bit pattern is valid.
    #[expect(unsafe_code, reason = "reinterpreting a checked byte slice as a plain record")]
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
///
/// # Errors
/// [`DecodeError`] for short records and unknown kinds.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    match bytes.first() {
        Some(&KIND_NETWORK) => read::<NetEvent>(bytes).map(Record::Network),
        Some(&KIND_FILE) => read::<FileEvent>(bytes).map(Record::File),
        Some(&other) => Err(DecodeError::UnknownKind(other)),
        None => Err(DecodeError::Short { len: 0, need: size_of::<EventHeader>() }),
    }
}

/// A flow event as `enforcer flows -o json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// RFC 3339 wall-clock time of the decision.
    pub time: String,
    /// `network` or `file`.
    pub kind: &'static str,
    /// `allow`, `deny` or `audit`.
    pub verdict: &'static str,
    /// Workload name (cgroup path below the root); `None` while not enrolled yet.
    pub workload: Option<String>,
    /// Local identity number.
    pub identity: u32,
    /// Process id of the caller.
    pub pid: u32,
    /// User id of the caller.
    pub uid: u32,
    /// Command name of the caller.
    pub comm: String,
    /// Kind-specific fields.
    #[serde(flatten)]
    pub detail: Detail,
}

/// Fields that depend on the event kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// Network fields.
    Network {
        /// `egress` or `ingress`.
        direction: &'static str,
        /// `tcp`, `udp` or the protocol number.
        protocol: String,
        /// Local address and port.
        src: String,
        /// Remote address and port.
        dst: String,
        /// Remote identity number.
        remote_identity: u32,
        /// The compiled rule that decided; `None`: the default posture.
        rule_id: Option<u32>,
        /// What decided, in words: a policy's rule, allow-list mode, or the default posture.
        policy: Option<String>,
        /// The remote workload's name, when the remote is a known workload (`PEER/NAME` for a
        /// workload of another agent).
        remote_workload: Option<String>,
        /// The remote workload's tags, when it is a workload of another agent.
        #[serde(skip_serializing_if = "Option::is_none")]
        remote_tags: Option<std::collections::BTreeMap<String, String>>,
        /// Ingress TCP with a cluster: what the SYN's identity token said (`verified`,
        /// `absent`, `bad_mac`, `unknown_agent`, `unknown_serial`, `malformed`).
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<&'static str>,
    },
    /// File fields.
    File {
        /// The opened path.
        path: String,
        /// Requested access: `read`, `write`, `exec`.
        access: Vec<&'static str>,
        /// What decided, in words.
        policy: Option<String>,
    },
}

impl Event {
    /// Fills in what only the agent knows: what decided and who the remote is.
    pub fn annotate(
        &mut self,
        decided_by: String,
        remote: Option<String>,
        tags: Option<std::collections::BTreeMap<String, String>>,
    ) {
        match &mut self.detail {
            Detail::Network { policy, remote_workload, remote_tags, .. } => {
                *policy = Some(decided_by);
                *remote_workload = remote;
                *remote_tags = tags;
            }
            Detail::File { policy, .. } => *policy = Some(decided_by),
        }
    }
}

/// Converts kernel monotonic timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    boot: SystemTime,
}

impl Clock {
    /// Reads both clocks now.
    ///
    /// # Errors
    /// When `CLOCK_MONOTONIC` cannot be read.
    pub fn now() -> nix::Result<Self> {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
        let since_boot = Duration::from(mono);
        Ok(Self { boot: SystemTime::now() - since_boot })
    }

    /// Wall-clock time of monotonic `ns`.
    #[must_use]
    pub fn wall(&self, ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(ns)
    }
}

fn verdict_name(v: u8) -> &'static str {
    match Verdict::from_u8(v) {
        Some(Verdict::Allow) => "allow",
        Some(Verdict::Audit) => "audit",
        Some(Verdict::Deny) | None => "deny",
    }
}

/// The NUL-terminated text in `raw` (a command name, a path), lossily as UTF-8.
fn c_text(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn addr(family: u8, a: [u8; 16], port: u16) -> String {
    // Family 4 records carry the address in IPv4-mapped form (or all zeros when unknown).
    let ip = if family == 4 {
        IpAddr::V4(std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(a))
    };
    std::net::SocketAddr::new(ip, port).to_string()
}

/// Turns a record into a user-facing event; `workload` names the record's cgroup.
#[must_use]
pub fn describe(record: &Record, clock: &Clock, workload: Option<String>) -> Event {
    let h = record.header();
    let detail = match record {
        Record::Network(n) => Detail::Network {
            direction: match n.header.detail {
                DIR_INGRESS => "ingress",
                DIR_EGRESS => "egress",
                _ => "unknown",
            },
            protocol: match n.header.proto {
                PROTO_TCP => "tcp".to_owned(),
                PROTO_UDP => "udp".to_owned(),
                p => p.to_string(),
            },
            src: addr(n.family, n.src, n.src_port),
            dst: addr(n.family, n.dst, n.dst_port),
            remote_identity: n.header.remote_identity,
            rule_id: (n.header.rule_id != 0).then_some(n.header.rule_id),
            policy: None,
            remote_workload: None,
            remote_tags: None,
            token: n
                .token
                .checked_sub(1)
                .and_then(|slot| enforcer_common::token::counter::NAMES.get(usize::from(slot)).copied()),
        },
        Record::File(f) => Detail::File {
            path: c_text(&f.path),
            policy: None,
            access: [(ACCESS_READ, "read"), (ACCESS_WRITE, "write"), (ACCESS_EXEC, "exec")]
                .into_iter()
                .filter(|(bit, _)| f.header.detail & bit != 0)
                .map(|(_, name)| name)
                .collect(),
        },
    };
    Event {
        time: humantime::format_rfc3339_millis(clock.wall(h.time_ns)).to_string(),
        kind: if matches!(record, Record::Network(_)) { "network" } else { "file" },
        verdict: verdict_name(h.verdict),
        workload,
        identity: h.identity,
        pid: h.pid,
        uid: h.uid,
        comm: c_text(&h.comm),
        detail,
    }
}

#[cfg(test)]
mod tests;
