//! `lookup` end to end on `testdata/`, trees laid out like the real runtime roots, with state
//! files in the exact formats Docker and containerd write (compact JSON, Go's HTML escaping).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use proptest::prelude::*;

use super::*;

// Container ids, image ids and digests in the fixtures.
const WEB: &str = "4b5e57f6eb2f42b9039b3d1e13929295f231749c510cbe341cd68036d9af97e2";
const EVIL: &str = "b5c1fb2efc6d6b4674c2fdcc48ce01b43a3b7c03763c0c3355de0099ee0f8c73";
const APP: &str = "ad27717be83a505d8135126da962971fb60e487c8daed2e2ead7f0fe32d0dc19";
const SB: &str = "5836e0bb3d91b6c9a2ff3f9d5dbe04a573e205254bb64e6740745036108a674a";
const CTR: &str = "d8328e7459d803a4e66d61c4659550d2a133e95c0b41b6c3c28283e371071bdd";
const CSB: &str = "85b013213e803c7bc39ff8937f98c8b3b8ba3ee2cf22b5c7f08dfa7dd07f0fc4";
const NERD: &str = "28991f231417b0cc76231b4a0e5aabed59c0c9cbcd2b5096c17e8a1f215a1515";
const BROKEN: &str = "f526795c95399cea27c055c842c3d6ab018ed0fa4f66f701c28ab22dec28237b";
const UNKNOWN: &str = "0000000000000000000000000000000000000000000000000000000000000001";
const I_NGINX: &str = "fed7e452f8e58ec579d2bd62e946a345e892bf0e634b7bd381a7331bcdd82190";
const I_API: &str = "d2a16b587f3cf4f3497394e32c4cabc5161f78a59ade947a85131bc00bbfa743";
const I_TOOL: &str = "5f9425914ebe0ae9a57686f95f45f9843039128a3493df21aa9db301091d031f";
const D_NGINX: &str = "64af6f6bfae21328ae6a8a493460b710e20b43534cdf5e383731c338623fa66e";
const D_API: &str = "620b65ae6b3ce5b7b620f5d1bf6c65f52b0ad0d9415297082cb78dc674cd7ad8";
const D_WORKER: &str = "4f209ba8715a4c8bbbf82a4fc11f2637128f6d84cecf2be6d77036740c4fd827";
const UID_DOCKER: &str = "0b5c3a41-9d2e-4f7a-8c61-3e2f9a7d5b10";
const UID_CONTAINERD: &str = "4cad64d0-7a36-452a-8a08-bd3a694cdad5";

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/identity/container/testdata")
}

fn roots() -> RuntimeRoots {
    RuntimeRoots { docker: testdata().join("docker"), containerd: testdata().join("containerd") }
}

/// Looks up the container of a cgroup path, as the agent does.
fn lookup_path(roots: &RuntimeRoots, cgroup_path: &str) -> Result<Option<ContainerMeta>, ContainerError> {
    let container = container_id(cgroup_path).expect("a container cgroup path");
    lookup(roots, &container)
}

fn found(cgroup_path: &str) -> ContainerMeta {
    lookup_path(&roots(), cgroup_path).expect("lookup").expect("a known container")
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn systemd_pod(uid: &str) -> String {
    format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice", uid.replace('-', "_"))
}

#[test]
fn plain_docker_container() {
    let meta = found(&format!("/system.slice/docker-{WEB}.scope"));
    assert_eq!(meta.runtime, Runtime::Docker);
    assert_eq!(meta.name.as_deref(), Some("web"));
    assert_eq!(meta.image.as_deref(), Some("nginx:1.25"));
    assert_eq!(meta.image_id, Some(format!("sha256:{I_NGINX}")));
    assert_eq!(meta.image_digest, Some(format!("docker.io/library/nginx@sha256:{D_NGINX}")));
    assert_eq!(meta.k8s, None);
    assert!(meta.refused_labels().is_empty());
    let digest = format!("docker.io/library/nginx@sha256:{D_NGINX}");
    assert_eq!(
        meta.tags(),
        map(&[
            ("@container:id", WEB),
            ("@container:image", "nginx:1.25"),
            ("@container:image-digest", &digest),
            ("@container:name", "web"),
            ("com.example.team", "storefront"),
            ("maintainer", "NGINX Docker Maintainers <docker-maint@nginx.com>"),
        ])
    );
    // The cgroupfs driver's path finds the same container.
    assert_eq!(found(&format!("/docker/{WEB}")), meta);
}

#[test]
fn docker_container_of_a_kubernetes_pod() {
    let pod_path = systemd_pod(UID_DOCKER);
    let meta = found(&format!("{pod_path}/docker-{APP}.scope"));
    assert_eq!(meta.runtime, Runtime::Docker);
    assert_eq!(meta.name.as_deref(), Some("api"));
    // kubelet hands cri-dockerd the image id it resolved.
    assert_eq!(meta.image, Some(format!("sha256:{I_API}")));
    assert_eq!(meta.image_digest, Some(format!("ghcr.io/example/api@sha256:{D_API}")));
    let pod = meta.k8s.as_ref().expect("pod metadata");
    assert_eq!((pod.namespace.as_str(), pod.pod.as_str()), ("shop", "api-7d4b9c8f6-x2x9q"));
    assert_eq!(pod.uid.as_deref(), Some(UID_DOCKER));
    assert_eq!(pod.service_account, None, "not on disk");
    assert!(!pod.sandbox);
    // The pod's labels come from its sandbox; cri-dockerd's `annotation.*` and kubelet's
    // `io.kubernetes.*` are not labels.
    assert_eq!(pod.labels, map(&[("app", "api"), ("pod-template-hash", "7d4b9c8f6")]));
    assert_eq!(meta.labels, map(&[("org.opencontainers.image.source", "https://github.com/example/api")]));
    let image = format!("sha256:{I_API}");
    let digest = format!("ghcr.io/example/api@sha256:{D_API}");
    assert_eq!(
        meta.tags(),
        map(&[
            ("@container:id", APP),
            ("@container:image", &image),
            ("@container:image-digest", &digest),
            ("@container:name", "api"),
            ("@k8s:namespace", "shop"),
            ("@k8s:pod", "api-7d4b9c8f6-x2x9q"),
            ("app", "api"),
            ("org.opencontainers.image.source", "https://github.com/example/api"),
            ("pod-template-hash", "7d4b9c8f6"),
        ])
    );

    let sandbox = found(&format!("/kubepods/burstable/pod{UID_DOCKER}/{SB}"));
    assert_eq!(sandbox.name.as_deref(), Some("POD"));
    let pod = sandbox.k8s.as_ref().expect("pod metadata");
    assert!(pod.sandbox);
    assert_eq!(pod.labels, map(&[("app", "api"), ("pod-template-hash", "7d4b9c8f6")]));
    assert!(sandbox.labels.is_empty());
}

#[test]
fn containerd_container_of_a_kubernetes_pod() {
    let pod_path = systemd_pod(UID_CONTAINERD);
    let meta = found(&format!("{pod_path}/cri-containerd-{CTR}.scope"));
    let image = format!("ghcr.io/example/worker:1.4.0@sha256:{D_WORKER}");
    let digest = format!("ghcr.io/example/worker@sha256:{D_WORKER}");
    assert_eq!(meta.runtime, Runtime::Containerd);
    assert_eq!(meta.name.as_deref(), Some("worker"));
    assert_eq!(meta.image.as_deref(), Some(image.as_str()));
    assert_eq!(meta.image_digest.as_deref(), Some(digest.as_str()));
    assert_eq!(meta.image_id, None, "only in containerd's metadata database");
    assert!(meta.labels.is_empty(), "only in containerd's metadata database");
    let pod = meta.k8s.as_ref().expect("pod metadata");
    assert_eq!((pod.namespace.as_str(), pod.pod.as_str()), ("orders", "worker-6f8d9c7b5-qk4tz"));
    assert_eq!(pod.uid.as_deref(), Some(UID_CONTAINERD));
    assert_eq!(pod.service_account, None);
    assert!(pod.labels.is_empty());
    assert_eq!(
        meta.tags(),
        map(&[
            ("@container:id", CTR),
            ("@container:image", &image),
            ("@container:image-digest", &digest),
            ("@container:name", "worker"),
            ("@k8s:namespace", "orders"),
            ("@k8s:pod", "worker-6f8d9c7b5-qk4tz"),
        ])
    );
    // cgroupfs driver: the bare id, either runtime; Docker does not know it.
    assert_eq!(found(&format!("/kubepods/burstable/pod{UID_CONTAINERD}/{CTR}")), meta);

    let sandbox = found(&format!("{pod_path}/cri-containerd-{CSB}.scope"));
    assert_eq!(sandbox.name.as_deref(), Some("POD"));
    assert_eq!(sandbox.image, None);
    assert!(sandbox.k8s.as_ref().is_some_and(|pod| pod.sandbox && pod.namespace == "orders"));
}

#[test]
fn nerdctl_container() {
    let meta = found(&format!("/system.slice/nerdctl-{NERD}.scope"));
    assert_eq!(meta.runtime, Runtime::Containerd);
    assert_eq!(meta.name.as_deref(), Some("cache"));
    assert_eq!((meta.image.as_ref(), meta.image_digest.as_ref(), meta.k8s.as_ref()), (None, None, None));
    assert_eq!(meta.tags(), map(&[("@container:id", NERD), ("@container:name", "cache")]));
    assert_eq!(found(&format!("/default/{NERD}")), meta);
}

#[test]
fn unknown_ids_are_none() {
    let roots = roots();
    for path in [
        format!("/system.slice/docker-{UNKNOWN}.scope"),
        format!("/system.slice/cri-containerd-{UNKNOWN}.scope"),
        format!("/kubepods/besteffort/pod{UID_CONTAINERD}/{UNKNOWN}"),
        // Known to containerd only as Docker's bundle in `moby`, which the containerd reader skips.
        format!("/system.slice/nerdctl-{WEB}.scope"),
        // Known to containerd, but the cgroup name says Docker.
        format!("/system.slice/docker-{CTR}.scope"),
    ] {
        assert_eq!(lookup_path(&roots, &path).expect("lookup"), None, "{path}");
    }
    let missing = RuntimeRoots { docker: testdata().join("absent"), containerd: testdata().join("absent") };
    assert_eq!(lookup_path(&missing, &format!("/docker/{WEB}")).expect("lookup"), None);
    let bad = ContainerRef { id: "../../etc".to_owned(), pod_uid: None, runtime: None };
    assert!(matches!(lookup(&roots, &bad), Err(ContainerError::BadId { .. })));
}

#[test]
fn corrupt_state_file_is_an_error_naming_it() {
    let roots = RuntimeRoots { docker: testdata().join("corrupt/docker"), containerd: testdata().join("absent") };
    let err = lookup_path(&roots, &format!("/system.slice/docker-{BROKEN}.scope")).expect_err("corrupt file");
    let ContainerError::Parse { path, line, column, message } = &err else { panic!("not a parse error: {err:?}") };
    assert!(path.ends_with(format!("containers/{BROKEN}/config.v2.json")), "{}", path.display());
    assert_eq!((*line, *column), (1, 700));
    assert!(message.contains("EOF"), "{message}");
    let shown = err.to_string();
    assert!(shown.starts_with(&format!("{}:1:700: ", path.display())), "{shown}");
}

#[test]
fn unreadable_state_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("containers").join(WEB).join("config.v2.json");
    fs::create_dir_all(&file).expect("a directory where the file should be");
    let roots = RuntimeRoots { docker: dir.path().to_owned(), containerd: dir.path().to_owned() };
    let err = lookup_path(&roots, &format!("/docker/{WEB}")).expect_err("unreadable");
    assert!(matches!(&err, ContainerError::Read { path, .. } if *path == file), "{err:?}");
    assert!(err.to_string().contains(&file.display().to_string()), "{err}");
}

#[test]
fn labels_cannot_claim_system_tags() {
    // The image's labels include `@k8s:namespace`, `@container:image` and a forged pod; the
    // cgroup is not a pod's.
    let meta = found(&format!("/system.slice/docker-{EVIL}.scope"));
    assert!(meta.labels.contains_key("@k8s:namespace"), "kept to be reported");
    assert_eq!(meta.k8s, None, "pod labels on a container outside any pod are not believed");
    let refused: Vec<String> = meta.refused_labels().into_iter().map(|r| r.key).collect();
    assert_eq!(refused, ["@container:image", "@k8s:namespace"]);
    assert!(meta.refused_labels().iter().all(|r| r.reason.contains("only by the agent")));
    let image_id = format!("sha256:{I_TOOL}");
    assert_eq!(
        meta.tags(),
        map(&[
            ("@container:id", EVIL),
            ("@container:image", "local/tool:dev"),
            // Built locally: no registry digest, so the image id.
            ("@container:image-digest", &image_id),
            ("@container:name", "batch-runner"),
            ("tier", "batch"),
        ])
    );

    // Even a hand-made record with `@` labels on the container and the pod yields no such tag.
    let mut meta = found(&format!("/docker/{WEB}"));
    meta.labels.insert("@container:id".to_owned(), "other".to_owned());
    meta.k8s = Some(PodMeta {
        namespace: "ns".to_owned(),
        pod: "p".to_owned(),
        uid: None,
        service_account: Some("builder".to_owned()),
        labels: map(&[("@k8s:service-account", "admin"), ("team", "a")]),
        sandbox: false,
    });
    let tags = meta.tags();
    assert_eq!(tags["@container:id"], WEB);
    assert_eq!(tags["@k8s:service-account"], "builder");
    assert_eq!(tags["team"], "a");
    assert!(tags.keys().filter(|k| k.starts_with('@')).all(|k| k.starts_with("@container:") || k.starts_with("@k8s:")));
    assert_eq!(meta.refused_labels().len(), 2);
}

#[test]
fn pod_mismatch_between_cgroup_and_runtime_is_an_error() {
    let other = "11111111-2222-4333-8444-555555555555";
    for path in
        [format!("{}/cri-containerd-{CTR}.scope", systemd_pod(other)), format!("/kubepods/besteffort/pod{other}/{APP}")]
    {
        let err = lookup_path(&roots(), &path).expect_err("mismatch");
        assert!(matches!(&err, ContainerError::PodMismatch { cgroup, .. } if cgroup == other), "{path}: {err:?}");
    }
    // A Kubernetes container whose cgroup is not a pod's gets no pod metadata.
    let meta = found(&format!("/system.slice/cri-containerd-{CTR}.scope"));
    assert_eq!((meta.k8s, meta.name), (None, None));
}

#[test]
fn cri_annotations_count_only_in_the_cri_namespace() {
    // A bundle outside `k8s.io` carrying the CRI plugin's annotations claims no pod.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = fs::read(testdata().join(format!("containerd/io.containerd.runtime.v2.task/k8s.io/{CTR}/config.json")))
        .expect("fixture");
    let bundle = dir.path().join("io.containerd.runtime.v2.task/default").join(CTR);
    fs::create_dir_all(&bundle).expect("bundle");
    fs::write(bundle.join("config.json"), spec).expect("config.json");
    let roots = RuntimeRoots { docker: dir.path().join("docker"), containerd: dir.path().to_owned() };
    let meta = lookup_path(&roots, &format!("{}/cri-containerd-{CTR}.scope", systemd_pod(UID_CONTAINERD)))
        .expect("lookup")
        .expect("known");
    assert_eq!((meta.k8s, meta.name, meta.image), (None, None, None));
}

#[test]
fn same_id_in_two_containerd_namespaces_is_ambiguous() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec =
        fs::read(testdata().join(format!("containerd/io.containerd.runtime.v2.task/default/{NERD}/config.json")))
            .expect("fixture");
    for namespace in ["default", "other"] {
        let bundle = dir.path().join("io.containerd.runtime.v2.task").join(namespace).join(NERD);
        fs::create_dir_all(&bundle).expect("bundle");
        fs::write(bundle.join("config.json"), &spec).expect("config.json");
    }
    let roots = RuntimeRoots { docker: dir.path().join("docker"), containerd: dir.path().to_owned() };
    let err = lookup_path(&roots, &format!("/system.slice/nerdctl-{NERD}.scope")).expect_err("ambiguous");
    assert!(
        matches!(&err, ContainerError::Ambiguous { namespaces, .. } if namespaces == &["default", "other"]),
        "{err:?}"
    );
}

#[test]
fn pinned_digests() {
    let d = "sha256:4f209ba8715a4c8bbbf82a4fc11f2637128f6d84cecf2be6d77036740c4fd827";
    for (reference, want) in [
        (format!("nginx@{d}"), Some(format!("docker.io/library/nginx@{d}"))),
        (format!("nginx:1.25@{d}"), Some(format!("docker.io/library/nginx@{d}"))),
        (format!("docker.io/library/nginx@{d}"), Some(format!("docker.io/library/nginx@{d}"))),
        (format!("index.docker.io/user/app@{d}"), Some(format!("docker.io/user/app@{d}"))),
        (format!("localhost:5000/app:v1@{d}"), Some(format!("localhost:5000/app@{d}"))),
        (format!("localhost/app@{d}"), Some(format!("localhost/app@{d}"))),
        ("nginx:1.25".to_owned(), None),
        (d.to_owned(), None),
        (format!("@{d}"), None),
        ("nginx@sha256:abc".to_owned(), None),
        (format!("nginx@{}", d.to_uppercase()), None),
    ] {
        assert_eq!(pinned_digest(&reference), want, "{reference}");
    }
}

/// Byte-level damage to a state file: (position, byte) overwrites and a truncation point.
fn damaged(original: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = original.len();
    (proptest::collection::vec((0..len, any::<u8>()), 0..8), 0..=len).prop_map(move |(edits, cut)| {
        let mut bytes = original.clone();
        for (at, byte) in edits {
            bytes[at] = byte;
        }
        bytes.truncate(cut);
        bytes
    })
}

fn fixture(relative: &str) -> Vec<u8> {
    fs::read(testdata().join(relative)).expect("fixture")
}

fn arbitrary_state_file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        damaged(fixture(&format!("docker/containers/{APP}/config.v2.json"))),
        damaged(fixture("docker/image/overlay2/repositories.json")),
        damaged(fixture(&format!("containerd/io.containerd.runtime.v2.task/k8s.io/{CTR}/config.json"))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever bytes sit where a runtime keeps its state, the readers return, never panic.
    #[test]
    fn arbitrary_state_files_never_panic(
        config in arbitrary_state_file(),
        sandbox in arbitrary_state_file(),
        repositories in arbitrary_state_file(),
        spec in arbitrary_state_file(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |relative: String, bytes: &[u8]| {
            let path = dir.path().join(relative);
            fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            fs::write(path, bytes).expect("write");
        };
        write(format!("docker/containers/{APP}/config.v2.json"), &config);
        write(format!("docker/containers/{SB}/config.v2.json"), &sandbox);
        write("docker/image/overlay2/repositories.json".to_owned(), &repositories);
        write(format!("containerd/io.containerd.runtime.v2.task/k8s.io/{CTR}/config.json"), &spec);
        let roots = RuntimeRoots { docker: dir.path().join("docker"), containerd: dir.path().join("containerd") };
        for path in [
            format!("/kubepods/besteffort/pod{UID_DOCKER}/{APP}"),
            format!("/kubepods/besteffort/pod{UID_CONTAINERD}/{CTR}"),
        ] {
            if let Ok(Some(meta)) = lookup_path(&roots, &path) {
                let _ = (meta.tags(), meta.refused_labels());
            }
        }
    }
}
