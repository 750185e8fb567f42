//! The compiler: policies plus the current endpoints (workloads with their identity, tags and
//! addresses) in, the exact kernel entries out. Pure: no I/O, no kernel, so every semantic rule
//! is unit-tested here.
//!
//! For each workload a policy selects in a direction, and for each protocol (TCP, UDP, and
//! "other" for rules that name none), the verdict is a function of the remote identity and the
//! port: the first deny rule that matches wins, else the first allow rule, else the default
//! deny of allow-list mode (`audit` instead when every selecting policy is in audit mode). The
//! function is emitted per remote identity that some rule names, plus once for any other
//! remote: a 0-bit port block holds the value for ports no port-specific rule covers, runs of
//! ports with another value become exact entries (one port) or aligned port blocks (several).
//! That is exactly what the kernel's lookup order (`enforcer-ebpf/src/decide.rs`) reads back.
//!
//! Addresses map to identities through the ipcache: an address owned by exactly one endpoint
//! maps to it (a shared one to none), and every CIDR a policy names gets an identity of its own
//! (`FIRST_CIDR + n`, in sorted order). A CIDR rule matches the CIDR identities inside its
//! prefix and the endpoints with an address inside it.

pub mod files;
mod ports;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use enforcer_common::{
    NetRuleValue, Verdict,
    identity::{ANY, FIRST_CIDR, Identity},
    net::{DIR_EGRESS, DIR_INGRESS, PROTO_ANY, PROTO_TCP, PROTO_UDP, v4_mapped},
};

use super::{Action, Cidr, Mode, NetRule, NetworkPolicy, Peer, Protocol};
use crate::identity::Tags;

/// A workload as the compiler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Identity number.
    pub identity: Identity,
    /// Name (for explanations).
    pub name: String,
    /// Tags.
    pub tags: Tags,
    /// Addresses it is reachable at.
    pub addresses: Vec<IpAddr>,
}

/// Traffic direction, from the workload's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Connections and datagrams it sends.
    Egress,
    /// Connections and datagrams it receives.
    Ingress,
}

impl Direction {
    /// The kernel's `DIR_*` byte.
    #[must_use]
    pub fn byte(self) -> u8 {
        match self {
            Self::Egress => DIR_EGRESS,
            Self::Ingress => DIR_INGRESS,
        }
    }

    /// `egress` or `ingress`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
        }
    }
}

/// What decided, for events and `explain`: rule id `n` is `rules[n - 1]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleInfo {
    /// A rule of a policy.
    Rule {
        /// The policy.
        policy: String,
        /// The direction list it is in.
        direction: Direction,
        /// 0-based position in that list.
        index: usize,
        /// Allow or deny.
        action: Action,
    },
    /// Nothing allowed it under the allow-list mode these policies put the workload in.
    Default {
        /// The direction.
        direction: Direction,
        /// The selecting policies.
        policies: Vec<String>,
    },
}

impl std::fmt::Display for RuleInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rule { policy, direction, index, action } => {
                let action = if *action == Action::Deny { "deny" } else { "allow" };
                write!(f, "{policy} {}[{index}] ({action})", direction.name())
            }
            Self::Default { direction, policies } => {
                write!(f, "no {} rule allows it (allow-list mode from {})", direction.name(), policies.join(", "))
            }
        }
    }
}

/// A port block: `port` with its lowest `16 - bits` bits free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortBlock {
    /// First port of the block.
    pub port: u16,
    /// Fixed leading bits (0: all ports, 16: one port).
    pub bits: u8,
}

/// (local identity, remote identity, protocol, direction byte, port): an exact entry.
pub type ExactKey = (Identity, Identity, u8, u8, u16);
/// (local identity, remote identity, protocol, direction byte, block): a block entry.
pub type BlockKey = (Identity, Identity, u8, u8, PortBlock);

/// The compiled state, without generation (the datapath adds it when it writes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Exact-port entries.
    pub exact: BTreeMap<ExactKey, NetRuleValue>,
    /// Port-block entries.
    pub blocks: BTreeMap<BlockKey, NetRuleValue>,
    /// ipcache: (IPv6 or IPv4-mapped address, prefix length 0..=128) → identity.
    pub ipcache: BTreeMap<([u8; 16], u8), Identity>,
    /// Rule id `n` describes `rules[n - 1]`.
    pub rules: Vec<RuleInfo>,
    /// The identity of each CIDR named by a policy.
    pub cidrs: BTreeMap<Cidr, Identity>,
}

/// Which remotes a rule's peer covers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Peers {
    All,
    Some(BTreeSet<Identity>),
}

/// One rule, resolved against the endpoints.
#[derive(Clone, Debug)]
struct Resolved<'a> {
    id: u32,
    rule: &'a NetRule,
    peers: Peers,
}

fn mapped(addr: IpAddr) -> ([u8; 16], u8) {
    match addr {
        IpAddr::V4(a) => (v4_mapped(a.octets()), 128),
        IpAddr::V6(a) => (a.octets(), 128),
    }
}

/// The prefix of `c` in the ipcache's 128-bit space.
#[must_use]
pub fn cidr_key(c: &Cidr) -> ([u8; 16], u8) {
    match c.addr {
        IpAddr::V4(a) => (v4_mapped(a.octets()), c.len + 96),
        IpAddr::V6(a) => (a.octets(), c.len),
    }
}

/// Whether `addr` is inside `c`.
#[must_use]
pub fn cidr_contains(c: &Cidr, addr: IpAddr) -> bool {
    match (c.addr, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(c.len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(c.len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn cidr_within(inner: &Cidr, outer: &Cidr) -> bool {
    inner.len >= outer.len && cidr_contains(outer, inner.addr)
}

/// The selected workload's rules in one direction, and how to fill the gaps.
struct Selection<'a> {
    rules: Vec<Resolved<'a>>,
    audit: bool,
    default_id: u32,
}

impl Selection<'_> {
    /// The verdict for remote `r` (`ANY`: a remote no rule names) on `proto` and `port`
    /// (`proto == PROTO_ANY`: another protocol, decided by rules that name none), from the
    /// rules at indices `among` (ascending; they must include every rule that can apply to `r`).
    fn verdict(&self, among: &[usize], r: Identity, proto: u8, port: u16) -> (Verdict, u32) {
        let applies = |x: &&Resolved<'_>| {
            let peer = match &x.peers {
                Peers::All => true,
                Peers::Some(set) => r != ANY && set.contains(&r),
            };
            peer && ports::covers(&x.rule.ports, proto, port)
        };
        let rules = || among.iter().filter_map(|&i| self.rules.get(i));
        let deny = |v: Verdict| if self.audit && v == Verdict::Deny { Verdict::Audit } else { v };
        if let Some(x) = rules().filter(applies).find(|x| x.rule.action == Action::Deny) {
            return (deny(Verdict::Deny), x.id);
        }
        if let Some(x) = rules().find(applies) {
            return (Verdict::Allow, x.id);
        }
        (deny(Verdict::Deny), self.default_id)
    }

    /// Remote `r`'s verdict over the port segments on which none of the rules `among` changes.
    fn function(&self, among: &[usize], r: Identity, proto: u8) -> Vec<(u16, u16, (Verdict, u32))> {
        let bounds = ports::boundaries(among.iter().filter_map(|&i| self.rules.get(i)).map(|x| x.rule), proto);
        ports::segments(&bounds).map(|(lo, hi)| (lo, hi, self.verdict(among, r, proto, lo))).collect()
    }
}

/// Compiles `policies` for `endpoints`.
#[must_use]
pub fn compile(policies: &[NetworkPolicy], endpoints: &[Endpoint]) -> Compiled {
    compile_with_remotes(policies, endpoints, &[])
}

/// [`compile`], with workloads of other agents (`remotes`, their identities local numbers for
/// verified senders) selectable by tags in `from:`/`to:` rules. Remotes are never subjects and
/// own no addresses here: a remote is recognised by its verified identity token, never by an
/// address.
#[must_use]
pub fn compile_with_remotes(policies: &[NetworkPolicy], endpoints: &[Endpoint], remotes: &[Endpoint]) -> Compiled {
    let mut out = Compiled::default();
    let all_cidrs: BTreeSet<Cidr> = policies
        .iter()
        .flat_map(|p| p.egress.iter().chain(p.ingress.iter()).flatten())
        .filter_map(|r| if let Peer::Cidrs(c) = &r.peer { Some(c.iter().copied()) } else { None })
        .flatten()
        .collect();
    for (n, c) in all_cidrs.iter().enumerate() {
        let id = FIRST_CIDR + u32::try_from(n).unwrap_or(u32::MAX - FIRST_CIDR);
        out.cidrs.insert(*c, id);
        out.ipcache.insert(cidr_key(c), id);
    }
    let mut owners: HashMap<IpAddr, BTreeSet<Identity>> = HashMap::new();
    for e in endpoints {
        for a in &e.addresses {
            owners.entry(*a).or_default().insert(e.identity);
        }
    }
    for (addr, ids) in &owners {
        if let [only] = ids.iter().copied().collect::<Vec<_>>()[..] {
            out.ipcache.insert(mapped(*addr), only);
        }
    }

    // Rule ids, in policy order.
    let mut ids: HashMap<(usize, Direction, usize), u32> = HashMap::new();
    for (pi, p) in policies.iter().enumerate() {
        for (direction, list) in [(Direction::Egress, &p.egress), (Direction::Ingress, &p.ingress)] {
            for (index, rule) in list.iter().flatten().enumerate() {
                out.rules.push(RuleInfo::Rule { policy: p.name.clone(), direction, index, action: rule.action });
                ids.insert((pi, direction, index), u32::try_from(out.rules.len()).unwrap_or(u32::MAX));
            }
        }
    }
    let peers_of = |rule: &NetRule| match &rule.peer {
        Peer::Any => Peers::All,
        Peer::Selector(s) => {
            Peers::Some(endpoints.iter().chain(remotes).filter(|e| s.matches(&e.tags)).map(|e| e.identity).collect())
        }
        Peer::Cidrs(cs) => Peers::Some(
            cs.iter()
                .flat_map(|c| {
                    let inner = out.cidrs.iter().filter(|(x, _)| cidr_within(x, c)).map(|(_, id)| *id);
                    let eps = endpoints
                        .iter()
                        .filter(|e| e.addresses.iter().any(|a| cidr_contains(c, *a)))
                        .map(|e| e.identity);
                    inner.chain(eps).collect::<Vec<_>>()
                })
                .collect(),
        ),
    };
    let mut defaults: HashMap<(Direction, Vec<String>), u32> = HashMap::new();
    // Entries are written here while `peers_of` still borrows `out.cidrs`, then moved over.
    let mut emitted = Compiled::default();
    for local in endpoints {
        for direction in [Direction::Egress, Direction::Ingress] {
            let selecting: Vec<(usize, &NetworkPolicy)> = policies
                .iter()
                .enumerate()
                .filter(|(_, p)| p.subject.matches(&local.tags))
                .filter(|(_, p)| match direction {
                    Direction::Egress => p.egress.is_some(),
                    Direction::Ingress => p.ingress.is_some(),
                })
                .collect();
            if selecting.is_empty() {
                continue;
            }
            let names: Vec<String> = selecting.iter().map(|(_, p)| p.name.clone()).collect();
            let default_id = *defaults.entry((direction, names.clone())).or_insert_with(|| {
                out.rules.push(RuleInfo::Default { direction, policies: names });
                u32::try_from(out.rules.len()).unwrap_or(u32::MAX)
            });
            let mut rules = Vec::new();
            for (pi, p) in &selecting {
                let list = match direction {
                    Direction::Egress => &p.egress,
                    Direction::Ingress => &p.ingress,
                };
                for (index, rule) in list.iter().flatten().enumerate() {
                    rules.push(Resolved { id: ids[&(*pi, direction, index)], rule, peers: peers_of(rule) });
                }
            }
            let selection = Selection {
                audit: selecting.iter().all(|(_, p)| p.mode == Mode::Audit),
                rules,
                default_id,
            };
            emit(&selection, local.identity, direction.byte(), &mut emitted);
        }
    }
    out.exact = emitted.exact;
    out.blocks = emitted.blocks;
    out
}

/// Emits the entries of one selected workload in one direction.
///
/// Each remote is judged only by the rules that can apply to it (those naming it and those
/// naming every peer), over its own port segments: linear in the rules per remote, so 100k
/// rules over 1000 addresses compile in well under a second.
fn emit(sel: &Selection<'_>, local: Identity, dir: u8, out: &mut Compiled) {
    let mut every: Vec<usize> = Vec::new();
    let mut naming: BTreeMap<Identity, Vec<usize>> = BTreeMap::new();
    for (i, x) in sel.rules.iter().enumerate() {
        match &x.peers {
            Peers::All => every.push(i),
            Peers::Some(set) => set.iter().for_each(|r| naming.entry(*r).or_default().push(i)),
        }
    }
    let subsets: Vec<(Identity, Vec<usize>)> = naming
        .into_iter()
        .map(|(r, own)| {
            let mut among: Vec<usize> = own.into_iter().chain(every.iter().copied()).collect();
            among.sort_unstable();
            among.dedup();
            (r, among)
        })
        .collect();
    for proto in [PROTO_TCP, PROTO_UDP, PROTO_ANY] {
        let any = sel.function(&every, ANY, proto);
        put(local, ANY, proto, dir, &any, out);
        for (r, among) in &subsets {
            // `among` holds every rule of `every`, so r's segments refine ANY's: compare there.
            let f = sel.function(among, *r, proto);
            let same = f.iter().all(|&(lo, _, v)| sel.verdict(&every, ANY, proto, lo) == v);
            if !same {
                put(local, *r, proto, dir, &f, out);
            }
        }
    }
}

fn value((v, rule_id): (Verdict, u32)) -> NetRuleValue {
    NetRuleValue { verdict: v as u8, _pad: [0; 3], rule_id }
}

/// Writes one remote's port function: the base value as a 0-bit block, the rest as exact
/// entries and blocks.
fn put(local: Identity, r: Identity, proto: u8, dir: u8, f: &[(u16, u16, (Verdict, u32))], out: &mut Compiled) {
    // The base: what a port no port-specific rule names gets (port 0 is never named), the
    // first segment's verdict (segments start at port 0).
    let Some(&(_, _, base)) = f.first() else { return };
    out.blocks.insert((local, r, proto, dir, PortBlock { port: 0, bits: 0 }), value(base));
    if proto == PROTO_ANY {
        return;
    }
    for &(lo, hi, v) in f {
        if v == base {
            continue;
        }
        if lo == hi {
            out.exact.insert((local, r, proto, dir, lo), value(v));
        } else {
            for b in ports::blocks(lo, hi) {
                out.blocks.insert((local, r, proto, dir, b), value(v));
            }
        }
    }
}

/// The compiled rule that `rule_id` names, if any.
#[must_use]
pub fn describe(compiled: &Compiled, rule_id: u32) -> Option<&RuleInfo> {
    compiled.rules.get(usize::try_from(rule_id).ok()?.checked_sub(1)?)
}

/// Protocol byte of a rule protocol.
#[must_use]
pub fn proto_byte(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
}

/// What the kernel's lookup (`enforcer-ebpf/src/decide.rs`) finds in `c` for a decision, or
/// `None` when nothing is compiled for it (the workload's posture applies). Used by `explain`
/// so that it answers from exactly what the kernel holds.
#[must_use]
pub fn lookup(c: &Compiled, local: Identity, remote: Identity, proto: u8, port: u16, dir: u8) -> Option<NetRuleValue> {
    let (proto, port) = if proto == PROTO_TCP || proto == PROTO_UDP { (proto, port) } else { (PROTO_ANY, 0) };
    for r in [remote, ANY] {
        if let Some(v) = c.exact.get(&(local, r, proto, dir, port)) {
            return Some(*v);
        }
        let lo = (local, r, proto, dir, PortBlock { port: 0, bits: 0 });
        let hi = (local, r, proto, dir, PortBlock { port: u16::MAX, bits: u8::MAX });
        let best = c
            .blocks
            .range(lo..=hi)
            .filter(|((.., b), _)| b.bits == 0 || port >> (16 - b.bits) == b.port >> (16 - b.bits))
            .max_by_key(|((.., b), _)| b.bits);
        if let Some((_, v)) = best {
            return Some(*v);
        }
    }
    None
}

/// The identity the ipcache gives `addr` (longest prefix), or `WORLD`.
#[must_use]
pub fn remote_of(c: &Compiled, addr: IpAddr) -> Identity {
    let (a, _) = mapped(addr);
    c.ipcache
        .iter()
        .filter(|((prefix, len), _)| {
            let bits = u32::from(*len);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from_be_bytes(*prefix) & mask == u128::from_be_bytes(a) & mask
        })
        .max_by_key(|((_, len), _)| *len)
        .map_or(enforcer_common::identity::WORLD, |(_, id)| *id)
}
