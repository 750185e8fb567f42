//! The daemon end to end: `Agent::start` on a fresh cgroup subtree enrols what is below it,
//! applies the configured posture, and leaves enforcement pinned after it stops until
//! uninstalled. Runs on the host and in the VM.

use std::collections::BTreeMap;

use enforcer::{
    agent::{self, Agent},
    config::{Config, Posture, WorkloadLabels},
};
use enforcer_tests::{Outcome, TcpServer, TestCgroup, TestPins, can_run, privileged_unavailable, probe};

fn config(root: &TestCgroup, pins: &TestPins, state: &tempfile::TempDir) -> Config {
    Config {
        cgroup_root: root.path().to_owned(),
        bpffs_dir: pins.path().to_owned(),
        state_dir: state.path().to_owned(),
        default_network: Posture::Deny,
        workloads: vec![WorkloadLabels {
            cgroup: "svc".into(),
            labels: BTreeMap::from([("app".to_owned(), "svc".to_owned())]),
        }],
        ..Config::default()
    }
}

#[test]
fn agent_enrols_enforces_and_stays_pinned_until_uninstalled() {
    if !can_run("agent_end_to_end", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let server = TcpServer::start("127.0.0.1:0");
    let target = server.addr().to_string();

    let state = tempfile::tempdir().expect("state dir");
    let agent = Agent::start(config(&root, &pins, &state)).expect("agent starts");
    let svc = root.child("svc");
    let nested = root.child("svc/job");
    let changes = agent.reconcile().expect("rescan");
    assert_eq!(changes.added.len(), 2);
    let info = agent.workload("svc/job").expect("nested workload enrolled");
    assert_eq!(info.labels["app"], "svc", "nested cgroups inherit labels");

    assert_eq!(probe(Some(&svc), &["connect", &target]), Outcome::Denied, "default_network = deny");
    assert_eq!(probe(Some(&nested), &["connect", &target]), Outcome::Denied);
    assert_eq!(probe(None, &["connect", &target]), Outcome::Ok, "outside cgroup_root untouched");

    // The agent goes away; the pinned datapath keeps enforcing.
    drop(agent);
    assert_eq!(probe(Some(&svc), &["connect", &target]), Outcome::Denied, "still enforced with no agent");

    assert!(agent::uninstall(pins.path()).expect("uninstall"), "something was pinned");
    assert_eq!(probe(Some(&svc), &["connect", &target]), Outcome::Ok, "uninstall ends enforcement");
}

#[test]
fn restarted_agent_reuses_pins_without_a_gap() {
    if !can_run("restarted_agent", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let svc = root.child("svc");
    let server = TcpServer::start("127.0.0.1:0");
    let target = server.addr().to_string();

    let state = tempfile::tempdir().expect("state dir");
    let first = Agent::start(config(&root, &pins, &state)).expect("first agent");
    drop(first);
    let second = Agent::start(config(&root, &pins, &state)).expect("second agent over the same pins");
    assert_eq!(probe(Some(&svc), &["connect", &target]), Outcome::Denied);
    let links: Vec<_> = std::fs::read_dir(pins.path().join("links"))
        .expect("links dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    assert!(links.iter().all(|l| !l.ends_with("_new")), "no half-replaced pins: {links:?}");
    drop(second);
}

#[test]
fn agent_refuses_a_root_outside_cgroup_v2() {
    if !can_run("agent_refuses_bad_root", privileged_unavailable()) {
        return;
    }
    let pins = TestPins::new();
    let state = tempfile::tempdir().expect("state dir");
    let cfg = Config {
        state_dir: state.path().to_owned(),
        cgroup_root: "/tmp/not-a-cgroup".into(),
        bpffs_dir: pins.path().to_owned(),
        ..Config::default()
    };
    let err = Agent::start(cfg).err().expect("refused");
    assert!(err.to_string().contains("/tmp/not-a-cgroup"), "{err}");
}
