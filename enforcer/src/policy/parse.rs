//! The policy front end: YAML files (several documents each, separated by `---`) to
//! [`Policy`] values, with every error located by file, line and field.
//!
//! Parsing happens in three layers: [`yaml`] turns text into line-marked node trees (refusing
//! anchors, aliases and tags), [`document`] walks each tree against the schema, and [`value`]
//! parses the scalars (names, ports, prefixes, paths). This module ties them together and
//! checks that names are unique across everything loaded together. Errors are collected, not
//! returned at the first: one `enforcer policy check` shows all that is wrong.
//!
//! ```yaml
//! kind: NetworkPolicy
//! name: web-egress
//! subject: "app=web"
//! egress:
//!   - to: "app=db"
//!     ports: ["tcp/5432"]
//! ```

mod document;
#[cfg(test)]
mod tests;
mod value;
mod yaml;

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use super::Policy;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: field `{field}`: {message}", file.display())]
pub struct PolicyError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line of the offending key or value; 0 when the file could not be read.
    pub line: usize,
    /// Dotted path of the field, e.g. `egress[1].ports[0]`; `document` for the document as a
    /// whole or the YAML itself.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Parses every document of one file's text, reporting errors against `file`. Names must be
/// unique within it.
///
/// # Errors
/// Every [`PolicyError`] found: YAML syntax, unknown keys, invalid values, duplicate names.
pub fn parse_str(file: &Path, text: &str) -> Result<Vec<Policy>, Vec<PolicyError>> {
    let mut set = Set::default();
    set.add(file, text);
    set.finish()
}

/// Reads and parses `files`; names must be unique across all of them.
///
/// # Errors
/// Every [`PolicyError`] found in any file, including files that cannot be read.
pub fn parse_files(files: &[PathBuf]) -> Result<Vec<Policy>, Vec<PolicyError>> {
    let mut set = Set::default();
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => set.add(file, &text),
            Err(e) => set.errors.push(PolicyError {
                file: file.clone(),
                line: 0,
                field: "document".to_owned(),
                message: format!("cannot read the file: {e}"),
            }),
        }
    }
    set.finish()
}

/// The policy files directly in `dir`: regular files (or links to them) named `*.yaml` or
/// `*.yml`, sorted by name. A missing directory has none.
///
/// # Errors
/// When `dir` exists but cannot be listed.
pub fn policy_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let yaml = path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml");
        if yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every policy file in `dir` (see [`policy_files`]) as one set.
///
/// # Errors
/// Every [`PolicyError`] found, or one naming `dir` if it cannot be listed.
pub fn load_dir(dir: &Path) -> Result<Vec<Policy>, Vec<PolicyError>> {
    let files = policy_files(dir).map_err(|e| {
        vec![PolicyError {
            file: dir.to_owned(),
            line: 0,
            field: "document".to_owned(),
            message: format!("cannot list the policy directory: {e}"),
        }]
    })?;
    parse_files(&files)
}

/// Policies loaded together, the names seen so far and the errors.
#[derive(Default)]
struct Set {
    policies: Vec<Policy>,
    /// First place each name was defined: file and line of the name.
    names: BTreeMap<String, (PathBuf, usize)>,
    errors: Vec<PolicyError>,
}

impl Set {
    fn add(&mut self, file: &Path, text: &str) {
        let mut walker = document::Walker::new(file);
        let (docs, issues) = yaml::documents(text);
        for issue in issues {
            walker.error(issue.line, "document", issue.message);
        }
        for doc in &docs {
            let (policy, name) = walker.document(doc);
            if let Some(name) = name {
                if let Some((first_file, first_line)) = self.names.get(&name.text) {
                    let message = format!(
                        "duplicate policy name `{}`; also defined at {}:{first_line}",
                        name.text,
                        first_file.display()
                    );
                    walker.error(name.line, "name", message);
                } else {
                    self.names.insert(name.text, (file.to_owned(), name.line));
                }
            }
            self.policies.extend(policy);
        }
        let mut errors = walker.errors;
        errors.sort_by_key(|e| e.line);
        self.errors.extend(errors);
    }

    fn finish(self) -> Result<Vec<Policy>, Vec<PolicyError>> {
        if self.errors.is_empty() { Ok(self.policies) } else { Err(self.errors) }
    }
}
