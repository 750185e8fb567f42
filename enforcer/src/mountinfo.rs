//! `/proc/PID/mountinfo`: what is mounted where, parsed once for everyone who needs it (the
//! cgroup v2 mount, the filesystems the fanotify fallback marks).

use std::path::PathBuf;

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the filesystem (one superblock, however many mounts show it).
    pub device: String,
    /// Where it is mounted.
    pub point: PathBuf,
    /// Filesystem type (`ext4`, `overlay`, `cgroup2`, …).
    pub fstype: String,
}

/// The mounts listed in `text`, in order; malformed lines are skipped.
#[must_use]
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
            let (left, right) = line.split_once(" - ")?;
            let mut fields = left.split_whitespace();
            let device = fields.nth(2)?.to_owned();
            let point = PathBuf::from(unescape(fields.nth(1)?));
            let fstype = right.split_whitespace().next()?.to_owned();
            Some(Mount { device, point, fstype })
        })
        .collect()
}

/// Reads and parses this process's mountinfo.
///
/// # Errors
/// When it cannot be read.
pub fn read() -> std::io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// mountinfo escapes spaces and a few other bytes as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let oct = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        if let Some(b) = oct {
            out.push(char::from(b));
            rest = &rest[i + 4..];
        } else {
            out.push('\\');
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_with_optional_tags_and_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw\n\
                    40 1 0:30 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n\
                    garbage\n\
                    41 1 0:31 / /tmp rw shared:2 shared:3 - tmpfs tmpfs rw\n";
        let m = parse(text);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[0], Mount { device: "98:0".into(), point: "/mnt2".into(), fstype: "ext3".into() });
        assert_eq!(m[1].point, PathBuf::from("/mnt/my cg"));
        assert_eq!(m[2].fstype, "tmpfs");
    }
}
