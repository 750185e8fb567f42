//! `NetworkPolicy` end to end through the real binary on one host: allow, deny rule, allow-list
//! default, CIDR peers, audit, hot reload both ways, and an invalid file that changes nothing.
//! Runs on the host and in the VM. (Workload-to-workload selection across simulated hosts is in
//! `netpolicy.rs`.)

use std::time::Duration;

use enforcer_tests::{
    eventually,AgentProcess, Outcome, TcpServer, TestCgroup, TestPins, can_run, privileged_unavailable, probe};

const WEB: &str = "[[workload]]\ncgroup = \"web\"\nlabels = { app = \"web\" }\n";

fn policy(allowed: u16, denied: u16, mode: &str) -> String {
    format!(
        "kind: NetworkPolicy\nname: web-egress\nmode: {mode}\nsubject: \"app=web\"\negress:\n  - toCIDR: [\"127.0.0.1/32\"]\n    ports: [\"tcp/{allowed}\"]\n  - toCIDR: [\"127.0.0.0/8\"]\n    ports: [\"tcp/{denied}\"]\n    action: deny\n"
    )
}

fn flows(agent: &AgentProcess) -> Vec<serde_json::Value> {
    let (code, out, err) = agent.cli(&["flows", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    out.lines().map(|l| serde_json::from_str(l).expect("event json")).collect()
}

#[test]
fn applied_policy_allows_denies_and_reports() {
    if !can_run("applied_policy", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let agent = AgentProcess::start(&root, &pins, &format!("default_network = \"allow\"\n{WEB}"));
    let web = root.child("web");
    let (a, d, other) = (TcpServer::start("127.0.0.1:0"), TcpServer::start("127.0.0.1:0"), TcpServer::start("127.0.0.1:0"));
    let connect = |s: &TcpServer| probe(Some(&web), &["connect", &s.addr().to_string()]);
    assert!(eventually(Duration::from_secs(3), || agent.cli(&["workloads"]).1.contains("web")));
    assert_eq!(connect(&other), Outcome::Ok, "no policy yet: default_network = allow");

    let file = agent.dir().join("web.yaml");
    std::fs::write(&file, policy(a.addr().port(), d.addr().port(), "enforce")).expect("policy file");
    let (code, _, err) = agent.cli(&["policy", "apply", file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(connect(&a), Outcome::Ok, "allowed by rule 0");
    assert_eq!(connect(&d), Outcome::Denied, "denied by the deny rule");
    assert_eq!(connect(&other), Outcome::Denied, "allow-list mode: nothing allows it");
    assert_eq!(probe(None, &["connect", &d.addr().to_string()]), Outcome::Ok, "outside cgroup_root untouched");

    let (_, out, _) = agent.cli(&["explain", "web", "--to", &format!("{}/tcp", d.addr())]);
    assert!(out.contains("deny") && out.contains("web-egress egress[1]"), "{out}");

    assert!(eventually(Duration::from_secs(3), || flows(&agent).len() >= 2), "{}", agent.log());
    let events = flows(&agent);
    let denied = events
        .iter()
        .find(|e| e["dst"] == d.addr().to_string())
        .unwrap_or_else(|| panic!("no event for {}: {events:?}", d.addr()));
    assert_eq!(denied["verdict"], "deny");
    assert_eq!(denied["workload"], "web");
    assert_eq!(denied["direction"], "egress");
    assert!(denied["policy"].as_str().is_some_and(|p| p.contains("web-egress")), "{denied}");

    let (code, _, err) = agent.cli(&["policy", "delete", "web-egress"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(connect(&d), Outcome::Ok, "deleted: back to the default");
}

#[test]
fn audit_mode_lets_through_and_reports() {
    if !can_run("audit_mode", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let agent = AgentProcess::start(&root, &pins, WEB);
    let web = root.child("web");
    let (a, d) = (TcpServer::start("127.0.0.1:0"), TcpServer::start("127.0.0.1:0"));
    let file = agent.dir().join("audit.yaml");
    std::fs::write(&file, policy(a.addr().port(), d.addr().port(), "audit")).expect("policy file");
    assert!(eventually(Duration::from_secs(3), || agent.cli(&["workloads"]).1.contains("web")));
    assert_eq!(agent.cli(&["policy", "apply", file.to_str().expect("utf-8")]).0, 0);
    assert_eq!(probe(Some(&web), &["connect", &d.addr().to_string()]), Outcome::Ok, "audit lets it through");
    assert!(eventually(Duration::from_secs(3), || flows(&agent).iter().any(|e| e["verdict"] == "audit" && e["dst"] == d.addr().to_string())));
}

#[test]
fn policy_dir_hot_reload_both_ways_and_an_invalid_file_changes_nothing() {
    if !can_run("policy_dir_hot_reload", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let agent = AgentProcess::start(&root, &pins, &format!("default_network = \"allow\"\n{WEB}"));
    let web = root.child("web");
    let (a, d) = (TcpServer::start("127.0.0.1:0"), TcpServer::start("127.0.0.1:0"));
    let connect = |s: &TcpServer| probe(Some(&web), &["connect", &s.addr().to_string()]);
    assert!(eventually(Duration::from_secs(3), || agent.cli(&["workloads"]).1.contains("web")));
    let dir = agent.dir().join("policies");
    std::fs::create_dir_all(&dir).expect("policy dir");

    std::fs::write(dir.join("web.yaml"), policy(a.addr().port(), d.addr().port(), "enforce")).expect("write");
    assert!(eventually(Duration::from_secs(3), || connect(&d) == Outcome::Denied), "a new file takes effect");
    assert_eq!(connect(&a), Outcome::Ok);

    // An invalid file: rejected whole, the previous policy stays, status says why.
    std::fs::write(dir.join("bad.yaml"), "kind: NetworkPolicy\nname: bad\nsubject: \"app=web\"\negress:\n  - ports:\n      - \"tcp/99999\"\n")
        .expect("write");
    assert!(eventually(Duration::from_secs(3), || agent.cli(&["status"]).1.contains("bad.yaml:6")), "{}", agent.cli(&["status"]).1);
    assert_eq!(connect(&d), Outcome::Denied, "previous policy still in force");
    assert_eq!(connect(&a), Outcome::Ok);
    std::fs::remove_file(dir.join("bad.yaml")).expect("rm");

    // Removing the policy takes effect too.
    std::fs::remove_file(dir.join("web.yaml")).expect("rm");
    assert!(eventually(Duration::from_secs(3), || connect(&d) == Outcome::Ok), "removal takes effect");
}

#[test]
fn policy_check_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "kind: NetworkPolicy\nname: p\nsubject: \"app=web\"\negress:\n  - toCIDR: [\"10.0.0.0/8\"]\n    ports: [\"tcp/99999\"]\n").expect("write");
    let (code, _, err) = enforcer_tests::enforcer(&["policy", "check", file.to_str().expect("utf-8")]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.yaml:6"), "{err}");
}
