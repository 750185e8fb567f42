//! The `lsm/file_open` mechanism, below the agent. BPF-LSM programs cannot load on the
//! development host's kernel, so this runs in the VM tier (Debian 6.12 kernel with `bpf` in its
//! LSM list). `files.rs` runs the policy scenario through the agent on both tiers.

use std::io::Write as _;

use enforcer_common::{Verdict, Workload};
use enforcer_tests::{
    Outcome, TestCgroup, TestPins, can_run, cgroup_id, datapath, drain, in_vm, privileged_unavailable, probe,
};

const APP: u32 = 400;

fn workload(file: Verdict) -> Workload {
    Workload { identity: APP, egress_default: Verdict::Allow as u8, ingress_default: Verdict::Allow as u8, file_default: file as u8, flags: 0 }
}

fn lsm_unavailable() -> Option<String> {
    privileged_unavailable().or_else(|| (!in_vm()).then(|| "BPF-LSM runs in the VM tier (`cargo xtask test`)".to_owned()))
}

#[test]
fn file_open_denied_by_verdict_map_allowed_outside_and_after_change() {
    if !can_run("file_open_denied", lsm_unavailable()) {
        return;
    }
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let app = root.child("app");
    let mut dp = datapath(&root, &pins);
    let point = dp.points().iter().find(|p| p.name == "file_open").expect("file_open point").clone();
    assert!(point.attached(), "lsm/file_open attached: {:?}", point.error);
    let mut events = dp.take_events().expect("ring buffer");

    let dir = std::env::temp_dir().join(format!("enforcer-lsm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let file = dir.join("secret");
    std::fs::File::create(&file).and_then(|mut f| f.write_all(b"x")).expect("file");
    let path = file.to_str().expect("utf-8");

    dp.set_workload(cgroup_id(&app), workload(Verdict::Deny)).expect("enrol");
    assert_eq!(probe(Some(&app), &["open", path]), Outcome::Denied, "inside the workload, denied");
    assert_eq!(probe(None, &["open", path]), Outcome::Ok, "outside the managed root, untouched");
    let denied = drain(&mut events)
        .iter()
        .filter(|r| r.header().verdict == Verdict::Deny as u8 && r.header().identity == APP)
        .count();
    assert!(denied >= 1, "deny events reported");
    assert!(dp.counters().expect("counters").file.deny >= 1);

    dp.set_workload(cgroup_id(&app), workload(Verdict::Allow)).expect("update");
    assert_eq!(probe(Some(&app), &["open", path]), Outcome::Ok, "allowed after the verdict changed");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
