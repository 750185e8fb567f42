//! A tiny process the integration tests start inside a workload's cgroup (and, for simulated
//! hosts, inside a network namespace): it enters the namespace given with `--netns`, then moves
//! itself into the cgroup given with `--cgroup` (whatever order the flags come in), performs
//! one operation, and reports through its exit code.
//!
//! ```text
//! enforcer-probe [--netns NSFILE] [--cgroup DIR] OP
//!   connect ADDR:PORT            # TCP connect
//!   connect-bench ADDR:PORT MS   # connect+close for MS ms; one JSON line (counts, p50/p99 µs)
//!   connect-watch ADDR:PORT      # connect in a loop; "NS ok|denied|failed" at each change
//!   open-bench PATH MS           # open+close for MS ms; one JSON line (opens, denied)
//!   connect-every ADDR:PORT MS   # a TCP connect every MS ms until killed, one line each:
//!                                #   "ok", "denied" (EPERM) or "error ..."
//!   udp ADDR:PORT                # UDP connect + send
//!   udp-ask ADDR:PORT            # UDP send "ping", wait up to 2 s for a reply
//!   listen tcp|udp ADDR:PORT     # bind, print "listening ADDR:PORT", serve until killed
//!                                #   (TCP: accept and close; UDP: answer each datagram "pong")
//!   open PATH [--write]          # open for reading (or writing)
//!   raw-syn SRC DST:PORT SPORT HEXOPTS  # one hand-made TCP SYN with these options (raw socket)
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
        [op, src, dst, sport, options] if op == "raw-syn" => {
            raw_syn(src, dst, sport, options).map_err(|e| io::Error::other(format!("raw-syn: {e}")))
        }
        [op, addr, ms] if op == "connect-bench" => {
            connect_bench(addr.parse().map_err(|_| bad())?, Duration::from_millis(ms.parse().map_err(|_| bad())?))
        }
        [op, addr] if op == "connect-watch" => connect_watch(addr.parse().map_err(|_| bad())?),
        [op, path, ms] if op == "open-bench" => open_bench(path, Duration::from_millis(ms.parse().map_err(|_| bad())?)),
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

/// Sends one TCP SYN from `src` (this namespace's address) to `dst` (`ADDR:PORT`) from port
/// `sport`, carrying the TCP options in hex `options` (padded with NOPs to a multiple of 4),
/// through a raw socket: a token the kernel did not write, as a forger would send it.
fn raw_syn(src: &str, dst: &str, sport: &str, options: &str) -> io::Result<()> {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, sendto, socket};
    let bad = |what: &str| io::Error::new(ErrorKind::InvalidInput, what.to_owned());
    let src: std::net::Ipv4Addr = src.parse().map_err(|_| bad("source address"))?;
    let dst: std::net::SocketAddrV4 = dst.parse().map_err(|_| bad("destination ADDR:PORT"))?;
    let sport: u16 = sport.parse().map_err(|_| bad("source port"))?;
    let mut opts: Vec<u8> = (0..options.len() / 2)
        .map(|i| u8::from_str_radix(&options[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad("options hex"))?;
    while !opts.len().is_multiple_of(4) {
        opts.insert(0, 1);
    }
    let len = 20 + opts.len();
    let mut tcp = vec![0u8; len];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[12] = u8::try_from(len / 4).map_err(|_| bad("options too long"))? << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[20..].copy_from_slice(&opts);
    // Checksum over the pseudo-header and the segment.
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.ip().octets());
    add(&[0, 6]);
    add(&u16::try_from(len).map_err(|_| bad("length"))?.to_be_bytes());
    add(&tcp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let check = !u16::try_from(sum).map_err(|_| bad("checksum"))?;
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
    let fd = socket(AddressFamily::Inet, SockType::Raw, SockFlag::empty(), SockProtocol::Tcp).map_err(io::Error::from)?;
    sendto(std::os::fd::AsRawFd::as_raw_fd(&fd), &tcp, &SockaddrIn::from(dst), MsgFlags::empty()).map_err(io::Error::from)?;
    Ok(())
}

/// Nanoseconds of `CLOCK_MONOTONIC` (comparable across processes).
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| u64::try_from(Duration::from(t).as_nanos()).unwrap_or(u64::MAX))
}

/// One TCP connect and an abortive close (RST, so no `TIME_WAIT` exhausts ports).
fn connect_once(addr: SocketAddr) -> io::Result<()> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &libc::linger { l_onoff: 1, l_linger: 0 })
        .map_err(io::Error::from)?;
    Ok(())
}

/// Connects and closes as fast as it can for `length`; prints one JSON line: connects that
/// succeeded, were denied or failed, and the p50/p99 latency of the successful ones (µs).
#[expect(clippy::unnecessary_wraps, reason = "every probe operation returns io::Result")]
fn connect_bench(addr: SocketAddr, length: Duration) -> io::Result<()> {
    let start = std::time::Instant::now();
    let (mut ok, mut denied, mut failed) = (0u64, 0u64, 0u64);
    let mut lat = Vec::with_capacity(1 << 16);
    while start.elapsed() < length {
        let t = std::time::Instant::now();
        match connect_once(addr) {
            Ok(()) => {
                ok += 1;
                lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => denied += 1,
            Err(_) => failed += 1,
        }
    }
    lat.sort_unstable();
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds of one connect fit a f64 exactly")]
    let pct = |p: usize| lat.get(lat.len().saturating_sub(1) * p / 100).copied().unwrap_or(0) as f64 / 1000.0;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"ok\":{ok},\"denied\":{denied},\"failed\":{failed},\"seconds\":{secs},\"p50_us\":{},\"p99_us\":{}}}",
        pct(50),
        pct(99)
    );
    Ok(())
}

/// Connects in a tight loop until killed, printing `MONOTONIC_NS ok|denied|failed` whenever
/// the outcome changes (and once at the start).
fn connect_watch(addr: SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let mut last = "";
    loop {
        let now = match connect_once(addr) {
            Ok(()) => "ok",
            Err(e) if e.kind() == ErrorKind::PermissionDenied => "denied",
            Err(_) => "failed",
        };
        if now != last {
            writeln!(out, "{} {now}", monotonic_ns())?;
            out.flush()?;
            last = now;
        }
    }
}

/// Opens and closes `path` as fast as it can for `length`; prints `{"opens":N,"seconds":S}`.
fn open_bench(path: &str, length: Duration) -> io::Result<()> {
    let start = std::time::Instant::now();
    let (mut n, mut denied) = (0u64, 0u64);
    while start.elapsed() < length {
        match std::fs::File::open(path) {
            Ok(f) => {
                drop(f);
                n += 1;
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => denied += 1,
            Err(e) => return Err(e),
        }
    }
    println!("{{\"opens\":{n},\"denied\":{denied},\"seconds\":{}}}", start.elapsed().as_secs_f64());
    Ok(())
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
