//! The VM tier: the integration tests, built static, packed with busybox into an initramfs and
//! booted under QEMU (software emulation) on the cached Debian kernel. The VM's `/init` runs
//! every test binary and prints their libtest output on the serial console, which is read
//! back here and tallied like the host tiers.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{
    process::{cargo, root, status},
    setup::VmKernel,
    test::Tally,
};

use crate::process::{STATIC_RUSTFLAGS, STATIC_TARGET as TARGET};
/// Marker lines the VM's init prints around each test binary.
pub(crate) const MARK: &str = "ENFORCER-VM:";
/// Upper bound for one VM run (boot plus every test under TCG).
const VM_TIMEOUT_SECS: u32 = 900;

struct Binaries {
    tests: Vec<(String, PathBuf)>,
    probe: PathBuf,
    enforcer: PathBuf,
}

/// Kernel modules the tests need that the Debian cloud kernel builds as modules (`veth` and
/// `bridge` for the simulated hosts of `tests/src/netns.rs`), in load order: each one's
/// `depends=` (from its `.modinfo`; the package ships no `modules.dep`) must come before it,
/// which [`stage_modules`] checks.
const MODULES: [&str; 4] = ["net/llc/llc", "net/802/stp", "net/bridge/bridge", "drivers/net/veth"];


/// Builds the integration tests and the probe as static executables.
fn build_static() -> anyhow::Result<Binaries> {
    let mut cmd = cargo();
    cmd.args(["test", "--package", "enforcer-tests", "--no-run", "--target", TARGET, "--message-format=json-render-diagnostics"])
        .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", STATIC_RUSTFLAGS)
        .stdout(Stdio::piped());
    let out = cmd.output().context("building the static test binaries")?;
    if !out.status.success() {
        bail!("building the static test binaries failed ({})", out.status);
    }
    let mut tests = Vec::new();
    let mut probe = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else { continue };
        let name = msg["target"]["name"].as_str().unwrap_or_default().to_owned();
        let kinds = msg["target"]["kind"].as_array().cloned().unwrap_or_default();
        if kinds.iter().any(|k| k == "test") {
            tests.push((name, PathBuf::from(exe)));
        } else if name == "enforcer-probe" {
            probe = Some(PathBuf::from(exe));
        }
    }
    tests.sort();
    let probe = probe.context("cargo built no enforcer-probe")?;
    status(
        cargo()
            .args(["build", "--package", "enforcer", "--bin", "enforcer", "--target", TARGET])
            .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", STATIC_RUSTFLAGS),
    )
    .context("building the static enforcer binary")?;
    let enforcer = root().join("target").join(TARGET).join("debug/enforcer");
    if tests.is_empty() {
        bail!("cargo built no integration test binaries");
    }
    Ok(Binaries { tests, probe, enforcer })
}

/// The VM's `/init` up to the point where the tests (or the benchmark) can run: filesystems,
/// kernel modules, loopback and the environment the harness reads.
pub(crate) fn init_prelude(ci: bool) -> String {
    // A module that does not load is a marker line the host counts as a failure.
    let mut insmod = String::new();
    for m in MODULES {
        let name = module_name(m);
        let _ = writeln!(insmod, "insmod /lib/modules/{name}.ko || echo \"{MARK} module-failed {name}\"");
    }
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /tmp
{insmod}ip link set lo up
export ENFORCER_TIER=vm ENFORCER_PROBE=/bin/enforcer-probe ENFORCER_BIN=/bin/enforcer HOME=/root RUST_BACKTRACE=1 {ci}
echo "{MARK} kernel $(uname -r) lsm $(cat /sys/kernel/security/lsm)"
"#,
        ci = if ci { "CI=true" } else { "" }
    )
}

fn init_script(ci: bool) -> String {
    format!(
        r#"{prelude}for t in /tests/*; do
  echo "{MARK} binary $(basename $t)"
  $t --test-threads=1 2>&1
  echo "{MARK} exit $?"
done
echo "{MARK} done"
poweroff -f
"#,
        prelude = init_prelude(ci)
    )
}

fn module_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Decompresses [`MODULES`] from the kernel package into `dest` (with busybox's `unxz`, which
/// the VM needs anyway), checking that each one's dependencies come before it.
fn stage_modules(kernel: &VmKernel, dest: &Path) -> anyhow::Result<()> {
    let pkg = kernel.vmlinuz.parent().and_then(Path::parent).context("kernel package directory")?;
    let tree = pkg.join("lib/modules").join(&kernel.release).join("kernel");
    for (i, m) in MODULES.iter().enumerate() {
        let src = tree.join(format!("{m}.ko.xz"));
        let ko = dest.join(format!("{}.ko", module_name(m)));
        let out = std::fs::File::create(&ko)?;
        status(Command::new("/bin/busybox").arg("unxz").arg("-c").arg(&src).stdout(out))
            .with_context(|| format!("decompressing {}", src.display()))?;
        let bytes = std::fs::read(&ko)?;
        let depends = bytes
            .split(|&b| b == 0)
            .find_map(|s| s.strip_prefix(b"depends="))
            .with_context(|| format!("{} has no depends= in its .modinfo", src.display()))?;
        for dep in String::from_utf8_lossy(depends).split(',').filter(|d| !d.is_empty()) {
            if !MODULES[..i].iter().any(|earlier| module_name(earlier) == dep) {
                bail!("kernel module {m} depends on {dep}, which MODULES does not load before it");
            }
        }
    }
    Ok(())
}

fn stage(bins: &Binaries, kernel: &VmKernel, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut files = vec![(bins.probe.clone(), "bin/enforcer-probe".to_owned()), (bins.enforcer.clone(), "bin/enforcer".to_owned())];
    files.extend(bins.tests.iter().map(|(name, exe)| (exe.clone(), format!("tests/{name}"))));
    stage_files(&files, kernel, dir, &init_script(std::env::var("CI").is_ok_and(|v| v == "true")))
}

/// Packs busybox, the kernel modules, `files` (source, path in the VM) and `init` into an
/// initramfs built in `dir`; returns the archive.
pub(crate) fn stage_files(files: &[(PathBuf, String)], kernel: &VmKernel, dir: &Path, init: &str) -> anyhow::Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    for d in ["bin", "tests", "proc", "sys", "dev", "tmp", "root", "run", "etc", "lib/modules"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).context("copying /bin/busybox (busybox-static)")?;
    for (src, dest) in files {
        std::fs::copy(src, dir.join(dest)).with_context(|| format!("copying {}", src.display()))?;
    }
    stage_modules(kernel, &dir.join("lib/modules"))?;
    let init_path = dir.join("init");
    std::fs::write(&init_path, init)?;
    let init = init_path;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let initrd = dir.with_extension("cpio.gz");
    status(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 > '{}'",
        dir.display(),
        initrd.display()
    )))?;
    Ok(initrd)
}

/// Boots `initrd` on `kernel` under QEMU for at most `timeout_secs`, handing every console
/// line to `on_line`.
pub(crate) fn boot_lines(kernel: &VmKernel, initrd: &Path, timeout_secs: u32, mut on_line: impl FnMut(&str)) -> anyhow::Result<()> {
    let mut child = Command::new("timeout")
        .arg(timeout_secs.to_string())
        .args(["qemu-system-x86_64", "-accel", "tcg,thread=single", "-cpu", "max", "-m", "1024", "-smp", "2"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot", "-kernel"])
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            on_line(line.trim_end_matches('\r'));
        }
    }
    child.wait()?;
    Ok(())
}

fn boot(kernel: &VmKernel, initrd: &Path, tally: &mut Tally) -> anyhow::Result<()> {
    let mut binary = String::new();
    let mut failed_before = 0;
    let mut done = false;
    boot_lines(kernel, initrd, VM_TIMEOUT_SECS, |line| {
            println!("vm| {line}");
            if let Some(rest) = line.strip_prefix(MARK) {
                let rest = rest.trim();
                if let Some(b) = rest.strip_prefix("binary ") {
                    binary = format!("{b}::");
                    failed_before = tally.failed;
                } else if let Some(code) = rest.strip_prefix("exit ") {
                    if code != "0" && tally.failed == failed_before {
                        tally.broken(format!("{binary} exited {code} without a failing test (crash?)"));
                    }
                } else if let Some(module) = rest.strip_prefix("module-failed ") {
                    tally.broken(format!("the VM could not load kernel module {module}"));
                } else if rest == "done" {
                    done = true;
                }
            } else {
                tally.observe(line, &binary);
            }
    })?;
    if !done {
        bail!("the VM did not finish its tests (timeout {VM_TIMEOUT_SECS}s)");
    }
    Ok(())
}

/// Runs the VM tier on `kernel`.
pub fn run(kernel: &VmKernel) -> Tally {
    let mut tally = Tally::new(format!("vm (linux {})", kernel.release));
    let result = build_static().and_then(|bins| {
        let initrd = stage(&bins, kernel, &root().join("target/vm/initramfs"))?;
        boot(kernel, &initrd, &mut tally)
    });
    if let Err(e) = result {
        tally.broken(format!("{e:#}"));
    }
    tally
}
