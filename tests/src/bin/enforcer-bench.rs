//! The benchmark runner behind `cargo xtask bench`: each measurement side by side with its
//! baseline in the same run, rounds interleaved (baseline, subject, baseline, subject), on
//! network namespaces and cgroups it creates and removes.
//!
//! ```text
//! enforcer-bench [--quick] [--only ROWS] [--merge FILE] --out DIR
//!     # writes DIR/results.json and DIR/results.md; FILE: another run's results.json (the VM's)
//! ```
//! Needs root, `ENFORCER_BIN` and `ENFORCER_PROBE` (release builds; `cargo xtask bench` sets
//! them) and `nft`.
#![allow(clippy::pedantic, reason = "a measurement runner: float casts of counts and report formatting")]

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use enforcer_tests::{
    AgentProcess, Outcome, TestCgroup, TestPins, enforcer, eventually, in_vm,
    netns::{TestNet, TestNetns, listen_in, probe_command, probe_in},
};
use serde_json::{Value, json};

const SERVER: &str = "10.200.0.2:7000";
const DENIED_ADDR: &str = "10.200.0.2:7001";
/// The server of the identity-token row, in host B's workload.
const TOKEN_SERVER: &str = "10.200.0.2:7002";

struct Bench {
    quick: bool,
    round: Duration,
    net: TestNet,
    root: TestCgroup,
    outside: TestCgroup,
    pins: TestPins,
    agent: AgentProcess,
    results: BTreeMap<String, Value>,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted.get(sorted.len().saturating_sub(1) * p / 100).copied().unwrap_or(f64::NAN)
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| u64::try_from(Duration::from(t).as_nanos()).unwrap_or(u64::MAX))
}

/// Rule `i` of a generated set: one of 1000 addresses and a port, never the server's.
fn rule_target(i: usize) -> (String, u16) {
    let a = i % 1000;
    (format!("10.100.{}.{}", a / 250, a % 250 + 1), u16::try_from(1000 + i / 1000).unwrap_or(u16::MAX))
}

/// A policy with `n` egress rules for the workload, the last one allowing the server.
fn policy(n: usize, shift: usize) -> String {
    let mut y = String::from("kind: NetworkPolicy\nname: bench\nsubject: \"app=bench\"\negress:\n");
    for i in 0..n.saturating_sub(1) {
        let (addr, port) = rule_target(i + shift);
        let _ = write!(y, "  - toCIDR: [\"{addr}/32\"]\n    ports: [\"tcp/{port}\"]\n");
    }
    y.push_str("  - toCIDR: [\"10.200.0.2/32\"]\n    ports: [\"tcp/7000\"]\n");
    y
}

fn nft_ruleset(n: usize, set: bool) -> String {
    let mut r = String::from("flush ruleset\ntable inet bench {\n");
    if set {
        r.push_str("  set allowed { type ipv4_addr . inet_service; flags constant; elements = { ");
        let elems: Vec<String> = (0..n.saturating_sub(1))
            .map(rule_target)
            .map(|(a, p)| format!("{a} . {p}"))
            .chain(std::iter::once("10.200.0.2 . 7000".to_owned()))
            .collect();
        r.push_str(&elems.join(", "));
        r.push_str(" } }\n  chain out { type filter hook output priority 0; policy accept;\n");
        r.push_str("    ip daddr . tcp dport @allowed accept\n    tcp flags & (syn | ack) == syn drop\n  }\n}\n");
    } else {
        r.push_str("  chain out { type filter hook output priority 0; policy accept;\n");
        for i in 0..n.saturating_sub(1) {
            let (a, p) = rule_target(i);
            let _ = writeln!(r, "    ip daddr {a} tcp dport {p} accept");
        }
        r.push_str("    ip daddr 10.200.0.2 tcp dport 7000 accept\n    tcp flags & (syn | ack) == syn drop\n  }\n}\n");
    }
    r
}

/// (run time ns, run count) of the program pinned as `name` under `pins`, from its fdinfo
/// (`kernel.bpf_stats_enabled` counts them).
fn prog_stats(pins: &Path, name: &str) -> (u64, u64) {
    let Ok(info) = aya::programs::ProgramInfo::from_pin(pins.join("progs").join(name)) else { return (0, 0) };
    let Ok(fd) = info.fd() else { return (0, 0) };
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd())).unwrap_or_default();
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok()).unwrap_or(0);
    (field("run_time_ns:"), field("run_cnt:"))
}

/// A `cgroup/connect4` program of two instructions (`r0 = 1; exit`) attached to a cgroup, for
/// the floor of row 2; detached and closed on drop.
struct EmptyConnect4 {
    prog: std::os::fd::OwnedFd,
    cgroup: std::fs::File,
}

impl EmptyConnect4 {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_PROG_DETACH: libc::c_long = 9;
    const CGROUP_SOCK_ADDR: u32 = 18;
    const INET4_CONNECT: u32 = 10;

    fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> libc::c_long {
        // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix of the size passed.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
    }

    fn attach(cgroup: &Path) -> Self {
        let insns: [u8; 16] = [0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&Self::CGROUP_SOCK_ADDR.to_ne_bytes());
        attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        attr[68..72].copy_from_slice(&Self::INET4_CONNECT.to_ne_bytes());
        let fd = Self::bpf(Self::BPF_PROG_LOAD, &mut attr);
        assert!(fd >= 0, "loading the empty connect4 program: {}", std::io::Error::last_os_error());
        // SAFETY: the syscall returned a new descriptor that nothing else owns.
        let prog = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        let cgroup = std::fs::File::open(cgroup).expect("cgroup");
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
        attr[8..12].copy_from_slice(&Self::INET4_CONNECT.to_ne_bytes());
        assert_eq!(Self::bpf(Self::BPF_PROG_ATTACH, &mut attr), 0, "attaching the empty program: {}", std::io::Error::last_os_error());
        Self { prog, cgroup }
    }

    /// (run time ns, run count).
    fn stats(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.prog.as_raw_fd())).unwrap_or_default();
        let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok()).unwrap_or(0);
        (field("run_time_ns:"), field("run_cnt:"))
    }
}

impl Drop for EmptyConnect4 {
    fn drop(&mut self) {
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&(self.cgroup.as_raw_fd() as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&(self.prog.as_raw_fd() as u32).to_ne_bytes());
        attr[8..12].copy_from_slice(&Self::INET4_CONNECT.to_ne_bytes());
        let _ = Self::bpf(Self::BPF_PROG_DETACH, &mut attr);
    }
}

impl Bench {
    fn client(&self) -> &TestNetns {
        self.net.host(0)
    }

    fn baseline_ns(&self) -> &TestNetns {
        self.net.host(2)
    }

    /// One connect benchmark round from `netns` and `cgroup`.
    fn connects(&self, netns: &TestNetns, cgroup: &Path, addr: &str) -> Value {
        let ms = self.round.as_millis().to_string();
        let out = run(&mut probe_command(netns, Some(cgroup), &["connect-bench", addr, &ms]));
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("connect-bench output {out:?}: {e}"))
    }

    fn rate(v: &Value) -> f64 {
        v["ok"].as_f64().unwrap_or(0.0) / v["seconds"].as_f64().unwrap_or(1.0)
    }

    /// Interleaved rounds: baseline, subject, baseline, subject (three pairs in the full run).
    /// Returns both means.
    fn interleaved(&self, subject: impl Fn() -> Value) -> (Value, Value) {
        let base_cg = self.outside.child("base");
        let (mut b, mut s) = (Vec::new(), Vec::new());
        for _ in 0..if self.quick { 2 } else { 3 } {
            b.push(self.connects(self.baseline_ns(), &base_cg, SERVER));
            s.push(subject());
        }
        let mean = |v: &[Value], k: &str| v.iter().map(|x| x[k].as_f64().unwrap_or(0.0)).sum::<f64>() / v.len() as f64;
        let summary = |v: &[Value]| {
            json!({
                "rate": v.iter().map(Self::rate).sum::<f64>() / v.len() as f64,
                "p50_us": mean(v, "p50_us"), "p99_us": mean(v, "p99_us"),
                "failed": v.iter().map(|x| x["failed"].as_u64().unwrap_or(0) + x["denied"].as_u64().unwrap_or(0)).sum::<u64>(),
            })
        };
        (summary(&b), summary(&s))
    }

    /// Writes `text` as the agent's policy_dir policy and waits until the server is reachable
    /// from the workload under it; returns how long the agent took.
    fn load_policy(&self, text: &str) -> Duration {
        let dir = self.agent.dir().join("policies");
        std::fs::create_dir_all(&dir).expect("policy_dir");
        let before = self.last_apply();
        let t = Instant::now();
        std::fs::write(dir.join("bench.yaml"), text).expect("policy");
        assert!(
            eventually(Duration::from_secs(300), || self.last_apply() != before),
            "the agent never applied the policy: {}",
            self.agent.cli(&["status"]).2
        );
        let took = t.elapsed();
        let bench = self.root.child("bench");
        assert!(eventually(Duration::from_secs(10), || probe_in(self.client(), Some(&bench), &["connect", SERVER]) == Outcome::Ok));
        took
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.agent.cli(&["status", "-o", "json"]).1).unwrap_or_default()
    }

    fn last_apply(&self) -> String {
        self.status()["last_apply"].as_str().unwrap_or_default().to_owned()
    }

    fn agent_rss_kib(&self) -> u64 {
        let pid = self.agent.pid();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()?.parse().ok()))
            .unwrap_or(0)
    }

    /// Memory the kernel charges for the agent's pinned maps (`memlock` of each), KiB.
    fn map_memory_kib(&self) -> u64 {
        let Ok(layouts) = std::fs::read_dir(self.pins.path().join("maps")) else { return 0 };
        let mut total = 0;
        for layout in layouts.flatten() {
            for map in std::fs::read_dir(layout.path()).into_iter().flatten().flatten() {
                if let Ok(info) = aya::maps::MapInfo::from_pin(map.path())
                    && let Ok(fd) = info.fd()
                {
                    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))
                        .unwrap_or_default();
                    total += fdinfo.lines().find_map(|l| l.strip_prefix("memlock:")?.trim().parse::<u64>().ok()).unwrap_or(0);
                }
            }
        }
        total / 1024
    }

    /// (run time ns, run count) of the agent's pinned program `name`.
    fn prog_stats(&self, name: &str) -> (u64, u64) {
        prog_stats(self.pins.path(), name)
    }

    fn row(&mut self, key: &str, value: Value) {
        eprintln!("bench: {key}: {value}");
        self.results.insert(key.to_owned(), value);
    }

    /// Row 2's floor: the same connect rounds under a `connect4` program that only returns
    /// "allow" (loaded and attached here with two instructions, to a cgroup of its own): what
    /// any program at this hook costs, with `bpf_stats` accounting, on this machine.
    fn floor(&mut self) {
        let cg = TestCgroup::new();
        let client = cg.child("client");
        let prog = EmptyConnect4::attach(cg.path());
        let before = prog.stats();
        let (base, subject) = self.interleaved(|| self.connects(self.client(), &client, SERVER));
        let after = prog.stats();
        let ns = (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64;
        self.row("connect/empty-program/0", json!({ "rules": 0, "baseline": base, "subject": subject, "connect4_ns_per_decision": ns, "decisions": after.1 - before.1 }));
    }

    /// Row 1 and 2 for the agent: connect rate and latency, and kernel ns per decision.
    fn agent_connects(&mut self, counts: &[usize]) {
        let bench = self.root.child("bench");
        for &n in counts {
            let apply = self.load_policy(&policy(n, 0));
            let before = self.prog_stats("connect4");
            let (base, subject) = self.interleaved(|| self.connects(self.client(), &bench, SERVER));
            let after = self.prog_stats("connect4");
            let ns = (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64;
            let rss = self.agent_rss_kib();
            let maps = self.map_memory_kib();
            self.row(
                &format!("connect/agent/{n}"),
                json!({ "rules": n, "baseline": base, "subject": subject, "connect4_ns_per_decision": ns,
                        "decisions": after.1 - before.1, "apply_seconds": apply.as_secs_f64(),
                        "agent_rss_kib": rss, "map_memory_kib": maps }),
            );
        }
    }

    fn nft_connects(&mut self, counts: &[usize]) {
        let base_cg = self.outside.child("nft");
        for &n in counts {
            for (kind, set) in [("set", true), ("chain", false)] {
                let file = self.agent.dir().join("nft.rules");
                std::fs::write(&file, nft_ruleset(n, set)).expect("nft rules");
                let t = Instant::now();
                run(Command::new("nsenter").arg(format!("--net={}", self.client().path().display())).args(["nft", "-f"]).arg(&file));
                let load = t.elapsed();
                let (base, subject) = self.interleaved(|| self.connects(self.client(), &base_cg, SERVER));
                run(Command::new("nsenter").arg(format!("--net={}", self.client().path().display())).args(["nft", "flush", "ruleset"]));
                self.row(
                    &format!("connect/nft-{kind}/{n}"),
                    json!({ "rules": n, "baseline": base, "subject": subject, "load_seconds": load.as_secs_f64() }),
                );
            }
        }
    }

    /// Row 3: from `policy apply` / `policy delete` (and a `policy_dir` write / removal) to the
    /// first connect that sees the new verdict.
    fn update_latency(&mut self, toggles: usize) {
        let bench = self.root.child("bench");
        let mut watch = probe_command(self.client(), Some(&bench), &["connect-watch", SERVER])
            .stdout(Stdio::piped())
            .spawn()
            .expect("watcher");
        let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(first.ends_with(" ok"), "the watcher starts allowed: {first}");
        let deny = self.agent.dir().join("toggle.yaml");
        std::fs::write(&deny, "kind: NetworkPolicy\nname: toggle\nsubject: \"app=bench\"\negress:\n  - toCIDR: [\"10.200.0.2/32\"]\n    ports: [\"tcp/7000\"]\n    action: deny\n").expect("toggle");
        let mut wait_for = |want: &str, since: u64| -> f64 {
            for line in lines.by_ref() {
                let line = line.expect("watch line");
                let (ns, outcome) = line.split_once(' ').unwrap_or_default();
                if outcome == want {
                    return (ns.parse::<u64>().unwrap_or(0).saturating_sub(since)) as f64 / 1e6;
                }
            }
            f64::NAN
        };
        let (mut api, mut dir) = (Vec::new(), Vec::new());
        let policy_dir_file = self.agent.dir().join("policies/toggle.yaml");
        for _ in 0..toggles {
            let t = monotonic_ns();
            assert_eq!(self.agent.cli(&["policy", "apply", deny.to_str().expect("utf-8")]).0, 0);
            api.push(wait_for("denied", t));
            let t = monotonic_ns();
            assert_eq!(self.agent.cli(&["policy", "delete", "toggle"]).0, 0);
            api.push(wait_for("ok", t));
            let t = monotonic_ns();
            std::fs::copy(&deny, &policy_dir_file).expect("policy_dir toggle");
            dir.push(wait_for("denied", t));
            let t = monotonic_ns();
            std::fs::remove_file(&policy_dir_file).expect("policy_dir toggle");
            dir.push(wait_for("ok", t));
        }
        let _ = watch.kill();
        let _ = watch.wait();
        for (key, mut v) in [("update/api", api), ("update/policy_dir", dir)] {
            v.sort_by(f64::total_cmp);
            self.row(key, json!({ "changes": v.len(), "p50_ms": percentile(&v, 50), "p99_ms": percentile(&v, 99), "max_ms": v.last() }));
        }
    }

    /// Row 3, second half: replace `n` entries with `n` others while a prober checks that the
    /// server, allowed by both, never sees a wrong verdict.
    fn swap(&mut self, n: usize) {
        self.load_policy(&policy(n, 0));
        let bench = self.root.child("bench");
        let mut watch = probe_command(self.client(), Some(&bench), &["connect-watch", SERVER])
            .stdout(Stdio::piped())
            .spawn()
            .expect("watcher");
        let took = self.load_policy(&policy(n, 7));
        std::thread::sleep(Duration::from_millis(200));
        let _ = watch.kill();
        let out = watch.wait_with_output().expect("watcher output");
        let changes: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        // A denial is a wrong verdict; a connect that failed otherwise (a SYN dropped by the
        // loaded machine) is counted apart.
        let wrong = changes.iter().filter(|l| l.ends_with(" denied")).count();
        let failed: Vec<&String> = changes.iter().filter(|l| !l.ends_with(" ok") && !l.ends_with(" denied")).collect();
        self.row(
            &format!("update/swap/{n}"),
            json!({ "entries": n, "seconds": took.as_secs_f64(), "wrong_verdicts": wrong, "other_failures": failed.len(),
                    "first_failures": failed.iter().take(3).collect::<Vec<_>>() }),
        );
    }

    /// Row 4: denied connects from more and more processes; events delivered and lost per second.
    fn events(&mut self, parallel: &[usize]) {
        let bench = self.root.child("bench");
        for &p in parallel {
            let s0 = self.status();
            let t = Instant::now();
            let ms = self.round.as_millis().to_string();
            let children: Vec<_> = (0..p)
                .map(|_| probe_command(self.client(), Some(&bench), &["connect-bench", DENIED_ADDR, &ms]).stdout(Stdio::piped()).spawn().expect("load"))
                .collect();
            let denied: u64 = children
                .into_iter()
                .map(|c| {
                    let out = c.wait_with_output().expect("load output");
                    serde_json::from_slice::<Value>(&out.stdout).map_or(0, |v| v["denied"].as_u64().unwrap_or(0))
                })
                .sum();
            let secs = t.elapsed().as_secs_f64();
            std::thread::sleep(Duration::from_millis(500));
            let s1 = self.status();
            let d = |k: &[&str]| {
                let get = |s: &Value| k.iter().fold(s, |v, k| &v[*k]).as_u64().unwrap_or(0);
                get(&s1).saturating_sub(get(&s0)) as f64 / secs
            };
            self.row(
                &format!("events/{p}"),
                json!({ "processes": p, "events_per_second": denied as f64 / secs,
                        "delivered_per_second": d(&["events_delivered"]), "lost_per_second": d(&["counters", "network", "lost"]) }),
            );
        }
    }

    /// Row 2, identity tokens: two more agents (host A with the client workload, host B with
    /// the server admitting it by label), tokens on; the client connects to the server,
    /// interleaved with the no-hook baseline. Kernel ns per run of A's `connect4` and `stamp`
    /// (`sock_ops`: stamps the SYN) and B's `ingress` (checks it), and the connect rate.
    fn tokens(&mut self) {
        let dirs = tempfile::tempdir().expect("tmp");
        let (ca_dir, a_state, b_state) = (dirs.path().join("ca"), dirs.path().join("a"), dirs.path().join("b"));
        let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
        let ok = |(code, _, err): (i32, String, String)| assert_eq!(code, 0, "{err}");
        ok(enforcer(&["ca", "init", "--dir", &path(&ca_dir)]));
        ok(enforcer(&["ca", "issue", "--dir", &path(&ca_dir), "--state", &path(&a_state), "--name", "host-a"]));
        ok(enforcer(&["ca", "issue", "--dir", &path(&ca_dir), "--state", &path(&b_state), "--name", "host-b"]));
        let port = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
        let (pa, pb) = (port(), port());
        let cluster = |listen: u16, peer: u16| {
            format!("[cluster]\nlisten = \"127.0.0.1:{listen}\"\npeers = [\"127.0.0.1:{peer}\"]\ntrust = {:?}\n", path(&ca_dir.join("ca.pub")))
        };
        let (root_a, root_b, pins_a, pins_b) = (TestCgroup::new(), TestCgroup::new(), TestPins::new(), TestPins::new());
        let (client, srv) = (root_a.child("client"), root_b.child("srv"));
        let _server = listen_in(self.net.host(1), Some(&srv), "tcp", TOKEN_SERVER);
        let _a = AgentProcess::start_with_state(
            &root_a,
            &pins_a,
            &format!("default_network = \"allow\"\n[[workload]]\ncgroup = \"client\"\nlabels = {{ app = \"client\" }}\n{}", cluster(pa, pb)),
            &a_state,
        );
        let b = AgentProcess::start_with_state(
            &root_b,
            &pins_b,
            &format!("default_network = \"deny\"\n[[workload]]\ncgroup = \"srv\"\nlabels = {{ app = \"srv\" }}\n{}", cluster(pb, pa)),
            &b_state,
        );
        let policy = b.dir().join("srv.yaml");
        std::fs::write(&policy, "kind: NetworkPolicy\nname: srv-in\nsubject: \"app=srv\"\ningress:\n  - from: \"app=client\"\n    ports: [\"tcp/7002\"]\n").expect("policy");
        ok(b.cli(&["policy", "apply", policy.to_str().expect("utf-8")]));
        assert!(
            eventually(Duration::from_secs(30), || probe_in(self.client(), Some(&client), &["connect", TOKEN_SERVER]) == Outcome::Ok),
            "the client is admitted by its token: {}",
            b.cli(&["peers"]).1
        );
        let programs = [("a_connect4", pins_a.path(), "connect4"), ("a_stamp", pins_a.path(), "stamp"), ("b_ingress", pins_b.path(), "ingress")];
        let before: Vec<(u64, u64)> = programs.iter().map(|(_, pins, name)| prog_stats(pins, name)).collect();
        let verified = |s: &Value| s["tokens"]["verified"].as_u64().unwrap_or(0);
        let status = || serde_json::from_str::<Value>(&b.cli(&["status", "-o", "json"]).1).unwrap_or_default();
        let v0 = verified(&status());
        let (base, subject) = self.interleaved(|| self.connects(self.client(), &client, TOKEN_SERVER));
        let v1 = verified(&status());
        let mut ns = serde_json::Map::new();
        for ((key, pins, name), (t0, c0)) in programs.iter().zip(before) {
            let (t1, c1) = prog_stats(pins, name);
            ns.insert((*key).to_owned(), json!({ "ns_per_run": (t1 - t0) as f64 / (c1 - c0).max(1) as f64, "runs": c1 - c0 }));
        }
        self.row("tokens", json!({ "baseline": base, "subject": subject, "programs": ns, "tokens_verified": v1.saturating_sub(v0) }));
    }

    /// Row 5 (this host: fanotify; in the VM: BPF-LSM): open+close rate of a workload with and without a
    /// `FilePolicy`, interleaved.
    fn files(&mut self) {
        let bench = self.root.child("bench");
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("file");
        let path = file.to_str().expect("utf-8").to_owned();
        let policy = self.agent.dir().join("files.yaml");
        std::fs::write(&policy, format!("kind: FilePolicy\nname: bench-files\nsubject: \"app=bench\"\nrules:\n  - paths: [\"{path}\"]\n    access: [read]\n")).expect("policy");
        let ms = self.round.as_millis().to_string();
        let denied = std::cell::Cell::new(0u64);
        let opens = |this: &Self| -> f64 {
            let out = run(&mut probe_command(this.client(), Some(&bench), &["open-bench", &path, &ms]));
            let v: Value = serde_json::from_str(out.trim()).expect("open-bench");
            denied.set(denied.get() + v["denied"].as_u64().unwrap_or(0));
            v["opens"].as_f64().unwrap_or(0.0) / v["seconds"].as_f64().unwrap_or(1.0)
        };
        let (mut without, mut with, mut mechanism) = (Vec::new(), Vec::new(), String::new());
        for _ in 0..2 {
            without.push(opens(self));
            assert_eq!(self.agent.cli(&["policy", "apply", policy.to_str().expect("utf-8")]).0, 0);
            mechanism = self.status()["file_enforcement"].as_str().unwrap_or_default().to_owned();
            with.push(opens(self));
            assert_eq!(self.agent.cli(&["policy", "delete", "bench-files"]).0, 0);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        self.row(
            if in_vm() { "files/vm" } else { "files/host" },
            json!({ "mechanism": mechanism, "without_policy_per_second": mean(&without), "with_policy_per_second": mean(&with),
                    "wrongly_denied": denied.get() }),
        );
    }

    /// Row 6: agent memory as workloads grow. Runs first, before the large policies leave
    /// their allocations in the agent's heap, and removes its workloads again.
    fn memory(&mut self, counts: &[usize]) {
        let mut made = Vec::new();
        let workloads = |b: &Self| b.status()["workloads"].as_u64().unwrap_or(0);
        let before = workloads(self);
        for &n in counts {
            while made.len() < n {
                made.push(self.root.child(&format!("w{}", made.len())));
            }
            assert!(
                eventually(Duration::from_secs(300), || workloads(self) >= before + n as u64),
                "{n} workloads enrolled"
            );
            std::thread::sleep(Duration::from_millis(600));
            self.row(&format!("memory/workloads/{n}"), json!({ "workloads": n, "agent_rss_kib": self.agent_rss_kib(), "map_memory_kib": self.map_memory_kib() }));
        }
        for dir in made {
            let _ = std::fs::remove_dir(dir);
        }
        assert!(eventually(Duration::from_secs(300), || workloads(self) == before), "the memory row's workloads removed");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only connect,nft,update,events,files,memory`: a subset of the rows (while working on one).
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let out = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).map_or_else(|| PathBuf::from("target/bench"), PathBuf::from);
    std::fs::create_dir_all(&out).expect("out dir");
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let net = TestNet::new(3);
    let root = TestCgroup::new();
    let outside = TestCgroup::new();
    let pins = TestPins::new();
    let _ = root.child("bench");
    let agent = AgentProcess::start(
        &root,
        &pins,
        "default_network = \"deny\"\ndefault_file = \"allow\"\n[[workload]]\ncgroup = \"bench\"\nlabels = { app = \"bench\" }\n",
    );
    let _server = listen_in(net.host(1), None, "tcp", SERVER);
    let mut b = Bench { quick, round: Duration::from_millis(if quick { 1000 } else { 3000 }), net, root, outside, pins, agent, results: BTreeMap::new() };
    // The agent's rows go to 100k rules in both runs (its cost should not grow with them); the
    // nftables chain at 100k rules takes minutes to load and to connect through, so only the
    // full run has it.
    let counts: &[usize] = &[10, 1000, 10_000, 100_000];
    let nft_counts: &[usize] = if b.quick { &[10, 1000, 10_000] } else { counts };
    let started = Instant::now();
    let wanted = |row: &str| only.as_ref().is_none_or(|o| o.split(',').any(|x| x == row));
    if wanted("memory") {
        b.memory(if b.quick { &[10, 100, 1000] } else { &[10, 100, 1000, 10_000] });
    }
    if wanted("connect") {
        b.floor();
        b.agent_connects(counts);
    }
    if wanted("nft") {
        b.nft_connects(nft_counts);
    }
    if wanted("tokens") {
        b.tokens();
    }
    if wanted("update") {
        b.load_policy(&policy(10, 0));
        b.update_latency(if b.quick { 10 } else { 50 });
        b.swap(if b.quick { 10_000 } else { 100_000 });
    }
    if wanted("events") {
        b.load_policy(&policy(10, 0));
        b.events(&[1, 2, 4]);
    }
    if wanted("files") {
        b.files();
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    // `--merge FILE`: rows of another run (the VM's) join this report, keyed as they were.
    if let Some(file) = args.iter().position(|a| a == "--merge").and_then(|i| args.get(i + 1)) {
        let other: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}")))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        for (k, v) in other["results"].as_object().into_iter().flatten() {
            b.results.insert(k.clone(), v.clone());
        }
    }
    let report = json!({ "quick": quick, "seconds": started.elapsed().as_secs_f64(), "kernel": kernel(), "results": b.results });
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&report).expect("json")).expect("results.json");
    let md = markdown(&report);
    std::fs::write(out.join("results.md"), &md).expect("results.md");
    print!("{md}");
}

fn kernel() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

fn markdown(report: &Value) -> String {
    let r = &report["results"];
    let mut o = String::new();
    let _ = writeln!(o, "Kernel {}; {} run, {:.0} s.\n", report["kernel"].as_str().unwrap_or("?"), if report["quick"] == true { "quick" } else { "full" }, report["seconds"].as_f64().unwrap_or(0.0));
    let _ = writeln!(o, "### 1. TCP connect+close between two namespaces (interleaved with a no-hook baseline)\n");
    let _ = writeln!(o, "| setup | rules | connects/s | no hook connects/s | ratio | p50 µs | p99 µs | no hook p50 / p99 µs |");
    let _ = writeln!(o, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut ratio_at = BTreeMap::new();
    for (key, v) in r.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("connect/")) {
        let kind = key.split('/').nth(1).unwrap_or("?");
        let (s, b) = (&v["subject"], &v["baseline"]);
        let ratio = s["rate"].as_f64().unwrap_or(0.0) / b["rate"].as_f64().unwrap_or(1.0);
        ratio_at.insert((kind.to_owned(), v["rules"].as_u64().unwrap_or(0)), ratio);
        let _ = writeln!(
            o,
            "| {kind} | {} | {:.0} | {:.0} | {ratio:.3} | {:.1} | {:.1} | {:.1} / {:.1} |",
            v["rules"], s["rate"].as_f64().unwrap_or(0.0), b["rate"].as_f64().unwrap_or(0.0),
            s["p50_us"].as_f64().unwrap_or(0.0), s["p99_us"].as_f64().unwrap_or(0.0),
            b["p50_us"].as_f64().unwrap_or(0.0), b["p99_us"].as_f64().unwrap_or(0.0)
        );
    }
    let _ = writeln!(o, "\n### 2. Kernel cost per decision (`connect4`, bpf_stats run_time_ns / run_cnt)\n\n| rules | ns / decision | decisions | apply s | agent RSS KiB | map memory KiB |\n| ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut ns_at = BTreeMap::new();
    for (_, v) in r.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("connect/agent/")) {
        ns_at.insert(v["rules"].as_u64().unwrap_or(0), v["connect4_ns_per_decision"].as_f64().unwrap_or(0.0));
        let _ = writeln!(o, "| {} | {:.0} | {} | {:.2} | {} | {} |", v["rules"], v["connect4_ns_per_decision"].as_f64().unwrap_or(0.0), v["decisions"], v["apply_seconds"].as_f64().unwrap_or(0.0), v["agent_rss_kib"], v["map_memory_kib"]);
    }
    let floor = &r["connect/empty-program/0"];
    if !floor.is_null() {
        let _ = writeln!(o, "\nFloor: a `connect4` program that only returns \"allow\" (`r0 = 1; exit`), attached the same way, costs {:.0} ns per decision here ({} decisions), `bpf_stats` accounting included.", floor["connect4_ns_per_decision"].as_f64().unwrap_or(0.0), floor["decisions"]);
    }
    let t = &r["tokens"];
    if !t.is_null() {
        let (s, b) = (&t["subject"], &t["baseline"]);
        let ns = |k: &str| t["programs"][k]["ns_per_run"].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            o,
            "\nWith identity tokens (host A stamps, host B verifies; {} SYNs verified): connect rate {:.0}/s against {:.0}/s with no hook (ratio {:.3}), p50 {:.1} µs against {:.1} µs.\n\n| program | ns / run | runs |\n| --- | ---: | ---: |",
            t["tokens_verified"], s["rate"].as_f64().unwrap_or(0.0), b["rate"].as_f64().unwrap_or(0.0),
            s["rate"].as_f64().unwrap_or(0.0) / b["rate"].as_f64().unwrap_or(1.0), s["p50_us"].as_f64().unwrap_or(0.0), b["p50_us"].as_f64().unwrap_or(0.0)
        );
        for (key, label) in [("a_connect4", "host A `connect4` (decision, socket serial recorded)"), ("a_stamp", "host A `stamp` (`sock_ops`: every callback, the SYN's token written)"), ("b_ingress", "host B `ingress` (`cgroup_skb`: every packet, the SYN's token checked)")] {
            let _ = writeln!(o, "| {label} | {:.0} | {} |", ns(key), t["programs"][key]["runs"]);
        }
    }
    let _ = writeln!(o, "\n### 3. Policy updates\n\n| change | count | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |");
    for key in ["update/api", "update/policy_dir"] {
        let v = &r[key];
        let _ = writeln!(o, "| {} | {} | {:.1} | {:.1} | {:.1} |", key.trim_start_matches("update/"), v["changes"], v["p50_ms"].as_f64().unwrap_or(0.0), v["p99_ms"].as_f64().unwrap_or(0.0), v["max_ms"].as_f64().unwrap_or(0.0));
    }
    for (_, v) in r.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("update/swap/")) {
        let _ = writeln!(o, "\nReplacing {} entries: {:.2} s from the file write to the new set in force; wrong verdicts (denials) seen by a prober during the swap: {}; its connects that failed otherwise: {}.", v["entries"], v["seconds"].as_f64().unwrap_or(0.0), v["wrong_verdicts"], v["other_failures"]);
    }
    let _ = writeln!(o, "\n### 4. Events\n\n| load processes | denied connects/s | events delivered/s | lost/s |\n| ---: | ---: | ---: | ---: |");
    for (_, v) in r.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("events/")) {
        let _ = writeln!(o, "| {} | {:.0} | {:.0} | {:.0} |", v["processes"], v["events_per_second"].as_f64().unwrap_or(0.0), v["delivered_per_second"].as_f64().unwrap_or(0.0), v["lost_per_second"].as_f64().unwrap_or(0.0));
    }
    let _ = writeln!(o, "\n### 5. File opens\n\n| where | mechanism | without FilePolicy opens/s | with FilePolicy opens/s | ratio | allowed opens denied |\n| --- | --- | ---: | ---: | ---: | ---: |");
    for (key, place) in [("files/host", "this host"), ("files/vm", "QEMU VM (TCG)")] {
        let f = &r[key];
        if f.is_null() {
            let _ = writeln!(o, "| {place} | not run | | | | |");
            continue;
        }
        let (without, with) = (f["without_policy_per_second"].as_f64().unwrap_or(0.0), f["with_policy_per_second"].as_f64().unwrap_or(0.0));
        let _ = writeln!(o, "| {place} | {} | {without:.0} | {with:.0} | {:.3} | {} |", f["mechanism"].as_str().unwrap_or("?"), with / without.max(1.0), f["wrongly_denied"]);
    }
    let _ = writeln!(o, "\n### 6. Memory as workloads grow\n\n| workloads | agent RSS KiB | map memory KiB |\n| ---: | ---: | ---: |");
    for (_, v) in r.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("memory/")) {
        let _ = writeln!(o, "| {} | {} | {} |", v["workloads"], v["agent_rss_kib"], v["map_memory_kib"]);
    }
    let _ = writeln!(o, "\n### Targets\n");
    let top = ns_at.keys().max().copied().unwrap_or(0);
    let agent10k = ratio_at.get(&("agent".to_owned(), 10_000)).copied().unwrap_or(0.0);
    let set10k = ratio_at.get(&("nft-set".to_owned(), 10_000)).copied().unwrap_or(0.0);
    let p99 = r["update/api"]["p99_ms"].as_f64().unwrap_or(f64::NAN);
    // The highest event rate delivered without loss (the target: 100k/s).
    let lossless = r
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| k.starts_with("events/") && v["lost_per_second"].as_f64() == Some(0.0))
        .map(|(_, v)| v["events_per_second"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let _ = writeln!(o, "- connect rate within 5% of no hook at 10k rules: ratio {agent10k:.3} — {}", verdict(agent10k >= 0.95));
    let _ = writeln!(o, "- at least the nftables set's rate at 10k rules: {agent10k:.3} vs {set10k:.3} — {}", verdict(agent10k >= set10k));
    let _ = writeln!(o, "- under 300 ns per decision at 100k rules (largest measured here: {top}): {:.0} ns — {}", ns_at.get(&top).copied().unwrap_or(0.0), verdict(top >= 100_000 && ns_at.get(&top).copied().unwrap_or(f64::MAX) < 300.0));
    let _ = writeln!(o, "- a policy change visible within 10 ms p99: {p99:.1} ms — {}", verdict(p99 <= 10.0));
    let _ = writeln!(o, "- no event loss at 100k events/s: highest rate with none lost {lossless:.0}/s — {}", verdict(lossless >= 100_000.0));
    o
}
