//! File rule table: an LPM trie keyed by generation, identity and path bytes.

/// Path bytes in a [`FileKey`] (the LPM trie's data is at most 256 bytes).
pub const FILE_PATH_LEN: usize = 248;

/// Prefix bits of a [`FileKey`] before the path.
pub const FILE_FIXED_BITS: u32 = 64;

/// Data of a `FILE_RULES` LPM key. A subtree rule's key is its path ending in `/`; an exact
/// file's (or a subtree's own directory's) is the path followed by a NUL, so it matches only
/// that path. The kernel looks up the opened file's `d_path`, NUL-terminated.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileKey {
    /// Generation (see `AgentConfig::generation`).
    pub generation: u8,
    /// Reserved, zero.
    pub _pad: [u8; 3],
    /// Local identity, big-endian.
    pub identity: [u8; 4],
    /// Path bytes.
    pub path: [u8; FILE_PATH_LEN],
}
const _: () = assert!(core::mem::size_of::<FileKey>() == 256);

/// Value of `FILE_RULES`: a verdict per access (read, write, exec) and the rule behind each.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileValue {
    /// [`crate::Verdict`] values for read, write, exec; the fourth is reserved.
    pub verdicts: [u8; 4],
    /// Rule ids for read, write, exec.
    pub rule_ids: [u32; 3],
}
const _: () = assert!(core::mem::size_of::<FileValue>() == 16);
