//! The pin directory on the bpf filesystem: `maps/<layout>/`, `progs/` and `links/` under
//! `bpffs_dir`.

use std::{
    io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::statfs,
};

/// `BPF_FS_MAGIC` from `include/uapi/linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs lives by convention; the agent mounts it there when nothing is mounted.
const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// Paths under one pin root.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
    /// The map layout id of the object (see `datapath::layout`).
    maps_layout: String,
}

impl Layout {
    /// Makes sure `root` is on a bpf filesystem (mounting `/sys/fs/bpf` if that is where it
    /// belongs and nothing is mounted yet) and creates the pin directories, with the maps of
    /// layout `maps_layout` in `maps/<maps_layout>/`.
    ///
    /// # Errors
    /// When `root` is not on bpffs and cannot be, or a directory cannot be created.
    pub fn prepare(root: &Path, maps_layout: &str) -> io::Result<Self> {
        ensure_bpffs(root)?;
        let layout = Self { root: root.to_owned(), maps_layout: maps_layout.to_owned() };
        for dir in [layout.maps(), layout.root.join("progs"), layout.root.join("links")] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(layout)
    }

    /// Directory of this layout's pinned maps, one file per map name.
    #[must_use]
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps").join(&self.maps_layout)
    }

    /// Whether maps of this layout were pinned before (by an earlier agent).
    #[must_use]
    pub fn has_maps(&self) -> bool {
        std::fs::read_dir(self.maps()).is_ok_and(|mut d| d.next().is_some())
    }

    /// Removes the maps of every other layout (left by an agent of another version, whose
    /// programs are detached by now); returns the layouts removed.
    ///
    /// # Errors
    /// When one cannot be removed.
    pub fn remove_other_maps(&self) -> io::Result<Vec<String>> {
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(self.root.join("maps"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == self.maps_layout {
                continue;
            }
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
            removed.push(name);
        }
        Ok(removed)
    }

    /// Pin path of program `name`.
    #[must_use]
    pub fn prog(&self, name: &str) -> PathBuf {
        self.root.join("progs").join(name)
    }

    /// Pin path of the link of program `name`.
    #[must_use]
    pub fn link(&self, name: &str) -> PathBuf {
        self.root.join("links").join(name)
    }
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let fs = statfs(path).map_err(io::Error::from)?;
    Ok(fs.filesystem_type().0 == BPF_FS_MAGIC)
}

fn ensure_bpffs(root: &Path) -> io::Result<()> {
    let existing = root.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if is_bpffs(existing)? {
        return Ok(());
    }
    let default = Path::new(DEFAULT_BPFFS);
    if root.starts_with(default) && default.is_dir() && !is_bpffs(default)? {
        mount(Some("bpf"), default, Some("bpf"), MsFlags::empty(), None::<&str>).map_err(|e| {
            io::Error::new(io::ErrorKind::PermissionDenied, format!("mounting bpffs at {DEFAULT_BPFFS}: {e}"))
        })?;
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is not on a bpf filesystem; set bpffs_dir below a bpffs mount (mount -t bpf bpf {DEFAULT_BPFFS})",
            root.display()
        ),
    ))
}

/// Pins with `pin` at `path`, replacing whatever was pinned there without a moment where
/// nothing is: the new object is pinned beside the old one, then renamed over it.
///
/// # Errors
/// Whatever `pin` or the rename returns.
pub fn pin_replacing<E>(path: &Path, pin: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), PinError<E>> {
    // bpffs refuses names containing '.', so the side name uses '_'.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push("_new");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(PinError::Io(e)),
    }
    pin(&tmp).map_err(PinError::Pin)?;
    std::fs::rename(&tmp, path).map_err(PinError::Io)
}

/// Why [`pin_replacing`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PinError<E> {
    /// Pinning itself failed.
    #[error("pinning: {0}")]
    Pin(E),
    /// Moving the pin into place failed.
    #[error("replacing the pin: {0}")]
    Io(io::Error),
}

/// Removes the whole pin tree at `root`, if there is one. Refuses a directory that is not on
/// bpffs, so a wrong `bpffs_dir` can never delete ordinary files.
///
/// # Errors
/// When `root` is not on bpffs or cannot be removed. Returns whether anything was there.
pub fn remove_all(root: &Path) -> io::Result<bool> {
    if !root.exists() {
        return Ok(false);
    }
    if !is_bpffs(root)? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not on a bpf filesystem; refusing to remove it", root.display()),
        ));
    }
    detach_links(&root.join("links"));
    std::fs::remove_dir_all(root)?;
    Ok(true)
}

/// Detaches every pinned link under `dir` before its pin goes: the link is opened, unpinned,
/// and its last reference closed here, which detaches synchronously. Merely unlinking the pin
/// would leave the detach to a kernel work queue, so enforcement could outlive `uninstall`
/// for a moment.
fn detach_links(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        match aya::programs::links::PinnedLink::from_pin(entry.path()) {
            Ok(link) => drop(link.unpin()),
            Err(error) => tracing::warn!(path = %entry.path().display(), %error, "not a pinned link"),
        }
    }
}
