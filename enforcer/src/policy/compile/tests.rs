use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use enforcer_common::{
    Verdict,
    identity::FIRST_CIDR,
    net::{DIR_EGRESS, DIR_INGRESS, PROTO_TCP, PROTO_UDP},
};
use proptest::prelude::*;

use super::*;
use crate::policy::{Action, Cidr, Mode, NetRule, NetworkPolicy, Peer, PortSpec, Protocol, Selector, Source};

fn src() -> Source {
    Source { file: PathBuf::from("t.yaml"), line: 1 }
}

fn ep(identity: u32, tags: &[(&str, &str)], addrs: &[&str]) -> Endpoint {
    Endpoint {
        identity,
        name: format!("w{identity}"),
        tags: tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        addresses: addrs.iter().map(|a| a.parse().expect("addr")).collect(),
    }
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("selector")
}

fn rule(peer: Peer, ports: &[(Protocol, u16, u16)], action: Action) -> NetRule {
    NetRule {
        peer,
        ports: ports.iter().map(|&(proto, lo, hi)| PortSpec { proto, lo, hi }).collect(),
        action,
        source: src(),
    }
}

fn policy(name: &str, subject: &str, egress: Option<Vec<NetRule>>, ingress: Option<Vec<NetRule>>, mode: Mode) -> NetworkPolicy {
    NetworkPolicy { name: name.into(), mode, subject: sel(subject), egress, ingress, source: src() }
}

fn kernel(c: &Compiled, l: u32, r: u32, proto: u8, port: u16, dir: u8, posture: Verdict) -> Verdict {
    lookup(c, l, r, proto, port, dir).map_or(posture, |v| Verdict::from_u8(v.verdict).expect("verdict"))
}

#[expect(clippy::too_many_arguments, reason = "one decision's whole context, spelled out")]
/// The semantics, written independently of the compiler: first deny wins, else first allow,
/// else the allow-list default; audit when every selecting policy audits.
fn oracle(policies: &[NetworkPolicy], eps: &[Endpoint], cidrs: &BTreeMap<Cidr, u32>, l: &Endpoint, r: u32, proto: u8, port: u16, dir: Direction, posture: Verdict) -> Verdict {
    let selecting: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| p.subject.matches(&l.tags) && if dir == Direction::Egress { p.egress.is_some() } else { p.ingress.is_some() })
        .collect();
    if selecting.is_empty() {
        return posture;
    }
    let audit = selecting.iter().all(|p| p.mode == Mode::Audit);
    let remote_ep = eps.iter().find(|e| e.identity == r);
    let applies = |rule: &NetRule| {
        let peer = match &rule.peer {
            Peer::Any => true,
            Peer::Selector(s) => remote_ep.is_some_and(|e| s.matches(&e.tags)),
            Peer::Cidrs(cs) => cs.iter().any(|c| {
                remote_ep.is_some_and(|e| e.addresses.iter().any(|a| cidr_contains(c, *a)))
                    || cidrs.iter().any(|(x, id)| *id == r && x.len >= c.len && cidr_contains(c, x.addr))
            }),
        };
        let ports = rule.ports.is_empty()
            || rule.ports.iter().any(|p| proto_byte(p.proto) == proto && p.lo <= port && port <= p.hi);
        peer && ports
    };
    let rules: Vec<&NetRule> = selecting
        .iter()
        .flat_map(|p| if dir == Direction::Egress { p.egress.iter().flatten() } else { p.ingress.iter().flatten() })
        .collect();
    let denied = if audit { Verdict::Audit } else { Verdict::Deny };
    if rules.iter().any(|r| r.action == Action::Deny && applies(r)) {
        return denied;
    }
    if rules.iter().any(|r| applies(r)) {
        return Verdict::Allow;
    }
    denied
}

#[test]
fn unselected_workloads_get_no_entries() {
    let eps = [ep(300, &[("app", "web")], &[])];
    let c = compile(&[policy("p", "app=db", Some(vec![]), None, Mode::Enforce)], &eps);
    assert!(c.exact.is_empty() && c.blocks.is_empty());
}

#[test]
fn allow_to_selector_on_a_port_and_default_deny() {
    let eps = [ep(300, &[("app", "web")], &["10.0.0.1"]), ep(301, &[("app", "db")], &["10.0.0.2"])];
    let p = policy("web", "app=web", Some(vec![rule(Peer::Selector(sel("app=db")), &[(Protocol::Tcp, 5432, 5432)], Action::Allow)]), None, Mode::Enforce);
    let c = compile(std::slice::from_ref(&p), &eps);
    let k = |r, port| kernel(&c, 300, r, PROTO_TCP, port, DIR_EGRESS, Verdict::Allow);
    assert_eq!(k(301, 5432), Verdict::Allow);
    assert_eq!(k(301, 5433), Verdict::Deny);
    assert_eq!(k(1, 5432), Verdict::Deny, "WORLD is not app=db");
    assert_eq!(kernel(&c, 300, 301, PROTO_UDP, 5432, DIR_EGRESS, Verdict::Allow), Verdict::Deny);
    assert_eq!(kernel(&c, 300, 301, PROTO_TCP, 5432, DIR_INGRESS, Verdict::Allow), Verdict::Allow, "ingress untouched: posture");
    assert_eq!(c.ipcache.get(&(enforcer_common::net::v4_mapped([10, 0, 0, 2]), 128)), Some(&301));
    assert_eq!(remote_of(&c, "10.0.0.2".parse().expect("addr")), 301);
    assert_eq!(remote_of(&c, "10.0.0.9".parse().expect("addr")), enforcer_common::identity::WORLD);
    let v = c.exact.get(&(300, 301, PROTO_TCP, DIR_EGRESS, 5432)).expect("exact entry");
    assert_eq!(describe(&c, v.rule_id).map(ToString::to_string).as_deref(), Some("web egress[0] (allow)"));
}

#[test]
fn deny_wins_and_audit_reports() {
    let eps = [ep(300, &[("app", "web")], &[]), ep(301, &[("app", "db")], &[])];
    let rules = vec![
        rule(Peer::Selector(sel("app=db")), &[], Action::Allow),
        rule(Peer::Any, &[(Protocol::Tcp, 22, 22)], Action::Deny),
    ];
    let c = compile(&[policy("p", "app=web", Some(rules.clone()), None, Mode::Enforce)], &eps);
    assert_eq!(kernel(&c, 300, 301, PROTO_TCP, 80, DIR_EGRESS, Verdict::Allow), Verdict::Allow);
    assert_eq!(kernel(&c, 300, 301, PROTO_TCP, 22, DIR_EGRESS, Verdict::Allow), Verdict::Deny);
    assert_eq!(kernel(&c, 300, 301, 1, 0, DIR_EGRESS, Verdict::Allow), Verdict::Allow, "other protocols: rules without ports");
    let c = compile(&[policy("p", "app=web", Some(rules), None, Mode::Audit)], &eps);
    assert_eq!(kernel(&c, 300, 301, PROTO_TCP, 22, DIR_EGRESS, Verdict::Allow), Verdict::Audit);
    assert_eq!(kernel(&c, 300, 1, PROTO_TCP, 80, DIR_EGRESS, Verdict::Allow), Verdict::Audit);
}

#[test]
fn port_ranges_are_exact() {
    let eps = [ep(300, &[("app", "web")], &[])];
    let p = policy("p", "app=web", Some(vec![rule(Peer::Any, &[(Protocol::Tcp, 8000, 8080), (Protocol::Udp, 1, 1023)], Action::Allow)]), None, Mode::Enforce);
    let c = compile(&[p], &eps);
    for port in [0u16, 1, 7999, 8000, 8001, 8064, 8079, 8080, 8081, 65535] {
        let expected = if (8000..=8080).contains(&port) { Verdict::Allow } else { Verdict::Deny };
        assert_eq!(kernel(&c, 300, 1, PROTO_TCP, port, DIR_EGRESS, Verdict::Allow), expected, "tcp/{port}");
    }
    assert_eq!(kernel(&c, 300, 1, PROTO_UDP, 1023, DIR_EGRESS, Verdict::Allow), Verdict::Allow);
    assert_eq!(kernel(&c, 300, 1, PROTO_UDP, 1024, DIR_EGRESS, Verdict::Allow), Verdict::Deny);
    assert!(c.blocks.len() < 40, "ranges stay compact: {}", c.blocks.len());
}

#[test]
fn cidrs_get_identities_and_cover_endpoints_inside() {
    let eps = [ep(300, &[("app", "web")], &["10.1.0.5"]), ep(301, &[("app", "db")], &["10.1.2.3"]), ep(302, &[], &["10.1.2.3"])];
    let cidr = |s: &str| {
        let (a, l) = s.split_once('/').expect("cidr");
        Cidr { addr: a.parse::<IpAddr>().expect("addr"), len: l.parse().expect("len") }
    };
    let p = policy("p", "app=web", Some(vec![rule(Peer::Cidrs(vec![cidr("10.0.0.0/8")]), &[], Action::Allow), rule(Peer::Cidrs(vec![cidr("10.9.0.0/16")]), &[], Action::Deny)]), None, Mode::Enforce);
    let c = compile(&[p], &eps);
    assert_eq!(c.cidrs.len(), 2);
    let outer = c.cidrs[&cidr("10.0.0.0/8")];
    let inner = c.cidrs[&cidr("10.9.0.0/16")];
    assert_eq!((outer, inner), (FIRST_CIDR, FIRST_CIDR + 1));
    assert_eq!(c.ipcache.get(&(enforcer_common::net::v4_mapped([10, 0, 0, 0]), 104)), Some(&outer));
    assert!(!c.ipcache.contains_key(&(enforcer_common::net::v4_mapped([10, 1, 2, 3]), 128)), "shared address maps to no identity");
    assert_eq!(kernel(&c, 300, outer, PROTO_TCP, 1, DIR_EGRESS, Verdict::Allow), Verdict::Allow);
    assert_eq!(kernel(&c, 300, inner, PROTO_TCP, 1, DIR_EGRESS, Verdict::Allow), Verdict::Deny);
    assert_eq!(kernel(&c, 300, 300, PROTO_TCP, 1, DIR_EGRESS, Verdict::Allow), Verdict::Allow, "an endpoint inside the CIDR");
    assert_eq!(kernel(&c, 300, 1, PROTO_TCP, 1, DIR_EGRESS, Verdict::Allow), Verdict::Deny, "WORLD");
}

#[test]
fn block_decomposition_covers_exactly() {
    for (lo, hi) in [(0u16, 65535u16), (1, 1), (1, 65535), (8000, 8080), (1023, 1025), (65535, 65535)] {
        let bs = ports::blocks(lo, hi);
        let covered: u32 = bs.iter().map(|b| 1u32 << (16 - b.bits)).sum();
        assert_eq!(covered, u32::from(hi) - u32::from(lo) + 1, "{lo}-{hi}");
        for b in &bs {
            let size = 1u32 << (16 - b.bits);
            assert_eq!(u32::from(b.port) % size, 0, "aligned");
        }
    }
}

fn arb_rule(n_tags: usize) -> impl Strategy<Value = NetRule> {
    let peer = prop_oneof![
        Just(Peer::Any),
        (0..n_tags).prop_map(|t| Peer::Selector(sel(&format!("t{t}")))),
        (0u8..3, 8u8..=24).prop_map(|(x, len)| {
            let a = u32::from_be_bytes([10, x, 0, 0]) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            Peer::Cidrs(vec![Cidr { addr: IpAddr::V4(a.into()), len }])
        }),
    ];
    let port = (prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)], 1u16..40, 0u16..20).prop_map(|(p, lo, w)| (p, lo, lo.saturating_add(w)));
    (peer, proptest::collection::vec(port, 0..3), any::<bool>()).prop_map(|(peer, ports, deny)| {
        rule(peer, &ports, if deny { Action::Deny } else { Action::Allow })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn kernel_lookup_of_compiled_state_matches_the_semantics(
        rules in proptest::collection::vec((arb_rule(3), any::<bool>(), 0usize..3, any::<bool>()), 1..6),
        addrs in proptest::collection::vec(0u8..3, 4),
    ) {
        let eps: Vec<Endpoint> = (0..4u32)
            .map(|i| {
                let tag = format!("t{}", i % 3);
                let addr = format!("10.{}.0.{}", addrs[i as usize], i + 1);
                ep(300 + i, &[(tag.as_str(), "x")], &[addr.as_str()])
            })
            .collect();
        let policies: Vec<NetworkPolicy> = rules
            .into_iter()
            .enumerate()
            .map(|(i, (r, egress, subject, audit))| {
                let list = Some(vec![r]);
                let (e, ing) = if egress { (list, None) } else { (None, list) };
                policy(&format!("p{i}"), &format!("t{subject}"), e, ing, if audit { Mode::Audit } else { Mode::Enforce })
            })
            .collect();
        let c = compile(&policies, &eps);
        let mut remotes: Vec<u32> = eps.iter().map(|e| e.identity).collect();
        remotes.extend(c.cidrs.values());
        remotes.push(enforcer_common::identity::WORLD);
        for l in &eps {
            for &r in &remotes {
                for (dir, dbyte) in [(Direction::Egress, DIR_EGRESS), (Direction::Ingress, DIR_INGRESS)] {
                    for proto in [PROTO_TCP, PROTO_UDP, 1] {
                        for port in [0u16, 1, 5, 19, 20, 21, 39, 40, 58, 59, 60, 1000] {
                            let want = oracle(&policies, &eps, &c.cidrs, l, r, proto, if proto == 1 { 0 } else { port }, dir, Verdict::Allow);
                            let got = kernel(&c, l.identity, r, proto, port, dbyte, Verdict::Allow);
                            prop_assert_eq!(got, want, "l={} r={} proto={} port={} {:?}", l.identity, r, proto, port, dir);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn remote_workloads_are_selectable_peers_but_never_subjects_or_address_owners() {
    let locals = [ep(300, &[("app", "srv")], &["10.0.0.3"])];
    // A remote workload tagged like a subject, with an address it claims.
    let remotes = [ep(0x0010_0000, &[("app", "good")], &["10.0.0.2"]), ep(0x0010_0001, &[("app", "srv")], &["10.0.0.9"])];
    let p = policy("srv", "app=srv", None, Some(vec![rule(Peer::Selector(sel("app=good")), &[(Protocol::Tcp, 80, 80)], Action::Allow)]), Mode::Enforce);
    let c = compile_with_remotes(std::slice::from_ref(&p), &locals, &remotes);
    assert_eq!(kernel(&c, 300, 0x0010_0000, PROTO_TCP, 80, DIR_INGRESS, Verdict::Allow), Verdict::Allow, "verified remote admitted");
    assert_eq!(kernel(&c, 300, 0x0010_0001, PROTO_TCP, 80, DIR_INGRESS, Verdict::Allow), Verdict::Deny, "other remote not");
    assert!(c.exact.keys().all(|k| k.0 == 300), "remotes are never subjects");
    assert_eq!(remote_of(&c, "10.0.0.2".parse().expect("addr")), enforcer_common::identity::WORLD, "no address identity for remotes");
    assert_eq!(compile(std::slice::from_ref(&p), &locals), compile_with_remotes(std::slice::from_ref(&p), &locals, &[]));
}
