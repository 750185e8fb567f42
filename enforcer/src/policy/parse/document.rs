//! The schema walk: one YAML document to one [`Policy`], every problem reported with the dotted
//! field path and the line of the key or value at fault.
//!
//! The walk keeps going after an error so that one run reports everything wrong with a file; a
//! document yields a policy only if it produced no error at all.

use std::path::Path;

use super::{
    PolicyError, value,
    yaml::{Node, Value},
};
use crate::policy::{
    Access, Action, FilePolicy, FileRule, Mode, NetRule, NetworkPolicy, Peer, Policy, Selector, Source,
};

const NETWORK_KEYS: &[&str] = &["kind", "name", "mode", "subject", "egress", "ingress"];
const FILE_KEYS: &[&str] = &["kind", "name", "mode", "subject", "rules"];
const ANY_KEYS: &[&str] = &["kind", "name", "mode", "subject", "egress", "ingress", "rules"];
const FILE_RULE_KEYS: &[&str] = &["paths", "access", "action"];

/// A policy's name and the line of its value, kept for the duplicate check even when the rest
/// of the document has errors.
pub(super) struct Name {
    pub text: String,
    pub line: usize,
}

#[derive(Clone, Copy)]
enum Kind {
    Network,
    File,
}

/// Direction of a network rule list, which decides its keys.
#[derive(Clone, Copy)]
enum Dir {
    Egress,
    Ingress,
}

impl Dir {
    /// The selector key and the prefix key of rules in this direction.
    fn keys(self) -> [&'static str; 2] {
        match self {
            Self::Egress => ["to", "toCIDR"],
            Self::Ingress => ["from", "fromCIDR"],
        }
    }

    fn other(self) -> Self {
        match self {
            Self::Egress => Self::Ingress,
            Self::Ingress => Self::Egress,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
        }
    }
}

/// A mapping's entries by key, duplicates already reported.
struct Fields<'n> {
    line: usize,
    path: String,
    entries: Vec<(&'n str, usize, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|(k, ..)| *k == key).map(|(.., v)| *v)
    }

    fn key_line(&self, key: &str) -> usize {
        self.entries.iter().find(|(k, ..)| *k == key).map_or(self.line, |(_, line, _)| *line)
    }

    fn path(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }
}

fn describe(node: &Node) -> &'static str {
    match &node.value {
        _ if node.is_null() => "nothing",
        Value::Scalar { .. } => "a string",
        Value::Seq(_) => "a list",
        Value::Map(_) => "a mapping",
        Value::Rejected => "an alias",
    }
}

fn selector(text: &str) -> Result<Selector, String> {
    Selector::parse(text).map_err(|e| format!("invalid selector: {e}"))
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    match text {
        "NetworkPolicy" => Ok(Kind::Network),
        "FilePolicy" => Ok(Kind::File),
        _ => Err(format!("unknown kind {text:?}; expected `NetworkPolicy` or `FilePolicy`")),
    }
}

/// Walks the documents of one file, collecting errors against it.
pub(super) struct Walker<'a> {
    file: &'a Path,
    /// Everything found wrong so far.
    pub errors: Vec<PolicyError>,
}

impl<'a> Walker<'a> {
    pub fn new(file: &'a Path) -> Self {
        Self { file, errors: Vec::new() }
    }

    pub fn error(&mut self, line: usize, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.to_owned(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }

    fn source(&self, line: usize) -> Source {
        Source { file: self.file.to_owned(), line }
    }

    /// The policy in `root` (if it has no error) and its name (if that has none).
    pub fn document(&mut self, root: &Node) -> (Option<Policy>, Option<Name>) {
        let before = self.errors.len();
        let Some(f) = self.fields(root, "") else {
            return (None, None);
        };
        let kind = if let Some(node) = f.get("kind") {
            self.scalar(node, "kind", parse_kind)
        } else {
            self.error(f.line, "kind", "missing; expected `kind: NetworkPolicy` or `kind: FilePolicy`");
            None
        };
        let keys = match kind {
            Some(Kind::Network) => NETWORK_KEYS,
            Some(Kind::File) => FILE_KEYS,
            None => ANY_KEYS,
        };
        self.only(&f, keys, &[]);
        let name =
            self.required(&f, "name").and_then(|n| Some((self.scalar(n, "name", value::name)?, n.line)));
        let mode = f.get("mode").map_or(Some(Mode::default()), |n| self.scalar(n, "mode", value::mode));
        let subject = self.required(&f, "subject").and_then(|n| self.scalar(n, "subject", selector));
        let source = self.source(f.line);
        let policy = match kind {
            Some(Kind::Network) => self.network(&f),
            Some(Kind::File) => self.file_rules(&f).map(Body::File),
            None => None,
        };
        let named = name.clone().map(|(text, line)| Name { text, line });
        let (Some((name, _)), Some(mode), Some(subject), Some(body)) = (name, mode, subject, policy) else {
            return (None, named);
        };
        if self.errors.len() > before {
            return (None, named);
        }
        let policy = match body {
            Body::Network { egress, ingress } => {
                Policy::Network(NetworkPolicy { name, mode, subject, egress, ingress, source })
            }
            Body::File(rules) => Policy::File(FilePolicy { name, mode, subject, rules, source }),
        };
        (Some(policy), named)
    }

    fn network(&mut self, f: &Fields<'_>) -> Option<Body> {
        let mut rules = [Dir::Egress, Dir::Ingress].map(|dir| match f.get(dir.name()) {
            None => Some(None),
            Some(node) => self.net_rules(node, dir).map(Some),
        });
        if matches!(rules, [Some(None), Some(None)]) {
            self.error(f.line, "document", "a NetworkPolicy needs `egress`, `ingress` or both");
            return None;
        }
        let [egress, ingress] = [rules[0].take()?, rules[1].take()?];
        Some(Body::Network { egress, ingress })
    }

    fn net_rules(&mut self, node: &Node, dir: Dir) -> Option<Vec<NetRule>> {
        let items = self.list(node, dir.name(), None)?;
        let rules: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, n)| self.net_rule(n, &format!("{}[{i}]", dir.name()), dir))
            .collect();
        rules.into_iter().collect()
    }

    fn net_rule(&mut self, node: &Node, path: &str, dir: Dir) -> Option<NetRule> {
        let f = self.fields(node, path)?;
        let [peer_key, cidr_key] = dir.keys();
        let [other_peer, other_cidr] = dir.other().keys();
        let (this, other) = (dir.name(), dir.other().name());
        let wrong =
            format!("belongs in {other} rules; {this} rules name the peer with `{peer_key}` or `{cidr_key}`");
        let misplaced = [
            (other_peer, format!("`{other_peer}` {wrong}")),
            (other_cidr, format!("`{other_cidr}` {wrong}")),
        ];
        self.only(&f, &[peer_key, cidr_key, "ports", "action"], &misplaced);
        // Both values are checked even when both keys are given, so every error shows at once.
        let selector = f.get(peer_key).map(|n| self.scalar(n, &f.path(peer_key), selector));
        let cidrs = f.get(cidr_key).map(|n| {
            let empty = format!("an empty list matches no address; omit `{cidr_key}` to mean any peer");
            self.items(n, &f.path(cidr_key), Some(&empty), value::cidr)
        });
        let peer = match (selector, cidrs) {
            (Some(_), Some(_)) => {
                let later = if f.key_line(peer_key) > f.key_line(cidr_key) { peer_key } else { cidr_key };
                self.error(
                    f.key_line(later),
                    f.path(later),
                    format!(
                        "`{peer_key}` and `{cidr_key}` cannot be used together in one rule; write two rules"
                    ),
                );
                None
            }
            (Some(selector), None) => selector.map(Peer::Selector),
            (None, Some(cidrs)) => cidrs.map(Peer::Cidrs),
            (None, None) => Some(Peer::Any),
        };
        let ports = f.get("ports").map_or(Some(Vec::new()), |n| {
            let empty = "an empty list would mean every port; omit `ports` to mean any port";
            self.items(n, &f.path("ports"), Some(empty), value::port_spec)
        });
        let action = f
            .get("action")
            .map_or(Some(Action::default()), |n| self.scalar(n, &f.path("action"), value::action));
        Some(NetRule { peer: peer?, ports: ports?, action: action?, source: self.source(f.line) })
    }

    fn file_rules(&mut self, f: &Fields<'_>) -> Option<Vec<FileRule>> {
        let node = self.required(f, "rules")?;
        let items = self.list(node, "rules", None)?;
        let rules: Vec<_> =
            items.iter().enumerate().map(|(i, n)| self.file_rule(n, &format!("rules[{i}]"))).collect();
        rules.into_iter().collect()
    }

    fn file_rule(&mut self, node: &Node, path: &str) -> Option<FileRule> {
        let f = self.fields(node, path)?;
        self.only(&f, FILE_RULE_KEYS, &[]);
        let paths = self.required(&f, "paths").and_then(|n| {
            self.items(n, &f.path("paths"), Some("a rule needs at least one path"), value::path)
        });
        let access = f.get("access").map_or(Some(Vec::new()), |n| {
            let empty = "an empty list would mean every access; omit `access` to mean all";
            self.items(n, &f.path("access"), Some(empty), value::access)
        });
        let action = f
            .get("action")
            .map_or(Some(Action::default()), |n| self.scalar(n, &f.path("action"), value::action));
        let mut access: Vec<Access> = access?;
        let mut seen = Vec::with_capacity(access.len());
        access.retain(|a| {
            if seen.contains(a) {
                false
            } else {
                seen.push(*a);
                true
            }
        });
        Some(FileRule { paths: paths?, access, action: action?, source: self.source(f.line) })
    }

    /// The entries of a mapping; reports a non-mapping, non-string keys and duplicate keys.
    fn fields<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        let pairs = match &node.value {
            Value::Map(pairs) => pairs,
            Value::Rejected => return None,
            _ => {
                let field = if path.is_empty() { "document" } else { path };
                self.error(node.line, field, format!("expected a mapping, found {}", describe(node)));
                return None;
            }
        };
        let mut f =
            Fields { line: node.line, path: path.to_owned(), entries: Vec::with_capacity(pairs.len()) };
        for (key, value) in pairs {
            let Value::Scalar { text, .. } = &key.value else {
                if !matches!(key.value, Value::Rejected) {
                    let field = if path.is_empty() { "document" } else { path };
                    self.error(key.line, field, format!("keys must be strings, found {}", describe(key)));
                }
                continue;
            };
            if let Some(&(_, first, _)) = f.entries.iter().find(|(k, ..)| k == text) {
                self.error(key.line, f.path(text), format!("duplicate key `{text}` (first at line {first})"));
                continue;
            }
            f.entries.push((text, key.line, value));
        }
        Some(f)
    }

    /// Reports every key of `f` not in `allowed`, with a hint for a misplaced or miscased one.
    fn only(&mut self, f: &Fields<'_>, allowed: &[&str], misplaced: &[(&str, String)]) {
        for &(key, line, _) in &f.entries {
            if allowed.contains(&key) {
                continue;
            }
            let message = if let Some((_, why)) = misplaced.iter().find(|(m, _)| *m == key) {
                why.clone()
            } else if let Some(near) = allowed.iter().find(|a| a.eq_ignore_ascii_case(key)) {
                format!("unknown key `{key}`; did you mean `{near}`?")
            } else {
                let expected: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
                format!("unknown key `{key}`; expected one of {}", expected.join(", "))
            };
            self.error(line, f.path(key), message);
        }
    }

    fn required<'n>(&mut self, f: &Fields<'n>, key: &str) -> Option<&'n Node> {
        let node = f.get(key);
        if node.is_none() {
            self.error(f.line, f.path(key), "missing; this key is required");
        }
        node
    }

    /// A scalar's text run through `parse`; errors at the value's line.
    fn scalar<T>(
        &mut self,
        node: &Node,
        path: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match &node.value {
            Value::Scalar { text, .. } if !node.is_null() => {
                parse(text).map_err(|message| self.error(node.line, path, message)).ok()
            }
            Value::Rejected => None,
            _ => {
                self.error(node.line, path, format!("expected a string, found {}", describe(node)));
                None
            }
        }
    }

    /// A sequence's items; `empty` rejects an empty one with that message.
    fn list<'n>(&mut self, node: &'n Node, path: &str, empty: Option<&str>) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) if items.is_empty() && empty.is_some() => {
                self.error(node.line, path, empty.unwrap_or_default());
                None
            }
            Value::Seq(items) => Some(items),
            Value::Rejected => None,
            _ => {
                self.error(node.line, path, format!("expected a list, found {}", describe(node)));
                None
            }
        }
    }

    /// A list of scalars, each run through `parse` (all of them, so every bad item is reported).
    fn items<T>(
        &mut self,
        node: &Node,
        path: &str,
        empty: Option<&str>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let items = self.list(node, path, empty)?;
        let parsed: Vec<_> =
            items.iter().enumerate().map(|(i, n)| self.scalar(n, &format!("{path}[{i}]"), &parse)).collect();
        parsed.into_iter().collect()
    }
}

/// What follows the common header, by kind.
enum Body {
    Network { egress: Option<Vec<NetRule>>, ingress: Option<Vec<NetRule>> },
    File(Vec<FileRule>),
}
