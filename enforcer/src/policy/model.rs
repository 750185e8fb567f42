//! What a policy says, after parsing and validation.
//!
//! A workload selected by at least one policy of a kind is in allow-list mode for that kind
//! and direction (a `NetworkPolicy` with an `egress` list selects for egress, one with `ingress`
//! for ingress); otherwise the configured default applies. Deny rules win over allow rules.
//! A workload whose selecting policies of a kind are all `audit` is audited: what would be
//! denied goes through and is reported.

use std::{net::IpAddr, path::PathBuf};

use super::Selector;

/// Where a policy or rule was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The file (or `<api>` for policies applied through the API without a file).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
}

/// Enforce or only report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Deny what is not allowed.
    #[default]
    Enforce,
    /// Let it through and report what would be denied.
    Audit,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Action {
    /// Allow (the default).
    #[default]
    Allow,
    /// Deny; wins over any allow.
    Deny,
}

/// An IP protocol a rule can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// `tcp/443`, `udp/1000-2000`, or `tcp` (all ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// The protocol.
    pub proto: Protocol,
    /// First port (1 when all ports).
    pub lo: u16,
    /// Last port, inclusive (65535 when all ports).
    pub hi: u16,
}

/// An IP prefix, e.g. `10.0.0.0/8`; the address has no bits set beyond the prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length (0..=32 for IPv4, 0..=128 for IPv6).
    pub len: u8,
}

/// Who is on the other end of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Anyone (neither `to`/`from` nor `toCIDR`/`fromCIDR` given).
    Any,
    /// Workloads whose tags match (`to:` / `from:`).
    Selector(Selector),
    /// Addresses in these prefixes (`toCIDR:` / `fromCIDR:`).
    Cidrs(Vec<Cidr>),
}

/// One egress or ingress rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRule {
    /// The other end.
    pub peer: Peer,
    /// Protocols and ports; empty means any.
    pub ports: Vec<PortSpec>,
    /// Allow or deny.
    pub action: Action,
    /// Where the rule starts.
    pub source: Source,
}

/// `kind: NetworkPolicy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Unique name.
    pub name: String,
    /// Enforce or audit.
    pub mode: Mode,
    /// The workloads it applies to.
    pub subject: Selector,
    /// `None`: the policy says nothing about egress (does not select for it).
    pub egress: Option<Vec<NetRule>>,
    /// `None`: the policy says nothing about ingress.
    pub ingress: Option<Vec<NetRule>>,
    /// Where the document starts.
    pub source: Source,
}

/// File access a rule grants or denies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// Open for reading.
    Read,
    /// Open for writing.
    Write,
    /// Execute.
    Exec,
}

/// One file rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRule {
    /// Absolute paths; a trailing `/` means the whole subtree.
    pub paths: Vec<String>,
    /// Access it applies to; empty means all.
    pub access: Vec<Access>,
    /// Allow or deny.
    pub action: Action,
    /// Where the rule starts.
    pub source: Source,
}

/// `kind: FilePolicy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePolicy {
    /// Unique name.
    pub name: String,
    /// Enforce or audit.
    pub mode: Mode,
    /// The workloads it applies to.
    pub subject: Selector,
    /// The rules.
    pub rules: Vec<FileRule>,
    /// Where the document starts.
    pub source: Source,
}

/// Any policy document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// A `NetworkPolicy`.
    Network(NetworkPolicy),
    /// A `FilePolicy`.
    File(FilePolicy),
}

impl Policy {
    /// The policy's name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Network(p) => &p.name,
            Self::File(p) => &p.name,
        }
    }

    /// Where the document starts.
    #[must_use]
    pub fn source(&self) -> &Source {
        match self {
            Self::Network(p) => &p.source,
            Self::File(p) => &p.source,
        }
    }
}
