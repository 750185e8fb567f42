use std::path::PathBuf;

use enforcer_common::Verdict;
use proptest::prelude::*;

use super::*;
use crate::policy::{Access, Action, FilePolicy, FileRule, Mode, Selector, Source};

fn src() -> Source {
    Source { file: PathBuf::from("t.yaml"), line: 1 }
}

fn rule(paths: &[&str], access: &[Access], action: Action) -> FileRule {
    FileRule { paths: paths.iter().map(|p| (*p).to_owned()).collect(), access: access.to_vec(), action, source: src() }
}

fn policy(name: &str, rules: Vec<FileRule>, mode: Mode) -> FilePolicy {
    FilePolicy { name: name.into(), mode, subject: Selector::parse("app=web").expect("selector"), rules, source: src() }
}

fn web() -> Vec<Endpoint> {
    vec![Endpoint {
        identity: 300,
        name: "web".into(),
        tags: [("app".to_owned(), "web".to_owned())].into_iter().collect(),
        addresses: vec![],
    }]
}

fn verdict(c: &FileCompiled, path: &str, a: Access) -> Verdict {
    lookup(c, 300, path).map_or(Verdict::Allow, |e| e.verdicts[access_index(a)])
}

/// The design's example: system dirs readable and executable, a data dir read-write, a
/// denied file inside an allowed subtree.
fn example(mode: Mode) -> FileCompiled {
    compile_files(
        &[policy(
            "web-files",
            vec![
                rule(&["/etc/", "/usr/"], &[Access::Read, Access::Exec], Action::Allow),
                rule(&["/var/lib/web/"], &[Access::Read, Access::Write], Action::Allow),
                rule(&["/etc/shadow"], &[], Action::Deny),
            ],
            mode,
        )],
        &web(),
    )
}

#[test]
fn the_design_example() {
    let c = example(Mode::Enforce);
    assert_eq!(verdict(&c, "/etc/hosts", Access::Read), Verdict::Allow);
    assert_eq!(verdict(&c, "/etc", Access::Read), Verdict::Allow, "the subtree's own directory");
    assert_eq!(verdict(&c, "/etc/shadow", Access::Read), Verdict::Deny, "denied file inside an allowed subtree");
    assert_eq!(verdict(&c, "/etc/shadowx", Access::Read), Verdict::Allow, "an exact rule is only that file");
    assert_eq!(verdict(&c, "/etc/hosts", Access::Write), Verdict::Deny, "read-only subtree");
    assert_eq!(verdict(&c, "/usr/bin/ls", Access::Exec), Verdict::Allow);
    assert_eq!(verdict(&c, "/tmp/x", Access::Exec), Verdict::Deny, "exec outside the exec rules");
    assert_eq!(verdict(&c, "/var/lib/web/db", Access::Write), Verdict::Allow);
    assert_eq!(verdict(&c, "/var/lib/webx", Access::Read), Verdict::Deny, "subtree boundary");
    assert_eq!(verdict(&c, "/home/x", Access::Read), Verdict::Deny, "allow-list default");
    let e = lookup(&c, 300, "/etc/shadow").expect("entry");
    assert_eq!(c.rules[e.rule_ids[0] as usize - 1], FileRuleInfo::Rule { policy: "web-files".into(), index: 2 });
    assert_eq!(lookup(&c, 301, "/etc/hosts"), None, "unselected: posture");
}

#[test]
fn audit_mode_audits_what_would_be_denied() {
    let c = example(Mode::Audit);
    assert_eq!(verdict(&c, "/etc/shadow", Access::Read), Verdict::Audit);
    assert_eq!(verdict(&c, "/home/x", Access::Read), Verdict::Audit);
    assert_eq!(verdict(&c, "/etc/hosts", Access::Read), Verdict::Allow);
}

#[test]
fn deny_wins_on_the_same_path() {
    let c = compile_files(
        &[policy("a", vec![rule(&["/srv/"], &[Access::Read], Action::Allow), rule(&["/srv/"], &[Access::Read], Action::Deny)], Mode::Enforce)],
        &web(),
    );
    assert_eq!(verdict(&c, "/srv/x", Access::Read), Verdict::Deny);
}

/// An independent statement of the semantics.
fn oracle(rules: &[FileRule], audit: bool, path: &str, a: Access) -> Verdict {
    let denied = if audit { Verdict::Audit } else { Verdict::Deny };
    let matches = |r: &str| match r.strip_suffix('/') {
        Some(d) => path.starts_with(r) || path == d || (d.is_empty() && path == "/"),
        None => r == path,
    };
    let mut best: Option<(usize, Action)> = None;
    for rule in rules.iter().filter(|r| r.access.is_empty() || r.access.contains(&a)) {
        for p in rule.paths.iter().filter(|p| matches(p)) {
            best = match best {
                Some((len, act)) if len > p.len() || (len == p.len() && act == Action::Deny) => Some((len, act)),
                _ => Some((p.len(), rule.action)),
            };
        }
    }
    match best {
        Some((_, Action::Allow)) => Verdict::Allow,
        Some((_, Action::Deny)) | None => denied,
    }
}

proptest! {
    #[test]
    fn table_lookup_matches_the_semantics(
        rules in proptest::collection::vec(
            (proptest::sample::select(vec!["/", "/a/", "/a/b/", "/a/b", "/a/c", "/b/", "/a"]),
             proptest::collection::vec(proptest::sample::select(vec![Access::Read, Access::Write, Access::Exec]), 0..3),
             any::<bool>()),
            1..6),
        audit in any::<bool>(),
    ) {
        let rules: Vec<FileRule> = rules
            .into_iter()
            .map(|(p, access, deny)| rule(&[p], &access, if deny { Action::Deny } else { Action::Allow }))
            .collect();
        let c = compile_files(&[policy("p", rules.clone(), if audit { Mode::Audit } else { Mode::Enforce })], &web());
        for path in ["/", "/a", "/a/b", "/a/b/c", "/a/c", "/a/cd", "/b", "/b/x", "/c"] {
            for a in ACCESSES {
                prop_assert_eq!(verdict(&c, path, a), oracle(&rules, audit, path, a), "{} {:?}", path, a);
            }
        }
    }
}

#[test]
fn an_open_is_judged_by_its_worst_access() {
    use enforcer_common::event::{ACCESS_EXEC, ACCESS_READ, ACCESS_WRITE};
    let e = FileEntry { verdicts: [Verdict::Allow, Verdict::Deny, Verdict::Audit], rule_ids: [1, 2, 3] };
    assert_eq!(e.decide(ACCESS_READ), (Verdict::Allow, 1));
    assert_eq!(e.decide(ACCESS_READ | ACCESS_WRITE), (Verdict::Deny, 2), "a read-write open of a read-only path");
    assert_eq!(e.decide(ACCESS_READ | ACCESS_EXEC), (Verdict::Audit, 3));
    assert_eq!(e.decide(ACCESS_READ | ACCESS_WRITE | ACCESS_EXEC), (Verdict::Deny, 2), "deny outranks audit");
    assert_eq!(e.decide(0).0, Verdict::Allow, "an open asking for no access (O_ACCMODE 3)");
}
