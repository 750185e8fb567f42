//! Observation mode: while a workload is observed (`enforcer observe start`), the kernel blocks
//! nothing it does (a denial becomes an audit) and reports every operation; the agent folds
//! those events into a bounded summary per workload — flows by direction, peer, protocol and
//! port; files by path with the accesses seen — from which `enforcer policy suggest` writes
//! policies. Raw events are never kept, so memory stays bounded however long it runs.
//!
//! What is observed, until when, and the summaries are saved in `state_dir/observations.json`
//! (written at most once a second while something changed), so an agent restart neither ends an
//! observation nor loses what it saw.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

pub use crate::policy::suggest::{FileSeen, FlowSeen, Observation, PeerSeen};
use crate::{events, identity::Tags};

/// File in `state_dir`.
pub const FILE: &str = "observations.json";
/// Most distinct flows kept per workload; more are counted in `dropped`.
pub const MAX_FLOWS: usize = 4096;
/// Most distinct paths kept per workload; more are counted in `dropped`.
pub const MAX_FILES: usize = 16_384;

/// Every workload's observation.
#[derive(Debug, Default)]
pub struct Observations {
    by_workload: BTreeMap<String, Observation>,
    path: PathBuf,
    dirty: bool,
}

/// The labels that name a peer stably: its operator and runtime labels (not `@` tags), or
/// else its container image, or else its executable. `None`: only its address names it.
#[must_use]
pub fn stable_labels(tags: &Tags) -> Option<BTreeMap<String, String>> {
    let usable = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@+".contains(c));
    let labels: BTreeMap<String, String> =
        tags.iter().filter(|(k, v)| !k.starts_with('@') && usable(v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    if !labels.is_empty() {
        return Some(labels);
    }
    ["@container:image", "@sys:exe"]
        .iter()
        .find_map(|k| tags.get(*k).filter(|v| usable(v)).map(|v| BTreeMap::from([((*k).to_owned(), v.clone())])))
}

impl Observations {
    /// The observations saved in `state_dir` (none when there is no file; an unreadable file
    /// is logged and replaced).
    #[must_use]
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(FILE);
        let by_workload = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|error| {
                tracing::error!(path = %path.display(), %error, "ignoring unreadable observations");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Self { by_workload, path, dirty: false }
    }

    /// Writes the observations if they changed since the last save.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.by_workload)?)?;
        std::fs::rename(&tmp, &self.path)?;
        self.dirty = false;
        Ok(())
    }

    /// Starts (or restarts, keeping what was seen) observing `name` until `until`.
    pub fn start(&mut self, name: &str, now: u64, until: Option<u64>) {
        let o = self.by_workload.entry(name.to_owned()).or_default();
        if !o.active {
            o.since = now;
        }
        o.active = true;
        o.until = until;
        self.dirty = true;
    }

    /// Stops observing `name`; returns whether it was observed.
    pub fn stop(&mut self, name: &str) -> bool {
        match self.by_workload.get_mut(name) {
            Some(o) if o.active => {
                o.active = false;
                self.dirty = true;
                true
            }
            _ => false,
        }
    }

    /// Ends the observations whose time is up; returns their workloads.
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let ended: Vec<String> = self
            .by_workload
            .iter()
            .filter(|(_, o)| o.active && o.until.is_some_and(|u| u <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &ended {
            self.stop(n);
        }
        ended
    }

    /// Whether `name` is being observed.
    #[must_use]
    pub fn active(&self, name: &str) -> bool {
        self.by_workload.get(name).is_some_and(|o| o.active)
    }

    /// Every observation, by workload.
    #[must_use]
    pub fn all(&self) -> &BTreeMap<String, Observation> {
        &self.by_workload
    }

    /// Folds one event of an observed workload into its summary; `peer` is the stable labels
    /// of the other end of a flow when it is a known workload.
    pub fn record(&mut self, e: &events::Event, peer: Option<BTreeMap<String, String>>) {
        let Some(name) = &e.workload else { return };
        let Some(o) = self.by_workload.get_mut(name).filter(|o| o.active) else { return };
        match &e.detail {
            events::Detail::Network { direction, protocol, src, dst, .. } => {
                let (remote, port) = if *direction == "ingress" { (src, dst) } else { (dst, dst) };
                let Some(remote) = remote.parse::<std::net::SocketAddr>().ok() else { return };
                let Some(port) = port.parse::<std::net::SocketAddr>().ok().map(|a| a.port()) else { return };
                let peer = peer.map_or(PeerSeen::Address(remote.ip()), PeerSeen::Labels);
                let key = FlowSeen { direction: (*direction).to_owned(), peer, protocol: protocol.clone(), port };
                let full = o.flows.len() >= MAX_FLOWS;
                match o.flows.binary_search_by(|(k, _)| k.cmp(&key)) {
                    Ok(i) => o.flows[i].1 += 1,
                    Err(_) if full => o.dropped += 1,
                    Err(i) => o.flows.insert(i, (key, 1)),
                }
            }
            events::Detail::File { path, access, .. } => {
                if path.is_empty() {
                    return;
                }
                if !o.files.contains_key(path) && o.files.len() >= MAX_FILES {
                    o.dropped += 1;
                    return;
                }
                let f = o.files.entry(path.clone()).or_default();
                f.read |= access.contains(&"read");
                f.write |= access.contains(&"write");
                f.exec |= access.contains(&"exec");
                f.count += 1;
            }
        }
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(workload: &str, detail: events::Detail) -> events::Event {
        events::Event {
            time: String::new(),
            kind: "network",
            verdict: "audit",
            workload: Some(workload.into()),
            identity: 256,
            pid: 1,
            uid: 0,
            comm: String::new(),
            detail,
        }
    }

    fn connect(dst: &str) -> events::Detail {
        events::Detail::Network {
            direction: "egress",
            protocol: "tcp".into(),
            src: "0.0.0.0:0".into(),
            dst: dst.into(),
            remote_identity: 1,
            rule_id: None,
            policy: None,
            remote_workload: None,
            remote_tags: None,
            token: None,
        }
    }

    fn open(path: &str, access: &[&'static str]) -> events::Detail {
        events::Detail::File { path: path.into(), access: access.to_vec(), policy: None }
    }

    #[test]
    fn aggregates_only_while_observed_and_survives_a_reload() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut obs = Observations::load(dir.path());
        obs.record(&event("web", connect("127.0.0.1:80")), None);
        assert!(obs.all().is_empty(), "not observed: nothing kept");
        obs.start("web", 100, Some(160));
        for _ in 0..3 {
            obs.record(&event("web", connect("127.0.0.1:80")), None);
        }
        obs.record(&event("web", connect("10.0.0.2:5432")), Some(BTreeMap::from([("app".into(), "db".into())])));
        obs.record(&event("web", open("/etc/hosts", &["read"])), None);
        obs.record(&event("web", open("/etc/hosts", &["read", "write"])), None);
        let o = &obs.all()["web"];
        assert_eq!(o.flows.len(), 2);
        assert!(o.flows.iter().any(|(k, n)| *n == 3 && k.peer == PeerSeen::Address("127.0.0.1".parse().expect("ip")) && k.port == 80));
        assert!(o.flows.iter().any(|(k, _)| matches!(&k.peer, PeerSeen::Labels(l) if l["app"] == "db")));
        assert_eq!(o.files["/etc/hosts"], FileSeen { read: true, write: true, exec: false, count: 2 });
        obs.save().expect("save");
        let again = Observations::load(dir.path());
        assert_eq!(again.all(), obs.all(), "a restart keeps what was seen");
        assert!(again.active("web"));
        assert_eq!(obs.expire(159), Vec::<String>::new());
        assert_eq!(obs.expire(160), ["web"]);
        assert!(!obs.active("web"));
    }

    #[test]
    fn memory_is_bounded() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut obs = Observations::load(dir.path());
        obs.start("web", 0, None);
        for i in 0..(MAX_FILES + 10) {
            obs.record(&event("web", open(&format!("/data/{i}"), &["read"])), None);
        }
        let o = &obs.all()["web"];
        assert_eq!(o.files.len(), MAX_FILES);
        assert_eq!(o.dropped, 10);
    }

    #[test]
    fn stable_labels_prefer_operator_labels() {
        let tags: Tags = [("app", "db"), ("@sys:exe", "/usr/bin/postgres"), ("note", "has space")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(stable_labels(&tags), Some(BTreeMap::from([("app".to_owned(), "db".to_owned())])));
        let system: Tags = [("@sys:exe".to_owned(), "/usr/bin/postgres".to_owned())].into_iter().collect();
        assert_eq!(stable_labels(&system).expect("exe")["@sys:exe"], "/usr/bin/postgres");
        assert_eq!(stable_labels(&Tags::new()), None);
    }
}
