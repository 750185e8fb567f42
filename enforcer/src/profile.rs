//! Trust Profiles: a workload's identity, signed by the host's Ed25519 key.
//!
//! A profile states who a workload is (its name, identity number, tags, addresses), where it
//! runs (host name, agent key id) and for how long the statement holds (issued/expires). The
//! signature covers a canonical binary encoding ([`encode`]), never a JSON rendering, so two
//! agents always agree on the signed bytes. The JSON a user sees carries both the readable
//! fields and the signed encoding; verification trusts only the latter and rejects a file whose
//! readable fields differ from it.

pub mod encode;
pub mod key;

use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use serde::{Deserialize, Serialize};

pub use encode::DecodeError;
pub use key::{HostKey, KeyError, PublicKey};

/// Version of the canonical encoding.
pub const VERSION: u8 = 1;

/// How long a freshly issued profile is valid.
pub const VALIDITY_SECS: u64 = 3600;

/// The identity statement about one workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Workload name (cgroup path below the managed root).
    pub workload: String,
    /// Identity number on the issuing host.
    pub identity: u32,
    /// Tags: system tags (`@…`) and labels.
    pub tags: BTreeMap<String, String>,
    /// Addresses the workload is reachable at, sorted.
    pub addresses: Vec<String>,
    /// Host name of the issuing agent.
    pub host: String,
    /// Id of the key that signed it.
    pub key_id: String,
    /// Issue time, seconds since the Unix epoch.
    pub issued_at: u64,
    /// Expiry time, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A profile with its signature, as `enforcer profile` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedProfile {
    /// Encoding version.
    pub version: u8,
    /// The readable statement (must equal the decoded `encoded`).
    pub profile: Profile,
    /// Base64 of the canonical encoding that was signed.
    pub encoded: String,
    /// Base64 of the Ed25519 signature over `encoded`'s bytes.
    pub signature: String,
}

/// Why a profile does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The file is not a signed profile.
    #[error("not a signed profile: {0}")]
    Malformed(String),
    /// The encoding cannot be decoded.
    #[error("the signed encoding is invalid: {0}")]
    Encoding(#[from] DecodeError),
    /// No trusted key has the profile's key id.
    #[error("signed by key {key_id}, which is not trusted here (trusted: {trusted})")]
    UnknownKey {
        /// The profile's key id.
        key_id: String,
        /// The ids that are trusted.
        trusted: String,
    },
    /// The signature does not match the encoding.
    #[error("the signature does not match the signed encoding (changed or forged)")]
    BadSignature,
    /// The readable fields differ from what was signed.
    #[error("field `{field}` differs from the signed encoding (the file was edited)")]
    Tampered {
        /// The first differing field.
        field: &'static str,
    },
    /// The profile is outside its validity window.
    #[error("expired at {expires_at} (now {now})")]
    Expired {
        /// Expiry, seconds since the epoch.
        expires_at: u64,
        /// The time of the check.
        now: u64,
    },
    /// The profile claims to be issued in the future.
    #[error("issued at {issued_at}, in the future (now {now})")]
    NotYetValid {
        /// Issue time.
        issued_at: u64,
        /// The time of the check.
        now: u64,
    },
}

/// Tolerated clock difference between hosts when checking validity.
const CLOCK_SKEW_SECS: u64 = 60;

impl SignedProfile {
    /// Encodes and signs `profile` with `key`.
    #[must_use]
    pub fn sign(profile: Profile, key: &HostKey) -> Self {
        let bytes = encode::encode(&profile);
        let signature = key.sign(&bytes);
        Self { version: VERSION, profile, encoded: B64.encode(&bytes), signature: B64.encode(signature) }
    }

    /// Parses the JSON form.
    ///
    /// # Errors
    /// [`VerifyError::Malformed`] when it is not a signed profile.
    pub fn from_json(text: &str) -> Result<Self, VerifyError> {
        serde_json::from_str(text).map_err(|e| VerifyError::Malformed(e.to_string()))
    }

    /// Verifies the signature with one of `keys`, that the readable fields equal the signed
    /// ones, and that `now` (seconds since the epoch) is within the validity window. Returns the
    /// signed profile.
    ///
    /// # Errors
    /// [`VerifyError`] saying which check failed.
    pub fn verify(&self, keys: &[PublicKey], now: u64) -> Result<Profile, VerifyError> {
        if self.version != VERSION {
            return Err(VerifyError::Malformed(format!("version {} (this agent reads {VERSION})", self.version)));
        }
        let bytes = B64.decode(&self.encoded).map_err(|e| VerifyError::Malformed(format!("encoded: {e}")))?;
        let signature =
            B64.decode(&self.signature).map_err(|e| VerifyError::Malformed(format!("signature: {e}")))?;
        let signed = encode::decode(&bytes)?;
        let key = keys.iter().find(|k| k.id() == signed.key_id).ok_or_else(|| VerifyError::UnknownKey {
            key_id: signed.key_id.clone(),
            trusted: keys.iter().map(PublicKey::id).collect::<Vec<_>>().join(", "),
        })?;
        if !key.verifies(&bytes, &signature) {
            return Err(VerifyError::BadSignature);
        }
        if let Some(field) = first_difference(&self.profile, &signed) {
            return Err(VerifyError::Tampered { field });
        }
        if signed.expires_at <= now {
            return Err(VerifyError::Expired { expires_at: signed.expires_at, now });
        }
        if signed.issued_at > now + CLOCK_SKEW_SECS {
            return Err(VerifyError::NotYetValid { issued_at: signed.issued_at, now });
        }
        Ok(signed)
    }
}

fn first_difference(a: &Profile, b: &Profile) -> Option<&'static str> {
    [
        ("workload", a.workload == b.workload),
        ("identity", a.identity == b.identity),
        ("tags", a.tags == b.tags),
        ("addresses", a.addresses == b.addresses),
        ("host", a.host == b.host),
        ("key_id", a.key_id == b.key_id),
        ("issued_at", a.issued_at == b.issued_at),
        ("expires_at", a.expires_at == b.expires_at),
    ]
    .into_iter()
    .find_map(|(name, same)| (!same).then_some(name))
}

/// Seconds since the Unix epoch, now.
#[must_use]
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
