//! Who is opening a file, and how: read from `/proc/TID/*` while the thread waits for the
//! answer. Only procfs is touched here, which the fallback never marks, so reading it cannot
//! wait on the agent itself.

use std::{
    io,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

use enforcer_common::{
    event::{ACCESS_EXEC, ACCESS_READ, ACCESS_WRITE, COMM_LEN},
};

/// Accesses of an exec open (`execve`, the ELF interpreter): the kernel opens the file for
/// reading with `FMODE_EXEC`.
pub const EXEC_OPEN: u8 = ACCESS_READ | ACCESS_EXEC;

/// What the waiting thread is doing, from its syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// An open with these `ACCESS_*` bits.
    Open(u8),
    /// Inside `execve`: every open there is an exec open, already judged by the
    /// `FAN_OPEN_EXEC_PERM` event the kernel sends first.
    Exec,
    /// Not an open we can read flags from (`io_uring`, an unknown syscall, a thread that is not
    /// blocked): judged as read and write, so a write-protected path stays protected.
    Unknown,
}

impl Opening {
    /// The accesses to judge.
    #[must_use]
    pub fn access(self) -> u8 {
        match self {
            Self::Open(a) => a,
            Self::Exec => EXEC_OPEN,
            Self::Unknown => ACCESS_READ | ACCESS_WRITE,
        }
    }
}

/// Syscall numbers, per architecture.
#[cfg(target_arch = "x86_64")]
mod nr {
    pub const OPEN: Option<u64> = Some(2);
    pub const CREAT: Option<u64> = Some(85);
    pub const OPENAT: u64 = 257;
    pub const OPEN_BY_HANDLE_AT: u64 = 304;
    pub const OPENAT2: u64 = 437;
    pub const EXECVE: u64 = 59;
    pub const EXECVEAT: u64 = 322;
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const OPEN: Option<u64> = None;
    pub const CREAT: Option<u64> = None;
    pub const OPENAT: u64 = 56;
    pub const OPEN_BY_HANDLE_AT: u64 = 265;
    pub const OPENAT2: u64 = 437;
    pub const EXECVE: u64 = 221;
    pub const EXECVEAT: u64 = 281;
}

/// Accesses of open flags, as the kernel derives `FMODE_READ`/`FMODE_WRITE` from `O_ACCMODE`.
#[must_use]
pub fn flags_access(flags: u64) -> u8 {
    match flags & 3 {
        0 => ACCESS_READ,
        1 => ACCESS_WRITE,
        2 => ACCESS_READ | ACCESS_WRITE,
        _ => 0,
    }
}

/// Parses `/proc/TID/syscall` ("257 0xffffff9c 0x7ffd… 0x241 …"); `read_how` reads the
/// `flags` of an `openat2` `struct open_how` at the given address.
pub fn parse_syscall(text: &str, read_how: impl FnOnce(u64) -> Option<u64>) -> Opening {
    let mut fields = text.split_whitespace();
    let Some(nr) = fields.next().and_then(|n| n.parse::<u64>().ok()) else {
        return Opening::Unknown;
    };
    let args: Vec<u64> = fields.take(6).filter_map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok()).collect();
    let arg = |i: usize| args.get(i).copied();
    let flags = match nr {
        n if Some(n) == nr::OPEN => arg(1),
        n if Some(n) == nr::CREAT => Some(1),
        nr::OPENAT | nr::OPEN_BY_HANDLE_AT => arg(2),
        nr::OPENAT2 => arg(2).and_then(read_how),
        nr::EXECVE | nr::EXECVEAT => return Opening::Exec,
        _ => None,
    };
    flags.map_or(Opening::Unknown, |f| Opening::Open(flags_access(f)))
}

fn proc(tid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{tid}/{file}"))
}

/// How long [`opening`] waits for the requester to be asleep on the agent's answer.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(5);

/// What thread `tid` is opening.
///
/// The kernel queues the permission event before the requester goes to sleep waiting for the
/// answer, and `/proc/TID/syscall` says only `running` until it sleeps: that is read again
/// (for up to [`SETTLE`]) rather than judged as an unknown, read-and-write open.
#[must_use]
pub fn opening(tid: u32) -> Opening {
    let started = std::time::Instant::now();
    let text = loop {
        let Ok(text) = std::fs::read_to_string(proc(tid, "syscall")) else {
            return Opening::Unknown;
        };
        if !text.starts_with("running") || started.elapsed() >= SETTLE {
            break text;
        }
        std::thread::yield_now();
    };
    parse_syscall(&text, |addr| {
        let mem = std::fs::File::open(proc(tid, "mem")).ok()?;
        let mut flags = [0u8; 8];
        mem.read_exact_at(&mut flags, addr).ok()?;
        Some(u64::from_ne_bytes(flags))
    })
}

/// The thread's cgroup v2 path, relative to the hierarchy's root (`0::/a/b` → `/a/b`).
///
/// # Errors
/// When the thread is gone or has no cgroup v2 line.
pub fn cgroup(tid: u32) -> io::Result<String> {
    let text = std::fs::read_to_string(proc(tid, "cgroup"))?;
    parse_cgroup(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no cgroup v2 entry"))
}

fn parse_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_owned)
}

/// Whether thread `tid` belongs to this process.
#[must_use]
pub fn is_own_thread(tid: u32) -> bool {
    Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// `path` as the thread sees it: relative to its root directory (a container's root), as
/// `bpf_d_path` reports it to the kernel program.
#[must_use]
pub fn as_seen_by(tid: u32, path: &Path) -> PathBuf {
    match std::fs::read_link(proc(tid, "root")) {
        Ok(root) => relative_to_root(&root, path),
        Err(_) => path.to_owned(),
    }
}

fn relative_to_root(root: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix(root) {
        Ok(rest) if root != Path::new("/") => Path::new("/").join(rest),
        _ => path.to_owned(),
    }
}

/// Process id, real uid and command name of thread `tid`, for events (zeros when gone).
#[must_use]
pub fn describe(tid: u32) -> (u32, u32, [u8; COMM_LEN]) {
    let status = std::fs::read_to_string(proc(tid, "status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let mut comm = [0u8; COMM_LEN];
    if let Ok(c) = std::fs::read(proc(tid, "comm")) {
        let c = c.strip_suffix(b"\n").unwrap_or(&c);
        let n = c.len().min(COMM_LEN - 1);
        comm[..n].copy_from_slice(&c[..n]);
    }
    (field("Tgid:"), field("Uid:"), comm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn open_flags_from_the_syscall_line() {
        let none = |_| None;
        assert_eq!(parse_syscall("257 0xffffff9c 0x7ffd 0x0 0x0 0x0 0x0 0x7ffd 0x7f", none), Opening::Open(ACCESS_READ));
        assert_eq!(parse_syscall("257 0xffffff9c 0x7ffd 0x241 0x1b6 0x0 0x0 0x7ffd 0x7f", none), Opening::Open(ACCESS_WRITE));
        assert_eq!(parse_syscall("2 0x7ffd 0x80002 0x0 0x0 0x0 0x0 0x7ffd 0x7f", none), Opening::Open(ACCESS_READ | ACCESS_WRITE));
        assert_eq!(parse_syscall("85 0x7ffd 0x1a4 0x0 0x0 0x0 0x0 0x7ffd 0x7f", none), Opening::Open(ACCESS_WRITE), "creat");
        assert_eq!(parse_syscall("257 0xffffff9c 0x7ffd 0x3 0x0 0x0 0x0 0x7ffd 0x7f", none), Opening::Open(0), "O_ACCMODE 3");
        assert_eq!(parse_syscall("59 0x7ffd 0x7ffd 0x7ffd 0x0 0x0 0x0 0x7ffd 0x7f", none), Opening::Exec);
        assert_eq!(parse_syscall("426 0x4 0x1 0x0 0x0 0x0 0x0 0x7ffd 0x7f", none), Opening::Unknown, "io_uring_enter");
        assert_eq!(parse_syscall("running", none), Opening::Unknown);
        assert_eq!(Opening::Unknown.access(), ACCESS_READ | ACCESS_WRITE);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn openat2_reads_open_how() {
        let how = |addr: u64| (addr == 0x7ffd_1000).then_some(0o2 | 0o100);
        assert_eq!(parse_syscall("437 0xffffff9c 0x7ffd0000 0x7ffd1000 0x18 0x0 0x0 0x7ffd 0x7f", how), Opening::Open(ACCESS_READ | ACCESS_WRITE));
        assert_eq!(parse_syscall("437 0xffffff9c 0x7ffd0000 0x7ffd2000 0x18 0x0 0x0 0x7ffd 0x7f", how), Opening::Unknown, "unreadable open_how");
    }

    #[test]
    fn cgroup_and_root() {
        assert_eq!(parse_cgroup("0::/enforcer.slice/web\n").as_deref(), Some("/enforcer.slice/web"));
        assert_eq!(parse_cgroup("12:cpu:/x\n1:name=systemd:/y\n0::/z\n").as_deref(), Some("/z"));
        assert_eq!(parse_cgroup("1:name=systemd:/y\n"), None);
        assert_eq!(relative_to_root(Path::new("/"), Path::new("/etc/passwd")), PathBuf::from("/etc/passwd"));
        let root = Path::new("/var/lib/docker/overlay2/abc/merged");
        assert_eq!(relative_to_root(root, &root.join("etc/passwd")), PathBuf::from("/etc/passwd"));
        assert_eq!(relative_to_root(root, Path::new("/srv/x")), PathBuf::from("/srv/x"), "outside its root: as is");
    }

    #[test]
    fn this_thread_is_ours_and_describable() {
        let tid = u32::try_from(nix::unistd::gettid().as_raw()).expect("tid");
        assert!(is_own_thread(tid));
        assert!(!is_own_thread(1));
        let (pid, _uid, comm) = describe(tid);
        assert_eq!(pid, std::process::id());
        assert_ne!(comm[0], 0);
    }
}
