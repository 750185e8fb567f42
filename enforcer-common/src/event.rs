//! Event records written by the kernel into the `EVENTS` ring buffer.
//!
//! Every record starts with an [`EventHeader`]; `kind` says which record follows.

use crate::identity::Identity;

/// A network decision: [`NetEvent`].
pub const KIND_NETWORK: u8 = 1;
/// A file decision: [`FileEvent`].
pub const KIND_FILE: u8 = 2;
/// Number of event kinds.
pub const KIND_COUNT: usize = 2;

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// Common first part of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// `KIND_*`.
    pub kind: u8,
    /// A [`crate::Verdict`] value.
    pub verdict: u8,
    /// Network: `DIR_*`; file: `ACCESS_*` bits.
    pub detail: u8,
    /// Network: IP protocol; file: 0.
    pub proto: u8,
    /// Thread group id of the caller.
    pub pid: u32,
    /// Real user id of the caller.
    pub uid: u32,
    /// Identity of the local workload.
    pub identity: Identity,
    /// cgroup id of the caller.
    pub cgroup_id: u64,
    /// `bpf_ktime_get_boot_ns`-style monotonic time of the decision, nanoseconds.
    pub time_ns: u64,
    /// Which compiled rule decided (0: the default posture).
    pub rule_id: u32,
    /// Remote identity (network), 0 for files.
    pub remote_identity: Identity,
    /// Caller's command name, NUL padded.
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 56);

/// A network decision.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetEvent {
    /// Common part, `kind == KIND_NETWORK`.
    pub header: EventHeader,
    /// 4 or 6: how the caller addressed the remote side. Addresses are IPv4-mapped for 4.
    pub family: u8,
    /// Ingress TCP SYNs with a cluster configured: the identity token's result, a
    /// [`crate::token::counter`] slot + 1 (1: verified). 0: not checked.
    pub token: u8,
    /// Reserved, zero.
    pub _pad: [u8; 2],
    /// Local port, host byte order (0 when not bound yet).
    pub src_port: u16,
    /// Remote port, host byte order.
    pub dst_port: u16,
    /// Local address (may be unspecified before the kernel picks one).
    pub src: [u8; 16],
    /// Remote address.
    pub dst: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<NetEvent>() == 96);

/// Read access requested by a file open.
pub const ACCESS_READ: u8 = 1;
/// Write access requested by a file open.
pub const ACCESS_WRITE: u8 = 2;
/// Execution of the file.
pub const ACCESS_EXEC: u8 = 4;

/// A file decision.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileEvent {
    /// Common part, `kind == KIND_FILE`; `detail` holds the `ACCESS_*` bits requested.
    pub header: EventHeader,
    /// The path, NUL-terminated (empty when it could not be resolved).
    pub path: [u8; crate::file::FILE_PATH_LEN],
}
const _: () = assert!(core::mem::size_of::<FileEvent>() == 56 + 248);
