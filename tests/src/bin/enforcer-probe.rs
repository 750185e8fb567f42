//! A tiny process the integration tests start inside a workload's cgroup: it moves itself into
//! the cgroup given with `--cgroup`, performs one operation, and reports through its exit code.
//!
//! ```text
//! enforcer-probe [--cgroup DIR] connect ADDR:PORT     # TCP connect
//! enforcer-probe [--cgroup DIR] udp ADDR:PORT         # UDP connect + send
//! enforcer-probe [--cgroup DIR] open PATH [--write]   # open for reading (or writing)
//! enforcer-probe [--cgroup DIR] run-as UID GID PROG [ARGS...]   # drop to UID/GID, exec PROG
//! ```
//! Exit codes: 0 it worked, 77 permission denied (EPERM or EACCES), 1 any other failure.
#![forbid(unsafe_code)]

use std::{
    io::{self, ErrorKind},
    net::{SocketAddr, TcpStream, UdpSocket},
    process::ExitCode,
    time::Duration,
};

const DENIED: u8 = 77;

fn run(args: &[String]) -> io::Result<()> {
    let mut args = args;
    if let [flag, dir, rest @ ..] = args
        && flag == "--cgroup"
    {
        std::fs::write(std::path::Path::new(dir).join("cgroup.procs"), std::process::id().to_string())?;
        args = rest;
    }
    let bad = || io::Error::new(ErrorKind::InvalidInput, format!("bad arguments: {args:?}"));
    match args {
        [op, addr] if op == "connect" => {
            let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
            TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(drop)
        }
        [op, addr] if op == "udp" => {
            let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
            let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(|_| bad())?;
            let s = UdpSocket::bind(bind)?;
            s.connect(addr)?;
            s.send(b"probe").map(drop)
        }
        [op, path] if op == "open" => std::fs::File::open(path).map(drop),
        [op, path, w] if op == "open" && w == "--write" => {
            std::fs::OpenOptions::new().write(true).open(path).map(drop)
        }
        [op, uid, gid, prog, rest @ ..] if op == "run-as" => {
            let uid = nix::unistd::Uid::from_raw(uid.parse().map_err(|_| bad())?);
            let gid = nix::unistd::Gid::from_raw(gid.parse().map_err(|_| bad())?);
            nix::unistd::setgroups(&[]).map_err(io::Error::from)?;
            nix::unistd::setgid(gid).map_err(io::Error::from)?;
            nix::unistd::setuid(uid).map_err(io::Error::from)?;
            let err = std::os::unix::process::CommandExt::exec(std::process::Command::new(prog).args(rest));
            Err(err)
        }
        _ => Err(bad()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            eprintln!("enforcer-probe: {e}");
            ExitCode::from(DENIED)
        }
        Err(e) => {
            eprintln!("enforcer-probe: {e}");
            ExitCode::FAILURE
        }
    }
}
