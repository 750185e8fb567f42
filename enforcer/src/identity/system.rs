//! System tags from facts the agent reads itself, never from what a workload says about itself:
//! `/proc` for the workload's oldest process (`@sys:*`), `uname` and `/etc/os-release` for the
//! host (`@host:*`).

use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Read as _},
    os::unix::fs::MetadataExt as _,
    path::Path,
};

use super::Tags;

/// Facts about the host, the same for every workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// Host name.
    pub name: String,
    /// `ID-VERSION_ID` from os-release, e.g. `debian-12`.
    pub os: String,
    /// Kernel release, e.g. `6.12.117+deb12-cloud-amd64`.
    pub kernel: String,
}

impl HostFacts {
    /// Reads them from the running system.
    #[must_use]
    pub fn read() -> Self {
        let name = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
        let os = std::fs::read_to_string("/etc/os-release").map(|t| os_release_id(&t)).unwrap_or_default();
        let kernel = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
        Self { name, os, kernel }
    }

    /// `@host:name`, `@host:os`, `@host:kernel` (those that are known).
    #[must_use]
    pub fn tags(&self) -> Tags {
        [("@host:name", &self.name), ("@host:os", &self.os), ("@host:kernel", &self.kernel)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    }
}

/// `ID-VERSION_ID` (or `ID` alone) from os-release text.
fn os_release_id(text: &str) -> String {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .filter(|v| !v.is_empty())
    };
    match (field("ID"), field("VERSION_ID")) {
        (Some(id), Some(v)) => format!("{id}-{v}"),
        (Some(id), None) => id,
        _ => String::new(),
    }
}

/// Facts about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessFacts {
    /// Process id.
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// User name, from the process's own `/etc/passwd` (its root), when listed there.
    pub user: Option<String>,
    /// Path of the executable as the process sees it.
    pub exe: String,
    /// SHA-256 of the executable's bytes, lower-case hex.
    pub exe_sha256: String,
}

impl ProcessFacts {
    /// `@sys:uid`, `@sys:gid`, `@sys:user`, `@sys:exe`, `@sys:exe-sha256`.
    #[must_use]
    pub fn tags(&self) -> Tags {
        let mut t = BTreeMap::from([
            ("@sys:uid".to_owned(), self.uid.to_string()),
            ("@sys:gid".to_owned(), self.gid.to_string()),
            ("@sys:exe".to_owned(), self.exe.clone()),
            ("@sys:exe-sha256".to_owned(), self.exe_sha256.clone()),
        ]);
        if let Some(user) = &self.user {
            t.insert("@sys:user".to_owned(), user.clone());
        }
        t
    }
}

/// Start time (clock ticks since boot) from `/proc/PID/stat` text.
fn stat_start_time(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may contain spaces or ')': split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 of the whole line; `rest` starts at field 3.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Effective uid and gid from `/proc/PID/status` text.
fn status_ids(status: &str) -> Option<(u32, u32)> {
    let effective = |key: &str| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().nth(1)?.parse().ok()
    };
    Some((effective("Uid:")?, effective("Gid:")?))
}

/// The name of `uid` in passwd-format text.
fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let uid_field = f.nth(1)?;
        (uid_field.parse::<u32>().ok()? == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The oldest of `pids` by start time; processes that vanished are skipped.
#[must_use]
pub fn oldest(pids: &[u32]) -> Option<u32> {
    pids.iter()
        .filter_map(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((stat_start_time(&stat)?, pid))
        })
        .min()
        .map(|(_, pid)| pid)
}

/// Executable hashes by file identity, so an unchanged binary is hashed once.
#[derive(Debug, Default)]
pub struct ExeHashes {
    by_file: HashMap<(u64, u64, u64, i64), String>,
}

impl ExeHashes {
    /// SHA-256 of the executable of `pid`, read through `/proc/PID/exe` (which reaches the
    /// binary even inside another mount namespace).
    ///
    /// # Errors
    /// When the executable cannot be opened or read.
    pub fn of(&mut self, pid: u32) -> io::Result<String> {
        let mut file = std::fs::File::open(format!("/proc/{pid}/exe"))?;
        let meta = file.metadata()?;
        let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime());
        if let Some(h) = self.by_file.get(&key) {
            return Ok(h.clone());
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        let hex = hex::encode(ctx.finish());
        if self.by_file.len() > 4096 {
            self.by_file.clear();
        }
        self.by_file.insert(key, hex.clone());
        Ok(hex)
    }
}

/// Reads the facts of process `pid`.
///
/// # Errors
/// When the process is gone or its `/proc` entries cannot be read.
pub fn process(pid: u32, hashes: &mut ExeHashes) -> io::Result<ProcessFacts> {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let status = std::fs::read_to_string(proc_dir.join("status"))?;
    let (uid, gid) = status_ids(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no Uid/Gid in /proc/{pid}/status")))?;
    let exe = std::fs::read_link(proc_dir.join("exe"))?.to_string_lossy().into_owned();
    let exe_sha256 = hashes.of(pid)?;
    let user = std::fs::read_to_string(proc_dir.join("root/etc/passwd")).ok().and_then(|p| passwd_name(&p, uid));
    Ok(ProcessFacts { pid, uid, gid, user, exe, exe_sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(stat_start_time(stat), Some(98765));
        assert_eq!(stat_start_time("garbage"), None);
    }

    #[test]
    fn effective_ids_from_status() {
        let status = "Name:\tsleep\nUid:\t1000\t65534\t65534\t65534\nGid:\t100\t65533\t65533\t65533\n";
        assert_eq!(status_ids(status), Some((65534, 65533)));
        assert_eq!(status_ids("Name:\tx\n"), None);
    }

    #[test]
    fn passwd_lookup() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(passwd_name(passwd, 65534).as_deref(), Some("nobody"));
        assert_eq!(passwd_name(passwd, 42), None);
    }

    #[test]
    fn os_release() {
        assert_eq!(os_release_id("PRETTY_NAME=\"Debian GNU/Linux 12\"\nID=debian\nVERSION_ID=\"12\"\n"), "debian-12");
        assert_eq!(os_release_id("ID=arch\n"), "arch");
        assert_eq!(os_release_id(""), "");
    }

    #[test]
    fn own_process_facts() {
        let me = std::process::id();
        let facts = process(me, &mut ExeHashes::default()).expect("own facts");
        assert_eq!(facts.uid, nix::unistd::geteuid().as_raw());
        let exe = std::fs::read(std::env::current_exe().expect("exe")).expect("read exe");
        let expected = hex::encode(ring::digest::digest(&ring::digest::SHA256, &exe));
        assert_eq!(facts.exe_sha256, expected);
        assert_eq!(oldest(&[me]), Some(me));
    }
}
