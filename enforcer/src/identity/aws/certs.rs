//! The per-region AWS RSA-2048 certificates that sign instance identity documents.
//!
//! The PEM files in `certs/` are the "RSA-2048" certificates AWS publishes in the EC2 User
//! Guide, "AWS public certificates for instance identity document signatures"; `certs/README.md`
//! says where each came from and how it was checked. Only the public key is used: these
//! certificates are self-signed trust anchors, and their validity period (until 2195 or later)
//! is not what makes them trusted.

use std::collections::BTreeMap;

use ring::signature::RsaPublicKeyComponents;
use x509_cert::{
    Certificate,
    der::{Decode, DecodePem, Reader, SliceReader, asn1::UintRef},
};

use super::{AwsError, verify::RSA_ENCRYPTION};

/// Region → shipped PEM text. Every region in the AWS page's list that has an RSA-2048
/// certificate; a region missing here is rejected by [`super::verify`].
pub(super) const SHIPPED: &[(&str, &str)] = &[
    ("af-south-1", include_str!("certs/af-south-1.pem")),
    ("ap-east-1", include_str!("certs/ap-east-1.pem")),
    ("ap-east-2", include_str!("certs/ap-east-2.pem")),
    ("ap-northeast-1", include_str!("certs/ap-northeast-1.pem")),
    ("ap-northeast-2", include_str!("certs/ap-northeast-2.pem")),
    ("ap-northeast-3", include_str!("certs/ap-northeast-3.pem")),
    ("ap-south-1", include_str!("certs/ap-south-1.pem")),
    ("ap-south-2", include_str!("certs/ap-south-2.pem")),
    ("ap-southeast-1", include_str!("certs/ap-southeast-1.pem")),
    ("ap-southeast-2", include_str!("certs/ap-southeast-2.pem")),
    ("ap-southeast-3", include_str!("certs/ap-southeast-3.pem")),
    ("ap-southeast-4", include_str!("certs/ap-southeast-4.pem")),
    ("ap-southeast-5", include_str!("certs/ap-southeast-5.pem")),
    ("ap-southeast-6", include_str!("certs/ap-southeast-6.pem")),
    ("ap-southeast-7", include_str!("certs/ap-southeast-7.pem")),
    ("ca-central-1", include_str!("certs/ca-central-1.pem")),
    ("ca-west-1", include_str!("certs/ca-west-1.pem")),
    ("cn-north-1", include_str!("certs/cn-north-1.pem")),
    ("cn-northwest-1", include_str!("certs/cn-northwest-1.pem")),
    ("eu-central-1", include_str!("certs/eu-central-1.pem")),
    ("eu-central-2", include_str!("certs/eu-central-2.pem")),
    ("eu-north-1", include_str!("certs/eu-north-1.pem")),
    ("eu-south-1", include_str!("certs/eu-south-1.pem")),
    ("eu-south-2", include_str!("certs/eu-south-2.pem")),
    ("eu-west-1", include_str!("certs/eu-west-1.pem")),
    ("eu-west-2", include_str!("certs/eu-west-2.pem")),
    ("eu-west-3", include_str!("certs/eu-west-3.pem")),
    ("eusc-de-east-1", include_str!("certs/eusc-de-east-1.pem")),
    ("il-central-1", include_str!("certs/il-central-1.pem")),
    ("me-central-1", include_str!("certs/me-central-1.pem")),
    ("me-south-1", include_str!("certs/me-south-1.pem")),
    ("mx-central-1", include_str!("certs/mx-central-1.pem")),
    ("sa-east-1", include_str!("certs/sa-east-1.pem")),
    ("us-east-1", include_str!("certs/us-east-1.pem")),
    ("us-east-2", include_str!("certs/us-east-2.pem")),
    ("us-gov-east-1", include_str!("certs/us-gov-east-1.pem")),
    ("us-gov-west-1", include_str!("certs/us-gov-west-1.pem")),
    ("us-west-1", include_str!("certs/us-west-1.pem")),
    ("us-west-2", include_str!("certs/us-west-2.pem")),
];

/// An RSA public key in the form `ring` verifies with.
pub(super) type RsaKey = RsaPublicKeyComponents<Vec<u8>>;

/// The certificates trusted to sign identity documents, by region.
#[derive(Clone, Debug)]
pub struct TrustedCerts {
    keys: BTreeMap<String, RsaKey>,
}

impl TrustedCerts {
    /// The AWS RSA-2048 certificates shipped with the agent (see the module docs).
    ///
    /// # Errors
    /// [`AwsError::Certificate`] if a shipped certificate does not parse; a unit test checks
    /// that every one does, so this means a damaged build.
    pub fn aws() -> Result<Self, AwsError> {
        Self::from_pems(SHIPPED.iter().copied())
    }

    /// Trusts the given `(region, PEM certificate)` pairs, e.g. a test signer or a region the
    /// agent does not ship yet. A later pair for the same region replaces an earlier one.
    ///
    /// # Errors
    /// [`AwsError::Certificate`] naming the region whose PEM is not an RSA certificate.
    pub fn from_pems<'a>(pems: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, AwsError> {
        let mut keys = BTreeMap::new();
        for (region, pem) in pems {
            let key = rsa_public_key(pem).map_err(|reason| AwsError::Certificate {
                region: region.to_owned(),
                reason,
            })?;
            keys.insert(region.to_owned(), key);
        }
        Ok(Self { keys })
    }

    /// The regions with a trusted certificate, in order.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// How many regions have a trusted certificate.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no region has a trusted certificate (every document is then rejected).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The public key trusted for `region`.
    pub(super) fn key(&self, region: &str) -> Option<&RsaKey> {
        self.keys.get(region)
    }
}

/// The RSA public key of a PEM certificate.
fn rsa_public_key(pem: &str) -> Result<RsaKey, String> {
    let cert = Certificate::from_pem(pem).map_err(|e| format!("not a PEM X.509 certificate: {e}"))?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(format!(
            "public key algorithm {} is not rsaEncryption",
            spki.algorithm.oid
        ));
    }
    let pkcs1 = spki
        .subject_public_key
        .as_bytes()
        .ok_or("the public key BIT STRING has unused bits")?;
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (RFC 8017 A.1.1)
    let mut reader = SliceReader::new(pkcs1).map_err(|e| format!("bad RSA public key: {e}"))?;
    let (n, e) = reader
        .sequence(|seq| Ok((UintRef::decode(seq)?, UintRef::decode(seq)?)))
        .map_err(|e| format!("bad RSA public key: {e}"))?;
    if !reader.is_finished() {
        return Err("bytes after the RSA public key".into());
    }
    let bits = n.as_bytes().len() * 8 - n.as_bytes().first().map_or(8, |b| b.leading_zeros() as usize);
    if bits < 2048 {
        return Err(format!("RSA key of {bits} bits; at least 2048 are required"));
    }
    Ok(RsaPublicKeyComponents {
        n: n.as_bytes().to_vec(),
        e: e.as_bytes().to_vec(),
    })
}
