//! `cargo xtask bench [--quick] [--only ROWS]`: builds the release agent, the probe and the
//! benchmark runner (`tests/src/bin/enforcer-bench.rs`), runs it as root and leaves
//! `target/bench/results.json` and `results.md`. `BENCHMARKS.md` explains the method and
//! carries the latest table.
//!
//! The file row is measured twice: on this host (the fanotify fallback) and in the QEMU VM of
//! the test tier (BPF-LSM), where the runner is booted with only that row; its results are
//! merged into the host's report.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::{
    process::{STATIC_RUSTFLAGS, STATIC_TARGET, cargo, root, status},
    setup::VmKernel,
    vm,
};

/// Upper bound for the VM's benchmark run (boot, agent start under TCG, four rounds).
const VM_BENCH_TIMEOUT_SECS: u32 = 600;

/// Runs the benchmarks; returns the exit code.
///
/// # Errors
/// When a build fails or the runner cannot start.
pub fn run(quick: bool, only: Option<&str>) -> anyhow::Result<i32> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the benchmarks load BPF programs and create namespaces: run as root");
    }
    let kernel = crate::setup::run().context("setup (cargo xtask setup)")?;
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let wanted = |row: &str| only.is_none_or(|o| o.split(',').any(|x| x == row));
    let vm_results = if wanted("vm-files") { Some(vm_files(&kernel, quick, &out)?) } else { None };
    if only.is_some_and(|o| o.split(',').all(|x| x == "vm-files")) {
        println!("\nVM results: {}", out.join("vm-results.json").display());
        return Ok(0);
    }
    crate::process::build_agent(true)?;
    status(cargo().args(["build", "--release", "--package", "enforcer-tests", "--bin", "enforcer-probe", "--bin", "enforcer-bench"]))
        .context("building the benchmark runner")?;
    let release = root().join("target/release");
    let mut cmd = std::process::Command::new(release.join("enforcer-bench"));
    cmd.arg("--out").arg(&out).env("ENFORCER_BIN", release.join("enforcer")).env("ENFORCER_PROBE", release.join("enforcer-probe"));
    if quick {
        cmd.arg("--quick");
    }
    if let Some(rows) = only {
        cmd.args(["--only", rows]);
    }
    if let Some(file) = &vm_results {
        cmd.arg("--merge").arg(file);
    }
    let code = cmd.status().context("running enforcer-bench")?.code().unwrap_or(1);
    if code == 0 {
        println!("\nresults: {} and {}", out.join("results.md").display(), out.join("results.json").display());
    }
    Ok(code)
}

/// Row 5 in the VM: boots the runner with `--only files` under BPF-LSM and returns the path of
/// the results it printed. The binaries are the VM tier's static debug builds (already built
/// by `cargo xtask test`): what is measured is the kernel's hook, which they do not change.
fn vm_files(kernel: &VmKernel, quick: bool, out: &Path) -> anyhow::Result<PathBuf> {
    let built = |bin: &str, package: &str| -> anyhow::Result<PathBuf> {
        status(
            cargo()
                .args(["build", "--package", package, "--bin", bin, "--target", STATIC_TARGET])
                .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", STATIC_RUSTFLAGS),
        )
        .with_context(|| format!("building static {bin}"))?;
        Ok(root().join("target").join(STATIC_TARGET).join("debug").join(bin))
    };
    let files = [
        (built("enforcer", "enforcer")?, "bin/enforcer".to_owned()),
        (built("enforcer-probe", "enforcer-tests")?, "bin/enforcer-probe".to_owned()),
        (built("enforcer-bench", "enforcer-tests")?, "bin/enforcer-bench".to_owned()),
    ];
    let mark = vm::MARK;
    let init = format!(
        "{prelude}echo \"{mark} bench start\"\n/bin/enforcer-bench --only files {quick} --out /tmp/bench 2>&1\necho \"{mark} bench exit $?\"\necho \"{mark} results\"\ncat /tmp/bench/results.json\necho\necho \"{mark} end\"\npoweroff -f\n",
        prelude = vm::init_prelude(false),
        quick = if quick { "--quick" } else { "" },
    );
    let initrd = vm::stage_files(&files, kernel, &root().join("target/vm/bench-initramfs"), &init)?;
    let (mut json, mut in_results, mut exit) = (String::new(), false, None);
    vm::boot_lines(kernel, &initrd, VM_BENCH_TIMEOUT_SECS, |line| {
        match line.strip_prefix(mark).map(str::trim) {
            Some("results") => in_results = true,
            Some("end") => in_results = false,
            Some(rest) => {
                if let Some(code) = rest.strip_prefix("bench exit ") {
                    exit = Some(code.to_owned());
                }
                println!("vm| {line}");
            }
            None if in_results => json.push_str(line),
            None => println!("vm| {line}"),
        }
    })?;
    match exit.as_deref() {
        Some("0") => {}
        Some(code) => bail!("the benchmark runner in the VM exited {code} (its output is above)"),
        None => bail!("the VM did not finish the file benchmark (timeout {VM_BENCH_TIMEOUT_SECS}s)"),
    }
    serde_json::from_str::<serde_json::Value>(&json).context("the VM's results.json")?;
    let path = out.join("vm-results.json");
    std::fs::write(&path, json)?;
    Ok(path)
}
