//! Kubernetes label-selector syntax over tags: `k=v` (or `k==v`), `k!=v`, `k in (a,b)`,
//! `k notin (a,b)`, `k` (exists), `!k` (does not exist), joined by commas (all must hold).
//! The empty selector matches everything.

use std::{collections::BTreeSet, fmt};

use crate::identity::Tags;

/// One condition on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Requirement {
    /// `k=v`
    Eq(String, String),
    /// `k!=v` (also true when `k` is absent, as in Kubernetes)
    NotEq(String, String),
    /// `k in (a,b)`
    In(String, BTreeSet<String>),
    /// `k notin (a,b)` (also true when `k` is absent)
    NotIn(String, BTreeSet<String>),
    /// `k`
    Exists(String),
    /// `!k`
    NotExists(String),
}

/// A parsed selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// The requirements.
    pub requirements: Vec<Requirement>,
}

/// Why a selector does not parse; `at` is the byte offset in the selector text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {at} of {text:?})")]
pub struct SelectorError {
    /// The selector text.
    pub text: String,
    /// Byte offset of the problem.
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '@' | ':')
}

fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@' | '+')
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn err(&self, message: impl Into<String>) -> SelectorError {
        SelectorError { text: self.text.to_owned(), at: self.pos, message: message.into() }
    }

    fn skip_ws(&mut self) {
        while self.text[self.pos..].starts_with(' ') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        if self.text[self.pos..].starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// Consumes `kw` when a space or `(` follows it.
    fn keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        let follows = rest.get(kw.len()..).and_then(|r| r.chars().next());
        if rest.starts_with(kw) && matches!(follows, Some(' ' | '(')) {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    fn word(&mut self, ok: fn(char) -> bool) -> &'a str {
        self.skip_ws();
        let start = self.pos;
        while let Some(c) = self.text[self.pos..].chars().next() {
            if !ok(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.text[start..self.pos]
    }

    fn done(&mut self) -> bool {
        self.skip_ws();
        self.pos >= self.text.len()
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        if !self.eat("(") {
            return Err(self.err("expected `(` after `in`/`notin`"));
        }
        let mut values = BTreeSet::new();
        loop {
            let v = self.word(is_value_char);
            if v.is_empty() {
                return Err(self.err("expected a value"));
            }
            values.insert(v.to_owned());
            if self.eat(")") {
                return Ok(values);
            }
            if !self.eat(",") {
                return Err(self.err("expected `,` or `)`"));
            }
        }
    }
}

impl Selector {
    /// Parses selector text.
    ///
    /// # Errors
    /// [`SelectorError`] saying what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut lx = Lexer { text, pos: 0 };
        let mut requirements = Vec::new();
        if lx.done() {
            return Ok(Self { requirements });
        }
        loop {
            let negated = lx.eat("!");
            let key = lx.word(is_key_char).to_owned();
            if key.is_empty() {
                return Err(lx.err("expected a tag key"));
            }
            let req = if negated {
                Requirement::NotExists(key)
            } else if lx.eat("!=") {
                Requirement::NotEq(key, lx.word(is_value_char).to_owned())
            } else if lx.eat("==") || lx.eat("=") {
                Requirement::Eq(key, lx.word(is_value_char).to_owned())
            } else if lx.keyword("notin") {
                Requirement::NotIn(key, lx.set()?)
            } else if lx.keyword("in") {
                Requirement::In(key, lx.set()?)
            } else {
                Requirement::Exists(key)
            };
            requirements.push(req);
            if lx.done() {
                return Ok(Self { requirements });
            }
            if !lx.eat(",") {
                return Err(lx.err("expected `,` between requirements, or an operator (=, !=, in, notin)"));
            }
        }
    }

    /// Whether `tags` satisfy every requirement.
    #[must_use]
    pub fn matches(&self, tags: &Tags) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Eq(k, v) => tags.get(k) == Some(v),
            Requirement::NotEq(k, v) => tags.get(k) != Some(v),
            Requirement::In(k, set) => tags.get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => tags.get(k).is_none_or(|v| !set.contains(v)),
            Requirement::Exists(k) => tags.contains_key(k),
            Requirement::NotExists(k) => !tags.contains_key(k),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Eq(k, v) => format!("{k}={v}"),
                Requirement::NotEq(k, v) => format!("{k}!={v}"),
                Requirement::In(k, s) => format!("{k} in ({})", set(s)),
                Requirement::NotIn(k, s) => format!("{k} notin ({})", set(s)),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn all_operators() {
        let web = tags(&[("app", "web"), ("env", "prod"), ("@sys:uid", "1000")]);
        for (sel, expected) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app = web , env=prod", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("env in (prod, staging)", true),
            ("env in(dev)", false),
            ("env notin (dev)", true),
            ("missing notin (dev)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("@sys:uid=1000", true),
            ("app=web,env=dev", false),
        ] {
            let s = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
            assert_eq!(s.matches(&web), expected, "{sel:?}");
        }
    }

    #[test]
    fn errors_say_where() {
        for bad in ["app=web,", "app in web", "app in (a,", "=web", "app=web env=prod", "a in ()"] {
            let e = Selector::parse(bad).expect_err(bad);
            assert!(e.at <= bad.len(), "{bad:?}: {e}");
        }
        let e = Selector::parse("app=web env=prod").expect_err("missing comma");
        assert!(e.to_string().contains("expected `,`"), "{e}");
    }

    proptest! {
        #[test]
        fn display_round_trips(keys in proptest::collection::vec("[a-z][a-z0-9.-]{0,6}", 1..4), vals in proptest::collection::vec("[a-z0-9]{1,5}", 1..4)) {
            let text = keys.iter().zip(vals.iter().cycle()).enumerate().map(|(i, (k, v))| match i % 4 {
                0 => format!("{k}={v}"),
                1 => format!("{k} in ({v},x)"),
                2 => format!("!{k}"),
                _ => format!("{k}!={v}"),
            }).collect::<Vec<_>>().join(",");
            let s = Selector::parse(&text).expect("generated selector parses");
            prop_assert_eq!(Selector::parse(&s.to_string()).expect("display parses"), s);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,40}") {
            let _ = Selector::parse(&text);
        }
    }
}
