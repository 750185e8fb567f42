//! The enforcer's kernel side: every decision is a few map lookups, nothing blocks or calls out.
//!
//! - [`workload`]: which enrolled workload the current task belongs to (cgroup id → identity,
//!   nested cgroups resolved to the nearest enrolled ancestor below the managed root).
//! - [`decide`]: the network verdict from compiled rules (exact ports, port blocks, posture).
//! - [`net`]: `cgroup/connect4/6`, `sendmsg4/6`, the egress verdict per connect or UDP send.
//! - [`ingress`]: `cgroup_skb/ingress`, the verdict per inbound TCP SYN or UDP datagram.
//! - [`file`]: `lsm/file_open`, the verdict per file open.
//! - [`token`]: `sock_ops` stamping identity tokens on SYNs, and their check on ingress.
//! - [`report`]: decision counters and events into the ring buffer.
//!
//! Map layouts and names come from `enforcer-common`; the agent fills the maps.
// Built for `bpfel-unknown-none` by `enforcer/build.rs`. Host builds (clippy, rustdoc) compile
// the same code as an ordinary binary that does nothing.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![allow(
    clippy::inline_always,
    reason = "helpers are inlined on purpose: the verifier checks one flat program per hook"
)]
#![allow(clippy::needless_pass_by_value, reason = "aya's program macros pass the context by value")]

mod decide;
mod file;
mod ingress;
mod maps;
mod net;
mod report;
mod token;
mod workload;

/// The kernel requires a GPL-compatible license for BPF-LSM programs and some helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could get here.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
