//! A tiny process the integration tests start inside a workload's cgroup (and, for simulated
//! hosts, inside a network namespace): it enters the namespace given with `--netns`, then moves
//! itself into the cgroup given with `--cgroup` (whatever order the flags come in), performs
//! one operation, and reports through its exit code.
//!
//! ```text
//! enforcer-probe [--netns NSFILE] [--cgroup DIR] OP
//!   connect ADDR:PORT            # TCP connect
//!   connect-every ADDR:PORT MS   # a TCP connect every MS ms until killed, one line each:
//!                                #   "ok", "denied" (EPERM) or "error ..."
//!   udp ADDR:PORT                # UDP connect + send
//!   udp-ask ADDR:PORT            # UDP send "ping", wait up to 2 s for a reply
//!   listen tcp|udp ADDR:PORT     # bind, print "listening ADDR:PORT", serve until killed
//!                                #   (TCP: accept and close; UDP: answer each datagram "pong")
//!   open PATH [--write]          # open for reading (or writing)
//!   run-as UID GID PROG [ARGS...]   # drop to UID/GID, exec PROG
//! ```
//! Exit codes: 0 it worked, 77 permission denied (EPERM or EACCES), 1 any other failure
//! (for `udp-ask`: no reply within 2 s).
#![forbid(unsafe_code)]

use std::{
    io::{self, ErrorKind, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    time::Duration,
};

const DENIED: u8 = 77;

fn run(args: &[String]) -> io::Result<()> {
    let mut args = args;
    let (mut netns, mut cgroup) = (None, None);
    loop {
        match args {
            [flag, ns, rest @ ..] if flag == "--netns" => (netns, args) = (Some(ns), rest),
            [flag, dir, rest @ ..] if flag == "--cgroup" => (cgroup, args) = (Some(dir), rest),
            _ => break,
        }
    }
    if let Some(ns) = netns {
        nix::sched::setns(std::fs::File::open(ns)?, nix::sched::CloneFlags::CLONE_NEWNET)?;
    }
    if let Some(dir) = cgroup {
        std::fs::write(std::path::Path::new(dir).join("cgroup.procs"), std::process::id().to_string())?;
    }
    let bad = || io::Error::new(ErrorKind::InvalidInput, format!("bad arguments: {args:?}"));
    match args {
        [op, addr] if op == "connect" => {
            let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
            TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(drop)
        }
        [op, addr, ms] if op == "connect-every" => {
            let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
            let period = Duration::from_millis(ms.parse().map_err(|_| bad())?);
            let mut out = io::stdout().lock();
            loop {
                let line = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Ok(_) => "ok".to_owned(),
                    Err(e) if e.kind() == ErrorKind::PermissionDenied => "denied".to_owned(),
                    Err(e) => format!("error {e}"),
                };
                writeln!(out, "{line}")?;
                out.flush()?;
                std::thread::sleep(period);
            }
        }
        [op, addr] if op == "udp" => {
            connected_udp(addr.parse().map_err(|_| bad())?)?.send(b"probe").map(drop)
        }
        [op, addr] if op == "udp-ask" => {
            let s = connected_udp(addr.parse().map_err(|_| bad())?)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.send(b"ping")?;
            let mut buf = [0; 16];
            match s.recv(&mut buf) {
                Ok(n) if &buf[..n] == b"pong" => Ok(()),
                Ok(n) => Err(io::Error::other(format!("unexpected reply {:?}", &buf[..n]))),
                // A timeout: never "denied", whatever the kernel's error code.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    Err(io::Error::new(ErrorKind::TimedOut, "no reply within 2 s"))
                }
                Err(e) => Err(io::Error::other(e)),
            }
        }
        [op, proto, addr] if op == "listen" => listen(proto, addr.parse().map_err(|_| bad())?),
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

fn connected_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let bind: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let s = UdpSocket::bind(bind)?;
    s.connect(addr)?;
    Ok(s)
}

/// Serves on `addr` until killed; the first line on stdout says where.
fn listen(proto: &str, addr: SocketAddr) -> io::Result<()> {
    let announce = |bound: SocketAddr| {
        let mut out = io::stdout().lock();
        writeln!(out, "listening {bound}").and_then(|()| out.flush())
    };
    match proto {
        "tcp" => {
            let listener = TcpListener::bind(addr)?;
            announce(listener.local_addr()?)?;
            for conn in listener.incoming() {
                drop(conn);
            }
            Ok(())
        }
        "udp" => {
            let s = UdpSocket::bind(addr)?;
            announce(s.local_addr()?)?;
            let mut buf = [0; 2048];
            loop {
                let (_, from) = s.recv_from(&mut buf)?;
                // A reply the kernel refuses must not stop the server.
                let _ = s.send_to(b"pong", from);
            }
        }
        _ => Err(io::Error::new(ErrorKind::InvalidInput, format!("listen: unknown protocol {proto}"))),
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
