//! What each configured peer agent last told us, verified: its certificate (under the trusted
//! CA) and the Trust Profiles it signed. From that come the remote workloads policies can
//! select, and the kernel's token state: pairwise keys, the addresses whose SYNs to stamp, and
//! the local identity of every remote (agent, serial).
//!
//! Pure: the agent feeds it replies and failures with the time; tests do the same.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use enforcer_common::{
    PeerKey, RemoteKey,
    identity::{FIRST_CIDR, FIRST_REMOTE, Identity},
    net::v4_mapped,
};

use super::{
    ca::Certificate,
    keys::{ExchangeKey, epoch_at},
};
use crate::profile::{Profile, PublicKey, SignedProfile};

/// One peer.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// Its verified certificate, once it answered.
    pub cert: Option<Certificate>,
    /// Its verified, unexpired profiles.
    pub profiles: Vec<Profile>,
    /// When it last answered (Unix seconds).
    pub last_ok: Option<u64>,
    /// Why the last exchange failed, or what it sent that was refused.
    pub error: Option<String>,
}

/// A verified workload of another agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// (agent id, serial) as its tokens name it.
    pub key: RemoteKey,
    /// Its local identity number here.
    pub identity: Identity,
    /// `PEER/WORKLOAD`.
    pub name: String,
    /// Its signed tags.
    pub tags: BTreeMap<String, String>,
}

/// Every peer.
#[derive(Debug)]
pub struct Peers {
    trust: PublicKey,
    me: u32,
    by_addr: BTreeMap<String, Peer>,
    ids: BTreeMap<RemoteKey, Identity>,
}

impl Peers {
    /// Peers at `addrs`, trusted when certified by `trust`; `me` is this agent's id.
    #[must_use]
    pub fn new(trust: PublicKey, me: u32, addrs: &[String]) -> Self {
        Self { trust, me, by_addr: addrs.iter().map(|a| (a.clone(), Peer::default())).collect(), ids: BTreeMap::new() }
    }

    /// The peers, by address.
    #[must_use]
    pub fn all(&self) -> &BTreeMap<String, Peer> {
        &self.by_addr
    }

    /// Takes the reply of the peer at `addr`: its certificate and signed profiles (JSON).
    /// Returns whether anything the kernel or the policies see changed.
    pub fn accept(&mut self, addr: &str, cert: &str, profiles: &[String], now: u64) -> bool {
        let Some(peer) = self.by_addr.get_mut(addr) else { return false };
        let before = (peer.cert.clone(), peer.profiles.clone());
        let cert = match Certificate::from_json(cert).and_then(|c| c.verify(&self.trust, now).map(|()| c)) {
            Ok(c) if c.agent_id == self.me => {
                peer.error = Some(format!("{addr} is this agent itself ({})", c.name));
                return false;
            }
            Ok(c) => c,
            Err(e) => {
                // Not trusted: whatever it said before is not trusted either.
                peer.error = Some(e.to_string());
                peer.cert = None;
                peer.profiles.clear();
                return before.0.is_some() || !before.1.is_empty();
            }
        };
        let key = cert.signing_public().ok();
        let mut refused = Vec::new();
        let mut verified = Vec::new();
        for text in profiles {
            match SignedProfile::from_json(text).and_then(|p| p.verify(key.as_slice(), now)) {
                Ok(p) => verified.push(p),
                Err(e) => refused.push(e.to_string()),
            }
        }
        verified.sort_by_key(|p| p.identity);
        peer.error = (!refused.is_empty()).then(|| format!("{} profiles refused: {}", refused.len(), refused.join("; ")));
        peer.cert = Some(cert);
        peer.profiles = verified;
        peer.last_ok = Some(now);
        before != (peer.cert.clone(), peer.profiles.clone())
    }

    /// Records that the peer at `addr` could not be reached; what it said before stays until
    /// its profiles expire.
    pub fn fail(&mut self, addr: &str, error: String) {
        if let Some(peer) = self.by_addr.get_mut(addr) {
            peer.error = Some(error);
        }
    }

    /// Drops expired profiles; returns whether any were dropped.
    pub fn expire(&mut self, now: u64) -> bool {
        let mut dropped = false;
        for peer in self.by_addr.values_mut() {
            let n = peer.profiles.len();
            peer.profiles.retain(|p| p.expires_at > now);
            dropped |= peer.profiles.len() != n;
        }
        dropped
    }

    /// The verified remote workloads, each with a local identity that stays the same while it
    /// is known.
    pub fn remotes(&mut self) -> Vec<Remote> {
        let mut out = Vec::new();
        for peer in self.by_addr.values() {
            let Some(cert) = &peer.cert else { continue };
            for p in &peer.profiles {
                let key = RemoteKey { agent: cert.agent_id, serial: p.identity };
                out.push(Remote { key, identity: 0, name: format!("{}/{}", cert.name, p.workload), tags: p.tags.clone() });
            }
        }
        let live: BTreeSet<RemoteKey> = out.iter().map(|r| r.key).collect();
        self.ids.retain(|k, _| live.contains(k));
        for r in &mut out {
            r.identity = if let Some(id) = self.ids.get(&r.key) {
                *id
            } else {
                let used: BTreeSet<Identity> = self.ids.values().copied().collect();
                let id = (FIRST_REMOTE..FIRST_CIDR).find(|i| !used.contains(i)).unwrap_or(FIRST_REMOTE);
                self.ids.insert(r.key, id);
                id
            };
        }
        out
    }

    /// The pairwise keys for the current and previous epoch at `now`, by peer agent id.
    #[must_use]
    pub fn kernel_keys(&self, exchange: &ExchangeKey, now: u64) -> BTreeMap<u32, PeerKey> {
        let epoch = epoch_at(now);
        self.by_addr
            .values()
            .filter_map(|p| p.cert.as_ref())
            .filter_map(|c| {
                let theirs = c.exchange_public().ok()?;
                let key = |e| exchange.pairwise(self.me, c.agent_id, &theirs, e);
                Some((
                    c.agent_id,
                    PeerKey { epoch_cur: epoch, epoch_prev: epoch.saturating_sub(1), key_cur: key(epoch), key_prev: key(epoch.saturating_sub(1)) },
                ))
            })
            .collect()
    }

    /// Addresses of peers' workloads (IPv4-mapped) → the peer's agent id: SYNs to these are
    /// stamped for that peer. An address two peers claim is left out.
    #[must_use]
    pub fn kernel_addrs(&self) -> BTreeMap<[u8; 16], u32> {
        let mut owners: BTreeMap<[u8; 16], BTreeSet<u32>> = BTreeMap::new();
        for peer in self.by_addr.values() {
            let Some(cert) = &peer.cert else { continue };
            for p in &peer.profiles {
                for a in p.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                    let key = match a {
                        IpAddr::V4(v4) => v4_mapped(v4.octets()),
                        IpAddr::V6(v6) => v6.octets(),
                    };
                    owners.entry(key).or_default().insert(cert.agent_id);
                }
            }
        }
        owners.into_iter().filter_map(|(a, ids)| if ids.len() == 1 { ids.first().map(|id| (a, *id)) } else { None }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cluster::ca,
        profile::{HostKey, SignedProfile},
    };

    struct Agent {
        _state: tempfile::TempDir,
        key: HostKey,
        cert: Certificate,
        exchange: ExchangeKey,
    }

    fn agent(ca_dir: &std::path::Path, name: &str, now: u64) -> Agent {
        let state = tempfile::tempdir().expect("state");
        let cert = ca::issue(ca_dir, state.path(), name, now).expect("issue");
        Agent {
            key: HostKey::load_or_create(state.path()).expect("key"),
            exchange: ExchangeKey::load_or_create(state.path()).expect("exchange"),
            _state: state,
            cert,
        }
    }

    fn profile(a: &Agent, workload: &str, serial: u32, address: &str, now: u64) -> String {
        let p = Profile {
            workload: workload.into(),
            identity: serial,
            tags: BTreeMap::from([("app".to_owned(), workload.to_owned())]),
            addresses: vec![address.into()],
            host: a.cert.name.clone(),
            key_id: a.key.public().id(),
            issued_at: now,
            expires_at: now + 3600,
        };
        serde_json::to_string(&SignedProfile::sign(p, &a.key)).expect("json")
    }

    #[test]
    fn verified_peers_give_remotes_keys_and_addresses() {
        let now = 1_800_000_000;
        let ca_dir = tempfile::tempdir().expect("ca");
        let other_ca = tempfile::tempdir().expect("other");
        ca::init(ca_dir.path()).expect("ca");
        ca::init(other_ca.path()).expect("other");
        let trust = PublicKey::load(&ca_dir.path().join(ca::CA_PUBLIC)).expect("trust");
        let (me, a, rogue) = (agent(ca_dir.path(), "b", now), agent(ca_dir.path(), "a", now), agent(other_ca.path(), "rogue", now));
        let mut peers = Peers::new(trust, me.cert.agent_id, &["a:1".into(), "rogue:1".into()]);
        let cert = |x: &Agent| serde_json::to_string(&x.cert).expect("json");

        assert!(peers.accept("a:1", &cert(&a), &[profile(&a, "good", 256, "10.0.0.2", now), profile(&a, "bad", 257, "10.0.0.2", now)], now));
        assert!(!peers.accept("a:1", &cert(&a), &[profile(&a, "good", 256, "10.0.0.2", now), profile(&a, "bad", 257, "10.0.0.2", now)], now), "same again: no change");
        assert!(!peers.accept("rogue:1", &cert(&rogue), &[profile(&rogue, "x", 256, "10.0.0.9", now)], now));
        assert!(peers.all()["rogue:1"].error.as_deref().is_some_and(|e| e.contains("not signed by the trusted CA")));

        let remotes = peers.remotes();
        assert_eq!(remotes.len(), 2, "only the trusted peer's workloads: {remotes:?}");
        assert_eq!(remotes[0].name, "a/good");
        assert_eq!(remotes[0].key, RemoteKey { agent: a.cert.agent_id, serial: 256 });
        assert!(remotes.iter().all(|r| (FIRST_REMOTE..FIRST_CIDR).contains(&r.identity)));
        assert_eq!(peers.remotes(), remotes, "identities are stable");

        let keys = peers.kernel_keys(&me.exchange, now);
        let k = keys[&a.cert.agent_id];
        let theirs = a.exchange.pairwise(a.cert.agent_id, me.cert.agent_id, &me.exchange.public(), epoch_at(now));
        assert_eq!(k.key_cur, theirs, "both sides derive the same key");
        assert_eq!(k.epoch_prev + 1, k.epoch_cur);
        assert_eq!(peers.kernel_addrs()[&v4_mapped([10, 0, 0, 2])], a.cert.agent_id);

        // A profile signed by another key is refused; the rest stays.
        let forged = profile(&rogue, "evil", 300, "10.0.0.2", now);
        peers.accept("a:1", &cert(&a), &[profile(&a, "good", 256, "10.0.0.2", now), forged], now);
        assert_eq!(peers.remotes().len(), 1);
        assert!(peers.all()["a:1"].error.as_deref().is_some_and(|e| e.contains("refused")));

        // An unreachable peer's profiles stay until they expire.
        peers.fail("a:1", "connection refused".into());
        assert_eq!(peers.remotes().len(), 1);
        assert!(peers.expire(now + 3601));
        assert!(peers.remotes().is_empty());
    }
}
