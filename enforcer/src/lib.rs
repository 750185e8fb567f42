//! enforcer: per-host workload identity and eBPF enforcement.
//!
//! - [`config`]: the TOML configuration, strictly validated.
//! - [`identity`]: workloads below the managed cgroup root, their labels and identity numbers.
//! - [`datapath`]: loads, attaches and pins the kernel programs; applies state to maps.
//! - [`mountinfo`]: what is mounted where.
//! - [`cluster`]: identity across hosts: CA, peer exchange of profiles, token keys.
//! - [`events`]: decodes kernel records into flow events.
//! - [`agent`]: the daemon that ties them together.
//! - [`cli`]: the `enforcer` command line.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod datapath;
pub mod events;
pub mod identity;
pub mod inotify;
pub mod mountinfo;
pub mod policy;
pub mod profile;
