//! The policies in force: the files in `policy_dir` plus those applied through the API (kept
//! in `state_dir/applied/`), loaded as one set. A change is taken whole or not at all: when any
//! file is invalid, the previous set stays in force and the errors are kept for `status`.

pub mod watch;

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::{
    api::{ApiError, proto},
    policy::{
        FilePolicy, Mode, NetworkPolicy, Policy,
        parse::{self, PolicyError},
    },
};

/// Names, sizes and change times of the policy files: what `refresh` compares.
type Fingerprint = Vec<(PathBuf, u64, i64, i64)>;

/// The loaded policy set and where it comes from.
pub struct PolicyStore {
    dir: PathBuf,
    applied: PathBuf,
    policies: Vec<Policy>,
    errors: Vec<String>,
    fingerprint: Option<Fingerprint>,
    /// A changed fingerprint the periodic rescan saw once and waits to see again.
    unsettled: Option<Fingerprint>,
}

/// Who asks [`PolicyStore::refresh`] to look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// An API change or the first load: always reload.
    Force,
    /// The directory watch: a file was closed after writing, renamed or removed.
    Watch,
    /// The periodic rescan: a change is taken only once it has stayed the same for a whole
    /// rescan period, so a file still being written (`cat > f`, a slow copy) is not read
    /// half-way — a truncated file can be valid YAML holding fewer rules.
    Rescan,
}

fn error_lines(errors: &[PolicyError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

impl PolicyStore {
    /// A store over `policy_dir` and `state_dir/applied`; nothing loaded yet.
    #[must_use]
    pub fn new(policy_dir: &Path, state_dir: &Path) -> Self {
        Self {
            dir: policy_dir.to_owned(),
            applied: state_dir.join("applied"),
            policies: Vec::new(),
            errors: Vec::new(),
            fingerprint: None,
            unsettled: None,
        }
    }

    fn files(&self) -> Result<Vec<PathBuf>, String> {
        let mut files = Vec::new();
        for dir in [&self.dir, &self.applied] {
            files.extend(parse::policy_files(dir).map_err(|e| format!("{}: {e}", dir.display()))?);
        }
        Ok(files)
    }

    fn fingerprint(files: &[PathBuf]) -> Fingerprint {
        files
            .iter()
            .filter_map(|f| {
                let m = std::fs::metadata(f).ok()?;
                Some((f.clone(), m.len(), m.mtime(), m.mtime_nsec()))
            })
            .collect()
    }

    /// Reloads when any file changed (see [`Trigger`]). Returns whether the set in force
    /// changed; an invalid set is not taken and its errors are kept.
    pub fn refresh(&mut self, trigger: Trigger) -> bool {
        let files = match self.files() {
            Ok(f) => f,
            Err(e) => {
                self.errors = vec![e];
                return false;
            }
        };
        let fingerprint = Self::fingerprint(&files);
        // Nothing loaded yet (the agent is starting): take what is there at once.
        let trigger = if self.fingerprint.is_none() { Trigger::Force } else { trigger };
        if trigger != Trigger::Force && self.fingerprint.as_ref() == Some(&fingerprint) {
            self.unsettled = None;
            return false;
        }
        if trigger == Trigger::Rescan && self.unsettled.as_ref() != Some(&fingerprint) {
            self.unsettled = Some(fingerprint);
            return false;
        }
        self.unsettled = None;
        self.fingerprint = Some(fingerprint);
        match parse::parse_files(&files) {
            Ok(policies) => {
                self.errors.clear();
                let changed = policies != self.policies;
                if changed {
                    tracing::info!(policies = policies.len(), "policies loaded");
                }
                self.policies = policies;
                changed
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "policy rejected; the previous policies stay in force");
                }
                self.errors = error_lines(&errors);
                false
            }
        }
    }

    /// The network policies in force.
    #[must_use]
    pub fn network(&self) -> Vec<NetworkPolicy> {
        self.policies.iter().filter_map(|p| if let Policy::Network(n) = p { Some(n.clone()) } else { None }).collect()
    }

    /// The file policies in force.
    #[must_use]
    pub fn file(&self) -> Vec<FilePolicy> {
        self.policies.iter().filter_map(|p| if let Policy::File(f) = p { Some(f.clone()) } else { None }).collect()
    }

    /// Errors that kept the last change out.
    #[must_use]
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// How many policies are in force.
    #[must_use]
    pub fn count(&self) -> usize {
        self.policies.len()
    }

    /// The policies in force, for `policy list`.
    #[must_use]
    pub fn list(&self) -> Vec<proto::PolicyInfo> {
        self.policies
            .iter()
            .map(|p| {
                let (kind, mode) = match p {
                    Policy::Network(n) => ("NetworkPolicy", n.mode),
                    Policy::File(f) => ("FilePolicy", f.mode),
                };
                proto::PolicyInfo {
                    name: p.name().to_owned(),
                    kind: kind.to_owned(),
                    mode: if mode == Mode::Audit { "audit" } else { "enforce" }.to_owned(),
                    source: format!("{}:{}", p.source().file.display(), p.source().line),
                }
            })
            .collect()
    }

    /// Validates `files` (name as the user gave it, content) and, when all of them and the
    /// resulting set are valid, stores them so they are in force with the rest.
    ///
    /// # Errors
    /// [`ApiError::InvalidArgument`] with every problem; nothing changes then.
    pub fn apply(&mut self, files: &[(String, String)]) -> Result<Vec<String>, ApiError> {
        if files.is_empty() {
            return Err(ApiError::InvalidArgument("no policy files given".into()));
        }
        if files.len() > MAX_FILES {
            return Err(ApiError::InvalidArgument(format!(
                "{} policy files in one request, at most {MAX_FILES}; apply them in several",
                files.len()
            )));
        }
        let mut names = Vec::new();
        let mut errors = Vec::new();
        let mut stored = Vec::new();
        let mut bases = std::collections::BTreeSet::new();
        for (name, content) in files {
            let base = Path::new(name).file_name().and_then(|b| b.to_str()).unwrap_or_default();
            if let Err(why) = check_file_name(base) {
                errors.push(format!("{name:?}: {why}"));
                continue;
            }
            if !bases.insert(base) {
                errors.push(format!("{name}: two files named {base} in one request"));
                continue;
            }
            if content.len() > MAX_FILE_BYTES {
                errors.push(format!("{name}: {} bytes, at most {MAX_FILE_BYTES} per policy file", content.len()));
                continue;
            }
            match parse::parse_str(Path::new(name), content) {
                Ok(policies) => names.extend(policies.iter().map(|p| p.name().to_owned())),
                Err(e) => errors.extend(error_lines(&e)),
            }
            stored.push((self.applied.join(base), content));
        }
        if !errors.is_empty() {
            return Err(ApiError::InvalidArgument(errors.join("\n")));
        }
        std::fs::create_dir_all(&self.applied).map_err(|e| ApiError::Internal(format!("{}: {e}", self.applied.display())))?;
        let previous: Vec<(PathBuf, Option<String>)> =
            stored.iter().map(|(path, _)| (path.clone(), std::fs::read_to_string(path).ok())).collect();
        for (path, content) in &stored {
            write_atomic(path, content).map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
        }
        self.refresh(Trigger::Force);
        if self.errors.is_empty() {
            return Ok(names);
        }
        // The files are valid alone but not together with the rest (a duplicate name):
        // restore what was there and report.
        let errors = self.errors.join("\n");
        for (path, old) in previous {
            let _ = match old {
                Some(content) => write_atomic(&path, &content),
                None => std::fs::remove_file(&path),
            };
        }
        self.refresh(Trigger::Force);
        Err(ApiError::InvalidArgument(errors))
    }

    /// Deletes a policy applied through the API.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] for an unknown name; [`ApiError::InvalidArgument`] for a policy
    /// that comes from `policy_dir` or shares its applied file with others.
    pub fn delete(&mut self, name: &str) -> Result<(), ApiError> {
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(ApiError::InvalidArgument(format!(
                "policy name {name:?} must be 1 to {MAX_NAME} characters without control characters"
            )));
        }
        let Some(policy) = self.policies.iter().find(|p| p.name() == name) else {
            return Err(ApiError::NotFound(format!("no policy named {name:?} is in force; `enforcer policy list` shows them")));
        };
        let file = policy.source().file.clone();
        if !file.starts_with(&self.applied) {
            return Err(ApiError::FailedPrecondition(format!(
                "policy {name:?} comes from {} in policy_dir; remove it from that file",
                file.display()
            )));
        }
        let others: Vec<&str> =
            self.policies.iter().filter(|p| p.source().file == file && p.name() != name).map(Policy::name).collect();
        if !others.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "policy {name:?} was applied in one file with {}; apply that file again without it",
                others.join(", ")
            )));
        }
        std::fs::remove_file(&file).map_err(|e| ApiError::Internal(format!("{}: {e}", file.display())))?;
        self.refresh(Trigger::Force);
        Ok(())
    }
}

/// Most policy files one apply may carry.
const MAX_FILES: usize = 256;
/// Largest policy file accepted through the API.
const MAX_FILE_BYTES: usize = 1 << 20;
/// Longest policy name accepted.
const MAX_NAME: usize = 253;

/// The stored name of an applied file: `*.yaml` or `*.yml`, letters, digits, `-`, `_`, `.`,
/// not hidden.
fn check_file_name(base: &str) -> Result<(), String> {
    let yaml = Path::new(base).extension().is_some_and(|e| e == "yaml" || e == "yml");
    if !yaml {
        return Err("policy files must be named *.yaml or *.yml".into());
    }
    if base.starts_with('.') || base.len() > MAX_NAME {
        return Err(format!("a policy file name must not start with `.` and be at most {MAX_NAME} characters"));
    }
    if !base.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err("a policy file name may contain only letters, digits, `-`, `_` and `.`".into());
    }
    Ok(())
}

fn write_atomic(path: &Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn policy(rules: usize) -> String {
        let mut y = String::from("kind: NetworkPolicy\nname: a\nsubject: \"app=x\"\negress:\n");
        for i in 0..rules {
            let _ = write!(y, "  - toCIDR: [\"10.0.0.{}/32\"]\n    ports: [\"tcp/80\"]\n", i + 1);
        }
        y
    }

    fn rules(store: &PolicyStore) -> usize {
        store.network().iter().map(|p| p.egress.as_ref().map_or(0, Vec::len)).sum()
    }

    #[test]
    fn the_rescan_takes_a_change_only_once_it_has_settled() {
        let dir = tempfile::tempdir().expect("tmp");
        let (policies, state) = (dir.path().join("policies"), dir.path().join("state"));
        std::fs::create_dir_all(&policies).expect("mkdir");
        let file = policies.join("a.yaml");
        std::fs::write(&file, policy(3)).expect("write");
        let mut store = PolicyStore::new(&policies, &state);
        assert!(store.refresh(Trigger::Rescan), "the first load is taken at once");
        assert_eq!(rules(&store), 3);

        // A file caught half-written can be valid YAML with fewer rules: not taken yet.
        std::fs::write(&file, policy(1)).expect("write");
        assert!(!store.refresh(Trigger::Rescan));
        assert_eq!(rules(&store), 3, "the set in force is unchanged");
        std::fs::write(&file, policy(2)).expect("write");
        assert!(!store.refresh(Trigger::Rescan), "still changing");
        assert!(store.refresh(Trigger::Rescan), "unchanged for a whole period: taken");
        assert_eq!(rules(&store), 2);

        // The watch reports a closed file: taken at once.
        std::fs::write(&file, policy(4)).expect("write");
        assert!(store.refresh(Trigger::Watch));
        assert_eq!(rules(&store), 4);
        assert!(!store.refresh(Trigger::Rescan), "nothing changed since");
    }
}
