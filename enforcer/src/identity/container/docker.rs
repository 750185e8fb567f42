//! Docker's on-disk state: `<root>/containers/<id>/config.v2.json` and the image reference
//! store `<root>/image/<driver>/repositories.json`.
//!
//! **Carries:** the container's name (`Name`, `/web`), the image as given (`Config.Image`), the
//! image id (`Image`, `sha256:…`), the labels (`Config.Labels`, the image's labels merged in by
//! Docker), and in `repositories.json` the references pointing at each image id, among them the
//! registry digests (`nginx@sha256:…`) Docker verified when pulling. Under Kubernetes via
//! cri-dockerd, the labels kubelet sets: `io.kubernetes.pod.{namespace,name,uid}`,
//! `io.kubernetes.container.name`, `io.kubernetes.docker.type` (`container` | `podsandbox`),
//! `io.kubernetes.sandbox.id`; the pod's labels are labels of its sandbox container, and
//! annotations are labels prefixed `annotation.`.
//!
//! **Does not carry:** the pod's service account; a registry digest for images built locally,
//! loaded with `docker load`, or kept by Docker's containerd image store (which has no
//! `repositories.json`) — then only the image id is known. Under cri-dockerd `Config.Image` is
//! the reference kubelet resolved, typically the image id rather than the name in the pod spec.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{ContainerError, ContainerMeta, ContainerRef, KUBERNETES_PREFIX, PodMeta, Runtime, SANDBOX_NAME};

/// `config.v2.json`: the fields read of moby's `container.Container`.
#[derive(Debug, Deserialize)]
struct ConfigV2 {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name", default)]
    name: Option<String>,
    /// The image id.
    #[serde(rename = "Image", default)]
    image: Option<String>,
    /// The storage driver, which names the image store directory.
    #[serde(rename = "Driver", default)]
    driver: Option<String>,
    #[serde(rename = "Config", default)]
    config: Option<Config>,
}

#[derive(Debug, Default, Deserialize)]
struct Config {
    #[serde(rename = "Image", default)]
    image: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// `repositories.json`: familiar repository name → familiar reference → image id.
#[derive(Debug, Deserialize)]
struct Repositories {
    #[serde(rename = "Repositories", default)]
    repositories: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_UID: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";
const CONTAINER_TYPE: &str = "io.kubernetes.docker.type";
const SANDBOX_ID: &str = "io.kubernetes.sandbox.id";
/// cri-dockerd stores Kubernetes annotations as labels with this prefix.
const ANNOTATION_PREFIX: &str = "annotation.";

/// Reads what Docker under `root` recorded about `container`.
///
/// # Errors
/// [`ContainerError`] naming the file when `config.v2.json`, the pod's sandbox record or
/// `repositories.json` exists but cannot be read or parsed, or when the record names another
/// container or another pod than the cgroup. `Ok(None)` when Docker does not know the id.
pub fn lookup(root: &Path, container: &ContainerRef) -> Result<Option<ContainerMeta>, ContainerError> {
    let path = config_path(root, &container.id);
    let Some(record) = super::read_json::<ConfigV2>(&path)? else {
        return Ok(None);
    };
    if record.id != container.id {
        return Err(invalid(
            &path,
            "ID",
            format!("{:?} is not the container in this directory, {}", record.id, container.id),
        ));
    }
    let config = record.config.unwrap_or_default();
    let mut labels = config.labels.unwrap_or_default();
    let k8s = kubernetes(root, container, &path, &labels)?;
    if k8s.is_some() {
        labels.retain(|key, _| !key.starts_with(ANNOTATION_PREFIX));
    }
    labels.retain(|key, _| !key.starts_with(KUBERNETES_PREFIX));
    let (name, labels) = match &k8s {
        // A sandbox's labels are its pod's, already in `k8s`.
        Some((pod, _)) if pod.sandbox => (Some(SANDBOX_NAME.to_owned()), BTreeMap::new()),
        Some((_, container_name)) => (container_name.clone(), labels),
        None => (record.name.map(|n| n.trim_start_matches('/').to_owned()), labels),
    };
    let image_id = record.image.filter(|id| super::is_digest(id));
    let image_digest = match &image_id {
        Some(id) => registry_digest(root, &path, record.driver.as_deref(), id, config.image.as_deref())?,
        None => None,
    };
    Ok(Some(ContainerMeta {
        id: container.id.clone(),
        runtime: Runtime::Docker,
        name,
        image: config.image.filter(|i| !i.is_empty()),
        image_digest,
        image_id,
        labels,
        k8s: k8s.map(|(pod, _)| pod),
    }))
}

fn config_path(root: &Path, id: &str) -> PathBuf {
    root.join("containers").join(id).join("config.v2.json")
}

fn invalid(path: &Path, field: &str, reason: String) -> ContainerError {
    ContainerError::Invalid { path: path.to_owned(), field: field.to_owned(), reason }
}

/// The pod and the container's name in it, from cri-dockerd's labels.
fn kubernetes(
    root: &Path,
    container: &ContainerRef,
    path: &Path,
    labels: &BTreeMap<String, String>,
) -> Result<Option<(PodMeta, Option<String>)>, ContainerError> {
    let label = |key: &str| labels.get(key).filter(|v| !v.is_empty());
    let (Some(namespace), Some(pod)) = (label(POD_NAMESPACE), label(POD_NAME)) else {
        return Ok(None);
    };
    let Some(uid) = super::confirm_pod(container, path, label(POD_UID).map(String::as_str))? else {
        return Ok(None);
    };
    let sandbox = label(CONTAINER_TYPE).is_some_and(|t| t == "podsandbox");
    let pod_labels = if sandbox {
        pod_labels(labels)
    } else {
        match label(SANDBOX_ID) {
            Some(sandbox_id) => sandbox_labels(root, path, sandbox_id, &uid)?,
            None => BTreeMap::new(),
        }
    };
    let pod = PodMeta {
        namespace: namespace.clone(),
        pod: pod.clone(),
        uid: Some(uid),
        service_account: None,
        labels: pod_labels,
        sandbox,
    };
    Ok(Some((pod, label(CONTAINER_NAME).cloned())))
}

/// The pod's labels, from its sandbox container's record (empty if the sandbox is gone).
fn sandbox_labels(
    root: &Path,
    path: &Path,
    sandbox_id: &str,
    uid: &str,
) -> Result<BTreeMap<String, String>, ContainerError> {
    if !super::path::is_container_id(sandbox_id) {
        return Err(invalid(
            path,
            &format!("Config.Labels.{SANDBOX_ID}"),
            format!("{sandbox_id:?} is not a container id"),
        ));
    }
    let sandbox_path = config_path(root, sandbox_id);
    let Some(sandbox) = super::read_json::<ConfigV2>(&sandbox_path)? else {
        return Ok(BTreeMap::new());
    };
    let labels = sandbox.config.and_then(|c| c.labels).unwrap_or_default();
    match labels.get(POD_UID) {
        Some(recorded) if recorded == uid => Ok(pod_labels(&labels)),
        recorded => Err(ContainerError::PodMismatch {
            path: sandbox_path,
            id: sandbox_id.to_owned(),
            cgroup: uid.to_owned(),
            recorded: recorded.cloned().unwrap_or_else(|| "(none)".to_owned()),
        }),
    }
}

/// A sandbox's labels without the ones cri-dockerd and kubelet add: the pod's own labels.
fn pod_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(key, _)| !key.starts_with(KUBERNETES_PREFIX) && !key.starts_with(ANNOTATION_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The registry digest Docker recorded for `image_id`, preferring one of the repository the
/// container was created from.
fn registry_digest(
    root: &Path,
    path: &Path,
    driver: Option<&str>,
    image_id: &str,
    image: Option<&str>,
) -> Result<Option<String>, ContainerError> {
    let Some(driver) = driver.filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    if driver.contains('/') || driver == "." || driver == ".." {
        return Err(invalid(path, "Driver", format!("{driver:?} is not a storage driver name")));
    }
    let store = root.join("image").join(driver).join("repositories.json");
    let Some(repos) = super::read_json::<Repositories>(&store)? else {
        return Ok(None);
    };
    Ok(pick_digest(&repos, image_id, image))
}

fn pick_digest(repos: &Repositories, image_id: &str, image: Option<&str>) -> Option<String> {
    let mut digests: Vec<String> = repos
        .repositories
        .values()
        .flatten()
        .flatten()
        .filter(|(_, id)| *id == image_id)
        .filter_map(|(reference, _)| super::pinned_digest(reference))
        .collect();
    digests.sort();
    digests.dedup();
    let pinned = image.and_then(super::pinned_digest);
    if let Some(pinned) = pinned.filter(|p| digests.contains(p)) {
        return Some(pinned);
    }
    let wanted = image.map(|i| super::normalize_repository(super::repository(i)));
    let same_repo = digests.iter().find(|d| Some(super::repository(d)) == wanted.as_deref());
    same_repo.or(digests.first()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repos(json: &str) -> Repositories {
        serde_json::from_str(json).expect("test repositories.json")
    }

    const IMAGE: &str = "sha256:a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6";
    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn picks_the_digest_of_the_repository_run() {
        let r = repos(&format!(
            r#"{{"Repositories":{{"nginx":{{"nginx:1.25":"{IMAGE}","nginx@{D2}":"{IMAGE}"}},
                "registry.example.com/mirror/nginx":{{"registry.example.com/mirror/nginx@{D1}":"{IMAGE}"}},
                "redis":{{"redis@{D1}":"sha256:ffff"}},"empty":null}}}}"#
        ));
        assert_eq!(pick_digest(&r, IMAGE, Some("nginx:1.25")), Some(format!("docker.io/library/nginx@{D2}")));
        assert_eq!(
            pick_digest(&r, IMAGE, Some("registry.example.com/mirror/nginx:latest")),
            Some(format!("registry.example.com/mirror/nginx@{D1}"))
        );
        // Run by image id: any digest of the image, the first in order.
        assert_eq!(pick_digest(&r, IMAGE, Some(IMAGE)), Some(format!("docker.io/library/nginx@{D2}")));
        assert_eq!(pick_digest(&r, "sha256:0000", Some("nginx")), None);
    }
}
