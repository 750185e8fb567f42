//! `enforcer policy suggest`: an observation turned into a `NetworkPolicy` and a `FilePolicy` that
//! allow exactly what was seen, generalised as a careful operator would:
//!
//! - peers by their most specific stable labels (an address only where no workload was known);
//! - ports exact, one rule per peer and direction;
//! - files exact, except: the system library and executable directories are granted as whole
//!   subtrees (with the accesses used there), `/proc/` likewise (its paths carry process ids),
//!   and a directory where at least [`SIBLINGS`] files were used with the same accesses becomes
//!   its subtree — never `/`, `/tmp/`, `/var/tmp/` or `/dev/shm/`.
//!
//! Every rule carries a comment saying what it covers and how many events it summarises. Pure
//! and deterministic: the same observation gives the same text.

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use serde::{Deserialize, Serialize};

/// Who the other end of a flow was.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerSeen {
    /// A workload (here or on a peer agent), by its most specific stable labels.
    Labels(BTreeMap<String, String>),
    /// No known workload: its address.
    Address(IpAddr),
}

/// One kind of flow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowSeen {
    /// `egress` or `ingress`.
    pub direction: String,
    /// The other end.
    pub peer: PeerSeen,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The port on the serving side.
    pub port: u16,
}

/// A path and what was done to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSeen {
    /// Read, write, exec seen.
    pub read: bool,
    /// See `read`.
    pub write: bool,
    /// See `read`.
    pub exec: bool,
    /// Opens.
    pub count: u64,
}

/// One workload's observation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// When it started (Unix seconds).
    pub since: u64,
    /// When it ends by itself (Unix seconds), if given a duration.
    pub until: Option<u64>,
    /// Still running (stopped observations keep their summary for `policy suggest`).
    pub active: bool,
    /// Flows, with how many times each was seen.
    pub flows: Vec<(FlowSeen, u64)>,
    /// Paths.
    pub files: BTreeMap<String, FileSeen>,
    /// Events not kept because a bound was reached.
    pub dropped: u64,
}


/// Files in one directory that make it a subtree rule.
pub const SIBLINGS: usize = 4;
/// Directories granted as subtrees whenever anything below them is used.
const SYSTEM_DIRS: [&str; 11] = [
    "/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/usr/local/lib/", "/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/",
    "/usr/local/bin/", "/proc/",
];
/// Directories never granted as a whole.
const NEVER_SUBTREE: [&str; 4] = ["/", "/tmp/", "/var/tmp/", "/dev/shm/"];

/// `n thing` or `n things`.
fn count(n: u64, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{n} {thing}s") }
}

/// A selector text for labels: `k=v,k2=v2`.
fn selector(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn access_list(f: &FileSeen) -> Vec<&'static str> {
    [(f.read, "read"), (f.write, "write"), (f.exec, "exec")].into_iter().filter(|(on, _)| *on).map(|(_, a)| a).collect()
}

/// The policies for workload `name`, selected by `subject` labels.
///
/// # Errors
/// When the workload has no labels to select it by (label it first).
pub fn suggest(name: &str, subject: &BTreeMap<String, String>, o: &Observation) -> Result<String, String> {
    if subject.is_empty() {
        return Err(format!(
            "workload {name:?} has no labels a policy could select it by; give it one first \
             (`enforcer label {name} app=NAME`), then suggest again"
        ));
    }
    let base: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let mut out = String::new();
    let _ = writeln!(out, "# Suggested by `enforcer policy suggest {name}` from observing it since {} (Unix time).", o.since);
    let _ = writeln!(out, "# It allows exactly what was seen; read it, edit it, then `enforcer policy apply` it.");
    if o.dropped > 0 {
        let _ = writeln!(out, "# {} events were not summarised (bounds reached): review before applying.", o.dropped);
    }
    network(&mut out, &base, subject, o);
    out.push_str("---\n");
    files(&mut out, &base, subject, o);
    Ok(out)
}

fn network(out: &mut String, base: &str, subject: &BTreeMap<String, String>, o: &Observation) {
    let _ = writeln!(out, "kind: NetworkPolicy\nname: {base}-observed-network\nsubject: \"{}\"", selector(subject));
    for (direction, key, peer_key, cidr_key) in [("egress", "egress", "to", "toCIDR"), ("ingress", "ingress", "from", "fromCIDR")] {
        // Peer → port → count.
        let mut by_peer: BTreeMap<&PeerSeen, BTreeMap<(String, u16), u64>> = BTreeMap::new();
        for (f, n) in o.flows.iter().filter(|(f, _)| f.direction == direction) {
            *by_peer.entry(&f.peer).or_default().entry((f.protocol.clone(), f.port)).or_default() += n;
        }
        if by_peer.is_empty() {
            let _ = writeln!(out, "{key}: []    # nothing seen: no {direction} allowed");
            continue;
        }
        let _ = writeln!(out, "{key}:");
        for (peer, ports) in by_peer {
            let total: u64 = ports.values().sum();
            let list: Vec<String> = ports.keys().map(|(p, n)| format!("\"{p}/{n}\"")).collect();
            match peer {
                PeerSeen::Labels(l) => {
                    let _ = writeln!(out, "  # {} with workloads labelled {}", count(total, &format!("{direction} flow")), selector(l));
                    let _ = writeln!(out, "  - {peer_key}: \"{}\"", selector(l));
                }
                PeerSeen::Address(a) => {
                    let bits = if a.is_ipv4() { 32 } else { 128 };
                    let _ = writeln!(out, "  # {} with {a}, not a known workload", count(total, &format!("{direction} flow")));
                    let _ = writeln!(out, "  - {cidr_key}: [\"{a}/{bits}\"]");
                }
            }
            let _ = writeln!(out, "    ports: [{}]", list.join(", "));
        }
    }
}

/// A grouped file rule: paths, accesses and how many opens it covers.
struct Group {
    paths: Vec<String>,
    access: Vec<&'static str>,
    opens: u64,
    why: String,
}

fn files(out: &mut String, base: &str, subject: &BTreeMap<String, String>, o: &Observation) {
    let _ = writeln!(out, "kind: FilePolicy\nname: {base}-observed-files\nsubject: \"{}\"", selector(subject));
    let mut groups: Vec<Group> = Vec::new();
    let mut rest: BTreeMap<&str, &FileSeen> = BTreeMap::new();
    let mut system: BTreeMap<&str, FileSeen> = BTreeMap::new();
    for (path, f) in &o.files {
        match SYSTEM_DIRS.iter().find(|d| path.starts_with(**d)) {
            Some(dir) => {
                let s = system.entry(dir).or_default();
                s.read |= f.read;
                s.write |= f.write;
                s.exec |= f.exec;
                s.count += f.count;
            }
            None => {
                rest.insert(path.as_str(), f);
            }
        }
    }
    for (dir, s) in &system {
        groups.push(Group { paths: vec![(*dir).to_owned()], access: access_list(s), opens: s.count, why: "system directory".into() });
    }
    // Directories with many siblings used the same way.
    let mut by_dir: BTreeMap<(String, Vec<&'static str>), Vec<&str>> = BTreeMap::new();
    for (path, f) in &rest {
        let dir = path.rfind('/').map_or("/", |i| &path[..=i]).to_owned();
        by_dir.entry((dir, access_list(f))).or_default().push(path);
    }
    let mut exact: BTreeMap<Vec<&'static str>, Vec<&str>> = BTreeMap::new();
    for ((dir, access), paths) in by_dir {
        if paths.len() >= SIBLINGS && !NEVER_SUBTREE.contains(&dir.as_str()) {
            let opens = paths.iter().map(|p| rest[p].count).sum();
            groups.push(Group { paths: vec![dir], access, opens, why: format!("{} files used there", paths.len()) });
        } else {
            exact.entry(access).or_default().extend(paths);
        }
    }
    for (access, paths) in exact {
        let opens = paths.iter().map(|p| rest[p].count).sum();
        groups.push(Group { paths: paths.iter().map(|p| (*p).to_owned()).collect(), access, opens, why: "files used".into() });
    }
    if groups.is_empty() {
        let _ = writeln!(out, "rules: []    # no file opens seen: nothing allowed");
        return;
    }
    let _ = writeln!(out, "rules:");
    for g in groups {
        let _ = writeln!(out, "  # {} ({}): {}", count(g.opens, "open"), g.access.join(", "), g.why);
        let paths: Vec<String> = g.paths.iter().map(|p| format!("\"{p}\"")).collect();
        let _ = writeln!(out, "  - paths: [{}]\n    access: [{}]", paths.join(", "), g.access.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::{self, Policy};

    fn seen(read: bool, write: bool, exec: bool, count: u64) -> FileSeen {
        FileSeen { read, write, exec, count }
    }

    fn observation() -> Observation {
        let mut o = Observation { since: 1_800_000_000, active: false, ..Observation::default() };
        o.flows = vec![
            (FlowSeen { direction: "egress".into(), peer: PeerSeen::Address("127.0.0.1".parse().expect("ip")), protocol: "tcp".into(), port: 8080 }, 5),
            (FlowSeen { direction: "egress".into(), peer: PeerSeen::Labels(BTreeMap::from([("app".into(), "db".into())])), protocol: "tcp".into(), port: 5432 }, 2),
            (FlowSeen { direction: "ingress".into(), peer: PeerSeen::Labels(BTreeMap::from([("app".into(), "lb".into())])), protocol: "tcp".into(), port: 443 }, 9),
        ];
        for i in 0..5 {
            o.files.insert(format!("/srv/www/page{i}.html"), seen(true, false, false, 2));
        }
        for i in 0..6 {
            o.files.insert(format!("/tmp/scratch{i}"), seen(true, true, false, 1));
        }
        o.files.insert("/etc/hosts".into(), seen(true, false, false, 3));
        o.files.insert("/var/log/app.log".into(), seen(false, true, false, 1));
        o.files.insert("/usr/lib/x86_64-linux-gnu/libc.so.6".into(), seen(true, false, true, 4));
        o.files.insert("/usr/bin/python3".into(), seen(true, false, true, 1));
        o.files.insert("/proc/123/maps".into(), seen(true, false, false, 1));
        o
    }

    #[test]
    fn suggestion_is_valid_stable_and_generalised_with_care() {
        let subject = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        let text = suggest("web", &subject, &observation()).expect("suggest");
        assert_eq!(text, suggest("web", &subject, &observation()).expect("again"), "stable");
        let policies = policy::parse::parse_str(Path::new("suggested.yaml"), &text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        assert_eq!(policies.len(), 2, "{text}");
        for p in &policies {
            match p {
                Policy::Network(n) => {
                    let egress = n.egress.as_ref().expect("egress");
                    assert_eq!(egress.len(), 2, "one rule per peer");
                    assert!(text.contains("toCIDR: [\"127.0.0.1/32\"]") && text.contains("\"tcp/8080\""), "{text}");
                    assert!(text.contains("to: \"app=db\""), "peers by label, not address: {text}");
                    assert!(text.contains("from: \"app=lb\""), "{text}");
                }
                Policy::File(f) => {
                    let paths: Vec<&str> = f.rules.iter().flat_map(|r| r.paths.iter().map(String::as_str)).collect();
                    assert!(paths.contains(&"/srv/www/"), "many siblings: a subtree: {paths:?}");
                    assert!(!paths.contains(&"/tmp/"), "never /tmp/: {paths:?}");
                    assert!(paths.contains(&"/tmp/scratch0"), "{paths:?}");
                    assert!(paths.contains(&"/usr/lib/") && paths.contains(&"/usr/bin/") && paths.contains(&"/proc/"), "{paths:?}");
                    assert!(paths.contains(&"/etc/hosts") && !paths.contains(&"/etc/"), "few siblings: exact: {paths:?}");
                    assert!(!paths.contains(&"/"));
                }
            }
        }
        assert!(text.contains("# 5 egress flows with 127.0.0.1"), "{text}");
        assert!(text.contains("# 1 ingress flow") || text.contains("# 9 ingress flows"), "{text}");
        assert!(text.contains("# 10 opens (read): 5 files used there"), "{text}");
    }

    #[test]
    fn an_unlabelled_workload_is_refused_and_nothing_seen_allows_nothing() {
        assert!(suggest("web", &BTreeMap::new(), &observation()).is_err_and(|e| e.contains("enforcer label web")));
        let subject = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        let text = suggest("web", &subject, &Observation::default()).expect("empty");
        let policies = policy::parse::parse_str(Path::new("s.yaml"), &text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        assert_eq!(policies.len(), 2);
        assert!(text.contains("egress: []") && text.contains("rules: []"), "{text}");
    }
}
