//! Recognising a container, and its pod, in a cgroup path.
//!
//! The runtimes name a container's cgroup after its id, in one of two shapes depending on the
//! cgroup driver (runc's `libcontainer/cgroups/systemd` turns `slice:prefix:id` into
//! `<slice>/<prefix>-<id>.scope`; the cgroupfs driver uses the path as given):
//!
//! | runtime | systemd driver | cgroupfs driver |
//! | --- | --- | --- |
//! | Docker | `/system.slice/docker-<id>.scope` | `/docker/<id>` |
//! | containerd CRI | `…/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope` | `/kubepods/burstable/pod<uid>/<id>` |
//! | cri-dockerd | `…/kubepods-besteffort-pod<uid>.slice/docker-<id>.scope` | `/kubepods/besteffort/pod<uid>/<id>` |
//! | nerdctl | `/system.slice/nerdctl-<id>.scope` | `/<namespace>/<id>` |
//!
//! kubelet names a pod's cgroup `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid>.slice` with
//! the UID's `-` written as `_` (systemd, where `-` separates the slice hierarchy).

use super::{ContainerRef, Runtime};

/// Finds the container whose cgroup `cgroup_path` is, or is below, and the pod it is in.
///
/// The outermost component that names a container decides: a cgroup a container creates
/// inside its own (`docker-<a>.scope/docker-<b>.scope`) is still that container, so nothing
/// inside a container can name itself as another. A pod UID counts only above it.
#[must_use]
pub fn container_id(cgroup_path: &str) -> Option<ContainerRef> {
    let mut pod_uid = None;
    let mut parent = None;
    for component in cgroup_path.split('/').filter(|c| !c.is_empty()) {
        if let Some((id, runtime)) = container_component(component, parent) {
            return Some(ContainerRef { id: id.to_owned(), pod_uid, runtime });
        }
        if let Some(uid) = pod_component(component) {
            pod_uid = Some(uid);
        }
        parent = Some(component);
    }
    None
}

/// Scope-name prefixes and the runtime that uses each.
const SCOPE_PREFIXES: [(&str, Runtime); 3] =
    [("docker-", Runtime::Docker), ("cri-containerd-", Runtime::Containerd), ("nerdctl-", Runtime::Containerd)];

fn container_component<'a>(component: &'a str, parent: Option<&str>) -> Option<(&'a str, Option<Runtime>)> {
    if let Some(scope) = component.strip_suffix(".scope") {
        return SCOPE_PREFIXES.iter().find_map(|(prefix, runtime)| {
            let id = scope.strip_prefix(prefix)?;
            is_container_id(id).then_some((id, Some(*runtime)))
        });
    }
    // A bare id: Docker's cgroupfs parent is `/docker`; below a pod either runtime may have it.
    is_container_id(component).then(|| (component, (parent == Some("docker")).then_some(Runtime::Docker)))
}

fn pod_component(component: &str) -> Option<String> {
    let uid = if let Some(slice) = component.strip_suffix(".slice") {
        let last = slice.rsplit('-').next()?;
        last.strip_prefix("pod")?.replace('_', "-")
    } else {
        component.strip_prefix("pod")?.to_owned()
    };
    is_pod_uid(&uid).then_some(uid)
}

/// A container id: 64 lowercase hex digits (the runtimes' `GenerateID`).
pub(super) fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A pod UID: a UUID (`8-4-4-4-12` lowercase hex), or 32 hex digits for static pods, whose UID
/// kubelet derives from a hash of the manifest.
fn is_pod_uid(s: &str) -> bool {
    let hex =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex(s, 32) {
        return true;
    }
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5 && parts.iter().zip([8, 4, 4, 4, 12]).all(|(part, len)| hex(part, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a6c0e9b7d41a8c5e2f0b9d8a7c6e5f4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9";
    const OTHER: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const UID: &str = "4cad64d0-7a36-452a-8a08-bd3a694cdad5";
    const UID_SYSTEMD: &str = "4cad64d0_7a36_452a_8a08_bd3a694cdad5";

    fn found(path: &str) -> Option<(String, Option<String>, Option<Runtime>)> {
        container_id(path).map(|r| (r.id, r.pod_uid, r.runtime))
    }

    #[test]
    fn recognises_runtime_cgroup_paths() {
        use Runtime::{Containerd, Docker};
        let uid = Some(UID.to_owned());
        let cases: Vec<(String, Option<String>, Option<Runtime>)> = vec![
            (format!("/system.slice/docker-{ID}.scope"), None, Some(Docker)),
            (format!("/docker/{ID}"), None, Some(Docker)),
            (format!("docker/{ID}"), None, Some(Docker)),
            (format!("/system.slice/nerdctl-{ID}.scope"), None, Some(Containerd)),
            (format!("/default/{ID}"), None, None),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
                ),
                uid.clone(),
                Some(Containerd),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"),
                uid.clone(),
                Some(Containerd),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/docker-{ID}.scope"
                ),
                uid.clone(),
                Some(Docker),
            ),
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
                ),
                uid.clone(),
                Some(Containerd),
            ),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), uid.clone(), None),
            (format!("/kubepods/pod{UID}/{ID}"), uid.clone(), None),
            (
                format!("/kubepods/burstable/pod0123456789abcdef0123456789abcdef/{ID}"),
                Some("0123456789abcdef0123456789abcdef".to_owned()),
                None,
            ),
            // Below the container's own cgroup: still that container.
            (format!("/system.slice/docker-{ID}.scope/init.scope"), None, Some(Docker)),
            (format!("/system.slice/docker-{ID}.scope/docker-{OTHER}.scope"), None, Some(Docker)),
            (format!("/docker/{ID}/docker/{OTHER}"), None, Some(Docker)),
            (format!("/kubepods/besteffort/pod{UID}/{ID}/pod{OTHER}"), uid.clone(), None),
        ];
        for (path, pod_uid, runtime) in cases {
            assert_eq!(found(&path), Some((ID.to_owned(), pod_uid, runtime)), "{path}");
        }
    }

    #[test]
    fn rejects_non_container_paths() {
        let upper = ID.to_uppercase();
        let short = &ID[..63];
        let long = format!("{ID}0");
        let not_hex = format!("{}g", &ID[..63]);
        for path in [
            String::new(),
            "/".to_owned(),
            "/system.slice/sshd.service".to_owned(),
            "/user.slice/user-1000.slice/session-3.scope".to_owned(),
            format!("/system.slice/docker-{short}.scope"),
            format!("/system.slice/docker-{long}.scope"),
            format!("/system.slice/docker-{upper}.scope"),
            format!("/system.slice/docker-{not_hex}.scope"),
            format!("/system.slice/crio-{ID}.scope"),
            format!("/system.slice/docker-{ID}.service"),
            format!("/system.slice/docker-{ID}"),
            format!("/docker/{short}"),
            format!("/docker/{upper}"),
            format!("/docker/x{ID}"),
            format!("/kubepods/besteffort/pod{UID}"),
            format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice"),
        ] {
            assert_eq!(container_id(&path), None, "{path:?}");
        }
    }

    #[test]
    fn pod_uids() {
        assert_eq!(pod_component(&format!("pod{UID}")), Some(UID.to_owned()));
        assert_eq!(pod_component(&format!("kubepods-burstable-pod{UID_SYSTEMD}.slice")), Some(UID.to_owned()));
        for bad in [
            "pod".to_owned(),
            "podcast".to_owned(),
            format!("pod{}", UID.to_uppercase()),
            format!("pod{UID_SYSTEMD}"),
            format!("kubepods-burstable-pod{UID}.slice"),
            "kubepods-burstable.slice".to_owned(),
            format!("pod{}", &UID[1..]),
        ] {
            assert_eq!(pod_component(&bad), None, "{bad:?}");
        }
    }
}
