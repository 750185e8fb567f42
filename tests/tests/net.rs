//! Network enforcement on a real kernel: the connect programs deny exactly what the maps say,
//! only inside the managed cgroup subtree. Runs on the host and in the VM.

use enforcer_common::{
    NetRuleKey, NetRuleValue, Verdict, Workload,
    identity::{ANY, PENDING},
    net::{DIR_EGRESS, PROTO_TCP, PROTO_UDP},
};
use enforcer_tests::{
    Outcome, TcpServer, TestCgroup, TestPins, UdpServer, can_run, cgroup_id, datapath, drain, privileged_unavailable,
    probe,
};

const WEB: u32 = 300;

fn workload(identity: u32, egress: Verdict) -> Workload {
    Workload { identity, egress_default: egress as u8, ingress_default: Verdict::Deny as u8, file_default: Verdict::Allow as u8, flags: 0 }
}

fn rule(identity: u32, port: u16, proto: u8) -> NetRuleKey {
    NetRuleKey { identity, remote: ANY, port, proto, direction: DIR_EGRESS, generation: 0, _pad: [0; 3] }
}

fn verdict(v: Verdict, rule_id: u32) -> NetRuleValue {
    NetRuleValue { verdict: v as u8, _pad: [0; 3], rule_id }
}

#[test]
fn connect_denied_by_verdict_map_allowed_outside_and_after_change() {
    if !can_run("connect_denied_by_verdict_map", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let web = root.child("web");
    let mut dp = datapath(&root, &pins);
    let mut events = dp.take_events().expect("ring buffer");
    dp.set_workload(cgroup_id(&web), workload(WEB, Verdict::Allow)).expect("enrol");
    let server = TcpServer::start("127.0.0.1:0");
    let target = server.addr().to_string();
    dp.set_net_rule(rule(WEB, server.addr().port(), PROTO_TCP), verdict(Verdict::Deny, 7)).expect("rule");

    assert_eq!(probe(Some(&web), &["connect", &target]), Outcome::Denied, "inside the workload, denied");
    assert_eq!(probe(None, &["connect", &target]), Outcome::Ok, "outside the managed root, untouched");

    let records = drain(&mut events);
    let denied = records.iter().find_map(|r| match r {
        enforcer::events::Record::Network(n) if n.header.verdict == Verdict::Deny as u8 => Some(*n),
        _ => None,
    });
    let n = denied.expect("a deny event");
    assert_eq!((n.header.identity, n.header.rule_id, n.dst_port), (WEB, 7, server.addr().port()));
    assert_eq!(n.header.cgroup_id, cgroup_id(&web));
    assert_eq!(dp.counters().expect("counters").network.deny, 1);

    dp.set_net_rule(rule(WEB, server.addr().port(), PROTO_TCP), verdict(Verdict::Allow, 7)).expect("rule");
    assert_eq!(probe(Some(&web), &["connect", &target]), Outcome::Ok, "allowed after the verdict changed");
}

#[test]
fn nested_cgroups_resolve_to_the_nearest_enrolled_ancestor() {
    if !can_run("nested_cgroups", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let web = root.child("web");
    let deep = root.child("web/worker/thread");
    let stray = root.child("stray");
    let mut dp = datapath(&root, &pins);
    let server = TcpServer::start("127.0.0.1:0");
    let target = server.addr().to_string();
    // The root's own entry is the posture for cgroups not enrolled yet: allow here, so that
    // the deny below can only come from `web`'s entry.
    dp.set_workload(cgroup_id(root.path()), workload(PENDING, Verdict::Allow)).expect("root");
    dp.set_workload(cgroup_id(&web), workload(WEB, Verdict::Deny)).expect("enrol");

    assert_eq!(probe(Some(&deep), &["connect", &target]), Outcome::Denied, "a child cannot escape its workload");
    assert_eq!(probe(Some(&stray), &["connect", &target]), Outcome::Ok, "not enrolled: the root's posture");
    dp.set_workload(cgroup_id(root.path()), workload(PENDING, Verdict::Deny)).expect("root");
    assert_eq!(probe(Some(&stray), &["connect", &target]), Outcome::Denied, "root posture deny applies");
}

#[test]
fn no_root_entry_fails_closed() {
    if !can_run("no_root_entry_fails_closed", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let stray = root.child("new");
    let _dp = datapath(&root, &pins);
    let server = TcpServer::start("127.0.0.1:0");
    assert_eq!(probe(Some(&stray), &["connect", &server.addr().to_string()]), Outcome::Denied);
}

#[test]
fn ipv6_and_v4_mapped_connects_are_enforced() {
    if !can_run("ipv6_connects", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let web = root.child("web");
    let mut dp = datapath(&root, &pins);
    dp.set_workload(cgroup_id(&web), workload(WEB, Verdict::Allow)).expect("enrol");
    let v6 = TcpServer::start("[::1]:0");
    let v4 = TcpServer::start("127.0.0.1:0");
    dp.set_net_rule(rule(WEB, v6.addr().port(), PROTO_TCP), verdict(Verdict::Deny, 1)).expect("rule");
    dp.set_net_rule(rule(WEB, v4.addr().port(), PROTO_TCP), verdict(Verdict::Deny, 2)).expect("rule");

    assert_eq!(probe(Some(&web), &["connect", &v6.addr().to_string()]), Outcome::Denied);
    assert_eq!(probe(None, &["connect", &v6.addr().to_string()]), Outcome::Ok);
    // Through an AF_INET6 socket to an IPv4-mapped address: still the IPv4 rule.
    let mapped = format!("[::ffff:127.0.0.1]:{}", v4.addr().port());
    assert_eq!(probe(Some(&web), &["connect", &mapped]), Outcome::Denied);
    assert_eq!(probe(None, &["connect", &mapped]), Outcome::Ok);
}

#[test]
fn udp_connect_follows_the_protocol_of_the_rule() {
    if !can_run("udp_connect", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let web = root.child("web");
    let mut dp = datapath(&root, &pins);
    dp.set_workload(cgroup_id(&web), workload(WEB, Verdict::Allow)).expect("enrol");
    let udp = UdpServer::start("127.0.0.1:0");
    let target = udp.addr().to_string();
    // A TCP rule on the same port does not touch UDP.
    dp.set_net_rule(rule(WEB, udp.addr().port(), PROTO_TCP), verdict(Verdict::Deny, 1)).expect("rule");
    assert_eq!(probe(Some(&web), &["udp", &target]), Outcome::Ok);
    dp.set_net_rule(rule(WEB, udp.addr().port(), PROTO_UDP), verdict(Verdict::Deny, 2)).expect("rule");
    assert_eq!(probe(Some(&web), &["udp", &target]), Outcome::Denied);
}

#[test]
fn audit_lets_through_and_reports() {
    if !can_run("audit_lets_through", privileged_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let web = root.child("web");
    let mut dp = datapath(&root, &pins);
    let mut events = dp.take_events().expect("ring buffer");
    dp.set_workload(cgroup_id(&web), workload(WEB, Verdict::Audit)).expect("enrol");
    let server = TcpServer::start("127.0.0.1:0");
    assert_eq!(probe(Some(&web), &["connect", &server.addr().to_string()]), Outcome::Ok);
    let audited = drain(&mut events)
        .iter()
        .filter(|r| r.header().verdict == Verdict::Audit as u8 && r.header().identity == WEB)
        .count();
    assert_eq!(audited, 1);
    assert_eq!(dp.counters().expect("counters").network.audit, 1);
}
