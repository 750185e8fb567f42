//! Identity across hosts with two agents on one machine: host A and host B are two cgroup
//! subtrees with their own agents, and two network namespaces on a bridge. On host A two
//! workloads share one namespace, so one address; host B's policy admits only one of them.
//! The identity token in each SYN is what tells them apart: the other workload and an
//! unenrolled process on host A are dropped, a forged token and one replayed from an old epoch
//! are rejected, and an agent certified by another CA is not trusted. Runs on the host and in
//! the VM.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use enforcer::cluster::{ca::Certificate, keys};
use enforcer_common::{net::v4_mapped, token};
use enforcer_tests::{
    AgentProcess, Outcome, TestCgroup, TestPins, can_run, enforcer, eventually,
    netns::{TestNet, listen_in, probe_in, spawn_probe_in},
    privileged_unavailable,
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn cluster_table(listen: u16, peers: &[u16], trust: &Path) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!("[cluster]\nlisten = \"127.0.0.1:{listen}\"\npeers = [{}]\ntrust = {:?}\n", peers.join(", "), trust.to_str().expect("utf-8"))
}

fn ca(dir: &Path) -> PathBuf {
    let (code, _, err) = enforcer(&["ca", "init", "--dir", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    dir.join("ca.pub")
}

fn issue(ca_dir: &Path, state: &Path, name: &str) {
    let (code, out, err) = enforcer(&["ca", "issue", "--dir", ca_dir.to_str().expect("utf-8"), "--state", state.to_str().expect("utf-8"), "--name", name]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(name), "{out}");
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn peers(agent: &AgentProcess) -> serde_json::Value {
    let (code, out, err) = agent.cli(&["peers", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("peers json")
}

fn peer(list: &serde_json::Value, port: u16) -> &serde_json::Value {
    list["peers"].as_array().expect("peers").iter().find(|p| p["address"] == format!("127.0.0.1:{port}")).expect("peer listed")
}

/// The token option (hex) `agent` would send for `serial` on this connection in `epoch`, with
/// the pairwise key of agents A and B.
#[expect(clippy::too_many_arguments, reason = "one token's whole input")]
fn token_hex(a_state: &Path, a_id: u32, b_cert: &Certificate, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, serial: u32, epoch: u64) -> String {
    let exchange = keys::ExchangeKey::load_or_create(a_state).expect("A's exchange key");
    let key = exchange.pairwise(a_id, b_cert.agent_id, &b_cert.exchange_public().expect("B's key"), epoch);
    let mac = token::mac(&key, &token::message(&v4_mapped(src), &v4_mapped(dst), sport, dport, serial, epoch));
    let mut opt = vec![token::OPTION_KIND, token::OPTION_LEN];
    opt.extend(token::EXID.to_be_bytes());
    opt.extend(a_id.to_be_bytes());
    opt.extend(serial.to_be_bytes());
    opt.extend(mac.to_le_bytes());
    hex::encode(opt)
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario across three agents, read top to bottom")]
fn a_verified_identity_token_decides_who_connected() {
    if !can_run("a_verified_identity_token_decides_who_connected", privileged_unavailable()) {
        return;
    }
    let dirs = tempfile::tempdir().expect("tmp");
    let (ca_dir, rogue_dir) = (dirs.path().join("ca"), dirs.path().join("rogue-ca"));
    let (a_state, b_state, c_state) = (dirs.path().join("a"), dirs.path().join("b"), dirs.path().join("c"));
    let trust = ca(&ca_dir);
    let rogue_trust = ca(&rogue_dir);
    issue(&ca_dir, &a_state, "host-a");
    issue(&ca_dir, &b_state, "host-b");
    issue(&rogue_dir, &c_state, "host-c");
    let (pa, pb, pc) = (free_port(), free_port(), free_port());

    let net = TestNet::new(2);
    let (host_a, host_b) = (net.host(0), net.host(1));
    let (root_a, root_b, root_c) = (TestCgroup::new(), TestCgroup::new(), TestCgroup::new());
    let (pins_a, pins_b, pins_c) = (TestPins::new(), TestPins::new(), TestPins::new());
    let (good, bad) = (root_a.child("good"), root_a.child("bad"));
    let srv = root_b.child("srv");
    let server = listen_in(host_b, Some(&srv), "tcp", "10.200.0.2:7000");
    // Both of host A's workloads live in host A's one network namespace: one address.
    let _good_proc = spawn_probe_in(host_a, Some(&good), &["run-as", "0", "0", "sleep", "120"]);
    let _bad_proc = spawn_probe_in(host_a, Some(&bad), &["run-as", "0", "0", "sleep", "120"]);

    let a = AgentProcess::start_with_state(
        &root_a,
        &pins_a,
        &format!(
            "default_network = \"allow\"\n[[workload]]\ncgroup = \"good\"\nlabels = {{ app = \"good\" }}\n[[workload]]\ncgroup = \"bad\"\nlabels = {{ app = \"bad\" }}\n{}",
            cluster_table(pa, &[pb], &trust)
        ),
        &a_state,
    );
    let b = AgentProcess::start_with_state(
        &root_b,
        &pins_b,
        &format!("default_network = \"deny\"\n[[workload]]\ncgroup = \"srv\"\nlabels = {{ app = \"srv\" }}\n{}", cluster_table(pb, &[pa, pc], &trust)),
        &b_state,
    );
    let _c = AgentProcess::start_with_state(&root_c, &pins_c, &cluster_table(pc, &[pb], &rogue_trust), &c_state);
    let policy = b.dir().join("srv.yaml");
    std::fs::write(&policy, "kind: NetworkPolicy\nname: srv-in\nsubject: \"app=srv\"\ningress:\n  - from: \"app=good\"\n    ports: [\"tcp/7000\"]\n").expect("policy");
    let (code, _, err) = b.cli(&["policy", "apply", policy.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");

    // Profiles flow both ways (A learns srv's address, B learns good and bad).
    assert!(
        eventually(Duration::from_secs(10), || {
            peer(&peers(&b), pa)["profiles"].as_u64() == Some(2) && peer(&peers(&a), pb)["profiles"].as_u64() == Some(1)
        }),
        "profiles exchanged: {} {}",
        peers(&a),
        peers(&b)
    );
    let target = server.addr.to_string();
    assert!(
        eventually(Duration::from_secs(10), || probe_in(host_a, Some(&good), &["connect", &target]) == Outcome::Ok),
        "good is admitted by its verified token: {}\n{}",
        b.cli(&["flows", "-o", "json"]).1,
        a.log()
    );
    let bad_try = probe_in(host_a, Some(&bad), &["connect", &target]);
    assert!(matches!(bad_try, Outcome::Failed(_)), "bad, same address, is dropped: {bad_try:?}");
    let unenrolled = probe_in(host_a, None, &["connect", &target]);
    assert!(matches!(unenrolled, Outcome::Failed(_)), "an unenrolled process on host A is dropped: {unenrolled:?}");

    let flows = || json_lines(&b.cli(&["flows", "-o", "json"]).1);
    assert!(
        eventually(Duration::from_secs(3), || flows().iter().any(|e| e["verdict"] == "deny" && e["remote_workload"] == "host-a/bad")),
        "{:?}",
        flows()
    );
    let events = flows();
    let denied = events.iter().find(|e| e["verdict"] == "deny" && e["remote_workload"] == "host-a/bad").expect("bad's denial");
    assert_eq!(denied["token"], "verified", "{denied}");
    assert_eq!(denied["remote_tags"]["app"], "bad", "the receiver names the denied sender's tags: {denied}");
    assert!(denied["src"].as_str().is_some_and(|s| s.starts_with("10.200.0.1:")));
    assert!(events.iter().any(|e| e["verdict"] == "deny" && e["token"] == "absent"), "the unenrolled process had no token: {events:?}");

    // Forged (right agent and serial, wrong MAC) and replayed from two epochs ago: rejected.
    let a_cert = Certificate::from_json(&std::fs::read_to_string(a_state.join("agent.cert")).expect("A cert")).expect("A cert");
    let b_cert = Certificate::from_json(&std::fs::read_to_string(b_state.join("agent.cert")).expect("B cert")).expect("B cert");
    let workloads: serde_json::Value = serde_json::from_str(&a.cli(&["workloads", "-o", "json"]).1).expect("workloads");
    let serial: u32 = workloads
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["name"] == "good").and_then(|w| w["identity"].as_u64()))
        .and_then(|n| u32::try_from(n).ok())
        .expect("good's serial");
    let now_epoch = keys::epoch_at(enforcer::profile::now());
    let before = serde_json::from_str::<serde_json::Value>(&b.cli(&["status", "-o", "json"]).1).expect("status")["tokens"]["bad_mac"]
        .as_u64()
        .unwrap_or(0);
    let mut forged = token_hex(&a_state, a_cert.agent_id, &b_cert, [10, 200, 0, 1], [10, 200, 0, 2], 41001, 7000, serial, now_epoch);
    forged.replace_range(forged.len() - 2.., "00");
    let replayed = token_hex(&a_state, a_cert.agent_id, &b_cert, [10, 200, 0, 1], [10, 200, 0, 2], 41002, 7000, serial, now_epoch - 2);
    for (sport, hex) in [("41001", &forged), ("41002", &replayed)] {
        assert_eq!(probe_in(host_a, None, &["raw-syn", "10.200.0.1", &target, sport, hex]), Outcome::Ok, "sent");
    }
    assert!(
        eventually(Duration::from_secs(3), || {
            let status: serde_json::Value = serde_json::from_str(&b.cli(&["status", "-o", "json"]).1).expect("status");
            status["tokens"]["bad_mac"].as_u64().unwrap_or(0) >= before + 2
        }),
        "forged and replayed tokens counted as bad MACs: {}",
        b.cli(&["status", "-o", "json"]).1
    );
    let forged_events: Vec<serde_json::Value> = flows().into_iter().filter(|e| e["token"] == "bad_mac").collect();
    assert!(forged_events.iter().all(|e| e["verdict"] == "deny"), "{forged_events:?}");
    assert!(forged_events.len() >= 2, "{forged_events:?}");

    // A change on host A reaches host B within a second: bad becomes app=good by an operator
    // label, B sees the new tags, and admits it.
    assert_eq!(a.cli(&["label", "bad", "app=good"]).0, 0);
    let seen = enforcer_tests::wait_for(Duration::from_secs(10), || {
        peer(&peers(&b), pa)["workloads"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["name"] == "bad" && w["tags"]["app"] == "good"))
    });
    eprintln!("label on A seen by B after {seen:?}");
    assert!(seen.is_some_and(|t| t < Duration::from_millis(1500)), "a tag change reaches the peer within the exchange period: {seen:?}");
    assert!(
        eventually(Duration::from_secs(5), || probe_in(host_a, Some(&bad), &["connect", &target]) == Outcome::Ok),
        "relabelled bad is admitted"
    );

    // The agent certified by another CA is listed, and not trusted.
    let from_b = peers(&b);
    let c = peer(&from_b, pc);
    assert!(c["error"].as_str().is_some_and(|e| e.contains("not signed by the trusted CA")), "{from_b}");
    assert_eq!(c["profiles"], 0);
    assert_eq!(peer(&from_b, pa)["name"], "host-a");
    let status: serde_json::Value = serde_json::from_str(&b.cli(&["status", "-o", "json"]).1).expect("status");
    assert!(status["tokens"]["verified"].as_u64().unwrap_or(0) >= 2, "{status}");
    let a_status: serde_json::Value = serde_json::from_str(&a.cli(&["status", "-o", "json"]).1).expect("status");
    assert!(a_status["tokens"]["stamped"].as_u64().unwrap_or(0) >= 2, "{a_status}");
}
