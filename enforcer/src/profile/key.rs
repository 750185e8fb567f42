//! The host's Ed25519 key: created on first start in `state_dir` (mode 0600), stable across
//! restarts, never logged.

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use ring::{
    rand::SystemRandom,
    signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey},
};

/// File name of the private key (PKCS#8 DER) in `state_dir`.
pub const PRIVATE_FILE: &str = "host.key";
/// File name of the public key (base64 of the raw 32 bytes) in `state_dir`.
pub const PUBLIC_FILE: &str = "host.pub";

/// A problem with a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a valid key.
    #[error("key file {path} is not a valid {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
    /// The private key is readable by others.
    #[error("key file {path} has mode {mode:o}; it must be 0600 (chmod 600 {path})")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

/// An Ed25519 public key and its id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: [u8; 32],
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl PublicKey {
    /// From the raw 32 bytes.
    #[must_use]
    pub fn from_raw(raw: [u8; 32]) -> Self {
        Self { raw }
    }

    /// Parses the text form: base64 of the raw 32 bytes; `None` when it is not one.
    #[must_use]
    pub fn from_text(text: &str) -> Option<Self> {
        let bytes = B64.decode(text.trim()).ok()?;
        Some(Self { raw: bytes.try_into().ok()? })
    }

    /// Reads a public key file.
    ///
    /// # Errors
    /// [`KeyError`] when unreadable or invalid.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
        Self::from_text(&text).ok_or_else(|| KeyError::Invalid { path: path.to_owned(), what: "Ed25519 public key (base64 of 32 bytes)" })
    }

    /// The raw 32 bytes.
    #[must_use]
    pub fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// The text form.
    #[must_use]
    pub fn to_text(&self) -> String {
        B64.encode(self.raw)
    }

    /// `ed25519:` and the first 8 bytes of the key's SHA-256, in hex.
    #[must_use]
    pub fn id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.raw);
        format!("ed25519:{}", hex::encode(&digest.as_ref()[..8]))
    }

    /// Whether `signature` is this key's signature over `message`.
    #[must_use]
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.raw).verify(message, signature).is_ok()
    }
}

/// The host's signing key.
pub struct HostKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        write!(f, "HostKey({})", self.public().id())
    }
}

impl HostKey {
    /// Loads the key from `state_dir`, creating it (and the directory, mode 0700) on first use.
    ///
    /// # Errors
    /// [`KeyError`] when the files cannot be read or written, are invalid, or the private key
    /// is accessible to others.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, KeyError> {
        Self::load_or_create_named(state_dir, PRIVATE_FILE, PUBLIC_FILE)
    }

    /// Like [`HostKey::load_or_create`], with the private and public key in the files named
    /// `private_name` and `public_name` of `dir` (a CA key, for instance).
    ///
    /// # Errors
    /// As [`HostKey::load_or_create`].
    pub fn load_or_create_named(dir: &Path, private_name: &str, public_name: &str) -> Result<Self, KeyError> {
        let state_dir = dir;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(state_dir).map_err(io(state_dir))?;
        let private = state_dir.join(private_name);
        let pair = match std::fs::metadata(&private) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Permissions { path: private, mode });
                }
                let der = std::fs::read(&private).map_err(io(&private))?;
                Ed25519KeyPair::from_pkcs8(&der)
                    .map_err(|_| KeyError::Invalid { path: private.clone(), what: "PKCS#8 Ed25519 private key" })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| KeyError::Invalid { path: private.clone(), what: "freshly generated key" })?;
                write_private(&private, der.as_ref()).map_err(io(&private))?;
                Ed25519KeyPair::from_pkcs8(der.as_ref())
                    .map_err(|_| KeyError::Invalid { path: private.clone(), what: "freshly generated key" })?
            }
            Err(e) => return Err(KeyError::Io { path: private, source: e }),
        };
        let key = Self { pair };
        let public = state_dir.join(public_name);
        std::fs::write(&public, format!("{}\n", key.public().to_text())).map_err(io(&public))?;
        Ok(key)
    }

    /// The public half.
    #[must_use]
    pub fn public(&self) -> PublicKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey { raw }
    }

    /// Signs `message`.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Writes the private key 0600 from the first byte on (created with that mode, then renamed
/// into place so a crash never leaves a partial key).
fn write_private(path: &Path, der: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(der)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
