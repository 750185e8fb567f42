//! The packaging: the systemd unit passes `systemd-analyze verify`, the Kubernetes manifests are
//! valid objects for the Kubernetes versions we support (kubernetes-validate, strict), and the
//! configuration and policies they ship pass the agent's own checks. `cargo xtask setup`
//! installs both tools. Runs on the host tier (the VM has neither tool; nothing here needs its
//! kernel).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use enforcer_tests::{can_run, enforcer_bin, in_vm};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_owned()
}

fn tool(name: &str, cached: Option<PathBuf>) -> Option<PathBuf> {
    cached.filter(|p| p.is_file()).or_else(|| {
        std::env::var("PATH").unwrap_or_default().split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
    })
}

fn cache_dir() -> PathBuf {
    std::env::var_os("ENFORCER_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/enforcer"),
        PathBuf::from,
    )
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn systemd_unit_verifies() {
    if in_vm() {
        return;
    }
    let Some(analyze) = tool("systemd-analyze", None) else {
        let _ = can_run("systemd_unit_verifies", Some("systemd-analyze is not installed (cargo xtask setup)".into()));
        return;
    };
    // The unit names the installed binary; verify it against the one built here.
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/enforcer.service")).expect("unit");
    assert!(unit.contains("Type=notify"), "readiness is notified");
    let dir = tempfile::tempdir().expect("tmp");
    let copy = dir.path().join("enforcer.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/enforcer", enforcer_bin().to_str().expect("utf-8"))).expect("copy");
    let (ok, out) = run(Command::new(analyze).arg("verify").arg(&copy));
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");
}

/// The `|` block under `key:` in a `ConfigMap`, unindented.
fn block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next().unwrap_or_else(|| panic!("no {key} block"));
    let indent = header.len() - header.trim_start().len() + 2;
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn kubernetes_manifests_are_valid() {
    if in_vm() {
        return;
    }
    let Some(validate) = tool("kubernetes-validate", Some(cache_dir().join("kubernetes-validate/bin/kubernetes-validate"))) else {
        let _ = can_run("kubernetes_manifests_are_valid", Some("kubernetes-validate is not installed (cargo xtask setup)".into()));
        return;
    };
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("manifests").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.iter().any(|f| f.ends_with("daemonset.yaml")), "{files:?}");
    for version in ["1.30.0", "1.33.0"] {
        let (ok, out) = run(Command::new(&validate).args(["--strict", "-k", version]).args(&files));
        assert!(ok, "kubernetes-validate {version}: {out}");
        assert!(!out.contains("WARN"), "{out}");
    }

    // What the ConfigMaps carry passes the agent's own checks.
    let configmap = std::fs::read_to_string(dir.join("configmap.yaml")).expect("configmap");
    let tmp = tempfile::tempdir().expect("tmp");
    let config = tmp.path().join("enforcer.toml");
    std::fs::write(&config, block(&configmap, "enforcer.toml")).expect("config");
    let (ok, out) = run(Command::new(enforcer_bin()).args(["run", "--check", "--config"]).arg(&config));
    assert!(ok, "the DaemonSet's config: {out}");
    let policy = tmp.path().join("example.yaml");
    std::fs::write(&policy, block(&configmap, "example.yaml")).expect("policy");
    let (ok, out) = run(Command::new(enforcer_bin()).args(["policy", "check"]).arg(&policy));
    assert!(ok, "the shipped policy: {out}");

    // The probes call the binary where the image puts it.
    let daemonset = std::fs::read_to_string(dir.join("daemonset.yaml")).expect("daemonset");
    let containerfile = std::fs::read_to_string(repo().join("deploy/container/Containerfile")).expect("Containerfile");
    assert!(daemonset.contains("[\"/enforcer\", \"status\"") && containerfile.contains("COPY enforcer /enforcer"));
}
