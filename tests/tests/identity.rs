//! Workload identity end to end, through the real `enforcer` binary: enrolment speed, system
//! tags from /proc, config labels, signed profiles, and refused labels and clients.
//! Runs on the host and in the VM.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use enforcer_common::Workload;
use enforcer_tests::{
    wait_for,
    AgentProcess, TestCgroup, TestPins, can_run, cgroup_id, enforcer, privileged_unavailable, spawn_probe,
};

const SVC: &str = "[[workload]]\ncgroup = \"svc\"\nlabels = { app = \"svc\", env = \"test\" }\n";

fn kernel_workloads(pins: &TestPins) -> aya::maps::HashMap<aya::maps::MapData, u64, Workload> {
    let data = aya::maps::MapData::from_pin(enforcer_tests::pinned_map(pins, "ENF_WORKLOADS")).expect("pinned workload map");
    let map = aya::maps::Map::from_map_data(data).expect("map");
    aya::maps::HashMap::try_from(map).expect("hash map")
}

fn which(prog: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| PathBuf::from(d).join(prog))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{prog} not on PATH"))
}

fn sha256_hex(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).expect("read binary");
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))
}

fn workload_json(agent: &AgentProcess, name: &str) -> Option<serde_json::Value> {
    let (code, out, _) = agent.cli(&["workloads", "-o", "json"]);
    if code != 0 {
        return None;
    }
    let all: serde_json::Value = serde_json::from_str(&out).ok()?;
    all.as_array()?.iter().find(|w| w["name"] == name).cloned()
}

#[test]
fn new_cgroup_is_enrolled_in_the_kernel_within_100ms_and_removed_when_gone() {
    if !can_run("enrolment_latency", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let agent = AgentProcess::start(&root, &pins, "");
    let map = kernel_workloads(&pins);

    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let dir = root.child(&format!("w{i}"));
        let id = cgroup_id(&dir);
        let took = wait_for(Duration::from_secs(2), || map.get(&id, 0).is_ok())
            .unwrap_or_else(|| panic!("w{i} not enrolled within 2 s; agent log:\n{}", agent.log()));
        worst = worst.max(took);
        std::fs::remove_dir(&dir).expect("rmdir");
        wait_for(Duration::from_secs(2), || map.get(&id, 0).is_err()).expect("removed cgroup leaves the kernel map");
    }
    eprintln!("slowest enrolment: {worst:?}");
    assert!(worst < Duration::from_millis(100), "enrolment took {worst:?}");
}

#[test]
fn workload_tags_profiles_and_labels() {
    if !can_run("workload_tags_profiles_and_labels", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let agent = AgentProcess::start(&root, &pins, SVC);
    let svc = root.child("svc");
    let _sleep = spawn_probe(&svc, &["run-as", "65534", "65534", "sleep", "60"]);

    let started = Instant::now();
    let mut found = None;
    wait_for(Duration::from_secs(1), || {
        found = workload_json(&agent, "svc").filter(|w| w["tags"]["@sys:uid"] == "65534");
        found.is_some()
    })
    .unwrap_or_else(|| panic!("svc not listed with @sys:uid=65534 within 1 s: {found:?}\n{}", agent.log()));
    eprintln!("tags visible after {:?}", started.elapsed());
    let w = found.expect("found");
    let sleep_binary = std::fs::canonicalize(which("sleep")).expect("canonical sleep");
    assert_eq!(w["tags"]["@sys:exe-sha256"], sha256_hex(&sleep_binary), "hash of the binary that runs");
    assert_eq!(w["tags"]["@sys:gid"], "65534");
    assert_eq!(w["tags"]["app"], "svc", "config labels");
    assert_eq!(w["tags"]["env"], "test");
    assert!(w["tags"]["@host:kernel"].as_str().is_some_and(|k| !k.is_empty()));

    // The signed profile verifies; the same file with one tag changed does not.
    let (code, profile, err) = agent.cli(&["profile", "svc", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let file = agent.dir().join("svc.json");
    std::fs::write(&file, &profile).expect("write profile");
    let path = file.to_str().expect("utf-8");
    let (code, out, err) = agent.cli(&["profile", "verify", path]);
    assert_eq!(code, 0, "verify: {out}{err}");
    let pubkey = agent.state_dir.join("host.pub");
    let (code, _, err) = enforcer(&["profile", "verify", path, "--key", pubkey.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "offline verify: {err}");

    let mut doc: serde_json::Value = serde_json::from_str(&profile).expect("profile json");
    doc["profile"]["tags"]["@sys:uid"] = "0".into();
    std::fs::write(&file, doc.to_string()).expect("write tampered");
    let (code, _, err) = agent.cli(&["profile", "verify", path]);
    assert_ne!(code, 0, "a changed tag must not verify");
    assert!(err.contains("tags"), "{err}");

    // A system tag cannot be claimed by an operator.
    let (code, _, err) = agent.cli(&["label", "svc", "@sys:uid=0"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid argument") && err.contains("@sys:uid"), "{err}");
    let (code, _, err) = agent.cli(&["label", "svc", "tier=web"]);
    assert_eq!(code, 0, "{err}");
    let w = workload_json(&agent, "svc").expect("svc");
    assert_eq!(w["tags"]["tier"], "web");
    assert_eq!(w["tags"]["@sys:uid"], "65534", "unchanged");
    let (code, _, err) = agent.cli(&["label", "nope", "a=b"]);
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn labels_survive_an_agent_restart() {
    if !can_run("labels_survive_restart", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let _svc = root.child("svc");
    let state_dir = tempfile::tempdir().expect("state dir");
    let state = state_dir.path().join("state");
    let agent = AgentProcess::start_with_state(&root, &pins, SVC, &state);
    assert_eq!(agent.cli(&["label", "svc", "tier=web"]).0, 0);
    let key_before = std::fs::read(state.join("host.pub")).expect("public key");
    drop(agent);
    let agent = AgentProcess::start_with_state(&root, &pins, SVC, &state);
    let w = workload_json(&agent, "svc").expect("svc");
    assert_eq!(w["tags"]["tier"], "web");
    assert_eq!(std::fs::read(state.join("host.pub")).expect("public key"), key_before, "host key is stable");
}

#[test]
fn non_root_clients_are_refused_even_with_open_permissions() {
    if !can_run("non_root_clients_refused", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let agent = AgentProcess::start(&root, &pins, "");
    let mode = std::fs::metadata(&agent.socket).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    // Open the directory and socket up, so that only the peer-credential check stands.
    std::fs::set_permissions(agent.socket.parent().expect("dir"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = std::process::Command::new(enforcer_tests::probe_bin())
        .args(["run-as", "65534", "65534"])
        .arg(enforcer_tests::enforcer_bin())
        .args(["status", "--socket", agent.socket.to_str().expect("utf-8")])
        .output()
        .expect("run status as nobody");
    assert!(!out.status.success(), "a non-root client got an answer");
    assert!(agent.cli(&["status"]).0 == 0, "root still gets one");
    assert!(agent.log().contains("refused a non-root API client"), "{}", agent.log());
}
