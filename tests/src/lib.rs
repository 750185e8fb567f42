//! Harness for the privileged integration tests: RAII guards for every cgroup, pin directory
//! and listener a test creates, and the probe that acts from inside a workload's cgroup.
//!
//! The same test binaries run on the host (`cargo xtask test`, host tier) and, built static,
//! inside a QEMU VM (VM tier), where `ENFORCER_TIER=vm` and `ENFORCER_PROBE` are set.

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use enforcer::identity::cgroup;

pub mod netns;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Polls `f` every 5 ms until it holds or `limit` passes; returns how long it took.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Whether `f` comes to hold within `limit` (polled every 5 ms).
pub fn eventually(limit: Duration, f: impl FnMut() -> bool) -> bool {
    wait_for(limit, f).is_some()
}

/// Whether the tests run inside the VM tier.
#[must_use]
pub fn in_vm() -> bool {
    std::env::var("ENFORCER_TIER").is_ok_and(|t| t == "vm")
}

/// Returns `true` when the test can run. When it cannot, it says why and returns `false`
/// (a skip) — except under `CI=true`, where a privileged test that cannot run is a failure.
///
/// # Panics
/// Under `CI=true` when `reason` is `Some`.
#[must_use]
pub fn can_run(test: &str, reason: Option<String>) -> bool {
    let Some(reason) = reason else { return true };
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{test}: cannot run under CI=true: {reason}"
    );
    eprintln!("SKIP {test}: {reason}");
    false
}

/// Why privileged tests cannot run here, if they cannot.
#[must_use]
pub fn privileged_unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (BPF, cgroups)".into());
    }
    if let Err(e) = cgroup::v2_mount() {
        return Some(format!("no cgroup v2: {e}"));
    }
    None
}

/// A cgroup created for one test, removed (with anything still in it killed) on drop.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// A fresh cgroup directly below the cgroup v2 mount.
    ///
    /// # Panics
    /// When it cannot be created.
    #[must_use]
    pub fn new() -> Self {
        let mount = cgroup::v2_mount().expect("cgroup v2 mount");
        let path = mount.join(unique("enforcer-test"));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }

    /// Creates (if needed) and returns the path of `rel` below this cgroup.
    ///
    /// # Panics
    /// When it cannot be created.
    #[must_use]
    pub fn child(&self, rel: &str) -> PathBuf {
        let p = self.path.join(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    /// This cgroup's directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TestCgroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Kill whatever is left (cgroup.kill, Linux ≥ 5.14), then remove deepest first.
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        let mut dirs = Vec::new();
        collect_dirs(&self.path, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// A pin directory on bpffs for one test, removed on drop (which detaches its programs).
#[derive(Debug)]
pub struct TestPins {
    path: PathBuf,
}

impl TestPins {
    /// A fresh, not yet existing, path below `/sys/fs/bpf`.
    #[must_use]
    pub fn new() -> Self {
        Self { path: PathBuf::from("/sys/fs/bpf").join(unique("enforcer-test")) }
    }

    /// The pin directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TestPins {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestPins {
    fn drop(&mut self) {
        let _ = enforcer::datapath::bpffs::remove_all(&self.path);
    }
}

/// A TCP listener accepting (and dropping) connections on a background thread.
#[derive(Debug)]
pub struct TcpServer {
    addr: SocketAddr,
}

impl TcpServer {
    /// Listens on `bind` (port 0 picks one).
    ///
    /// # Panics
    /// When it cannot bind.
    #[must_use]
    pub fn start(bind: &str) -> Self {
        let listener = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        std::thread::spawn(move || for _ in listener.incoming() {});
        Self { addr }
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A bound UDP socket (so sends to it do not fail with ECONNREFUSED).
#[derive(Debug)]
pub struct UdpServer {
    socket: UdpSocket,
}

impl UdpServer {
    /// Binds `bind`.
    ///
    /// # Panics
    /// When it cannot bind.
    #[must_use]
    pub fn start(bind: &str) -> Self {
        Self { socket: UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}")) }
    }

    /// Where it listens.
    ///
    /// # Panics
    /// When the socket has no local address (it always has one once bound).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }
}

/// What a probe reported.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The operation worked.
    Ok,
    /// The kernel refused it with EPERM or EACCES.
    Denied,
    /// Something else went wrong (message from the probe).
    Failed(String),
}

/// The probe binary.
#[must_use]
pub fn probe_bin() -> PathBuf {
    probe_path()
}

/// `$env`, or the binary `name` cargo built in the same target directory as the test binary
/// (which lives in `target/*/deps/`). The VM tier sets the variables.
fn binary(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().unwrap_or(deps).join(name)
}

fn probe_path() -> PathBuf {
    binary("ENFORCER_PROBE", "enforcer-probe")
}

/// Runs the probe with `args`, inside `cgroup` when given.
///
/// # Panics
/// When the probe cannot be started.
#[must_use]
pub fn probe(cgroup: Option<&Path>, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(probe_path());
    if let Some(cg) = cgroup {
        cmd.arg("--cgroup").arg(cg);
    }
    let out = cmd.args(args).output().unwrap_or_else(|e| panic!("starting {}: {e}", probe_path().display()));
    match out.status.code() {
        Some(0) => Outcome::Ok,
        Some(77) => Outcome::Denied,
        _ => Outcome::Failed(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// The `enforcer` binary: `$ENFORCER_BIN`, or the one cargo built in the same target
/// directory as the test binary (`cargo xtask test` builds it first).
///
/// # Panics
/// When the test binary's own path is unknown.
#[must_use]
pub fn enforcer_bin() -> PathBuf {
    binary("ENFORCER_BIN", "enforcer")
}

/// Runs the `enforcer` CLI with `args`; returns (exit code, stdout, stderr).
///
/// # Panics
/// When the binary cannot be started.
#[must_use]
pub fn enforcer(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(enforcer_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {}: {e}", enforcer_bin().display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `enforcer run` process on its own config, socket, state and pins, stopped (and
/// its pins removed) on drop.
pub struct AgentProcess {
    child: std::process::Child,
    dir: PathBuf,
    /// The config file it runs with.
    pub config: PathBuf,
    /// Its API socket.
    pub socket: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
    pins: PathBuf,
}

impl AgentProcess {
    /// Starts the agent managing `root` with pins in `pins`; `extra` is appended to the
    /// generated config (e.g. `[[workload]]` tables). Waits until its API answers.
    ///
    /// # Panics
    /// When it does not come up within 20 s.
    #[must_use]
    pub fn start(root: &TestCgroup, pins: &TestPins, extra: &str) -> Self {
        let dir = std::env::temp_dir().join(unique("enforcer-agent"));
        Self::start_in(root, pins, extra, dir.clone(), dir.join("state"))
    }

    /// Like [`AgentProcess::start`], but keeping state (host key, labels) in `state_dir`,
    /// which outlives this agent.
    ///
    /// # Panics
    /// When it does not come up within 20 s.
    #[must_use]
    pub fn start_with_state(root: &TestCgroup, pins: &TestPins, extra: &str, state_dir: &Path) -> Self {
        let dir = std::env::temp_dir().join(unique("enforcer-agent"));
        Self::start_in(root, pins, extra, dir, state_dir.to_owned())
    }

    #[expect(clippy::unnecessary_debug_formatting, reason = "Debug quotes the paths as TOML strings")]
    fn start_in(root: &TestCgroup, pins: &TestPins, extra: &str, dir: PathBuf, state_dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).expect("agent dir");
        let socket = dir.join("run/enforcer.sock");
        let config = dir.join("enforcer.toml");
        std::fs::write(
            &config,
            format!(
                "cgroup_root = {:?}\nbpffs_dir = {:?}\nsocket = {:?}\nstate_dir = {:?}\npolicy_dir = {:?}\n{}{}{extra}\n",
                root.path(),
                pins.path(),
                socket,
                state_dir,
                dir.join("policies"),
                // Tests never reach for the real link-local IMDS address, nor take a fixed port.
                if extra.contains("imds_url") { "" } else { "imds_url = \"\"\n" },
                if extra.contains("metrics_addr") { "" } else { "metrics_addr = \"\"\n" },
            ),
        )
        .expect("config");
        let child = Self::spawn(&dir, &config);
        let agent = Self { child, dir, config, socket, state_dir, pins: pins.path().to_owned() };
        agent.wait_ready();
        agent
    }

    fn spawn(dir: &Path, config: &Path) -> std::process::Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("agent.log")).expect("log file");
        Command::new(enforcer_bin())
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", enforcer_bin().display()))
    }

    fn wait_ready(&self) {
        // Attaching BPF-LSM programs (trampolines) under the VM's emulated CPU takes seconds.
        let limit = Duration::from_secs(if in_vm() { 90 } else { 20 });
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            // Up once the API answers (status exits 1 when it reports a problem; that is an
            // answer too).
            let (_, out, _) = self.cli(&["status", "-o", "json"]);
            if out.trim_start().starts_with('{') {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the agent did not come up; its log:\n{}", self.log());
    }

    /// The agent's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the agent with SIGKILL (no clean-up of any kind) and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the agent again on the same config, state and pins (after [`AgentProcess::kill`]);
    /// returns once its API answers.
    ///
    /// # Panics
    /// When it does not come up within 20 s (90 s in the VM).
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.dir, &self.config);
        self.wait_ready();
    }

    /// Runs a query verb against this agent (`--socket` is added).
    ///
    /// # Panics
    /// When the socket path is not UTF-8.
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let socket = self.socket.to_str().expect("utf-8 socket path");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--socket", socket]);
        enforcer(&all)
    }

    /// The agent's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The agent's working directory (config, state, socket, log).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        let _ = enforcer::datapath::bpffs::remove_all(&self.pins);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process killed on drop.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the probe in the background with `args`, inside `cgroup`.
///
/// # Panics
/// When it cannot be started.
#[must_use]
pub fn spawn_probe(cgroup: &Path, args: &[&str]) -> ChildGuard {
    let child = Command::new(probe_path())
        .arg("--cgroup")
        .arg(cgroup)
        .args(args)
        .spawn()
        .unwrap_or_else(|e| panic!("starting the probe: {e}"));
    ChildGuard(child)
}

/// Opens a datapath managing `root` with pins in `pins`, and tells the kernel which cgroup is
/// the managed root (as the agent does).
///
/// # Panics
/// When the datapath cannot be brought up.
#[must_use]
pub fn datapath(root: &TestCgroup, pins: &TestPins) -> enforcer::datapath::Datapath {
    let mut dp = enforcer::datapath::Datapath::open(&enforcer::datapath::Options {
        bpffs_dir: pins.path().to_owned(),
        cgroup_root: root.path().to_owned(),
        max_workloads: enforcer_common::maps::WORKLOADS_MAX,
    })
    .expect("datapath opens");
    let mount = cgroup::v2_mount().expect("cgroup v2");
    let level = cgroup::level(&mount, root.path()).expect("level");
    dp.set_root(cgroup::id(root.path()).expect("root id"), level).expect("set root");
    dp.attach();
    dp
}

/// Where the map `name` is pinned under `pins` (`maps/<layout>/<name>`, for the one layout
/// there is).
///
/// # Panics
/// When there is not exactly one layout directory.
#[must_use]
pub fn pinned_map(pins: &TestPins, name: &str) -> PathBuf {
    let layouts: Vec<PathBuf> = std::fs::read_dir(pins.path().join("maps"))
        .expect("maps dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(layouts.len(), 1, "one map layout pinned: {layouts:?}");
    layouts[0].join(name)
}

/// The kernel's id of cgroup `dir`.
///
/// # Panics
/// When it cannot be read.
#[must_use]
pub fn cgroup_id(dir: &Path) -> u64 {
    cgroup::id(dir).expect("cgroup id")
}

/// Decodes every record currently in `ring`.
///
/// # Panics
/// On an undecodable record.
pub fn drain(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<enforcer::events::Record> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(enforcer::events::decode(&item).expect("decodable record"));
    }
    out
}
