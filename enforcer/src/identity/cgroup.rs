//! cgroup v2 facts the kernel programs rely on: where the hierarchy is mounted, a cgroup's id
//! (the inode number of its directory, which is what `bpf_get_current_cgroup_id` returns) and
//! its level (depth below the mount root, as `bpf_get_current_ancestor_cgroup_id` counts).

use std::{
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Finds the cgroup v2 mount point from `/proc/self/mountinfo`
/// (`/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones).
///
/// # Errors
/// When mountinfo cannot be read or no cgroup2 filesystem is mounted.
pub fn v2_mount() -> io::Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    parse_v2_mount(&info).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no cgroup2 filesystem is mounted (enforcer needs cgroup v2: mount -t cgroup2 none /sys/fs/cgroup)",
        )
    })
}

fn parse_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    crate::mountinfo::parse(mountinfo).into_iter().find(|m| m.fstype == "cgroup2").map(|m| m.point)
}

/// The kernel's id of the cgroup at `dir`.
///
/// # Errors
/// When `dir` cannot be stat'ed.
pub fn id(dir: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// Joins PID 1's cgroup namespace when this process has another one: in a container with its
/// own cgroup namespace (Kubernetes' default on cgroup v2) that sees the host's processes
/// (`hostPID`), cgroup paths in `/proc/PID/cgroup` would otherwise be relative to the
/// container's cgroup and not name the host's cgroups. Call before any thread starts.
/// Returns whether it switched.
///
/// # Errors
/// When the namespaces cannot be read or joined.
pub fn join_init_cgroup_namespace() -> io::Result<bool> {
    let own = std::fs::metadata("/proc/self/ns/cgroup")?.ino();
    let Ok(init) = std::fs::metadata("/proc/1/ns/cgroup") else { return Ok(false) };
    if init.ino() == own {
        return Ok(false);
    }
    let ns = std::fs::File::open("/proc/1/ns/cgroup")?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWCGROUP)?;
    Ok(true)
}

/// Level of `dir` in the hierarchy mounted at `mount` (the mount root is level 0).
///
/// # Errors
/// When `dir` is not below `mount`.
pub fn level(mount: &Path, dir: &Path) -> io::Result<u32> {
    let rel = dir.strip_prefix(mount).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not inside the cgroup v2 hierarchy at {}", dir.display(), mount.display()),
        )
    })?;
    u32::try_from(rel.components().count())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cgroup path too deep"))
}

/// Whether `dir` is a cgroup v2 directory (has `cgroup.procs` and is on the v2 mount).
#[must_use]
pub fn is_cgroup(dir: &Path) -> bool {
    dir.join("cgroup.procs").is_file()
}

/// Process ids in the cgroup at `dir` (not its descendants).
///
/// # Errors
/// When `cgroup.procs` cannot be read.
pub fn procs(dir: &Path) -> io::Result<Vec<u32>> {
    Ok(std::fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_unified_mounts() {
        let hybrid = "25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_v2_mount(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let unified = "30 25 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_v2_mount(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(parse_v2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw\n"), None);
        let escaped = "30 25 0:26 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_v2_mount(escaped), Some(PathBuf::from("/mnt/my cg")));
    }

    #[test]
    fn levels() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(level(m, m).expect("root"), 0);
        assert_eq!(level(m, &m.join("a/b")).expect("nested"), 2);
        assert!(level(m, Path::new("/tmp")).is_err());
    }
}
