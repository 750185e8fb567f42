//! Prometheus metrics at `metrics_addr` (`GET /metrics`, text exposition format 0.0.4): decisions
//! by kind and verdict, events delivered and lost, workloads, policies, compile and apply
//! durations, map fill levels and whether each enforcement point is attached.
//!
//! Rendering is a pure function of a [`Snapshot`], which the state takes under its lock; the
//! HTTP side only serves the text.

use std::{
    convert::Infallible,
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::State;
use crate::datapath::Counters;

/// Everything the metrics report, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Agent version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_seconds: u64,
    /// Decisions and lost events, kernel and fanotify together.
    pub counters: Counters,
    /// Events handed to `enforcer flows` and the log.
    pub events_delivered: u64,
    /// Enrolled workloads.
    pub workloads: usize,
    /// Policies in force.
    pub policies: usize,
    /// Policy changes kept out (the previous policy stays in force).
    pub policy_errors: usize,
    /// The last compile and apply, in seconds.
    pub compile_seconds: f64,
    /// See `compile_seconds`.
    pub apply_seconds: f64,
    /// Applies done and failed since start.
    pub applies: u64,
    /// See `applies`.
    pub apply_failures: u64,
    /// (map, entries, capacity).
    pub maps: Vec<(&'static str, usize, u32)>,
    /// (hook, attached).
    pub points: Vec<(String, bool)>,
    /// `bpf-lsm`, `fanotify` or `unavailable`.
    pub file_mechanism: String,
    /// Identity tokens by result (with `[cluster]`).
    pub tokens: std::collections::BTreeMap<String, u64>,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The exposition text of `s`.
#[must_use]
pub fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    family(&mut o, "enforcer_build_info", "gauge", "Agent version.");
    let _ = writeln!(o, "enforcer_build_info{{version=\"{}\"}} 1", s.version);
    family(&mut o, "enforcer_uptime_seconds", "gauge", "Seconds since the agent started.");
    let _ = writeln!(o, "enforcer_uptime_seconds {}", s.uptime_seconds);
    family(&mut o, "enforcer_decisions_total", "counter", "Decisions by kind (network, file) and verdict.");
    for (kind, c) in [("network", s.counters.network), ("file", s.counters.file)] {
        for (verdict, n) in [("allow", c.allow), ("deny", c.deny), ("audit", c.audit)] {
            let _ = writeln!(o, "enforcer_decisions_total{{kind=\"{kind}\",verdict=\"{verdict}\"}} {n}");
        }
    }
    family(&mut o, "enforcer_events_lost_total", "counter", "Decision events dropped because the buffer was full.");
    for (kind, c) in [("network", s.counters.network), ("file", s.counters.file)] {
        let _ = writeln!(o, "enforcer_events_lost_total{{kind=\"{kind}\"}} {}", c.lost);
    }
    family(&mut o, "enforcer_events_delivered_total", "counter", "Decision events read and delivered to flows and logs.");
    let _ = writeln!(o, "enforcer_events_delivered_total {}", s.events_delivered);
    family(&mut o, "enforcer_workloads", "gauge", "Enrolled workloads.");
    let _ = writeln!(o, "enforcer_workloads {}", s.workloads);
    family(&mut o, "enforcer_policies", "gauge", "Policies in force.");
    let _ = writeln!(o, "enforcer_policies {}", s.policies);
    family(&mut o, "enforcer_policy_errors", "gauge", "Policy changes rejected (the previous policy stays in force).");
    let _ = writeln!(o, "enforcer_policy_errors {}", s.policy_errors);
    family(&mut o, "enforcer_compile_seconds", "gauge", "Duration of the last policy compile.");
    let _ = writeln!(o, "enforcer_compile_seconds {}", s.compile_seconds);
    family(&mut o, "enforcer_apply_seconds", "gauge", "Duration of the last compile and kernel write.");
    let _ = writeln!(o, "enforcer_apply_seconds {}", s.apply_seconds);
    family(&mut o, "enforcer_applies_total", "counter", "Compiled state written to the kernel.");
    let _ = writeln!(o, "enforcer_applies_total {}", s.applies);
    family(&mut o, "enforcer_apply_failures_total", "counter", "Kernel writes that failed (the previous state stayed in force).");
    let _ = writeln!(o, "enforcer_apply_failures_total {}", s.apply_failures);
    family(&mut o, "enforcer_map_entries", "gauge", "Entries in each pinned map.");
    for (map, n, _) in &s.maps {
        let _ = writeln!(o, "enforcer_map_entries{{map=\"{map}\"}} {n}");
    }
    family(&mut o, "enforcer_map_capacity", "gauge", "Capacity of each pinned map.");
    for (map, _, cap) in &s.maps {
        let _ = writeln!(o, "enforcer_map_capacity{{map=\"{map}\"}} {cap}");
    }
    family(&mut o, "enforcer_enforcement_point_up", "gauge", "1 when the enforcement point is attached.");
    for (hook, up) in &s.points {
        let _ = writeln!(o, "enforcer_enforcement_point_up{{hook=\"{hook}\"}} {}", u8::from(*up));
    }
    if !s.tokens.is_empty() {
        family(&mut o, "enforcer_tokens_total", "counter", "Identity tokens: SYNs stamped, verified and rejected by reason.");
        for (result, n) in &s.tokens {
            let _ = writeln!(o, "enforcer_tokens_total{{result=\"{result}\"}} {n}");
        }
    }
    family(&mut o, "enforcer_file_enforcement", "gauge", "The file enforcement mechanism in use.");
    let _ = writeln!(o, "enforcer_file_enforcement{{mechanism=\"{}\"}} 1", s.file_mechanism);
    o
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(respond(&req, &state)) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn respond(req: &Request<hyper::body::Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "metrics are at /metrics\n".to_owned());
    }
    let snapshot = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).metrics();
    match snapshot {
        Ok(s) => reply(StatusCode::OK, "text/plain; version=0.0.4", render(&s)),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("reading counters: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_labels() {
        let mut s = Snapshot { version: "0.1.0".into(), workloads: 3, policies: 2, ..Snapshot::default() };
        s.counters.network.deny = 7;
        s.counters.file.lost = 1;
        s.maps = vec![("ENF_WORKLOADS", 4, 65_536)];
        s.points = vec![("cgroup/connect4".into(), true), ("lsm/file_open".into(), false)];
        s.file_mechanism = "fanotify".into();
        let text = render(&s);
        for line in [
            "enforcer_decisions_total{kind=\"network\",verdict=\"deny\"} 7",
            "enforcer_events_lost_total{kind=\"file\"} 1",
            "enforcer_workloads 3",
            "enforcer_policies 2",
            "enforcer_map_entries{map=\"ENF_WORKLOADS\"} 4",
            "enforcer_map_capacity{map=\"ENF_WORKLOADS\"} 65536",
            "enforcer_enforcement_point_up{hook=\"lsm/file_open\"} 0",
            "enforcer_file_enforcement{mechanism=\"fanotify\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        // Every sample belongs to a declared family.
        let declared: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap_or_default();
            assert!(declared.contains(&name), "{name} has no TYPE line");
        }
    }
}
