//! The YAML layer: turns a file's text into one tree of line-marked nodes per document.
//!
//! Built from `saphyr-parser`'s event stream rather than a deserializer so that every key and
//! value keeps the line it was written on. Features a policy has no use for are refused here:
//! anchors, aliases and tags. Duplicate keys are left to the schema walk, which knows the
//! field path to report.

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Deeper than any policy can be; the limit keeps hostile input from building a tree whose
/// recursive drop would exhaust the stack.
const MAX_DEPTH: usize = 64;

/// A value and the 1-based line it starts on.
#[derive(Debug)]
pub(super) struct Node {
    pub line: usize,
    pub value: Value,
}

/// What a node holds.
#[derive(Debug)]
pub(super) enum Value {
    /// A scalar; `plain` when unquoted (only plain scalars can be null).
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in the order written, duplicates kept.
    Map(Vec<(Node, Node)>),
    /// An alias, already reported; the schema walk skips it without further errors.
    Rejected,
}

impl Node {
    /// Whether this is YAML's null: an empty plain scalar, `~` or `null`.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }
}

/// A problem found while reading the YAML itself.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Issue {
    pub line: usize,
    pub message: String,
}

/// An open collection while the tree is built.
enum Frame {
    Seq(usize, Vec<Node>),
    Map(usize, Vec<(Node, Node)>, Option<Node>),
}

/// Every non-empty document of `text`, and the problems met. A syntax error ends the stream:
/// the documents completed before it are returned, the one it interrupts is not.
pub(super) fn documents(text: &str) -> (Vec<Node>, Vec<Issue>) {
    let mut docs = Vec::new();
    let mut issues = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    for event in Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(e) => e,
            Err(e) => {
                issues
                    .push(Issue { line: e.marker().line(), message: format!("invalid YAML: {}", e.info()) });
                break;
            }
        };
        let line = span.start.line();
        let (anchor, tag) = match &event {
            Event::Scalar(_, _, anchor, tag)
            | Event::SequenceStart(anchor, tag)
            | Event::MappingStart(anchor, tag) => (*anchor, tag.is_some()),
            _ => (0, false),
        };
        if anchor != 0 {
            issues
                .push(Issue { line, message: "anchors (`&name`) are not supported in policies".to_owned() });
        }
        if tag {
            issues.push(Issue { line, message: "tags (`!tag`) are not supported in policies".to_owned() });
        }
        let node = match event {
            Event::DocumentStart(_) => {
                root = None;
                continue;
            }
            Event::DocumentEnd => {
                if let Some(node) = root.take().filter(|n| !n.is_null()) {
                    docs.push(node);
                }
                continue;
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    issues.push(Issue { line, message: format!("nested deeper than {MAX_DEPTH} levels") });
                    break;
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq(line, Vec::new())
                } else {
                    Frame::Map(line, Vec::new(), None)
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(line, items)) => Node { line, value: Value::Seq(items) },
                Some(Frame::Map(line, pairs, _)) => Node { line, value: Value::Map(pairs) },
                None => continue,
            },
            Event::Scalar(text, style, ..) => Node {
                line,
                value: Value::Scalar { text: text.into_owned(), plain: style == ScalarStyle::Plain },
            },
            Event::Alias(_) => {
                issues.push(Issue {
                    line,
                    message: "aliases (`*name`) are not supported in policies".to_owned(),
                });
                Node { line, value: Value::Rejected }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => continue,
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, pairs, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => pairs.push((k, node)),
            },
        }
    }
    (docs, issues)
}
