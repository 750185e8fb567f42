//! An inotify instance read from tokio: what the cgroup watcher (`identity::watch`) and the
//! policy directory watcher (`agent::policies::watch`) share.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    path::Path,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use tokio::io::{Interest, unix::AsyncFd};

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A non-blocking inotify instance registered with the tokio reactor.
pub struct AsyncInotify {
    fd: AsyncFd<Fd>,
}

impl AsyncInotify {
    /// A new instance with no watches. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When inotify cannot be set up (the per-user instance limit, for one).
    pub fn new() -> io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(io::Error::from)?;
        // SAFETY: `Fd` owns the inotify descriptor for its whole life and `as_raw_fd` always
        // returns that same descriptor, which is what `register_with_interest` requires.
        #[expect(unsafe_code, reason = "tokio's I/O-safety contract for registering a raw fd")]
        let fd = unsafe { AsyncFd::register_with_interest(Fd(inotify), Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Watches `path` for `flags`.
    ///
    /// # Errors
    /// When the path cannot be watched.
    pub fn add_watch(&self, path: &Path, flags: AddWatchFlags) -> io::Result<WatchDescriptor> {
        self.fd.get_ref().0.add_watch(path, flags).map_err(io::Error::from)
    }

    /// Waits for the next batch of events (never empty).
    ///
    /// # Errors
    /// When reading inotify events fails.
    pub async fn events(&mut self) -> io::Result<Vec<InotifyEvent>> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            match guard.get_inner().0.read_events() {
                Ok(events) if !events.is_empty() => return Ok(events),
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}
