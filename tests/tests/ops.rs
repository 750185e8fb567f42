//! Operating the agent: status fields, Prometheus metrics moving with decisions, JSON logs and
//! the rotated flow log. Runs on the host and in the VM.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use enforcer_tests::{AgentProcess, Outcome, TcpServer, TestCgroup, TestPins, can_run, eventually, privileged_unavailable, probe};

const SVC: &str = "[[workload]]\ncgroup = \"svc\"\nlabels = { app = \"svc\" }\n";

/// `GET path` over plain HTTP/1.1; returns (status code, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, body.to_owned())
}

fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{body}"))
}

#[test]
fn status_and_metrics_follow_decisions() {
    if !can_run("status_and_metrics_follow_decisions", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let server = TcpServer::start("127.0.0.1:0");
    let target = server.addr().to_string();
    let svc = root.child("svc");
    let agent = AgentProcess::start(&root, &pins, &format!("metrics_addr = \"127.0.0.1:0\"\n{SVC}"));
    let (code, out, err) = agent.cli(&["status", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status json");
    for key in ["version", "uptime_seconds", "enforcement_points", "file_enforcement", "workloads", "policies", "policy_errors", "last_apply", "events_delivered", "counters", "on_agent_down"] {
        assert!(!status[key].is_null(), "status has {key}: {status}");
    }
    assert_eq!(status["on_agent_down"], "enforce");
    let url = status["metrics"].as_str().expect("metrics url");
    let addr = url.strip_prefix("http://").and_then(|u| u.strip_suffix("/metrics")).unwrap_or_else(|| panic!("{url}"));

    let (code, before) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    let denies = "enforcer_decisions_total{kind=\"network\",verdict=\"deny\"}";
    let n = sample(&before, denies);
    assert!(sample(&before, "enforcer_workloads") >= 1.0);
    assert!(sample(&before, "enforcer_map_capacity{map=\"ENF_WORKLOADS\"}") > 0.0);
    assert!(sample(&before, "enforcer_enforcement_point_up{hook=\"cgroup/connect4\"}") > 0.5, "connect4 is up");

    for _ in 0..3 {
        assert_eq!(probe(Some(&svc), &["connect", &target]), Outcome::Denied);
    }
    let (_, after) = http_get(addr, "/metrics");
    assert!(sample(&after, denies) >= n + 3.0, "deny counter moved: {n} → {}", sample(&after, denies));
    assert!(
        eventually(Duration::from_secs(3), || sample(&http_get(addr, "/metrics").1, "enforcer_events_delivered_total") >= 3.0),
        "events delivered are counted"
    );
    assert_eq!(http_get(addr, "/other").0, 404);
}

#[test]
fn json_logs_and_the_flow_log_file() {
    if !can_run("json_logs_and_the_flow_log_file", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let server = TcpServer::start("127.0.0.1:0");
    let target = server.addr().to_string();
    let svc = root.child("svc");
    let dir = tempfile::tempdir().expect("tmp");
    let flow_log = dir.path().join("flows.json");
    let agent = AgentProcess::start(
        &root,
        &pins,
        &format!("log_format = \"json\"\nflow_log = {:?}\nflow_log_max_bytes = 4096\n{SVC}", flow_log.to_str().expect("utf-8")),
    );
    // About 350 bytes each: enough to rotate twice, not enough to drop a file.
    for _ in 0..25 {
        assert_eq!(probe(Some(&svc), &["connect", &target]), Outcome::Denied);
    }
    let lines = |p: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
    };
    assert!(
        eventually(Duration::from_secs(3), || {
            let all = ["flows.json", "flows.json.1", "flows.json.2", "flows.json.3"];
            all.iter().map(|f| lines(&dir.path().join(f)).len()).sum::<usize>() >= 25 && dir.path().join("flows.json.1").exists()
        }),
        "every flow event in the rotated flow log: {:?}",
        std::fs::read_dir(dir.path()).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    let event = lines(&flow_log).into_iter().last().expect("an event");
    assert_eq!(event["verdict"], "deny");
    assert_eq!(event["workload"], "svc");
    assert!(std::fs::metadata(&flow_log).expect("flow log").len() <= 4096);

    let log = agent.log();
    let records: Vec<serde_json::Value> = log.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?} is not JSON: {e}"))).collect();
    assert!(records.iter().any(|r| r["message"] == "enforcement live"), "{log}");
}

/// Asserts that `r` was refused with `code` and a message containing `words`.
fn check<T>(r: Result<tonic::Response<T>, tonic::Status>, code: tonic::Code, words: &str) {
    let Err(status) = r else { panic!("accepted; expected {code:?} with {words:?}") };
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(words), "{words:?} in {:?}", status.message());
}

/// Bad input on the API, sent raw (the CLI would catch some of it first): each answered with
/// the gRPC code that says whose fault it is and a message naming what is wrong, and none of it
/// changes what is enforced.
#[test]
fn the_api_refuses_bad_input_with_the_right_code() {
    use enforcer::api::proto::{self, PolicyFile};
    use tonic::Code;

    if !can_run("the_api_refuses_bad_input_with_the_right_code", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let _svc = root.child("svc");
    let agent = AgentProcess::start(&root, &pins, SVC);
    std::fs::create_dir_all(agent.dir().join("policies")).expect("policy_dir");
    std::fs::write(
        agent.dir().join("policies/local.yaml"),
        "kind: NetworkPolicy\nname: local\nsubject: \"app=svc\"\negress:\n  - toCIDR: [\"127.0.0.1/32\"]\n",
    )
    .expect("policy_dir file");
    assert!(eventually(Duration::from_secs(3), || agent.cli(&["policy", "list"]).1.contains("local")));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut api = enforcer::api::client::connect(&agent.socket).await.expect("connect");
        let profile = |w: &str| proto::GetProfileRequest { workload: w.to_owned() };
        check(api.get_profile(profile("../etc")).await, Code::InvalidArgument, "not a plain relative cgroup path");
        check(api.get_profile(profile("a\u{1}b")).await, Code::InvalidArgument, "control character");
        check(api.get_profile(profile("nosuch")).await, Code::NotFound, "enforcer workloads");

        let label = |w: &str, pairs: &[(&str, &str)]| proto::LabelRequest {
            workload: w.to_owned(),
            labels: pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        check(api.label(label("svc", &[("@sys:uid", "0")])).await, Code::InvalidArgument, "starts with `@`");
        check(api.label(label("svc", &[("bad key", "x")])).await, Code::InvalidArgument, "may contain only");
        let many: Vec<(String, String)> = (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        check(api.label(label("svc", &many)).await, Code::InvalidArgument, "at most 64");
        check(api.label(label("nosuch", &[("a", "b")])).await, Code::NotFound, "nosuch");

        let apply = |files: Vec<(&str, String)>| proto::ApplyRequest {
            files: files.into_iter().map(|(name, content)| PolicyFile { name: name.to_owned(), content }).collect(),
        };
        let valid = "kind: NetworkPolicy\nname: p\nsubject: \"app=svc\"\negress:\n  - toCIDR: [\"10.0.0.0/8\"]\n".to_owned();
        check(api.apply_policies(apply(vec![])).await, Code::InvalidArgument, "no policy files");
        check(api.apply_policies(apply(vec![("p.txt", valid.clone())])).await, Code::InvalidArgument, "*.yaml");
        check(api.apply_policies(apply(vec![(".hidden.yaml", valid.clone())])).await, Code::InvalidArgument, "must not start with `.`");
        check(api.apply_policies(apply(vec![("a b.yaml", valid.clone())])).await, Code::InvalidArgument, "may contain only");
        check(api.apply_policies(apply(vec![("big.yaml", "#".repeat(2 << 20))])).await, Code::InvalidArgument, "at most 1048576");
        check(api.apply_policies(apply(vec![("x/p.yaml", valid.clone()), ("p.yaml", valid.clone())])).await, Code::InvalidArgument, "two files named p.yaml");
        check(
            api.apply_policies(apply(vec![("bad.yaml", "kind: NetworkPolicy\nname: q\nsubject: \"app=svc\"\negress:\n  - ports: [\"tcp/0\"]\n".into())])).await,
            Code::InvalidArgument,
            "bad.yaml:5",
        );

        let delete = |n: &str| proto::DeletePolicyRequest { name: n.to_owned() };
        check(api.delete_policy(delete("")).await, Code::InvalidArgument, "1 to 253 characters");
        check(api.delete_policy(delete("nosuch")).await, Code::NotFound, "enforcer policy list");
        check(api.delete_policy(delete("local")).await, Code::FailedPrecondition, "policy_dir");

        let explain = |direction: &str, address: &str, port: u32, protocol: &str| proto::ExplainRequest {
            workload: "svc".into(),
            direction: direction.into(),
            address: address.into(),
            port,
            protocol: protocol.into(),
        };
        check(api.explain(explain("sideways", "127.0.0.1", 80, "tcp")).await, Code::InvalidArgument, "egress or ingress");
        check(api.explain(explain("egress", "not-an-ip", 80, "tcp")).await, Code::InvalidArgument, "not an IP address");
        check(api.explain(explain("egress", "127.0.0.1", 0, "tcp")).await, Code::InvalidArgument, "1..=65535");
        check(api.explain(explain("egress", "127.0.0.1", 80, "sctp")).await, Code::InvalidArgument, "tcp or udp");
    });
    let (code, out, _) = agent.cli(&["policy", "list", "-o", "json"]);
    assert_eq!(code, 0);
    assert!(out.contains("local") && !out.contains("\"p\""), "nothing refused was applied: {out}");
    assert_eq!(agent.cli(&["status"]).0, 0, "{}", agent.cli(&["status"]).2);
}
