//! Tag-based network policy across simulated hosts (network namespaces on one switch), through
//! the real binary: workloads select each other by tags because each has its own address;
//! allowed, denied by a deny rule, denied by allow-list mode, allowed by CIDR, ingress dropped
//! from an unenrolled source, and UDP replies passing both ways. Runs on the host and in the VM.

use std::time::Duration;

use enforcer_tests::{
    eventually,
    AgentProcess, Outcome, TestCgroup, TestPins, can_run,
    netns::{TestNet, listen_in, probe_in, spawn_probe_in},
    privileged_unavailable,
};

const CONFIG: &str = "default_network = \"deny\"\n\
[[workload]]\ncgroup = \"web\"\nlabels = { app = \"web\" }\n\
[[workload]]\ncgroup = \"db\"\nlabels = { app = \"db\" }\n";

const POLICIES: &str = r#"kind: NetworkPolicy
name: web-egress
subject: "app=web"
egress:
  - to: "app=db"
    ports: ["tcp/5432", "tcp/22", "udp/5353"]
  - to: "app=db"
    ports: ["tcp/22"]
    action: deny
  - toCIDR: ["10.200.0.3/32"]
    ports: ["tcp/8080"]
---
kind: NetworkPolicy
name: db-ingress
subject: "app=db"
ingress:
  - from: "app=web"
    ports: ["tcp/5432", "tcp/22", "udp/5353"]
"#;

#[test]
fn workloads_select_each_other_by_tags_across_hosts() {
    if !can_run("tag_policy_across_hosts", privileged_unavailable()) {
        return;
    }
    let net = TestNet::new(3);
    let (host_web, host_db, host_other) = (net.host(0), net.host(1), net.host(2));
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let agent = AgentProcess::start(&root, &pins, CONFIG);
    let (web, db) = (root.child("web"), root.child("db"));

    // The db workload serves on its host; web has a process on its host, so each workload's
    // address comes from its own network namespace.
    let db_tcp = listen_in(host_db, Some(&db), "tcp", "10.200.0.2:5432");
    let db_ssh = listen_in(host_db, Some(&db), "tcp", "10.200.0.2:22");
    let db_other = listen_in(host_db, Some(&db), "tcp", "10.200.0.2:9999");
    let db_udp = listen_in(host_db, Some(&db), "udp", "10.200.0.2:5353");
    let _web_proc = spawn_probe_in(host_web, Some(&web), &["run-as", "0", "0", "sleep", "120"]);
    let outside = listen_in(host_other, None, "tcp", "10.200.0.3:8080");

    let file = agent.dir().join("policies.yaml");
    std::fs::write(&file, POLICIES).expect("policy file");
    let (code, _, err) = agent.cli(&["policy", "apply", file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        eventually(Duration::from_secs(5), || {
            let (_, out, _) = agent.cli(&["explain", "web", "--to", "10.200.0.2:5432/tcp"]);
            out.contains("workload db") && out.contains("allow")
        }),
        "db's address never mapped to its identity: {}\n{}",
        agent.cli(&["explain", "web", "--to", "10.200.0.2:5432/tcp"]).1,
        agent.log()
    );

    let from_web = |args: &[&str]| probe_in(host_web, Some(&web), args);
    assert_eq!(from_web(&["connect", &db_tcp.addr.to_string()]), Outcome::Ok, "allowed: to app=db tcp/5432");
    assert_eq!(from_web(&["connect", &db_ssh.addr.to_string()]), Outcome::Denied, "deny rule wins over the allow");
    assert_eq!(from_web(&["connect", &db_other.addr.to_string()]), Outcome::Denied, "allow-list: nothing allows 9999");
    assert_eq!(from_web(&["connect", &outside.addr.to_string()]), Outcome::Ok, "allowed by CIDR");
    assert_eq!(from_web(&["udp-ask", &db_udp.addr.to_string()]), Outcome::Ok, "UDP out, and the reply back in");

    // An unenrolled host is not app=web: its SYN to db is dropped (the connect times out), and
    // the same host is never stopped on its own egress.
    let unenrolled = probe_in(host_other, None, &["connect", &db_tcp.addr.to_string()]);
    assert!(matches!(unenrolled, Outcome::Failed(_)), "ingress from an unenrolled source: {unenrolled:?}");
    assert_eq!(probe_in(host_other, None, &["connect", &outside.addr.to_string()]), Outcome::Ok);

    assert!(
        eventually(Duration::from_secs(5), || {
            let (_, out, _) = agent.cli(&["flows", "-o", "json"]);
            out.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|e| {
                e["workload"] == "db" && e["direction"] == "ingress" && e["verdict"] == "deny"
                    && e["src"].as_str().is_some_and(|s| s.starts_with("10.200.0.3:"))
            })
        }),
        "no ingress deny event for db: {}",
        agent.cli(&["flows", "-o", "json"]).1
    );
    let (_, out, _) = agent.cli(&["flows", "-o", "json"]);
    let ssh = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["dst"] == db_ssh.addr.to_string())
        .unwrap_or_else(|| panic!("no event for the denied ssh connect: {out}"));
    assert_eq!(ssh["workload"], "web");
    assert_eq!(ssh["remote_workload"], "db");
    assert!(ssh["policy"].as_str().is_some_and(|p| p.contains("web-egress")), "{ssh}");
}
