//! What the running kernel offers, read from the system rather than assumed.

use std::path::Path;

use nix::mount::{MsFlags, mount};

/// The active LSM list file (securityfs).
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// The active LSMs, in order, mounting securityfs first if it is not mounted.
///
/// # Errors
/// A sentence saying why the list could not be read.
pub fn active_lsms() -> Result<Vec<String>, String> {
    let list = Path::new(LSM_LIST);
    if !list.exists() {
        let dir = Path::new("/sys/kernel/security");
        mount(Some("securityfs"), dir, Some("securityfs"), MsFlags::empty(), None::<&str>)
            .map_err(|e| format!("{LSM_LIST} is missing and mounting securityfs failed: {e}"))?;
    }
    let text = std::fs::read_to_string(list).map_err(|e| format!("reading {LSM_LIST}: {e}"))?;
    Ok(parse_lsms(&text))
}

fn parse_lsms(text: &str) -> Vec<String> {
    text.trim().split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Whether the kernel exposes its BTF (needed for BPF-LSM programs).
#[must_use]
pub fn has_btf() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_list() {
        assert_eq!(parse_lsms("lockdown,capability,landlock,bpf\n"), ["lockdown", "capability", "landlock", "bpf"]);
        assert!(parse_lsms("").is_empty());
    }
}
