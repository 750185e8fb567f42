//! Notices new and removed cgroups at once, with inotify on every directory of the managed
//! subtree (cgroupfs reports `mkdir` and `rmdir` as `IN_CREATE` and `IN_DELETE`).

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
};

use nix::sys::inotify::{AddWatchFlags, WatchDescriptor};

use crate::inotify::AsyncInotify;

/// Watches a cgroup subtree for directories appearing and disappearing.
pub struct CgroupWatcher {
    inotify: AsyncInotify,
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
        let mut w = Self { inotify: AsyncInotify::new()?, watches: HashMap::new() };
        w.watch_tree(root)?;
        Ok(w)
    }

    fn watch_tree(&mut self, dir: &Path) -> io::Result<()> {
        let wd = self.inotify.add_watch(dir, FLAGS)?;
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
            let mut any = false;
            for e in self.inotify.events().await? {
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
