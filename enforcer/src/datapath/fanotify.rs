//! File enforcement where BPF LSM is not active: fanotify permission events answered from the
//! same compiled file rules the kernel program reads.
//!
//! The agent marks every real filesystem (`FAN_MARK_FILESYSTEM`) for `FAN_OPEN_PERM` and
//! `FAN_OPEN_EXEC_PERM` and answers each open itself:
//!
//! 1. Who: the requesting thread's cgroup (`/proc/TID/cgroup`) resolves to the nearest
//!    enrolled ancestor below the managed root, from the same workload entries the kernel map
//!    holds. A requester outside the root is allowed at once.
//! 2. What: the event's file descriptor (`/proc/self/fd/N`), made relative to the requester's
//!    root directory, so a container is judged by its own paths as with `bpf_d_path`.
//! 3. How: read and exec for `FAN_OPEN_EXEC_PERM`; otherwise the requester's open flags, read
//!    from `/proc/TID/syscall` while it waits ([`requester::Opening`]).
//! 4. The verdict: [`files::lookup`] and [`FileEntry::decide`], as `lsm/file_open` decides.
//!
//! It cannot deadlock on itself: the thread that answers reads only procfs and cgroupfs,
//! which are never marked (nor are other kernel pseudo filesystems, nor FUSE, whose daemon
//! could itself be waiting on the agent), and opens by the agent's other threads are allowed
//! at once. A watchdog answers whatever is still pending after `file_timeout_ms`: a workload
//! under a `FilePolicy` gets `file_timeout_verdict`, another workload its posture, anyone else
//! is allowed.
//!
//! Marks exist only while something is to be enforced or observed (a `FilePolicy`, a workload
//! whose `default_file` is not `allow`, an observed workload): otherwise no open on the host
//! waits for the agent. Unlike the pinned programs, this does not outlive the agent: when it
//! exits the kernel drops the group and lets opens through.

pub mod requester;

use std::{
    collections::{BTreeMap, HashMap},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, RawFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use enforcer_common::{
    EventHeader, FileEvent, Verdict, Workload,
    event::KIND_FILE,
    file::FILE_PATH_LEN,
    identity::PENDING,
    maps::{COUNTER_LOST, COUNTER_STRIDE},
    workload::WORKLOAD_F_OBSERVE,
};
use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::fanotify::{EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response},
};
use requester::Opening;
use tokio::sync::mpsc;

use super::KindCounters;
use crate::{
    identity::cgroup,
    mountinfo,
    policy::compile::files::{self, FileCompiled, FileEntry},
};

/// Filesystem types never marked: kernel pseudo filesystems (the agent reads procfs and
/// cgroupfs to answer) and FUSE (its daemon may be the one waiting on the agent).
const UNMARKED: &[&str] = &[
    "proc", "sysfs", "cgroup", "cgroup2", "bpf", "securityfs", "debugfs", "tracefs", "devpts", "mqueue", "pstore",
    "configfs", "fusectl", "binfmt_misc", "autofs", "efivarfs", "nsfs", "pidfs", "rpc_pipefs", "selinuxfs", "fuse",
];

/// Events waiting for the agent's reader; beyond this they are counted lost.
const EVENT_QUEUE: usize = 4096;
/// Most requester cgroups remembered (then forgotten all at once).
const RESOLVED_MAX: usize = 4096;
/// How often the answering thread looks at its stop flag when idle.
const IDLE_WAKE: Duration = Duration::from_millis(200);

/// How the fallback answers what it cannot decide in time.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Longest a request may wait for its answer.
    pub timeout: Duration,
    /// The verdict then, for a workload under a `FilePolicy`.
    pub timeout_verdict: Verdict,
}

/// A started fallback: the fanotify group, its answering thread and its watchdog.
pub struct FileFallback {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// The filesystems marked, or why one could not be.
#[derive(Debug, Default)]
struct Marks {
    active: bool,
    /// Device (`major:minor`) → mount point it was marked through.
    marked: BTreeMap<String, PathBuf>,
    errors: BTreeMap<PathBuf, String>,
}

/// Requester cgroup (relative path) → id of its nearest enrolled cgroup. Forgotten whenever a
/// workload is enrolled or removed; `generation` counts those, so a resolution that raced
/// with one is not remembered.
#[derive(Default)]
struct Resolved {
    generation: u64,
    by_path: HashMap<String, u64>,
}

struct Pending {
    tid: u32,
    since: Instant,
}

struct Shared {
    fan: Fanotify,
    settings: Settings,
    /// The cgroup v2 mount and the managed root below it.
    mount: PathBuf,
    root: PathBuf,
    workloads: RwLock<HashMap<u64, Workload>>,
    /// Requester cgroups already resolved, so an open costs no stat per ancestor.
    resolved: Mutex<Resolved>,
    files: RwLock<Arc<FileCompiled>>,
    marks: Mutex<Marks>,
    /// Requests being judged, by event fd; whoever removes one answers it.
    pending: Mutex<HashMap<RawFd, Pending>>,
    /// Indexed like the kernel's counters: lost, then by verdict.
    counters: [AtomicU64; COUNTER_STRIDE],
    events: mpsc::Sender<FileEvent>,
    stop: AtomicBool,
}

/// One judged open.
struct Judgement {
    verdict: Verdict,
    rule_id: u32,
    access: u8,
    workload: Option<(u64, Workload)>,
    /// Already reported by the exec event of the same open.
    duplicate: bool,
}

impl FileFallback {
    /// Creates the fanotify group and starts answering (with nothing marked until
    /// [`FileFallback::update`] finds something to enforce). Returns the fallback and the
    /// receiving end of its decision events.
    ///
    /// # Errors
    /// A sentence saying why fanotify permission events are unavailable.
    pub fn start(mount: &Path, root: &Path, settings: Settings) -> Result<(Self, mpsc::Receiver<FileEvent>), String> {
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT
                | InitFlags::FAN_CLOEXEC
                | InitFlags::FAN_NONBLOCK
                | InitFlags::FAN_UNLIMITED_QUEUE
                | InitFlags::FAN_UNLIMITED_MARKS
                | InitFlags::FAN_REPORT_TID,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(|e| format!("fanotify_init: {e} (needs CAP_SYS_ADMIN and CONFIG_FANOTIFY_ACCESS_PERMISSIONS)"))?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            fan,
            settings,
            mount: mount.to_owned(),
            root: root.to_owned(),
            workloads: RwLock::default(),
            resolved: Mutex::default(),
            files: RwLock::default(),
            marks: Mutex::default(),
            pending: Mutex::default(),
            counters: Default::default(),
            events: tx,
            stop: AtomicBool::new(false),
        });
        let mountinfo = std::fs::File::open("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.to_owned()).spawn(f).map_err(|e| format!("starting {name}: {e}"))
        };
        let answering = Arc::clone(&shared);
        let watching = Arc::clone(&shared);
        let threads = vec![
            spawn("fanotify", Box::new(move || answering.serve(&mountinfo)))?,
            spawn("fanotify-watchdog", Box::new(move || watching.watchdog()))?,
        ];
        Ok((Self { shared, threads }, rx))
    }

    /// Mirrors a workload entry written to the kernel map (`None`: removed).
    pub fn set_workload(&self, cgroup_id: u64, w: Option<Workload>) {
        {
            let mut map = self.shared.workloads.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let enrolled_before = match w {
                Some(w) => map.insert(cgroup_id, w).is_some(),
                None => map.remove(&cgroup_id).is_some(),
            };
            if enrolled_before != w.is_some() {
                let mut resolved = self.shared.resolved.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                resolved.generation += 1;
                resolved.by_path.clear();
            }
        }
        self.shared.activate();
    }

    /// Puts a newly compiled file table in force.
    pub fn update(&self, compiled: &FileCompiled) {
        *self.shared.files.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(compiled.clone());
        self.shared.activate();
    }

    /// What `status` says: how many filesystems are marked and which could not be.
    #[must_use]
    pub fn describe(&self) -> String {
        let m = self.shared.marks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !m.active {
            return "fanotify (idle: no FilePolicy, no observed workload, every default_file allows)".to_owned();
        }
        let errors: Vec<String> = m.errors.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect();
        let not_marked = if errors.is_empty() { String::new() } else { format!("; not marked: {}", errors.join(", ")) };
        format!("fanotify ({} filesystems marked{not_marked})", m.marked.len())
    }

    /// Decisions made here, as the kernel counts its own.
    #[must_use]
    pub fn counters(&self) -> KindCounters {
        let c = |i: usize| self.shared.counters[i].load(Ordering::Relaxed);
        KindCounters { lost: c(COUNTER_LOST), allow: c(Verdict::Allow as usize), deny: c(Verdict::Deny as usize), audit: c(Verdict::Audit as usize) }
    }
}

impl Drop for FileFallback {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Shared {
    /// Marks or unmarks the filesystems as there is something to enforce or not.
    fn activate(&self) {
        let needed = {
            let files = self.files.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let workloads = self.workloads.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            !files.entries.is_empty()
                || workloads.values().any(|w| w.file_default != Verdict::Allow as u8 || w.flags & WORKLOAD_F_OBSERVE != 0)
        };
        let mut m = self.marks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if needed == m.active {
            return;
        }
        m.active = needed;
        if needed {
            self.mark_new(&mut m);
            tracing::info!(filesystems = m.marked.len(), not_marked = m.errors.len(), "fanotify file enforcement active");
        } else {
            if let Err(error) = self.fan.mark::<_, Path>(MarkFlags::FAN_MARK_FLUSH | MarkFlags::FAN_MARK_FILESYSTEM, MaskFlags::empty(), nix::fcntl::AT_FDCWD, None) {
                tracing::error!(%error, "removing fanotify marks");
            }
            m.marked.clear();
            m.errors.clear();
            tracing::info!("fanotify file enforcement idle: nothing to enforce");
        }
    }

    /// Marks every filesystem mounted now that is not marked yet, and forgets unmounted ones.
    fn mark_new(&self, m: &mut Marks) {
        let mounts = match mountinfo::read() {
            Ok(mounts) => mounts,
            Err(error) => {
                m.errors.insert(PathBuf::from("/proc/self/mountinfo"), error.to_string());
                return;
            }
        };
        m.marked.retain(|dev, _| mounts.iter().any(|x| x.device == *dev));
        m.errors.clear();
        for mount in mounts {
            let fstype = mount.fstype.split('.').next().unwrap_or_default();
            if UNMARKED.contains(&fstype) || m.marked.contains_key(&mount.device) {
                continue;
            }
            let mask = MaskFlags::FAN_OPEN_PERM | MaskFlags::FAN_OPEN_EXEC_PERM;
            match self.fan.mark(MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM, mask, nix::fcntl::AT_FDCWD, Some(&mount.point)) {
                Ok(()) => {
                    m.marked.insert(mount.device, mount.point);
                }
                Err(e) => {
                    m.errors.insert(mount.point, format!("{} ({e})", mount.fstype));
                }
            }
        }
    }

    /// The answering thread: waits for permission events and for mount changes.
    fn serve(&self, mountinfo: &std::fs::File) {
        let timeout = PollTimeout::try_from(IDLE_WAKE).unwrap_or(PollTimeout::NONE);
        while !self.stop.load(Ordering::Relaxed) {
            let mut fds = [PollFd::new(self.fan.as_fd(), PollFlags::POLLIN), PollFd::new(mountinfo.as_fd(), PollFlags::POLLPRI)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(error) => {
                    tracing::error!(%error, "polling the fanotify group");
                    std::thread::sleep(IDLE_WAKE);
                    continue;
                }
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            if ready(&fds[1]) {
                let mut m = self.marks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if m.active {
                    self.mark_new(&mut m);
                }
            }
            if ready(&fds[0]) {
                match self.fan.read_events() {
                    Ok(events) => events.into_iter().for_each(|e| self.answer(&e)),
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                    Err(error) => tracing::error!(%error, "reading fanotify events"),
                }
            }
        }
    }

    fn respond(&self, fd: BorrowedFd<'_>, verdict: Verdict) {
        let response = if verdict.passes() { Response::FAN_ALLOW } else { Response::FAN_DENY };
        // ENOENT: the kernel no longer waits (the requester was killed).
        if let Err(error) = self.fan.write_response(FanotifyResponse::new(fd, response))
            && error != nix::errno::Errno::ENOENT
        {
            tracing::error!(%error, "answering a fanotify permission event");
        }
    }

    fn answer(&self, event: &FanotifyEvent) {
        let Some(fd) = event.fd() else {
            tracing::error!("fanotify queue overflowed");
            return;
        };
        let Ok(tid) = u32::try_from(event.pid()) else {
            return self.respond(fd, Verdict::Allow);
        };
        if requester::is_own_thread(tid) {
            return self.respond(fd, Verdict::Allow);
        }
        let raw = fd.as_raw_fd();
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(raw, Pending { tid, since: Instant::now() });
        let path = std::fs::read_link(format!("/proc/self/fd/{raw}")).map(|p| requester::as_seen_by(tid, &p)).unwrap_or_default();
        let judgement = self.judge(tid, &path, event.mask());
        let ours = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&raw).is_some();
        if !ours {
            return; // The watchdog answered it.
        }
        self.respond(fd, judgement.verdict);
        if let Some((cgroup_id, w)) = judgement.workload {
            self.counters[judgement.verdict as usize].fetch_add(1, Ordering::Relaxed);
            if w.reports(judgement.verdict) && !judgement.duplicate {
                self.report(tid, cgroup_id, w, &judgement, &path);
            }
        }
    }

    /// The nearest enrolled cgroup of thread `tid` at or above its own, below the managed
    /// root; `None` outside the root. `Err`: the thread's cgroup is unreadable.
    fn workload_of(&self, tid: u32) -> std::io::Result<Option<(u64, Workload)>> {
        let rel = requester::cgroup(tid)?;
        let dir = self.mount.join(rel.trim_start_matches('/'));
        if !dir.starts_with(&self.root) {
            return Ok(None);
        }
        let map = self.workloads.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (generation, cached) = {
            let resolved = self.resolved.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (resolved.generation, resolved.by_path.get(&rel).copied())
        };
        if let Some(id) = cached
            && let Some(w) = map.get(&id)
        {
            return Ok(Some((id, *w)));
        }
        let mut found = None;
        let mut at = Some(dir.as_path());
        while let Some(d) = at.filter(|d| d.starts_with(&self.root)) {
            if let Some(w) = cgroup::id(d).ok().and_then(|id| map.get(&id).map(|w| (id, *w))) {
                found = Some(w);
                break;
            }
            at = d.parent();
        }
        drop(map);
        if let Some((id, _)) = found {
            let mut resolved = self.resolved.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if resolved.generation == generation {
                if resolved.by_path.len() >= RESOLVED_MAX {
                    resolved.by_path.clear();
                }
                resolved.by_path.insert(rel, id);
            }
        }
        // Below the root with not even the root's entry: fail closed, as the kernel does.
        let deny = Verdict::Deny as u8;
        Ok(Some(found.unwrap_or((0, Workload { identity: PENDING, egress_default: deny, ingress_default: deny, file_default: deny, flags: 0 }))))
    }

    fn judge(&self, tid: u32, path: &Path, mask: MaskFlags) -> Judgement {
        let outside = Judgement { verdict: Verdict::Allow, rule_id: 0, access: 0, workload: None, duplicate: false };
        let workload = match self.workload_of(tid) {
            Ok(Some(w)) => w,
            Ok(None) => return outside,
            Err(error) => {
                // The thread is gone (killed while waiting) or /proc is unreadable: nothing
                // to hand a file to, and nothing to judge it by.
                tracing::warn!(tid, %error, "requester of a file open cannot be identified; denied");
                return Judgement { verdict: Verdict::Deny, ..outside };
            }
        };
        let (access, duplicate) = if mask.contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
            (requester::EXEC_OPEN, false)
        } else {
            let opening = requester::opening(tid);
            (opening.access(), opening == Opening::Exec)
        };
        let files = Arc::clone(&self.files.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let (verdict, rule_id) = decide(&files, &workload.1, &path.to_string_lossy(), access);
        Judgement { verdict, rule_id, access, workload: Some(workload), duplicate }
    }

    fn report(&self, tid: u32, cgroup_id: u64, w: Workload, j: &Judgement, path: &Path) {
        let (pid, uid, comm) = requester::describe(tid);
        let time_ns = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_or(0, |t| u64::try_from(Duration::from(t).as_nanos()).unwrap_or(u64::MAX));
        let mut event = FileEvent {
            header: EventHeader {
                kind: KIND_FILE,
                verdict: j.verdict as u8,
                detail: j.access,
                proto: 0,
                pid,
                uid,
                identity: w.identity,
                cgroup_id,
                time_ns,
                rule_id: j.rule_id,
                remote_identity: 0,
                comm,
            },
            path: [0; FILE_PATH_LEN],
        };
        let bytes = path.as_os_str().as_encoded_bytes();
        let n = bytes.len().min(FILE_PATH_LEN - 1);
        event.path[..n].copy_from_slice(&bytes[..n]);
        if self.events.try_send(event).is_err() {
            self.counters[COUNTER_LOST].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Answers requests nobody answered within the timeout.
    fn watchdog(&self) {
        let tick = (self.settings.timeout / 4).clamp(Duration::from_millis(5), Duration::from_millis(100));
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            // Answered under the lock: the answering thread closes an event's fd only after
            // failing to remove it here, so the fd cannot be reused meanwhile.
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let expired: Vec<RawFd> =
                pending.iter().filter(|(_, p)| p.since.elapsed() >= self.settings.timeout).map(|(fd, _)| *fd).collect();
            for fd in expired {
                let Some(p) = pending.remove(&fd) else { continue };
                let verdict = self.timeout_verdict(p.tid);
                tracing::warn!(tid = p.tid, verdict = ?verdict, timeout_ms = self.settings.timeout.as_millis(), "file open not judged in time");
                self.counters[verdict as usize].fetch_add(1, Ordering::Relaxed);
                // SAFETY: `fd` is an event's descriptor still open: it was pending, and the
                // answering thread closes it only after finding it no longer pending, which
                // this lock prevents until the response is written.
                #[expect(unsafe_code, reason = "answering by the raw fd of an event owned by the answering thread")]
                let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                self.respond(borrowed, verdict);
            }
        }
    }

    fn timeout_verdict(&self, tid: u32) -> Verdict {
        match self.workload_of(tid) {
            Ok(None) => Verdict::Allow,
            Ok(Some((_, w))) => {
                let files = self.files.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                if files.selects(w.identity) {
                    self.settings.timeout_verdict
                } else {
                    Verdict::from_u8(w.file_default).unwrap_or(Verdict::Deny)
                }
            }
            Err(_) => self.settings.timeout_verdict,
        }
    }
}

/// The verdict for workload `w` opening `path` with `access`: its compiled rules, or its
/// posture when no `FilePolicy` selects it (the same order `lsm/file_open` follows).
#[must_use]
pub fn decide(files: &FileCompiled, w: &Workload, path: &str, access: u8) -> (Verdict, u32) {
    let (verdict, rule) = files::lookup(files, w.identity, path).map_or_else(
        || (Verdict::from_u8(w.file_default).unwrap_or(Verdict::Deny), 0),
        |e: FileEntry| e.decide(access),
    );
    (w.applied(verdict), rule)
}

#[cfg(test)]
mod tests {
    use enforcer_common::event::{ACCESS_READ, ACCESS_WRITE};

    use super::*;

    #[test]
    fn posture_without_rules_and_rules_when_compiled() {
        let w = |identity, file_default: Verdict| Workload {
            identity,
            egress_default: 1,
            ingress_default: 1,
            file_default: file_default as u8,
            flags: 0,
        };
        let mut files = FileCompiled::default();
        files.entries.insert(
            (300, b"/etc/".to_vec()),
            FileEntry { verdicts: [Verdict::Allow, Verdict::Deny, Verdict::Deny], rule_ids: [1, 1, 1] },
        );
        files.entries.insert(
            (300, b"/\0".to_vec()),
            FileEntry { verdicts: [Verdict::Deny; 3], rule_ids: [2; 3] },
        );
        files.entries.insert((300, b"/".to_vec()), FileEntry { verdicts: [Verdict::Deny; 3], rule_ids: [2; 3] });
        assert_eq!(decide(&files, &w(300, Verdict::Allow), "/etc/hosts", ACCESS_READ), (Verdict::Allow, 1));
        assert_eq!(decide(&files, &w(300, Verdict::Allow), "/etc/hosts", ACCESS_READ | ACCESS_WRITE), (Verdict::Deny, 1));
        assert_eq!(decide(&files, &w(300, Verdict::Allow), "/srv/x", ACCESS_READ), (Verdict::Deny, 2));
        assert_eq!(decide(&files, &w(301, Verdict::Allow), "/srv/x", ACCESS_WRITE), (Verdict::Allow, 0), "unselected: posture");
        assert_eq!(decide(&files, &w(301, Verdict::Deny), "/srv/x", ACCESS_READ), (Verdict::Deny, 0));
    }
}
