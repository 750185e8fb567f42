//! Files: `lsm/file_open`. Needs BPF LSM (`bpf` in `/sys/kernel/security/lsm`, kernel ≥ 5.7,
//! `CONFIG_BPF_LSM`), which the agent detects and reports.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{FileEvent, Verdict, event::KIND_FILE};

use crate::{report, workload};

/// `-EACCES`, what the caller of `open(2)` sees on a denial.
const EACCES: i32 = -13;

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    // The last argument of a BPF-LSM hook is the verdict of the programs before this one:
    // never turn someone else's denial into an allow.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some((w, cgroup_id)) = workload::current() else {
        return 0;
    };
    let verdict = Verdict::from_u8(w.file_default).unwrap_or(Verdict::Deny);
    report::count(KIND_FILE, verdict as u8);
    if report::wanted(verdict, &w) {
        let event = FileEvent { header: report::header(KIND_FILE, verdict, &w, cgroup_id, true) };
        report::emit(KIND_FILE, &event);
    }
    if verdict.passes() { 0 } else { EACCES }
}
