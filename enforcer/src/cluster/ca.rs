//! The cluster CA and agent certificates.
//!
//! `enforcer ca init --dir DIR` creates the CA's Ed25519 key pair (`ca.key`, PKCS#8, mode 0600;
//! `ca.pub`, the public key every agent trusts). `enforcer ca issue` certifies one agent: its
//! signing key (the host key that signs its Trust Profiles), its X25519 exchange key (from which
//! pairwise token keys are derived) and its agent id, under a name. The certificate is JSON in
//! the agent's `state_dir` (`agent.cert`); its signature covers a canonical text of every field.

use std::path::{Path, PathBuf};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use serde::{Deserialize, Serialize};

use super::keys::{ExchangeKey, agent_id};
use crate::profile::{HostKey, KeyError, PublicKey};

/// CA private key file in the CA directory.
pub const CA_PRIVATE: &str = "ca.key";
/// CA public key file in the CA directory (what `[cluster] trust` names).
pub const CA_PUBLIC: &str = "ca.pub";
/// The certificate file in an agent's `state_dir`.
pub const CERT_FILE: &str = "agent.cert";
/// How long a certificate is valid.
pub const CERT_VALIDITY_SECS: u64 = 365 * 24 * 3600;

/// A certified agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// The agent's name (shown by `enforcer peers`).
    pub name: String,
    /// The id its tokens carry (derived from `signing_key`).
    pub agent_id: u32,
    /// Its Ed25519 profile-signing key (base64).
    pub signing_key: String,
    /// Its X25519 key for pairwise token keys (base64).
    pub exchange_key: String,
    /// Issue time, seconds since the Unix epoch.
    pub issued_at: u64,
    /// Expiry time.
    pub expires_at: u64,
    /// Id of the CA key that signed it.
    pub ca: String,
    /// Base64 Ed25519 signature by the CA over [`Certificate::signed_bytes`].
    pub signature: String,
}

/// Why a certificate is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    /// Not JSON of the right shape.
    #[error("not an agent certificate: {0}")]
    Malformed(String),
    /// Signed by another CA (or not by any).
    #[error("certificate of {name:?} is not signed by the trusted CA {trusted} (it names CA {claimed})")]
    Untrusted {
        /// The certificate's name.
        name: String,
        /// The trusted CA's id.
        trusted: String,
        /// The CA it claims.
        claimed: String,
    },
    /// Out of its validity period.
    #[error("certificate of {name:?} is valid from {from} to {until} (now {now})")]
    Expired {
        /// The certificate's name.
        name: String,
        /// Validity start.
        from: u64,
        /// Validity end.
        until: u64,
        /// Now.
        now: u64,
    },
    /// The agent id does not belong to the signing key.
    #[error("certificate of {0:?} names an agent id that is not its key's")]
    WrongAgentId(String),
}

impl Certificate {
    /// The bytes the CA signs: every field but the signature, one per line, in a fixed order.
    #[must_use]
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "enforcer-agent-certificate-v1\nname={:?}\nagent_id={}\nsigning_key={}\nexchange_key={}\nissued_at={}\nexpires_at={}\nca={}\n",
            self.name, self.agent_id, self.signing_key, self.exchange_key, self.issued_at, self.expires_at, self.ca
        )
        .into_bytes()
    }

    /// Parses a certificate from its JSON.
    ///
    /// # Errors
    /// [`CertError::Malformed`].
    pub fn from_json(text: &str) -> Result<Self, CertError> {
        serde_json::from_str(text).map_err(|e| CertError::Malformed(e.to_string()))
    }

    /// Checks it was issued by `ca`, is valid at `now` and is internally consistent.
    ///
    /// # Errors
    /// [`CertError`] naming what is wrong.
    pub fn verify(&self, ca: &PublicKey, now: u64) -> Result<(), CertError> {
        let signature = B64.decode(&self.signature).map_err(|e| CertError::Malformed(format!("signature: {e}")))?;
        if self.ca != ca.id() || !ca.verifies(&self.signed_bytes(), &signature) {
            return Err(CertError::Untrusted { name: self.name.clone(), trusted: ca.id(), claimed: self.ca.clone() });
        }
        if now < self.issued_at.saturating_sub(60) || now > self.expires_at {
            return Err(CertError::Expired { name: self.name.clone(), from: self.issued_at, until: self.expires_at, now });
        }
        let key = self.signing_public()?;
        if agent_id(&key) != self.agent_id {
            return Err(CertError::WrongAgentId(self.name.clone()));
        }
        self.exchange_public()?;
        Ok(())
    }

    /// The profile-signing key.
    ///
    /// # Errors
    /// [`CertError::Malformed`].
    pub fn signing_public(&self) -> Result<PublicKey, CertError> {
        PublicKey::from_text(&self.signing_key).ok_or_else(|| CertError::Malformed("signing_key".into()))
    }

    /// The X25519 exchange key.
    ///
    /// # Errors
    /// [`CertError::Malformed`].
    pub fn exchange_public(&self) -> Result<[u8; 32], CertError> {
        B64.decode(&self.exchange_key)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| CertError::Malformed("exchange_key".into()))
    }
}

/// A problem running `enforcer ca`.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A key could not be read or written.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The CA directory has no CA.
    #[error("{0} holds no CA key; create one with `enforcer ca init --dir {1}`")]
    NoCa(PathBuf, String),
    /// A CA exists already.
    #[error("{0} already holds a CA key; refusing to replace it (every agent trusts the old one)")]
    Exists(PathBuf),
    /// The name is unusable.
    #[error("agent name {0:?}: use 1 to 253 letters, digits, `-`, `_` and `.`")]
    BadName(String),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Creates a CA in `dir` (refusing to replace one). Returns the public key file.
///
/// # Errors
/// [`CaError`].
pub fn init(dir: &Path) -> Result<PathBuf, CaError> {
    if dir.join(CA_PRIVATE).exists() {
        return Err(CaError::Exists(dir.join(CA_PRIVATE)));
    }
    HostKey::load_or_create_named(dir, CA_PRIVATE, CA_PUBLIC)?;
    Ok(dir.join(CA_PUBLIC))
}

/// Certifies the agent whose state is `state_dir` (creating its keys if absent) under `name`,
/// writing `state_dir/agent.cert`. Returns the certificate.
///
/// # Errors
/// [`CaError`].
pub fn issue(ca_dir: &Path, state_dir: &Path, name: &str, now: u64) -> Result<Certificate, CaError> {
    if name.is_empty() || name.len() > 253 || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(CaError::BadName(name.to_owned()));
    }
    if !ca_dir.join(CA_PRIVATE).exists() {
        return Err(CaError::NoCa(ca_dir.to_owned(), ca_dir.display().to_string()));
    }
    let ca = HostKey::load_or_create_named(ca_dir, CA_PRIVATE, CA_PUBLIC)?;
    let host = HostKey::load_or_create(state_dir)?;
    let exchange = ExchangeKey::load_or_create(state_dir)?;
    let mut cert = Certificate {
        name: name.to_owned(),
        agent_id: agent_id(&host.public()),
        signing_key: host.public().to_text(),
        exchange_key: B64.encode(exchange.public()),
        issued_at: now,
        expires_at: now + CERT_VALIDITY_SECS,
        ca: ca.public().id(),
        signature: String::new(),
    };
    cert.signature = B64.encode(ca.sign(&cert.signed_bytes()));
    let path = state_dir.join(CERT_FILE);
    let json = serde_json::to_string_pretty(&cert).map_err(|e| CaError::Io { path: path.clone(), source: e.into() })?;
    std::fs::write(&path, format!("{json}\n")).map_err(|source| CaError::Io { path, source })?;
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_verify_only_under_their_ca() {
        let ca_dir = tempfile::tempdir().expect("ca");
        let other_dir = tempfile::tempdir().expect("other ca");
        let state = tempfile::tempdir().expect("state");
        let public = init(ca_dir.path()).expect("init");
        assert!(matches!(init(ca_dir.path()), Err(CaError::Exists(_))), "a CA is never replaced");
        init(other_dir.path()).expect("other init");
        let now = 1_800_000_000;
        let cert = issue(ca_dir.path(), state.path(), "host-a", now).expect("issue");
        let ca = PublicKey::load(&public).expect("ca.pub");
        let other = PublicKey::load(&other_dir.path().join(CA_PUBLIC)).expect("other ca.pub");
        cert.verify(&ca, now + 10).expect("verifies");
        assert!(matches!(cert.verify(&other, now), Err(CertError::Untrusted { .. })));
        assert!(matches!(cert.verify(&ca, now + CERT_VALIDITY_SECS + 1), Err(CertError::Expired { .. })));
        let mut renamed = cert.clone();
        renamed.name = "host-b".into();
        assert!(matches!(renamed.verify(&ca, now), Err(CertError::Untrusted { .. })), "a changed field breaks the signature");
        let on_disk = Certificate::from_json(&std::fs::read_to_string(state.path().join(CERT_FILE)).expect("file")).expect("json");
        assert_eq!(on_disk, cert);
        assert_eq!(cert.signing_public().expect("key"), HostKey::load_or_create(state.path()).expect("host").public());
        assert!(matches!(issue(ca_dir.path(), state.path(), "bad name", now), Err(CaError::BadName(_))));
        assert!(matches!(issue(state.path(), state.path(), "x", now), Err(CaError::NoCa(..))));
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(ca_dir.path().join(CA_PRIVATE)).expect("meta").permissions());
        assert_eq!(mode & 0o777, 0o600);
    }
}
