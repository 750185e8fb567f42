//! The flow log: every decision event as one JSON line in `flow_log`, rotated by size
//! (`flow_log.1` is the newest full file, up to `flow_log.KEEP`; older ones are deleted).

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// Rotated files kept beside the current one.
pub const KEEP: usize = 3;

/// An open flow log.
pub struct FlowLog {
    path: PathBuf,
    max_bytes: u64,
    file: BufWriter<File>,
    size: u64,
}

fn open(path: &Path) -> io::Result<(BufWriter<File>, u64)> {
    let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let size = file.metadata()?.len();
    Ok((BufWriter::new(file), size))
}

impl FlowLog {
    /// Opens (appending to) `path`, rotating once it would exceed `max_bytes`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<Self> {
        let (file, size) = open(path)?;
        Ok(Self { path: path.to_owned(), max_bytes, file, size })
    }

    /// Appends one line (`line` without its newline).
    ///
    /// # Errors
    /// When writing or rotating fails.
    pub fn write(&mut self, line: &str) -> io::Result<()> {
        let len = u64::try_from(line.len()).unwrap_or(u64::MAX).saturating_add(1);
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    /// Writes out what is buffered.
    ///
    /// # Errors
    /// When the write fails.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        for n in (1..KEEP).rev() {
            match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        (self.file, self.size) = open(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_three() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("flows.json");
        let mut log = FlowLog::open(&path, 100).expect("open");
        for i in 0..40 {
            log.write(&format!("{{\"n\":\"{i:04}\"}}")).expect("write");
        }
        log.flush().expect("flush");
        let read = |p: &Path| std::fs::read_to_string(p).expect("read");
        let current = read(&path);
        assert!(current.len() <= 100, "{}", current.len());
        assert!(current.ends_with("{\"n\":\"0039\"}\n"), "{current}");
        for n in 1..=KEEP {
            let text = read(&log.rotated(n));
            assert!(!text.is_empty() && text.len() <= 100);
            assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "whole lines only");
        }
        assert!(!log.rotated(KEEP + 1).exists(), "older files are dropped");
        // Reopening appends.
        drop(log);
        let mut again = FlowLog::open(&path, 100).expect("reopen");
        again.write("{\"n\":9999}").expect("write");
        again.flush().expect("flush");
        assert!(read(&path).starts_with(&current));
    }
}
