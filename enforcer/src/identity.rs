//! Workloads and their identities.
//!
//! Every cgroup below the managed root is a workload, named by its path relative to the root
//! (`web`, `team/db`). A nested cgroup inherits its parent's labels and adds its own. Each
//! workload gets an identity number, stable for as long as the agent runs, which is what the
//! kernel maps carry.

pub mod aws;
pub mod addresses;
pub mod cgroup;
pub mod container;
pub mod enrol;
pub mod system;
pub mod watch;

pub use enrol::{Enrolment, WorkloadInfo};

/// Tags of a workload: system tags (keys starting with `@`) and labels.
pub type Tags = std::collections::BTreeMap<String, String>;

/// Checks a workload name: a relative cgroup path of plain components.
///
/// # Errors
/// A sentence saying what is wrong, for the caller to attach to a key or field.
pub fn validate_workload_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty workload name; use a cgroup path relative to cgroup_root, like `web`".into());
    }
    if name.len() > 4096 {
        return Err(format!("workload name is {} bytes long, at most 4096", name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("workload name {name:?} contains a control character"));
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "{name:?} is not a plain relative cgroup path (no leading or doubled `/`, no `.` or `..`)"
            ));
        }
    }
    Ok(())
}

/// Checks an operator label. Keys starting with `@` are system tags that only the agent sets
/// from facts it has checked; anything else claiming one is refused.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn validate_label(key: &str, value: &str) -> Result<(), String> {
    if key.starts_with('@') {
        return Err(format!(
            "label `{key}` starts with `@`: system tags are set only by the agent from facts it checks; \
             choose a key without `@`"
        ));
    }
    if key.is_empty() || key.len() > 253 {
        return Err(format!("label key {key:?} must be 1 to 253 characters"));
    }
    if !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')) {
        return Err(format!("label key {key:?} may contain only letters, digits, `-`, `_`, `.` and `/`"));
    }
    if value.len() > 253 {
        return Err(format!("value of label `{key}` is {} characters, at most 253", value.len()));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("value of label `{key}` contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names() {
        assert!(validate_workload_name("web").is_ok());
        assert!(validate_workload_name("team/db").is_ok());
        for bad in ["", "/web", "web/", "a//b", "..", "a/../b", "./a"] {
            assert!(validate_workload_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn labels() {
        assert!(validate_label("app", "web").is_ok());
        assert!(validate_label("example.com/tier", "").is_ok());
        let e = validate_label("@sys:uid", "0").expect_err("reserved");
        assert!(e.contains("only by the agent"), "{e}");
        assert!(validate_label("a b", "x").is_err());
        assert!(validate_label("app", "x\ny").is_err());
    }
}
