//! Observation mode through the real binary: observe a workload while it connects and reads
//! files (nothing is blocked, and the observation survives an agent restart), apply the
//! suggested policies, run the same behaviour again with zero denials, then try a connection
//! and a file read it never made: both denied. Runs on the host (fanotify for files) and in the
//! VM (BPF-LSM).

use std::time::Duration;

use enforcer_tests::{AgentProcess, Outcome, TcpServer, TestCgroup, TestPins, can_run, eventually, privileged_unavailable, probe};

const CONFIG: &str = "default_network = \"deny\"\ndefault_file = \"allow\"\n[[workload]]\ncgroup = \"app\"\nlabels = { app = \"web\" }\n";

fn denials(agent: &AgentProcess) -> usize {
    agent
        .cli(&["flows", "-o", "json"])
        .1
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["workload"] == "app" && e["verdict"] == "deny")
        .count()
}

fn status(agent: &AgentProcess) -> serde_json::Value {
    let (code, out, err) = agent.cli(&["observe", "status", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("status json");
    list.as_array().and_then(|l| l.iter().find(|o| o["workload"] == "app").cloned()).unwrap_or_default()
}

#[test]
fn observe_suggest_apply_then_only_what_was_seen_is_allowed() {
    if !can_run("observe_suggest_apply", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let app = root.child("app");
    let mut agent = AgentProcess::start(&root, &pins, CONFIG);
    let (server, never) = (TcpServer::start("127.0.0.1:0"), TcpServer::start("127.0.0.1:0"));
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    std::fs::create_dir_all(tmp.path().join("elsewhere")).expect("elsewhere");
    for f in ["data/0", "data/1", "data/2", "data/3", "data/4", "conf", "elsewhere/secret"] {
        std::fs::write(tmp.path().join(f), b"x").expect("file");
    }
    let path = |p: &str| tmp.path().join(p).to_str().expect("utf-8").to_owned();
    let target = server.addr().to_string();
    let behave = || -> Vec<Outcome> {
        let mut out = vec![probe(Some(&app), &["connect", &target])];
        for f in ["data/0", "data/1", "data/2", "data/3", "data/4", "conf"] {
            out.push(probe(Some(&app), &["open", &path(f)]));
        }
        out
    };
    assert_eq!(probe(Some(&app), &["connect", &target]), Outcome::Denied, "default_network = deny before observing");

    let (code, _, err) = agent.cli(&["observe", "start", "app", "--duration", "1h"]);
    assert_eq!(code, 0, "{err}");
    // The observation survives an agent restart.
    agent.kill();
    agent.restart();
    assert_eq!(status(&agent)["active"], true, "still observed after a restart");
    assert!(behave().iter().all(|o| *o == Outcome::Ok), "nothing is blocked while observed");
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = status(&agent);
            s["flows"].as_u64().unwrap_or(0) >= 1 && s["files"].as_u64().unwrap_or(0) >= 6
        }),
        "what it did is summarised: {}",
        status(&agent)
    );
    assert_eq!(agent.cli(&["observe", "stop", "app"]).0, 0);
    assert_eq!(probe(Some(&app), &["connect", &target]), Outcome::Denied, "after stop, policies apply again");

    let (code, yaml, err) = agent.cli(&["policy", "suggest", "app"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(yaml, agent.cli(&["policy", "suggest", "app"]).1, "the same observation gives the same text");
    let file = tmp.path().join("suggested.yaml");
    std::fs::write(&file, &yaml).expect("suggestion");
    let (code, out, err) = enforcer_tests::enforcer(&["policy", "check", file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "the suggestion passes policy check: {out}{err}\n{yaml}");
    assert!(yaml.contains(&format!("\"{}/\"", path("data"))), "five siblings become their directory: {yaml}");
    assert!(yaml.contains(&format!("\"tcp/{}\"", server.addr().port())), "{yaml}");
    let (code, _, err) = agent.cli(&["policy", "apply", file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");

    let before = denials(&agent);
    assert!(behave().iter().all(|o| *o == Outcome::Ok), "the same behaviour passes under the suggestion: {yaml}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(denials(&agent), before, "zero denials for what was seen");
    assert_eq!(probe(Some(&app), &["connect", &never.addr().to_string()]), Outcome::Denied, "a connection never made");
    assert_eq!(probe(Some(&app), &["open", &path("elsewhere/secret")]), Outcome::Denied, "a file never read");
}
