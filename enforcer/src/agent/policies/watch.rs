//! Notices a change in `policy_dir` at once: inotify on the directory for files finished
//! (`IN_CLOSE_WRITE`), renamed in or out (`IN_MOVED_TO`, `IN_MOVED_FROM`: editors, `mv`, the
//! `..data` swap of a Kubernetes `ConfigMap` volume) and removed (`IN_DELETE`). A file still
//! being written raises nothing until it is closed, so a half-written policy is never read.
//! The agent's periodic rescan stays as the fallback (a directory created later, a
//! filesystem without inotify).

use std::{io, path::Path};

use nix::sys::inotify::AddWatchFlags;

use crate::inotify::AsyncInotify;

const FLAGS: AddWatchFlags = AddWatchFlags::IN_CLOSE_WRITE
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF);

/// Watches one policy directory.
pub struct PolicyDirWatcher {
    inotify: AsyncInotify,
    watching: bool,
}

impl PolicyDirWatcher {
    /// Starts watching `dir` if it exists (see [`PolicyDirWatcher::rewatch`]). Must be called
    /// inside a tokio runtime.
    ///
    /// # Errors
    /// When inotify cannot be set up, or `dir` exists and cannot be watched.
    pub fn new(dir: &Path) -> io::Result<Self> {
        let mut w = Self { inotify: AsyncInotify::new()?, watching: false };
        w.rewatch(dir)?;
        Ok(w)
    }

    /// Watches `dir` if not yet watching it and it exists now (it may be created after the
    /// agent started, or replaced); the periodic rescan calls this.
    ///
    /// # Errors
    /// When `dir` exists and cannot be watched.
    pub fn rewatch(&mut self, dir: &Path) -> io::Result<()> {
        if self.watching || !dir.is_dir() {
            return Ok(());
        }
        self.inotify.add_watch(dir, FLAGS)?;
        self.watching = true;
        Ok(())
    }

    /// Waits until something in the directory changed.
    ///
    /// # Errors
    /// When reading inotify events fails.
    pub async fn changed(&mut self) -> io::Result<()> {
        let events = self.inotify.events().await?;
        if events.iter().any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED)) {
            // The directory itself went away: watch it again once it is back.
            self.watching = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn changed_within(w: &mut PolicyDirWatcher) -> bool {
        tokio::time::timeout(Duration::from_secs(2), w.changed()).await.is_ok_and(|r| r.is_ok())
    }

    #[tokio::test]
    async fn sees_writes_renames_and_removals_but_not_a_file_still_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = PolicyDirWatcher::new(dir.path()).expect("watch");
        let path = dir.path().join("a.yaml");
        let mut open = std::fs::File::create(&path).expect("create");
        std::io::Write::write_all(&mut open, b"kind: ").expect("write");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), w.changed()).await.is_err(),
            "a file still being written is not a change yet"
        );
        drop(open);
        assert!(changed_within(&mut w).await, "closed after writing");
        std::fs::rename(&path, dir.path().join("b.yaml")).expect("rename");
        assert!(changed_within(&mut w).await, "renamed");
        std::fs::remove_file(dir.path().join("b.yaml")).expect("remove");
        assert!(changed_within(&mut w).await, "removed");
    }

    #[tokio::test]
    async fn a_directory_made_later_is_watched_on_rewatch() {
        let parent = tempfile::tempdir().expect("tmp");
        let dir = parent.path().join("policies");
        let mut w = PolicyDirWatcher::new(&dir).expect("nothing to watch yet is fine");
        std::fs::create_dir(&dir).expect("mkdir");
        w.rewatch(&dir).expect("rewatch");
        std::fs::write(dir.join("a.yaml"), "x").expect("write");
        assert!(changed_within(&mut w).await);
    }
}
