//! Container and pod metadata read from the container runtimes' on-disk state.
//!
//! A workload whose cgroup a container runtime created is a container: [`container_id`] finds
//! the container id (and the pod UID, for Kubernetes) in the cgroup path, and [`lookup`] reads
//! what Docker or containerd recorded about it on disk — never through a runtime API, so the
//! agent neither depends on a runtime socket nor trusts a process that answers on one. The
//! facts become system tags ([`ContainerMeta::tags`]): `@container:*` and `@k8s:*`, plus the
//! container's and pod's labels as plain tags.
//!
//! What each runtime's state does and does not carry is documented in [`docker`] and
//! [`containerd`]; a fact that is not on disk is `None`, never guessed. Kubernetes metadata is
//! accepted only when the cgroup path places the container in a pod and the runtime's record
//! names the same pod UID, so a plain container cannot claim a pod by carrying its labels.
//!
//! Labels are the container's to choose (Docker even merges in the image's labels), so a label
//! key starting with `@` never becomes a tag: only the agent sets system tags.

pub mod containerd;
pub mod docker;
mod path;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    fmt, io,
    io::Read as _,
    path::{Path, PathBuf},
};

use serde::{Serialize, de::DeserializeOwned};

pub use path::container_id;

/// Where the runtimes keep their state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeRoots {
    /// Docker's data root (`dockerd --data-root`).
    pub docker: PathBuf,
    /// containerd's state directory (`state` in `config.toml`), which holds the task bundles.
    pub containerd: PathBuf,
}

impl Default for RuntimeRoots {
    fn default() -> Self {
        Self { docker: PathBuf::from("/var/lib/docker"), containerd: PathBuf::from("/run/containerd") }
    }
}

/// A container runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Docker (`dockerd`), also as Kubernetes' runtime through cri-dockerd.
    Docker,
    /// containerd: its CRI plugin for Kubernetes, or nerdctl.
    Containerd,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Docker => "docker",
            Self::Containerd => "containerd",
        })
    }
}

/// A container recognised in a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    /// The container id: 64 lowercase hex digits.
    pub id: String,
    /// The Kubernetes pod UID, when the path goes through a pod's cgroup.
    pub pod_uid: Option<String>,
    /// The runtime the cgroup name points to (`docker-<id>.scope`, `cri-containerd-<id>.scope`),
    /// `None` when the name is the bare id and either runtime may have made it.
    pub runtime: Option<Runtime>,
}

/// What a runtime recorded about one container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerMeta {
    /// The container id.
    pub id: String,
    /// The runtime that knows it.
    pub runtime: Runtime,
    /// Its name: Docker's name without the leading `/`, the container's name in its pod for
    /// Kubernetes (`POD` for the pod's sandbox, as kubelet names it), `nerdctl/name` for nerdctl.
    pub name: Option<String>,
    /// The image as the container was created from it (`nginx:1.25`), when recorded.
    pub image: Option<String>,
    /// The registry digest of the image, `<repository>@sha256:<hex>`, the repository
    /// normalised to its full form (`docker.io/library/nginx@sha256:…`). Known when the image
    /// was pulled by (or resolved to) a digest the runtime recorded.
    pub image_digest: Option<String>,
    /// Docker's content-addressed image id, `sha256:<hex>`: the digest of the image's config
    /// blob. It names the same image content on any host, but it is not a registry digest.
    pub image_id: Option<String>,
    /// The container's labels. The keys Kubernetes runtimes use to carry pod metadata
    /// (`io.kubernetes.*`, and cri-dockerd's `annotation.*`) are left out; they are what
    /// [`ContainerMeta::k8s`] is made of. Keys starting with `@` are kept here so they can be
    /// reported, but never become tags.
    pub labels: BTreeMap<String, String>,
    /// The Kubernetes pod, when the container is part of one.
    pub k8s: Option<PodMeta>,
}

/// The Kubernetes pod a container belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodMeta {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's UID.
    pub uid: Option<String>,
    /// The pod's service account. Neither runtime records it on disk, so this is `None` from
    /// [`lookup`]; it is here for a source that knows it.
    pub service_account: Option<String>,
    /// The pod's labels, when the runtime records them (cri-dockerd does, on the pod's sandbox
    /// container; containerd keeps them only in its metadata database). Same filtering as
    /// [`ContainerMeta::labels`].
    pub labels: BTreeMap<String, String>,
    /// The container is the pod's sandbox (the `pause` container holding its namespaces).
    pub sandbox: bool,
}

/// A runtime label that [`ContainerMeta::tags`] does not turn into a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedLabel {
    /// The label's key.
    pub key: String,
    /// Why it was refused.
    pub reason: String,
}

/// A problem reading a runtime's on-disk state.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A state file exists but could not be read.
    #[error("cannot read container runtime state {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A state file is not valid JSON or not in the runtime's format.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error (0 when unknown).
        line: usize,
        /// 1-based column of the error (0 when unknown).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A state file is larger than any the runtime writes.
    #[error("{path}: {size} bytes, more than the {limit} a container runtime state file may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, or the first size past the limit.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A state file parses but a field does not hold what the runtime writes there.
    #[error("{path}: field `{field}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, e.g. `Config.Labels.io.kubernetes.sandbox.id`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The runtime records the container in a different pod than its cgroup is in.
    #[error(
        "{path}: container {id} is recorded in pod {recorded} but its cgroup is in pod {cgroup}; \
         not trusting its Kubernetes metadata"
    )]
    PodMismatch {
        /// The file with the runtime's record.
        path: PathBuf,
        /// The container id.
        id: String,
        /// The pod UID from the cgroup path.
        cgroup: String,
        /// The pod UID the runtime recorded.
        recorded: String,
    },
    /// More than one containerd namespace has a task with this id.
    #[error("container {id} exists in several containerd namespaces ({}); refusing to pick one", namespaces.join(", "))]
    Ambiguous {
        /// The container id.
        id: String,
        /// The namespaces that have it.
        namespaces: Vec<String>,
    },
    /// The reference does not hold a container id (64 lowercase hex digits).
    #[error("{id:?} is not a container id (64 lowercase hex digits)")]
    BadId {
        /// What was given.
        id: String,
    },
}

/// The largest state file read; the runtimes' own are a few kilobytes.
const MAX_STATE_FILE: u64 = 16 << 20;

/// Tag keys set from container facts.
pub mod tag {
    /// The container id.
    pub const ID: &str = "@container:id";
    /// The container's name.
    pub const NAME: &str = "@container:name";
    /// The image as referenced.
    pub const IMAGE: &str = "@container:image";
    /// The image's registry digest, or its image id (see [`super::ContainerMeta::tags`]).
    pub const IMAGE_DIGEST: &str = "@container:image-digest";
    /// The pod's namespace.
    pub const K8S_NAMESPACE: &str = "@k8s:namespace";
    /// The pod's name.
    pub const K8S_POD: &str = "@k8s:pod";
    /// The pod's service account.
    pub const K8S_SERVICE_ACCOUNT: &str = "@k8s:service-account";
}

/// Finds what the runtimes' on-disk state says about `container`.
///
/// When the cgroup name says which runtime made it, only that runtime is asked; otherwise
/// Docker first, then containerd. Labels refused as tags are logged here (a `@` key as a
/// warning: a container claiming a system tag).
///
/// # Errors
/// [`ContainerError`] naming the file when a state file that exists cannot be read or is not
/// in the runtime's format, when the runtime places the container in a different pod than its
/// cgroup, or when `container.id` is not a container id. A container no runtime knows is
/// `Ok(None)`.
pub fn lookup(roots: &RuntimeRoots, container: &ContainerRef) -> Result<Option<ContainerMeta>, ContainerError> {
    if !path::is_container_id(&container.id) {
        return Err(ContainerError::BadId { id: container.id.clone() });
    }
    let meta = match container.runtime {
        Some(Runtime::Docker) => docker::lookup(&roots.docker, container)?,
        Some(Runtime::Containerd) => containerd::lookup(&roots.containerd, container)?,
        None => match docker::lookup(&roots.docker, container)? {
            Some(meta) => Some(meta),
            None => containerd::lookup(&roots.containerd, container)?,
        },
    };
    if let Some(meta) = &meta {
        for refused in meta.refused_labels() {
            if refused.key.starts_with('@') {
                tracing::warn!(
                    container = %meta.id, runtime = %meta.runtime, label = %refused.key,
                    "container label claims a system tag; refused"
                );
            } else {
                tracing::debug!(
                    container = %meta.id, runtime = %meta.runtime, label = %refused.key, reason = %refused.reason,
                    "container label is not a valid tag; left out"
                );
            }
        }
    }
    Ok(meta)
}

impl ContainerMeta {
    /// The tags this container's workload gets: the container's labels, then its pod's labels
    /// (which win: the pod's author outranks the image's), then the system tags `@container:id`,
    /// `@container:name`, `@container:image`, `@container:image-digest`, `@k8s:namespace`,
    /// `@k8s:pod` and `@k8s:service-account`, each when known.
    ///
    /// `@container:image-digest` is the registry digest (`docker.io/library/nginx@sha256:…`)
    /// when known, else Docker's image id (`sha256:…`, no `@`). The image id pins the image's
    /// content as well (it is the digest of the image config, which names every layer by
    /// digest), so it is a sound fallback for locally built images, but it is not what a
    /// registry calls the image's digest; the two forms never equal each other, so a policy
    /// written for one cannot match the other by accident.
    ///
    /// A label whose key starts with `@`, or that [`validate_label`](crate::identity::validate_label)
    /// rejects, is left out (see [`ContainerMeta::refused_labels`]), as is any `io.kubernetes.*`
    /// label (the `@k8s:*` tags say that).
    #[must_use]
    pub fn tags(&self) -> BTreeMap<String, String> {
        self.tags_and_refusals().0
    }

    /// The labels [`ContainerMeta::tags`] leaves out, with why.
    #[must_use]
    pub fn refused_labels(&self) -> Vec<RefusedLabel> {
        self.tags_and_refusals().1
    }

    fn tags_and_refusals(&self) -> (BTreeMap<String, String>, Vec<RefusedLabel>) {
        let mut tags = BTreeMap::new();
        let mut refused = Vec::new();
        let pod_labels = self.k8s.iter().flat_map(|pod| &pod.labels);
        for (key, value) in self.labels.iter().chain(pod_labels) {
            if key.starts_with(KUBERNETES_PREFIX) {
                continue;
            }
            match crate::identity::validate_label(key, value) {
                Ok(()) => {
                    tags.insert(key.clone(), value.clone());
                }
                Err(reason) => refused.push(RefusedLabel { key: key.clone(), reason }),
            }
        }
        let mut system = |key: &str, value: Option<&String>| {
            if let Some(value) = value {
                tags.insert(key.to_owned(), value.clone());
            }
        };
        system(tag::ID, Some(&self.id));
        system(tag::NAME, self.name.as_ref());
        system(tag::IMAGE, self.image.as_ref());
        system(tag::IMAGE_DIGEST, self.image_digest.as_ref().or(self.image_id.as_ref()));
        if let Some(pod) = &self.k8s {
            system(tag::K8S_NAMESPACE, Some(&pod.namespace));
            system(tag::K8S_POD, Some(&pod.pod));
            system(tag::K8S_SERVICE_ACCOUNT, pod.service_account.as_ref());
        }
        (tags, refused)
    }
}

/// Labels Kubernetes' runtime integrations set to carry pod metadata.
const KUBERNETES_PREFIX: &str = "io.kubernetes.";

/// The name kubelet gives a pod's sandbox container.
const SANDBOX_NAME: &str = "POD";

/// Reads and parses a JSON state file; `None` when it does not exist.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ContainerError> {
    let read_error = |source| ContainerError::Read { path: path.to_owned(), source };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATE_FILE + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_STATE_FILE {
        return Err(ContainerError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit: MAX_STATE_FILE,
        });
    }
    parse_json(path, &bytes).map(Some)
}

/// Parses a state file's bytes, reporting errors against `path`.
fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, ContainerError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde_json appends " at line L column C"; the error carries those as fields.
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        ContainerError::Parse {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
        }
    })
}

/// Checks the runtime's record of a pod against the cgroup path, which kubelet chose.
///
/// `Ok(None)` (and a warning) when the cgroup is not a pod's: the record's pod metadata is not
/// believed. An error when they name different pods.
fn confirm_pod(
    container: &ContainerRef,
    file: &Path,
    recorded_uid: Option<&str>,
) -> Result<Option<String>, ContainerError> {
    let Some(cgroup_uid) = &container.pod_uid else {
        tracing::warn!(
            container = %container.id, file = %file.display(),
            "container carries Kubernetes pod metadata but its cgroup is not in a pod; ignoring the metadata"
        );
        return Ok(None);
    };
    match recorded_uid {
        Some(recorded) if recorded != cgroup_uid => Err(ContainerError::PodMismatch {
            path: file.to_owned(),
            id: container.id.clone(),
            cgroup: cgroup_uid.clone(),
            recorded: recorded.to_owned(),
        }),
        _ => Ok(Some(cgroup_uid.clone())),
    }
}

/// The registry digest in an image reference pinned by digest (`repo[:tag]@sha256:<hex>`), as
/// `<normalised repo>@sha256:<hex>`.
fn pinned_digest(reference: &str) -> Option<String> {
    let (name, digest) = reference.rsplit_once('@')?;
    if !is_digest(digest) || name.is_empty() {
        return None;
    }
    Some(format!("{}@{digest}", normalize_repository(repository(name))))
}

/// `sha256:<64 hex>` (the only algorithm registries use for image digests).
fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The repository of an image reference: without its `@digest` and `:tag`.
fn repository(reference: &str) -> &str {
    let name = reference.split_once('@').map_or(reference, |(name, _)| name);
    match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    }
}

/// A repository in its full form, the way Docker's reference library normalises it:
/// `nginx` → `docker.io/library/nginx`, `user/app` → `docker.io/user/app`; a first component
/// with `.` or `:`, or `localhost`, is a registry host and stays.
fn normalize_repository(name: &str) -> String {
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => ("docker.io", name),
    };
    let domain = if domain == "index.docker.io" { "docker.io" } else { domain };
    if domain == "docker.io" && !rest.contains('/') {
        format!("docker.io/library/{rest}")
    } else {
        format!("{domain}/{rest}")
    }
}
