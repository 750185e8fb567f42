//! No enforcement gap across agent restarts, and the fail mode while no agent is alive: the
//! agent is killed with SIGKILL (no clean-up of any kind) and started again on the same pins
//! and state. Runs on the host and in the VM.

use std::{
    io::Read as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use enforcer_tests::{AgentProcess, Outcome, TcpServer, TestCgroup, TestPins, can_run, eventually, privileged_unavailable, probe};

const WORKLOADS: &str = "[[workload]]\ncgroup = \"allowed\"\nlabels = { app = \"a\" }\n[[workload]]\ncgroup = \"denied\"\nlabels = { app = \"d\" }\n";

fn allow_policy(agent: &AgentProcess, port: u16) {
    let file = agent.dir().join("allow.yaml");
    std::fs::write(
        &file,
        format!("kind: NetworkPolicy\nname: allow-a\nsubject: \"app=a\"\negress:\n  - toCIDR: [\"127.0.0.1/32\"]\n    ports: [\"tcp/{port}\"]\n"),
    )
    .expect("policy");
    let (code, _, err) = agent.cli(&["policy", "apply", file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
}

/// Workload name → identity, from `enforcer workloads -o json`.
fn identities(agent: &AgentProcess) -> std::collections::BTreeMap<String, u64> {
    let (code, out, err) = agent.cli(&["workloads", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("workloads json");
    list.as_array()
        .expect("a list")
        .iter()
        .map(|w| (w["name"].as_str().expect("name").to_owned(), w["identity"].as_u64().expect("identity")))
        .collect()
}

/// A probe connecting every 50 ms from `cgroup` until stopped.
struct Prober(Child);

impl Prober {
    fn start(cgroup: &std::path::Path, target: &str) -> Self {
        let child = Command::new(enforcer_tests::probe_bin())
            .arg("--cgroup")
            .arg(cgroup)
            .args(["connect-every", target, "50"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("prober");
        Self(child)
    }

    /// Stops it and returns one outcome per attempt.
    fn stop(mut self) -> Vec<String> {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut out = String::new();
        self.0.stdout.take().expect("stdout").read_to_string(&mut out).expect("prober output");
        out.lines().map(str::to_owned).collect()
    }
}

/// An agent on `root` whose workload `allowed` may connect to `server` and `denied` may not,
/// with that in force.
fn enforcing(root: &TestCgroup, pins: &TestPins, server: &TcpServer) -> (AgentProcess, PathBuf, PathBuf) {
    let agent = AgentProcess::start(root, pins, &format!("default_network = \"deny\"\n{WORKLOADS}"));
    allow_policy(&agent, server.addr().port());
    let (allowed, denied) = (root.child("allowed"), root.child("denied"));
    let target = server.addr().to_string();
    assert!(eventually(Duration::from_secs(3), || probe(Some(&allowed), &["connect", &target]) == Outcome::Ok));
    assert_eq!(probe(Some(&denied), &["connect", &target]), Outcome::Denied);
    (agent, allowed, denied)
}

/// Every attempt of the allowed prober succeeded and every one of the denied prober was
/// denied, and there were at least `min` of each.
fn assert_no_wrong_verdict(allowed: &[String], denied: &[String], min: usize) {
    let wrong_a: Vec<&String> = allowed.iter().filter(|l| *l != "ok").collect();
    let wrong_d: Vec<&String> = denied.iter().filter(|l| *l != "denied").collect();
    assert!(allowed.len() >= min && denied.len() >= min, "attempts before, during and after: {} and {}", allowed.len(), denied.len());
    assert!(wrong_a.is_empty(), "allowed attempts that failed: {wrong_a:?} of {}", allowed.len());
    assert!(wrong_d.is_empty(), "denied attempts that were not denied: {wrong_d:?} of {}", denied.len());
}

#[test]
fn no_gap_across_a_sigkill_and_restart() {
    if !can_run("no_gap_across_a_sigkill_and_restart", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let server = TcpServer::start("127.0.0.1:0");
    let target = server.addr().to_string();
    let (mut agent, allowed, denied) = enforcing(&root, &pins, &server);

    let before = identities(&agent);
    let (a, d) = (Prober::start(&allowed, &target), Prober::start(&denied, &target));
    std::thread::sleep(Duration::from_millis(500));
    agent.kill();
    // A workload appears while no agent runs; it sorts first, so a restarted agent numbering
    // workloads afresh would hand it the allowed workload's identity (and move the others).
    let newcomer = root.child("a0");
    std::thread::sleep(Duration::from_millis(500));
    agent.restart();
    std::thread::sleep(Duration::from_secs(1));
    let (a, d) = (a.stop(), d.stop());

    assert_no_wrong_verdict(&a, &d, 20);
    assert_eq!(probe(Some(&newcomer), &["connect", &target]), Outcome::Denied, "the newcomer gets nobody's rules");
    let after = identities(&agent);
    for name in ["allowed", "denied"] {
        assert_eq!(before[name], after[name], "{name} keeps its identity across the restart: {before:?} {after:?}");
    }
    assert!(!before.values().any(|id| *id == after["a0"]), "the newcomer gets a new number: {after:?}");
    assert_eq!(agent.cli(&["status"]).0, 0, "the restarted agent reports no problem: {}", agent.cli(&["status"]).2);
}

/// A new agent whose maps have another layout (here: another workload map capacity, as a new
/// version with changed maps would) starts over an old one's pins: it fills fresh maps while the
/// old programs keep enforcing, swaps its programs in, and removes the old maps.
#[test]
fn upgrade_to_a_new_map_layout_without_a_gap() {
    if !can_run("upgrade_to_a_new_map_layout_without_a_gap", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let server = TcpServer::start("127.0.0.1:0");
    let target = server.addr().to_string();
    let (mut agent, allowed, denied) = enforcing(&root, &pins, &server);
    let layouts = || -> Vec<String> {
        std::fs::read_dir(pins.path().join("maps"))
            .expect("maps dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let old = layouts();
    assert_eq!(old.len(), 1, "{old:?}");

    let (a, d) = (Prober::start(&allowed, &target), Prober::start(&denied, &target));
    std::thread::sleep(Duration::from_millis(300));
    agent.kill();
    let mut config = std::fs::read_to_string(&agent.config).expect("config");
    config.insert_str(0, "max_workloads = 4096\n");
    std::fs::write(&agent.config, config).expect("config");
    agent.restart();
    std::thread::sleep(Duration::from_secs(1));
    let (a, d) = (a.stop(), d.stop());
    assert_no_wrong_verdict(&a, &d, 10);
    let new = layouts();
    assert_eq!(new.len(), 1, "only the new layout's maps are left: {new:?}");
    assert_ne!(new, old, "the maps were replaced");
}

#[test]
fn on_agent_down_enforce_keeps_enforcing() {
    if !can_run("on_agent_down_enforce_keeps_enforcing", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let server = TcpServer::start("127.0.0.1:0");
    let target = server.addr().to_string();
    let mut agent = AgentProcess::start(&root, &pins, &format!("on_agent_down = \"enforce\"\n{WORKLOADS}"));
    let denied = root.child("denied");
    assert_eq!(probe(Some(&denied), &["connect", &target]), Outcome::Denied);
    agent.kill();
    // Well past the heartbeat's expiry (1.5 s).
    let d = Prober::start(&denied, &target);
    std::thread::sleep(Duration::from_secs(3));
    let d = d.stop();
    assert!(!d.is_empty() && d.iter().all(|l| l == "denied"), "still denied with no agent: {d:?}");
}

#[test]
fn on_agent_down_open_allows_until_an_agent_is_back() {
    if !can_run("on_agent_down_open_allows_until_an_agent_is_back", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let server = TcpServer::start("127.0.0.1:0");
    let target = server.addr().to_string();
    let mut agent = AgentProcess::start(&root, &pins, &format!("on_agent_down = \"open\"\n{WORKLOADS}"));
    let denied = root.child("denied");
    // Alive (heartbeat fresh): enforced, also for longer than the expiry.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(probe(Some(&denied), &["connect", &target]), Outcome::Denied, "enforced while the agent lives");
    agent.kill();
    let opened = enforcer_tests::wait_for(Duration::from_secs(5), || probe(Some(&denied), &["connect", &target]) == Outcome::Ok);
    assert!(opened.is_some(), "with no agent, on_agent_down = open allows");
    agent.restart();
    assert_eq!(probe(Some(&denied), &["connect", &target]), Outcome::Denied, "enforced again once an agent is back");
}
