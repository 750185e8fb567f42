//! Keys of identity across hosts: the agent id, the X25519 exchange key kept in `state_dir`,
//! and the pairwise token key two agents derive each epoch without talking to each other:
//! `HKDF-SHA256(X25519(mine, theirs), info = lower id | higher id | epoch)`.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use ring::hkdf;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

use crate::profile::{KeyError, PublicKey};

/// The exchange key file in `state_dir` (raw 32 bytes, mode 0600).
pub const EXCHANGE_FILE: &str = "exchange.key";
const SALT: &[u8] = b"enforcer token key v1";

/// The id an agent's tokens carry: the first four bytes of SHA-256 of its signing key (never
/// 0, which means "no cluster" in the kernel).
#[must_use]
pub fn agent_id(signing: &PublicKey) -> u32 {
    let digest = ring::digest::digest(&ring::digest::SHA256, signing.raw());
    let d = digest.as_ref();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]).max(1)
}

/// The key epoch at `unix_secs`.
#[must_use]
pub fn epoch_at(unix_secs: u64) -> u64 {
    unix_secs / enforcer_common::token::EPOCH_SECS
}

/// This agent's X25519 key.
pub struct ExchangeKey {
    secret: StaticSecret,
}

impl std::fmt::Debug for ExchangeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExchangeKey(..)")
    }
}

impl ExchangeKey {
    /// Loads the key from `state_dir`, creating it on first use.
    ///
    /// # Errors
    /// [`KeyError`] when the file cannot be read or written, is invalid or readable by others.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, KeyError> {
        let path = state_dir.join(EXCHANGE_FILE);
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| KeyError::Io { path, source }
        };
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Permissions { path, mode });
                }
                let raw = std::fs::read(&path).map_err(io(&path))?;
                let raw = <[u8; 32]>::try_from(raw).map_err(|_| KeyError::Invalid { path, what: "32-byte X25519 key" })?;
                Ok(Self { secret: StaticSecret::from(raw) })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(state_dir).map_err(io(&path))?;
                let mut raw = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
                    .map_err(|_| KeyError::Invalid { path: path.clone(), what: "random key" })?;
                let tmp = path.with_extension("tmp");
                let _ = std::fs::remove_file(&tmp);
                let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
                f.write_all(&raw).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
                std::fs::rename(&tmp, &path).map_err(io(&path))?;
                Ok(Self { secret: StaticSecret::from(raw) })
            }
            Err(source) => Err(KeyError::Io { path, source }),
        }
    }

    /// The public half.
    #[must_use]
    pub fn public(&self) -> [u8; 32] {
        XPublic::from(&self.secret).to_bytes()
    }

    /// The `SipHash` key for tokens between agents `me` and `peer` (whose exchange key is
    /// `peer_key`) in `epoch`; both agents derive the same.
    #[must_use]
    pub fn pairwise(&self, me: u32, peer: u32, peer_key: &[u8; 32], epoch: u64) -> [u8; 16] {
        let shared = self.secret.diffie_hellman(&XPublic::from(*peer_key));
        derive(shared.as_bytes(), me, peer, epoch)
    }
}

/// HKDF of a shared secret into the epoch's 16-byte key.
fn derive(shared: &[u8; 32], a: u32, b: u32, epoch: u64) -> [u8; 16] {
    struct Len16;
    impl hkdf::KeyType for Len16 {
        fn len(&self) -> usize {
            16
        }
    }
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut info = [0u8; 16];
    info[..4].copy_from_slice(&lo.to_be_bytes());
    info[4..8].copy_from_slice(&hi.to_be_bytes());
    info[8..].copy_from_slice(&epoch.to_be_bytes());
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(shared);
    let mut out = [0u8; 16];
    let infos = [&info[..]];
    // Expanding to 16 bytes with SHA-256 cannot fail (the limit is 255 * 32).
    if let Ok(okm) = prk.expand(&infos, Len16) {
        let _ = okm.fill(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_agents_derive_the_same_key_and_it_changes_each_epoch() {
        let (a_dir, b_dir, c_dir) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"), tempfile::tempdir().expect("c"));
        let a = ExchangeKey::load_or_create(a_dir.path()).expect("a");
        let b = ExchangeKey::load_or_create(b_dir.path()).expect("b");
        let c = ExchangeKey::load_or_create(c_dir.path()).expect("c");
        let k_ab = a.pairwise(10, 20, &b.public(), 7);
        assert_eq!(k_ab, b.pairwise(20, 10, &a.public(), 7), "symmetric");
        assert_ne!(k_ab, a.pairwise(10, 20, &b.public(), 8), "per epoch");
        assert_ne!(k_ab, a.pairwise(10, 30, &c.public(), 7), "per pair");
        assert_ne!(k_ab, [0; 16]);
        let again = ExchangeKey::load_or_create(a_dir.path()).expect("reload");
        assert_eq!(again.public(), a.public(), "stable across restarts");
        let mode = std::fs::metadata(a_dir.path().join(EXCHANGE_FILE)).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(epoch_at(120), 2);
    }
}
