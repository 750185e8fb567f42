//! EC2 instance identity: `IMDSv2` client and verification of the signed identity document.
//!
//! On EC2 the agent learns which account, region and instance it runs on from the instance
//! identity document, and turns it into the host's `@aws:*` system tags. The document is
//! believed only when AWS's RSA-2048 signature over it verifies with the certificate AWS
//! publishes for the region the document names:
//!
//! 1. [`Imds`] fetches an `IMDSv2` session token, the document and its `rsa2048` signature
//!    (a base64 CMS `SignedData`), each in one attempt with short timeouts;
//! 2. [`verify`] (pure, no I/O) checks that the signed content is byte for byte the served
//!    document, that the `messageDigest` attribute is its SHA-256, and that the RSA signature
//!    verifies with the region's certificate from [`TrustedCerts`];
//! 3. the identity is parsed from the signed bytes only, so a valid signature over one
//!    document can never vouch for another (the substitution SPIRE fixed in 1.14.6).
//!
//! Anything unexpected — an unknown region, several signers, a digest other than SHA-256 — is
//! a rejection. Certificates embedded in a signature are ignored: only [`TrustedCerts`] count.

mod ber;
mod certs;
mod imds;
mod verify;

use std::collections::BTreeMap;

pub use certs::TrustedCerts;
pub use imds::{Imds, fetch_identity};
pub use verify::verify;

/// Why the instance identity could not be fetched or was not believed.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// The IMDS base URL is not `http://host[:port]`.
    #[error("IMDS base URL {base:?}: {reason}")]
    BaseUrl {
        /// The URL as configured.
        base: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No TCP connection or no complete answer in time.
    #[error(
        "cannot reach the EC2 instance metadata service at {url} ({source}); on EC2 check that IMDS is \
         enabled and that its hop limit reaches this process (2 or more from a container)"
    )]
    Unreachable {
        /// The request that failed.
        url: String,
        /// The connection error or timeout.
        source: std::io::Error,
    },
    /// IMDS answered with an error status.
    #[error("instance metadata at {url} answered HTTP {status}: {}", http_hint(*status))]
    Http {
        /// The request that failed.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// IMDS answered 200 with something unusable.
    #[error("instance metadata at {url} sent an unusable answer: {reason}")]
    Response {
        /// The request.
        url: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// The `rsa2048` signature is malformed or does not verify.
    #[error("the instance identity signature does not verify, so the document is not trusted: {reason}")]
    BadSignature {
        /// What failed.
        reason: String,
    },
    /// The signed `messageDigest` is not the SHA-256 of the signed content.
    #[error(
        "the signed messageDigest is not the SHA-256 of the signed document: the document was \
         altered after signing, so it is not trusted"
    )]
    DigestMismatch,
    /// The document IMDS served is not the one inside the signature.
    #[error(
        "the identity document served by IMDS ({served_len} bytes) is not the document AWS \
         signed ({signed_len} bytes), so it is not trusted"
    )]
    ContentMismatch {
        /// Length of the content inside the signature.
        signed_len: usize,
        /// Length of the document served.
        served_len: usize,
    },
    /// No trusted certificate for the region the document names.
    #[error(
        "no trusted AWS RSA-2048 certificate for region `{region}`: the document cannot be \
         checked; upgrade the agent or trust the region's certificate from the EC2 User Guide"
    )]
    UnknownRegion {
        /// The region the document names.
        region: String,
    },
    /// The signed document is not a usable identity document.
    #[error("invalid instance identity document: {reason}")]
    Document {
        /// What is wrong.
        reason: String,
    },
    /// A certificate offered for trust is not an RSA certificate.
    #[error("certificate for region `{region}`: {reason}")]
    Certificate {
        /// The region it was offered for.
        region: String,
        /// What is wrong.
        reason: String,
    },
}

fn http_hint(status: u16) -> &'static str {
    match status {
        401 => "the IMDSv2 session token was refused",
        403 => "IMDS is disabled for this instance or refused the request",
        404 => "no such metadata path (is this an EC2 instance?)",
        405 => "the endpoint does not accept IMDSv2 token requests",
        _ => "unexpected status",
    }
}

/// The facts of a verified instance identity document.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InstanceIdentity {
    /// The 12-digit AWS account.
    pub account_id: String,
    /// The region, e.g. `us-west-2`.
    pub region: String,
    /// The availability zone, e.g. `us-west-2a`.
    pub availability_zone: String,
    /// The instance, e.g. `i-078517ca8a70a1dde`.
    pub instance_id: String,
    /// The AMI it was launched from.
    pub image_id: String,
    /// The instance type, e.g. `t3.medium`.
    pub instance_type: String,
    /// The CPU architecture, e.g. `x86_64`, when the document names one.
    pub architecture: Option<String>,
    /// The primary private IPv4 address, when the document names one.
    pub private_ip: Option<String>,
    /// When the instance was launched, as AWS wrote it (RFC 3339).
    pub pending_time: Option<String>,
}

impl InstanceIdentity {
    /// The `@aws:*` system tags of this host.
    #[must_use]
    pub fn tags(&self) -> BTreeMap<String, String> {
        [
            ("@aws:account-id", &self.account_id),
            ("@aws:region", &self.region),
            ("@aws:availability-zone", &self.availability_zone),
            ("@aws:instance-id", &self.instance_id),
            ("@aws:image-id", &self.image_id),
            ("@aws:instance-type", &self.instance_type),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }

    /// Parses and checks the JSON of a document (which must already be the signed bytes).
    fn parse(json: &[u8]) -> Result<Self, AwsError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            account_id: String,
            region: String,
            availability_zone: String,
            instance_id: String,
            image_id: String,
            instance_type: String,
            architecture: Option<String>,
            private_ip: Option<String>,
            pending_time: Option<String>,
        }
        let invalid = |reason: String| AwsError::Document { reason };
        let raw: Raw = serde_json::from_slice(json).map_err(|e| invalid(format!("not the expected JSON: {e}")))?;
        if raw.account_id.len() != 12 || !raw.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format!("accountId {:?} is not 12 digits", raw.account_id)));
        }
        for (field, value) in [
            ("region", &raw.region),
            ("availabilityZone", &raw.availability_zone),
            ("instanceId", &raw.instance_id),
            ("imageId", &raw.image_id),
            ("instanceType", &raw.instance_type),
        ] {
            let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
            if value.is_empty() || value.len() > 128 || !value.bytes().all(plain) {
                return Err(invalid(format!(
                    "{field} {value:?} is not 1 to 128 letters, digits, `-`, `.` or `_`"
                )));
            }
        }
        Ok(Self {
            account_id: raw.account_id,
            region: raw.region,
            availability_zone: raw.availability_zone,
            instance_id: raw.instance_id,
            image_id: raw.image_id,
            instance_type: raw.instance_type,
            architecture: raw.architecture,
            private_ip: raw.private_ip,
            pending_time: raw.pending_time,
        })
    }
}

#[cfg(test)]
mod tests;
