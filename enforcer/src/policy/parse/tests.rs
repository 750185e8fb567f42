use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use crate::policy::{
    Access, Action, Cidr, FilePolicy, FileRule, Mode, NetRule, NetworkPolicy, Peer, PortSpec, Protocol,
    Selector, Source,
};

const EXAMPLE: &str = include_str!("../testdata/example.yaml");

fn file() -> &'static Path {
    Path::new("p.yaml")
}

fn src(line: usize) -> Source {
    Source { file: file().to_owned(), line }
}

fn sel(text: &str) -> Selector {
    Selector::parse(text).expect("test selector")
}

fn tcp(port: u16) -> PortSpec {
    PortSpec { proto: Protocol::Tcp, lo: port, hi: port }
}

fn cidr(text: &str) -> Cidr {
    let (addr, len) = text.split_once('/').expect("prefix");
    Cidr { addr: addr.parse().expect("address"), len: len.parse().expect("length") }
}

fn errors(text: &str) -> Vec<PolicyError> {
    match parse_str(file(), text) {
        Ok(p) => panic!("expected errors, parsed {p:?}"),
        Err(e) => e,
    }
}

/// The only error `text` has, as (line, field, message).
fn only_error(text: &str) -> (usize, String, String) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = errors.into_iter().next().expect("one error");
    (e.line, e.field, e.message)
}

/// A `NetworkPolicy` whose header takes lines 1-4, so `egress` rules start on line 5.
fn net(egress: &str) -> String {
    format!("kind: NetworkPolicy\nname: web\nsubject: app=web\negress:\n{egress}")
}

/// A `FilePolicy` whose header takes lines 1-4, so rules start on line 5.
fn files(rules: &str) -> String {
    format!("kind: FilePolicy\nname: fs\nsubject: app=web\nrules:\n{rules}")
}

#[test]
fn the_example_parses_to_the_model() {
    let policies = parse_str(file(), EXAMPLE).unwrap_or_else(|e| panic!("{e:#?}"));
    let network = Policy::Network(NetworkPolicy {
        name: "web-egress".to_owned(),
        mode: Mode::Enforce,
        subject: sel("app=web"),
        egress: Some(vec![
            NetRule {
                peer: Peer::Selector(sel("app=db")),
                ports: vec![tcp(5432)],
                action: Action::Allow,
                source: src(6),
            },
            NetRule {
                peer: Peer::Cidrs(vec![cidr("169.254.169.254/32")]),
                ports: vec![],
                action: Action::Deny,
                source: src(8),
            },
        ]),
        ingress: Some(vec![
            NetRule {
                peer: Peer::Selector(sel("app=web")),
                ports: vec![tcp(5432)],
                action: Action::Allow,
                source: src(11),
            },
            NetRule {
                peer: Peer::Cidrs(vec![cidr("10.0.0.0/8")]),
                ports: vec![],
                action: Action::Allow,
                source: src(13),
            },
        ]),
        source: src(1),
    });
    let file_policy = Policy::File(FilePolicy {
        name: "web-files".to_owned(),
        mode: Mode::Enforce,
        subject: sel("app=web"),
        rules: vec![
            FileRule {
                paths: vec!["/etc/ssl/".to_owned(), "/usr/".to_owned()],
                access: vec![Access::Read, Access::Exec],
                action: Action::Allow,
                source: src(19),
            },
            FileRule {
                paths: vec!["/var/lib/web/".to_owned()],
                access: vec![Access::Read, Access::Write],
                action: Action::Allow,
                source: src(21),
            },
            FileRule {
                paths: vec!["/etc/shadow".to_owned()],
                access: vec![],
                action: Action::Deny,
                source: src(23),
            },
        ],
        source: src(15),
    });
    assert_eq!(policies, vec![network, file_policy]);
}

#[test]
fn modes_ports_and_empty_lists() {
    let text = "\
# leading comment
---
kind: NetworkPolicy
name: quiet
mode: audit
subject: \"\"
egress: []
ingress:
  - ports: [UDP/53, tcp/8000-8080, tcp]
";
    let policies = parse_str(file(), text).unwrap_or_else(|e| panic!("{e:#?}"));
    let [Policy::Network(p)] = policies.as_slice() else { panic!("{policies:?}") };
    assert_eq!((p.mode, p.source.line), (Mode::Audit, 3));
    assert_eq!(p.subject, Selector::default());
    assert_eq!(p.egress, Some(vec![]));
    let ingress = p.ingress.as_deref().expect("ingress");
    assert_eq!(ingress[0].peer, Peer::Any);
    assert_eq!(
        ingress[0].ports,
        vec![
            PortSpec { proto: Protocol::Udp, lo: 53, hi: 53 },
            PortSpec { proto: Protocol::Tcp, lo: 8000, hi: 8080 },
            PortSpec { proto: Protocol::Tcp, lo: 1, hi: 65535 },
        ]
    );
    assert_eq!(ingress[0].source.line, 9);
}

#[test]
fn port_out_of_range_reports_its_line() {
    let text = net("  - to: app=db\n    ports: [\"tcp/99999\"]\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].to_string(), "p.yaml:6: field `egress[0].ports[0]`: port 99999 is out of range 1-65535");
}

#[test]
fn each_error_kind_has_its_line_and_field() {
    let cases: Vec<(String, usize, &str, &str)> = vec![
        // Unknown keys, top level and in a rule, with a hint for a miscased one.
        (
            "kind: NetworkPolicy\nname: web\nsubject: app=web\nsubjects: x\negress: []\n".to_owned(),
            4,
            "subjects",
            "unknown key `subjects`",
        ),
        (net("  - to: app=db\n    port: [tcp/1]\n"), 6, "egress[0].port", "unknown key `port`"),
        (net("  - toCidr: [10.0.0.0/8]\n"), 5, "egress[0].toCidr", "did you mean `toCIDR`?"),
        (net("  - from: app=db\n"), 5, "egress[0].from", "belongs in ingress rules"),
        // Values.
        (net("  - to: \"app=db env=prod\"\n"), 5, "egress[0].to", "invalid selector: expected `,`"),
        (
            net("  - toCIDR:\n      - 10.0.0.0/8\n      - 10.0.0.0/33\n"),
            7,
            "egress[0].toCIDR[1]",
            "prefix length \"33\"",
        ),
        (
            net("  - toCIDR: [10.0.0.1/8]\n"),
            5,
            "egress[0].toCIDR[0]",
            "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?",
        ),
        (net("  - ports: [tcp/2000-1000]\n"), 5, "egress[0].ports[0]", "port range 2000-1000 is reversed"),
        (net("  - ports:\n    - sctp/9\n"), 6, "egress[0].ports[0]", "unknown protocol \"sctp\""),
        (net("  - ports: []\n"), 5, "egress[0].ports", "empty list would mean every port"),
        (net("  - action: drop\n"), 5, "egress[0].action", "unknown action"),
        (net("  - to: app=db\n    toCIDR: [10.0.0.0/8]\n"), 6, "egress[0].toCIDR", "cannot be used together"),
        (files("  - paths: [etc/passwd]\n"), 5, "rules[0].paths[0]", "is not absolute"),
        (files("  - paths: [/a/../etc/shadow]\n"), 5, "rules[0].paths[0]", "`..` component"),
        (
            files("  - paths: [/etc/]\n    access: [read, append]\n"),
            6,
            "rules[0].access[1]",
            "unknown access \"append\"",
        ),
        (files("  - access: [read]\n"), 5, "rules[0].paths", "missing"),
        // The document.
        ("kind: NetworkPolicy\nname: web\negress: []\n".to_owned(), 1, "subject", "missing"),
        ("kind: NetworkPolicy\nsubject: a\negress: []\n".to_owned(), 1, "name", "missing"),
        ("name: web\nsubject: a\negress: []\n".to_owned(), 1, "kind", "missing"),
        (
            "kind: NetworkPolicy\nname: Web_1\nsubject: a\negress: []\n".to_owned(),
            2,
            "name",
            "not a valid name",
        ),
        ("\nkind: HostPolicy\nname: web\nsubject: a\n".to_owned(), 2, "kind", "unknown kind \"HostPolicy\""),
        (
            "kind: NetworkPolicy\nname: web\nsubject: a\nmode: warn\negress: []\n".to_owned(),
            4,
            "mode",
            "unknown mode",
        ),
        (
            "kind: NetworkPolicy\nname: web\nsubject: a\n".to_owned(),
            1,
            "document",
            "needs `egress`, `ingress` or both",
        ),
        (
            "kind: NetworkPolicy\nname: web\nsubject: a\negress:\n".to_owned(),
            4,
            "egress",
            "expected a list, found nothing",
        ),
        (
            "kind: FilePolicy\nname: web\nsubject: a\nrules: []\nname: web2\n".to_owned(),
            5,
            "name",
            "duplicate key `name` (first at line 2)",
        ),
        ("- a\n- b\n".to_owned(), 1, "document", "expected a mapping, found a list"),
        // YAML features a policy has no use for, and broken YAML.
        (net("  - to: &peer app=db\n  - to: *peer\n"), 5, "document", "anchors"),
        ("kind: !!str NetworkPolicy\nname: web\nsubject: a\negress: []\n".to_owned(), 1, "document", "tags"),
        (
            "kind: NetworkPolicy\nname: web\nsubject: [a\negress: []\n".to_owned(),
            4,
            "document",
            "invalid YAML",
        ),
    ];
    for (text, line, field, says) in cases {
        let errors = errors(&text);
        assert!(
            errors.iter().any(|e| e.line == line && e.field == field && e.message.contains(says)),
            "{text}\nexpected line {line}, field {field}, message containing {says:?}; got {errors:#?}"
        );
    }
}

#[test]
fn aliases_are_refused_without_follow_on_errors() {
    let errors = errors(&net("  - to: &peer app=db\n  - to: *peer\n"));
    let lines: Vec<_> = errors.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(lines, [(5, "document"), (6, "document")], "{errors:#?}");
}

#[test]
fn every_error_is_collected() {
    let text = net("  - to: \"a b\"\n    ports: [tcp/0, udp/70000]\n    color: red\n");
    let fields: Vec<_> = errors(&text).into_iter().map(|e| (e.line, e.field)).collect();
    assert_eq!(
        fields,
        [
            (5, "egress[0].to".to_owned()),
            (6, "egress[0].ports[0]".to_owned()),
            (6, "egress[0].ports[1]".to_owned()),
            (7, "egress[0].color".to_owned()),
        ]
    );
}

#[test]
fn third_document_errors_report_file_lines() {
    let text = format!(
        "{}\n---\n# comment\n---\n{}",
        EXAMPLE.trim_end(),
        files("  - paths: [/ok/]\n  - paths: [relative]\n")
    );
    // EXAMPLE has 24 lines, then `---`, `# comment`, `---`: the third document starts on 28.
    let (line, field, message) = only_error(&text);
    assert_eq!((line, field.as_str()), (33, "rules[1].paths[0]"), "{message}");
    let fixed = text.replace("[relative]", "[/relative]");
    let policies = parse_str(file(), &fixed).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(policies.iter().map(|p| p.source().line).collect::<Vec<_>>(), [1, 15, 28]);
}

#[test]
fn duplicate_names_name_both_places() {
    let text = format!("{EXAMPLE}---\n{}", net("  - to: a\n").replace("name: web", "name: web-files"));
    let (line, field, message) = only_error(&text);
    assert_eq!((line, field.as_str()), (27, "name"));
    assert_eq!(message, "duplicate policy name `web-files`; also defined at p.yaml:16");

    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yml"));
    std::fs::write(&a, EXAMPLE).expect("write");
    std::fs::write(
        &b,
        format!("# web again\n{}", net("  - to: a\n").replace("name: web", "name: web-egress")),
    )
    .expect("write");
    let errors = parse_files(&[a.clone(), b.clone()]).expect_err("duplicate");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!((errors[0].file.as_path(), errors[0].line), (b.as_path(), 3));
    assert!(errors[0].message.ends_with(&format!("{}:2", a.display())), "{}", errors[0]);
    assert_eq!(load_dir(dir.path()).expect_err("duplicate"), errors);
}

#[test]
fn files_and_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("b.yaml"), EXAMPLE).expect("write");
    std::fs::write(dir.path().join("a.yml"), files("  - paths: [/a/]\n").replace("name: fs", "name: a"))
        .expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not a policy").expect("write");
    std::fs::create_dir(dir.path().join("sub.yaml")).expect("mkdir");
    let names: Vec<_> = load_dir(dir.path())
        .unwrap_or_else(|e| panic!("{e:#?}"))
        .iter()
        .map(|p| (p.name().to_owned(), p.source().file.file_name().map(PathBuf::from)))
        .collect();
    let name = |n: &str, f: &str| (n.to_owned(), Some(PathBuf::from(f)));
    assert_eq!(names, [name("a", "a.yml"), name("web-egress", "b.yaml"), name("web-files", "b.yaml")]);

    assert_eq!(load_dir(&dir.path().join("missing")), Ok(vec![]));
    let missing = dir.path().join("missing.yaml");
    let errors = parse_files(std::slice::from_ref(&missing)).expect_err("unreadable");
    assert_eq!((errors[0].file.as_path(), errors[0].field.as_str()), (missing.as_path(), "document"));
    assert!(parse_str(file(), "").expect("empty").is_empty());
    assert!(parse_str(file(), "---\n# nothing\n---\n").expect("empty documents").is_empty());
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_str(file(), &text);
    }

    #[test]
    fn yaml_like_text_never_panics(text in "[-:\\[\\]{}#&*!|>'\" \n\ta-z0-9/.,?%@`~]{0,300}") {
        let _ = parse_str(file(), &text);
    }

    #[test]
    fn mangled_examples_never_panic(cut in 0..EXAMPLE.len(), insert in "[-:\\[\\]{}&*!\n ]{0,4}") {
        let mut text = EXAMPLE.to_owned();
        let at = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &insert);
        let _ = parse_str(file(), &text);
    }
}
