//! Running commands: the workspace root, the cache directory, and child processes whose
//! failure is reported with the command line.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

/// Where downloads and built tools are cached: `$ENFORCER_CACHE`, else `~/.cache/enforcer`.
/// `enforcer/build.rs` looks for bpf-linker in the same place.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("ENFORCER_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/enforcer"),
        PathBuf::from,
    )
}

/// Runs `cmd` to completion with inherited output.
///
/// # Errors
/// When it cannot start or exits unsuccessfully.
pub fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout.
///
/// # Errors
/// When it cannot start or exits unsuccessfully (stderr included).
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `cargo` command run from the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Builds the agent (and with it the eBPF object).
///
/// # Errors
/// When the build fails.
pub fn build_agent(release: bool) -> anyhow::Result<PathBuf> {
    crate::setup::ensure_build_tools()?;
    let mut cmd = cargo();
    cmd.args(["build", "--package", "enforcer", "--bin", "enforcer"]);
    if release {
        cmd.arg("--release");
    }
    status(&mut cmd)?;
    Ok(root().join("target").join(if release { "release" } else { "debug" }).join("enforcer"))
}

/// The target of static builds (glibc with `crt-static`), shared with the VM tier.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Rustflags of static builds.
pub const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static -C debuginfo=0";

/// Builds the static release binary and copies it to `target/dist/enforcer`.
///
/// # Errors
/// When the build or the copy fails.
pub fn build_dist() -> anyhow::Result<PathBuf> {
    crate::setup::ensure_build_tools()?;
    status(
        cargo()
            .args(["build", "--release", "--package", "enforcer", "--bin", "enforcer", "--target", STATIC_TARGET])
            .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", STATIC_RUSTFLAGS),
    )?;
    let built = root().join("target").join(STATIC_TARGET).join("release/enforcer");
    let dist = root().join("target/dist");
    std::fs::create_dir_all(&dist)?;
    let out = dist.join("enforcer");
    std::fs::copy(&built, &out)?;
    Ok(out)
}
