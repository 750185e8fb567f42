//! Files: `lsm/file_open`. Needs BPF LSM (`bpf` in `/sys/kernel/security/lsm`, kernel ≥ 5.7,
//! `CONFIG_BPF_LSM`), which the agent detects and reports.
//!
//! The opened path (`bpf_d_path` on `&file->f_path`) is looked up in `FILE_RULES` with the
//! workload's identity: the longest rule key that prefixes it holds the verdict for read,
//! write and exec. The access requested comes from `file->f_mode` (read, write) and
//! `file->f_flags` (`__FMODE_EXEC` marks the opens `execve` does: the binary, a script's
//! interpreter, the ELF loader; LSMs check it there since Linux 6.8). The member offsets come
//! from the running kernel's BTF: the agent writes them into the read-only globals below when
//! it loads the object, so the verifier sees constants.

use aya_ebpf::{
    bindings::path,
    helpers::{bpf_d_path, bpf_probe_read_kernel},
    macros::lsm,
    programs::LsmContext,
};
use enforcer_common::{
    FileEvent, Verdict, Workload,
    event::{ACCESS_EXEC, ACCESS_READ, ACCESS_WRITE, KIND_FILE},
    file::{FILE_FIXED_BITS, FILE_PATH_LEN},
};

use crate::{
    decide,
    maps::{EVENTS, FILE_RULES, FILE_SCRATCH},
    report, workload,
};

/// Bits in a lookup key: all of it (the path bytes after the NUL never match a rule).
#[expect(clippy::cast_possible_truncation, reason = "248 bytes")]
const KEY_BITS: u32 = FILE_FIXED_BITS + 8 * FILE_PATH_LEN as u32;
#[expect(clippy::cast_possible_truncation, reason = "248 bytes")]
const PATH_BUF: u32 = FILE_PATH_LEN as u32;

/// `-EACCES`, what the caller of `open(2)` or `execve(2)` sees on a denial.
const EACCES: i32 = -13;
const FMODE_READ: u32 = 0x1;
const FMODE_WRITE: u32 = 0x2;
/// `__FMODE_EXEC`, in `f_flags`.
const FMODE_EXEC: u32 = 0x20;

/// Byte offset of `f_path` in `struct file` (set at load from BTF).
#[unsafe(no_mangle)]
static F_PATH_OFFSET: u32 = 0;
/// Byte offset of `f_mode` in `struct file` (set at load from BTF).
#[unsafe(no_mangle)]
static F_MODE_OFFSET: u32 = 0;
/// Byte offset of `f_flags` in `struct file` (set at load from BTF).
#[unsafe(no_mangle)]
static F_FLAGS_OFFSET: u32 = 0;

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
    let file: *const u8 = ctx.arg(0);
    // SAFETY: reads of the program's read-only globals.
    let (path_off, mode_off, flags_off) = unsafe {
        (
            core::ptr::read_volatile(core::ptr::addr_of!(F_PATH_OFFSET)),
            core::ptr::read_volatile(core::ptr::addr_of!(F_MODE_OFFSET)),
            core::ptr::read_volatile(core::ptr::addr_of!(F_FLAGS_OFFSET)),
        )
    };
    // SAFETY: probe reads of kernel addresses; failure yields no access bits.
    #[expect(clippy::cast_ptr_alignment, reason = "a probe read copies, it never dereferences the pointer")]
    let (mode, flags) = unsafe {
        (
            bpf_probe_read_kernel(file.wrapping_add(mode_off as usize).cast::<u32>()).unwrap_or(0),
            bpf_probe_read_kernel(file.wrapping_add(flags_off as usize).cast::<u32>()).unwrap_or(0),
        )
    };
    let mut access = 0u8;
    if mode & FMODE_READ != 0 {
        access |= ACCESS_READ;
    }
    if mode & FMODE_WRITE != 0 {
        access |= ACCESS_WRITE;
    }
    if flags & FMODE_EXEC != 0 {
        access |= ACCESS_EXEC;
    }
    let Some(slot) = FILE_SCRATCH.get_ptr_mut(0) else {
        return posture(&w);
    };
    // SAFETY: this CPU's scratch slot (the key is too large for the stack); programs do not
    // migrate while running.
    let slot = unsafe { &mut *slot };
    slot.prefix_len = KEY_BITS;
    let key = &mut slot.data;
    key.generation = decide::generation();
    key._pad = [0; 3];
    key.identity = w.identity.to_be_bytes();
    // SAFETY: `file + f_path` is the file's `struct path` (offset from BTF); the buffer is the
    // scratch key's path bytes.
    let n = unsafe {
        bpf_d_path(
            file.wrapping_add(path_off as usize) as *mut path,
            key.path.as_mut_ptr().cast(),
            PATH_BUF,
        )
    };
    if n < 0 {
        // Unresolvable: judged as the root directory, i.e. by the workload's defaults.
        key.path[0] = b'/';
        key.path[1] = 0;
    }
    let (verdict, rule_id) = match FILE_RULES.get(&*slot) {
        Some(v) => combine(access, v.verdicts, v.rule_ids),
        None => (Verdict::from_u8(w.file_default).unwrap_or(Verdict::Deny), 0),
    };
    let verdict = w.applied(verdict);
    report::count(KIND_FILE, verdict as u8);
    if report::wanted(verdict, &w) {
        let mut header = report::header(KIND_FILE, verdict, &w, cgroup_id, true);
        header.detail = access;
        header.rule_id = rule_id;
        // Written in place: the record is too large to build on the stack first.
        match EVENTS.reserve::<FileEvent>(0) {
            Some(mut entry) => {
                let record = entry.as_mut_ptr();
                // SAFETY: `record` points at a reserved, writable `FileEvent`.
                unsafe {
                    core::ptr::addr_of_mut!((*record).header).write(header);
                    core::ptr::copy_nonoverlapping(slot.data.path.as_ptr(), core::ptr::addr_of_mut!((*record).path).cast::<u8>(), FILE_PATH_LEN);
                }
                entry.submit(0);
            }
            #[expect(clippy::cast_possible_truncation, reason = "a slot index below 4")]
            None => report::count(KIND_FILE, enforcer_common::maps::COUNTER_LOST as u8),
        }
    }
    if verdict.passes() { 0 } else { EACCES }
}

#[inline(always)]
fn posture(w: &Workload) -> i32 {
    if w.applied(Verdict::from_u8(w.file_default).unwrap_or(Verdict::Deny)).passes() { 0 } else { EACCES }
}

/// The verdict for all requested accesses: deny if any is denied, audit if any is audited.
#[inline(always)]
fn combine(access: u8, verdicts: [u8; 4], rule_ids: [u32; 3]) -> (Verdict, u32) {
    let mut out = (Verdict::Allow, rule_ids[0]);
    let bits = [ACCESS_READ, ACCESS_WRITE, ACCESS_EXEC];
    let mut i = 0;
    while i < 3 {
        if access & bits[i] != 0 {
            let v = Verdict::from_u8(verdicts[i]).unwrap_or(Verdict::Deny);
            if v == Verdict::Deny || (v == Verdict::Audit && out.0 == Verdict::Allow) {
                out = (v, rule_ids[i]);
            } else if out.0 == Verdict::Allow {
                out.1 = rule_ids[i];
            }
        }
        i += 1;
    }
    out
}
