//! The simulated-hosts harness (`enforcer_tests::netns`) on a real kernel: two hosts on one
//! switch reach each other by address over TCP and UDP, a workload cgroup's verdict applies to
//! a probe inside a host, and nothing is left once the guards drop. Runs on the host and in
//! the VM.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use enforcer_tests::{
    Outcome, TestCgroup, TestPins, can_run, datapath,
    netns::{NETNS_DIR, TestNet, listen_in, probe_in},
    privileged_unavailable,
};

/// The nsfs inode of a namespace file (`net:[INODE]` in `/proc/PID/ns/net`).
fn ns_inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("nsfs file"))
}

/// Every mount point and every process's network namespace, to check that one is gone.
fn mounts_and_process_namespaces() -> (String, Vec<String>) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mut namespaces = Vec::new();
    for proc in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(tasks) = std::fs::read_dir(proc.path().join("task")) {
            for task in tasks.flatten() {
                if let Ok(link) = std::fs::read_link(task.path().join("ns/net")) {
                    namespaces.push(link.to_string_lossy().into_owned());
                }
            }
        }
    }
    (mounts, namespaces)
}

#[test]
fn two_hosts_talk_over_the_switch_and_leave_nothing_behind() {
    if !can_run("two_hosts_talk_over_the_switch", privileged_unavailable()) {
        return;
    }
    let net = TestNet::new(2);
    let (a, b) = (net.host(0), net.host(1));
    let files: Vec<PathBuf> = [a, b, net.switch()].iter().map(|ns| ns.path().to_owned()).collect();
    let inodes: Vec<u64> = files.iter().map(|f| ns_inode(f)).collect();

    let tcp = listen_in(b, None, "tcp", "10.200.0.2:0");
    assert_eq!(tcp.addr.ip(), TestNet::addr(1));
    assert_eq!(probe_in(a, None, &["connect", &tcp.addr.to_string()]), Outcome::Ok, "A reaches B over TCP");
    let udp = listen_in(b, None, "udp", "10.200.0.2:0");
    assert_eq!(probe_in(a, None, &["udp-ask", &udp.addr.to_string()]), Outcome::Ok, "B answers A's ping");
    // In-process, through `run`: the thread's sockets are in host A.
    let addr = tcp.addr;
    a.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3))).expect("connect from run()");

    // Each host has its own loopback: B's 127.0.0.1 listener is not A's.
    let local = listen_in(b, None, "tcp", "127.0.0.1:0");
    assert!(
        matches!(probe_in(a, None, &["connect", &local.addr.to_string()]), Outcome::Failed(_)),
        "B's loopback is invisible from A"
    );
    assert_eq!(probe_in(b, None, &["connect", &local.addr.to_string()]), Outcome::Ok);

    drop((tcp, udp, local));
    drop(net);
    let (mounts, namespaces) = mounts_and_process_namespaces();
    for (file, inode) in files.iter().zip(inodes) {
        assert!(!file.exists(), "{} removed", file.display());
        assert!(!mounts.contains(&*file.to_string_lossy()), "{} unmounted", file.display());
        let name = format!("net:[{inode}]");
        assert!(!namespaces.contains(&name), "no process left in {name}");
    }
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        // Tests running at the same time may have theirs there; ours are gone (checked above).
        eprintln!("{NETNS_DIR} still holds {} entries of other tests", entries.count());
    }
}

#[test]
fn a_workload_inside_a_host_is_enforced() {
    if !can_run("a_workload_inside_a_host_is_enforced", privileged_unavailable()) {
        return;
    }
    let net = TestNet::new(2);
    let server = listen_in(net.host(1), None, "tcp", "0.0.0.0:0");
    let target = SocketAddr::new(TestNet::addr(1).into(), server.addr.port()).to_string();
    let root = TestCgroup::new();
    let pins = TestPins::new();
    let stray = root.child("new");
    // The managed root has no entry: a cgroup below it fails closed, whatever its namespace.
    let _dp = datapath(&root, &pins);
    assert_eq!(probe_in(net.host(0), Some(&stray), &["connect", &target]), Outcome::Denied);
    assert_eq!(probe_in(net.host(0), Some(&stray), &["udp-ask", &target]), Outcome::Denied);
    assert_eq!(probe_in(net.host(0), None, &["connect", &target]), Outcome::Ok, "outside the root");
}
