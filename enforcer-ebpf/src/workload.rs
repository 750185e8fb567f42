//! Which enrolled workload the current task belongs to.

use aya_ebpf::helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id};
use enforcer_common::{
    Verdict, Workload,
    identity::PENDING,
    workload::MAX_NESTING,
};

use crate::maps::{CONFIG, WORKLOADS};

/// What applies to a task inside the managed root whose cgroup and ancestors are all unknown
/// (the agent has not written the root's entry yet): deny everything. Never allow by accident.
const FAIL_CLOSED: Workload = Workload {
    identity: PENDING,
    egress_default: Verdict::Deny as u8,
    ingress_default: Verdict::Deny as u8,
    file_default: Verdict::Deny as u8,
    flags: 0,
};

/// The workload of the current task and its cgroup id, or `None` when the task is not below the
/// managed root (then nothing here applies to it).
///
/// Fast path: the task's own cgroup is enrolled (one lookup). Otherwise the nearest enrolled
/// ancestor at most [`MAX_NESTING`] levels below the root decides, so a workload cannot escape
/// its policy by creating a child cgroup; the root's own entry carries the default posture.
#[inline(always)]
pub fn current() -> Option<(Workload, u64)> {
    // SAFETY: helper without pointer arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the map value is plain data and copied out at once.
    if let Some(w) = unsafe { WORKLOADS.get(cgroup_id) } {
        return Some((*w, cgroup_id));
    }
    let cfg = CONFIG.get(0)?;
    if cfg.root_cgroup_id == 0 {
        return None;
    }
    let root_level = cfg.root_level.cast_signed();
    // SAFETY: helper without pointer arguments; returns 0 for a level deeper than the task's.
    if unsafe { bpf_get_current_ancestor_cgroup_id(root_level) } != cfg.root_cgroup_id {
        return None;
    }
    let mut depth = MAX_NESTING.cast_signed();
    while depth > 0 {
        // SAFETY: as above.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(root_level + depth) };
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
