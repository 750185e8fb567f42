//! `cargo xtask bench [--quick] [--only ROWS]`: builds the release agent, the probe and the benchmark runner
//! (`tests/src/bin/enforcer-bench.rs`), runs it as root and leaves `target/bench/results.json`
//! and `results.md`. `BENCHMARKS.md` explains the method and carries the latest table.

use anyhow::{Context as _, bail};

use crate::process::{cargo, root, status};

/// Runs the benchmarks; returns the exit code.
///
/// # Errors
/// When a build fails or the runner cannot start.
pub fn run(quick: bool, only: Option<&str>) -> anyhow::Result<i32> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the benchmarks load BPF programs and create namespaces: run as root");
    }
    crate::setup::run().context("setup (cargo xtask setup)")?;
    crate::process::build_agent(true)?;
    status(cargo().args(["build", "--release", "--package", "enforcer-tests", "--bin", "enforcer-probe", "--bin", "enforcer-bench"]))
        .context("building the benchmark runner")?;
    let release = root().join("target/release");
    let out = root().join("target/bench");
    let mut cmd = std::process::Command::new(release.join("enforcer-bench"));
    cmd.arg("--out").arg(&out).env("ENFORCER_BIN", release.join("enforcer")).env("ENFORCER_PROBE", release.join("enforcer-probe"));
    if quick {
        cmd.arg("--quick");
    }
    if let Some(rows) = only {
        cmd.args(["--only", rows]);
    }
    let code = cmd.status().context("running enforcer-bench")?.code().unwrap_or(1);
    if code == 0 {
        println!("\nresults: {} and {}", out.join("results.md").display(), out.join("results.json").display());
    }
    Ok(code)
}
