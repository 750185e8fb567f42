//! Identity across hosts: agents certified by one CA exchange their signed Trust Profiles, and
//! every TCP connection an enrolled workload opens carries an identity token the receiving
//! kernel verifies, so the receiver knows which remote workload connected whatever its address.
//!
//! - [`ca`]: the cluster CA and agent certificates (`enforcer ca init | issue`).
//! - [`keys`]: agent ids, the X25519 exchange key, pairwise token keys per epoch.
//! - [`peers`]: what each peer last said, verified; remote workloads and the kernel's token state.
//! - [`service`]: the peer API (`[cluster] listen`) and fetching from peers.
//!
//! The token itself and its MAC are in `enforcer_common::token`, shared with the kernel.

pub mod ca;
pub mod keys;
pub mod peers;
pub mod service;

use std::path::Path;

use ca::Certificate;
use keys::ExchangeKey;

use crate::{
    config::Cluster,
    profile::{HostKey, PublicKey},
};

/// This agent's standing in the cluster: its certificate, exchange key and the CA it trusts.
#[derive(Debug)]
pub struct Membership {
    /// The certificate `enforcer ca issue` wrote into `state_dir`.
    pub cert: Certificate,
    /// The X25519 key the certificate names.
    pub exchange: ExchangeKey,
    /// The CA peers must be certified by.
    pub trust: PublicKey,
}

impl Membership {
    /// Loads and checks this agent's certificate against the trusted CA and its own keys.
    ///
    /// # Errors
    /// A sentence naming the file and what to do.
    pub fn load(cluster: &Cluster, state_dir: &Path, host: &HostKey, now: u64) -> Result<Self, String> {
        let trust = PublicKey::load(&cluster.trust).map_err(|e| format!("[cluster] trust: {e}"))?;
        let path = state_dir.join(ca::CERT_FILE);
        let fix = format!("certify this agent with `enforcer ca issue --dir CA_DIR --state {}`", state_dir.display());
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}; {fix}", path.display()))?;
        let cert = Certificate::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        cert.verify(&trust, now).map_err(|e| format!("{}: {e}; {fix}", path.display()))?;
        if cert.signing_public().ok().as_ref() != Some(&host.public()) {
            return Err(format!("{}: certifies another host key than {}; {fix}", path.display(), state_dir.join("host.key").display()));
        }
        let exchange = ExchangeKey::load_or_create(state_dir).map_err(|e| e.to_string())?;
        if cert.exchange_public().ok() != Some(exchange.public()) {
            return Err(format!("{}: certifies another exchange key than {}; {fix}", path.display(), keys::EXCHANGE_FILE));
        }
        Ok(Self { cert, exchange, trust })
    }
}
