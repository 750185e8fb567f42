//! Notices new and removed cgroups at once, with inotify on every directory of the managed
//! subtree (cgroupfs reports `mkdir` and `rmdir` as `IN_CREATE` and `IN_DELETE`).

use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    path::{Path, PathBuf},
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::{Interest, unix::AsyncFd};

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches a cgroup subtree for directories appearing and disappearing.
pub struct CgroupWatcher {
    fd: AsyncFd<Fd>,
    watches: HashMap<WatchDescriptor, PathBuf>,
}

const FLAGS: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_ONLYDIR);

impl CgroupWatcher {
    /// Starts watching `root` and every cgroup below it. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When inotify cannot be set up or `root` cannot be watched.
    pub fn new(root: &Path) -> io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(io::Error::from)?;
        // SAFETY: `Fd` owns the inotify descriptor for its whole life and `as_raw_fd` always
        // returns that same descriptor, which is what `register_with_interest` requires.
        #[expect(unsafe_code, reason = "tokio's I/O-safety contract for registering a raw fd")]
        let fd = unsafe { AsyncFd::register_with_interest(Fd(inotify), Interest::READABLE) }
            .map_err(io::Error::from)?;
        let mut w = Self { fd, watches: HashMap::new() };
        w.watch_tree(root)?;
        Ok(w)
    }

    fn watch_tree(&mut self, dir: &Path) -> io::Result<()> {
        let wd = self.fd.get_ref().0.add_watch(dir, FLAGS).map_err(io::Error::from)?;
        self.watches.insert(wd, dir.to_owned());
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                // A child may vanish between listing and watching: not an error.
                let _ = self.watch_tree(&entry.path());
            }
        }
        Ok(())
    }

    /// Waits until at least one cgroup was created or removed below the root, and starts
    /// watching the new ones (and anything created inside them meanwhile).
    ///
    /// # Errors
    /// When reading inotify events fails.
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let events = match guard.get_inner().0.read_events() {
                Ok(events) => events,
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            drop(guard);
            let mut any = false;
            for e in events {
                if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                    self.watches.remove(&e.wd);
                    continue;
                }
                let (Some(dir), Some(name)) = (self.watches.get(&e.wd), e.name) else { continue };
                let path = dir.join(name);
                any = true;
                if e.mask.contains(AddWatchFlags::IN_CREATE) && e.mask.contains(AddWatchFlags::IN_ISDIR) {
                    let _ = self.watch_tree(&path);
                }
            }
            if any {
                return Ok(());
            }
        }
    }
}
