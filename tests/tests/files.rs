//! `FilePolicy` through the real binary, the same scenario on both tiers: BPF-LSM in the VM
//! (`lsm/file_open`), the fanotify fallback on the development host (where BPF-LSM programs
//! cannot load). For a workload under a `FilePolicy`, an allowed read works; a read outside
//! the rules, a denied file inside an allowed subtree, a write to a read-only subtree and an
//! exec outside the exec rules fail with a permission error; audit mode lets them through and
//! reports them; an unselected workload and a process outside the managed root are untouched.

use std::path::Path;

use enforcer_tests::{AgentProcess, Outcome, TestCgroup, TestPins, can_run, in_vm, privileged_unavailable, probe};

const CONFIG: &str = "default_file = \"allow\"\n[[workload]]\ncgroup = \"app\"\nlabels = { app = \"web\" }\n[[workload]]\ncgroup = \"other\"\nlabels = { app = \"other\" }\n";

/// The scenario's files below `d`, and the policy over them in `mode`. The system library
/// directories are readable and executable: the probe copied to `bin/tool` is dynamically
/// linked on the host, and its loader and libraries are opened for exec and read.
fn policy(d: &str, mode: &str) -> String {
    format!(
        "kind: FilePolicy\nname: app-files\nmode: {mode}\nsubject: \"app=web\"\nrules:\n  - paths: [\"{d}/ro/\"]\n    access: [read]\n  - paths: [\"{d}/data/\"]\n    access: [read, write]\n  - paths: [\"{d}/ro/secret\"]\n    action: deny\n  - paths: [\"{d}/elsewhere/\"]\n    access: [read]\n  - paths: [\"{d}/bin/\", \"/usr/lib/\", \"/lib/\", \"/lib64/\", \"/etc/ld.so.cache\"]\n    access: [read, exec]\n"
    )
}

fn prepare(tmp: &Path) {
    for sub in ["ro", "data", "outside", "bin", "elsewhere"] {
        std::fs::create_dir_all(tmp.join(sub)).expect("mkdir");
    }
    for f in ["ro/file", "ro/secret", "data/file", "outside/file"] {
        std::fs::write(tmp.join(f), b"x").expect("write");
    }
    let tool = std::fs::canonicalize(enforcer_tests::probe_bin()).expect("probe path");
    for place in ["bin/tool", "elsewhere/tool"] {
        std::fs::copy(&tool, tmp.join(place)).expect("copy tool");
    }
}

fn file_events(agent: &AgentProcess, verdict: &str) -> Vec<serde_json::Value> {
    agent
        .cli(&["flows", "-o", "json"])
        .1
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["kind"] == "file" && e["verdict"] == verdict)
        .collect()
}

#[test]
fn file_policy_through_the_agent() {
    if !can_run("file_policy_through_the_agent", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let agent = AgentProcess::start(&root, &pins, CONFIG);
    let (app, other) = (root.child("app"), root.child("other"));
    let tmp = tempfile::tempdir().expect("tmp");
    prepare(tmp.path());
    let d = tmp.path().to_str().expect("utf-8").to_owned();
    let file = tmp.path().join("policy.yaml");
    std::fs::write(&file, policy(&d, "enforce")).expect("policy");
    let (code, _, err) = agent.cli(&["policy", "apply", file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = agent.cli(&["status", "-o", "json"]);
    assert_eq!(code, 0, "file policies are enforced, status has no problem: {err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status json");
    let mechanism = status["file_enforcement"].as_str().unwrap_or_default();
    eprintln!("file enforcement: {mechanism}");
    if in_vm() {
        assert_eq!(mechanism, "bpf-lsm", "{status}");
    } else {
        assert!(mechanism.starts_with("fanotify (") && !mechanism.contains("idle"), "{status}");
    }

    let path = |p: &str| format!("{d}/{p}");
    let in_app = |args: &[&str]| probe(Some(&app), args);
    let run = |p: &str| in_app(&["run-as", "0", "0", &path(p), "open", &path("ro/file")]);
    assert_eq!(in_app(&["open", &path("ro/file")]), Outcome::Ok, "allowed read");
    assert_eq!(in_app(&["open", &path("outside/file")]), Outcome::Denied, "read outside the rules");
    assert_eq!(in_app(&["open", &path("ro/secret")]), Outcome::Denied, "denied file inside an allowed subtree");
    assert_eq!(in_app(&["open", &path("ro/file"), "--write"]), Outcome::Denied, "write to a read-only subtree");
    assert_eq!(in_app(&["open", &path("data/file"), "--write"]), Outcome::Ok, "write where allowed");
    assert_eq!(run("bin/tool"), Outcome::Ok, "exec inside the exec rules");
    assert_eq!(run("elsewhere/tool"), Outcome::Denied, "exec outside the exec rules");
    assert_eq!(probe(Some(&other), &["open", &path("outside/file")]), Outcome::Ok, "unselected workload untouched");
    assert_eq!(probe(None, &["open", &path("ro/secret")]), Outcome::Ok, "outside cgroup_root untouched");

    let denied = file_events(&agent, "deny");
    let event = |p: &str, access: &str| {
        denied
            .iter()
            .find(|e| e["path"] == path(p) && e["access"].as_array().is_some_and(|a| a.iter().any(|x| x == access)))
            .unwrap_or_else(|| panic!("no {access} denial of {p}: {denied:?}"))
    };
    assert_eq!(event("ro/secret", "read")["workload"], "app");
    event("outside/file", "read");
    event("ro/file", "write");
    event("elsewhere/tool", "exec");

    // Audit: the same rules let everything through and report what they would deny.
    std::fs::write(&file, policy(&d, "audit")).expect("policy");
    assert_eq!(agent.cli(&["policy", "apply", file.to_str().expect("utf-8")]).0, 0);
    assert_eq!(in_app(&["open", &path("outside/file")]), Outcome::Ok, "audit: read outside the rules");
    assert_eq!(in_app(&["open", &path("ro/secret")]), Outcome::Ok, "audit: denied file");
    assert_eq!(in_app(&["open", &path("ro/file"), "--write"]), Outcome::Ok, "audit: write to read-only");
    assert_eq!(run("elsewhere/tool"), Outcome::Ok, "audit: exec outside the rules");
    assert!(
        enforcer_tests::eventually(std::time::Duration::from_secs(3), || {
            let audited = file_events(&agent, "audit");
            ["outside/file", "ro/secret", "ro/file", "elsewhere/tool"].iter().all(|p| audited.iter().any(|e| e["path"] == path(p)))
        }),
        "every audited access reported: {:?}",
        file_events(&agent, "audit")
    );
}

/// With the fallback turned off and no BPF LSM, file policies are enforced by nothing: status
/// says so and fails.
#[test]
fn status_fails_while_file_policies_cannot_be_enforced() {
    if !can_run("status_fails_while_file_policies_cannot_be_enforced", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let agent = AgentProcess::start(&root, &pins, &format!("file_fallback = false\n{CONFIG}"));
    assert_eq!(agent.cli(&["status"]).0, 0, "no problem yet: {}", agent.cli(&["status"]).2);
    let file = agent.dir().join("files.yaml");
    std::fs::write(&file, "kind: FilePolicy\nname: web-files\nsubject: \"app=web\"\nrules:\n  - paths: [\"/usr/\"]\n    access: [read, exec]\n")
        .expect("write");
    assert_eq!(agent.cli(&["policy", "apply", file.to_str().expect("utf-8")]).0, 0);
    let (code, out, err) = agent.cli(&["status", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_str(&out).expect("status json");
    if in_vm() {
        assert_eq!(status["file_enforcement"], "bpf-lsm", "{status}");
        assert_eq!(code, 0, "enforced files are no problem: {err}");
    } else {
        assert_eq!(code, 1, "file policies that nothing enforces must fail status");
        assert!(err.contains("web-files") && err.contains("not enforced"), "{err}");
        let mechanism = status["file_enforcement"].as_str().unwrap_or_default();
        assert!(mechanism.starts_with("unavailable") && mechanism.contains("file_fallback = false"), "{status}");
    }
}
