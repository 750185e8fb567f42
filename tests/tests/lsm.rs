//! File enforcement through `lsm/file_open`. BPF-LSM programs cannot load on the development
//! host's kernel, so this runs in the VM tier (Debian 6.12 kernel with `bpf` in its LSM list).

use std::io::Write as _;

use enforcer_common::{Verdict, Workload};
use enforcer_tests::{
    Outcome, TestCgroup, TestPins, can_run, cgroup_id, datapath, drain, in_vm, privileged_unavailable, probe,
};

const APP: u32 = 400;

fn workload(file: Verdict) -> Workload {
    Workload { identity: APP, egress_default: Verdict::Allow as u8, ingress_default: Verdict::Allow as u8, file_default: file as u8, flags: 0 }
}

fn lsm_unavailable() -> Option<String> {
    privileged_unavailable().or_else(|| (!in_vm()).then(|| "BPF-LSM runs in the VM tier (`cargo xtask test`)".to_owned()))
}

#[test]
fn file_open_denied_by_verdict_map_allowed_outside_and_after_change() {
    if !can_run("file_open_denied", lsm_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let app = root.child("app");
    let mut dp = datapath(&root, &pins);
    let point = dp.points().iter().find(|p| p.name == "file_open").expect("file_open point").clone();
    assert!(point.attached(), "lsm/file_open attached: {:?}", point.error);
    let mut events = dp.take_events().expect("ring buffer");

    let dir = std::env::temp_dir().join(format!("enforcer-lsm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let file = dir.join("secret");
    std::fs::File::create(&file).and_then(|mut f| f.write_all(b"x")).expect("file");
    let path = file.to_str().expect("utf-8");

    dp.set_workload(cgroup_id(&app), workload(Verdict::Deny)).expect("enrol");
    assert_eq!(probe(Some(&app), &["open", path]), Outcome::Denied, "inside the workload, denied");
    assert_eq!(probe(None, &["open", path]), Outcome::Ok, "outside the managed root, untouched");
    let denied = drain(&mut events)
        .iter()
        .filter(|r| r.header().verdict == Verdict::Deny as u8 && r.header().identity == APP)
        .count();
    assert!(denied >= 1, "deny events reported");
    assert!(dp.counters().expect("counters").file.deny >= 1);

    dp.set_workload(cgroup_id(&app), workload(Verdict::Allow)).expect("update");
    assert_eq!(probe(Some(&app), &["open", path]), Outcome::Ok, "allowed after the verdict changed");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// `FilePolicy` through the real binary: allowed reads, a read outside the rules, a denied
/// file inside an allowed subtree, a write to a read-only subtree and an exec outside the exec
/// rules fail with a permission error; an unselected workload and a process outside the
/// managed root are untouched; audit mode lets everything through and reports it.
#[test]
fn file_policy_through_the_agent() {
    if !can_run("file_policy_through_the_agent", lsm_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let agent = enforcer_tests::AgentProcess::start(
        &root,
        &pins,
        "default_file = \"allow\"\n[[workload]]\ncgroup = \"app\"\nlabels = { app = \"web\" }\n[[workload]]\ncgroup = \"other\"\nlabels = { app = \"other\" }\n",
    );
    let (app, other) = (root.child("app"), root.child("other"));
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().to_str().expect("utf-8").to_owned();
    for sub in ["ro", "data", "outside", "bin", "elsewhere"] {
        std::fs::create_dir_all(tmp.path().join(sub)).expect("mkdir");
    }
    for f in ["ro/file", "ro/secret", "data/file", "outside/file"] {
        std::fs::write(tmp.path().join(f), b"x").expect("write");
    }
    let tool = std::fs::canonicalize(enforcer_tests::probe_bin()).expect("probe path");
    for place in ["bin/tool", "elsewhere/tool"] {
        std::fs::copy(&tool, tmp.path().join(place)).expect("copy tool");
    }
    let policy = |mode: &str| {
        format!(
            "kind: FilePolicy\nname: app-files\nmode: {mode}\nsubject: \"app=web\"\nrules:\n  - paths: [\"{d}/ro/\"]\n    access: [read]\n  - paths: [\"{d}/data/\"]\n    access: [read, write]\n  - paths: [\"{d}/ro/secret\"]\n    action: deny\n  - paths: [\"{d}/bin/\"]\n    access: [read, exec]\n"
        )
    };
    let file = tmp.path().join("policy.yaml");
    std::fs::write(&file, policy("enforce")).expect("policy");
    let (code, _, err) = agent.cli(&["policy", "apply", file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");

    let path = |p: &str| format!("{d}/{p}");
    let in_app = |args: &[&str]| probe(Some(&app), args);
    assert_eq!(in_app(&["open", &path("ro/file")]), Outcome::Ok, "allowed read");
    assert_eq!(in_app(&["open", &path("outside/file")]), Outcome::Denied, "read outside the rules");
    assert_eq!(in_app(&["open", &path("ro/secret")]), Outcome::Denied, "denied file inside an allowed subtree");
    assert_eq!(in_app(&["open", &path("ro/file"), "--write"]), Outcome::Denied, "write to a read-only subtree");
    assert_eq!(in_app(&["open", &path("data/file"), "--write"]), Outcome::Ok, "write where allowed");
    let run = |p: &str| in_app(&["run-as", "0", "0", &path(p), "open", &path("ro/file")]);
    assert_eq!(run("bin/tool"), Outcome::Ok, "exec inside the exec rules");
    assert_eq!(run("elsewhere/tool"), Outcome::Denied, "exec outside the exec rules");
    assert_eq!(probe(Some(&other), &["open", &path("outside/file")]), Outcome::Ok, "unselected workload untouched");
    assert_eq!(probe(None, &["open", &path("ro/secret")]), Outcome::Ok, "outside cgroup_root untouched");

    let denied: Vec<serde_json::Value> = agent
        .cli(&["flows", "-o", "json"])
        .1
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["kind"] == "file" && e["verdict"] == "deny")
        .collect();
    let secret = denied.iter().find(|e| e["path"] == path("ro/secret")).unwrap_or_else(|| panic!("no deny event for the secret: {denied:?}"));
    assert_eq!(secret["workload"], "app");
    assert!(secret["access"].as_array().is_some_and(|a| a.iter().any(|x| x == "read")), "{secret}");

    // Audit: the same rules let everything through and report what they would deny.
    std::fs::write(&file, policy("audit")).expect("policy");
    assert_eq!(agent.cli(&["policy", "apply", file.to_str().expect("utf-8")]).0, 0);
    assert_eq!(in_app(&["open", &path("ro/secret")]), Outcome::Ok, "audit lets it through");
    assert!(enforcer_tests::eventually(std::time::Duration::from_secs(3), || {
        agent.cli(&["flows", "-o", "json"]).1.lines().any(|l| l.contains("\"audit\"") && l.contains("ro/secret"))
    }));
}
