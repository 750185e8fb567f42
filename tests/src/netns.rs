//! Simulated hosts for network tests: network namespaces joined by veth pairs, built the same
//! way on the host and in the VM (whose busybox `ip` has no `netns`), entirely from Rust.
//!
//! A [`TestNetns`] is a namespace created by `unshare(CLONE_NEWNET)` on a throw-away thread and
//! kept alive by bind-mounting that thread's `/proc/thread-self/ns/net` onto a file under
//! [`NETNS_DIR`] (what `ip netns add` does with `/run/netns`). Code runs inside it with
//! [`TestNetns::run`] (a thread that `setns`es first) or, as a separate process, with the probe's
//! `--netns` option ([`probe_in`], [`spawn_probe_in`], [`listen_in`]).
//!
//! [`TestNet`] is a switched LAN: a "switch" namespace holding bridge `br0`, and `n` host
//! namespaces whose `eth0` is a veth whose other end (`h0`, `h1`, …) is a port of that bridge.
//! Host `i` has `10.200.0.(i+1)/24` on `eth0`; every namespace has `lo` up. Links and
//! addresses are configured over rtnetlink, from a socket opened inside the namespace it
//! configures (a netlink socket acts on the namespace it was created in).
//!
//! Dropping a guard unmounts and removes its file; the kernel then frees the namespace (and the
//! links in it: a veth dies with either end) once nothing else holds it — probes spawned into
//! it are [`ChildGuard`]s, killed on drop. Needs root, `CONFIG_NET_NS`, `CONFIG_VETH` and
//! `CONFIG_BRIDGE` (modules in the VM's Debian kernel: `xtask/src/vm.rs` loads them).

use std::{
    fs::File,
    io::{self, BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_ROUTE};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};

use crate::{ChildGuard, Outcome, probe_path};

/// Where the namespaces' nsfs files are mounted.
pub const NETNS_DIR: &str = "/run/enforcer-test-netns";

/// A network namespace created for one test; unmounted and removed on drop.
#[derive(Debug)]
pub struct TestNetns {
    path: PathBuf,
}

impl TestNetns {
    /// A fresh namespace with `lo` up, named `label` plus a unique suffix.
    ///
    /// # Panics
    /// When it cannot be created (not root, no `CONFIG_NET_NS`).
    #[must_use]
    pub fn new(label: &str) -> Self {
        let ns = Self { path: Path::new(NETNS_DIR).join(crate::unique(label)) };
        ns.create().unwrap_or_else(|e| panic!("creating network namespace {}: {e}", ns.path.display()));
        ns.run(|| Rtnl::open()?.set_up("lo"))
            .unwrap_or_else(|e| panic!("bringing up lo in {}: {e}", ns.path.display()));
        ns
    }

    fn create(&self) -> io::Result<()> {
        // Another test's drop may remove the (empty) directory between our mkdir and create.
        let mut tries = 0;
        while let Err(e) = std::fs::create_dir_all(NETNS_DIR).and_then(|()| File::create_new(&self.path)) {
            tries += 1;
            if e.kind() != io::ErrorKind::NotFound || tries == 5 {
                return Err(e);
            }
        }
        let path = self.path.clone();
        std::thread::spawn(move || -> io::Result<()> {
            // Only this thread moves; it ends right after, the mount keeps the namespace.
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(Some("/proc/thread-self/ns/net"), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
            Ok(())
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
    }

    /// The nsfs file: what `setns(2)` and `enforcer-probe --netns` take.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a new thread inside this namespace and returns its result (a panic in `f`
    /// is passed on). Sockets `f` opens, and threads and processes it starts, are in the
    /// namespace.
    ///
    /// # Panics
    /// When the namespace cannot be entered, or `f` panics.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = File::open(&self.path).unwrap_or_else(|e| panic!("opening {}: {e}", self.path.display()));
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&ns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns: {e}"));
                f()
            })
            .join()
        })
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(NETNS_DIR); // only if no other test has one there
    }
}

/// `n` simulated hosts on one switched /24: see the module docs for the topology.
#[derive(Debug)]
pub struct TestNet {
    hosts: Vec<TestNetns>,
    switch: TestNetns,
}

impl TestNet {
    /// Builds the switch and `n` hosts (`n` ≤ 250).
    ///
    /// # Panics
    /// When a namespace, link or address cannot be created; what was built is removed.
    #[must_use]
    pub fn new(n: usize) -> Self {
        assert!(n <= 250, "at most 250 hosts on 10.200.0.0/24");
        let switch = TestNetns::new("sw");
        switch.run(|| Rtnl::open()?.add_bridge("br0")).unwrap_or_else(|e| panic!("bridge: {e}"));
        let mut net = Self { hosts: Vec::with_capacity(n), switch };
        for i in 0..n {
            let host = TestNetns::new(&format!("h{i}"));
            let port = format!("h{i}");
            let ns = File::open(host.path()).unwrap_or_else(|e| panic!("opening {}: {e}", host.path().display()));
            net.switch
                .run(|| Rtnl::open()?.add_port("br0", &port, "eth0", &ns))
                .unwrap_or_else(|e| panic!("veth {port}: {e}"));
            let addr = Self::addr(i);
            host.run(|| {
                let nl = Rtnl::open()?;
                nl.set_up("eth0")?;
                nl.add_address("eth0", addr, 24)
            })
            .unwrap_or_else(|e| panic!("eth0 of host {i}: {e}"));
            net.hosts.push(host);
        }
        net
    }

    /// Host `i`'s namespace.
    ///
    /// # Panics
    /// When there is no host `i`.
    #[must_use]
    pub fn host(&self, i: usize) -> &TestNetns {
        &self.hosts[i]
    }

    /// Host `i`'s address, `10.200.0.(i+1)`.
    ///
    /// # Panics
    /// When `i` ≥ 255.
    #[must_use]
    pub fn addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, 0, u8::try_from(i + 1).expect("host index below 255"))
    }

    /// The switch namespace (bridge `br0`, ports `h0`, `h1`, …).
    #[must_use]
    pub fn switch(&self) -> &TestNetns {
        &self.switch
    }
}

/// A synchronous rtnetlink socket in the namespace of the thread that opened it.
struct Rtnl {
    socket: Socket,
}

impl Rtnl {
    fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        Ok(Self { socket })
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    fn request(&self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = 1;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        loop {
            let (reply, _) = self.socket.recv_from_full()?;
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let NetlinkPayload::Error(e) = reply.payload {
                return if e.code.is_some() { Err(e.to_io()) } else { Ok(()) };
            }
        }
    }

    fn set_up(&self, name: &str) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = nix::net::if_::if_nametoindex(name)?;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(link), 0)
    }

    fn add_bridge(&self, name: &str) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(name.into()));
        link.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(RouteNetlinkMessage::NewLink(link), NLM_F_CREATE | NLM_F_EXCL)?;
        self.set_up(name)
    }

    /// A veth pair: `port` here, enslaved to `bridge` and up; `peer` created directly in the
    /// namespace `peer_ns` (the kernel checks the peer's name there, so every host can have
    /// its own `eth0`).
    fn add_port(&self, bridge: &str, port: &str, peer: &str, peer_ns: &File) -> io::Result<()> {
        let mut peer_link = LinkMessage::default();
        peer_link.attributes.push(LinkAttribute::IfName(peer.into()));
        peer_link.attributes.push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(port.into()));
        link.attributes.push(LinkAttribute::Controller(nix::net::if_::if_nametoindex(bridge)?));
        link.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_link))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(link), NLM_F_CREATE | NLM_F_EXCL)?;
        self.set_up(port)
    }

    fn add_address(&self, name: &str, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix_len;
        msg.header.index = nix::net::if_::if_nametoindex(name)?;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
        msg.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
        self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL)
    }
}

/// The probe command for `args`, run inside `netns` (and `cgroup` when given).
#[must_use]
pub fn probe_command(netns: &TestNetns, cgroup: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(probe_path());
    cmd.arg("--netns").arg(netns.path());
    if let Some(cg) = cgroup {
        cmd.arg("--cgroup").arg(cg);
    }
    cmd.args(args);
    cmd
}

/// Like [`crate::probe`], from inside `netns` (and `cgroup` when given).
///
/// # Panics
/// When the probe cannot be started.
#[must_use]
pub fn probe_in(netns: &TestNetns, cgroup: Option<&Path>, args: &[&str]) -> Outcome {
    let out = probe_command(netns, cgroup, args)
        .output()
        .unwrap_or_else(|e| panic!("starting {}: {e}", probe_path().display()));
    match out.status.code() {
        Some(0) => Outcome::Ok,
        Some(77) => Outcome::Denied,
        _ => Outcome::Failed(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Like [`crate::spawn_probe`], from inside `netns` (and `cgroup` when given).
///
/// # Panics
/// When the probe cannot be started.
#[must_use]
pub fn spawn_probe_in(netns: &TestNetns, cgroup: Option<&Path>, args: &[&str]) -> ChildGuard {
    ChildGuard(probe_command(netns, cgroup, args).spawn().unwrap_or_else(|e| panic!("starting the probe: {e}")))
}

/// A probe serving `listen tcp|udp` inside a namespace; killed on drop.
pub struct ProbeListener {
    /// The address it is bound to.
    pub addr: SocketAddr,
    _child: ChildGuard,
}

/// Starts `enforcer-probe listen PROTO BIND` inside `netns` (and `cgroup`), and waits until it
/// is bound. `proto` is `tcp` (accepts and closes) or `udp` (answers `pong`).
///
/// # Panics
/// When the probe cannot be started or exits before it listens.
#[must_use]
pub fn listen_in(netns: &TestNetns, cgroup: Option<&Path>, proto: &str, bind: &str) -> ProbeListener {
    let mut child = ChildGuard(
        probe_command(netns, cgroup, &["listen", proto, bind])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the probe: {e}")),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("probe listen {proto} {bind}: no `listening ADDR` line, got {line:?}"));
    ProbeListener { addr, _child: child }
}
