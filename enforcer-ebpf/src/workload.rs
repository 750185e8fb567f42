//! Which enrolled workload the current task belongs to.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id,
    },
};
use aya_ebpf::helpers::bpf_ktime_get_ns;
use enforcer_common::{
    Verdict, Workload,
    identity::PENDING,
    workload::{AGENT_DOWN_AFTER_NS, MAX_NESTING},
};

use crate::maps::{CONFIG, HEARTBEAT, WORKLOADS};

/// What applies to a task inside the managed root whose cgroup and ancestors are all unknown
/// (the agent has not written the root's entry yet): deny everything. Never allow by accident.
const FAIL_CLOSED: Workload = Workload {
    identity: PENDING,
    egress_default: Verdict::Deny as u8,
    ingress_default: Verdict::Deny as u8,
    file_default: Verdict::Deny as u8,
    flags: 0,
};

/// Where a decision's cgroup comes from.
pub trait Cgroups {
    /// The cgroup's id.
    fn id(&self) -> u64;
    /// Its ancestor at `level` (0 when the cgroup is not that deep).
    fn ancestor(&self, level: i32) -> u64;
}

/// The current task's cgroup (socket calls, file opens).
pub struct Task;

impl Cgroups for Task {
    #[inline(always)]
    fn id(&self) -> u64 {
        // SAFETY: helper without pointer arguments.
        unsafe { bpf_get_current_cgroup_id() }
    }

    #[inline(always)]
    fn ancestor(&self, level: i32) -> u64 {
        // SAFETY: helper without pointer arguments; returns 0 for a level deeper than the task's.
        unsafe { bpf_get_current_ancestor_cgroup_id(level) }
    }
}

/// The cgroup of the socket a packet is for (`cgroup_skb` programs).
pub struct Packet(pub *mut __sk_buff);

impl Cgroups for Packet {
    #[inline(always)]
    fn id(&self) -> u64 {
        // SAFETY: the pointer is the program's context.
        unsafe { bpf_skb_cgroup_id(self.0) }
    }

    #[inline(always)]
    fn ancestor(&self, level: i32) -> u64 {
        // SAFETY: as above.
        unsafe { bpf_skb_ancestor_cgroup_id(self.0, level) }
    }
}

/// The current task's workload; see [`resolve`].
#[inline(always)]
pub fn current() -> Option<(Workload, u64)> {
    resolve(&Task)
}

/// `on_agent_down = "open"` and the agent's heartbeat is stale: enforce nothing until an agent
/// is back. (With `enforce`, the default, one array read and no clock.)
#[inline(always)]
fn failed_open() -> bool {
    if CONFIG.get(0).is_none_or(|c| c.fail_open == 0) {
        return false;
    }
    let last = HEARTBEAT.get(0).copied().unwrap_or(0);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    now.saturating_sub(last) > AGENT_DOWN_AFTER_NS
}

/// The workload of cgroup `cg` and its cgroup id, or `None` when it is not below the managed
/// root or the agent is down with `on_agent_down = "open"` (then nothing here applies).
///
/// Fast path: the cgroup itself is enrolled (one lookup). Otherwise the nearest enrolled
/// ancestor at most [`MAX_NESTING`] levels below the root decides, so a workload cannot escape
/// its policy by creating a child cgroup; the root's own entry carries the default posture.
#[inline(always)]
pub fn resolve(cg: &impl Cgroups) -> Option<(Workload, u64)> {
    if failed_open() {
        return None;
    }
    let cgroup_id = cg.id();
    // SAFETY: the map value is plain data and copied out at once.
    if let Some(w) = unsafe { WORKLOADS.get(cgroup_id) } {
        return Some((*w, cgroup_id));
    }
    let cfg = CONFIG.get(0)?;
    if cfg.root_cgroup_id == 0 {
        return None;
    }
    let root_level = cfg.root_level.cast_signed();
    if cg.ancestor(root_level) != cfg.root_cgroup_id {
        return None;
    }
    let mut depth = MAX_NESTING.cast_signed();
    while depth > 0 {
        let id = cg.ancestor(root_level + depth);
        if id != 0 {
            // SAFETY: as above.
            if let Some(w) = unsafe { WORKLOADS.get(id) } {
                return Some((*w, cgroup_id));
            }
        }
        depth -= 1;
    }
    // SAFETY: as above.
    match unsafe { WORKLOADS.get(cfg.root_cgroup_id) } {
        Some(w) => Some((*w, cgroup_id)),
        None => Some((FAIL_CLOSED, cgroup_id)),
    }
}
