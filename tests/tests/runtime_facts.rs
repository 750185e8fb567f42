//! Facts from outside the workload, end to end through the real binary: a verified EC2
//! identity served by a local IMDS on loopback, and container metadata from a Docker state
//! directory. Runs on the host and in the VM.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    time::Duration,
};

use enforcer_tests::{
    eventually,AgentProcess, TestCgroup, TestPins, can_run, privileged_unavailable};

/// A real identity document and its signature, produced by AWS IMDS in us-west-2.
const DOCUMENT: &str = include_str!("../../enforcer/src/identity/aws/testdata/aws-us-west-2.json");
const SIGNATURE: &str = include_str!("../../enforcer/src/identity/aws/testdata/aws-us-west-2.rsa2048");

/// Serves `IMDSv2` on loopback: a token for the PUT, then the document and signature to GETs
/// that present it. Returns its base URL.
fn imds(document: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request = String::new();
            let mut token_ok = false;
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                token_ok |= lower.starts_with("x-aws-ec2-metadata-token: test-token");
                if let Some(n) = lower.strip_prefix("content-length:") {
                    length = n.trim().parse().unwrap_or(0);
                }
                if request.is_empty() {
                    request = line;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (status, reply) = match request.split_whitespace().take(2).collect::<Vec<_>>()[..] {
                ["PUT", "/latest/api/token"] => ("200 OK", "test-token"),
                ["GET", "/latest/dynamic/instance-identity/document"] if token_ok => ("200 OK", document),
                ["GET", "/latest/dynamic/instance-identity/rsa2048"] if token_ok => ("200 OK", SIGNATURE),
                ["GET", _] => ("401 Unauthorized", ""),
                _ => ("404 Not Found", ""),
            };
            let mut out = stream;
            let _ = write!(out, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len());
        }
    });
    url
}

fn status_json(agent: &AgentProcess) -> serde_json::Value {
    let (_, out, err) = agent.cli(&["status", "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status json: {e}: {out}{err}"))
}

fn tags_of(agent: &AgentProcess, name: &str) -> serde_json::Value {
    let (_, out, _) = agent.cli(&["workloads", "-o", "json"]);
    let all: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    all.as_array().and_then(|a| a.iter().find(|w| w["name"] == name)).map(|w| w["tags"].clone()).unwrap_or_default()
}

#[test]
fn verified_ec2_identity_tags_every_workload() {
    if !can_run("verified_ec2_identity", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let _svc = root.child("svc");
    let agent = AgentProcess::start(&root, &pins, &format!("imds_url = {:?}\n", imds(DOCUMENT)));
    assert!(
        eventually(Duration::from_secs(10), || tags_of(&agent, "svc")["@aws:region"] == "us-west-2"),
        "no @aws tags; status: {}\n{}",
        status_json(&agent),
        agent.log()
    );
    let tags = tags_of(&agent, "svc");
    assert_eq!(tags["@aws:account-id"], "278576220453");
    assert_eq!(tags["@aws:instance-id"], "i-078517ca8a70a1dde");
    assert_eq!(tags["@aws:availability-zone"], "us-west-2a");
    assert_eq!(tags["@aws:image-id"], "ami-0fa9e1f64142cde17");
    assert_eq!(tags["@aws:instance-type"], "t2.medium");
    assert!(status_json(&agent)["aws"].as_str().is_some_and(|s| s.starts_with("verified")));
}

#[test]
fn tampered_ec2_identity_yields_no_tags_and_status_says_why() {
    if !can_run("tampered_ec2_identity", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let _svc = root.child("svc");
    let forged: &'static str = Box::leak(DOCUMENT.replace("278576220453", "999999999999").into_boxed_str());
    let agent = AgentProcess::start(&root, &pins, &format!("imds_url = {:?}\n", imds(forged)));
    assert!(
        eventually(Duration::from_secs(10), || status_json(&agent)["aws"].as_str().is_some_and(|s| s.starts_with("unavailable"))),
        "status: {}",
        status_json(&agent)
    );
    let tags = tags_of(&agent, "svc");
    assert!(tags.as_object().is_some_and(|t| t.keys().all(|k| !k.starts_with("@aws:"))), "{tags}");
}

#[test]
fn without_imds_the_agent_runs_and_says_so() {
    if !can_run("without_imds", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    // A closed loopback port: nothing answers.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let agent = AgentProcess::start(&root, &pins, &format!("imds_url = \"http://{closed}\"\n"));
    assert!(eventually(Duration::from_secs(10), || {
        status_json(&agent)["aws"].as_str().is_some_and(|s| s.starts_with("unavailable"))
    }));
}

const WEB_ID: &str = "4b5e57f6eb2f42b9039b3d1e13929295f231749c510cbe341cd68036d9af97e2";
const WEB_CONFIG: &str = include_str!(
    "../../enforcer/src/identity/container/testdata/docker/containers/4b5e57f6eb2f42b9039b3d1e13929295f231749c510cbe341cd68036d9af97e2/config.v2.json"
);
const REPOSITORIES: &str =
    include_str!("../../enforcer/src/identity/container/testdata/docker/image/overlay2/repositories.json");

#[test]
fn docker_container_metadata_becomes_tags() {
    if !can_run("docker_container_metadata", privileged_unavailable()) {
        return;
    }
    let docker = tempfile::tempdir().expect("docker root");
    let container_dir = docker.path().join("containers").join(WEB_ID);
    std::fs::create_dir_all(&container_dir).expect("mkdir");
    std::fs::write(container_dir.join("config.v2.json"), WEB_CONFIG).expect("config");
    std::fs::create_dir_all(docker.path().join("image/overlay2")).expect("mkdir");
    std::fs::write(docker.path().join("image/overlay2/repositories.json"), REPOSITORIES).expect("repositories");

    let root = TestCgroup::new();
    let pins = TestPins::new();
    let agent = AgentProcess::start(&root, &pins, &format!("docker_root = {:?}\n", docker.path()));
    let name = format!("docker-{WEB_ID}.scope");
    let _container = root.child(&name);
    assert!(
        eventually(Duration::from_secs(5), || tags_of(&agent, &name)["@container:name"] == "web"),
        "tags: {}\n{}",
        tags_of(&agent, &name),
        agent.log()
    );
    let tags = tags_of(&agent, &name);
    assert_eq!(tags["@container:id"], WEB_ID);
    assert_eq!(tags["@container:image"], "nginx:1.25");
    assert!(tags["@container:image-digest"].as_str().is_some_and(|d| d.contains("@sha256:64af6f6b")), "{tags}");
    assert_eq!(tags["com.example.team"], "storefront", "container labels become plain tags");
}
