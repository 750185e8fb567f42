//! Builds the kernel programs (`enforcer-ebpf`) for the BPF target with the nightly toolchain and
//! bpf-linker, and leaves the object in `OUT_DIR` for `include_bytes!`.
//!
//! bpf-linker is found on `PATH`, or in the cache that `cargo xtask setup` fills
//! (`$ENFORCER_CACHE`, default `~/.cache/enforcer`), so nobody has to edit `PATH`.

use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Must match `xtask`'s `BPF_LINKER_VERSION`.
const BPF_LINKER_DIR: &str = "bpf-linker-0.13.0/bin";

fn cache_dir() -> Option<PathBuf> {
    env::var_os("ENFORCER_CACHE")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/enforcer")))
}

/// Generates the local API's gRPC code from `proto/enforcer.proto`, with the pure-Rust protox
/// compiler (no `protoc` needed).
fn compile_proto() -> anyhow::Result<()> {
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/enforcer.proto");
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], [concat!(env!("CARGO_MANIFEST_DIR"), "/proto")])
        .context("compiling proto/enforcer.proto")?;
    tonic_prost_build::configure().compile_fds(fds).context("generating gRPC code")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    compile_proto()?;
    println!("cargo:rerun-if-env-changed=ENFORCER_CACHE");
    let path = env::var_os("PATH").unwrap_or_default();
    let on_path = env::split_paths(&path).any(|d| d.join("bpf-linker").is_file());
    if !on_path {
        let dir = cache_dir()
            .map(|c| c.join(BPF_LINKER_DIR))
            .filter(|d| d.join("bpf-linker").is_file())
            .ok_or_else(|| {
                anyhow!("bpf-linker not found on PATH or in the enforcer cache: run `cargo xtask setup`")
            })?;
        let mut dirs = vec![dir];
        dirs.extend(env::split_paths(&path));
        let joined = env::join_paths(dirs).context("joining PATH")?;
        // SAFETY: build scripts are single-threaded at this point; nothing reads the environment
        // concurrently. The child cargo that aya-build spawns inherits this PATH.
        unsafe { env::set_var("PATH", joined) };
    }
    let package = Package {
        name: "enforcer-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../enforcer-ebpf"),
        ..Package::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
