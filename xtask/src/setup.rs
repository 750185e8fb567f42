//! `cargo xtask setup`: installs what is missing, skips what is there.
//!
//! - `rust-src` for the nightly toolchain (the eBPF crate is built with `-Z build-std=core`);
//! - bpf-linker, built from crates.io against the nightly toolchain's own libLLVM (no LLVM 22
//!   package exists for this distribution), cached in `<cache>/bpf-linker-<version>/`;
//! - the Debian packages of the VM tier (qemu-system-x86, busybox-static, cpio) and of the
//!   deploy checks (systemd, for `systemd-analyze verify`) and of the benchmarks' baseline
//!   (nftables);
//! - kubernetes-validate from `PyPI` (the Kubernetes schemas it bundles check the manifests), in a
//!   virtualenv at `<cache>/kubernetes-validate/`;
//! - the Debian 6.12 cloud kernel, downloaded once and unpacked in `<cache>/kernels/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, bail};

use crate::process::{cache_dir, output, status};

/// Must match `BPF_LINKER_DIR` in `enforcer/build.rs`.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The VM tier's kernel: Debian's meta package, resolved to the newest concrete version.
const KERNEL_META_PACKAGE: &str = "linux-image-6.12-cloud-amd64";
/// Debian packages the tests need, with a file each one installs (to check for presence).
const PACKAGES: [(&str, &str); 5] = [
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    ("cpio", "/bin/cpio"),
    ("systemd", "/usr/bin/systemd-analyze"),
    ("nftables", "/usr/sbin/nft"),
];
/// The manifest checker, pinned.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// What the VM tier boots.
pub struct VmKernel {
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// Its release string, e.g. `6.12.117+deb12-cloud-amd64`.
    pub release: String,
}

/// Runs every step.
///
/// # Errors
/// When a step cannot complete.
pub fn run() -> anyhow::Result<VmKernel> {
    ensure_build_tools()?;
    ensure_packages()?;
    ensure_kubernetes_validate()?;
    ensure_kernel()
}

fn step(name: &str, present: bool) {
    println!("setup: {name:<32} {}", if present { "present" } else { "installing" });
}

/// rust-src for nightly and bpf-linker.
///
/// # Errors
/// When either cannot be installed.
pub fn ensure_build_tools() -> anyhow::Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let out = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is needed for the eBPF crate (rustup toolchain install nightly)")?;
    Ok(PathBuf::from(out.trim()))
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let present = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core").is_dir();
    step("rust-src (nightly)", present);
    if !present {
        status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

/// Where the cached bpf-linker lives.
fn bpf_linker_root() -> PathBuf {
    cache_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}"))
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let root = bpf_linker_root();
    let bin = root.join("bin/bpf-linker");
    // Runs only if its libLLVM symlink still points at the installed nightly's library.
    let works = bin.is_file() && Command::new(&bin).arg("--version").output().is_ok_and(|o| o.status.success());
    step(&format!("bpf-linker {BPF_LINKER_VERSION}"), works);
    if works {
        return Ok(());
    }
    let lib = nightly_sysroot()?.join("lib");
    let soname = std::fs::read_dir(&lib)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.ends_with("-nightly"))
        .with_context(|| format!("no libLLVM.so.*-nightly in {}", lib.display()))?;
    let major = soname
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .context("unexpected libLLVM name")?
        .to_owned();
    let prefix = root.join("llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    for link in [prefix.join("lib/libLLVM.so"), prefix.join("lib").join(&soname)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&soname), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    status(
        Command::new("cargo")
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked", "--force"])
            .args(["--no-default-features", "--features", &format!("llvm-{major}")])
            .arg("--root")
            .arg(&root)
            .env("LLVM_PREFIX", &prefix),
    )
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_update() -> anyhow::Result<()> {
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        status(Command::new("apt-get").args(["update", "-q"]))?;
    }
    Ok(())
}

fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(pkg, file)| {
            let present = dpkg_installed(pkg) && Path::new(file).exists();
            step(pkg, present);
            !present
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_update()?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Where `kubernetes-validate` is installed (the tests look for it there).
#[must_use]
pub fn kubernetes_validate() -> PathBuf {
    cache_dir().join("kubernetes-validate/bin/kubernetes-validate")
}

fn ensure_kubernetes_validate() -> anyhow::Result<()> {
    let bin = kubernetes_validate();
    let present = bin.is_file();
    step("kubernetes-validate", present);
    if present {
        return Ok(());
    }
    let venv = cache_dir().join("kubernetes-validate");
    status(Command::new("python3").args(["-m", "venv"]).arg(&venv)).context("creating the virtualenv")?;
    status(Command::new(venv.join("bin/pip")).args(["install", "-q", KUBERNETES_VALIDATE]))
        .context("installing kubernetes-validate from PyPI")
}

fn kernels_dir() -> PathBuf {
    cache_dir().join("kernels")
}

/// The newest unpacked kernel in the cache, if any.
fn cached_kernel() -> Option<VmKernel> {
    let mut found: Vec<VmKernel> = std::fs::read_dir(kernels_dir())
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|pkg| std::fs::read_dir(pkg.path().join("boot")).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|f| {
            let name = f.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            Some(VmKernel { vmlinuz: f.path(), release })
        })
        .collect();
    found.sort_by(|a, b| a.release.cmp(&b.release));
    found.pop()
}

/// The concrete kernel package the meta package depends on.
fn resolve_kernel_package() -> anyhow::Result<String> {
    let depends = |out: &str| {
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|d| d.starts_with("linux-image-"))
            .map(str::to_owned)
    };
    let first = output(Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE])).unwrap_or_default();
    if let Some(p) = depends(&first) {
        return Ok(p);
    }
    apt_update()?;
    let out = output(Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE]))?;
    depends(&out).with_context(|| format!("{KERNEL_META_PACKAGE} depends on no linux-image package"))
}

/// The VM kernel, downloaded and unpacked on first use.
///
/// # Errors
/// When it cannot be downloaded or unpacked.
pub fn ensure_kernel() -> anyhow::Result<VmKernel> {
    if let Some(k) = cached_kernel() {
        step(&format!("kernel {}", k.release), true);
        return Ok(k);
    }
    step(KERNEL_META_PACKAGE, false);
    let package = resolve_kernel_package()?;
    let debs = kernels_dir().join("debs");
    std::fs::create_dir_all(&debs)?;
    status(Command::new("apt-get").args(["download", "-q", &package]).current_dir(&debs))?;
    let deb = std::fs::read_dir(&debs)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_"))))
        .with_context(|| format!("apt-get download left no {package} .deb in {}", debs.display()))?;
    let dest = kernels_dir().join(&package);
    let partial = kernels_dir().join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    std::fs::rename(&partial, &dest)?;
    std::fs::remove_file(&deb)?;
    match cached_kernel() {
        Some(k) => Ok(k),
        None => bail!("{} holds no boot/vmlinuz-*", dest.display()),
    }
}
