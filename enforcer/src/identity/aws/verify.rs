//! Verification of the `rsa2048` CMS `SignedData` over an instance identity document.
//!
//! The checks follow RFC 5652 section 5.4 and 5.6 for one signer with RSA PKCS#1 v1.5 and
//! SHA-256, which is what AWS produces. The identity is parsed from the content inside the
//! signature (or, for a detached signature, from the served document the digest covers), and
//! only after that content has been compared with the served document byte for byte.

use base64::Engine as _;
use cms::{content_info::ContentInfo, signed_data::SignedData};
use ring::signature::RSA_PKCS1_2048_8192_SHA256;
use x509_cert::der::{
    Decode, Encode,
    asn1::{ObjectIdentifier as Oid, OctetString},
};

use super::{AwsError, InstanceIdentity, TrustedCerts, ber, certs::RsaKey};

const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
const ID_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
const ID_SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(super) const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");

/// AWS's signatures are about 2 KiB of base64; anything far larger is not one.
const MAX_SIGNATURE_B64: usize = 64 * 1024;

/// Verifies `document` against its `rsa2048` signature as IMDS serves it (base64 DER or BER
/// CMS `SignedData`, line breaks allowed) and returns the identity it states.
///
/// # Errors
/// - [`AwsError::BadSignature`]: not base64, not a `SignedData` with exactly one RSA/SHA-256
///   signer, or the RSA signature does not verify with the region's certificate;
/// - [`AwsError::ContentMismatch`]: the signed content is not `document`;
/// - [`AwsError::Document`]: the signed document is not a valid identity document;
/// - [`AwsError::UnknownRegion`]: `certs` has no certificate for the region it names;
/// - [`AwsError::DigestMismatch`]: the `messageDigest` attribute is not its SHA-256.
pub fn verify(document: &[u8], rsa2048_b64: &str, certs: &TrustedCerts) -> Result<InstanceIdentity, AwsError> {
    let signature = Signature::parse(rsa2048_b64).map_err(|reason| AwsError::BadSignature { reason })?;
    // The bytes the signature covers. Everything below reads these and nothing else.
    let signed = signature.content.as_deref().unwrap_or(document);
    if signed != document {
        return Err(AwsError::ContentMismatch {
            signed_len: signed.len(),
            served_len: document.len(),
        });
    }
    let claimed = InstanceIdentity::parse(signed)?;
    let key = certs.key(&claimed.region).ok_or_else(|| AwsError::UnknownRegion {
        region: claimed.region.clone(),
    })?;
    signature.check(signed, key, &claimed.region)?;
    Ok(claimed)
}

/// The parts of a `SignedData` that verification needs.
struct Signature {
    /// The encapsulated content; `None` for a detached signature.
    content: Option<Vec<u8>>,
    /// With signed attributes: their DER (as a SET) and the `messageDigest` value.
    attrs: Option<(Vec<u8>, Vec<u8>)>,
    /// The RSA signature.
    value: Vec<u8>,
}

impl Signature {
    fn parse(b64: &str) -> Result<Self, String> {
        if b64.len() > MAX_SIGNATURE_B64 {
            return Err(format!(
                "{} bytes of base64, more than the {MAX_SIGNATURE_B64} allowed",
                b64.len()
            ));
        }
        let compact: Vec<u8> = b64.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        let ber = base64::engine::general_purpose::STANDARD
            .decode(&compact)
            .map_err(|e| format!("not base64: {e}"))?;
        let der = ber::to_der(&ber).map_err(|e| format!("not a DER/BER structure: {e}"))?;
        let info = ContentInfo::from_der(&der).map_err(|e| format!("not a CMS ContentInfo: {e}"))?;
        if info.content_type != ID_SIGNED_DATA {
            return Err(format!("content type {} is not signedData", info.content_type));
        }
        let signed_data: SignedData = info
            .content
            .decode_as()
            .map_err(|e| format!("not a CMS SignedData: {e}"))?;
        let encap = &signed_data.encap_content_info;
        if encap.econtent_type != ID_DATA {
            return Err(format!("encapsulated content type {} is not data", encap.econtent_type));
        }
        let content = match &encap.econtent {
            Some(any) => Some(
                any.decode_as::<OctetString>()
                    .map_err(|e| format!("encapsulated content is not an OCTET STRING: {e}"))?
                    .into_bytes(),
            ),
            None => None,
        };
        let signers = signed_data.signer_infos.0.as_slice();
        let [signer] = signers else {
            return Err(format!("{} signers; exactly one is expected", signers.len()));
        };
        check_algorithm("digest", &signer.digest_alg, &[ID_SHA256])?;
        check_algorithm(
            "signature",
            &signer.signature_algorithm,
            &[RSA_ENCRYPTION, SHA256_WITH_RSA],
        )?;
        let attrs = match &signer.signed_attrs {
            None => None,
            Some(attrs) => {
                let single = |oid: Oid, name: &str| {
                    let mut found = attrs.iter().filter(|a| a.oid == oid);
                    match (found.next(), found.next()) {
                        (Some(attr), None) if attr.values.len() == 1 => Ok(attr.values.as_slice()[0].clone()),
                        (None, _) => Err(format!("signed attributes lack {name}")),
                        _ => Err(format!("signed attribute {name} is not a single value")),
                    }
                };
                let content_type: Oid = single(ID_CONTENT_TYPE, "contentType")?
                    .decode_as()
                    .map_err(|e| format!("contentType attribute: {e}"))?;
                if content_type != encap.econtent_type {
                    return Err(format!(
                        "contentType attribute {content_type} is not the content's type"
                    ));
                }
                let digest = single(ID_MESSAGE_DIGEST, "messageDigest")?
                    .decode_as::<OctetString>()
                    .map_err(|e| format!("messageDigest attribute: {e}"))?
                    .into_bytes();
                // RFC 5652 5.4: the signature covers the DER of the attributes as a SET OF,
                // not the [0] IMPLICIT tag they are carried under.
                let der = attrs
                    .to_der()
                    .map_err(|e| format!("cannot re-encode the signed attributes: {e}"))?;
                Some((der, digest))
            }
        };
        Ok(Self {
            content,
            attrs,
            value: signer.signature.as_bytes().to_vec(),
        })
    }

    /// Checks the digest and the RSA signature over `content` with `key`.
    fn check(&self, content: &[u8], key: &RsaKey, region: &str) -> Result<(), AwsError> {
        let message = match &self.attrs {
            None => content,
            Some((der, digest)) => {
                let actual = ring::digest::digest(&ring::digest::SHA256, content);
                if actual.as_ref() != digest.as_slice() {
                    return Err(AwsError::DigestMismatch);
                }
                der.as_slice()
            }
        };
        key.verify(&RSA_PKCS1_2048_8192_SHA256, message, &self.value)
            .map_err(|_| AwsError::BadSignature {
                reason: format!("the RSA signature was not made by the trusted {region} certificate"),
            })
    }
}

fn check_algorithm(what: &str, alg: &x509_cert::spki::AlgorithmIdentifierOwned, allowed: &[Oid]) -> Result<(), String> {
    if !allowed.contains(&alg.oid) {
        return Err(format!("{what} algorithm {} is not RSA with SHA-256", alg.oid));
    }
    // Parameters must be absent or NULL for these algorithms (RFC 5754, RFC 8017).
    match &alg.parameters {
        None => Ok(()),
        Some(p) if p.is_null() => Ok(()),
        Some(_) => Err(format!("{what} algorithm {} has unexpected parameters", alg.oid)),
    }
}
