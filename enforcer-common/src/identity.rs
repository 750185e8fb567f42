//! Identity numbers: what the kernel knows of a workload or a remote address.
//!
//! Numbers below [`FIRST_WORKLOAD`] are reserved; the agent assigns the rest.

/// A numeric identity as stored in the kernel maps.
pub type Identity = u32;

/// In a rule key: any remote identity.
pub const ANY: Identity = 0;
/// A remote address that maps to no known identity.
pub const WORLD: Identity = 1;
/// The host itself (an address of the host, not of any workload).
pub const HOST: Identity = 2;
/// A cgroup below the managed root whose tags are not known yet: it gets the default posture.
pub const PENDING: Identity = 3;
/// The first identity number the agent assigns to a workload (up to [`FIRST_REMOTE`]).
pub const FIRST_WORKLOAD: Identity = 256;
/// The first identity number given to a verified workload of another agent (up to
/// [`FIRST_CIDR`]).
pub const FIRST_REMOTE: Identity = 0x0010_0000;
/// The first identity number of the range given to CIDR prefixes named in policies.
pub const FIRST_CIDR: Identity = 0x0100_0000;
