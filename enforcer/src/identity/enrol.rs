//! Enrolment: the set of workloads below the managed root, kept current by rescanning.
//!
//! A workload is named by its cgroup path relative to the root. Labels come from the config's
//! `[[workload]]` entries and are inherited by nested cgroups, which add their own.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use enforcer_common::identity::{FIRST_WORKLOAD, Identity};
use serde::Serialize;

use super::{Tags, cgroup, validate_label};
use crate::config::WorkloadLabels;

/// One enrolled workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadInfo {
    /// cgroup path relative to the managed root.
    pub name: String,
    /// The kernel's id of its cgroup.
    pub cgroup_id: u64,
    /// Its identity number in the kernel maps.
    pub identity: Identity,
    /// Operator labels (config and `enforcer label`), inherited ones included.
    pub labels: Tags,
    /// Everything policies select on: the labels plus the system tags the agent found.
    pub tags: Tags,
}

/// What a rescan changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Workloads that appeared (or whose cgroup was recreated).
    pub added: Vec<WorkloadInfo>,
    /// Workloads that disappeared.
    pub removed: Vec<WorkloadInfo>,
}

/// The workloads below one managed root.
#[derive(Debug)]
pub struct Enrolment {
    root: PathBuf,
    configured: BTreeMap<String, Tags>,
    assigned: BTreeMap<String, Tags>,
    facts: BTreeMap<String, Tags>,
    workloads: BTreeMap<String, WorkloadInfo>,
    next_identity: Identity,
    /// Identities a previous agent gave cgroups (from the pinned workload map), kept so that
    /// a restart renumbers nothing the kernel is enforcing.
    adopted: BTreeMap<u64, Identity>,
}

/// Why labels could not be assigned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    /// No enrolled workload has that name.
    #[error("no workload named {0:?} is enrolled")]
    UnknownWorkload(String),
    /// A label is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Nothing to assign.
    #[error("no labels given; use KEY=VALUE")]
    Empty,
}

impl Enrolment {
    /// An empty enrolment for `root`, with the operator labels of the config.
    #[must_use]
    pub fn new(root: &Path, configured: &[WorkloadLabels]) -> Self {
        Self {
            root: root.to_owned(),
            configured: configured.iter().map(|w| (w.cgroup.clone(), w.labels.clone())).collect(),
            assigned: BTreeMap::new(),
            facts: BTreeMap::new(),
            workloads: BTreeMap::new(),
            next_identity: FIRST_WORKLOAD,
            adopted: BTreeMap::new(),
        }
    }

    /// Takes over the identities a previous agent gave cgroups (`cgroup id → identity`, as the
    /// pinned workload map holds them): a cgroup found again keeps its number. Entries below
    /// [`FIRST_WORKLOAD`] (the root's pending entry) are ignored.
    pub fn adopt(&mut self, previous: impl IntoIterator<Item = (u64, Identity)>) {
        self.adopted = previous.into_iter().filter(|(_, id)| *id >= FIRST_WORKLOAD).collect();
        if let Some(max) = self.adopted.values().max() {
            self.next_identity = self.next_identity.max(max.saturating_add(1));
        }
    }

    /// The workloads currently enrolled, by name.
    #[must_use]
    pub fn workloads(&self) -> &BTreeMap<String, WorkloadInfo> {
        &self.workloads
    }

    /// Rescans the cgroup tree and returns what changed.
    ///
    /// # Errors
    /// When the root itself cannot be read. A cgroup that vanishes during the scan is skipped.
    pub fn rescan(&mut self) -> io::Result<Changes> {
        let mut found = BTreeMap::new();
        walk(&self.root, &self.root, &mut found)?;
        Ok(self.apply(&found))
    }

    /// Applies a listing of `name → cgroup id` (pure; `rescan` feeds it from cgroupfs).
    pub fn apply(&mut self, found: &BTreeMap<String, u64>) -> Changes {
        let mut changes = Changes::default();
        let gone: Vec<String> = self
            .workloads
            .iter()
            .filter(|(name, w)| found.get(*name) != Some(&w.cgroup_id))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.facts.remove(&name);
            if let Some(w) = self.workloads.remove(&name) {
                changes.removed.push(w);
            }
        }
        for (name, &cgroup_id) in found {
            if self.workloads.contains_key(name) {
                continue;
            }
            let labels = self.labels_for(name);
            let identity = match self.adopted.remove(&cgroup_id) {
                Some(id) if !self.workloads.values().any(|w| w.identity == id) => id,
                _ => {
                    self.next_identity += 1;
                    self.next_identity - 1
                }
            };
            let info = WorkloadInfo { name: name.clone(), cgroup_id, identity, tags: labels.clone(), labels };
            self.workloads.insert(name.clone(), info.clone());
            changes.added.push(info);
        }
        changes
    }

    /// Labels of `name`: each ancestor's configured then assigned labels, nearer ones
    /// overriding, and labels assigned at run time overriding the config at the same level.
    fn labels_for(&self, name: &str) -> Tags {
        let mut labels = BTreeMap::new();
        let mut prefix = String::new();
        for part in name.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            for source in [&self.configured, &self.assigned] {
                if let Some(own) = source.get(&prefix) {
                    labels.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        labels
    }

    /// Recomputes labels and tags of `name` and the workloads nested in it; returns the names
    /// whose tags changed.
    fn recompute(&mut self, name: &str) -> Vec<String> {
        let nested = format!("{name}/");
        let affected: Vec<String> =
            self.workloads.keys().filter(|n| *n == name || n.starts_with(&nested)).cloned().collect();
        let mut changed = Vec::new();
        for n in affected {
            let labels = self.labels_for(&n);
            let facts = self.facts.get(&n);
            // Plain facts (a container's labels) first, operator labels over them, then the
            // system tags, whose `@` keys no label can have.
            let mut tags: Tags = facts.into_iter().flatten().filter(|(k, _)| !k.starts_with('@')).map(|(k, v)| (k.clone(), v.clone())).collect();
            tags.extend(labels.clone());
            tags.extend(facts.into_iter().flatten().filter(|(k, _)| k.starts_with('@')).map(|(k, v)| (k.clone(), v.clone())));
            if let Some(w) = self.workloads.get_mut(&n)
                && (w.tags != tags || w.labels != labels)
            {
                w.labels = labels;
                w.tags = tags;
                changed.push(n);
            }
        }
        changed
    }

    /// Assigns operator labels to workload `name` (and, by inheritance, to the workloads
    /// nested in it). Returns the names whose tags changed.
    ///
    /// # Errors
    /// [`LabelError`] for an unknown workload, no labels, or a label that is not acceptable
    /// (a key starting with `@` claims a system tag and is refused).
    pub fn assign(&mut self, name: &str, labels: &Tags) -> Result<Vec<String>, LabelError> {
        if !self.workloads.contains_key(name) {
            return Err(LabelError::UnknownWorkload(name.to_owned()));
        }
        if labels.is_empty() {
            return Err(LabelError::Empty);
        }
        for (k, v) in labels {
            validate_label(k, v).map_err(LabelError::Invalid)?;
        }
        self.assigned.entry(name.to_owned()).or_default().extend(labels.clone());
        Ok(self.recompute(name))
    }

    /// Labels assigned at run time, by workload, for persisting.
    #[must_use]
    pub fn assigned(&self) -> &BTreeMap<String, Tags> {
        &self.assigned
    }

    /// Restores labels assigned by an earlier run (entries with invalid labels are dropped).
    pub fn restore_assigned(&mut self, assigned: BTreeMap<String, Tags>) {
        self.assigned = assigned
            .into_iter()
            .filter(|(_, labels)| labels.iter().all(|(k, v)| validate_label(k, v).is_ok()))
            .collect();
        let names: Vec<String> = self.workloads.keys().cloned().collect();
        for n in names {
            self.recompute(&n);
        }
    }

    /// Sets the facts the agent found for `name`: system tags (`@` keys) and plain tags it
    /// read from a trusted source (a container runtime's labels), which operator labels
    /// override. Returns whether the workload's tags changed.
    pub fn set_facts(&mut self, name: &str, facts: Tags) -> bool {
        if !self.workloads.contains_key(name) {
            return false;
        }
        if self.facts.get(name) == Some(&facts) {
            return false;
        }
        self.facts.insert(name.to_owned(), facts);
        self.recompute(name).iter().any(|n| n == name)
    }

    /// The workload named `name`, or whose identity number is `name`.
    #[must_use]
    pub fn find(&self, name: &str) -> Option<&WorkloadInfo> {
        self.workloads.get(name).or_else(|| {
            let id: Identity = name.parse().ok()?;
            self.workloads.values().find(|w| w.identity == id)
        })
    }

    /// The managed root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn walk(root: &Path, dir: &Path, found: &mut BTreeMap<String, u64>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if dir != root && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || !cgroup::is_cgroup(&path) {
            continue;
        }
        let (Ok(rel), Ok(id)) = (path.strip_prefix(root), cgroup::id(&path)) else {
            continue;
        };
        if let Some(name) = rel.to_str() {
            found.insert(name.to_owned(), id);
        }
        walk(root, &path, found)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn enrolment() -> Enrolment {
        Enrolment::new(
            Path::new("/sys/fs/cgroup/x"),
            &[
                WorkloadLabels { cgroup: "team".into(), labels: labels(&[("team", "a"), ("env", "dev")]) },
                WorkloadLabels { cgroup: "team/db".into(), labels: labels(&[("app", "db"), ("env", "prod")]) },
            ],
        )
    }

    #[test]
    fn nested_cgroups_inherit_and_override_labels() {
        let mut e = enrolment();
        let found = BTreeMap::from([("team".to_owned(), 10), ("team/db".to_owned(), 11), ("other".to_owned(), 12)]);
        let c = e.apply(&found);
        assert_eq!(c.added.len(), 3);
        let db = &e.workloads()["team/db"];
        assert_eq!(db.labels, labels(&[("app", "db"), ("env", "prod"), ("team", "a")]));
        assert!(e.workloads()["other"].labels.is_empty());
    }

    #[test]
    fn identities_are_unique_and_stable_across_rescans() {
        let mut e = enrolment();
        let found = BTreeMap::from([("a".to_owned(), 10), ("b".to_owned(), 11)]);
        e.apply(&found);
        let before = e.workloads().clone();
        assert_ne!(before["a"].identity, before["b"].identity);
        assert!(before.values().all(|w| w.identity >= FIRST_WORKLOAD));
        assert_eq!(e.apply(&found), Changes::default());
        assert_eq!(e.workloads(), &before);
    }

    #[test]
    fn adopted_identities_survive_and_new_ones_do_not_collide() {
        let mut e = enrolment();
        e.adopt([(10, 300), (11, 2), (99, 400)]);
        let found = BTreeMap::from([("a".to_owned(), 10), ("b".to_owned(), 11), ("c".to_owned(), 12)]);
        let changes = e.apply(&found);
        assert_eq!(changes.added.len(), 3);
        let w = e.workloads();
        assert_eq!(w["a"].identity, 300, "a cgroup found again keeps its number");
        assert!(w["b"].identity > 400 && w["c"].identity > 400, "new numbers above every adopted one: {w:?}");
        assert_ne!(w["b"].identity, w["c"].identity);
    }

    #[test]
    fn assigned_labels_inherit_and_reserved_keys_are_refused() {
        let mut e = enrolment();
        e.apply(&BTreeMap::from([("team".to_owned(), 10), ("team/db".to_owned(), 11)]));
        let changed = e.assign("team", &labels(&[("tier", "backend"), ("env", "staging")])).expect("assign");
        assert_eq!(changed, ["team", "team/db"]);
        // The nested workload's own config label still overrides the inherited assignment.
        assert_eq!(e.workloads()["team/db"].labels["env"], "prod");
        assert_eq!(e.workloads()["team/db"].labels["tier"], "backend");
        let err = e.assign("team/db", &labels(&[("@sys:uid", "0")])).expect_err("reserved");
        assert!(err.to_string().contains("only by the agent"), "{err}");
        assert_eq!(e.assign("nope", &labels(&[("a", "b")])), Err(LabelError::UnknownWorkload("nope".into())));
        assert_eq!(e.find("257").map(|w| w.name.as_str()), Some("team/db"));
    }

    #[test]
    fn facts_join_labels_and_operator_labels_win_over_runtime_labels() {
        let mut e = enrolment();
        e.apply(&BTreeMap::from([("team".to_owned(), 10)]));
        assert!(e.set_facts("team", labels(&[("@sys:uid", "65534"), ("team", "from-container"), ("tier", "web")])));
        let w = &e.workloads()["team"];
        assert_eq!(w.tags["@sys:uid"], "65534");
        assert_eq!(w.tags["tier"], "web", "a runtime label is a tag");
        assert_eq!(w.tags["team"], "a", "the operator's label overrides the runtime's");
        let same = labels(&[("@sys:uid", "65534"), ("team", "from-container"), ("tier", "web")]);
        assert!(!e.set_facts("team", same), "unchanged");
    }

    #[test]
    fn removed_and_recreated_cgroups() {
        let mut e = enrolment();
        e.apply(&BTreeMap::from([("a".to_owned(), 10), ("b".to_owned(), 11)]));
        let c = e.apply(&BTreeMap::from([("a".to_owned(), 20)]));
        let removed: Vec<_> = c.removed.iter().map(|w| (w.name.as_str(), w.cgroup_id)).collect();
        assert_eq!(removed, [("a", 10), ("b", 11)]);
        assert_eq!(c.added.len(), 1);
        assert_eq!(c.added[0].cgroup_id, 20);
    }
}
