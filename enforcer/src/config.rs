//! The agent's configuration: `/etc/enforcer/enforcer.toml`, every key with a default.
//!
//! Parsing is strict: an unknown key, a value of the wrong type or an invalid value rejects the
//! whole file with its path, line and the key at fault, so a typo never silently weakens
//! enforcement.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// Where `enforcer run` reads its configuration by default.
pub const DEFAULT_PATH: &str = "/etc/enforcer/enforcer.toml";

/// A problem with the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value (0 when unknown).
        line: usize,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A key has a value that parses but cannot be used.
    #[error("{path}: key `{key}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted key path, e.g. `workload[1].cgroup`.
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

/// What applies when no policy decides.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Posture {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
    /// Let it through and report it.
    Audit,
}

/// What the pinned datapath does while no agent is running.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentDown {
    /// Keep enforcing the last state.
    Enforce,
    /// Allow everything until an agent is back.
    Open,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[cluster]`: identity across hosts.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Peer API address.
    pub listen: SocketAddr,
    /// Other agents' peer API addresses.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// The CA public key that certifies peers.
    pub trust: PathBuf,
}

/// `[[workload]]`: operator labels for a cgroup below `cgroup_root`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadLabels {
    /// cgroup path relative to `cgroup_root`, e.g. `web` or `team/db`.
    pub cgroup: String,
    /// Labels; keys must not start with `@` (those are set by the agent only).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Workloads are the cgroups below this cgroup v2 directory.
    pub cgroup_root: PathBuf,
    /// `*.yaml` policies, watched and hot-reloaded.
    pub policy_dir: PathBuf,
    /// The local API socket (mode 0600).
    pub socket: PathBuf,
    /// Host key and learned state.
    pub state_dir: PathBuf,
    /// Pinned programs, links and maps.
    pub bpffs_dir: PathBuf,
    /// Network posture of enrolled workloads no policy selects.
    pub default_network: Posture,
    /// File posture of enrolled workloads no policy selects.
    pub default_file: Posture,
    /// Where BPF LSM is not active, answer file opens in the agent through fanotify permission
    /// events; `false` leaves files unenforced there (and `status` fails while file policies
    /// exist).
    pub file_fallback: bool,
    /// Where file opens are answered by the agent (the fanotify fallback): the longest an open
    /// waits for its answer, in milliseconds.
    pub file_timeout_ms: u64,
    /// The verdict for an open of a workload under a `FilePolicy` not answered in time.
    pub file_timeout_verdict: Posture,
    /// Capacity of the kernel's workload map (enrolled cgroups). Changing it gives the maps a
    /// new layout, which a restart switches to without a gap.
    pub max_workloads: u32,
    /// What the pinned datapath does with no agent alive.
    pub on_agent_down: AgentDown,
    /// Prometheus text endpoint; empty disables.
    pub metrics_addr: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Also report allowed flows.
    pub log_allowed: bool,
    /// Optional rotated JSON file of flow events; empty disables.
    pub flow_log: String,
    /// Size at which `flow_log` is rotated (to `.1`, `.2`, `.3`).
    pub flow_log_max_bytes: u64,
    /// Docker's data root, read for container metadata.
    pub docker_root: PathBuf,
    /// containerd's state directory, read for container metadata.
    pub containerd_root: PathBuf,
    /// Instance metadata service for the EC2 identity; empty disables.
    pub imds_url: String,
    /// Identity across hosts.
    pub cluster: Option<Cluster>,
    /// Operator labels by cgroup path.
    #[serde(rename = "workload")]
    pub workloads: Vec<WorkloadLabels>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cgroup_root: PathBuf::from("/sys/fs/cgroup/enforcer.slice"),
            policy_dir: PathBuf::from("/etc/enforcer/policies"),
            socket: PathBuf::from("/run/enforcer/enforcer.sock"),
            state_dir: PathBuf::from("/var/lib/enforcer"),
            bpffs_dir: PathBuf::from("/sys/fs/bpf/enforcer"),
            default_network: Posture::Deny,
            default_file: Posture::Allow,
            file_fallback: true,
            file_timeout_ms: 1000,
            file_timeout_verdict: Posture::Deny,
            max_workloads: enforcer_common::maps::WORKLOADS_MAX,
            on_agent_down: AgentDown::Enforce,
            metrics_addr: "127.0.0.1:9464".to_owned(),
            log_format: LogFormat::Text,
            log_allowed: false,
            flow_log: String::new(),
            flow_log_max_bytes: 100 << 20,
            docker_root: PathBuf::from("/var/lib/docker"),
            containerd_root: PathBuf::from("/run/containerd"),
            imds_url: "http://169.254.169.254".to_owned(),
            cluster: None,
            workloads: Vec::new(),
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the line and the key at fault.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`, reporting errors against `path`.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            message: e.message().to_owned(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            reason,
        };
        for (key, p) in [
            ("cgroup_root", &self.cgroup_root),
            ("policy_dir", &self.policy_dir),
            ("socket", &self.socket),
            ("state_dir", &self.state_dir),
            ("bpffs_dir", &self.bpffs_dir),
            ("docker_root", &self.docker_root),
            ("containerd_root", &self.containerd_root),
        ] {
            if !p.is_absolute() {
                return Err(invalid(key, format!("{} is not an absolute path", p.display())));
            }
        }
        if !self.metrics_addr.is_empty() && self.metrics_addr.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "metrics_addr",
                format!("{:?} is not an address like 127.0.0.1:9464 (empty disables)", self.metrics_addr),
            ));
        }
        if !self.flow_log.is_empty() && !Path::new(&self.flow_log).is_absolute() {
            return Err(invalid("flow_log", format!("{:?} is not an absolute path (empty disables)", self.flow_log)));
        }
        if self.flow_log_max_bytes < 4096 {
            return Err(invalid("flow_log_max_bytes", format!("{} is below 4096", self.flow_log_max_bytes)));
        }
        if !(16..=1 << 20).contains(&self.max_workloads) {
            return Err(invalid("max_workloads", format!("{} is outside 16..=1048576", self.max_workloads)));
        }
        if !(10..=60_000).contains(&self.file_timeout_ms) {
            return Err(invalid(
                "file_timeout_ms",
                format!("{} is outside 10..=60000 (milliseconds an open may wait for the agent)", self.file_timeout_ms),
            ));
        }
        if !self.imds_url.is_empty() && !self.imds_url.starts_with("http://") {
            return Err(invalid(
                "imds_url",
                format!("{:?} is not an http:// URL (IMDS is plain HTTP; empty disables)", self.imds_url),
            ));
        }
        for (i, w) in self.workloads.iter().enumerate() {
            let key = |field: &str| format!("workload[{i}].{field}");
            if let Err(reason) = crate::identity::validate_workload_name(&w.cgroup) {
                return Err(invalid(&key("cgroup"), reason));
            }
            for (k, v) in &w.labels {
                if let Err(reason) = crate::identity::validate_label(k, v) {
                    return Err(invalid(&key(&format!("labels.{k}")), reason));
                }
            }
        }
        Ok(())
    }
}

/// 1-based line number of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].split(|b| *b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/enforcer/enforcer.toml"), text)
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = parse("").expect("empty config");
        assert_eq!(c, Config::default());
        assert_eq!(c.default_network, Posture::Deny);
        assert_eq!(c.default_file, Posture::Allow);
        assert_eq!(c.on_agent_down, AgentDown::Enforce);
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
cgroup_root = "/sys/fs/cgroup/unified/enforcer-example"
default_network = "audit"
log_format = "json"
metrics_addr = ""
[cluster]
listen = "0.0.0.0:7946"
peers = ["10.0.1.12:7946"]
trust = "/etc/enforcer/ca.pub"
[[workload]]
cgroup = "team/db"
labels = { app = "db", env = "prod" }
"#,
        )
        .expect("valid config");
        assert_eq!(c.default_network, Posture::Audit);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.workloads[0].cgroup, "team/db");
        assert_eq!(c.workloads[0].labels["env"], "prod");
        assert_eq!(c.cluster.expect("cluster").peers.len(), 1);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse("log_allowed = true\ndefault_netwrok = \"allow\"\n").expect_err("typo");
        let msg = e.to_string();
        assert!(msg.starts_with("/etc/enforcer/enforcer.toml:2:"), "{msg}");
        assert!(msg.contains("default_netwrok"), "{msg}");
    }

    #[test]
    fn bad_enum_value_names_line_and_choices() {
        let e = parse("file_timeout_ms = 0\n").expect_err("zero timeout");
        assert!(e.to_string().contains("key `file_timeout_ms`"), "{e}");
        let e = parse("\n\ndefault_file = \"maybe\"\n").expect_err("bad posture");
        let msg = e.to_string();
        assert!(msg.contains(":3:"), "{msg}");
        assert!(msg.contains("maybe") && msg.contains("deny"), "{msg}");
    }

    #[test]
    fn relative_path_is_refused_with_key() {
        let e = parse("cgroup_root = \"enforcer\"\n").expect_err("relative");
        assert!(e.to_string().contains("key `cgroup_root`"), "{e}");
    }

    #[test]
    fn reserved_label_in_config_is_refused() {
        let e = parse("[[workload]]\ncgroup = \"web\"\nlabels = { \"@sys:uid\" = \"0\" }\n")
            .expect_err("reserved label");
        let msg = e.to_string();
        assert!(msg.contains("workload[0].labels.@sys:uid"), "{msg}");
        assert!(msg.contains("only by the agent"), "{msg}");
    }

    #[test]
    fn workload_path_escaping_the_root_is_refused() {
        let e = parse("[[workload]]\ncgroup = \"../etc\"\n").expect_err("escape");
        assert!(e.to_string().contains("workload[0].cgroup"), "{e}");
    }

    #[test]
    fn imds_url_must_be_http_or_empty() {
        assert!(parse("imds_url = \"\"\n").is_ok());
        let e = parse("imds_url = \"https://169.254.169.254\"\n").expect_err("https");
        assert!(e.to_string().contains("imds_url"), "{e}");
    }

    #[test]
    fn bad_metrics_addr_is_refused() {
        let e = parse("metrics_addr = \"localhost\"\n").expect_err("bad addr");
        assert!(e.to_string().contains("metrics_addr"), "{e}");
    }
}
