//! The canonical encoding of a [`Profile`]: the bytes that are signed.
//!
//! ```text
//! "EFP" VERSION
//! str workload | u32 identity | map tags | list addresses | str host | str key_id
//! u64 issued_at | u64 expires_at
//! ```
//! Integers are big-endian; `str` is a u32 byte length and UTF-8 bytes; `map` is a u32 count of
//! (str, str) pairs in strictly increasing key order; `list` is a u32 count of `str` in strictly
//! increasing order. Nothing may follow. Every profile has exactly one encoding, and decoding
//! refuses anything that is not in that form (unsorted, duplicate, trailing or truncated).

use super::{Profile, VERSION};

const MAGIC: &[u8; 3] = b"EFP";
/// Bounds that keep a hostile encoding from asking for huge allocations.
const MAX_STR: usize = 64 * 1024;
const MAX_ITEMS: usize = 4096;

/// Why bytes are not a canonical profile encoding.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Does not start with the magic and a known version.
    #[error("not a version {VERSION} profile encoding")]
    BadHeader,
    /// Ends in the middle of a field.
    #[error("truncated in field `{0}`")]
    Truncated(&'static str),
    /// A string is not UTF-8.
    #[error("field `{0}` is not UTF-8")]
    NotUtf8(&'static str),
    /// A length or count is over the limit.
    #[error("field `{0}` is too long")]
    TooLong(&'static str),
    /// Keys or items are not in strictly increasing order.
    #[error("field `{0}` is not in canonical order")]
    NotCanonical(&'static str),
    /// Bytes follow the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Strings are bounded by MAX_STR on decode; a longer one cannot come from a decoded profile,
    // and clamping would change meaning, so lengths are written as they are.
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

/// The canonical bytes of `p`. Addresses are written sorted and deduplicated.
#[must_use]
pub fn encode(p: &Profile) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    put_str(&mut out, &p.workload);
    out.extend_from_slice(&p.identity.to_be_bytes());
    put_count(&mut out, p.tags.len());
    for (k, v) in &p.tags {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }
    let mut addresses: Vec<&String> = p.addresses.iter().collect();
    addresses.sort();
    addresses.dedup();
    put_count(&mut out, addresses.len());
    for a in addresses {
        put_str(&mut out, a);
    }
    put_str(&mut out, &p.host);
    put_str(&mut out, &p.key_id);
    out.extend_from_slice(&p.issued_at.to_be_bytes());
    out.extend_from_slice(&p.expires_at.to_be_bytes());
    out
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn count(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32(field)? as usize;
        if n > MAX_ITEMS {
            return Err(DecodeError::TooLong(field));
        }
        Ok(n)
    }

    fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let n = self.u32(field)? as usize;
        if n > MAX_STR {
            return Err(DecodeError::TooLong(field));
        }
        let b = self.take(n, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::NotUtf8(field))
    }
}

/// Decodes canonical bytes.
///
/// # Errors
/// [`DecodeError`] for anything that is not exactly one canonical encoding.
pub fn decode(bytes: &[u8]) -> Result<Profile, DecodeError> {
    let mut r = Reader { rest: bytes };
    if r.take(4, "header").ok() != Some(&[MAGIC[0], MAGIC[1], MAGIC[2], VERSION][..]) {
        return Err(DecodeError::BadHeader);
    }
    let workload = r.str("workload")?;
    let identity = r.u32("identity")?;
    let mut tags = std::collections::BTreeMap::new();
    let mut last: Option<String> = None;
    for _ in 0..r.count("tags")? {
        let k = r.str("tags")?;
        let v = r.str("tags")?;
        if last.as_ref().is_some_and(|l| *l >= k) {
            return Err(DecodeError::NotCanonical("tags"));
        }
        last = Some(k.clone());
        tags.insert(k, v);
    }
    let mut addresses: Vec<String> = Vec::new();
    for _ in 0..r.count("addresses")? {
        let a = r.str("addresses")?;
        if addresses.last().is_some_and(|l| *l >= a) {
            return Err(DecodeError::NotCanonical("addresses"));
        }
        addresses.push(a);
    }
    let host = r.str("host")?;
    let key_id = r.str("key_id")?;
    let issued_at = r.u64("issued_at")?;
    let expires_at = r.u64("expires_at")?;
    if !r.rest.is_empty() {
        return Err(DecodeError::Trailing(r.rest.len()));
    }
    Ok(Profile { workload, identity, tags, addresses, host, key_id, issued_at, expires_at })
}
