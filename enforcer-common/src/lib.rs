//! Types shared by the kernel programs (`enforcer-ebpf`) and the agent (`enforcer`).
//!
//! Everything here is `#[repr(C)]`, explicitly padded and size-checked at compile time, so the
//! two sides can never disagree about a layout. Map names and capacities are declared once, in
//! [`maps`]. With the `user` feature the types also implement `aya::Pod`.
#![no_std]

pub mod event;
pub mod file;
pub mod identity;
pub mod maps;
pub mod net;
pub mod token;
pub mod verdict;
pub mod workload;

pub use event::{EventHeader, FileEvent, NetEvent};
pub use file::{FileKey, FileValue};
pub use identity::Identity;
pub use net::{FlowKey, IpcacheKey, NetRuleKey, NetRuleValue, RangeKey};
pub use token::{ClusterConfig, PeerKey, RemoteKey};
pub use verdict::Verdict;
pub use workload::{AgentConfig, Workload};

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` for every type that crosses a map boundary.
    //!
    //! SAFETY (for every impl below): each type is `#[repr(C)]`, `Copy`, contains only integers
    //! and integer arrays, has explicit padding fields and no implicit padding (checked by the
    //! `size_of` assertions next to each type), so every bit pattern is a valid value.
    use super::{
        AgentConfig, ClusterConfig, FileEvent, FileKey, FileValue, FlowKey, IpcacheKey, NetEvent, NetRuleKey, NetRuleValue,
        PeerKey, RangeKey, RemoteKey, Workload,
    };

    unsafe impl aya::Pod for Workload {}
    unsafe impl aya::Pod for AgentConfig {}
    unsafe impl aya::Pod for NetRuleKey {}
    unsafe impl aya::Pod for NetRuleValue {}
    unsafe impl aya::Pod for IpcacheKey {}
    unsafe impl aya::Pod for RangeKey {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FileKey {}
    unsafe impl aya::Pod for FileValue {}
    unsafe impl aya::Pod for NetEvent {}
    unsafe impl aya::Pod for FileEvent {}
    unsafe impl aya::Pod for PeerKey {}
    unsafe impl aya::Pod for RemoteKey {}
    unsafe impl aya::Pod for ClusterConfig {}
}
