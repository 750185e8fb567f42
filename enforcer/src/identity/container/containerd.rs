//! containerd's on-disk state: the task bundle's OCI runtime spec,
//! `<state>/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`.
//!
//! **Carries:** the spec's `annotations`. containerd's CRI plugin (namespace `k8s.io`) writes
//! `io.kubernetes.cri.container-type` (`container` | `sandbox`), `…sandbox-id`,
//! `…sandbox-namespace`, `…sandbox-name`, `…sandbox-uid`, and for containers `…container-name`
//! and `…image-name` (the image as the pod spec names it, or as containerd resolved it; see
//! `DefaultCRIAnnotations` in containerd's `internal/cri/annotations`). nerdctl copies its
//! internal `nerdctl/*` labels into annotations, among them `nerdctl/name`.
//!
//! **Does not carry:** container labels (CRI's, the image's, nerdctl's `--label`), pod labels,
//! the service account, the image's digest or id, and for nerdctl the image. Those are in
//! containerd's bolt metadata database (`/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db`:
//! container labels, `Image`, and the CRI plugin's container and sandbox metadata extensions),
//! which this reader does not parse. So labels are empty and the image digest is known only
//! when the image name is pinned by digest (`repo@sha256:…`).
//!
//! Namespace `moby` holds Docker's containers, whose own record ([`super::docker`]) is
//! authoritative, so it is skipped. `io.kubernetes.cri.*` annotations are believed only in
//! `k8s.io`, the CRI plugin's namespace.

use std::{collections::BTreeMap, io, path::Path};

use serde::Deserialize;

use super::{ContainerError, ContainerMeta, ContainerRef, PodMeta, Runtime, SANDBOX_NAME};

/// The v2 runtime's task directory below the state root.
const TASK_DIR: &str = "io.containerd.runtime.v2.task";
/// The namespace containerd's CRI plugin works in.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The namespace Docker keeps its containers in.
const DOCKER_NAMESPACE: &str = "moby";

const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const SANDBOX_NAME_ANNOTATION: &str = "io.kubernetes.cri.sandbox-name";
const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const NERDCTL_NAME: &str = "nerdctl/name";

/// The part of the OCI runtime spec read.
#[derive(Debug, Deserialize)]
struct Spec {
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// Reads what containerd under `root` (its state directory) recorded about `container`,
/// searching every namespace.
///
/// # Errors
/// [`ContainerError`] naming the file or directory when the task directory or a bundle's
/// `config.json` exists but cannot be read or parsed, when a CRI bundle lacks the annotations
/// the CRI plugin always writes, when it names another pod than the cgroup, or when several
/// namespaces have the id. `Ok(None)` when no namespace has it.
pub fn lookup(root: &Path, container: &ContainerRef) -> Result<Option<ContainerMeta>, ContainerError> {
    let tasks = root.join(TASK_DIR);
    let read_error = |source| ContainerError::Read { path: tasks.clone(), source };
    let entries = match std::fs::read_dir(&tasks) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let mut namespaces = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_error)?;
        if !entry.file_type().map_err(read_error)?.is_dir() {
            continue;
        }
        if let Ok(name) = entry.file_name().into_string()
            && name != DOCKER_NAMESPACE
        {
            namespaces.push(name);
        }
    }
    namespaces.sort();
    let mut found = Vec::new();
    for namespace in namespaces {
        let path = tasks.join(&namespace).join(&container.id).join("config.json");
        if let Some(spec) = super::read_json::<Spec>(&path)? {
            found.push((namespace, path, spec));
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => {
            let (namespace, path, spec) = found.remove(0);
            from_spec(container, &namespace, &path, &spec.annotations.unwrap_or_default()).map(Some)
        }
        _ => Err(ContainerError::Ambiguous {
            id: container.id.clone(),
            namespaces: found.into_iter().map(|(namespace, _, _)| namespace).collect(),
        }),
    }
}

fn from_spec(
    container: &ContainerRef,
    namespace: &str,
    path: &Path,
    annotations: &BTreeMap<String, String>,
) -> Result<ContainerMeta, ContainerError> {
    let get = |key: &str| annotations.get(key).filter(|v| !v.is_empty()).cloned();
    let mut meta = ContainerMeta {
        id: container.id.clone(),
        runtime: Runtime::Containerd,
        name: get(NERDCTL_NAME),
        image: None,
        image_digest: None,
        image_id: None,
        labels: BTreeMap::new(),
        k8s: None,
    };
    let Some(kind) = get(CONTAINER_TYPE) else {
        return Ok(meta);
    };
    if namespace != CRI_NAMESPACE {
        tracing::warn!(
            container = %container.id, namespace, file = %path.display(),
            "CRI annotations outside containerd's CRI namespace; ignoring them"
        );
        return Ok(meta);
    }
    let missing = |key: &str| ContainerError::Invalid {
        path: path.to_owned(),
        field: format!("annotations.{key}"),
        reason: "missing; containerd's CRI plugin always writes it".to_owned(),
    };
    let sandbox = match kind.as_str() {
        "sandbox" => true,
        "container" => false,
        other => {
            return Err(ContainerError::Invalid {
                path: path.to_owned(),
                field: format!("annotations.{CONTAINER_TYPE}"),
                reason: format!("{other:?} is neither `container` nor `sandbox`"),
            });
        }
    };
    let pod_namespace = get(SANDBOX_NAMESPACE).ok_or_else(|| missing(SANDBOX_NAMESPACE))?;
    let pod = get(SANDBOX_NAME_ANNOTATION).ok_or_else(|| missing(SANDBOX_NAME_ANNOTATION))?;
    // Older containerd releases do not write the sandbox UID; then the cgroup's is the pod's.
    let Some(uid) = super::confirm_pod(container, path, get(SANDBOX_UID).as_deref())? else {
        return Ok(meta);
    };
    if sandbox {
        meta.name = Some(SANDBOX_NAME.to_owned());
    } else {
        meta.name = Some(get(CONTAINER_NAME).ok_or_else(|| missing(CONTAINER_NAME))?);
        meta.image = get(IMAGE_NAME);
        meta.image_digest = meta.image.as_deref().and_then(super::pinned_digest);
    }
    meta.k8s = Some(PodMeta {
        namespace: pod_namespace,
        pod,
        uid: Some(uid),
        service_account: None,
        labels: BTreeMap::new(),
        sandbox,
    });
    Ok(meta)
}
