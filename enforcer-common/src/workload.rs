//! The per-cgroup workload entry and the agent's global settings.
#![allow(clippy::inline_always, reason = "inlined into the kernel programs on purpose")]

use crate::identity::Identity;

/// Value of the `WORKLOADS` map, keyed by cgroup id.
///
/// The posture bytes are [`crate::Verdict`] values applied when no rule decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The workload's identity number.
    pub identity: Identity,
    /// Verdict for outgoing connections and sends that no rule matches.
    pub egress_default: u8,
    /// Verdict for incoming connections and datagrams that no rule matches.
    pub ingress_default: u8,
    /// Verdict for file opens that no rule matches.
    pub file_default: u8,
    /// `WORKLOAD_F_*` bits.
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<Workload>() == 8);

/// Also report allowed operations of this workload as events.
pub const WORKLOAD_F_LOG_ALLOWED: u8 = 1;
/// The workload is observed (`enforcer observe`): nothing it does is blocked (a denial becomes
/// an audit) and every operation is reported, allowed ones included.
pub const WORKLOAD_F_OBSERVE: u8 = 2;

impl Workload {
    /// The verdict as applied to this workload: an observed workload is never blocked.
    #[must_use]
    #[inline(always)]
    pub fn applied(&self, verdict: crate::Verdict) -> crate::Verdict {
        if self.flags & WORKLOAD_F_OBSERVE != 0 && verdict == crate::Verdict::Deny { crate::Verdict::Audit } else { verdict }
    }

    /// Whether a decision with `verdict` becomes an event: denials and audits always, allowed
    /// operations when asked for or while observed.
    #[must_use]
    #[inline(always)]
    pub fn reports(&self, verdict: crate::Verdict) -> bool {
        verdict != crate::Verdict::Allow || self.flags & (WORKLOAD_F_LOG_ALLOWED | WORKLOAD_F_OBSERVE) != 0
    }
}

/// The only element of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// cgroup id of the managed root; 0 while no agent has configured the datapath.
    pub root_cgroup_id: u64,
    /// Level of the managed root in the cgroup v2 hierarchy (the mount root is level 0).
    pub root_level: u32,
    /// Which generation of rule and ipcache entries is in force (0 or 1). The agent fills the
    /// other generation, then flips this byte: every decision reads it once, so none sees a mix
    /// of old and new policy.
    pub generation: u8,
    /// 1: `on_agent_down = "open"`: while the agent's heartbeat is older than
    /// [`AGENT_DOWN_AFTER_NS`], nothing is enforced. 0: the last state keeps being enforced.
    pub fail_open: u8,
    /// Reserved, zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<AgentConfig>() == 16);

/// How long after its last heartbeat (`HEARTBEAT`, `CLOCK_MONOTONIC` nanoseconds) the agent
/// counts as down. The agent beats every [`HEARTBEAT_INTERVAL_NS`].
pub const AGENT_DOWN_AFTER_NS: u64 = 1_500_000_000;
/// How often the agent writes its heartbeat.
pub const HEARTBEAT_INTERVAL_NS: u64 = 250_000_000;

/// How many cgroup levels below the managed root the kernel searches for an enrolled ancestor.
/// A cgroup nested deeper resolves to the managed root's entry (the default posture).
pub const MAX_NESTING: u32 = 8;
