//! `cargo xtask test`: the three tiers and one summary.
//!
//! - unit: `cargo test` on every crate except the integration tests;
//! - host: the privileged integration tests on this kernel ([`HOST_TESTS`]);
//! - vm: every integration test, built static, run under QEMU on the test kernel.
//!
//! The last line printed is `N passed, N failed`. Under `CI=true` a tier that cannot run
//! counts as a failure, never a skip.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::{process::cargo, setup, vm};

/// Which tiers to run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tiers {
    /// Unit, host and VM.
    All,
    /// Only the VM tier.
    VmOnly,
}

/// Integration test targets that run on the host kernel. `lsm` needs BPF LSM: VM only.
pub const HOST_TESTS: [&str; 13] = ["net", "agent", "identity", "runtime_facts", "policy", "netns", "netpolicy", "files", "restart", "ops", "deploy", "cluster", "observe"];

/// Results of one tier.
#[derive(Default)]
pub struct Tally {
    /// Tier name shown in the summary.
    pub name: String,
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed (a tier that could not run counts one).
    pub failed: usize,
    /// Names of failed tests and why a tier failed to run.
    pub failures: Vec<String>,
}

impl Tally {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), ..Self::default() }
    }

    /// Counts one libtest output line; returns whether it was a result line.
    pub fn observe(&mut self, line: &str, prefix: &str) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("test ") {
            if let Some(name) = rest.strip_suffix(" ... FAILED") {
                self.failures.push(format!("{prefix}{name}"));
            }
            if let Some(counts) = rest.strip_prefix("result: ") {
                self.passed += count(counts, " passed");
                self.failed += count(counts, " failed");
            }
        }
    }

    /// Records that the tier (or part of it) could not run.
    pub fn broken(&mut self, why: String) {
        self.failed += 1;
        self.failures.push(why);
    }
}

/// The number before `what` in a libtest result line ("ok. 3 passed; 0 failed; …").
fn count(counts: &str, what: &str) -> usize {
    counts
        .split(';')
        .find_map(|part| part.trim().trim_start_matches(|c: char| !c.is_ascii_digit()).strip_suffix(what.trim_start()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `cmd`, echoing its output, and tallies libtest results from it.
fn run_tallied(mut cmd: Command, tally: &mut Tally) {
    let desc = format!("{cmd:?}");
    let child = cmd.stdout(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return tally.broken(format!("{desc}: {e}")),
    };
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            tally.observe(&line, "");
        }
    }
    match child.wait() {
        Ok(st) if st.success() => {}
        Ok(st) if tally.failed == 0 => tally.broken(format!("{desc} failed ({st}) without a failing test: build error?")),
        Ok(_) => {}
        Err(e) => tally.broken(format!("{desc}: {e}")),
    }
}

fn unit() -> Tally {
    let mut tally = Tally::new("unit");
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--exclude", "enforcer-tests", "--no-fail-fast"]);
    run_tallied(cmd, &mut tally);
    tally
}

fn host() -> Tally {
    let mut tally = Tally::new("host");
    // The tests run the real `enforcer` binary, found beside them in target/debug.
    if let Err(e) = crate::process::build_agent(false) {
        tally.broken(format!("building the enforcer binary: {e:#}"));
        return tally;
    }
    let mut cmd = cargo();
    cmd.args(["test", "--package", "enforcer-tests", "--no-fail-fast"]);
    for t in HOST_TESTS {
        cmd.args(["--test", t]);
    }
    run_tallied(cmd, &mut tally);
    tally
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Runs the selected tiers and prints the summary; returns the exit code. A tier that cannot
/// run is counted as a failure, never returned as an error.
pub fn run(tiers: Tiers) -> i32 {
    let started = std::time::Instant::now();
    let kernel = setup::run().context("setup (cargo xtask setup)");
    let mut tallies = Vec::new();
    if tiers == Tiers::All {
        tallies.push(unit());
        if nix::unistd::Uid::effective().is_root() {
            tallies.push(host());
        } else {
            let mut t = Tally::new("host");
            let why = "host tier needs root (BPF, cgroups)".to_owned();
            if ci() { t.broken(why) } else { println!("SKIP {why}") }
            tallies.push(t);
        }
    }
    match kernel {
        Ok(kernel) => tallies.push(vm::run(&kernel)),
        Err(e) => {
            let mut t = Tally::new("vm");
            t.broken(format!("{e:#}"));
            tallies.push(t);
        }
    }
    println!("\n== summary ({:.0?}) ==", started.elapsed());
    for t in &tallies {
        println!("{}: {} passed, {} failed", t.name, t.passed, t.failed);
        for f in &t.failures {
            println!("  failed: {f}");
        }
    }
    let passed: usize = tallies.iter().map(|t| t.passed).sum();
    let failed: usize = tallies.iter().map(|t| t.failed).sum();
    println!("{passed} passed, {failed} failed");
    i32::from(failed > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_libtest_output() {
        let mut t = Tally::new("x");
        for line in [
            "running 3 tests",
            "test a ... ok",
            "test b ... FAILED",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.1s",
            "test result: ok. 4 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s",
        ] {
            t.observe(line, "net::");
        }
        assert_eq!((t.passed, t.failed), (6, 1));
        assert_eq!(t.failures, ["net::b"]);
    }
}
