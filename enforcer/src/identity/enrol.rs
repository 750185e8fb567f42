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

use super::cgroup;
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
    /// Operator labels, inherited ones included.
    pub labels: BTreeMap<String, String>,
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
    configured: BTreeMap<String, BTreeMap<String, String>>,
    workloads: BTreeMap<String, WorkloadInfo>,
    next_identity: Identity,
}

impl Enrolment {
    /// An empty enrolment for `root`, with the operator labels of the config.
    #[must_use]
    pub fn new(root: &Path, configured: &[WorkloadLabels]) -> Self {
        Self {
            root: root.to_owned(),
            configured: configured.iter().map(|w| (w.cgroup.clone(), w.labels.clone())).collect(),
            workloads: BTreeMap::new(),
            next_identity: FIRST_WORKLOAD,
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
            if let Some(w) = self.workloads.remove(&name) {
                changes.removed.push(w);
            }
        }
        for (name, &cgroup_id) in found {
            if self.workloads.contains_key(name) {
                continue;
            }
            let info = WorkloadInfo {
                name: name.clone(),
                cgroup_id,
                identity: self.next_identity,
                labels: self.labels_for(name),
            };
            self.next_identity += 1;
            self.workloads.insert(name.clone(), info.clone());
            changes.added.push(info);
        }
        changes
    }

    /// Labels of `name`: each ancestor's configured labels, nearer ones overriding.
    fn labels_for(&self, name: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let mut prefix = String::new();
        for part in name.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if let Some(own) = self.configured.get(&prefix) {
                labels.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        labels
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

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
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
