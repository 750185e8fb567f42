//! Decision counters and event records.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns},
};
use enforcer_common::{
    EventHeader, Verdict, Workload,
    event::COMM_LEN,
    maps::{COUNTER_LOST, counter_index},
};

use crate::maps::{COUNTERS, EVENTS};

/// Adds one to the per-CPU counter of `kind` and `slot` (a verdict or `COUNTER_LOST`).
#[inline(always)]
pub fn count(kind: u8, slot: u8) {
    if let Some(p) = COUNTERS.get_ptr_mut(counter_index(kind, slot)) {
        // SAFETY: the pointer is this CPU's slot of the per-CPU array; programs do not migrate
        // CPUs while running, so nothing else writes it concurrently.
        unsafe { *p += 1 };
    }
}

/// Whether a decision becomes an event: denials and audits always, allows when asked for or
/// while the workload is observed.
#[inline(always)]
pub fn wanted(verdict: Verdict, workload: &Workload) -> bool {
    workload.reports(verdict)
}

/// The header fields every event shares; `task` fills pid, uid and comm from the current task
/// (meaningless for packets, which arrive in whatever context the network stack runs).
#[inline(always)]
pub fn header(kind: u8, verdict: Verdict, workload: &Workload, cgroup_id: u64, task: bool) -> EventHeader {
    let (pid_tgid, uid_gid, comm) = if task {
        (bpf_get_current_pid_tgid(), bpf_get_current_uid_gid(), bpf_get_current_comm().unwrap_or([0; COMM_LEN]))
    } else {
        (0, 0, [0; COMM_LEN])
    };
    EventHeader {
        kind,
        verdict: verdict as u8,
        detail: 0,
        proto: 0,
        pid: (pid_tgid >> 32) as u32,
        #[expect(clippy::cast_possible_truncation, reason = "the lower half is the uid")]
        uid: uid_gid as u32,
        identity: workload.identity,
        cgroup_id,
        // SAFETY: helper without arguments.
        time_ns: unsafe { bpf_ktime_get_ns() },
        rule_id: 0,
        remote_identity: 0,
        comm,
    }
}

/// Writes `record` to the ring buffer, or counts it as lost when the buffer is full.
#[inline(always)]
pub fn emit<T: 'static>(kind: u8, record: &T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(
                // SAFETY: T is a plain `#[repr(C)]` record; copying it is a byte copy.
                unsafe { core::ptr::read(record) },
            );
            entry.submit(0);
        }
        #[expect(clippy::cast_possible_truncation, reason = "a slot index below 4")]
        None => count(kind, COUNTER_LOST as u8),
    }
}

