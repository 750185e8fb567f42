//! The `FilePolicy` compiler: policies plus endpoints in, one longest-prefix table per selected
//! workload out, keyed by identity and path bytes, each entry holding the verdict for read,
//! write and exec. Pure, like the network compiler; the kernel side (an LPM trie read by
//! `lsm/file_open` and `bprm_check_security`) and the fanotify fallback read the same table.
//!
//! Semantics: for each access, the longest rule path that matches and names that access
//! decides (deny wins between rules on the same path); a subtree rule (`/etc/ssl/`) matches
//! the directory itself and everything below it, an exact rule (`/etc/shadow`) only that file.
//! What no rule decides is denied (audited when every selecting policy is `audit`) — the
//! allow-list mode of a selected workload. Each emitted path carries all three verdicts,
//! inherited from the nearest enclosing subtree rule where it names none of its own, so the
//! kernel needs one lookup: the longest key that is a prefix of `path` followed by a NUL.

use std::collections::BTreeMap;

use enforcer_common::{
    Verdict,
    event::{ACCESS_EXEC, ACCESS_READ, ACCESS_WRITE},
    identity::Identity,
};

use super::Endpoint;
use crate::policy::{Access, Action, FilePolicy, Mode};

/// Accesses, in the order of [`FileEntry`]'s arrays.
pub const ACCESSES: [Access; 3] = [Access::Read, Access::Write, Access::Exec];

/// The verdict per access at one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Read, write, exec.
    pub verdicts: [Verdict; 3],
    /// The rule that decided each (`rules[n - 1]`).
    pub rule_ids: [u32; 3],
}

impl FileEntry {
    /// The verdict for an open requesting `access` (`ACCESS_*` bits) and the rule behind it:
    /// deny if any requested access is denied, audit if any is audited, allow otherwise. The
    /// kernel's `lsm/file_open` combines the same way; an open requesting none of the three
    /// accesses is allowed.
    #[must_use]
    pub fn decide(&self, access: u8) -> (Verdict, u32) {
        let mut out = (Verdict::Allow, self.rule_ids[0]);
        let bits = [ACCESS_READ, ACCESS_WRITE, ACCESS_EXEC];
        for ((bit, v), id) in bits.iter().zip(self.verdicts).zip(self.rule_ids) {
            if access & bit == 0 {
                continue;
            }
            if v == Verdict::Deny || (v == Verdict::Audit && out.0 == Verdict::Allow) {
                out = (v, id);
            } else if out.0 == Verdict::Allow {
                out.1 = id;
            }
        }
        out
    }
}

/// What decided a file verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileRuleInfo {
    /// A rule of a policy.
    Rule {
        /// The policy.
        policy: String,
        /// 0-based position in its `rules`.
        index: usize,
    },
    /// Nothing allowed it under the allow-list mode these policies put the workload in.
    Default {
        /// The selecting policies.
        policies: Vec<String>,
    },
}

impl std::fmt::Display for FileRuleInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rule { policy, index } => write!(f, "{policy} rules[{index}]"),
            Self::Default { policies } => write!(f, "no file rule allows it (allow-list mode from {})", policies.join(", ")),
        }
    }
}

/// The compiled file state, without generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileCompiled {
    /// (identity, key bytes) → verdicts. Key bytes are the path for a subtree (ending in `/`)
    /// and the path plus a NUL for an exact file or a subtree's own directory.
    pub entries: BTreeMap<(Identity, Vec<u8>), FileEntry>,
    /// Rule id `n` describes `rules[n - 1]`.
    pub rules: Vec<FileRuleInfo>,
}

impl FileCompiled {
    /// Whether a `FilePolicy` selects the workload with `identity` (it has entries).
    #[must_use]
    pub fn selects(&self, identity: Identity) -> bool {
        self.entries.range((identity, Vec::new())..(identity.saturating_add(1), Vec::new())).next().is_some()
    }
}

/// One rule path with what it says per access: `None` when it names the access not.
#[derive(Clone, Debug)]
struct PathRules {
    per_access: [Option<(Action, u32)>; 3],
}

fn access_index(a: Access) -> usize {
    ACCESSES.iter().position(|x| *x == a).unwrap_or(0)
}

/// Compiles `policies` for `endpoints`.
#[must_use]
pub fn compile_files(policies: &[FilePolicy], endpoints: &[Endpoint]) -> FileCompiled {
    let mut out = FileCompiled::default();
    let mut ids = BTreeMap::new();
    for (pi, p) in policies.iter().enumerate() {
        for index in 0..p.rules.len() {
            out.rules.push(FileRuleInfo::Rule { policy: p.name.clone(), index });
            ids.insert((pi, index), u32::try_from(out.rules.len()).unwrap_or(u32::MAX));
        }
    }
    let mut defaults: BTreeMap<Vec<String>, u32> = BTreeMap::new();
    for local in endpoints {
        let selecting: Vec<(usize, &FilePolicy)> =
            policies.iter().enumerate().filter(|(_, p)| p.subject.matches(&local.tags)).collect();
        if selecting.is_empty() {
            continue;
        }
        let names: Vec<String> = selecting.iter().map(|(_, p)| p.name.clone()).collect();
        let default_id = *defaults.entry(names.clone()).or_insert_with(|| {
            out.rules.push(FileRuleInfo::Default { policies: names });
            u32::try_from(out.rules.len()).unwrap_or(u32::MAX)
        });
        let denied = if selecting.iter().all(|(_, p)| p.mode == Mode::Audit) { Verdict::Audit } else { Verdict::Deny };

        // What each path says, deny winning between rules on the same path and access.
        let mut paths: BTreeMap<String, PathRules> = BTreeMap::new();
        for (pi, p) in &selecting {
            for (ri, rule) in p.rules.iter().enumerate() {
                let accesses: Vec<Access> = if rule.access.is_empty() { ACCESSES.to_vec() } else { rule.access.clone() };
                for path in &rule.paths {
                    let entry = paths.entry(path.clone()).or_insert(PathRules { per_access: [None; 3] });
                    for a in &accesses {
                        let slot = &mut entry.per_access[access_index(*a)];
                        let this = (rule.action, ids[&(*pi, ri)]);
                        if slot.is_none_or(|(action, _)| action == Action::Allow && rule.action == Action::Deny) {
                            *slot = Some(this);
                        }
                    }
                }
            }
        }
        paths.entry("/".to_owned()).or_insert(PathRules { per_access: [None; 3] });

        // Resolve each path against its enclosing subtrees (shorter paths come first in a
        // BTreeMap only by chance, so walk ancestors explicitly).
        let resolve = |path: &str| -> FileEntry {
            let mut verdicts = [denied; 3];
            let mut rule_ids = [default_id; 3];
            for (i, (v, id)) in verdicts.iter_mut().zip(rule_ids.iter_mut()).enumerate() {
                let decided = paths
                    .iter()
                    .filter(|(p, r)| r.per_access[i].is_some() && covers(p, path))
                    .max_by_key(|(p, _)| p.len())
                    .and_then(|(_, r)| r.per_access[i]);
                if let Some((action, rule)) = decided {
                    *v = if action == Action::Deny { denied } else { Verdict::Allow };
                    *id = rule;
                }
            }
            FileEntry { verdicts, rule_ids }
        };
        for path in paths.keys() {
            let entry = resolve(path);
            if let Some(dir) = path.strip_suffix('/') {
                out.entries.insert((local.identity, path.as_bytes().to_vec()), entry);
                // The subtree's own directory, as `d_path` reports it (no trailing `/`).
                let own = if dir.is_empty() { "/" } else { dir };
                let mut key = own.as_bytes().to_vec();
                key.push(0);
                out.entries.insert((local.identity, key), resolve(own));
            } else {
                let mut key = path.as_bytes().to_vec();
                key.push(0);
                out.entries.insert((local.identity, key), entry);
            }
        }
    }
    out
}

/// Whether rule path `rule` matches the opened `path`: equal, or `rule` is a subtree
/// (`/dir/`) containing it or naming its directory (`/dir`).
fn covers(rule: &str, path: &str) -> bool {
    match rule.strip_suffix('/') {
        Some(dir) => path.starts_with(rule) || path == dir || (dir.is_empty() && path == "/"),
        None => rule == path,
    }
}

/// What the kernel finds for `identity` opening `path`: the longest key that is a prefix of
/// `path` followed by a NUL. `None`: nothing compiled for the workload (its posture applies).
///
/// Keys end in a NUL (an exact path, which only the whole `path` can match) or in `/` (a
/// subtree), so only the whole path and its prefixes ending in `/` are looked up, longest
/// first: one ordered lookup per path component, whatever the number of rules.
#[must_use]
pub fn lookup(c: &FileCompiled, identity: Identity, path: &str) -> Option<FileEntry> {
    let bytes = path.as_bytes();
    let mut key = (identity, Vec::with_capacity(bytes.len() + 1));
    key.1.extend_from_slice(bytes);
    key.1.push(0);
    if let Some(e) = c.entries.get(&key) {
        return Some(*e);
    }
    for end in (0..bytes.len()).rev().filter(|&i| bytes[i] == b'/') {
        key.1.truncate(end + 1);
        if let Some(e) = c.entries.get(&key) {
            return Some(*e);
        }
    }
    None
}

#[cfg(test)]
mod tests;
